//! One chunk's transaction on PostgreSQL. The unit of work is the member: a page scans
//! candidate cards in (member, card) order, locks their members' wallet rows `FOR UPDATE SKIP
//! LOCKED`, and takes every candidate card of each member it locked. Workers holding different
//! members never touch the same wallet, so several replicas reach exactly the single-run result.
//! Writes are fixed-shape statements over one array per column (`UNNEST`), kept prepared.

use chrono::NaiveDate;
use sqlx::{AssertSqlSafe, PgPool, Postgres, Row, Transaction};

use crate::domain::ids::CardApplyNo;
use crate::store::rows::{
    LIVE_APPLICATION_CARDS_PG, add_to_budget, candidate_from_row, claimed_from_row, expect_rows, taken_apply_nos,
};
use crate::store::{
    Candidate, CandidatePage, ChunkTx, Claimed, Context, Debit, MemberCard, NewApplication, PageQuery, ResultOrigin,
    ResultRow, Settlement, StoreError,
};

pub struct PgChunk {
    tx: Transaction<'static, Postgres>,
    /// A dry run's transaction is READ ONLY: it takes no row locks (they would be writes).
    read_only: bool,
    /// The card whose member's wallet this transaction already locked (the API's lookup takes
    /// the lock with it, one round trip fewer per request).
    member_locked_for: Option<i64>,
}

impl PgChunk {
    pub(super) fn new(tx: Transaction<'static, Postgres>, read_only: bool) -> Self {
        Self { tx, read_only, member_locked_for: None }
    }
}

/// The API's member and card, with the member's wallet locked as the single-card path locks it.
/// The lock is a statement of its own in `read_one_card`; here it rides on the lookup, and the
/// card is then read by a later statement, so it is read as of after the lock was granted.
const MEMBER_CARD_LOCKING_SQL: &str = "WITH held AS MATERIALIZED \
     (SELECT member_id FROM wallet WHERE member_id = $1 FOR UPDATE) \
     SELECT m.status, c.id, (SELECT count(*) FROM held) AS held FROM member m \
     LEFT JOIN card c ON c.member_id = m.id AND c.card_no = $2 WHERE m.id = $1";

const LIVE_APPLICATION: &str = "SELECT 1 FROM card_application a \
     WHERE a.old_card_id = c.id AND a.kind = 'EXPIRY_REISSUE' AND a.payment_state <> 'CANCELLED'";

/// The scan: candidate cards after member $1, in (member, card) order. $2 as-of, $3 limit,
/// $4.. one per window month: each month is its own seek of `card_expiry_unreissued
/// (expiry_ym, member_id, id)`, merged in order, so no page sorts the whole window.
fn scan_sql(months: usize) -> String {
    let per_month: Vec<String> = (0..months)
        .map(|i| {
            format!(
                "(SELECT c.member_id, c.id FROM card c \
                  WHERE c.expiry_ym = ${} AND c.replaced_by_application_id IS NULL AND c.member_id > $1 \
                    AND NOT EXISTS (SELECT 1 FROM result r WHERE r.card_id = c.id AND r.as_of = $2 AND r.trigger = 'run') \
                    AND NOT EXISTS ({LIVE_APPLICATION}) \
                  ORDER BY c.member_id, c.id LIMIT $3)",
                i + 4
            )
        })
        .collect();
    format!("SELECT s.member_id FROM ({}) s ORDER BY s.member_id, s.id LIMIT $3", per_month.join(" UNION ALL "))
}

/// The candidate's columns and joins. `{already}` says whether the card is reissued or holds a
/// live application: the single-card read asks; the batch's read excludes both in its own
/// filter, in the same statement, so it selects `false` rather than probe the application index
/// again per card.
const CANDIDATE_COLUMNS: &str = "c.id, c.card_no, c.status, c.expiry_ym::bigint AS expiry_ym, \
     c.par, \
     {already} AS already, \
     m.id AS member_id, m.status = 'CANCELLED' AS cancelled, \
     m.name, m.mobile, \
     m.address, m.address_detail, m.zip_code, \
     c.product_id, coalesce(p.allows_expiry_reissue, false) AS allows, coalesce(p.reissue_fee, 0) AS fee, \
     p.validity_months::bigint AS validity_months, \
     CASE WHEN p.reissue_fee > 0 THEN coalesce(w.balance, 0) ELSE 0 END AS balance, \
     (SELECT count(*) FROM card_application a WHERE a.old_card_id = c.id AND a.kind = 'EXPIRY_REISSUE') AS prior \
     FROM card c LEFT JOIN member m ON m.id = c.member_id LEFT JOIN card_product p ON p.id = c.product_id \
     LEFT JOIN wallet w ON w.member_id = c.member_id";

fn bind_scan<'q>(sql: String, page: &PageQuery) -> sqlx::query::Query<'q, Postgres, sqlx::postgres::PgArguments> {
    // Sent unprepared: a named statement may flip to a generic plan after five runs, and a
    // generic plan for this keyset query cost 120-170 ms a page (DESIGN §8).
    let mut query =
        sqlx::query(AssertSqlSafe(sql)).persistent(false).bind(page.after).bind(page.as_of).bind(i64::from(page.limit));
    for month in &page.window_months {
        query = query.bind(*month as i32);
    }
    query
}

pub(super) async fn explain(pool: &PgPool, page: &PageQuery) -> Result<String, StoreError> {
    let sql = format!("EXPLAIN {}", scan_sql(page.window_months.len()));
    let rows = bind_scan(sql, page).fetch_all(pool).await.context("explaining the candidate query")?;
    let lines = rows.iter().map(|r| r.try_get::<String, _>(0)).collect::<Result<Vec<_>, _>>();
    Ok(lines.context("reading a query plan")?.join("\n"))
}

impl PgChunk {
    async fn read_one_card(&mut self, card_id: i64) -> Result<CandidatePage, StoreError> {
        // The single-card path waits for the member (a batch chunk may hold it) rather than skipping.
        if !self.read_only && self.member_locked_for != Some(card_id) {
            sqlx::query("SELECT 1 FROM wallet WHERE member_id = (SELECT member_id FROM card WHERE id = $1) FOR UPDATE")
                .bind(card_id)
                .execute(&mut *self.tx)
                .await
                .context("locking the card's member")?;
        }
        let already = format!("c.replaced_by_application_id IS NOT NULL OR EXISTS ({LIVE_APPLICATION})");
        let columns = CANDIDATE_COLUMNS.replace("{already}", &already);
        let rows = sqlx::query(AssertSqlSafe(format!("SELECT {columns} WHERE c.id = $1")))
            .bind(card_id)
            .fetch_all(&mut *self.tx)
            .await
            .context("reading the card")?;
        let candidates: Vec<Candidate> =
            rows.iter().map(candidate_from_row).collect::<Result<_, _>>().context("decoding a candidate")?;
        Ok(CandidatePage {
            scanned: candidates.len(),
            next_after: card_id,
            skipped_locked: false,
            candidates,
            early: None,
        })
    }
}

impl ChunkTx for PgChunk {
    async fn read_candidates(&mut self, page: &PageQuery) -> Result<CandidatePage, StoreError> {
        if let Some(card_id) = page.only_card {
            return self.read_one_card(card_id).await;
        }
        if page.window_months.is_empty() {
            return Ok(CandidatePage::default());
        }
        let scanned: Vec<i64> = bind_scan(scan_sql(page.window_months.len()), page)
            .fetch_all(&mut *self.tx)
            .await
            .context("scanning candidates")?
            .iter()
            .map(|r| r.try_get(0))
            .collect::<Result<_, _>>()
            .context("scanning candidates")?;
        let Some(&last_member) = scanned.last() else { return Ok(CandidatePage::default()) };
        let mut members = scanned.clone();
        members.dedup();
        let lock_sql = if self.read_only {
            "SELECT member_id FROM wallet WHERE member_id = ANY($1) ORDER BY member_id"
        } else {
            "SELECT member_id FROM wallet WHERE member_id = ANY($1) ORDER BY member_id FOR UPDATE SKIP LOCKED"
        };
        let locked: Vec<i64> = sqlx::query_scalar(lock_sql)
            .bind(&members)
            .fetch_all(&mut *self.tx)
            .await
            .context("locking members' wallets")?;
        let mut owned = locked.clone();
        let mut skipped_locked = false;
        if locked.len() < members.len() {
            let not_locked: Vec<i64> = members.iter().copied().filter(|m| !locked.contains(m)).collect();
            let held: Vec<i64> = sqlx::query_scalar("SELECT member_id FROM wallet WHERE member_id = ANY($1)")
                .bind(&not_locked)
                .fetch_all(&mut *self.tx)
                .await
                .context("checking skipped members")?;
            // A member without a wallet has no wallet row to lock: lock the member row instead, so
            // two workers never evaluate (and record) the same cards. A fee then finds no balance.
            let walletless: Vec<i64> = not_locked.into_iter().filter(|m| !held.contains(m)).collect();
            let mut walletless_locked: Vec<i64> = Vec::new();
            if !walletless.is_empty() {
                let lock = if self.read_only {
                    "SELECT id FROM member WHERE id = ANY($1) ORDER BY id"
                } else {
                    "SELECT id FROM member WHERE id = ANY($1) ORDER BY id FOR UPDATE SKIP LOCKED"
                };
                walletless_locked = sqlx::query_scalar(lock)
                    .bind(&walletless)
                    .fetch_all(&mut *self.tx)
                    .await
                    .context("locking members without a wallet")?;
            }
            skipped_locked = !held.is_empty() || walletless_locked.len() < walletless.len();
            owned.extend(walletless_locked);
        }
        let columns = CANDIDATE_COLUMNS.replace("{already}", "false");
        let rows = sqlx::query(AssertSqlSafe(format!(
            "SELECT {columns} WHERE c.member_id = ANY($1) AND c.expiry_ym = ANY($2) \
               AND c.replaced_by_application_id IS NULL \
               AND NOT EXISTS (SELECT 1 FROM result r WHERE r.card_id = c.id AND r.as_of = $3 AND r.trigger = 'run') \
               AND NOT EXISTS ({LIVE_APPLICATION}) \
             ORDER BY c.member_id, c.id"
        )))
        .bind(&owned)
        .bind(page.window_months.iter().map(|m| *m as i32).collect::<Vec<i32>>())
        .bind(page.as_of)
        .fetch_all(&mut *self.tx)
        .await
        .context("reading candidates")?;
        let candidates =
            rows.iter().map(candidate_from_row).collect::<Result<_, _>>().context("decoding a candidate")?;
        Ok(CandidatePage { candidates, scanned: scanned.len(), next_after: last_member, skipped_locked, early: None })
    }

    async fn keyset_end(&mut self, window_months: &[i64]) -> Result<Option<i64>, StoreError> {
        // One backward seek of the expiry index per month: the page's keyset is the member.
        sqlx::query_scalar(
            "SELECT max((SELECT max(c.member_id) FROM card c \
                         WHERE c.expiry_ym = m AND c.replaced_by_application_id IS NULL)) \
             FROM unnest($1::int[]) m",
        )
        .bind(window_months.iter().map(|m| *m as i32).collect::<Vec<i32>>())
        .fetch_one(&mut *self.tx)
        .await
        .context("finding the window's last member")
    }

    async fn claim(&mut self, apps: &[NewApplication]) -> Result<Vec<Claimed>, StoreError> {
        if apps.is_empty() {
            return Ok(Vec::new());
        }
        let rows = sqlx::query(
            "INSERT INTO card_application (card_apply_no, kind, old_card_id, member_id, product_id, \
                 delivery_address, delivery_address_detail, delivery_zip_code, fee, new_expiry_ym, \
                 payment_state, correlation_id, run_id, created_at, updated_at) \
             SELECT u.no, 'EXPIRY_REISSUE', u.card_id, u.member_id, u.product_id, u.address, u.detail, u.zip, \
                    u.fee, u.new_expiry, u.state, u.corr, u.run_id, now(), now() \
             FROM UNNEST($1::text[], $2::bigint[], $3::bigint[], $4::bigint[], $5::bigint[], $6::int[], $7::text[], \
                         $8::text[], $9::bigint[], $10::text[], $11::text[], $12::text[]) \
                  AS u(no, card_id, member_id, product_id, fee, new_expiry, state, corr, run_id, address, detail, zip) \
             ON CONFLICT DO NOTHING RETURNING old_card_id, id",
        )
        .bind(apps.iter().map(|a| a.card_apply_no.as_str()).collect::<Vec<_>>())
        .bind(apps.iter().map(|a| a.card_id).collect::<Vec<_>>())
        .bind(apps.iter().map(|a| a.member_id).collect::<Vec<_>>())
        .bind(apps.iter().map(|a| a.product_id).collect::<Vec<_>>())
        .bind(apps.iter().map(|a| a.fee).collect::<Vec<_>>())
        .bind(apps.iter().map(|a| a.new_expiry_yyyymm as i32).collect::<Vec<_>>())
        .bind(apps.iter().map(|a| a.payment_state.as_str()).collect::<Vec<_>>())
        .bind(apps.iter().map(|a| a.correlation_id.as_str()).collect::<Vec<_>>())
        .bind(apps.iter().map(|a| a.run_id).collect::<Vec<_>>())
        .bind(apps.iter().map(|a| a.delivery.address.as_str()).collect::<Vec<_>>())
        .bind(apps.iter().map(|a| a.delivery.address_detail.as_str()).collect::<Vec<_>>())
        .bind(apps.iter().map(|a| a.delivery.zip_code.as_str()).collect::<Vec<_>>())
        .fetch_all(&mut *self.tx)
        .await
        .context("claiming applications")?;
        rows.iter().map(claimed_from_row).collect::<Result<_, _>>().context("reading claims")
    }

    async fn member_card(&mut self, user_id: i64, card_no: &str) -> Result<MemberCard, StoreError> {
        if self.read_only {
            return crate::store::api::member_card_of(&mut *self.tx, user_id, card_no).await;
        }
        let row: Option<(String, Option<i64>, i64)> = sqlx::query_as(MEMBER_CARD_LOCKING_SQL)
            .bind(user_id)
            .bind(card_no)
            .fetch_optional(&mut *self.tx)
            .await
            .context("looking up the member's card")?;
        let found = crate::store::rows::member_card(row.map(|(status, card, _)| (status, card)));
        if let MemberCard::Card(card_id) = found {
            self.member_locked_for = Some(card_id);
        }
        Ok(found)
    }

    async fn live_application_cards(&mut self, card_ids: &[i64]) -> Result<Vec<i64>, StoreError> {
        sqlx::query_scalar(LIVE_APPLICATION_CARDS_PG)
            .bind(card_ids)
            .fetch_all(&mut *self.tx)
            .await
            .context("reading which lost claims lost to a live application")
    }

    async fn taken_apply_nos(&mut self, low: &CardApplyNo, high: &CardApplyNo) -> Result<Vec<CardApplyNo>, StoreError> {
        taken_apply_nos(&mut *self.tx, low, high).await
    }

    async fn unclaim(&mut self, application_ids: &[i64]) -> Result<(), StoreError> {
        if application_ids.is_empty() {
            return Ok(());
        }
        let done = sqlx::query("DELETE FROM card_application WHERE id = ANY($1)")
            .bind(application_ids)
            .execute(&mut *self.tx)
            .await
            .context("withdrawing declined claims")?;
        expect_rows("withdrawing declined claims", application_ids.len(), done.rows_affected())
    }

    async fn debit(&mut self, debits: &[Debit]) -> Result<(), StoreError> {
        if debits.is_empty() {
            return Ok(());
        }
        let members: Vec<i64> = debits.iter().map(|d| d.member_id).collect();
        let amounts: Vec<i64> = debits.iter().map(|d| d.amount).collect();
        let inserted = sqlx::query(
            "INSERT INTO wallet_debit (wallet_id, application_id, reference, amount, created_at) \
             SELECT w.id, u.application_id, u.reference, u.amount, now() \
             FROM UNNEST($1::bigint[], $2::bigint[], $3::text[], $4::bigint[]) AS u(member_id, application_id, reference, amount) \
             JOIN wallet w ON w.member_id = u.member_id WHERE w.member_id = ANY($1)",
        )
        .bind(&members)
        .bind(debits.iter().map(|d| d.application_id).collect::<Vec<_>>())
        .bind(debits.iter().map(|d| d.reference.as_str()).collect::<Vec<_>>())
        .bind(&amounts)
        .execute(&mut *self.tx)
        .await
        .context("writing ledger debits")?;
        expect_rows("writing ledger debits", debits.len(), inserted.rows_affected())?;
        let mut distinct = members.clone();
        distinct.sort_unstable();
        distinct.dedup();
        // Conditional on the balance: a wallet that cannot cover its total is not touched, the
        // row count comes up short, and the whole chunk rolls back. `= ANY($1)`: see `mark`.
        let updated = sqlx::query(
            "UPDATE wallet SET balance = wallet.balance - d.total \
             FROM (SELECT member_id, sum(amount)::bigint AS total FROM UNNEST($1::bigint[], $2::bigint[]) AS u(member_id, amount) \
                   GROUP BY member_id) AS d \
             WHERE wallet.member_id = d.member_id AND wallet.member_id = ANY($1) AND wallet.balance >= d.total",
        )
        .bind(&members)
        .bind(&amounts)
        .execute(&mut *self.tx)
        .await
        .context("debiting wallets")?;
        expect_rows("debiting wallets (a balance did not cover its fees)", distinct.len(), updated.rows_affected())
    }

    async fn settle(&mut self, settlements: &[Settlement]) -> Result<Vec<i64>, StoreError> {
        if settlements.is_empty() {
            return Ok(Vec::new());
        }
        let ids: Vec<i64> = settlements.iter().map(|s| s.application_id).collect();
        // Two replicas may settle the same leftover reservations at once. An UPDATE locks its
        // rows in whatever order its plan meets them, so two of them deadlock; locking in id
        // order first makes the second wait, then find the rows settled and change none.
        sqlx::query("SELECT id FROM card_application WHERE id = ANY($1) ORDER BY id FOR UPDATE")
            .bind(&ids)
            .execute(&mut *self.tx)
            .await
            .context("locking reservations to settle")?;
        // `= ANY($1)`: see `mark`.
        sqlx::query_scalar(
            "UPDATE card_application SET payment_state = u.state, payment_ref = u.ref, updated_at = now() \
             FROM UNNEST($1::bigint[], $2::text[], $3::text[]) AS u(id, state, ref) \
             WHERE card_application.id = u.id AND card_application.id = ANY($1) \
               AND card_application.payment_state = 'PENDING_PAYMENT' \
             RETURNING card_application.id",
        )
        .bind(ids)
        .bind(settlements.iter().map(|s| s.state.as_str()).collect::<Vec<_>>())
        .bind(settlements.iter().map(|s| s.payment_ref.as_deref()).collect::<Vec<_>>())
        .fetch_all(&mut *self.tx)
        .await
        .context("settling reservations")
    }

    async fn release(&mut self, application_ids: &[i64]) -> Result<(), StoreError> {
        if application_ids.is_empty() {
            return Ok(());
        }
        sqlx::query("DELETE FROM card_application WHERE id = ANY($1) AND payment_state = 'PENDING_PAYMENT'")
            .bind(application_ids)
            .execute(&mut *self.tx)
            .await
            .context("releasing unsent reservations")?;
        Ok(())
    }

    async fn mark(&mut self, marks: &[Claimed]) -> Result<(), StoreError> {
        if marks.is_empty() {
            return Ok(());
        }
        // `card.id = ANY($1)` repeats the join as an index condition: the planner cannot tell how
        // long the arrays are, and at 100k cards it hash-joined them against a scan of the whole
        // table (24 of the statement's 41 ms a chunk). The wallet writes and the settlement carry
        // the same guard.
        let done = sqlx::query(
            "UPDATE card SET replaced_by_application_id = u.app, reissued_at = now() \
             FROM UNNEST($1::bigint[], $2::bigint[]) AS u(card_id, app) \
             WHERE card.id = u.card_id AND card.id = ANY($1) AND card.replaced_by_application_id IS NULL",
        )
        .bind(marks.iter().map(|m| m.card_id).collect::<Vec<_>>())
        .bind(marks.iter().map(|m| m.application_id).collect::<Vec<_>>())
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
        let done = sqlx::query(
            "INSERT INTO result (run_id, card_id, as_of, code, message, fee, card_apply_no, correlation_id, created_at, \
             trigger) SELECT $1, u.card_id, $2, u.code, u.message, u.fee, u.apply_no, u.corr, now(), $9 \
             FROM UNNEST($3::bigint[], $4::text[], $5::text[], $6::bigint[], $7::text[], $8::text[]) \
                  AS u(card_id, code, message, fee, apply_no, corr)",
        )
        .bind(origin.run_id())
        .bind(as_of)
        .bind(results.iter().map(|r| r.card_id).collect::<Vec<_>>())
        .bind(results.iter().map(|r| r.code).collect::<Vec<_>>())
        .bind(results.iter().map(|r| r.message.as_str()).collect::<Vec<_>>())
        .bind(results.iter().map(|r| r.fee).collect::<Vec<_>>())
        .bind(results.iter().map(|r| r.card_apply_no.as_ref().map(CardApplyNo::as_str)).collect::<Vec<_>>())
        .bind(results.iter().map(|r| r.correlation_id.as_str()).collect::<Vec<_>>())
        .bind(origin.trigger())
        .execute(&mut *self.tx)
        .await
        .context("writing results")?;
        expect_rows("writing results", results.len(), done.rows_affected())
    }

    async fn add_to_budget(
        &mut self,
        as_of: NaiveDate,
        reissued: i64,
        fee_total: i64,
    ) -> Result<(i64, i64), StoreError> {
        add_to_budget(&mut *self.tx, as_of, reissued, fee_total).await
    }

    async fn commit(self) -> Result<(), StoreError> {
        self.tx.commit().await.context("committing a chunk")
    }
}
