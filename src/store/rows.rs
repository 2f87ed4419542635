//! Row decoding and SQL text shared by both backends. SQLite reads its candidate pages as JSON
//! (`sqlite/chunk.rs`); PostgreSQL reads them as rows through `candidate_from_row`.

use sqlx::{ColumnIndex, Decode, Row, Type};

use super::{Candidate, Claimed, Context, Reservation, StoreError};
use crate::domain::eligibility::{CardFacts, MemberFacts, ProductFacts};
use crate::domain::ids::CardApplyNo;
use crate::domain::text::is_present;

/// A candidate as the database holds it: texts raw, so that what counts as blank is decided
/// once, in Rust, by `domain::text` (SQL's `trim` knows only ASCII spaces).
pub(crate) struct RawCandidate {
    pub id: i64,
    pub card_no: String,
    pub status: String,
    pub expiry_ym: i64,
    pub par: Option<String>,
    pub already: bool,
    pub member_id: Option<i64>,
    pub cancelled: Option<bool>,
    pub name: Option<String>,
    pub mobile: Option<String>,
    pub address: Option<String>,
    pub address_detail: Option<String>,
    pub zip_code: Option<String>,
    pub product_id: i64,
    pub allows: bool,
    pub fee: i64,
    pub validity_months: Option<i64>,
    pub balance: i64,
    pub prior: i64,
}

impl From<RawCandidate> for Candidate {
    fn from(r: RawCandidate) -> Self {
        Candidate {
            facts: CardFacts {
                card_id: r.id,
                card_no: r.card_no,
                status: r.status,
                expiry_yyyymm: r.expiry_ym,
                has_par: is_present(r.par.as_deref()),
                already_reissued: r.already,
                member: r.member_id.map(|member_id| MemberFacts {
                    member_id,
                    cancelled: r.cancelled.unwrap_or(true),
                    has_name: is_present(r.name.as_deref()),
                    has_mobile: is_present(r.mobile.as_deref()),
                    address: r.address,
                    address_detail: r.address_detail,
                    zip_code: r.zip_code,
                }),
                product: ProductFacts {
                    product_id: r.product_id,
                    allows_expiry_reissue: r.allows,
                    reissue_fee: r.fee,
                    validity_months: r.validity_months,
                },
            },
            balance: r.balance,
            prior_applications: r.prior,
        }
    }
}

/// Builds a candidate from a row of the candidate query's named columns (PostgreSQL).
pub(crate) fn candidate_from_row<'r, R>(row: &'r R) -> Result<Candidate, sqlx::Error>
where
    R: Row,
    &'static str: ColumnIndex<R>,
    i64: Decode<'r, R::Database> + Type<R::Database>,
    bool: Decode<'r, R::Database> + Type<R::Database>,
    String: Decode<'r, R::Database> + Type<R::Database>,
{
    Ok(RawCandidate {
        id: row.try_get("id")?,
        card_no: row.try_get("card_no")?,
        status: row.try_get("status")?,
        expiry_ym: row.try_get("expiry_ym")?,
        par: row.try_get("par")?,
        already: row.try_get("already")?,
        member_id: row.try_get("member_id")?,
        cancelled: row.try_get("cancelled")?,
        name: row.try_get("name")?,
        mobile: row.try_get("mobile")?,
        address: row.try_get("address")?,
        address_detail: row.try_get("address_detail")?,
        zip_code: row.try_get("zip_code")?,
        product_id: row.try_get("product_id")?,
        allows: row.try_get("allows")?,
        fee: row.try_get("fee")?,
        validity_months: row.try_get("validity_months")?,
        balance: row.try_get("balance")?,
        prior: row.try_get("prior")?,
    }
    .into())
}

/// A bulk write must change exactly one row per item; anything else rolls the chunk back.
pub(crate) fn expect_rows(context: &'static str, expected: usize, actual: u64) -> Result<(), StoreError> {
    if actual == expected as u64 {
        Ok(())
    } else {
        Err(StoreError::Invariant { context, detail: format!("expected {expected} rows, changed {actual}") })
    }
}

/// Closing a run row is conditional on it still being `running`; no row changed means another
/// process closed it, so this run had lost its liveness lock.
pub(crate) fn expect_run_closed(run_id: i64, changed: u64) -> Result<(), StoreError> {
    if changed == 1 {
        Ok(())
    } else {
        Err(StoreError::Invariant {
            context: "closing a run row",
            detail: format!(
                "run {run_id} was no longer running: another process closed it (its liveness lock was lost)"
            ),
        })
    }
}

/// Pending reservations no live run owns: same text on both engines (no parameters).
/// Pending reservations nobody is settling: their run ended or died, or (the sync API's, which
/// have no run) their request is older than $1, so its own settlement is long over.
pub(crate) const PENDING_RESERVATIONS_SQL: &str = "SELECT a.id, a.old_card_id, c.card_no, a.member_id, a.fee, a.card_apply_no, a.correlation_id \
     FROM card_application a JOIN card c ON c.id = a.old_card_id LEFT JOIN run ON run.id = a.run_id \
     WHERE a.payment_state = 'PENDING_PAYMENT' \
       AND ((a.run_id IS NOT NULL AND (run.id IS NULL OR run.status <> 'running')) \
            OR (a.run_id IS NULL AND a.created_at < $1)) \
     ORDER BY a.member_id, a.old_card_id";

/// How long a sync API reservation is its request's to settle before runs take it as a leftover.
pub(crate) const API_RESERVATION_GRACE: chrono::Duration = chrono::Duration::minutes(10);

pub(crate) fn reservation_from_row<'r, R>(r: &'r R) -> Result<Reservation, sqlx::Error>
where
    R: Row,
    usize: ColumnIndex<R>,
    i64: Decode<'r, R::Database> + Type<R::Database>,
    String: Decode<'r, R::Database> + Type<R::Database>,
{
    Ok(Reservation {
        application_id: r.try_get(0)?,
        card_id: r.try_get(1)?,
        card_no: r.try_get(2)?,
        member_id: r.try_get(3)?,
        fee: r.try_get(4)?,
        card_apply_no: CardApplyNo::parse(&r.try_get::<String, _>(5)?).map_err(|e| sqlx::Error::Decode(Box::new(e)))?,
        correlation_id: r.try_get(6)?,
    })
}

/// A claim's `RETURNING old_card_id, id` row.
pub(crate) fn claimed_from_row<'r, R>(r: &'r R) -> Result<Claimed, sqlx::Error>
where
    R: Row,
    usize: ColumnIndex<R>,
    i64: Decode<'r, R::Database> + Type<R::Database>,
{
    Ok(Claimed { card_id: r.try_get(0)?, application_id: r.try_get(1)? })
}

/// Which of a set of cards have a live expiry-reissue application (the set is one parameter:
/// a JSON array on SQLite, an array on PostgreSQL).
pub(crate) const LIVE_APPLICATION_CARDS_SQLITE: &str = "SELECT old_card_id FROM card_application \
     WHERE old_card_id IN (SELECT value FROM json_each(?1)) AND kind = 'EXPIRY_REISSUE' AND payment_state <> 'CANCELLED'";
pub(crate) const LIVE_APPLICATION_CARDS_PG: &str = "SELECT old_card_id FROM card_application \
     WHERE old_card_id = ANY($1) AND kind = 'EXPIRY_REISSUE' AND payment_state <> 'CANCELLED'";

/// The card application numbers taken in an inclusive range (a seek of the UNIQUE index). `$N`
/// placeholders serve both engines: sqlx's SQLite driver binds `$N` to the N-th argument, as
/// PostgreSQL does.
pub(crate) const TAKEN_APPLY_NOS_SQL: &str =
    "SELECT card_apply_no FROM card_application WHERE card_apply_no BETWEEN $1 AND $2";

/// The card application numbers taken in `low..=high`, on either engine's connection.
pub(crate) async fn taken_apply_nos<'c, DB, E>(
    conn: E,
    low: &CardApplyNo,
    high: &CardApplyNo,
) -> Result<Vec<CardApplyNo>, StoreError>
where
    DB: sqlx::Database,
    E: sqlx::Executor<'c, Database = DB>,
    for<'q> &'q str: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    (String,): for<'r> sqlx::FromRow<'r, DB::Row>,
    <DB as sqlx::Database>::Arguments: sqlx::IntoArguments<DB>,
{
    let taken: Vec<String> = sqlx::query_scalar(TAKEN_APPLY_NOS_SQL)
        .bind(low.as_str())
        .bind(high.as_str())
        .fetch_all(conn)
        .await
        .context("reading taken card application numbers")?;
    parse_apply_nos(taken)
}

/// A card's id by its number: the same text on both engines.
pub(crate) const FIND_CARD_ID_SQL: &str = "SELECT id FROM card WHERE card_no = $1";

/// Result rows older than a cutoff (each engine binds its own timestamp type).
pub(crate) const PRUNE_RESULTS_SQL: &str = "DELETE FROM result WHERE created_at < $1";

/// Stored numbers back into their type; one that is not 22 digits was written by someone else
/// and cannot collide with ours, so it is left out.
pub(crate) fn parse_apply_nos(raw: Vec<String>) -> Result<Vec<CardApplyNo>, StoreError> {
    Ok(raw.iter().filter_map(|r| CardApplyNo::parse(r).ok()).collect())
}

/// A new `running` run row. $9 is the start time, $6 how its liveness is held ('file' or
/// 'advisory'); each engine binds its own date, JSON and timestamp types.
pub(crate) const INSERT_RUN_SQL: &str = "INSERT INTO run (as_of, trigger, scope, params, status, owner, lock_token, \
     version, fee_mode, started_at, slot_id) VALUES ($1, $2, $3, $4, 'running', $5, $6, $7, $8, $9, $10) RETURNING id";

/// Claims a slot: a row only the first claimer inserts (no row back: it was taken).
pub(crate) const CLAIM_SLOT_SQL: &str = "INSERT INTO schedule_slot (schedule, slot_at, as_of, claimed_by, claimed_at) \
     VALUES ($1, $2, $3, $4, $5) ON CONFLICT (schedule, slot_at) DO NOTHING RETURNING id";
pub(crate) const FIND_SLOT_SQL: &str = "SELECT id, held_reason FROM schedule_slot WHERE schedule = $1 AND slot_at = $2";
pub(crate) const HOLD_SLOT_SQL: &str = "UPDATE schedule_slot SET held_reason = $3 WHERE schedule = $1 AND slot_at = $2";
pub(crate) const FIRST_SCHEDULED_DATE_SQL: &str = "SELECT min(as_of) FROM (SELECT as_of FROM schedule_slot \
     WHERE schedule = $1 UNION ALL SELECT as_of FROM run WHERE trigger = 'schedule') AS d";
pub(crate) const COMPLETED_DATES_SQL: &str =
    "SELECT DISTINCT as_of FROM run WHERE scope = 'full' AND status = 'completed' AND as_of >= $1";
pub(crate) const SLOTS_SINCE_SQL: &str = "SELECT s.slot_at, s.as_of, s.held_reason, EXISTS (SELECT 1 FROM run r \
     WHERE r.slot_id = s.id AND r.status = 'running') AS running FROM schedule_slot s \
     WHERE s.schedule = $1 AND s.as_of >= $2 ORDER BY s.slot_at";
pub(crate) const LAST_SUCCESS_SQL: &str = "SELECT max(finished_at) FROM run WHERE scope = 'full' AND status = 'completed' \
     AND as_of = (SELECT max(as_of) FROM run WHERE scope = 'full' AND status = 'completed')";
pub(crate) const PENDING_GAUGE_SQL: &str =
    "SELECT count(*), min(created_at) FROM card_application WHERE payment_state = 'PENDING_PAYMENT'";
pub(crate) const PRUNE_SLOTS_SQL: &str = "DELETE FROM schedule_slot WHERE slot_at < $1";

/// Whether an insert failed on a unique index (the slot's one running run).
pub(crate) fn is_unique_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(db) if db.is_unique_violation())
}

/// Closes a run row, only while it is still `running` (see `expect_run_closed`).
pub(crate) const END_RUN_SQL: &str = "UPDATE run SET status = $2, reason = $3, finished_at = $4, read_count = $5, \
     reissued_count = $6, ineligible_count = $7, failed_count = $8, fee_total = $9, counts = $10, pending_count = $11 \
     WHERE id = $1 AND status = 'running'";

/// One run row (the latest when $1 is NULL).
pub(crate) const RUN_ROW_SQL: &str = "SELECT id, as_of, trigger, scope, status, reason, started_at, finished_at, \
     version, fee_mode, pending_count, owner FROM run WHERE (CAST($1 AS BIGINT) IS NULL OR id = $1) ORDER BY id DESC LIMIT 1";

/// The ids of the run rows `runs` lists, newest first ($1 status, $2 as-of as text, $3 how many).
pub(crate) const RUN_IDS_SQL: &str = "SELECT id FROM run WHERE (CAST($1 AS TEXT) IS NULL OR status = $1) \
     AND (CAST($2 AS TEXT) IS NULL OR CAST(as_of AS TEXT) = $2) ORDER BY id DESC LIMIT $3";

pub(crate) async fn run_ids<DB>(pool: &sqlx::Pool<DB>, filter: &super::RunFilter) -> Result<Vec<i64>, StoreError>
where
    DB: sqlx::Database,
    <DB as sqlx::Database>::Arguments: sqlx::IntoArguments<DB>,
    for<'c> &'c mut DB::Connection: sqlx::Executor<'c, Database = DB>,
    for<'q> Option<String>: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    for<'q> i64: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    (i64,): for<'r> sqlx::FromRow<'r, DB::Row>,
{
    let rows: Vec<(i64,)> = sqlx::query_as(RUN_IDS_SQL)
        .bind(filter.status.map(|s| s.to_string()))
        .bind(filter.as_of.map(|d| d.to_string()))
        .bind(i64::from(filter.last))
        .fetch_all(pool)
        .await
        .context("listing runs")?;
    Ok(rows.into_iter().map(|(id,)| id).collect())
}

pub(crate) async fn run_charges<DB>(pool: &sqlx::Pool<DB>, run_id: i64) -> Result<Vec<super::Charge>, StoreError>
where
    DB: sqlx::Database,
    <DB as sqlx::Database>::Arguments: sqlx::IntoArguments<DB>,
    for<'c> &'c mut DB::Connection: sqlx::Executor<'c, Database = DB>,
    for<'q> i64: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    (i64, String, String, i64, String): for<'r> sqlx::FromRow<'r, DB::Row>,
{
    let rows: Vec<(i64, String, String, i64, String)> = sqlx::query_as(
        "SELECT r.run_id, c.card_no, r.card_apply_no, r.fee, coalesce(d.reference, a.payment_ref, '') \
         FROM result r JOIN card c ON c.id = r.card_id \
         LEFT JOIN card_application a ON a.card_apply_no = r.card_apply_no \
         LEFT JOIN wallet_debit d ON d.application_id = a.id \
         WHERE r.run_id = $1 AND r.code = '000_000' AND r.fee > 0 ORDER BY r.id",
    )
    .bind(run_id)
    .fetch_all(pool)
    .await
    .context("listing a run's charges")?;
    Ok(rows
        .into_iter()
        .map(|(run_id, card_no, card_apply_no, amount, reference)| super::Charge {
            run_id,
            card_no,
            card_apply_no,
            amount,
            reference,
        })
        .collect())
}

/// The window's cards not marked reissued, on the partial expiry index, plus the cards the run
/// ($3) has already recorded: the count runs beside the first chunks, and one statement sees one
/// state, so every card the run reads is in one term or the other (an upper bound whenever it
/// is taken). SQLite's planner would pick the unique index on `replaced_by_application_id` for
/// the `IS NULL` term (a walk of every unmarked card: 0.10 s against 0.01 s at 1M cards), so it
/// is told which index to use.
pub(crate) const ESTIMATE_SQL_SQLITE: &str = "SELECT (SELECT count(*) FROM card INDEXED BY card_expiry_unreissued \
     WHERE expiry_ym BETWEEN $1 AND $2 AND replaced_by_application_id IS NULL) \
     + (SELECT count(*) FROM result WHERE run_id = $3)";
pub(crate) const ESTIMATE_SQL_PG: &str = "SELECT (SELECT count(*) FROM card WHERE expiry_ym BETWEEN $1 AND $2 AND replaced_by_application_id IS NULL) \
     + (SELECT count(*) FROM result WHERE run_id = $3)";

pub(crate) async fn estimate_candidates<DB>(
    pool: &sqlx::Pool<DB>,
    sql: &'static str,
    months: &[i64],
    run_id: Option<i64>,
) -> Result<u64, StoreError>
where
    DB: sqlx::Database,
    <DB as sqlx::Database>::Arguments: sqlx::IntoArguments<DB>,
    for<'c> &'c mut DB::Connection: sqlx::Executor<'c, Database = DB>,
    for<'q> i64: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    for<'q> Option<i64>: sqlx::Encode<'q, DB>,
    (i64,): for<'r> sqlx::FromRow<'r, DB::Row>,
{
    let (Some(first), Some(last)) = (months.iter().min(), months.iter().max()) else { return Ok(0) };
    // The window's months are consecutive, so one range seeks the index once.
    let (n,): (i64,) = sqlx::query_as(sql)
        .bind(*first)
        .bind(*last)
        .bind(run_id)
        .fetch_one(pool)
        .await
        .context("counting the window's cards")?;
    Ok(u64::try_from(n).unwrap_or(0))
}

/// The `running` run rows, oldest first.
pub(crate) const RUNNING_RUNS_SQL: &str = "SELECT id FROM run WHERE status = 'running' ORDER BY id";

/// Pending reservations, on either engine's pool.
pub(crate) async fn pending_reservations<'c, DB, E, T>(conn: E, api_cutoff: T) -> Result<Vec<Reservation>, StoreError>
where
    DB: sqlx::Database,
    E: sqlx::Executor<'c, Database = DB>,
    <DB as sqlx::Database>::Arguments: sqlx::IntoArguments<DB>,
    usize: ColumnIndex<DB::Row>,
    i64: for<'r> Decode<'r, DB> + Type<DB>,
    String: for<'r> Decode<'r, DB> + Type<DB>,
    T: for<'q> sqlx::Encode<'q, DB> + Type<DB> + Send + 'static,
{
    let rows = sqlx::query(PENDING_RESERVATIONS_SQL)
        .bind(api_cutoff)
        .fetch_all(conn)
        .await
        .context("listing pending reservations")?;
    rows.iter().map(reservation_from_row).collect::<Result<_, _>>().context("listing pending reservations")
}

/// A card's id by its number, on either engine's pool.
pub(crate) async fn find_card_id<'c, DB, E>(conn: E, card_no: &str) -> Result<Option<i64>, StoreError>
where
    DB: sqlx::Database,
    E: sqlx::Executor<'c, Database = DB>,
    <DB as sqlx::Database>::Arguments: sqlx::IntoArguments<DB>,
    for<'q> &'q str: sqlx::Encode<'q, DB> + Type<DB>,
    (i64,): for<'r> sqlx::FromRow<'r, DB::Row>,
{
    sqlx::query_scalar(FIND_CARD_ID_SQL).bind(card_no).fetch_optional(conn).await.context("looking up a card number")
}

/// The migrations `_sqlx_migrations` records, on either engine's pool (the caller checks the
/// table exists: that query is each engine's own).
pub(crate) async fn applied_migrations<'c, DB, E>(conn: E) -> Result<Vec<super::AppliedMigration>, StoreError>
where
    DB: sqlx::Database,
    E: sqlx::Executor<'c, Database = DB>,
    <DB as sqlx::Database>::Arguments: sqlx::IntoArguments<DB>,
    usize: ColumnIndex<DB::Row>,
    i64: for<'r> Decode<'r, DB> + Type<DB>,
    bool: for<'r> Decode<'r, DB> + Type<DB>,
    String: for<'r> Decode<'r, DB> + Type<DB>,
    Vec<u8>: for<'r> Decode<'r, DB> + Type<DB>,
{
    sqlx::query(super::APPLIED_MIGRATIONS_SQL)
        .fetch_all(conn)
        .await
        .context("checking the schema version")?
        .iter()
        .map(super::applied_from_row)
        .collect::<Result<_, sqlx::Error>>()
        .context("checking the schema version")
}

/// Adds to an as-of's blast-radius totals and returns them ($1 the as-of, in each engine's date type).
pub(crate) const ADD_TO_BUDGET_SQL: &str = "INSERT INTO as_of_budget AS b (as_of, reissued, fee_total) \
     VALUES ($1, $2, $3) ON CONFLICT (as_of) DO UPDATE SET reissued = b.reissued + excluded.reissued, \
     fee_total = b.fee_total + excluded.fee_total RETURNING reissued, fee_total";

/// Adds to an as-of's blast-radius totals inside a chunk's transaction; `as_of` in the engine's
/// own date type.
pub(crate) async fn add_to_budget<'c, DB, E, D>(
    conn: E,
    as_of: D,
    reissued: i64,
    fee_total: i64,
) -> Result<(i64, i64), StoreError>
where
    DB: sqlx::Database,
    E: sqlx::Executor<'c, Database = DB>,
    <DB as sqlx::Database>::Arguments: sqlx::IntoArguments<DB>,
    D: for<'q> sqlx::Encode<'q, DB> + Type<DB> + Send + 'static,
    i64: for<'q> sqlx::Encode<'q, DB> + Type<DB>,
    (i64, i64): for<'r> sqlx::FromRow<'r, DB::Row>,
{
    sqlx::query_as(ADD_TO_BUDGET_SQL)
        .bind(as_of)
        .bind(reissued)
        .bind(fee_total)
        .fetch_one(conn)
        .await
        .context("adding to the as-of's blast-radius totals")
}

/// A run row's trigger, scope and status, read back into their types.
pub(crate) fn run_enums(
    trigger: &str,
    scope: &str,
    status: &str,
) -> Result<(super::Trigger, super::Scope, super::RunStatus), StoreError> {
    use super::types::parse_stored;
    Ok((
        parse_stored("trigger", trigger, super::Trigger::parse)?,
        parse_stored("scope", scope, super::Scope::parse)?,
        parse_stored("status", status, super::RunStatus::parse)?,
    ))
}

/// The API's member-and-card lookup: one row when the member exists (its status, and the card's
/// id when the member owns a card with that number).
pub(crate) const HOLDS_DATA_SQL: &str = "SELECT EXISTS (SELECT 1 FROM card_product) OR EXISTS (SELECT 1 FROM member) \
     OR EXISTS (SELECT 1 FROM card)";
pub(crate) const MEMBER_CARD_SQL: &str = "SELECT m.status, c.id FROM member m \
     LEFT JOIN card c ON c.member_id = m.id AND c.card_no = $2 WHERE m.id = $1";
pub(crate) const DROP_DEAD_KEY_SQL: &str = "DELETE FROM idempotency_key WHERE api_key_id = $1 AND key = $2 \
     AND (expires_at < $3 OR (status IS NULL AND application_id IS NULL AND created_at < $4))";
pub(crate) const CLAIM_KEY_SQL: &str = "INSERT INTO idempotency_key (api_key_id, key, body_hash, created_at, expires_at, \
     claim_token) VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (api_key_id, key) DO NOTHING RETURNING CAST(1 AS BIGINT)";
/// A key's row, with the state of the application it waits on (a 503 whose fee was unknown).
pub(crate) const READ_KEY_SQL: &str = "SELECT k.body_hash, k.status, k.response, k.correlation_id, a.payment_state, \
     a.card_apply_no FROM idempotency_key k LEFT JOIN card_application a ON a.id = k.application_id \
     WHERE k.api_key_id = $1 AND k.key = $2";
pub(crate) const PARK_KEY_SQL: &str = "UPDATE idempotency_key SET correlation_id = $4, \
     application_id = (SELECT id FROM card_application WHERE card_apply_no = $3) \
     WHERE api_key_id = $1 AND key = $2 AND claim_token = $5 AND status IS NULL";
/// Only the claim's own request answers, parks or releases it (a takeover changed the token).
pub(crate) const ANSWER_KEY_SQL: &str = "UPDATE idempotency_key SET status = $3, response = $4, correlation_id = $5 \
     WHERE api_key_id = $1 AND key = $2 AND claim_token = $6 AND status IS NULL";
/// The settled outcome of a parked key becomes its answer (whoever reads it first stores it).
pub(crate) const SETTLE_PARKED_KEY_SQL: &str = "UPDATE idempotency_key SET status = $3, response = $4, \
     correlation_id = $5 WHERE api_key_id = $1 AND key = $2 AND status IS NULL AND application_id IS NOT NULL";
pub(crate) const RELEASE_KEY_SQL: &str =
    "DELETE FROM idempotency_key WHERE api_key_id = $1 AND key = $2 AND status IS NULL AND claim_token = $3";
pub(crate) const PRUNE_KEYS_SQL: &str = "DELETE FROM idempotency_key WHERE expires_at < $1 RETURNING CAST(1 AS BIGINT)";

/// The member-and-card row read back into its meaning.
pub(crate) fn member_card(row: Option<(String, Option<i64>)>) -> super::MemberCard {
    match row {
        None => super::MemberCard::NoMember,
        Some((status, _)) if status == "CANCELLED" => super::MemberCard::NoMember,
        Some((_, None)) => super::MemberCard::NotTheirs,
        Some((_, Some(card_id))) => super::MemberCard::Card(card_id),
    }
}

pub(crate) type KeyRow = (String, Option<i64>, Option<String>, Option<String>, Option<String>, Option<String>);

/// An idempotency row read back (status stored as an integer).
pub(crate) fn stored_answer(row: KeyRow) -> super::StoredAnswer {
    let (body_hash, status, response, correlation_id, state, card_apply_no) = row;
    super::StoredAnswer {
        body_hash,
        status: status.and_then(|s| u16::try_from(s).ok()),
        response,
        correlation_id,
        waits_on: state.zip(card_apply_no),
    }
}

/// The sync API's results of one business date, per code.
pub(crate) const API_COUNTS_SQL: &str = "SELECT code, count(*), CAST(coalesce(sum(fee), 0) AS BIGINT) FROM result \
     WHERE trigger = 'api' AND as_of = $1 GROUP BY code ORDER BY code";

/// How an engine stores an instant and a business date.
pub(crate) type StoredForm<T, D> = (fn(chrono::DateTime<chrono::Utc>) -> T, fn(chrono::NaiveDate) -> D);

/// The slot row a run links to, in the run's own transaction: inserted by the first claimer,
/// found by a takeover. `at` and `date` store an instant and a business date in the engine's own
/// form (text on SQLite).
pub(crate) async fn claim_slot<DB, T, D>(
    conn: &mut DB::Connection,
    claim: &super::SlotClaim,
    owner: String,
    (at, date): StoredForm<T, D>,
) -> Result<i64, StoreError>
where
    DB: sqlx::Database,
    for<'c> &'c mut DB::Connection: sqlx::Executor<'c, Database = DB>,
    <DB as sqlx::Database>::Arguments: sqlx::IntoArguments<DB>,
    T: for<'q> sqlx::Encode<'q, DB> + Type<DB> + Send + 'static,
    D: for<'q> sqlx::Encode<'q, DB> + Type<DB> + Send + 'static,
    for<'q> String: sqlx::Encode<'q, DB> + Type<DB>,
    (i64,): for<'r> sqlx::FromRow<'r, DB::Row>,
    (i64, Option<String>): for<'r> sqlx::FromRow<'r, DB::Row>,
{
    if !claim.takeover {
        let id: Option<i64> = sqlx::query_scalar(CLAIM_SLOT_SQL)
            .bind(claim.schedule.clone())
            .bind(at(claim.at))
            .bind(date(claim.as_of))
            .bind(owner)
            .bind(at(chrono::Utc::now()))
            .fetch_optional(&mut *conn)
            .await
            .context("claiming a schedule slot")?;
        return id.ok_or_else(|| super::slot_taken(claim, None));
    }
    let row: Option<(i64, Option<String>)> = sqlx::query_as(FIND_SLOT_SQL)
        .bind(claim.schedule.clone())
        .bind(at(claim.at))
        .fetch_optional(&mut *conn)
        .await
        .context("finding a schedule slot")?;
    match row {
        Some((id, None)) => Ok(id),
        Some((_, held)) => Err(super::slot_taken(claim, held)),
        None => {
            Err(StoreError::Invariant { context: "taking over a slot", detail: format!("slot {} vanished", claim.at) })
        }
    }
}
