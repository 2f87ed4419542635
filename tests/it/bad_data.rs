//! Rows nobody here wrote (DESIGN §10, issue "bad data never stops a run"): blank texts made of
//! Unicode white space, control or format characters; a card with a long application history;
//! card application numbers another system already took; products with impossible money or
//! validity. Each becomes a per-card outcome, the run completes, and reruns and reports work.

use std::collections::{BTreeMap, HashSet};

use renewal_worker::domain::ids::CardApplyNo;

use crate::common::*;
use crate::run::oracle;

both_backends!(
    blank_texts_are_absent_whatever_their_characters,
    a_long_application_history_and_taken_numbers_do_not_stop_the_run,
    impossible_products_give_their_cards_003_009_and_are_logged_once,
    a_card_whose_every_number_of_the_day_is_taken_gets_900_001_and_the_run_goes_on,
);

fn as_of() -> chrono::NaiveDate {
    chrono::NaiveDate::parse_from_str(AS_OF, "%Y-%m-%d").expect("AS_OF is a date")
}

/// Cards the oracle renews, each of a different member, with their member: (card, member, fee).
async fn renewable_cards(db: &TestDb, n: usize) -> Vec<(i64, i64, i64)> {
    let expected = oracle(db).await;
    let pool = db.pool().await;
    let mut members = HashSet::new();
    let mut out = Vec::new();
    for (card, (code, fee)) in &expected {
        if code != "000_000" {
            continue;
        }
        let member: i64 = sqlx::query_scalar("SELECT member_id FROM card WHERE id = $1")
            .bind(*card)
            .fetch_one(&pool)
            .await
            .expect("the card's member");
        if members.insert(member) {
            out.push((*card, member, *fee));
        }
        if out.len() == n {
            return out;
        }
    }
    panic!("the demo data has fewer than {n} renewable cards of distinct members");
}

async fn code_of_card(db: &TestDb, card: i64) -> (String, String) {
    sqlx::query_as("SELECT code, message FROM result WHERE card_id = $1 AND CAST(as_of AS TEXT) = $2")
        .bind(card)
        .bind(AS_OF)
        .fetch_one(&db.pool().await)
        .await
        .unwrap_or_else(|e| panic!("card {card} has no result for {AS_OF}: {e}"))
}

/// The run completed (exit 0), left no run row `running`, and `report` and a rerun still work.
async fn assert_run_completes_and_later_commands_work(db: &TestDb) -> String {
    let out = db.run_cmd(&["run", "--as-of", AS_OF]);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(0), "run failed: {}", tail(&stderr));
    assert_eq!(running_runs(db).await, 0);
    let statuses: Vec<String> =
        sqlx::query_scalar("SELECT status FROM run ORDER BY id").fetch_all(&db.pool().await).await.unwrap();
    assert!(statuses.iter().all(|s| s == "completed"), "{statuses:?}");
    db.ok(&["report"]);
    let rerun = db.ok(&["run", "--as-of", AS_OF]);
    assert!(rerun.contains("read 0 "), "a rerun finds nothing left: {rerun}");
    db.ok(&["report"]);
    stderr
}

async fn blank_texts_are_absent_whatever_their_characters(kind: Kind) {
    let db = TestDb::of(kind);
    db.seed(600);
    let cards = renewable_cards(&db, 6).await;
    let pool = db.pool().await;
    // Ideographic space, tab + newline, no-break space, zero-width space, BOM + CR: none is ASCII ' '.
    let blanks = ["\u{3000}\u{3000}", "\t\n", "\u{00A0}", "\u{200B}", "\u{FEFF}\r", " \u{2028} "];
    let cases: [(&str, &str, &str); 6] = [
        ("UPDATE member SET name = $1 WHERE id = $2", "003_007", "User name not found error"),
        ("UPDATE member SET mobile = $1 WHERE id = $2", "003_008", "Par not found from cardNo."),
        ("UPDATE card SET par = $1 WHERE id = $2", "003_008", "Par not found from cardNo."),
        ("UPDATE member SET address = $1 WHERE id = $2", "000_002", "Invalid input parameter. addressInfo.address"),
        (
            "UPDATE member SET address_detail = $1 WHERE id = $2",
            "000_002",
            "Invalid input parameter. addressInfo.addressDetail",
        ),
        ("UPDATE member SET name = $1 WHERE id = $2", "003_007", "User name not found error"),
    ];
    for (((sql, _, _), blank), (card, member, _)) in cases.iter().zip(blanks).zip(&cards) {
        let key = if sql.starts_with("UPDATE card") { *card } else { *member };
        let done = sqlx::query(sqlx::AssertSqlSafe(sql.to_string())).bind(blank).bind(key).execute(&pool).await;
        assert_eq!(done.expect(sql).rows_affected(), 1, "{sql}");
    }
    assert_run_completes_and_later_commands_work(&db).await;
    for ((_, code, message), (card, _, _)) in cases.iter().zip(&cards) {
        assert_eq!(code_of_card(&db, *card).await, (code.to_string(), message.to_string()), "card {card}");
    }
    // The single-card path reads the same way.
    let card_no: String =
        sqlx::query_scalar("SELECT card_no FROM card WHERE id = $1").bind(cards[0].0).fetch_one(&pool).await.unwrap();
    let out = db.ok(&["run", "--as-of", AS_OF, "--card", &card_no]);
    assert_eq!(count_in(&out, "003_007"), Some(1), "{out}");
}

/// Inserts a cancelled expiry-reissue application for `card` (of `member`, product `product`).
async fn insert_cancelled(db: &TestDb, card: i64, member: i64, product: i64, number: &str) {
    let sql = format!(
        "INSERT INTO card_application (card_apply_no, kind, old_card_id, member_id, product_id, delivery_address, \
           delivery_address_detail, delivery_zip_code, fee, new_expiry_ym, payment_state, correlation_id, \
           created_at, updated_at) \
         VALUES ('{number}', 'EXPIRY_REISSUE', {card}, {member}, {product}, 'a', 'b', '12345', 0, 203112, \
           'CANCELLED', '261101020000-abcdef0', '2026-11-01T00:00:00Z', '2026-11-01T00:00:00Z')"
    );
    sqlx::query(sqlx::AssertSqlSafe(sql)).execute(&db.pool().await).await.expect("insert a cancelled application");
}

async fn product_of(db: &TestDb, card: i64) -> i64 {
    sqlx::query_scalar("SELECT product_id FROM card WHERE id = $1")
        .bind(card)
        .fetch_one(&db.pool().await)
        .await
        .unwrap()
}

async fn a_long_application_history_and_taken_numbers_do_not_stop_the_run(kind: Kind) {
    let db = TestDb::of(kind);
    db.seed(600);
    let cards = renewable_cards(&db, 4).await;
    let day = as_of();
    // Card A: 150 earlier applications (more than the old scheme's 100), numbers of another format.
    let (a, a_member, _) = cards[0];
    let a_product = product_of(&db, a).await;
    for i in 0..150 {
        insert_cancelled(&db, a, a_member, a_product, &format!("99{i:020}")).await;
    }
    // Card B: its first number (sequence = its one earlier application) is already taken by that one.
    let (b, b_member, _) = cards[1];
    let b_product = product_of(&db, b).await;
    let b_taken = CardApplyNo::derive(day, b, 1).unwrap();
    insert_cancelled(&db, b, b_member, b_product, b_taken.as_str()).await;
    // Card C: another system wrote an application for a different card under the number C would
    // derive first, and the two after it.
    let (c, _, _) = cards[2];
    let (other, other_member, _) = cards[3];
    for seq in 0..3 {
        insert_cancelled(&db, other, other_member, a_product, CardApplyNo::derive(day, c, seq).unwrap().as_str()).await;
    }
    let stderr = assert_run_completes_and_later_commands_work(&db).await;
    for card in [a, b, c, other] {
        assert_eq!(code_of_card(&db, card).await.0, "000_000", "card {card}");
    }
    let pool = db.pool().await;
    let number_of = |card: i64| {
        sqlx::query_scalar::<_, String>(
            "SELECT card_apply_no FROM card_application WHERE old_card_id = $1 AND payment_state = 'APPLIED'",
        )
        .bind(card)
        .fetch_one(&pool)
    };
    let number_of = |card| async move { number_of(card).await.expect("the card's applied application") };
    assert_eq!(number_of(a).await, CardApplyNo::derive(day, a, 150).unwrap().as_str());
    assert_eq!(number_of(b).await, CardApplyNo::derive(day, b, 2).unwrap().as_str());
    assert_eq!(number_of(c).await, CardApplyNo::derive(day, c, 3).unwrap().as_str());
    assert!(stderr.contains("card_apply_no_taken"), "a taken number is logged");
    // Every reissued card still has exactly one live application.
    let live: BTreeMap<i64, i64> = sqlx::query_as(
        "SELECT old_card_id, count(*) FROM card_application WHERE payment_state <> 'CANCELLED' GROUP BY old_card_id",
    )
    .fetch_all(&db.pool().await)
    .await
    .unwrap()
    .into_iter()
    .collect();
    assert!(live.values().all(|n| *n == 1), "{live:?}");
}

async fn impossible_products_give_their_cards_003_009_and_are_logged_once(kind: Kind) {
    let db = TestDb::of(kind);
    db.seed(1500);
    let before = oracle(&db).await;
    let pool = db.pool().await;
    // Product 3 (a fee product): a fee that overflows 64 bits once two are summed. Product 4: a
    // validity of 8,000 years. Members get balances that would cover anything.
    sqlx::query("UPDATE card_product SET reissue_fee = 9000000000000000000 WHERE id = 3").execute(&pool).await.unwrap();
    sqlx::query("UPDATE card_product SET validity_months = 100000 WHERE id = 4").execute(&pool).await.unwrap();
    sqlx::query("UPDATE wallet SET balance = 9223372036854775807").execute(&pool).await.unwrap();
    let products: BTreeMap<i64, i64> =
        sqlx::query_as("SELECT id, product_id FROM card").fetch_all(&pool).await.unwrap().into_iter().collect();
    let stderr = assert_run_completes_and_later_commands_work(&db).await;
    let mut hit = BTreeMap::new();
    for (card, (code, _)) in &before {
        let product = products[card];
        // Cards that passed every check before the product's (the oracle's 000_000 and 003_010).
        let reaches_product = code == "000_000" || code == "003_010";
        if reaches_product && (product == 3 || product == 4) {
            assert_eq!(code_of_card(&db, *card).await.0, "003_009", "card {card} of product {product}");
            *hit.entry(product).or_insert(0) += 1;
        }
    }
    assert!(hit.get(&3).copied().unwrap_or(0) > 0 && hit.get(&4).copied().unwrap_or(0) > 0, "{hit:?}");
    for product in [3, 4] {
        let logged = stderr
            .lines()
            .filter(|l| l.contains("\"product_misconfigured\"") && l.contains(&format!("\"product_id\":{product}")))
            .count();
        assert_eq!(logged, 1, "product {product} is logged once per run");
    }
    let fee_total: i64 =
        sqlx::query_scalar("SELECT fee_total FROM run ORDER BY id LIMIT 1").fetch_one(&pool).await.unwrap();
    assert!((0..1_000_000_000).contains(&fee_total), "{fee_total}");
}

async fn a_card_whose_every_number_of_the_day_is_taken_gets_900_001_and_the_run_goes_on(kind: Kind) {
    let db = TestDb::of(kind);
    db.seed(300);
    let cards = renewable_cards(&db, 2).await;
    let (full, _, _) = cards[0];
    let (other, other_member, _) = cards[1];
    let product = product_of(&db, other).await;
    // Another system took all 10,000 numbers of `full`'s day (on applications of another card).
    let (low, _) = CardApplyNo::day_range(as_of(), full).unwrap();
    let prefix = &low.as_str()[..18];
    let series = match kind {
        Kind::Sqlite => {
            "WITH RECURSIVE s(n) AS (SELECT 0 UNION ALL SELECT n + 1 FROM s WHERE n < 9999) SELECT n FROM s"
        }
        Kind::Postgres => "SELECT n FROM generate_series(0, 9999) AS n",
    };
    let seq = match kind {
        Kind::Sqlite => "printf('%04d', n)",
        Kind::Postgres => "lpad(n::text, 4, '0')",
    };
    let sql = format!(
        "INSERT INTO card_application (card_apply_no, kind, old_card_id, member_id, product_id, delivery_address, \
           delivery_address_detail, delivery_zip_code, fee, new_expiry_ym, payment_state, correlation_id, \
           created_at, updated_at) \
         SELECT '{prefix}' || {seq}, 'EXPIRY_REISSUE', {other}, {other_member}, {product}, 'a', 'b', '12345', 0, 203112, \
           'CANCELLED', '261101020000-abcdef0', '2026-11-01T00:00:00Z', '2026-11-01T00:00:00Z' FROM ({series}) AS t"
    );
    let done = sqlx::query(sqlx::AssertSqlSafe(sql)).execute(&db.pool().await).await.expect("fill the day");
    assert_eq!(done.rows_affected(), 10_000);
    let stderr = assert_run_completes_and_later_commands_work(&db).await;
    assert_eq!(code_of_card(&db, full).await, ("900_001".to_owned(), "Card application number unavailable".to_owned()));
    assert_eq!(code_of_card(&db, other).await.0, "000_000", "the card beside it is renewed");
    assert!(stderr.contains("card_apply_no_unavailable"), "the exhausted card is logged");
    let (applications, _) = applications_and_debits(&db, full).await;
    assert_eq!(applications, 0, "no application was written for it");
    let failed: i64 = sqlx::query_scalar("SELECT failed_count FROM run ORDER BY id LIMIT 1")
        .fetch_one(&db.pool().await)
        .await
        .unwrap();
    assert!(failed >= 1, "900_001 counts as failed");
}
