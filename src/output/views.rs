//! The documented shapes of `--output json` and `--output csv`: field names here are a public
//! contract (docs/schemas/*.json are generated from these types and checked by a test).

use std::collections::BTreeMap;

use chrono::{DateTime, NaiveDate, Utc};
use schemars::JsonSchema;
use serde::Serialize;

use crate::batch::ReissueOutcome;
use crate::store::{CodeCount, RunSummary};

/// One code's line of a summary.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct CodeLine {
    pub count: i64,
    /// Fees charged under this code (minor units).
    pub fee: i64,
    /// The code's message (`Invalid input parameter. (field varies)` for 000_002).
    pub message: String,
}

/// A run's summary: `run`, `report RUN`, `demo`.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct RunView {
    /// `null` for a dry run (it writes no run row).
    pub run_id: Option<i64>,
    pub as_of: NaiveDate,
    /// `schedule`, `manual` or `api`.
    pub trigger: String,
    /// `full`, `card` or `limit`.
    pub scope: String,
    /// `running`, `completed`, `failed`, `interrupted`, `failed_dependency`.
    pub status: String,
    /// A `running` run whose process is gone (its lock is free): the next run closes it.
    pub abandoned: bool,
    pub reason: Option<String>,
    /// `host:pid` of the process that ran it.
    pub owner: String,
    pub started_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    /// `null` while the run has not finished.
    pub duration_ms: Option<i64>,
    pub cards_per_second: Option<f64>,
    pub read: i64,
    pub reissued: i64,
    pub ineligible: i64,
    pub failed: i64,
    /// Fees whose outcome is still unknown (HTTP fee mode).
    pub pending: i64,
    pub fee_total: i64,
    /// `ledger` or `http`.
    pub fee_mode: String,
    pub version: String,
    /// Result rows per code.
    pub counts: BTreeMap<String, CodeLine>,
    /// The sync API's results on the same business date (`report` only; empty otherwise).
    pub api: BTreeMap<String, CodeLine>,
    /// `run --card`: what happened to that card.
    pub card: Option<CardView>,
}

/// The single-card path's outcome.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct CardView {
    /// First 6 and last 4 digits.
    pub card: String,
    /// `null` while the fee's outcome is unknown or when it was never sent.
    pub code: Option<String>,
    pub message: Option<String>,
    pub card_apply_no: Option<String>,
    pub fee: i64,
    pub fee_pending: bool,
}

/// `report --as-of D`: every run of a business date summed (its final state), with the API's.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct DateView {
    pub as_of: NaiveDate,
    /// The runs of that date, oldest first.
    pub runs: Vec<i64>,
    pub read: i64,
    pub reissued: i64,
    pub ineligible: i64,
    pub failed: i64,
    /// Still unknown after the latest run of the date.
    pub pending: i64,
    pub fee_total: i64,
    pub counts: BTreeMap<String, CodeLine>,
    pub api: BTreeMap<String, CodeLine>,
}

/// One row of `runs` (also its CSV line).
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct RunRow {
    pub run_id: i64,
    pub as_of: NaiveDate,
    pub trigger: String,
    pub scope: String,
    /// As stored; `abandoned` says whether a `running` one's process is gone.
    pub status: String,
    pub abandoned: bool,
    pub started_at: DateTime<Utc>,
    pub duration_ms: Option<i64>,
    pub read: i64,
    pub reissued: i64,
    pub ineligible: i64,
    pub failed: i64,
    pub pending: i64,
    pub fee_total: i64,
}

/// One charge, for finance's reconciliation (`report --output csv`).
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct ChargeRow {
    pub run_id: i64,
    /// First 6 and last 4 digits.
    pub card: String,
    pub card_apply_no: String,
    pub amount: i64,
    /// The ledger debit's reference (ledger mode) or the payment service's reference (HTTP).
    pub reference: String,
}

/// One setting of `config show`.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct SettingRow {
    pub key: String,
    /// As JSON text would write it (secrets `***`).
    pub value: serde_json::Value,
    /// `default`, `file <path>` or `env <NAME>`.
    pub source: String,
}

/// `explain`.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct PlanView {
    pub as_of: NaiveDate,
    /// The database's plan, one line per element.
    pub plan: Vec<String>,
}

/// `config check`.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct CheckView {
    pub ok: bool,
    /// One line per problem (each names its key).
    pub problems: Vec<String>,
}

pub fn code_lines(counts: &BTreeMap<String, CodeCount>) -> BTreeMap<String, CodeLine> {
    counts
        .iter()
        .map(|(code, c)| {
            (code.clone(), CodeLine { count: c.count, fee: c.fee, message: crate::report::message_of(code) })
        })
        .collect()
}

impl RunView {
    pub fn of(s: &RunSummary, api: &BTreeMap<String, CodeCount>, card: Option<&ReissueOutcome>) -> Self {
        let finished = s.finished_at.is_some();
        Self {
            run_id: (s.run_id != 0).then_some(s.run_id),
            as_of: s.as_of,
            trigger: s.trigger.to_string(),
            scope: s.scope.to_string(),
            status: s.status.to_string(),
            abandoned: s.abandoned,
            reason: s.reason.clone(),
            owner: s.owner.clone(),
            started_at: s.started_at,
            finished_at: s.finished_at,
            duration_ms: finished.then(|| s.duration_ms()),
            cards_per_second: finished.then(|| s.cards_per_second()),
            read: s.read,
            reissued: s.reissued,
            ineligible: s.ineligible,
            failed: s.failed,
            pending: s.pending,
            fee_total: s.fee_total,
            fee_mode: s.fee_mode.clone(),
            version: s.version.clone(),
            counts: code_lines(&s.counts),
            api: code_lines(api),
            card: card.map(CardView::of),
        }
    }
}

impl CardView {
    pub fn of(o: &ReissueOutcome) -> Self {
        Self {
            card: o.card.clone(),
            code: o.code.map(str::to_owned),
            message: o.message.clone(),
            card_apply_no: o.card_apply_no.as_ref().map(|n| n.as_str().to_owned()),
            fee: o.fee,
            fee_pending: o.fee_pending,
        }
    }
}

impl RunRow {
    pub fn of(s: &RunSummary) -> Self {
        Self {
            run_id: s.run_id,
            as_of: s.as_of,
            trigger: s.trigger.to_string(),
            scope: s.scope.to_string(),
            status: s.status.to_string(),
            abandoned: s.abandoned,
            started_at: s.started_at,
            duration_ms: s.finished_at.map(|_| s.duration_ms()),
            read: s.read,
            reissued: s.reissued,
            ineligible: s.ineligible,
            failed: s.failed,
            pending: s.pending,
            fee_total: s.fee_total,
        }
    }
}

impl DateView {
    /// Sums `runs` (oldest first) of one business date; pending is what the latest left.
    pub fn of(as_of: NaiveDate, runs: &[RunSummary], api: &BTreeMap<String, CodeCount>) -> Self {
        let mut counts: BTreeMap<String, CodeCount> = BTreeMap::new();
        for run in runs {
            for (code, c) in &run.counts {
                let entry = counts.entry(code.clone()).or_default();
                entry.count += c.count;
                entry.fee = entry.fee.saturating_add(c.fee);
            }
        }
        let pending = runs.last().map_or(0, |r| r.pending);
        let (read, reissued, ineligible, failed, fee_total) = crate::store::totals(&counts, pending);
        Self {
            as_of,
            runs: runs.iter().map(|r| r.run_id).collect(),
            read,
            reissued,
            ineligible,
            failed,
            pending,
            fee_total,
            counts: code_lines(&counts),
            api: code_lines(api),
        }
    }
}

/// The schema of every output, by the file name it has in docs/schemas/.
pub fn schemas() -> Vec<(&'static str, schemars::Schema)> {
    vec![
        ("run.json", schemars::schema_for!(RunView)),
        ("report-as-of.json", schemars::schema_for!(DateView)),
        ("runs.json", schemars::schema_for!(Vec<RunRow>)),
        ("charges.json", schemars::schema_for!(Vec<ChargeRow>)),
        ("config-show.json", schemars::schema_for!(Vec<SettingRow>)),
        ("config-check.json", schemars::schema_for!(CheckView)),
        ("explain.json", schemars::schema_for!(PlanView)),
    ]
}
