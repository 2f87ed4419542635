//! The human summary of a run, printed on stdout by `run`, `report` and `demo`.

use std::fmt::Write;

use crate::batch::ReissueOutcome;
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

/// The sync API's results of the run's business date (no run row): one line after the summary.
pub fn render_api(
    as_of: chrono::NaiveDate,
    counts: &std::collections::BTreeMap<String, crate::store::CodeCount>,
) -> String {
    if counts.is_empty() {
        return String::new();
    }
    let parts: Vec<String> = counts.iter().map(|(code, c)| format!("{code} {} (fee {})", c.count, c.fee)).collect();
    format!("api as-of {as_of}: {}\n", parts.join(", "))
}

/// The single-card path's outcome: one line, after the run's summary. It starts with `card`, so
/// a script reading the per-code lines of the summary never mistakes it for one.
pub fn render_card(o: &ReissueOutcome) -> String {
    let apply_no = o.card_apply_no.as_ref().map_or("-", |n| n.as_str());
    match (o.code, &o.message) {
        (Some(code), Some(message)) => {
            format!("card {}  code {code}  message {message}  cardApplyNo {apply_no}  fee {}\n", o.card, o.fee)
        }
        _ if o.fee_pending => {
            format!("card {}  fee pending  cardApplyNo {apply_no}  fee {} (a later run settles it)\n", o.card, o.fee)
        }
        _ => format!("card {}  no outcome: the fee was not sent (the fee service is failing)\n", o.card),
    }
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
        Outcome::ApplyNoUnavailable,
    ];
    match all.iter().find(|o| o.code() == code) {
        Some(Outcome::InvalidInput(_)) => "Invalid input parameter. (field varies)".to_owned(),
        Some(o) => o.message(),
        None => String::new(),
    }
}
