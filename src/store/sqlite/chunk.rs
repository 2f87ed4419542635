//! One chunk's transaction on SQLite. Every write is one fixed statement with one JSON array
//! parameter read through `jsonb_each`: SQLite's counterpart of PostgreSQL's UNNEST.

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::{NaiveDate, Utc};
use sqlx::{AssertSqlSafe, Row, Sqlite, SqliteConnection, SqlitePool, Transaction};

use super::checkpoint::Checkpointer;
use super::read_ahead::{ReadAhead, Turn};
use super::ts;
use crate::domain::ids::CardApplyNo;
use crate::store::rows::{LIVE_APPLICATION_CARDS_SQLITE, RawCandidate, add_to_budget, expect_rows, taken_apply_nos};
use crate::store::{
    Candidate, CandidatePage, ChunkTx, Claimed, Context, Debit, MemberCard, NewApplication, PageQuery, ResultOrigin,
    ResultRow, Settlement, StoreError,
};

pub struct SqliteChunk {
    tx: Transaction<'static, Sqlite>,
    checkpointer: Option<Checkpointer>,
    /// Result rows written, for the checkpointer.
    results: usize,
    /// Writing chunks: the next page is read beside this one's writes.
    read_ahead: Option<Turn>,
}

impl SqliteChunk {
    pub(super) fn new(
        tx: Transaction<'static, Sqlite>,
        checkpointer: Option<Checkpointer>,
        read_ahead: Option<Arc<ReadAhead>>,
    ) -> Self {
        Self { tx, checkpointer, results: 0, read_ahead: read_ahead.map(Turn::new) }
    }
}

const LIVE_APPLICATION: &str = "SELECT 1 FROM card_application a \
     WHERE a.old_card_id = card.id AND a.kind = 'EXPIRY_REISSUE' AND a.payment_state <> 'CANCELLED'";

/// The page's scan. Parameters: ?1 after card id, ?2 as-of, ?3 limit, ?4.. months.
///
/// Each window month is its own walk of `card_expiry_unreissued (expiry_ym, id)`, which
/// delivers ids in order, and the merge keeps the first `limit`: no sort of the whole window per
/// page (DESIGN §8's keyset trap). The walks read the index alone; the anti-joins run on the
/// merged page only, so a month's ids past the page's end are never checked twice.
fn scan_sql(months: usize) -> String {
    let per_month: Vec<String> = (0..months)
        .map(|i| {
            format!(
                "SELECT id FROM (SELECT id FROM card INDEXED BY card_expiry_unreissued \
                 WHERE expiry_ym = ?{} AND replaced_by_application_id IS NULL AND id > ?1 ORDER BY id LIMIT ?3)",
                i + 4
            )
        })
        .collect();
    format!("{} ORDER BY id LIMIT ?3", per_month.join(" UNION ALL "))
}

/// The scanned cards that are still candidates: no result for this as-of, no live application.
fn candidates_of_scan() -> String {
    format!(
        "SELECT scan.id FROM scan \
         WHERE NOT EXISTS (SELECT 1 FROM result r WHERE r.card_id = scan.id AND r.as_of = ?2 AND r.trigger = 'run') \
         AND NOT EXISTS ({})",
        LIVE_APPLICATION.replace("card.id", "scan.id")
    )
}

/// The whole page as one row: how many cards the scan looked at, the last of them, and a JSON
/// array of the candidates. sqlx hands every result row across threads, so one row per page
/// instead of one per card is a third off the read (DESIGN §8). Fields are positional, in
/// `CandidateJson`'s order; the aggregate does not promise an order, so the page is sorted after
/// decoding. A card without a fee needs no balance: its wallet is not looked up (two index
/// descents, mostly page misses at 1M cards).
///
/// `already` says whether the card is reissued or has a live application. The batch's page
/// excludes both in its own filter, in this transaction, so it passes `0` rather than probe the
/// application index again per card; the single-card path evaluates its card whatever it holds.
fn candidates_sql(scan: &str, candidates: &str, already: &str) -> String {
    format!(
        "WITH scan(id) AS MATERIALIZED ({scan}), page(id) AS ({candidates}) \
         SELECT (SELECT count(*) FROM scan), (SELECT max(id) FROM scan), json_group_array(json_array( \
                c.id, c.card_no, c.status, c.expiry_ym, \
                c.par, \
                {already}, \
                m.id, m.status = 'CANCELLED', \
                m.name, m.mobile, \
                m.address, m.address_detail, m.zip_code, \
                c.product_id, coalesce(p.allows_expiry_reissue, 0), coalesce(p.reissue_fee, 0), \
                p.validity_months, \
                CASE WHEN p.reissue_fee > 0 THEN \
                    coalesce((SELECT w.balance FROM wallet w WHERE w.member_id = c.member_id), 0) ELSE 0 END, \
                (SELECT count(*) FROM card_application a WHERE a.old_card_id = c.id AND a.kind = 'EXPIRY_REISSUE'))) \
         FROM page JOIN card c ON c.id = page.id \
         LEFT JOIN member m ON m.id = c.member_id \
         LEFT JOIN card_product p ON p.id = c.product_id",
    )
}

/// One element of the page's JSON array (SQLite booleans arrive as 0/1).
#[derive(serde::Deserialize)]
struct CandidateJson {
    id: i64,
    card_no: String,
    status: String,
    expiry_ym: i64,
    par: Option<String>,
    already: u8,
    member_id: Option<i64>,
    cancelled: Option<u8>,
    name: Option<String>,
    mobile: Option<String>,
    address: Option<String>,
    address_detail: Option<String>,
    zip_code: Option<String>,
    product_id: i64,
    allows: u8,
    fee: i64,
    validity_months: Option<i64>,
    balance: i64,
    prior: i64,
}

impl From<CandidateJson> for Candidate {
    fn from(j: CandidateJson) -> Self {
        RawCandidate {
            id: j.id,
            card_no: j.card_no,
            status: j.status,
            expiry_ym: j.expiry_ym,
            par: j.par,
            already: j.already != 0,
            member_id: j.member_id,
            cancelled: j.cancelled.map(|c| c != 0),
            name: j.name,
            mobile: j.mobile,
            address: j.address,
            address_detail: j.address_detail,
            zip_code: j.zip_code,
            product_id: j.product_id,
            allows: j.allows != 0,
            fee: j.fee,
            validity_months: j.validity_months,
            balance: j.balance,
            prior: j.prior,
        }
        .into()
    }
}

fn decode_page(json: &str) -> Result<Vec<Candidate>, StoreError> {
    let rows: Vec<CandidateJson> = decode(json, "decoding a candidate page")?;
    let mut candidates: Vec<Candidate> = rows.into_iter().map(Candidate::from).collect();
    candidates.sort_unstable_by_key(|c| c.facts.card_id);
    Ok(candidates)
}

fn page_sql(page: &PageQuery) -> String {
    match page.only_card {
        // The single-card path evaluates its card whatever it holds.
        Some(_) => candidates_sql(
            "SELECT ?1",
            "SELECT id FROM scan",
            &format!(
                "c.replaced_by_application_id IS NOT NULL OR EXISTS ({})",
                LIVE_APPLICATION.replace("card.id", "c.id")
            ),
        ),
        None => candidates_sql(&scan_sql(page.window_months.len()), &candidates_of_scan(), "0"),
    }
}

fn bind_page<'q>(sql: &str, page: &PageQuery) -> sqlx::query::Query<'q, Sqlite, sqlx::sqlite::SqliteArguments> {
    let mut query = sqlx::query(AssertSqlSafe(sql.to_owned()));
    match page.only_card {
        Some(card_id) => query = query.bind(card_id),
        None => {
            query = query.bind(page.after).bind(page.as_of.to_string()).bind(i64::from(page.limit));
            for month in &page.window_months {
                query = query.bind(*month);
            }
        }
    }
    query
}

pub(super) async fn explain(pool: &SqlitePool, page: &PageQuery) -> Result<String, StoreError> {
    let sql = format!("EXPLAIN QUERY PLAN {}", page_sql(page));
    let rows = bind_page(&sql, page).fetch_all(pool).await.context("explaining the candidate query")?;
    let lines = rows.iter().map(|r| r.try_get::<String, _>("detail")).collect::<Result<Vec<_>, _>>();
    Ok(lines.context("reading a query plan")?.join("\n"))
}

/// One JSON array of `rows` (tuples serialize as arrays): the single parameter of a bulk write,
/// written straight from the rows without building a `serde_json::Value` per field.
fn to_json<T: serde::Serialize>(rows: impl Iterator<Item = T>) -> Result<String, StoreError> {
    encode(&rows.collect::<Vec<T>>())
}

/// The JSON parameter of a bulk write.
fn encode(value: &impl serde::Serialize) -> Result<String, StoreError> {
    serde_json::to_string(value)
        .map_err(|e| StoreError::Invariant { context: "encoding a bulk write", detail: e.to_string() })
}

/// A JSON row a statement aggregated (a page, a claim's winners), read back.
fn decode<T: serde::de::DeserializeOwned>(json: &str, context: &'static str) -> Result<T, StoreError> {
    serde_json::from_str(json).map_err(|e| StoreError::Invariant { context, detail: e.to_string() })
}

/// One page, read through `conn` (a chunk's transaction, or a read-ahead's snapshot).
pub(super) async fn read_page(conn: &mut SqliteConnection, page: &PageQuery) -> Result<CandidatePage, StoreError> {
    if page.only_card.is_none() && page.window_months.is_empty() {
        return Ok(CandidatePage::default());
    }
    let sql = page_sql(page);
    let row = bind_page(&sql, page).fetch_one(conn).await.context("reading candidates")?;
    let scanned: i64 = row.try_get(0).context("reading candidates")?;
    let last: Option<i64> = row.try_get(1).context("reading candidates")?;
    let json: String = row.try_get(2).context("reading candidates")?;
    let candidates = decode_page(&json)?;
    let scanned = match page.only_card {
        Some(_) => candidates.len(),
        None => usize::try_from(scanned).unwrap_or(0),
    };
    Ok(CandidatePage {
        scanned,
        next_after: last.unwrap_or(page.after),
        skipped_locked: false,
        candidates,
        early: None,
    })
}

impl ChunkTx for SqliteChunk {
    async fn read_candidates(&mut self, page: &PageQuery) -> Result<CandidatePage, StoreError> {
        // The write lock taken by BEGIN IMMEDIATE makes every scanned card this chunk's.
        match self.read_ahead.as_mut().filter(|_| page.read_ahead && page.only_card.is_none()) {
            Some(turn) => turn.read(&mut self.tx, page).await,
            None => read_page(&mut self.tx, page).await,
        }
    }

    async fn claim(&mut self, apps: &[NewApplication]) -> Result<Vec<Claimed>, StoreError> {
        if apps.is_empty() {
            return Ok(Vec::new());
        }
        let payload = to_json(apps.iter().map(|a| {
            (
                a.card_apply_no.as_str(),
                a.card_id,
                a.member_id,
                a.product_id,
                a.fee,
                a.new_expiry_yyyymm,
                a.payment_state.as_str(),
                &a.correlation_id,
                a.run_id,
                &a.delivery.address,
                &a.delivery.address_detail,
                &a.delivery.zip_code,
            )
        }))?;
        // The claims' ids are every id above the largest before the insert: `BEGIN IMMEDIATE`
        // holds the write lock, so nobody else inserts meanwhile, and an `INTEGER PRIMARY KEY`
        // takes the largest plus one. The winners come back as one JSON row: `RETURNING` sent
        // one row per claim across sqlx's thread boundary, a third of the statement's time.
        let before: i64 = sqlx::query_scalar("SELECT coalesce(max(id), 0) FROM card_application")
            .fetch_one(&mut *self.tx)
            .await
            .context("claiming applications")?;
        // No conflict target: a taken card application number loses the claim like a live
        // application does, and `chunk::claim` tells the two apart. `WHERE true` resolves
        // SQLite's parsing ambiguity between a SELECT's clauses and the upsert's ON CONFLICT. The
        // member's foreign key checks the member.
        sqlx::query(
            "INSERT INTO card_application (card_apply_no, kind, old_card_id, member_id, product_id, \
                 delivery_address, delivery_address_detail, delivery_zip_code, fee, new_expiry_ym, \
                 payment_state, correlation_id, run_id, created_at, updated_at) \
             SELECT j.value ->> '$[0]', 'EXPIRY_REISSUE', j.value ->> '$[1]', j.value ->> '$[2]', j.value ->> '$[3]', \
                 j.value ->> '$[9]', j.value ->> '$[10]', j.value ->> '$[11]', j.value ->> '$[4]', j.value ->> '$[5]', \
                 j.value ->> '$[6]', j.value ->> '$[7]', j.value ->> '$[8]', ?2, ?2 \
             FROM jsonb_each(?1) j WHERE true \
             ON CONFLICT DO NOTHING",
        )
        .bind(payload)
        .bind(ts(Utc::now()))
        .execute(&mut *self.tx)
        .await
        .context("claiming applications")?;
        let won: String = sqlx::query_scalar(
            "SELECT coalesce(json_group_array(json_array(old_card_id, id)), '[]') FROM card_application WHERE id > ?1",
        )
        .bind(before)
        .fetch_one(&mut *self.tx)
        .await
        .context("reading claims")?;
        let won: Vec<(i64, i64)> = decode(&won, "decoding claims")?;
        Ok(won.into_iter().map(|(card_id, application_id)| Claimed { card_id, application_id }).collect())
    }

    async fn member_card(&mut self, user_id: i64, card_no: &str) -> Result<MemberCard, StoreError> {
        crate::store::api::member_card_of(&mut *self.tx, user_id, card_no).await
    }

    async fn live_application_cards(&mut self, card_ids: &[i64]) -> Result<Vec<i64>, StoreError> {
        sqlx::query_scalar(LIVE_APPLICATION_CARDS_SQLITE)
            .bind(to_json(card_ids.iter())?)
            .fetch_all(&mut *self.tx)
            .await
            .context("reading which lost claims lost to a live application")
    }

    async fn keyset_end(&mut self, window_months: &[i64]) -> Result<Option<i64>, StoreError> {
        // One backward seek of the expiry index per month: the page's keyset is the card. (A
        // SQLite page never skips locked cards, so nothing asks for this today.)
        sqlx::query_scalar(
            "SELECT max((SELECT max(c.id) FROM card c INDEXED BY card_expiry_unreissued \
                         WHERE c.expiry_ym = m.value AND c.replaced_by_application_id IS NULL)) \
             FROM json_each(?1) m",
        )
        .bind(encode(&window_months)?)
        .fetch_one(&mut *self.tx)
        .await
        .context("finding the window's last card")
    }

    async fn taken_apply_nos(&mut self, low: &CardApplyNo, high: &CardApplyNo) -> Result<Vec<CardApplyNo>, StoreError> {
        taken_apply_nos(&mut *self.tx, low, high).await
    }

    async fn unclaim(&mut self, application_ids: &[i64]) -> Result<(), StoreError> {
        if application_ids.is_empty() {
            return Ok(());
        }
        let done = sqlx::query("DELETE FROM card_application WHERE id IN (SELECT value FROM jsonb_each(?1))")
            .bind(to_json(application_ids.iter())?)
            .execute(&mut *self.tx)
            .await
            .context("withdrawing declined claims")?;
        expect_rows("withdrawing declined claims", application_ids.len(), done.rows_affected())
    }

    async fn debit(&mut self, debits: &[Debit]) -> Result<(), StoreError> {
        if debits.is_empty() {
            return Ok(());
        }
        let payload = to_json(debits.iter().map(|d| (d.member_id, d.application_id, &d.reference, d.amount)))?;
        let inserted = sqlx::query(
            "INSERT INTO wallet_debit (wallet_id, application_id, reference, amount, created_at) \
             SELECT w.id, j.value ->> '$[1]', j.value ->> '$[2]', j.value ->> '$[3]', ?2 \
             FROM jsonb_each(?1) j JOIN wallet w ON w.member_id = j.value ->> '$[0]'",
        )
        .bind(payload)
        .bind(ts(Utc::now()))
        .execute(&mut *self.tx)
        .await
        .context("writing ledger debits")?;
        expect_rows("writing ledger debits", debits.len(), inserted.rows_affected())?;
        // One total per member, as a JSON object keyed by member id: read through `json_each`'s
        // key and value, the statement calls no SQL function, and with `OR FAIL` nothing in it
        // can abort it halfway. SQLite then keeps no statement journal for it: with one, every
        // wallet page the update changed (about 600 a chunk on 1M cards) was first copied to a
        // temporary file.
        let mut totals: BTreeMap<i64, i64> = BTreeMap::new();
        for d in debits {
            *totals.entry(d.member_id).or_default() += d.amount;
        }
        // Conditional on the balance: a wallet that cannot cover its total is not touched, the
        // row count comes up short, and the whole chunk rolls back.
        let updated = sqlx::query(
            "UPDATE OR FAIL wallet SET balance = balance - t.value FROM json_each(?1) t \
             WHERE wallet.member_id = CAST(t.key AS INTEGER) AND wallet.balance >= t.value",
        )
        .bind(encode(&totals)?)
        .execute(&mut *self.tx)
        .await
        .context("debiting wallets")?;
        expect_rows("debiting wallets (a balance did not cover its fees)", totals.len(), updated.rows_affected())?;
        if let Some(turn) = &mut self.read_ahead {
            turn.debited(&totals);
        }
        Ok(())
    }

    async fn settle(&mut self, settlements: &[Settlement]) -> Result<Vec<i64>, StoreError> {
        if settlements.is_empty() {
            return Ok(Vec::new());
        }
        let payload =
            to_json(settlements.iter().map(|s| (s.application_id, s.state.as_str(), s.payment_ref.as_deref())))?;
        let rows = sqlx::query(
            "UPDATE card_application SET payment_state = j.state, payment_ref = j.ref, updated_at = ?2 \
             FROM (SELECT value ->> '$[0]' AS id, value ->> '$[1]' AS state, value ->> '$[2]' AS ref \
                   FROM jsonb_each(?1)) AS j \
             WHERE card_application.id = j.id AND +card_application.payment_state = 'PENDING_PAYMENT' \
             RETURNING card_application.id",
        )
        .bind(payload)
        .bind(ts(Utc::now()))
        .fetch_all(&mut *self.tx)
        .await
        .context("settling reservations")?;
        rows.iter().map(|r| r.try_get(0)).collect::<Result<_, _>>().context("settling reservations")
    }

    async fn release(&mut self, application_ids: &[i64]) -> Result<(), StoreError> {
        if application_ids.is_empty() {
            return Ok(());
        }
        sqlx::query(
            "DELETE FROM card_application WHERE id IN (SELECT value FROM jsonb_each(?1)) \
             AND payment_state = 'PENDING_PAYMENT'",
        )
        .bind(to_json(application_ids.iter())?)
        .execute(&mut *self.tx)
        .await
        .context("releasing unsent reservations")?;
        Ok(())
    }

    async fn mark(&mut self, marks: &[Claimed]) -> Result<(), StoreError> {
        if marks.is_empty() {
            return Ok(());
        }
        let payload = to_json(marks.iter().map(|m| (m.card_id, m.application_id)))?;
        // The unary `+` keeps the planner from driving this update through the index of
        // unmarked cards (a scan of every one of them per chunk): it must walk the JSON array
        // and seek each card by its primary key.
        let done = sqlx::query(
            "UPDATE card SET replaced_by_application_id = j.app, reissued_at = ?2 \
             FROM (SELECT value ->> '$[0]' AS card_id, value ->> '$[1]' AS app FROM jsonb_each(?1)) AS j \
             WHERE card.id = j.card_id AND +card.replaced_by_application_id IS NULL",
        )
        .bind(payload)
        .bind(ts(Utc::now()))
        .execute(&mut *self.tx)
        .await
        .context("marking cards reissued")?;
        expect_rows("marking cards reissued", marks.len(), done.rows_affected())
    }

    async fn insert_results(
        &mut self,
        origin: ResultOrigin,
        as_of: NaiveDate,
        results: &[ResultRow],
    ) -> Result<(), StoreError> {
        if results.is_empty() {
            return Ok(());
        }
        let payload = to_json(
            results.iter().map(|r| (r.card_id, r.code, &r.message, r.fee, r.card_apply_no.as_ref(), &r.correlation_id)),
        )?;
        let done = sqlx::query(
            "INSERT INTO result (run_id, card_id, as_of, code, message, fee, card_apply_no, correlation_id, created_at, \
             trigger) SELECT ?2, j.value ->> '$[0]', ?3, j.value ->> '$[1]', j.value ->> '$[2]', j.value ->> '$[3]', \
                    j.value ->> '$[4]', j.value ->> '$[5]', ?4, ?5 \
             FROM jsonb_each(?1) j",
        )
        .bind(payload)
        .bind(origin.run_id())
        .bind(as_of.to_string())
        .bind(ts(Utc::now()))
        .bind(origin.trigger())
        .execute(&mut *self.tx)
        .await
        .context("writing results")?;
        self.results += results.len();
        expect_rows("writing results", results.len(), done.rows_affected())
    }

    async fn add_to_budget(
        &mut self,
        as_of: NaiveDate,
        reissued: i64,
        fee_total: i64,
    ) -> Result<(i64, i64), StoreError> {
        add_to_budget(&mut *self.tx, as_of.to_string(), reissued, fee_total).await
    }

    async fn commit(mut self) -> Result<(), StoreError> {
        let mark = match &self.read_ahead {
            Some(turn) => turn.before_commit(&mut self.tx).await?,
            None => None,
        };
        self.tx.commit().await.context("committing a chunk")?;
        if let Some(turn) = self.read_ahead.take() {
            turn.committed(mark);
        }
        if let Some(checkpointer) = &self.checkpointer {
            checkpointer.committed(self.results);
        }
        Ok(())
    }
}
