//! The set-based SQL reference: the same nightly run written as a handful of plain SQL
//! statements in one transaction. It is the database's own limit for this job; the worker's
//! throughput is reported as a ratio to it.

use chrono::{Datelike, NaiveDate};

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Dialect {
    Sqlite,
    Postgres,
}

fn luhn(d: Dialect) -> String {
    let terms: Vec<String> = (1..=16)
        .map(|i| {
            let digit = match d {
                Dialect::Sqlite => format!("CAST(substr(c.card_no, {i}, 1) AS INTEGER)"),
                Dialect::Postgres => format!("CAST(substr(c.card_no, {i}, 1) AS INTEGER)"),
            };
            if i % 2 == 1 { format!("(({digit} * 2) % 10 + ({digit} * 2) / 10)") } else { digit }
        })
        .collect();
    format!("(({}) % 10 = 0)", terms.join(" + "))
}

/// The statements, in order, for as-of `as_of` and the window's expiry months.
pub fn statements(d: Dialect, as_of: NaiveDate, months: &[i64], run_id: i64) -> Vec<String> {
    let months = months.iter().map(|m| m.to_string()).collect::<Vec<_>>().join(", ");
    let day = as_of.format("%Y-%m-%d").to_string();
    let ymd = as_of.format("%y%m%d").to_string();
    let stamp = as_of.format("%y%m%d020000").to_string();
    let base_month = i64::from(as_of.year()) * 12 + i64::from(as_of.month()) - 1;
    let (digits16, bad_zip, forbids, now, date) = match d {
        Dialect::Sqlite => (
            "length(c.card_no) = 16 AND c.card_no NOT GLOB '*[^0-9]*'",
            "length(m.zip_code) <> 5 OR m.zip_code GLOB '*[^0-9]*'",
            "p.allows_expiry_reissue = 0",
            "strftime('%Y-%m-%dT%H:%M:%fZ', 'now')",
            format!("'{day}'"),
        ),
        Dialect::Postgres => (
            "c.card_no ~ '^[0-9]{16}$'",
            "m.zip_code !~ '^[0-9]{5}$'",
            "NOT p.allows_expiry_reissue",
            "now()",
            format!("DATE '{day}'"),
        ),
    };
    let (apply_no, corr, new_expiry) = match d {
        Dialect::Sqlite => (
            format!("printf('{ymd}%012d%04d', e.card_id, e.prior % 10000)"),
            format!("printf('{stamp}-%07x', e.card_id % 268435456)"),
            format!("(({base_month} + e.validity) / 12) * 100 + (({base_month} + e.validity) % 12) + 1"),
        ),
        Dialect::Postgres => (
            format!("'{ymd}' || lpad(e.card_id::text, 12, '0') || lpad((e.prior % 10000)::text, 4, '0')"),
            format!("'{stamp}-' || lpad(to_hex(e.card_id % 268435456), 7, '0')"),
            format!("(({base_month} + e.validity) / 12) * 100 + (({base_month} + e.validity) % 12) + 1"),
        ),
    };
    let live = "SELECT 1 FROM card_application a WHERE a.old_card_id = c.id AND a.kind = 'EXPIRY_REISSUE' \
                AND a.payment_state <> 'CANCELLED'";
    let luhn = luhn(d);
    vec![
        // 1. Every candidate and the first rule it fails ('PASS' if none).
        format!(
            "CREATE TEMP TABLE ref_eval AS \
             SELECT c.id AS card_id, c.member_id, c.product_id, p.reissue_fee AS fee, \
                    coalesce(p.validity_months, 60) AS validity, \
                    (SELECT count(*) FROM card_application a WHERE a.old_card_id = c.id) AS prior, \
                    CASE WHEN NOT ({digits16}) THEN 'I:cardInfo.oldCardNo' \
                         WHEN NOT {luhn} THEN 'I:cardInfo.oldCardNo' \
                         WHEN m.id IS NULL OR m.status = 'CANCELLED' THEN '001_006' \
                         WHEN m.address IS NULL OR trim(m.address) = '' OR length(m.address) > 255 THEN 'I:addressInfo.address' \
                         WHEN m.address_detail IS NULL OR trim(m.address_detail) = '' OR length(m.address_detail) > 255 \
                              THEN 'I:addressInfo.addressDetail' \
                         WHEN m.zip_code IS NULL OR {bad_zip} THEN 'I:addressInfo.zipCode' \
                         WHEN c.status NOT IN ('ACTIVE', 'SUSPENDED') THEN '003_005' \
                         WHEN m.name IS NULL OR trim(m.name) = '' THEN '003_007' \
                         WHEN c.par IS NULL OR c.par = '' OR m.mobile IS NULL OR trim(m.mobile) = '' THEN '003_008' \
                         WHEN {forbids} THEN '003_009' \
                         ELSE 'PASS' END AS code \
             FROM card c LEFT JOIN member m ON m.id = c.member_id JOIN card_product p ON p.id = c.product_id \
             WHERE c.expiry_ym IN ({months}) AND c.replaced_by_application_id IS NULL \
               AND NOT EXISTS ({live}) \
               AND NOT EXISTS (SELECT 1 FROM result r WHERE r.card_id = c.id AND r.as_of = {date})"
        ),
        // 2. Fee-bearing eligible cards, numbered per member in card order.
        "CREATE TEMP TABLE ref_fee_cards AS \
         SELECT e.card_id, e.member_id, e.fee, row_number() OVER (PARTITION BY e.member_id ORDER BY e.card_id) AS rn \
         FROM ref_eval e WHERE e.code = 'PASS' AND e.fee > 0"
            .to_owned(),
        "CREATE INDEX ref_fee_cards_member ON ref_fee_cards (member_id, rn)".to_owned(),
        // 3. Balance sequencing: each card charged if what is left covers it, later ones still tried.
        "CREATE TEMP TABLE ref_charge AS \
         WITH RECURSIVE s(member_id, rn, card_id, charged, remaining) AS ( \
           SELECT f.member_id, f.rn, f.card_id, \
                  CASE WHEN coalesce(w.balance, 0) >= f.fee THEN 1 ELSE 0 END, \
                  CASE WHEN coalesce(w.balance, 0) >= f.fee THEN w.balance - f.fee ELSE coalesce(w.balance, 0) END \
           FROM ref_fee_cards f LEFT JOIN wallet w ON w.member_id = f.member_id WHERE f.rn = 1 \
           UNION ALL \
           SELECT f.member_id, f.rn, f.card_id, \
                  CASE WHEN s.remaining >= f.fee THEN 1 ELSE 0 END, \
                  CASE WHEN s.remaining >= f.fee THEN s.remaining - f.fee ELSE s.remaining END \
           FROM s JOIN ref_fee_cards f ON f.member_id = s.member_id AND f.rn = s.rn + 1) \
         SELECT card_id, charged FROM s"
            .to_owned(),
        "UPDATE ref_eval SET code = '003_010' \
         WHERE card_id IN (SELECT card_id FROM ref_charge WHERE charged = 0)"
            .to_owned(),
        // 4. Applications, debits, balances, marks, results.
        format!(
            "INSERT INTO card_application (card_apply_no, kind, old_card_id, member_id, product_id, delivery_address, \
                 delivery_address_detail, delivery_zip_code, fee, new_expiry_ym, payment_state, correlation_id, run_id, \
                 created_at, updated_at) \
             SELECT {apply_no}, 'EXPIRY_REISSUE', e.card_id, m.id, e.product_id, m.address, m.address_detail, m.zip_code, \
                    e.fee, {new_expiry}, 'APPLIED', {corr}, {run_id}, {now}, {now} \
             FROM ref_eval e JOIN member m ON m.id = e.member_id WHERE e.code = 'PASS'"
        ),
        format!(
            "INSERT INTO wallet_debit (wallet_id, application_id, reference, amount, created_at) \
             SELECT w.id, a.id, a.card_apply_no, a.fee, {now} FROM card_application a \
             JOIN wallet w ON w.member_id = a.member_id WHERE a.run_id = {run_id} AND a.fee > 0"
        ),
        format!(
            "UPDATE wallet SET balance = wallet.balance - d.total \
             FROM (SELECT member_id, sum(fee) AS total FROM card_application WHERE run_id = {run_id} AND fee > 0 \
                   GROUP BY member_id) AS d WHERE wallet.member_id = d.member_id"
        ),
        format!(
            "UPDATE card SET replaced_by_application_id = a.id, reissued_at = {now} \
             FROM card_application a WHERE a.run_id = {run_id} AND a.old_card_id = card.id"
        ),
        format!(
            "INSERT INTO result (run_id, card_id, as_of, code, message, fee, card_apply_no, correlation_id, created_at) \
             SELECT {run_id}, e.card_id, {date}, \
                    CASE WHEN e.code = 'PASS' THEN '000_000' WHEN e.code LIKE 'I:%' THEN '000_002' ELSE e.code END, \
                    CASE WHEN e.code = 'PASS' THEN 'Success' \
                         WHEN e.code LIKE 'I:%' THEN 'Invalid input parameter. ' || substr(e.code, 3) \
                         WHEN e.code = '001_006' THEN 'Wallet user not found.' \
                         WHEN e.code = '003_005' THEN 'Card status is not active or suspended' \
                         WHEN e.code = '003_007' THEN 'User name not found error' \
                         WHEN e.code = '003_008' THEN 'Par not found from cardNo.' \
                         WHEN e.code = '003_009' THEN 'Not valid product for card issue type' \
                         ELSE 'Card reissue cost pay fail' END, \
                    CASE WHEN e.code = 'PASS' THEN e.fee ELSE 0 END, a.card_apply_no, {corr}, {now} \
             FROM ref_eval e LEFT JOIN card_application a ON a.old_card_id = e.card_id AND a.run_id = {run_id}"
        ),
        format!("UPDATE run SET status = 'completed', finished_at = {now} WHERE id = {run_id}"),
    ]
}

/// The reference's own run row (one per reference run).
pub fn run_row(d: Dialect, as_of: NaiveDate) -> String {
    let day = as_of.format("%Y-%m-%d");
    match d {
        Dialect::Sqlite => format!(
            "INSERT INTO run (as_of, trigger, scope, params, status, owner, lock_token, version, fee_mode, started_at) \
             VALUES ('{day}', 'manual', 'full', '{{}}', 'running', 'bench-reference', 'none', 'reference', 'ledger', \
                     strftime('%Y-%m-%dT%H:%M:%fZ', 'now')) RETURNING id"
        ),
        Dialect::Postgres => format!(
            "INSERT INTO run (as_of, trigger, scope, params, status, owner, lock_token, version, fee_mode, started_at) \
             VALUES (DATE '{day}', 'manual', 'full', '{{}}', 'running', 'bench-reference', 'none', 'reference', \
                     'ledger', now()) RETURNING id"
        ),
    }
}
