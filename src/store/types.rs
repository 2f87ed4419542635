//! Values that cross the database boundary.

use std::collections::BTreeMap;

use chrono::{DateTime, NaiveDate, Utc};
use serde::Serialize;

use crate::domain::address::DeliveryAddress;
use crate::domain::codes::{Category, category_of_code};
use crate::domain::eligibility::CardFacts;
use crate::domain::ids::CardApplyNo;

/// Which candidates a chunk reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PageQuery {
    pub as_of: NaiveDate,
    /// Expiry months (`YYYYMM`) inside the window, ascending; the index is sought once per month.
    pub window_months: Vec<i64>,
    /// The keyset: where the previous page ended (0 to start).
    pub after: i64,
    pub limit: u32,
    /// The single-card path: read exactly this card, whatever its expiry, mark or results.
    pub only_card: Option<i64>,
    /// The next page (after this one's last card) is asked for as soon as this chunk commits,
    /// and nothing but the chunk's own ledger debits changes what it shows: SQLite reads it
    /// meanwhile, beside the chunk's writes.
    pub read_ahead: bool,
}

/// One page of the candidate scan.
#[derive(Debug, Clone, Default)]
pub struct CandidatePage {
    /// The cards this chunk owns, ascending card id within each member.
    pub candidates: Vec<Candidate>,
    /// Rows the scan looked at; 0 means the window has nothing left after the cursor.
    pub scanned: usize,
    /// Where the next page starts (an opaque keyset: a card id on SQLite, a member id on PostgreSQL).
    pub next_after: i64,
    /// Some scanned cards belong to members another transaction holds; a later pass must retry them.
    pub skipped_locked: bool,
    /// The read ahead this page is: the same cards `Store::early_page` showed, though a balance
    /// may have had the previous chunk's debits taken off since. Work done on the early page
    /// that does not depend on balances holds for this one. `None` for a page read in the
    /// chunk's lock.
    pub early: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    pub facts: CardFacts,
    /// The member's wallet balance; 0 for a card whose product has no fee (not read).
    pub balance: i64,
    /// Expiry-reissue applications the card already had, cancelled ones included.
    pub prior_applications: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PaymentState {
    PendingPayment,
    Applied,
    Cancelled,
}

impl PaymentState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::PendingPayment => "PENDING_PAYMENT",
            Self::Applied => "APPLIED",
            Self::Cancelled => "CANCELLED",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewApplication {
    pub card_id: i64,
    pub member_id: i64,
    pub product_id: i64,
    /// Snapshotted in the application: the member's registered address, or the API's `addressInfo`.
    pub delivery: DeliveryAddress,
    pub card_apply_no: CardApplyNo,
    /// The sequence the number was derived from (retries move on from it).
    pub attempt: i64,
    pub fee: i64,
    pub new_expiry_yyyymm: i64,
    pub correlation_id: String,
    pub payment_state: PaymentState,
    pub run_id: Option<i64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Claimed {
    pub card_id: i64,
    pub application_id: i64,
}

/// A reserved application whose fee is charged outside the database (HTTP fee mode).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reservation {
    pub application_id: i64,
    pub card_id: i64,
    pub card_no: String,
    pub member_id: i64,
    pub fee: i64,
    pub card_apply_no: CardApplyNo,
    pub correlation_id: String,
}

/// The end of a reservation: APPLIED (charged) or CANCELLED (declined).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settlement {
    pub application_id: i64,
    pub state: PaymentState,
    pub payment_ref: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Debit {
    pub member_id: i64,
    pub application_id: i64,
    pub reference: String,
    pub amount: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResultRow {
    pub card_id: i64,
    pub code: &'static str,
    pub message: String,
    pub fee: i64,
    pub card_apply_no: Option<CardApplyNo>,
    pub correlation_id: String,
}

/// The API's member-and-card lookup, in its check order (DESIGN §10).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemberCard {
    /// No such member, or a cancelled one (`001_006`).
    NoMember,
    /// The member exists but has no card with that number (`000_002 cardInfo.oldCardNo`: the
    /// API never reveals that another member's card exists).
    NotTheirs,
    Card(i64),
}

/// An Idempotency-Key taken for one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyClaim {
    pub api_key_id: String,
    pub key: String,
    /// SHA-256 of the body's canonical JSON.
    pub body_hash: String,
    pub now: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    /// An unanswered row older than this belongs to a request that died.
    pub stale_before: DateTime<Utc>,
    /// This request's own token: only it may answer, park or release the key.
    pub token: String,
}

/// What an Idempotency-Key holds: the body hash, and the first final answer once there is one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredAnswer {
    pub body_hash: String,
    /// `None` while the first request is still being answered.
    pub status: Option<u16>,
    pub response: Option<String>,
    pub correlation_id: Option<String>,
    /// Parked on an application whose fee's outcome was unknown: its payment state and number.
    pub waits_on: Option<(String, String)>,
}

/// Whose a result row is: a run's, or the sync API's (which writes no run row).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResultOrigin {
    Run(i64),
    Api,
}

impl ResultOrigin {
    pub fn run_id(self) -> Option<i64> {
        match self {
            Self::Run(id) => Some(id),
            Self::Api => None,
        }
    }

    /// The `result.trigger` column: only `run` results count for the batch's once-per-as-of rule.
    pub fn trigger(self) -> &'static str {
        match self {
            Self::Run(_) => "run",
            Self::Api => "api",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Trigger {
    Schedule,
    Manual,
    Api,
}

impl Trigger {
    pub const ALL: [Self; 3] = [Self::Schedule, Self::Manual, Self::Api];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Schedule => "schedule",
            Self::Manual => "manual",
            Self::Api => "api",
        }
    }
}

/// Whether a run covers the whole as-of, or only a card or a limited number of cards.
/// Only a `full` run can be an as-of's completed run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    Full,
    Card,
    Limit,
    /// A dry run's summary (dry runs write no run row).
    DryRun,
}

impl Scope {
    pub const ALL: [Self; 4] = [Self::Full, Self::Card, Self::Limit, Self::DryRun];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Full => "full",
            Self::Card => "card",
            Self::Limit => "limit",
            Self::DryRun => "dry_run",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    Running,
    Completed,
    Failed,
    Interrupted,
    FailedDependency,
}

impl RunStatus {
    pub const ALL: [Self; 5] =
        [Self::Running, Self::Completed, Self::Failed, Self::Interrupted, Self::FailedDependency];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Running => "running",
            Self::Completed => "completed",
            Self::Failed => "failed",
            Self::Interrupted => "interrupted",
            Self::FailedDependency => "failed_dependency",
        }
    }
}

/// The run-row enums as text (`as_str`) and back (`parse`), and shown as their text.
macro_rules! stored_as_text {
    ($($ty:ident),*) => {$(
        impl $ty {
            /// The value a run row stores; anything else is a row this program did not write.
            pub fn parse(raw: &str) -> Option<Self> {
                Self::ALL.into_iter().find(|v| v.as_str() == raw)
            }
        }

        impl std::fmt::Display for $ty {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    )*};
}
stored_as_text!(Trigger, Scope, RunStatus);

/// Reads a run-row enum, naming the column and value when the row holds something else.
pub(crate) fn parse_stored<T>(
    column: &'static str,
    raw: &str,
    parse: fn(&str) -> Option<T>,
) -> Result<T, super::StoreError> {
    parse(raw).ok_or_else(|| super::StoreError::Invariant {
        context: "reading a run",
        detail: format!("run.{column} holds {raw:?}"),
    })
}

#[derive(Debug, Clone)]
pub struct NewRun {
    pub as_of: NaiveDate,
    pub trigger: Trigger,
    pub scope: Scope,
    pub params: serde_json::Value,
    pub version: String,
    pub fee_mode: String,
    /// A scheduled run: the slot it claims (or takes over) in the same transaction as its row.
    pub slot: Option<SlotClaim>,
}

/// A schedule slot a run claims. `takeover: false` inserts the slot row and fails with
/// `SlotTaken` when it exists; `takeover: true` links a new run to the existing row and fails
/// with `SlotTaken` when another run of the slot is running or the slot is held.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlotClaim {
    pub schedule: String,
    pub at: DateTime<Utc>,
    pub as_of: NaiveDate,
    pub takeover: bool,
}

/// What the daemon reads to decide on catch-up and takeover.
#[derive(Debug, Clone, Default)]
pub struct ScheduleHistory {
    /// The earliest business date of any slot of the schedule or scheduled run: nothing older
    /// is caught up or counted missed (a first deploy does not renew last week).
    pub first_date: Option<NaiveDate>,
    /// Dates since the asked date with a completed full run (any trigger).
    pub completed: std::collections::BTreeSet<NaiveDate>,
    /// Claimed slots since the asked date, by instant.
    pub slots: Vec<SlotRecord>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlotRecord {
    pub at: DateTime<Utc>,
    pub as_of: NaiveDate,
    /// Its run stopped for a person (exit 5): no replica takes it over.
    pub held_reason: Option<String>,
    /// A run of the slot is `running` (close abandoned runs first to make this mean alive).
    pub running: bool,
}

/// The gauges read from the database, the same on every replica.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DbGauges {
    /// Finish time of the completed full run of the latest completed as-of.
    pub last_success: Option<DateTime<Utc>>,
    pub pending_reservations: i64,
    pub oldest_pending: Option<DateTime<Utc>>,
}

/// A started run. Holding it holds the run's liveness lock; `finish_run` releases it.
#[derive(Debug)]
pub struct RunHandle {
    pub id: i64,
    pub(crate) guard: RunGuard,
}

#[derive(Debug)]
pub(crate) enum RunGuard {
    /// SQLite: an exclusive lock on a file beside the database, released when the file closes.
    File { _file: std::fs::File, path: std::path::PathBuf },
    /// PostgreSQL: a session advisory lock held by this dedicated connection.
    Advisory(Box<sqlx::PgConnection>),
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct CodeCount {
    pub count: i64,
    pub fee: i64,
}

#[derive(Debug, Clone, Serialize)]
pub struct RunSummary {
    pub run_id: i64,
    pub as_of: NaiveDate,
    pub trigger: Trigger,
    pub scope: Scope,
    pub status: RunStatus,
    pub reason: Option<String>,
    pub started_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    pub version: String,
    pub fee_mode: String,
    /// `host:pid` of the process that ran it (empty for a dry run).
    pub owner: String,
    /// A `running` row whose liveness lock is free: its process is gone, and the next run
    /// closes it as `failed`.
    pub abandoned: bool,
    /// Result rows per code.
    pub counts: BTreeMap<String, CodeCount>,
    pub read: i64,
    pub reissued: i64,
    pub ineligible: i64,
    pub failed: i64,
    /// Fees whose outcome was still unknown at the end (no result until settled).
    pub pending: i64,
    pub fee_total: i64,
}

/// One fee a run charged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Charge {
    pub run_id: i64,
    pub card_no: String,
    pub card_apply_no: String,
    pub amount: i64,
    /// The ledger debit's reference, or the payment service's (HTTP mode).
    pub reference: String,
}

/// Which run rows `runs` lists (newest first).
#[derive(Debug, Clone, Default)]
pub struct RunFilter {
    pub last: u32,
    pub status: Option<RunStatus>,
    pub as_of: Option<NaiveDate>,
}

impl RunSummary {
    pub fn duration_ms(&self) -> i64 {
        self.finished_at.map(|f| (f - self.started_at).num_milliseconds()).unwrap_or(0)
    }

    pub fn cards_per_second(&self) -> f64 {
        let ms = self.duration_ms().max(1) as f64;
        self.read as f64 * 1000.0 / ms
    }
}

/// Generated demo data, bulk-loaded by `Store::load_demo`.
#[derive(Debug, Clone, Default)]
pub struct DemoData {
    pub products: Vec<ProductRow>,
    pub members: Vec<MemberRow>,
    pub cards: Vec<CardRow>,
    /// Cards already reissued before the demo starts: (card id, application).
    pub reissued: Vec<NewApplication>,
}

#[derive(Debug, Clone)]
pub struct ProductRow {
    pub id: i64,
    pub name: String,
    pub card_type: String,
    pub allows_expiry_reissue: bool,
    pub reissue_fee: i64,
    pub validity_months: i64,
}

#[derive(Debug, Clone)]
pub struct MemberRow {
    pub id: i64,
    pub name: Option<String>,
    pub mobile: Option<String>,
    pub status: String,
    pub address: Option<String>,
    pub address_detail: Option<String>,
    pub zip_code: Option<String>,
    pub balance: i64,
}

#[derive(Debug, Clone)]
pub struct CardRow {
    pub id: i64,
    pub card_no: String,
    pub member_id: i64,
    pub product_id: i64,
    pub status: String,
    pub expiry_yyyymm: i64,
    pub par: Option<String>,
}

/// Totals by dashboard category from per-code counts and the fees still pending:
/// (read, reissued, ineligible, failed, fee total). A pending fee was read and is not yet
/// reissued, so it counts as failed until settled (DESIGN §9).
pub fn totals(counts: &BTreeMap<String, CodeCount>, pending: i64) -> (i64, i64, i64, i64, i64) {
    let mut t: (i64, i64, i64, i64, i64) = (pending, 0, 0, pending, 0);
    for (code, c) in counts {
        t.0 = t.0.saturating_add(c.count);
        t.4 = t.4.saturating_add(c.fee);
        let slot = match category_of_code(code) {
            Category::Reissued => &mut t.1,
            Category::Ineligible => &mut t.2,
            Category::Failed => &mut t.3,
        };
        *slot = slot.saturating_add(c.count);
    }
    t
}
