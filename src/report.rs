//! The human summary of a run, printed on stdout by `run`, `report` and `demo`.

use std::fmt::Write;

use crate::domain::Outcome;
use crate::domain::codes::InvalidField;
use crate::store::RunSummary;

pub fn render(s: &RunSummary) -> String {
    let mut out = String::new();
    let id = if s.run_id == 0 { "(dry run)".to_owned() } else { s.run_id.to_string() };
    let _ = writeln!(out, "run {id}  as-of {}  trigger {}  scope {}  status {}", s.as_of, s.trigger, s.scope, s.status);
    if let Some(reason) = &s.reason {
        let _ = writeln!(out, "reason: {reason}");
    }
    let _ = writeln!(out, "{:<8} {:>9} {:>14}  message", "code", "count", "fee");
    for (code, c) in &s.counts {
        let _ = writeln!(out, "{code:<8} {:>9} {:>14}  {}", c.count, c.fee, message_of(code));
    }
    let _ = writeln!(
        out,
        "read {}  reissued {}  ineligible {}  failed {}  pending {}  fee total {} KRW",
        s.read, s.reissued, s.ineligible, s.failed, s.pending, s.fee_total
    );
    let ms = s.duration_ms();
    let _ = writeln!(
        out,
        "duration {:.3} s  ({:.0} cards/s)  version {}  fees {}",
        ms as f64 / 1000.0,
        s.cards_per_second(),
        s.version,
        s.fee_mode
    );
    out
}

fn message_of(code: &str) -> String {
    let all = [
        Outcome::Success,
        Outcome::InvalidInput(InvalidField::OldCardNo),
        Outcome::WalletUserNotFound,
        Outcome::AlreadyReissued,
        Outcome::CardStatusNotAllowed,
        Outcome::ExpiryNotProper,
        Outcome::UserNameNotFound,
        Outcome::ParNotFound,
        Outcome::ProductNotValid,
        Outcome::FeePayFail,
    ];
    match all.iter().find(|o| o.code() == code) {
        Some(Outcome::InvalidInput(_)) => "Invalid input parameter. (field varies)".to_owned(),
        Some(o) => o.message(),
        None => String::new(),
    }
}
