//! Schedule slots, readiness and the database gauges on PostgreSQL.

use chrono::{DateTime, NaiveDate, Utc};
use sqlx::{PgPool, Row};

use crate::store::rows::{
    COMPLETED_DATES_SQL, FIRST_SCHEDULED_DATE_SQL, HOLD_SLOT_SQL, LAST_SUCCESS_SQL, PENDING_GAUGE_SQL, SLOTS_SINCE_SQL,
};
use crate::store::{Context, DbGauges, ScheduleHistory, SlotRecord, StoreError};

pub(super) async fn history(pool: &PgPool, schedule: &str, since: NaiveDate) -> Result<ScheduleHistory, StoreError> {
    // One snapshot for the three reads: read apart, a run that completed between the completed
    // dates and the slots looked neither done nor running, and its slot was taken over (a second
    // run of the night).
    let mut conn = pool
        .begin_with("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        .await
        .context("reading the schedule's history")?;
    let first: Option<NaiveDate> = sqlx::query_scalar(FIRST_SCHEDULED_DATE_SQL)
        .bind(schedule)
        .fetch_one(&mut *conn)
        .await
        .context("reading the schedule's first date")?;
    let completed: Vec<NaiveDate> = sqlx::query_scalar(COMPLETED_DATES_SQL)
        .bind(since)
        .fetch_all(&mut *conn)
        .await
        .context("reading completed dates")?;
    let rows = sqlx::query(SLOTS_SINCE_SQL)
        .bind(schedule)
        .bind(since)
        .fetch_all(&mut *conn)
        .await
        .context("reading schedule slots")?;
    let slots = rows
        .iter()
        .map(|r| {
            Ok(SlotRecord {
                at: r.try_get(0)?,
                as_of: r.try_get(1)?,
                held_reason: r.try_get(2)?,
                running: r.try_get(3)?,
            })
        })
        .collect::<Result<_, sqlx::Error>>()
        .context("reading a slot")?;
    conn.commit().await.context("reading the schedule's history")?;
    Ok(ScheduleHistory { first_date: first, completed: completed.into_iter().collect(), slots })
}

pub(super) async fn hold(pool: &PgPool, schedule: &str, at: DateTime<Utc>, reason: &str) -> Result<(), StoreError> {
    sqlx::query(HOLD_SLOT_SQL)
        .bind(schedule)
        .bind(at)
        .bind(reason)
        .execute(pool)
        .await
        .context("holding a schedule slot")?;
    Ok(())
}

pub(super) async fn gauges(pool: &PgPool) -> Result<DbGauges, StoreError> {
    let mut conn = pool.acquire().await.context("reading the gauges")?;
    let last: Option<DateTime<Utc>> =
        sqlx::query_scalar(LAST_SUCCESS_SQL).fetch_one(&mut *conn).await.context("reading the last success")?;
    let (pending, oldest): (i64, Option<DateTime<Utc>>) =
        sqlx::query_as(PENDING_GAUGE_SQL).fetch_one(&mut *conn).await.context("reading pending reservations")?;
    Ok(DbGauges { last_success: last, pending_reservations: pending, oldest_pending: oldest })
}
