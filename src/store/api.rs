//! The sync API's reads and its Idempotency-Keys, written once for both engines: the SQL is the
//! same (`$N` placeholders), only how an instant is stored differs (`at`: text on SQLite,
//! `TIMESTAMPTZ` on PostgreSQL).

use chrono::{DateTime, Utc};
use sqlx::{Database, Encode, Executor, IntoArguments, Pool, Type};

use super::rows::{
    ANSWER_KEY_SQL, API_COUNTS_SQL, CLAIM_KEY_SQL, DROP_DEAD_KEY_SQL, KeyRow, MEMBER_CARD_SQL, PARK_KEY_SQL,
    PRUNE_KEYS_SQL, READ_KEY_SQL, RELEASE_KEY_SQL, SETTLE_PARKED_KEY_SQL, member_card, stored_answer,
};
use super::{CodeCount, Context, IdempotencyClaim, MemberCard, StoreError, StoredAnswer};

/// The API's member-and-card lookup, on a pool or inside a chunk's transaction.
pub(crate) async fn member_card_of<'c, DB, E>(conn: E, user_id: i64, card_no: &str) -> Result<MemberCard, StoreError>
where
    DB: Database,
    E: Executor<'c, Database = DB>,
    <DB as Database>::Arguments: IntoArguments<DB>,
    for<'q> i64: Encode<'q, DB> + Type<DB>,
    for<'q> String: Encode<'q, DB> + Type<DB>,
    (String, Option<i64>): for<'r> sqlx::FromRow<'r, DB::Row>,
{
    let row: Option<(String, Option<i64>)> = sqlx::query_as(MEMBER_CARD_SQL)
        .bind(user_id)
        .bind(card_no.to_owned())
        .fetch_optional(conn)
        .await
        .context("looking up the member's card")?;
    Ok(member_card(row))
}

pub(crate) async fn claim<DB, T>(
    pool: &Pool<DB>,
    c: &IdempotencyClaim,
    at: fn(DateTime<Utc>) -> T,
) -> Result<Option<StoredAnswer>, StoreError>
where
    DB: Database,
    <DB as Database>::Arguments: IntoArguments<DB>,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    T: for<'q> Encode<'q, DB> + Type<DB> + Send + 'static,
    for<'q> String: Encode<'q, DB> + Type<DB>,
    KeyRow: for<'r> sqlx::FromRow<'r, DB::Row>,
    (i64,): for<'r> sqlx::FromRow<'r, DB::Row>,
{
    let mut tx = pool.begin().await.context("claiming an idempotency key")?;
    sqlx::query(DROP_DEAD_KEY_SQL)
        .bind(c.api_key_id.clone())
        .bind(c.key.clone())
        .bind(at(c.now))
        .bind(at(c.stale_before))
        .execute(&mut *tx)
        .await
        .context("dropping a dead idempotency key")?;
    let inserted: Option<i64> = sqlx::query_scalar(CLAIM_KEY_SQL)
        .bind(c.api_key_id.clone())
        .bind(c.key.clone())
        .bind(c.body_hash.clone())
        .bind(at(c.now))
        .bind(at(c.expires_at))
        .bind(c.token.clone())
        .fetch_optional(&mut *tx)
        .await
        .context("claiming an idempotency key")?;
    let existing = if inserted.is_some() {
        None
    } else {
        let row: KeyRow = sqlx::query_as(READ_KEY_SQL)
            .bind(c.api_key_id.clone())
            .bind(c.key.clone())
            .fetch_one(&mut *tx)
            .await
            .context("reading an idempotency key")?;
        Some(stored_answer(row))
    };
    tx.commit().await.context("claiming an idempotency key")?;
    Ok(existing)
}

pub(crate) async fn read<DB>(pool: &Pool<DB>, api_key_id: &str, key: &str) -> Result<Option<StoredAnswer>, StoreError>
where
    DB: Database,
    <DB as Database>::Arguments: IntoArguments<DB>,
    for<'c> &'c Pool<DB>: Executor<'c, Database = DB>,
    for<'q> String: Encode<'q, DB> + Type<DB>,
    KeyRow: for<'r> sqlx::FromRow<'r, DB::Row>,
{
    let row: Option<KeyRow> = sqlx::query_as(READ_KEY_SQL)
        .bind(api_key_id.to_owned())
        .bind(key.to_owned())
        .fetch_optional(pool)
        .await
        .context("reading an idempotency key")?;
    Ok(row.map(stored_answer))
}

/// Stores `a` as the key's answer: by its claimer (`ANSWER_KEY_SQL`, `$6` its token), or as the
/// settled outcome of a parked key (`SETTLE_PARKED_KEY_SQL`, no token).
async fn write_answer<DB>(
    pool: &Pool<DB>,
    sql: &'static str,
    (api_key_id, key, token): (&str, &str, Option<&str>),
    a: &StoredAnswer,
) -> Result<(), StoreError>
where
    DB: Database,
    <DB as Database>::Arguments: IntoArguments<DB>,
    for<'c> &'c Pool<DB>: Executor<'c, Database = DB>,
    for<'q> String: Encode<'q, DB> + Type<DB>,
    for<'q> Option<i64>: Encode<'q, DB> + Type<DB>,
    for<'q> Option<String>: Encode<'q, DB> + Type<DB>,
{
    let mut query = sqlx::query(sql)
        .bind(api_key_id.to_owned())
        .bind(key.to_owned())
        .bind(a.status.map(i64::from))
        .bind(a.response.clone())
        .bind(a.correlation_id.clone());
    if let Some(token) = token {
        query = query.bind(token.to_owned());
    }
    query.execute(pool).await.context("storing an idempotent answer")?;
    Ok(())
}

pub(crate) async fn answer<DB>(
    pool: &Pool<DB>,
    (api_key_id, key, token): (&str, &str, &str),
    a: &StoredAnswer,
) -> Result<(), StoreError>
where
    DB: Database,
    <DB as Database>::Arguments: IntoArguments<DB>,
    for<'c> &'c Pool<DB>: Executor<'c, Database = DB>,
    for<'q> String: Encode<'q, DB> + Type<DB>,
    for<'q> Option<i64>: Encode<'q, DB> + Type<DB>,
    for<'q> Option<String>: Encode<'q, DB> + Type<DB>,
{
    write_answer(pool, ANSWER_KEY_SQL, (api_key_id, key, Some(token)), a).await
}

pub(crate) async fn settle_parked<DB>(
    pool: &Pool<DB>,
    api_key_id: &str,
    key: &str,
    a: &StoredAnswer,
) -> Result<(), StoreError>
where
    DB: Database,
    <DB as Database>::Arguments: IntoArguments<DB>,
    for<'c> &'c Pool<DB>: Executor<'c, Database = DB>,
    for<'q> String: Encode<'q, DB> + Type<DB>,
    for<'q> Option<i64>: Encode<'q, DB> + Type<DB>,
    for<'q> Option<String>: Encode<'q, DB> + Type<DB>,
{
    write_answer(pool, SETTLE_PARKED_KEY_SQL, (api_key_id, key, None), a).await
}

/// Runs a statement whose parameters are all text, in order.
async fn execute_texts<DB>(
    pool: &Pool<DB>,
    sql: &'static str,
    texts: &[&str],
    context: &'static str,
) -> Result<(), StoreError>
where
    DB: Database,
    <DB as Database>::Arguments: IntoArguments<DB>,
    for<'c> &'c Pool<DB>: Executor<'c, Database = DB>,
    for<'q> String: Encode<'q, DB> + Type<DB>,
{
    let mut query = sqlx::query(sql);
    for text in texts {
        query = query.bind((*text).to_owned());
    }
    query.execute(pool).await.context(context)?;
    Ok(())
}

pub(crate) async fn park<DB>(
    pool: &Pool<DB>,
    (api_key_id, key, token): (&str, &str, &str),
    card_apply_no: &str,
    correlation_id: &str,
) -> Result<(), StoreError>
where
    DB: Database,
    <DB as Database>::Arguments: IntoArguments<DB>,
    for<'c> &'c Pool<DB>: Executor<'c, Database = DB>,
    for<'q> String: Encode<'q, DB> + Type<DB>,
{
    let texts = [api_key_id, key, card_apply_no, correlation_id, token];
    execute_texts(pool, PARK_KEY_SQL, &texts, "parking an idempotency key on its application").await
}

pub(crate) async fn release<DB>(pool: &Pool<DB>, (api_key_id, key, token): (&str, &str, &str)) -> Result<(), StoreError>
where
    DB: Database,
    <DB as Database>::Arguments: IntoArguments<DB>,
    for<'c> &'c Pool<DB>: Executor<'c, Database = DB>,
    for<'q> String: Encode<'q, DB> + Type<DB>,
{
    execute_texts(pool, RELEASE_KEY_SQL, &[api_key_id, key, token], "releasing an idempotency key").await
}

pub(crate) async fn prune<DB, T>(
    pool: &Pool<DB>,
    now: DateTime<Utc>,
    at: fn(DateTime<Utc>) -> T,
) -> Result<u64, StoreError>
where
    DB: Database,
    <DB as Database>::Arguments: IntoArguments<DB>,
    for<'c> &'c Pool<DB>: Executor<'c, Database = DB>,
    T: for<'q> Encode<'q, DB> + Type<DB> + Send + 'static,
    (i64,): for<'r> sqlx::FromRow<'r, DB::Row>,
{
    let deleted: Vec<i64> =
        sqlx::query_scalar(PRUNE_KEYS_SQL).bind(at(now)).fetch_all(pool).await.context("pruning idempotency keys")?;
    Ok(deleted.len() as u64)
}

pub(crate) async fn api_counts<DB, D>(
    pool: &Pool<DB>,
    as_of: chrono::NaiveDate,
    date: fn(chrono::NaiveDate) -> D,
) -> Result<std::collections::BTreeMap<String, CodeCount>, StoreError>
where
    DB: Database,
    <DB as Database>::Arguments: IntoArguments<DB>,
    for<'c> &'c Pool<DB>: Executor<'c, Database = DB>,
    D: for<'q> Encode<'q, DB> + Type<DB> + Send + 'static,
    (String, i64, i64): for<'r> sqlx::FromRow<'r, DB::Row>,
{
    let rows: Vec<(String, i64, i64)> =
        sqlx::query_as(API_COUNTS_SQL).bind(date(as_of)).fetch_all(pool).await.context("counting API results")?;
    Ok(rows.into_iter().map(|(code, count, fee)| (code, CodeCount { count, fee })).collect())
}

/// The `ApiLog` impl of an engine's store: these functions on its pool, with its way of storing
/// an instant (`$at`) and a date (`$date`).
macro_rules! impl_api_log {
    ($store:ty, $at:expr, $date:expr) => {
        impl $crate::store::ApiLog for $store {
            async fn claim_idempotency(
                &self,
                claim: &$crate::store::IdempotencyClaim,
            ) -> Result<Option<$crate::store::StoredAnswer>, $crate::store::StoreError> {
                $crate::store::api::claim(&self.pool, claim, $at).await
            }

            async fn read_idempotency(
                &self,
                api_key_id: &str,
                key: &str,
            ) -> Result<Option<$crate::store::StoredAnswer>, $crate::store::StoreError> {
                $crate::store::api::read(&self.pool, api_key_id, key).await
            }

            async fn answer_idempotency(
                &self,
                owner: $crate::store::KeyOwner<'_>,
                answer: &$crate::store::StoredAnswer,
            ) -> Result<(), $crate::store::StoreError> {
                $crate::store::api::answer(&self.pool, owner, answer).await
            }

            async fn park_idempotency(
                &self,
                owner: $crate::store::KeyOwner<'_>,
                card_apply_no: &str,
                correlation_id: &str,
            ) -> Result<(), $crate::store::StoreError> {
                $crate::store::api::park(&self.pool, owner, card_apply_no, correlation_id).await
            }

            async fn settle_parked_idempotency(
                &self,
                api_key_id: &str,
                key: &str,
                answer: &$crate::store::StoredAnswer,
            ) -> Result<(), $crate::store::StoreError> {
                $crate::store::api::settle_parked(&self.pool, api_key_id, key, answer).await
            }

            async fn release_idempotency(
                &self,
                owner: $crate::store::KeyOwner<'_>,
            ) -> Result<(), $crate::store::StoreError> {
                $crate::store::api::release(&self.pool, owner).await
            }

            async fn api_counts(
                &self,
                as_of: chrono::NaiveDate,
            ) -> Result<std::collections::BTreeMap<String, $crate::store::CodeCount>, $crate::store::StoreError> {
                $crate::store::api::api_counts(&self.pool, as_of, $date).await
            }

            async fn prune_idempotency(
                &self,
                now: chrono::DateTime<chrono::Utc>,
            ) -> Result<u64, $crate::store::StoreError> {
                $crate::store::api::prune(&self.pool, now, $at).await
            }
        }
    };
}
pub(crate) use impl_api_log;
