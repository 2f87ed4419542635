//! PostgreSQL behind the store boundary: the production engine. Replicas cooperate through
//! row locks (`FOR UPDATE SKIP LOCKED` on wallets), session advisory locks for run liveness,
//! and the same unique constraints as SQLite.

mod chunk;
mod demo;
mod runs;
mod slots;

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::migrate::MigrateDatabase;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{PgPool, Postgres};

use super::rows::{PRUNE_RESULTS_SQL, PRUNE_SLOTS_SQL};
pub use chunk::PgChunk;
pub use runs::RUN_LOCK_SPACE;

/// `application_name` of every worker session.
pub const APPLICATION_NAME: &str = "renewal-worker";

use super::{
    Admin, CandidatePage, Context, DbGauges, DemoData, DemoLoad, NewRun, PageQuery, Reservation, RunHandle, RunLog,
    RunStatus, RunSummary, ScheduleHistory, Schedules, Store, StoreError,
};
use crate::config::{DatabaseSettings, redact_url};
use crate::store::sqlite::Create;

pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

#[derive(Clone, Debug)]
pub struct PgStore {
    pool: PgPool,
    /// For the run's dedicated lock connection (shared: the options are large).
    options: std::sync::Arc<PgConnectOptions>,
}

/// SQLSTATE 3D000: the database named in the URL does not exist.
fn is_missing_database(e: &sqlx::Error) -> bool {
    e.as_database_error().and_then(|d| d.code()).is_some_and(|c| c == "3D000")
}

impl PgStore {
    pub async fn connect(settings: &DatabaseSettings, create: Create, pool_size: u32) -> Result<Self, StoreError> {
        let url = &settings.url;
        let shown = redact_url(url);
        let connect_err = |source| StoreError::Connect { url: shown.clone(), source };
        if create == Create::IfMissing && !Postgres::database_exists(url).await.map_err(connect_err)? {
            Postgres::create_database(url).await.map_err(connect_err)?;
        }
        let ms = |v: u64| v.to_string();
        let options = PgConnectOptions::from_str(url)
            .map_err(connect_err)?
            .options([
                ("statement_timeout", ms(settings.statement_timeout_ms)),
                ("lock_timeout", ms(settings.lock_timeout_ms)),
                ("idle_in_transaction_session_timeout", ms(settings.idle_in_transaction_timeout_ms)),
            ])
            // Operators (and the recycling test) find the worker's sessions in pg_stat_activity by it.
            .application_name(APPLICATION_NAME);
        let map_connect = |e: sqlx::Error| {
            if is_missing_database(&e) {
                StoreError::MissingDatabase(shown.clone())
            } else {
                StoreError::Connect { url: shown.clone(), source: e }
            }
        };
        // A pool reports an unreachable server as "pool timed out" once its acquire timeout
        // passes; one direct connection first says why (refused, bad password, no such database).
        let wait = Duration::from_millis(settings.connect_timeout_ms.max(1000));
        match tokio::time::timeout(wait, <sqlx::PgConnection as sqlx::Connection>::connect_with(&options)).await {
            Ok(Ok(probe)) => {
                let _ = sqlx::Connection::close(probe).await;
            }
            Ok(Err(e)) => return Err(map_connect(e)),
            Err(_) => {
                let silent = std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!("no answer within database.connect_timeout_ms = {} ms", wait.as_millis()),
                );
                return Err(map_connect(sqlx::Error::Io(silent)));
            }
        }
        let pool = super::recycled(PgPoolOptions::new(), settings)
            .max_connections(pool_size.max(1))
            .acquire_timeout(Duration::from_millis(settings.connect_timeout_ms.max(1000)))
            .connect_with(options.clone())
            .await
            .map_err(map_connect)?;
        Ok(Self { pool, options: std::sync::Arc::new(options) })
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }
}

impl Store for PgStore {
    type Chunk = PgChunk;

    async fn early_page(&self, _page: &PageQuery) -> Option<Arc<CandidatePage>> {
        // Pages are read under row locks inside the chunk's own transaction: nothing reads ahead.
        None
    }

    async fn begin_chunk(&self, dry_run: bool) -> Result<PgChunk, StoreError> {
        let begin = if dry_run { "BEGIN READ ONLY" } else { "BEGIN" };
        let tx = self.pool.begin_with(begin).await.context("beginning a chunk transaction")?;
        Ok(PgChunk::new(tx, dry_run))
    }

    async fn pending_reservations(&self) -> Result<Vec<Reservation>, StoreError> {
        super::rows::pending_reservations(&self.pool, chrono::Utc::now() - super::rows::API_RESERVATION_GRACE).await
    }

    async fn estimate_candidates(&self, window_months: &[i64], run_id: Option<i64>) -> Result<u64, StoreError> {
        super::rows::estimate_candidates(&self.pool, super::rows::ESTIMATE_SQL_PG, window_months, run_id).await
    }

    async fn find_card_id(&self, card_no: &str) -> Result<Option<i64>, StoreError> {
        super::rows::find_card_id(&self.pool, card_no).await
    }

    async fn refresh_statistics(&self) -> Result<(), StoreError> {
        let stale: bool = sqlx::query_scalar(
            "SELECT coalesce(min(reltuples), 0) < 100000 FROM pg_class \
             WHERE oid IN ('result'::regclass, 'card_application'::regclass)",
        )
        .fetch_one(&self.pool)
        .await
        .context("reading planner statistics")?;
        if stale {
            sqlx::query("ANALYZE result, card_application")
                .execute(&self.pool)
                .await
                .context("refreshing planner statistics")?;
        }
        Ok(())
    }
}

impl RunLog for PgStore {
    async fn close_abandoned_runs(&self) -> Result<Vec<i64>, StoreError> {
        runs::close_abandoned(&self.pool).await
    }

    async fn start_run(&self, run: &NewRun) -> Result<RunHandle, StoreError> {
        runs::start(&self.options, run).await
    }

    async fn finish_run(
        &self,
        run: RunHandle,
        status: RunStatus,
        reason: Option<&str>,
        pending: i64,
    ) -> Result<RunSummary, StoreError> {
        runs::finish(&self.pool, run, status, reason, pending).await
    }

    async fn run_summary(&self, run_id: Option<i64>) -> Result<Option<RunSummary>, StoreError> {
        runs::summary(&self.pool, run_id).await
    }

    async fn run_charges(&self, run_id: i64) -> Result<Vec<crate::store::Charge>, StoreError> {
        super::rows::run_charges(&self.pool, run_id).await
    }

    async fn run_history(&self, filter: &crate::store::RunFilter) -> Result<Vec<RunSummary>, StoreError> {
        let mut runs = Vec::new();
        for id in super::rows::run_ids(&self.pool, filter).await? {
            runs.extend(runs::summary(&self.pool, Some(id)).await?);
        }
        Ok(runs)
    }
}

impl Schedules for PgStore {
    async fn schedule_history(&self, schedule: &str, since: chrono::NaiveDate) -> Result<ScheduleHistory, StoreError> {
        slots::history(&self.pool, schedule, since).await
    }

    async fn hold_slot(&self, schedule: &str, at: DateTime<Utc>, reason: &str) -> Result<(), StoreError> {
        slots::hold(&self.pool, schedule, at, reason).await
    }

    async fn db_gauges(&self) -> Result<DbGauges, StoreError> {
        slots::gauges(&self.pool).await
    }
}

super::api::impl_api_log!(PgStore, |t: DateTime<Utc>| t, |d: chrono::NaiveDate| d);

impl Admin for PgStore {
    async fn migrate(&self) -> Result<(), StoreError> {
        // The migrator takes an advisory lock: replicas may start together.
        MIGRATOR.run(&self.pool).await?;
        Ok(())
    }

    async fn check_schema(&self) -> Result<(), StoreError> {
        let has_table: bool = sqlx::query_scalar("SELECT to_regclass('_sqlx_migrations') IS NOT NULL")
            .fetch_one(&self.pool)
            .await
            .context("checking the schema version")?;
        let applied: Vec<super::AppliedMigration> =
            if has_table { super::rows::applied_migrations(&self.pool).await? } else { Vec::new() };
        super::compare_migrations(&MIGRATOR, &applied)
    }

    async fn probe_ready(&self) -> Result<(), StoreError> {
        self.check_schema().await
    }

    async fn prune_results(&self, cutoff: DateTime<Utc>) -> Result<u64, StoreError> {
        let mut tx = self.pool.begin().await.context("pruning old results")?;
        let done =
            sqlx::query(PRUNE_RESULTS_SQL).bind(cutoff).execute(&mut *tx).await.context("pruning old results")?;
        sqlx::query(PRUNE_SLOTS_SQL).bind(cutoff).execute(&mut *tx).await.context("pruning old schedule slots")?;
        tx.commit().await.context("pruning old results")?;
        Ok(done.rows_affected())
    }

    async fn explain_candidate_query(&self, page: &PageQuery) -> Result<String, StoreError> {
        chunk::explain(&self.pool, page).await
    }

    async fn close(&self) {
        self.pool.close().await;
    }
}

impl DemoLoad for PgStore {
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
