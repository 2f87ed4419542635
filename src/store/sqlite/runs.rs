//! Run rows on SQLite. A run's liveness is an exclusive lock on `<db>.run-<id>.lock`, held by
//! its process for the run's whole life: the OS releases it when the process dies, so a
//! `running` row whose lock can be taken belongs to a dead process.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions, TryLockError};
use std::path::PathBuf;

use chrono::{NaiveDate, Utc};
use sqlx::Row;

use super::{SqliteStore, parse_ts, ts};
use crate::store::rows::{
    END_RUN_SQL, INSERT_RUN_SQL, RUN_ROW_SQL, RUNNING_RUNS_SQL, expect_run_closed, is_unique_violation, run_enums,
};
use crate::store::{
    CodeCount, Context, NewRun, RunGuard, RunHandle, RunStatus, RunSummary, StoreError, slot_taken, totals,
};

fn lock_path(store: &SqliteStore, run_id: i64) -> PathBuf {
    let mut name = store.path.clone().into_os_string();
    name.push(format!(".run-{run_id}.lock"));
    PathBuf::from(name)
}

fn open_lock(path: &PathBuf) -> Result<File, StoreError> {
    OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .map_err(|source| StoreError::RunLock { path: path.display().to_string(), source })
}

fn owner() -> String {
    let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "localhost".to_owned());
    format!("{host}:{}", std::process::id())
}

pub(super) async fn start(store: &SqliteStore, run: &NewRun) -> Result<RunHandle, StoreError> {
    // The row and its lock appear together: a closer scanning `running` rows in its own
    // IMMEDIATE transaction never sees the row before the lock is held.
    let mut tx = store.pool.begin_with("BEGIN IMMEDIATE").await.context("starting a run")?;
    let slot_id = match &run.slot {
        Some(claim) => Some(
            crate::store::rows::claim_slot::<sqlx::Sqlite, _, _>(&mut tx, claim, owner(), (ts, |d| d.to_string()))
                .await?,
        ),
        None => None,
    };
    let inserted = sqlx::query_scalar(INSERT_RUN_SQL)
        .bind(run.as_of.to_string())
        .bind(run.trigger.as_str())
        .bind(run.scope.as_str())
        .bind(run.params.to_string())
        .bind(owner())
        .bind("file")
        .bind(&run.version)
        .bind(&run.fee_mode)
        .bind(ts(Utc::now()))
        .bind(slot_id)
        .fetch_one(&mut *tx)
        .await;
    let id: i64 = match (inserted, &run.slot) {
        (Err(e), Some(claim)) if is_unique_violation(&e) => return Err(slot_taken(claim, None)),
        (inserted, _) => inserted.context("inserting the run row")?,
    };
    let path = lock_path(store, id);
    let file = open_lock(&path)?;
    file.try_lock().map_err(|e| StoreError::RunLock {
        path: path.display().to_string(),
        source: std::io::Error::other(e.to_string()),
    })?;
    tx.commit().await.context("starting a run")?;
    Ok(RunHandle { id, guard: RunGuard::File { _file: file, path } })
}

pub(super) async fn close_abandoned(store: &SqliteStore) -> Result<Vec<i64>, StoreError> {
    let mut tx = store.pool.begin_with("BEGIN IMMEDIATE").await.context("closing abandoned runs")?;
    let running: Vec<i64> =
        sqlx::query_scalar(RUNNING_RUNS_SQL).fetch_all(&mut *tx).await.context("listing running runs")?;
    let mut closed = Vec::new();
    for id in running {
        let path = lock_path(store, id);
        let file = open_lock(&path)?;
        match file.try_lock() {
            Ok(()) => {
                let counts = aggregate(&mut tx, id).await?;
                write_end(
                    &mut tx,
                    id,
                    RunStatus::Failed,
                    Some("abandoned: its process ended without closing it"),
                    &counts,
                    0,
                )
                .await?;
                closed.push(id);
                let _ = std::fs::remove_file(&path);
            }
            Err(TryLockError::WouldBlock) => {}
            Err(TryLockError::Error(source)) => {
                return Err(StoreError::RunLock { path: path.display().to_string(), source });
            }
        }
    }
    tx.commit().await.context("closing abandoned runs")?;
    Ok(closed)
}

pub(super) async fn finish(
    store: &SqliteStore,
    run: RunHandle,
    status: RunStatus,
    reason: Option<&str>,
    pending: i64,
) -> Result<RunSummary, StoreError> {
    let id = run.id;
    let mut tx = store.pool.begin_with("BEGIN IMMEDIATE").await.context("finishing a run")?;
    let counts = aggregate(&mut tx, id).await?;
    write_end(&mut tx, id, status, reason, &counts, pending).await?;
    tx.commit().await.context("finishing a run")?;
    if let RunGuard::File { path, .. } = &run.guard {
        let _ = std::fs::remove_file(path);
    }
    drop(run);
    // The counts were read in the closing transaction, after the last chunk: not read twice.
    summary_with(store, Some(id), Some(counts))
        .await?
        .ok_or(StoreError::Invariant { context: "finishing a run", detail: format!("run {id} vanished") })
}

type Counts = BTreeMap<String, CodeCount>;

async fn aggregate(conn: &mut sqlx::SqliteConnection, run_id: i64) -> Result<Counts, StoreError> {
    let rows = sqlx::query("SELECT code, count(*), CAST(min(total(fee), 9223372036854775807.0) AS INTEGER) FROM result WHERE run_id = ?1 GROUP BY code")
        .bind(run_id)
        .fetch_all(&mut *conn)
        .await
        .context("counting a run's results")?;
    rows.iter()
        .map(|r| Ok((r.try_get::<String, _>(0)?, CodeCount { count: r.try_get(1)?, fee: r.try_get(2)? })))
        .collect::<Result<_, sqlx::Error>>()
        .context("counting a run's results")
}

async fn write_end(
    conn: &mut sqlx::SqliteConnection,
    run_id: i64,
    status: RunStatus,
    reason: Option<&str>,
    counts: &Counts,
    pending: i64,
) -> Result<(), StoreError> {
    let (read, reissued, ineligible, failed, fee_total) = totals(counts, pending);
    let done = sqlx::query(END_RUN_SQL)
        .bind(run_id)
        .bind(status.as_str())
        .bind(reason)
        .bind(ts(Utc::now()))
        .bind(read)
        .bind(reissued)
        .bind(ineligible)
        .bind(failed)
        .bind(fee_total)
        .bind(serde_json::to_string(counts).unwrap_or_else(|_| "{}".to_owned()))
        .bind(pending)
        .execute(&mut *conn)
        .await
        .context("closing a run row")?;
    expect_run_closed(run_id, done.rows_affected())
}

/// Whether no process holds run `id`'s lock file (a missing file is free). Never creates it.
fn lock_is_free(store: &SqliteStore, id: i64) -> Result<bool, StoreError> {
    let path = lock_path(store, id);
    let file = match OpenOptions::new().read(true).open(&path) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(true),
        Err(source) => return Err(StoreError::RunLock { path: path.display().to_string(), source }),
    };
    match file.try_lock() {
        Ok(()) => Ok(true),
        Err(TryLockError::WouldBlock) => Ok(false),
        Err(TryLockError::Error(source)) => Err(StoreError::RunLock { path: path.display().to_string(), source }),
    }
}

pub(super) async fn summary(store: &SqliteStore, run_id: Option<i64>) -> Result<Option<RunSummary>, StoreError> {
    summary_with(store, run_id, None).await
}

/// The run row with `counts`, or with its results counted now when they are not known.
async fn summary_with(
    store: &SqliteStore,
    run_id: Option<i64>,
    counts: Option<Counts>,
) -> Result<Option<RunSummary>, StoreError> {
    let pool = &store.pool;
    let Some(row) = sqlx::query(RUN_ROW_SQL).bind(run_id).fetch_optional(pool).await.context("reading a run")? else {
        return Ok(None);
    };
    let id: i64 = row.try_get("id").context("reading a run")?;
    let counts = match counts {
        Some(counts) => counts,
        None => aggregate(&mut *pool.acquire().await.context("reading a run")?, id).await?,
    };
    let pending: i64 = row.try_get("pending_count").context("reading a run")?;
    let (read, reissued, ineligible, failed, fee_total) = totals(&counts, pending);
    let as_of: String = row.try_get("as_of").context("reading a run")?;
    let finished_at: Option<String> = row.try_get("finished_at").context("reading a run")?;
    let text = |column: &'static str| row.try_get::<String, _>(column).context("reading a run");
    let (trigger, scope, status) = run_enums(&text("trigger")?, &text("scope")?, &text("status")?)?;
    Ok(Some(RunSummary {
        run_id: id,
        as_of: NaiveDate::parse_from_str(&as_of, "%Y-%m-%d")
            .map_err(|e| StoreError::Invariant { context: "reading a run", detail: format!("as_of {as_of:?}: {e}") })?,
        trigger,
        scope,
        status,
        reason: row.try_get("reason").context("reading a run")?,
        started_at: parse_ts(&row.try_get::<String, _>("started_at").context("reading a run")?)?,
        finished_at: finished_at.as_deref().map(parse_ts).transpose()?,
        version: row.try_get("version").context("reading a run")?,
        fee_mode: row.try_get("fee_mode").context("reading a run")?,
        owner: row.try_get("owner").context("reading a run")?,
        abandoned: status == RunStatus::Running && lock_is_free(store, id)?,
        counts,
        read,
        reissued,
        ineligible,
        failed,
        pending,
        fee_total,
    }))
}
