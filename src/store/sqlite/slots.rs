//! Schedule slots, readiness and the database gauges on SQLite (dates and instants as text).

use std::str::FromStr;

use chrono::{DateTime, NaiveDate, Utc};
use sqlx::sqlite::SqliteConnectOptions;
use sqlx::{Connection, Row, SqliteConnection};

use super::{SqliteStore, parse_ts, ts};
use crate::store::rows::{
    COMPLETED_DATES_SQL, FIRST_SCHEDULED_DATE_SQL, HOLD_SLOT_SQL, LAST_SUCCESS_SQL, PENDING_GAUGE_SQL, SLOTS_SINCE_SQL,
};
use crate::store::{Context, DbGauges, ScheduleHistory, SlotRecord, StoreError};

fn date(raw: &str) -> Result<NaiveDate, StoreError> {
    NaiveDate::parse_from_str(raw, "%Y-%m-%d")
        .map_err(|e| StoreError::Invariant { context: "reading a date", detail: format!("{raw:?}: {e}") })
}

pub(super) async fn history(
    store: &SqliteStore,
    schedule: &str,
    since: NaiveDate,
) -> Result<ScheduleHistory, StoreError> {
    // One read transaction, so the three reads see one state: read apart, a run that completed
    // between the completed dates and the slots looked neither done nor running, and its slot was
    // taken over (a second run of the night).
    let mut conn = store.pool.begin().await.context("reading the schedule's history")?;
    let first: Option<String> = sqlx::query_scalar(FIRST_SCHEDULED_DATE_SQL)
        .bind(schedule)
        .fetch_one(&mut *conn)
        .await
        .context("reading the schedule's first date")?;
    let completed: Vec<String> = sqlx::query_scalar(COMPLETED_DATES_SQL)
        .bind(since.to_string())
        .fetch_all(&mut *conn)
        .await
        .context("reading completed dates")?;
    let rows = sqlx::query(SLOTS_SINCE_SQL)
        .bind(schedule)
        .bind(since.to_string())
        .fetch_all(&mut *conn)
        .await
        .context("reading schedule slots")?;
    let slots = rows
        .iter()
        .map(|r| {
            Ok(SlotRecord {
                at: parse_ts(&r.try_get::<String, _>(0).context("reading a slot")?)?,
                as_of: date(&r.try_get::<String, _>(1).context("reading a slot")?)?,
                held_reason: r.try_get(2).context("reading a slot")?,
                running: r.try_get(3).context("reading a slot")?,
            })
        })
        .collect::<Result<_, StoreError>>()?;
    conn.commit().await.context("reading the schedule's history")?;
    Ok(ScheduleHistory {
        first_date: first.as_deref().map(date).transpose()?,
        completed: completed.iter().map(|d| date(d)).collect::<Result<_, _>>()?,
        slots,
    })
}

pub(super) async fn hold(
    store: &SqliteStore,
    schedule: &str,
    at: DateTime<Utc>,
    reason: &str,
) -> Result<(), StoreError> {
    sqlx::query(HOLD_SLOT_SQL)
        .bind(schedule)
        .bind(ts(at))
        .bind(reason)
        .execute(&store.pool)
        .await
        .context("holding a schedule slot")?;
    Ok(())
}

pub(super) async fn gauges(store: &SqliteStore) -> Result<DbGauges, StoreError> {
    let mut conn = store.pool.acquire().await.context("reading the gauges")?;
    let last: Option<String> =
        sqlx::query_scalar(LAST_SUCCESS_SQL).fetch_one(&mut *conn).await.context("reading the last success")?;
    let (pending, oldest): (i64, Option<String>) =
        sqlx::query_as(PENDING_GAUGE_SQL).fetch_one(&mut *conn).await.context("reading pending reservations")?;
    Ok(DbGauges {
        last_success: last.as_deref().map(parse_ts).transpose()?,
        pending_reservations: pending,
        oldest_pending: oldest.as_deref().map(parse_ts).transpose()?,
    })
}

/// Opens the file read-only on a connection of its own (never the pool's, which a run holds).
pub(super) async fn probe(store: &SqliteStore) -> Result<(), StoreError> {
    let url = format!("sqlite://{}", store.path.display());
    let options = SqliteConnectOptions::from_str(&url)
        .map_err(|source| StoreError::Connect { url: url.clone(), source })?
        .read_only(true)
        .create_if_missing(false)
        .busy_timeout(std::time::Duration::from_millis(1000));
    let mut conn = SqliteConnection::connect_with(&options)
        .await
        .map_err(|source| StoreError::Connect { url: url.clone(), source })?;
    let applied = crate::store::rows::applied_migrations(&mut conn).await;
    let _ = conn.close().await;
    crate::store::compare_migrations(&super::MIGRATOR, &applied?)
}
