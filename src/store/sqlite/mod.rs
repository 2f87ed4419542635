//! SQLite behind the store boundary: one file in WAL mode, writers serialised by
//! `BEGIN IMMEDIATE` and a busy timeout, bulk writes as one JSON parameter (`jsonb_each`).

mod checkpoint;
mod chunk;
mod demo;
mod read_ahead;
mod runs;
mod slots;

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use sqlx::SqlitePool;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};

use super::rows::{PRUNE_RESULTS_SQL, PRUNE_SLOTS_SQL};
pub use chunk::SqliteChunk;

use super::{
    Admin, CandidatePage, Context, DbGauges, DemoData, DemoLoad, NewRun, PageQuery, Reservation, RunHandle, RunLog,
    RunStatus, RunSummary, ScheduleHistory, Schedules, Store, StoreError,
};
use crate::config::DatabaseSettings;

/// The read-ahead connection's page cache, KiB.
const READ_AHEAD_CACHE_KIB: u64 = 1024;

pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

#[derive(Clone, Debug)]
pub struct SqliteStore {
    pool: SqlitePool,
    path: PathBuf,
    /// Writable stores with `database.sqlite_checkpoint_pause_ms` above 0.
    checkpointer: Option<checkpoint::Checkpointer>,
    /// Writable stores: the next page of a run, read beside the chunk that writes.
    read_ahead: Option<Arc<read_ahead::ReadAhead>>,
}

/// Whether opening may create the file (only `migrate`, `seed-demo` and `demo` may), and
/// whether the command writes at all.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Create {
    IfMissing,
    Never,
    /// Reads only (`report`, `runs`, `explain`, a dry run): the file is opened read-only, so a
    /// read-only file or a copy on read-only media works.
    ReadOnly,
}

impl SqliteStore {
    pub async fn connect(settings: &DatabaseSettings, create: Create) -> Result<Self, StoreError> {
        let url = &settings.url;
        let connect_err = |source| StoreError::Connect { url: url.clone(), source };
        let base = SqliteConnectOptions::from_str(url).map_err(connect_err)?;
        let path = base.get_filename().to_path_buf();
        if create != Create::IfMissing && !path.exists() {
            return Err(StoreError::MissingDatabase(path.display().to_string()));
        }
        // SQLite opens a file it cannot write read-only without a word, and the first write then
        // fails; a command that writes is told at once, in those words.
        if create != Create::ReadOnly
            && let Some(e) = not_writable(&path)
        {
            return Err(e);
        }
        let cache_kib = (settings.sqlite_cache_bytes / 1024).max(64);
        let busy = std::time::Duration::from_millis(settings.busy_timeout_ms);
        let base = if create == Create::ReadOnly {
            base.read_only(true)
        } else {
            base.create_if_missing(create == Create::IfMissing)
                .journal_mode(SqliteJournalMode::Wal)
                .synchronous(SqliteSynchronous::Normal)
        };
        let options = base
            .busy_timeout(busy)
            .foreign_keys(true)
            // Statement journals stay files (temp_store's default): in memory each multi-row write
            // would hold the original of every page it changes, which grows with how scattered a
            // chunk's cards are (39.6 MiB peak RSS on 10M cards against 28 MiB on 1M).
            .pragma("cache_size", format!("-{cache_kib}"))
            .pragma("mmap_size", settings.sqlite_mmap_bytes.to_string())
            .pragma("wal_autocheckpoint", settings.sqlite_wal_autocheckpoint_pages.to_string());
        // One connection: SQLite has one writer, so a second connection adds no throughput, and
        // a connection drops its whole page cache whenever another one has written, so
        // connections taking turns read every page from the file again (a fifth of the 1M run)
        // and each one holds its own cache (RSS grew with the card count). Waiting for the
        // connection is waiting for the write lock, so it gets the busy timeout. (The checkpoint
        // task's connection, below, writes no transaction, so it invalidates no cache.)
        let open = |options: SqliteConnectOptions| {
            super::recycled(SqlitePoolOptions::new(), settings)
                .max_connections(1)
                .acquire_timeout(busy.max(std::time::Duration::from_millis(settings.connect_timeout_ms.max(1000))))
                .connect_with(options)
        };
        let pool = match (open(options.clone()).await, create) {
            (Ok(pool), _) => pool,
            // A WAL file in a directory this process cannot write (a copy on read-only media):
            // nobody writes there either, so it can be read as immutable.
            (Err(_), Create::ReadOnly) if !writable(path.parent().unwrap_or(Path::new("."))) => {
                open(options.clone().immutable(true)).await.map_err(connect_err)?
            }
            (Err(e), _) => return Err(connect_err(e)),
        };
        let checkpointer = (create != Create::ReadOnly && settings.sqlite_checkpoint_pause_ms > 0).then(|| {
            checkpoint::Checkpointer::start(
                &options,
                std::time::Duration::from_millis(settings.sqlite_checkpoint_pause_ms),
            )
        });
        let read_ahead = (create != Create::ReadOnly).then(|| {
            // Every commit of the writer empties this connection's page cache: a small one does.
            let cache_kib = cache_kib.min(READ_AHEAD_CACHE_KIB);
            let reader = options.clone().pragma("cache_size", format!("-{cache_kib}")).pragma("query_only", "ON");
            let reader =
                super::recycled(SqlitePoolOptions::new(), settings).max_connections(1).connect_lazy_with(reader);
            Arc::new(read_ahead::ReadAhead::new(reader))
        });
        Ok(Self { pool, path, checkpointer, read_ahead })
    }

    /// Pages a run read ahead and used, and read ahead in vain.
    pub fn read_ahead_counts(&self) -> (u64, u64) {
        self.read_ahead.as_ref().map(|r| r.counts()).unwrap_or_default()
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }
}

fn writable(path: &Path) -> bool {
    use std::os::unix::ffi::OsStrExt;
    let Ok(c) = std::ffi::CString::new(path.as_os_str().as_bytes()) else { return false };
    // SAFETY: access only reads the NUL-terminated path it is given.
    unsafe { libc::access(c.as_ptr(), libc::W_OK) == 0 }
}

/// A database that cannot be opened for writing because of permissions, said as such: SQLite
/// itself only says "unable to open database file".
fn not_writable(path: &Path) -> Option<StoreError> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    if path.exists() && !writable(path) {
        return Some(StoreError::NotWritable(format!(
            "{}: permission denied (the file is read-only; `report`, `runs`, `explain` and `run --dry-run` can still read it)",
            path.display()
        )));
    }
    (dir.is_dir() && !writable(dir)).then(|| {
        StoreError::NotWritable(format!(
            "{}: permission denied (SQLite writes its -wal and -shm files beside the database; `report`, `runs`, `explain` and `run --dry-run` can still read it)",
            dir.display()
        ))
    })
}

/// Timestamps are stored as fixed-width UTC text so they sort and compare as strings.
pub(crate) fn ts(at: DateTime<Utc>) -> String {
    at.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()
}

pub(crate) fn parse_ts(raw: &str) -> Result<DateTime<Utc>, StoreError> {
    DateTime::parse_from_rfc3339(raw)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| StoreError::Invariant { context: "reading a timestamp", detail: format!("{raw:?}: {e}") })
}

impl Store for SqliteStore {
    type Chunk = SqliteChunk;

    async fn begin_chunk(&self, dry_run: bool) -> Result<SqliteChunk, StoreError> {
        // IMMEDIATE takes the write lock up front, so the page read and its writes see one state
        // and concurrent writers (tasks or processes) queue on the busy timeout instead of failing.
        let begin = if dry_run { "BEGIN" } else { "BEGIN IMMEDIATE" };
        let tx = self.pool.begin_with(begin).await.context("beginning a chunk transaction")?;
        let read_ahead = if dry_run { None } else { self.read_ahead.clone() };
        Ok(SqliteChunk::new(tx, self.checkpointer.clone(), read_ahead))
    }

    async fn early_page(&self, page: &PageQuery) -> Option<Arc<CandidatePage>> {
        match &self.read_ahead {
            Some(read_ahead) if page.read_ahead && page.only_card.is_none() => read_ahead.early(page).await,
            _ => None,
        }
    }

    async fn pending_reservations(&self) -> Result<Vec<Reservation>, StoreError> {
        super::rows::pending_reservations(&self.pool, ts(chrono::Utc::now() - super::rows::API_RESERVATION_GRACE)).await
    }

    async fn estimate_candidates(&self, window_months: &[i64], run_id: Option<i64>) -> Result<u64, StoreError> {
        super::rows::estimate_candidates(&self.pool, super::rows::ESTIMATE_SQL_SQLITE, window_months, run_id).await
    }

    async fn find_card_id(&self, card_no: &str) -> Result<Option<i64>, StoreError> {
        super::rows::find_card_id(&self.pool, card_no).await
    }

    async fn refresh_statistics(&self) -> Result<(), StoreError> {
        // SQLite's planner picks these indexes without statistics (see the plan test).
        Ok(())
    }
}

impl RunLog for SqliteStore {
    async fn close_abandoned_runs(&self) -> Result<Vec<i64>, StoreError> {
        runs::close_abandoned(self).await
    }

    async fn start_run(&self, run: &NewRun) -> Result<RunHandle, StoreError> {
        runs::start(self, run).await
    }

    async fn finish_run(
        &self,
        run: RunHandle,
        status: RunStatus,
        reason: Option<&str>,
        pending: i64,
    ) -> Result<RunSummary, StoreError> {
        runs::finish(self, run, status, reason, pending).await
    }

    async fn run_summary(&self, run_id: Option<i64>) -> Result<Option<RunSummary>, StoreError> {
        runs::summary(self, run_id).await
    }

    async fn run_charges(&self, run_id: i64) -> Result<Vec<crate::store::Charge>, StoreError> {
        super::rows::run_charges(&self.pool, run_id).await
    }

    async fn run_history(&self, filter: &crate::store::RunFilter) -> Result<Vec<RunSummary>, StoreError> {
        let mut runs = Vec::new();
        for id in super::rows::run_ids(&self.pool, filter).await? {
            runs.extend(runs::summary(self, Some(id)).await?);
        }
        Ok(runs)
    }
}

impl Schedules for SqliteStore {
    async fn schedule_history(&self, schedule: &str, since: chrono::NaiveDate) -> Result<ScheduleHistory, StoreError> {
        slots::history(self, schedule, since).await
    }

    async fn hold_slot(&self, schedule: &str, at: DateTime<Utc>, reason: &str) -> Result<(), StoreError> {
        slots::hold(self, schedule, at, reason).await
    }

    async fn db_gauges(&self) -> Result<DbGauges, StoreError> {
        slots::gauges(self).await
    }
}

super::api::impl_api_log!(SqliteStore, ts, |d: chrono::NaiveDate| d.to_string());

impl Admin for SqliteStore {
    async fn migrate(&self) -> Result<(), StoreError> {
        MIGRATOR.run(&self.pool).await?;
        Ok(())
    }

    async fn check_schema(&self) -> Result<(), StoreError> {
        let has_table: Option<i64> =
            sqlx::query_scalar("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = '_sqlx_migrations'")
                .fetch_optional(&self.pool)
                .await
                .context("checking the schema version")?;
        let applied: Vec<super::AppliedMigration> =
            if has_table.is_some() { super::rows::applied_migrations(&self.pool).await? } else { Vec::new() };
        super::compare_migrations(&MIGRATOR, &applied)
    }

    async fn probe_ready(&self) -> Result<(), StoreError> {
        slots::probe(self).await
    }

    async fn prune_results(&self, cutoff: DateTime<Utc>) -> Result<u64, StoreError> {
        let mut tx = self.pool.begin().await.context("pruning old results")?;
        let done =
            sqlx::query(PRUNE_RESULTS_SQL).bind(ts(cutoff)).execute(&mut *tx).await.context("pruning old results")?;
        sqlx::query(PRUNE_SLOTS_SQL).bind(ts(cutoff)).execute(&mut *tx).await.context("pruning old schedule slots")?;
        tx.commit().await.context("pruning old results")?;
        Ok(done.rows_affected())
    }

    async fn explain_candidate_query(&self, page: &PageQuery) -> Result<String, StoreError> {
        chunk::explain(&self.pool, page).await
    }

    async fn close(&self) {
        if let Some(read_ahead) = &self.read_ahead {
            let (used, wasted) = read_ahead.counts();
            if used + wasted > 0 {
                let waited_ms = read_ahead.waited_ms();
                tracing::debug!(
                    event = "read_ahead",
                    used,
                    wasted,
                    waited_ms,
                    "pages read beside the chunks that wrote"
                );
            }
            // Before the writer's: the last connection to close checkpoints the WAL into the
            // file and removes it, and that must be the writer's, inside this process's time.
            read_ahead.close().await;
        }
        if let Some(checkpointer) = &self.checkpointer {
            checkpointer.stop().await;
        }
        self.pool.close().await;
    }
}

impl DemoLoad for SqliteStore {
    async fn load_demo(&self, data: &DemoData) -> Result<(), StoreError> {
        demo::load(&self.pool, data).await
    }

    async fn holds_data(&self) -> Result<bool, StoreError> {
        sqlx::query_scalar(crate::store::rows::HOLDS_DATA_SQL)
            .fetch_one(&self.pool)
            .await
            .context("checking whether the database is empty")
    }
}
