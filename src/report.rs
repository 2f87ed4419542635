//! The human summary of a run, printed on stdout by `run`, `report` and `demo`.

use std::fmt::Write;

use crate::batch::ReissueOutcome;
use crate::domain::Outcome;
use crate::domain::codes::InvalidField;
use crate::output::views::{DateView, RunRow, SettingRow};
use crate::store::RunSummary;

pub fn render(s: &RunSummary) -> String {
    let mut out = String::new();
    let id = if s.run_id == 0 { "(dry run)".to_owned() } else { s.run_id.to_string() };
    let _ = writeln!(out, "run {id}  as-of {}  trigger {}  scope {}  status {}", s.as_of, s.trigger, s.scope, s.status);
    if s.abandoned {
        let _ = writeln!(
            out,
            "abandoned: its process is gone (its lock is free); the next run closes it as failed and finishes the date"
        );
    }
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
    let finished = s.finished_at.map_or("-".to_owned(), |f| f.format("%Y-%m-%d %H:%M:%S UTC").to_string());
    let owner = if s.owner.is_empty() { String::new() } else { format!("  owner {}", s.owner) };
    if s.run_id != 0 {
        let _ = writeln!(out, "started {}  finished {finished}{owner}", s.started_at.format("%Y-%m-%d %H:%M:%S UTC"));
    }
    let timing = if s.finished_at.is_some() {
        format!("duration {:.3} s  ({:.0} cards/s)  ", s.duration_ms() as f64 / 1000.0, s.cards_per_second())
    } else {
        "not finished  ".to_owned()
    };
    let _ = writeln!(out, "{timing}version {}  fees {}", s.version, s.fee_mode);
    out
}

/// `report --as-of D`: the business date's runs summed.
pub fn render_date(d: &DateView) -> String {
    let mut out = String::new();
    let runs: Vec<String> = d.runs.iter().map(i64::to_string).collect();
    let _ = writeln!(out, "as-of {}  runs {}", d.as_of, if runs.is_empty() { "-".to_owned() } else { runs.join(", ") });
    let _ = writeln!(out, "{:<8} {:>9} {:>14}  message", "code", "count", "fee");
    for (code, c) in &d.counts {
        let _ = writeln!(out, "{code:<8} {:>9} {:>14}  {}", c.count, c.fee, c.message);
    }
    let _ = writeln!(
        out,
        "read {}  reissued {}  ineligible {}  failed {}  pending {}  fee total {} KRW",
        d.read, d.reissued, d.ineligible, d.failed, d.pending, d.fee_total
    );
    out
}

/// `runs`: one line per run, newest first.
pub fn render_runs(rows: &[RunRow]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:>6}  {:<10}  {:<8}  {:<5}  {:<19}  {:<19}  {:>9}  {:>9}  {:>9}  {:>10}  {:>7}  {:>7}  {:>12}",
        "ID",
        "AS-OF",
        "TRIGGER",
        "SCOPE",
        "STATUS",
        "STARTED",
        "DURATION",
        "READ",
        "REISSUED",
        "INELIGIBLE",
        "FAILED",
        "PENDING",
        "FEE TOTAL"
    );
    for r in rows {
        let duration = r.duration_ms.map_or("-".to_owned(), |ms| format!("{:.1}s", ms as f64 / 1000.0));
        let _ = writeln!(
            out,
            "{:>6}  {:<10}  {:<8}  {:<5}  {:<19}  {:<19}  {:>9}  {:>9}  {:>9}  {:>10}  {:>7}  {:>7}  {:>12}",
            r.run_id,
            r.as_of,
            r.trigger,
            r.scope,
            status_text(r),
            r.started_at.format("%Y-%m-%d %H:%M:%S"),
            duration,
            r.read,
            r.reissued,
            r.ineligible,
            r.failed,
            r.pending,
            r.fee_total
        );
    }
    if rows.is_empty() {
        let _ = writeln!(out, "no runs");
    }
    out
}

fn status_text(r: &RunRow) -> String {
    if r.abandoned { format!("{} (abandoned)", r.status) } else { r.status.clone() }
}

/// `config show`: key, value, source.
pub fn render_settings(rows: &[SettingRow]) -> String {
    let width = rows.iter().map(|r| r.key.len()).max().unwrap_or(0);
    let values: Vec<String> = rows
        .iter()
        .map(|r| match &r.value {
            serde_json::Value::String(s) => s.clone(),
            other => other.to_string(),
        })
        .collect();
    let vwidth = values.iter().map(|v| v.chars().count()).max().unwrap_or(0).min(48);
    let mut out = String::new();
    for (r, v) in rows.iter().zip(values) {
        let _ = writeln!(out, "{:<width$}  {v:<vwidth$}  {}", r.key, r.source);
    }
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

pub fn message_of(code: &str) -> String {
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
