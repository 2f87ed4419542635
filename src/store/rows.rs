//! Row decoding and SQL text shared by both backends. SQLite reads its candidate pages as JSON
//! (`sqlite/chunk.rs`); PostgreSQL reads them as rows through `candidate_from_row`.

use sqlx::{ColumnIndex, Decode, Row, Type};

use super::{Candidate, Claimed, Reservation, StoreError};
use crate::domain::eligibility::{CardFacts, MemberFacts, ProductFacts};

/// Builds a candidate from a row of the candidate query's named columns.
pub(crate) fn candidate_from_row<'r, R>(row: &'r R) -> Result<Candidate, sqlx::Error>
where
    R: Row,
    &'static str: ColumnIndex<R>,
    i64: Decode<'r, R::Database> + Type<R::Database>,
    bool: Decode<'r, R::Database> + Type<R::Database>,
    String: Decode<'r, R::Database> + Type<R::Database>,
{
    let member_id: Option<i64> = row.try_get("member_id")?;
    let member = match member_id {
        Some(member_id) => Some(MemberFacts {
            member_id,
            cancelled: row.try_get::<Option<bool>, _>("cancelled")?.unwrap_or(true),
            has_name: row.try_get("has_name")?,
            has_mobile: row.try_get("has_mobile")?,
            address: row.try_get("address")?,
            address_detail: row.try_get("address_detail")?,
            zip_code: row.try_get("zip_code")?,
        }),
        None => None,
    };
    Ok(Candidate {
        facts: CardFacts {
            card_id: row.try_get("id")?,
            card_no: row.try_get("card_no")?,
            status: row.try_get("status")?,
            expiry_yyyymm: row.try_get("expiry_ym")?,
            has_par: row.try_get("has_par")?,
            already_reissued: row.try_get("already")?,
            member,
            product: ProductFacts {
                product_id: row.try_get("product_id")?,
                allows_expiry_reissue: row.try_get("allows")?,
                reissue_fee: row.try_get("fee")?,
            },
        },
        balance: row.try_get("balance")?,
        prior_applications: row.try_get("prior")?,
        validity_months: row.try_get("validity_months")?,
    })
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
pub(crate) const PENDING_RESERVATIONS_SQL: &str = "SELECT a.id, a.old_card_id, c.card_no, a.member_id, a.fee, a.card_apply_no, a.correlation_id \
     FROM card_application a JOIN card c ON c.id = a.old_card_id LEFT JOIN run ON run.id = a.run_id \
     WHERE a.payment_state = 'PENDING_PAYMENT' AND (run.id IS NULL OR run.status <> 'running') \
     ORDER BY a.member_id, a.old_card_id";

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
        card_apply_no: r.try_get(5)?,
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
