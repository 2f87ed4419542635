//! Bulk loading of generated demo data: one transaction, JSON batches through `json_each`.

use chrono::Utc;
use serde_json::json;
use sqlx::SqlitePool;

use super::ts;
use crate::store::{Context, DemoData, StoreError};

const BATCH: usize = 20_000;

pub(super) async fn load(pool: &SqlitePool, data: &DemoData) -> Result<(), StoreError> {
    let mut tx = pool.begin_with("BEGIN IMMEDIATE").await.context("loading demo data")?;
    let now = ts(Utc::now());
    for p in &data.products {
        sqlx::query(
            "INSERT INTO card_product (id, name, card_type, allows_expiry_reissue, reissue_fee, validity_months) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        )
        .bind(p.id)
        .bind(&p.name)
        .bind(&p.card_type)
        .bind(p.allows_expiry_reissue)
        .bind(p.reissue_fee)
        .bind(p.validity_months)
        .execute(&mut *tx)
        .await
        .context("loading demo products")?;
    }
    for batch in data.members.chunks(BATCH) {
        let payload: Vec<_> = batch
            .iter()
            .map(|m| json!([m.id, m.name, m.mobile, m.status, m.address, m.address_detail, m.zip_code, m.balance]))
            .collect();
        let payload = serde_json::Value::Array(payload).to_string();
        sqlx::query(
            "INSERT INTO member (id, name, mobile, status, address, address_detail, zip_code) \
             SELECT value ->> '$[0]', value ->> '$[1]', value ->> '$[2]', value ->> '$[3]', value ->> '$[4]', \
                    value ->> '$[5]', value ->> '$[6]' FROM json_each(?1)",
        )
        .bind(&payload)
        .execute(&mut *tx)
        .await
        .context("loading demo members")?;
        sqlx::query(
            "INSERT INTO wallet (member_id, balance) SELECT value ->> '$[0]', value ->> '$[7]' FROM json_each(?1)",
        )
        .bind(&payload)
        .execute(&mut *tx)
        .await
        .context("loading demo wallets")?;
    }
    for batch in data.cards.chunks(BATCH) {
        let payload: Vec<_> = batch
            .iter()
            .map(|c| json!([c.id, c.card_no, c.member_id, c.product_id, c.status, c.expiry_yyyymm, c.par]))
            .collect();
        sqlx::query(
            "INSERT INTO card (id, card_no, member_id, product_id, status, expiry_ym, par) \
             SELECT value ->> '$[0]', value ->> '$[1]', value ->> '$[2]', value ->> '$[3]', value ->> '$[4]', \
                    value ->> '$[5]', value ->> '$[6]' FROM json_each(?1)",
        )
        .bind(serde_json::Value::Array(payload).to_string())
        .execute(&mut *tx)
        .await
        .context("loading demo cards")?;
    }
    for app in &data.reissued {
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO card_application (card_apply_no, kind, old_card_id, member_id, product_id, \
                 delivery_address, delivery_address_detail, delivery_zip_code, fee, new_expiry_ym, \
                 payment_state, correlation_id, created_at, updated_at) \
             SELECT ?1, 'EXPIRY_REISSUE', ?2, m.id, ?3, coalesce(m.address, '-'), coalesce(m.address_detail, '-'), \
                    coalesce(m.zip_code, '00000'), ?4, ?5, ?6, ?7, ?8, ?8 FROM member m WHERE m.id = ?9 RETURNING id",
        )
        .bind(app.card_apply_no.as_str())
        .bind(app.card_id)
        .bind(app.product_id)
        .bind(app.fee)
        .bind(app.new_expiry_yyyymm)
        .bind(app.payment_state.as_str())
        .bind(&app.correlation_id)
        .bind(&now)
        .bind(app.member_id)
        .fetch_one(&mut *tx)
        .await
        .context("loading demo applications")?;
        sqlx::query("UPDATE card SET replaced_by_application_id = ?1, reissued_at = ?2 WHERE id = ?3")
            .bind(id)
            .bind(&now)
            .bind(app.card_id)
            .execute(&mut *tx)
            .await
            .context("marking demo cards reissued")?;
    }
    tx.commit().await.context("loading demo data")?;
    // A large load leaves a WAL of hundreds of MiB; fold it into the database and truncate it.
    sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)").execute(pool).await.context("checkpointing the demo load")?;
    Ok(())
}
