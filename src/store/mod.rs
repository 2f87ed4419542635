//! The database boundary. Only this module writes SQL.
//!
//! [`Store`] is what a run may ask of a database, with [`RunLog`] (run rows) and [`Admin`]
//! (schema, retention, plans) as its supertraits; [`ChunkTx`] is one chunk's transaction: read
//! candidates, claim applications, debit, mark, record results, commit. [`DemoLoad`] (bulk demo
//! data) stays outside the production trait.
//! Each backend (SQLite today) implements both with runtime queries of its own dialect.

mod api;
pub mod postgres;
mod rows;
pub mod sqlite;
pub(crate) mod types;

use std::future::Future;
use std::sync::Arc;

use crate::domain::ids::CardApplyNo;

pub use types::*;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database {0} does not exist (create it with `migrate` or `seed-demo`)")]
    MissingDatabase(String),
    #[error("cannot open database {url}: {source}")]
    Connect { url: String, source: sqlx::Error },
    #[error("cannot write the database: {0}")]
    NotWritable(String),
    #[error("database schema is older than this binary ({detail}); run `renewal-worker migrate`")]
    SchemaBehind { detail: String },
    #[error("database schema is newer than this binary ({detail}); deploy a newer worker")]
    SchemaAhead { detail: String },
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("database error while {context}: {source}")]
    Query { context: &'static str, source: sqlx::Error },
    #[error("run lock file {path}: {source}")]
    RunLock { path: String, source: std::io::Error },
    #[error("slot {at} of schedule {schedule} is taken{}", held.as_deref().map(|r| format!(" (held: {r})")).unwrap_or_default())]
    SlotTaken { schedule: String, at: String, held: Option<String> },
    #[error("invariant broken while {context}: {detail}")]
    Invariant { context: &'static str, detail: String },
}

/// Recycles pooled connections for long-lived processes (idle longer than
/// `database.idle_timeout_ms`, or older than `database.max_lifetime_ms`) without sqlx 0.9.0's
/// background reaper: that reaper sweeps `0..num_idle()`, and a race in the pool's release can
/// wrap the counter to usize::MAX, so it spins without yielding and hangs the process at 100% CPU
/// (seen in this suite; sqlx #3645, fixed upstream after 0.9.0, the newest release). With neither
/// sqlx setting set and no minimum size no maintenance task exists; a stale connection is instead
/// closed when it is next acquired (`before_acquire`), and a fresh one opened. An idle process
/// does nothing at all.
pub(crate) fn recycled<DB: sqlx::Database>(
    options: sqlx::pool::PoolOptions<DB>,
    settings: &crate::config::DatabaseSettings,
) -> sqlx::pool::PoolOptions<DB> {
    let idle = std::time::Duration::from_millis(settings.idle_timeout_ms);
    let lifetime = std::time::Duration::from_millis(settings.max_lifetime_ms);
    options
        .idle_timeout(None)
        .max_lifetime(None)
        .min_connections(0)
        .before_acquire(move |_, meta| Box::pin(async move { Ok(meta.idle_for < idle && meta.age < lifetime) }))
}

/// Attaches what the store was doing to a driver error.
pub(crate) trait Context<T> {
    fn context(self, context: &'static str) -> Result<T, StoreError>;
}

impl<T> Context<T> for Result<T, sqlx::Error> {
    fn context(self, context: &'static str) -> Result<T, StoreError> {
        self.map_err(|source| StoreError::Query { context, source })
    }
}

/// One chunk's transaction. Dropping it without `commit` rolls everything back.
pub trait ChunkTx: Send {
    /// The next page of candidates after `page.after`, taking the locks that make them this
    /// chunk's alone.
    fn read_candidates(&mut self, page: &PageQuery) -> impl Future<Output = Result<CandidatePage, StoreError>> + Send;

    /// The largest keyset value among the window's unmarked cards (the order `read_candidates`
    /// pages in), or `None` for an empty window: where a cursor that met another worker leaps
    /// to halfway.
    fn keyset_end(&mut self, window_months: &[i64]) -> impl Future<Output = Result<Option<i64>, StoreError>> + Send;

    /// Inserts applications unless the card already has a live one; returns the winners.
    fn claim(&mut self, apps: &[NewApplication]) -> impl Future<Output = Result<Vec<Claimed>, StoreError>> + Send;

    /// Of `card_ids`, the cards that have a live (not cancelled) expiry-reissue application:
    /// the claims they lost were lost to a renewal, not to a taken card application number.
    fn live_application_cards(&mut self, card_ids: &[i64])
    -> impl Future<Output = Result<Vec<i64>, StoreError>> + Send;

    /// The card application numbers already taken in `low..=high`.
    fn taken_apply_nos(
        &mut self,
        low: &CardApplyNo,
        high: &CardApplyNo,
    ) -> impl Future<Output = Result<Vec<CardApplyNo>, StoreError>> + Send;

    /// The sync API: whether member `user_id` exists, is not cancelled, and owns card `card_no`
    /// (read in the transaction that then reissues the card).
    fn member_card(
        &mut self,
        user_id: i64,
        card_no: &str,
    ) -> impl Future<Output = Result<MemberCard, StoreError>> + Send;

    /// Withdraws claims made in this transaction (fee declined in ledger mode).
    fn unclaim(&mut self, application_ids: &[i64]) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Debits wallets; fails (and the chunk rolls back) if any wallet would go below zero.
    fn debit(&mut self, debits: &[Debit]) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Ends reservations that are still pending; returns the applications this call changed
    /// (another process may have settled some meanwhile).
    fn settle(&mut self, settlements: &[Settlement]) -> impl Future<Output = Result<Vec<i64>, StoreError>> + Send;

    /// Deletes reservations that were never sent to the fee service (still pending).
    fn release(&mut self, application_ids: &[i64]) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Marks cards reissued by their application.
    fn mark(&mut self, marks: &[Claimed]) -> impl Future<Output = Result<(), StoreError>> + Send;

    fn insert_results(
        &mut self,
        origin: ResultOrigin,
        as_of: chrono::NaiveDate,
        results: &[ResultRow],
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Adds a chunk's reissues and fees to its as-of's blast-radius totals (over every run of
    /// that as-of) and returns the new totals; the caller rolls back when they exceed a limit.
    fn add_to_budget(
        &mut self,
        as_of: chrono::NaiveDate,
        reissued: i64,
        fee_total: i64,
    ) -> impl Future<Output = Result<(i64, i64), StoreError>> + Send;

    fn commit(self) -> impl Future<Output = Result<(), StoreError>> + Send;
}

/// What the batch and the reissue operation ask of a database: chunk transactions, and the
/// reads around them. Run rows and administration come with it (supertraits).
pub trait Store: RunLog + Admin + Schedules + ApiLog + Clone + Send + Sync + 'static {
    type Chunk: ChunkTx;

    /// Opens a write transaction for one chunk (read-only when `dry_run`).
    fn begin_chunk(&self, dry_run: bool) -> impl Future<Output = Result<Self::Chunk, StoreError>> + Send;

    /// The page a read ahead holds for `page`, as its snapshot showed it, before the chunk that
    /// asks has the write lock (the chunk before it may still be writing): the batch evaluates it
    /// meanwhile and keeps that work only when `read_candidates` hands back the same read
    /// (`CandidatePage::early`), whose balances it takes. `None` where nothing was read ahead.
    /// Shared, not copied: the chunk's read takes the same page afterwards.
    fn early_page(&self, page: &PageQuery) -> impl Future<Output = Option<Arc<CandidatePage>>> + Send;

    /// Pending reservations no live run owns (their run ended or crashed), member then card order.
    fn pending_reservations(&self) -> impl Future<Output = Result<Vec<Reservation>, StoreError>> + Send;

    fn find_card_id(&self, card_no: &str) -> impl Future<Output = Result<Option<i64>, StoreError>> + Send;

    /// Cards of `window_months` not marked reissued plus the cards run `run_id` has recorded
    /// so far: one count over the expiry index, the progress bar's total (an upper bound of the
    /// run's candidates, whenever during the run it is taken).
    fn estimate_candidates(
        &self,
        window_months: &[i64],
        run_id: Option<i64>,
    ) -> impl Future<Output = Result<u64, StoreError>> + Send;

    /// Called once a run has committed its first chunk: where the planner's statistics still
    /// describe nearly empty `result`/`card_application` tables (a fresh database), refresh
    /// them, so the rest of the run probes their indexes instead of rescanning them per card.
    fn refresh_statistics(&self) -> impl Future<Output = Result<(), StoreError>> + Send;
}

/// The life of run rows: open (with the run's liveness lock), close, read, and close the rows
/// dead processes left `running`.
pub trait RunLog {
    /// Closes `running` rows whose owner is gone as `failed`; returns their ids.
    fn close_abandoned_runs(&self) -> impl Future<Output = Result<Vec<i64>, StoreError>> + Send;

    /// Inserts a `running` run row and takes the run's liveness lock (held until `finish_run`).
    fn start_run(&self, run: &NewRun) -> impl Future<Output = Result<RunHandle, StoreError>> + Send;

    /// Records the run's end and its counts (aggregated from its result rows, plus the fees
    /// whose outcome is still unknown).
    fn finish_run(
        &self,
        run: RunHandle,
        status: RunStatus,
        reason: Option<&str>,
        pending: i64,
    ) -> impl Future<Output = Result<RunSummary, StoreError>> + Send;

    /// A run's summary (the latest run when `run_id` is `None`).
    fn run_summary(&self, run_id: Option<i64>) -> impl Future<Output = Result<Option<RunSummary>, StoreError>> + Send;

    /// The summaries of the runs `filter` selects, newest first.
    fn run_history(&self, filter: &RunFilter) -> impl Future<Output = Result<Vec<RunSummary>, StoreError>> + Send;

    /// Every fee a run charged (its `000_000` results with a fee), with the debit's or the
    /// payment's reference, in result order.
    fn run_charges(&self, run_id: i64) -> impl Future<Output = Result<Vec<Charge>, StoreError>> + Send;
}

/// What the daemon reads and writes about its slots, and the gauges it exports.
pub trait Schedules {
    /// The schedule's first date, completed dates and claimed slots since `since`.
    fn schedule_history(
        &self,
        schedule: &str,
        since: chrono::NaiveDate,
    ) -> impl Future<Output = Result<ScheduleHistory, StoreError>> + Send;

    /// Marks a slot held: its run stopped for a person, no replica takes it over.
    fn hold_slot(
        &self,
        schedule: &str,
        at: chrono::DateTime<chrono::Utc>,
        reason: &str,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    fn db_gauges(&self) -> impl Future<Output = Result<DbGauges, StoreError>> + Send;
}

/// (calling key id, Idempotency-Key, the claiming request's token).
pub type KeyOwner<'a> = (&'a str, &'a str, &'a str);

/// What the sync API reads and writes besides the reissue itself: the stored answers of its
/// Idempotency-Keys, and its results per business date.
pub trait ApiLog {
    /// Takes (calling key, Idempotency-Key) for this request, or returns what is stored for it.
    /// An expired row, or one left unanswered since `stale_before` (its request died), is
    /// replaced.
    fn claim_idempotency(
        &self,
        claim: &IdempotencyClaim,
    ) -> impl Future<Output = Result<Option<StoredAnswer>, StoreError>> + Send;

    /// What is stored for a key, without claiming it (a waiting duplicate polls this).
    fn read_idempotency(
        &self,
        api_key_id: &str,
        key: &str,
    ) -> impl Future<Output = Result<Option<StoredAnswer>, StoreError>> + Send;

    /// Records the final answer of the key `owner` claimed (a no-op once another request took it over).
    fn answer_idempotency(
        &self,
        owner: KeyOwner<'_>,
        answer: &StoredAnswer,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Parks a claimed key on the application whose fee's outcome is unknown: a repeat answers
    /// with that application's settled outcome once a run has settled it.
    fn park_idempotency(
        &self,
        owner: KeyOwner<'_>,
        card_apply_no: &str,
        correlation_id: &str,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Stores the settled outcome of a parked key as its answer.
    fn settle_parked_idempotency(
        &self,
        api_key_id: &str,
        key: &str,
        answer: &StoredAnswer,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Gives a claimed key up (its answer was not final: a 503).
    fn release_idempotency(&self, owner: KeyOwner<'_>) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// The sync API's results of a business date, per code (they have no run row).
    fn api_counts(
        &self,
        as_of: chrono::NaiveDate,
    ) -> impl Future<Output = Result<std::collections::BTreeMap<String, CodeCount>, StoreError>> + Send;

    /// Deletes expired keys; returns how many.
    fn prune_idempotency(
        &self,
        now: chrono::DateTime<chrono::Utc>,
    ) -> impl Future<Output = Result<u64, StoreError>> + Send;
}

/// Administration and maintenance: the schema, retention, query plans.
pub trait Admin {
    fn migrate(&self) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Fails unless the schema is the one this binary carries, or newer by additive migrations.
    fn check_schema(&self) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Readiness: the database answers and its schema is one this binary runs on. SQLite asks
    /// through its own read-only connection, so a run holding the write lock does not fail it.
    fn probe_ready(&self) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Deletes result rows (and schedule slot rows) created before `cutoff`; returns how many results.
    fn prune_results(
        &self,
        cutoff: chrono::DateTime<chrono::Utc>,
    ) -> impl Future<Output = Result<u64, StoreError>> + Send;

    /// The query plan of the candidate page query, as the database prints it.
    fn explain_candidate_query(&self, page: &PageQuery) -> impl Future<Output = Result<String, StoreError>> + Send;

    /// Closes the connections at the end of a command. On SQLite the last connection to close
    /// checkpoints the WAL into the database file and deletes it (it never waits for another
    /// process: with one still open, the WAL stays for it).
    fn close(&self) -> impl Future<Output = ()> + Send;
}

/// Bulk-loads generated demo data into an empty database (`seed-demo`, `demo`, the benchmark):
/// not part of what a production run may do.
pub trait DemoLoad {
    fn load_demo(&self, data: &DemoData) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Whether any product, member or card is there already (demo data loads into an empty database).
    fn holds_data(&self) -> impl Future<Output = Result<bool, StoreError>> + Send;
}

/// A migration as `_sqlx_migrations` records it.
#[derive(Debug, Clone)]
pub(crate) struct AppliedMigration {
    pub version: i64,
    pub description: String,
    pub success: bool,
    pub checksum: Vec<u8>,
}

/// Same text on both engines (no parameters).
pub(crate) const APPLIED_MIGRATIONS_SQL: &str =
    "SELECT version, description, success, checksum FROM _sqlx_migrations ORDER BY version";

/// A migration whose file name starts `NNNN_additive_` only adds (tables, columns with
/// defaults, indexes): a binary that predates it still works on the schema (expand/contract),
/// so old pods keep running while a rolling deploy finishes.
pub const ADDITIVE_PREFIX: &str = "additive ";

/// Compares the migrations this binary embeds with those applied (version, success, checksum).
/// Refuses a schema older than the binary; accepts a newer one only when every migration it
/// does not know is declared additive and comes after all it knows.
pub(crate) fn compare_migrations(
    migrator: &sqlx::migrate::Migrator,
    applied: &[AppliedMigration],
) -> Result<(), StoreError> {
    let known: Vec<(i64, &[u8])> = migrator
        .iter()
        .filter(|m| m.migration_type.is_up_migration())
        .map(|m| (m.version, m.checksum.as_ref()))
        .collect();
    let newest_known = known.iter().map(|(v, _)| *v).max().unwrap_or(0);
    for m in applied {
        let version = m.version;
        match known.iter().find(|(v, _)| *v == version) {
            None if version > newest_known && m.success && m.description.starts_with(ADDITIVE_PREFIX) => {
                tracing::warn!(
                    event = "schema_newer_additive",
                    version,
                    "the schema has an additive migration this binary does not know; running on it"
                );
            }
            None => {
                return Err(StoreError::SchemaAhead {
                    detail: format!(
                        "migration {version} ({}) is unknown to it and not declared additive",
                        m.description
                    ),
                });
            }
            Some((_, sum)) if *sum != m.checksum.as_slice() => {
                return Err(StoreError::SchemaAhead { detail: format!("migration {version} differs from its copy") });
            }
            Some(_) if !m.success => {
                return Err(StoreError::SchemaBehind { detail: format!("migration {version} did not finish") });
            }
            Some(_) => {}
        }
    }
    let missing: Vec<String> =
        known.iter().filter(|(v, _)| !applied.iter().any(|a| a.version == *v)).map(|(v, _)| v.to_string()).collect();
    if missing.is_empty() {
        Ok(())
    } else {
        Err(StoreError::SchemaBehind { detail: format!("migrations not applied: {}", missing.join(", ")) })
    }
}

pub(crate) fn slot_taken(claim: &SlotClaim, held: Option<String>) -> StoreError {
    StoreError::SlotTaken { schedule: claim.schedule.clone(), at: claim.at.to_rfc3339(), held }
}

impl StoreError {
    /// A schema this binary must not run on: a person decides (migrate, or deploy another binary).
    pub fn is_schema_mismatch(&self) -> bool {
        matches!(self, Self::SchemaBehind { .. } | Self::SchemaAhead { .. })
    }
}

pub(crate) fn applied_from_row<'r, R>(r: &'r R) -> Result<AppliedMigration, sqlx::Error>
where
    R: sqlx::Row,
    usize: sqlx::ColumnIndex<R>,
    i64: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    bool: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    String: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    Vec<u8>: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    Ok(AppliedMigration {
        version: r.try_get(0)?,
        description: r.try_get(1)?,
        success: r.try_get(2)?,
        checksum: r.try_get(3)?,
    })
}
