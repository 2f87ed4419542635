//! Run rows on PostgreSQL. A run's liveness is a session advisory lock keyed by its id, held on
//! a dedicated connection for the run's whole life: the server releases it when the process or
//! its connection dies, so a `running` row whose lock can be taken belongs to a dead run.

use std::collections::BTreeMap;

use chrono::{DateTime, NaiveDate, Utc};
use sqlx::postgres::PgConnectOptions;
use sqlx::{Connection, PgConnection, PgPool, Row};

use crate::store::rows::{
    END_RUN_SQL, INSERT_RUN_SQL, RUN_ROW_SQL, RUNNING_RUNS_SQL, expect_run_closed, is_unique_violation, run_enums,
};
use crate::store::{
    CodeCount, Context, NewRun, RunGuard, RunHandle, RunStatus, RunSummary, StoreError, slot_taken, totals,
};

/// The advisory-lock namespace of run liveness ("RENW"): `pg_advisory_lock(RUN_LOCK_SPACE, run id)`.
pub const RUN_LOCK_SPACE: i32 = 0x5245_4e57;

fn owner() -> String {
    let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "localhost".to_owned());
    format!("{host}:{}", std::process::id())
}

fn lock_key(run_id: i64) -> Result<i32, StoreError> {
    i32::try_from(run_id).map_err(|_| StoreError::Invariant {
        context: "keying a run lock",
        detail: format!("run id {run_id} exceeds the advisory key range"),
    })
}

pub(super) async fn start(options: &PgConnectOptions, run: &NewRun) -> Result<RunHandle, StoreError> {
    let mut conn = PgConnection::connect_with(options).await.context("opening the run's lock connection")?;
    // Row and lock appear together: the lock is taken before the row commits, so a closer
    // never sees a live run's row without its lock.
    let mut tx = conn.begin().await.context("starting a run")?;
    let slot_id = match &run.slot {
        Some(claim) => {
            Some(crate::store::rows::claim_slot::<sqlx::Postgres, _, _>(&mut tx, claim, owner(), (|t| t, |d| d)).await?)
        }
        None => None,
    };
    let inserted = sqlx::query_scalar(INSERT_RUN_SQL)
        .bind(run.as_of)
        .bind(run.trigger.as_str())
        .bind(run.scope.as_str())
        .bind(&run.params)
        .bind(owner())
        .bind("advisory")
        .bind(&run.version)
        .bind(&run.fee_mode)
        .bind(Utc::now())
        .bind(slot_id)
        .fetch_one(&mut *tx)
        .await;
    let id: i64 = match (inserted, &run.slot) {
        (Err(e), Some(claim)) if is_unique_violation(&e) => return Err(slot_taken(claim, None)),
        (inserted, _) => inserted.context("inserting the run row")?,
    };
    sqlx::query("SELECT pg_advisory_lock($1, $2)")
        .bind(RUN_LOCK_SPACE)
        .bind(lock_key(id)?)
        .execute(&mut *tx)
        .await
        .context("taking the run lock")?;
    tx.commit().await.context("starting a run")?;
    Ok(RunHandle { id, guard: RunGuard::Advisory(Box::new(conn)) })
}

/// Takes run `id`'s liveness lock for the rest of `tx` if no session holds it; whether it did.
/// Transaction-scoped: released when `tx` ends, never left behind by the prober.
async fn take_lock_in(tx: &mut sqlx::PgConnection, id: i64) -> Result<bool, StoreError> {
    sqlx::query_scalar("SELECT pg_try_advisory_xact_lock($1, $2)")
        .bind(RUN_LOCK_SPACE)
        .bind(lock_key(id)?)
        .fetch_one(&mut *tx)
        .await
        .context("probing a run lock")
}

/// Whether no session holds run `id`'s liveness lock (the probe's transaction then ends, so it
/// keeps nothing).
async fn lock_is_free(pool: &PgPool, id: i64) -> Result<bool, StoreError> {
    let mut tx = pool.begin().await.context("probing a run lock")?;
    let free = take_lock_in(&mut tx, id).await?;
    tx.rollback().await.context("probing a run lock")?;
    Ok(free)
}

pub(super) async fn close_abandoned(pool: &PgPool) -> Result<Vec<i64>, StoreError> {
    let running: Vec<i64> =
        sqlx::query_scalar(RUNNING_RUNS_SQL).fetch_all(pool).await.context("listing running runs")?;
    let mut closed = Vec::new();
    for id in running {
        let mut tx = pool.begin().await.context("closing abandoned runs")?;
        let free = take_lock_in(&mut tx, id).await?;
        // The listing may be stale: a run that finished after it commits its row before its lock
        // goes, so with the lock in hand a fresh read tells dead runs from finished ones.
        let still_running = free
            && sqlx::query_scalar::<_, bool>("SELECT status = 'running' FROM run WHERE id = $1 FOR UPDATE")
                .bind(id)
                .fetch_one(&mut *tx)
                .await
                .context("re-reading a run row")?;
        if still_running {
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
        }
        tx.commit().await.context("closing abandoned runs")?;
    }
    Ok(closed)
}

pub(super) async fn finish(
    pool: &PgPool,
    run: RunHandle,
    status: RunStatus,
    reason: Option<&str>,
    pending: i64,
) -> Result<RunSummary, StoreError> {
    let id = run.id;
    let mut tx = pool.begin().await.context("finishing a run")?;
    let counts = aggregate(&mut tx, id).await?;
    write_end(&mut tx, id, status, reason, &counts, pending).await?;
    tx.commit().await.context("finishing a run")?;
    if let RunGuard::Advisory(conn) = run.guard {
        // Closing the session releases the advisory lock.
        let _ = conn.close().await;
    }
    // The counts were read in the closing transaction, after the last chunk: not read twice.
    summary_with(pool, Some(id), Some(counts))
        .await?
        .ok_or(StoreError::Invariant { context: "finishing a run", detail: format!("run {id} vanished") })
}

type Counts = BTreeMap<String, CodeCount>;

async fn aggregate(conn: &mut PgConnection, run_id: i64) -> Result<Counts, StoreError> {
    let rows =
        sqlx::query("SELECT code, count(*), least(coalesce(sum(fee), 0), 9223372036854775807)::bigint FROM result WHERE run_id = $1 GROUP BY code")
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
    conn: &mut PgConnection,
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
        .bind(Utc::now())
        .bind(read)
        .bind(reissued)
        .bind(ineligible)
        .bind(failed)
        .bind(fee_total)
        .bind(serde_json::to_value(counts).unwrap_or_default())
        .bind(pending)
        .execute(&mut *conn)
        .await
        .context("closing a run row")?;
    expect_run_closed(run_id, done.rows_affected())
}

pub(super) async fn summary(pool: &PgPool, run_id: Option<i64>) -> Result<Option<RunSummary>, StoreError> {
    summary_with(pool, run_id, None).await
}

/// The run row with `counts`, or with its results counted now when they are not known.
async fn summary_with(
    pool: &PgPool,
    run_id: Option<i64>,
    counts: Option<Counts>,
) -> Result<Option<RunSummary>, StoreError> {
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
    let text = |column: &'static str| row.try_get::<String, _>(column).context("reading a run");
    let (trigger, scope, status) = run_enums(&text("trigger")?, &text("scope")?, &text("status")?)?;
    Ok(Some(RunSummary {
        run_id: id,
        as_of: row.try_get::<NaiveDate, _>("as_of").context("reading a run")?,
        trigger,
        scope,
        status,
        reason: row.try_get("reason").context("reading a run")?,
        started_at: row.try_get::<DateTime<Utc>, _>("started_at").context("reading a run")?,
        finished_at: row.try_get("finished_at").context("reading a run")?,
        version: row.try_get("version").context("reading a run")?,
        fee_mode: row.try_get("fee_mode").context("reading a run")?,
        owner: row.try_get("owner").context("reading a run")?,
        abandoned: status == RunStatus::Running && lock_is_free(pool, id).await?,
        counts,
        read,
        reissued,
        ineligible,
        failed,
        pending,
        fee_total,
    }))
}
