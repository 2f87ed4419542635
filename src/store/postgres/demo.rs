//! Bulk loading of generated demo data: one transaction, one array per column (`UNNEST`).

use sqlx::PgPool;

use crate::store::{Context, DemoData, StoreError};

const BATCH: usize = 50_000;

pub(super) async fn load(pool: &PgPool, data: &DemoData) -> Result<(), StoreError> {
    let mut tx = pool.begin().await.context("loading demo data")?;
    let p = &data.products;
    sqlx::query(
        "INSERT INTO card_product (id, name, card_type, allows_expiry_reissue, reissue_fee, validity_months) \
         SELECT * FROM UNNEST($1::bigint[], $2::text[], $3::text[], $4::bool[], $5::bigint[], $6::int[])",
    )
    .bind(p.iter().map(|p| p.id).collect::<Vec<_>>())
    .bind(p.iter().map(|p| p.name.as_str()).collect::<Vec<_>>())
    .bind(p.iter().map(|p| p.card_type.as_str()).collect::<Vec<_>>())
    .bind(p.iter().map(|p| p.allows_expiry_reissue).collect::<Vec<_>>())
    .bind(p.iter().map(|p| p.reissue_fee).collect::<Vec<_>>())
    .bind(p.iter().map(|p| p.validity_months as i32).collect::<Vec<_>>())
    .execute(&mut *tx)
    .await
    .context("loading demo products")?;
    for m in data.members.chunks(BATCH) {
        sqlx::query(
            "INSERT INTO member (id, name, mobile, status, address, address_detail, zip_code) \
             SELECT * FROM UNNEST($1::bigint[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[])",
        )
        .bind(m.iter().map(|m| m.id).collect::<Vec<_>>())
        .bind(m.iter().map(|m| m.name.as_deref()).collect::<Vec<_>>())
        .bind(m.iter().map(|m| m.mobile.as_deref()).collect::<Vec<_>>())
        .bind(m.iter().map(|m| m.status.as_str()).collect::<Vec<_>>())
        .bind(m.iter().map(|m| m.address.as_deref()).collect::<Vec<_>>())
        .bind(m.iter().map(|m| m.address_detail.as_deref()).collect::<Vec<_>>())
        .bind(m.iter().map(|m| m.zip_code.as_deref()).collect::<Vec<_>>())
        .execute(&mut *tx)
        .await
        .context("loading demo members")?;
        sqlx::query("INSERT INTO wallet (member_id, balance) SELECT * FROM UNNEST($1::bigint[], $2::bigint[])")
            .bind(m.iter().map(|m| m.id).collect::<Vec<_>>())
            .bind(m.iter().map(|m| m.balance).collect::<Vec<_>>())
            .execute(&mut *tx)
            .await
            .context("loading demo wallets")?;
    }
    for c in data.cards.chunks(BATCH) {
        sqlx::query(
            "INSERT INTO card (id, card_no, member_id, product_id, status, expiry_ym, par) \
             SELECT * FROM UNNEST($1::bigint[], $2::text[], $3::bigint[], $4::bigint[], $5::text[], $6::int[], $7::text[])",
        )
        .bind(c.iter().map(|c| c.id).collect::<Vec<_>>())
        .bind(c.iter().map(|c| c.card_no.as_str()).collect::<Vec<_>>())
        .bind(c.iter().map(|c| c.member_id).collect::<Vec<_>>())
        .bind(c.iter().map(|c| c.product_id).collect::<Vec<_>>())
        .bind(c.iter().map(|c| c.status.as_str()).collect::<Vec<_>>())
        .bind(c.iter().map(|c| c.expiry_yyyymm as i32).collect::<Vec<_>>())
        .bind(c.iter().map(|c| c.par.as_deref()).collect::<Vec<_>>())
        .execute(&mut *tx)
        .await
        .context("loading demo cards")?;
    }
    for app in &data.reissued {
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO card_application (card_apply_no, kind, old_card_id, member_id, product_id, \
                 delivery_address, delivery_address_detail, delivery_zip_code, fee, new_expiry_ym, \
                 payment_state, correlation_id, created_at, updated_at) \
             SELECT $1, 'EXPIRY_REISSUE', $2, m.id, $3, coalesce(m.address, '-'), coalesce(m.address_detail, '-'), \
                    coalesce(m.zip_code, '00000'), $4, $5, $6, $7, now(), now() FROM member m WHERE m.id = $8 RETURNING id",
        )
        .bind(app.card_apply_no.as_str())
        .bind(app.card_id)
        .bind(app.product_id)
        .bind(app.fee)
        .bind(app.new_expiry_yyyymm as i32)
        .bind(app.payment_state.as_str())
        .bind(&app.correlation_id)
        .bind(app.member_id)
        .fetch_one(&mut *tx)
        .await
        .context("loading demo applications")?;
        sqlx::query("UPDATE card SET replaced_by_application_id = $1, reissued_at = now() WHERE id = $2")
            .bind(id)
            .bind(app.card_id)
            .execute(&mut *tx)
            .await
            .context("marking demo cards reissued")?;
    }
    tx.commit().await.context("loading demo data")?;
    // What autovacuum does to a loaded table in time, done now: the visibility map set (the
    // candidate scan reads its index alone instead of every card's heap page) and statistics.
    sqlx::query("VACUUM (ANALYZE)").execute(pool).await.context("vacuuming demo data")?;
    Ok(())
}
