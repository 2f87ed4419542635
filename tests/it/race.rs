//! The single-card path racing the batch on the same card: exactly one application, every time,
//! and over the loop both orders happen.

use std::time::Duration;

use renewal_worker::{PAUSED_MARKER, START_GATE_ENV};

use crate::common::*;
use crate::run::{eligible_fee_card, oracle};

both_backends!(the_single_card_path_racing_the_batch_yields_one_application_every_time);

async fn the_single_card_path_racing_the_batch_yields_one_application_every_time(kind: Kind) {
    let base = TestDb::of(kind);
    base.seed(300);
    let expected = oracle(&base).await;
    let (card_id, card_no) = eligible_fee_card(&base, &expected).await;

    let (mut batch_first, mut card_first) = (0, 0);
    for i in 0..100u64 {
        let db = base.copy().await;
        let gate = db.dir.path().join("go");
        // The batch is held at its start, connected. The single-card run is started and the batch
        // let go with an offset that sweeps from the batch 80 ms ahead to 80 ms behind, so the
        // sweep covers both orders whatever the two processes' start-up costs, and the
        // iterations near the crossover race for real.
        let mut batch = Spawned::start(db.command(&["run", "--as-of", AS_OF]).env(START_GATE_ENV, &gate));
        batch.wait_for_line(PAUSED_MARKER, Duration::from_secs(60));
        let offset_ms = (i % 17) as i64 * 10 - 80;
        let release = || std::fs::write(&gate, b"go").unwrap();
        if offset_ms < 0 {
            release();
            std::thread::sleep(Duration::from_millis(offset_ms.unsigned_abs()));
        }
        let mut single = Spawned::start(&mut db.command(&["run", "--as-of", AS_OF, "--card", &card_no]));
        if offset_ms >= 0 {
            std::thread::sleep(Duration::from_millis(offset_ms as u64));
            release();
        }
        let code = single.wait(Duration::from_secs(60));
        assert_eq!(code, Some(0), "single-card run, iteration {i}: {}", single.stderr_so_far());
        let code = batch.wait(Duration::from_secs(60));
        assert_eq!(code, Some(0), "batch, iteration {i}: {}", batch.stderr_so_far());

        let pool = db.pool().await;
        assert_eq!(applications_and_debits(&db, card_id).await, (1, 1), "iteration {i}");
        let winner: String = sqlx::query_scalar(
            "SELECT run.scope FROM card_application a JOIN run ON run.id = a.run_id WHERE a.old_card_id = $1",
        )
        .bind(card_id)
        .fetch_one(&pool)
        .await
        .unwrap();
        let codes: Vec<(String, String)> = sqlx::query_as(
            "SELECT run.scope, r.code FROM result r JOIN run ON run.id = r.run_id WHERE r.card_id = $1 ORDER BY r.id",
        )
        .bind(card_id)
        .fetch_all(&pool)
        .await
        .unwrap();
        match winner.as_str() {
            "full" => {
                batch_first += 1;
                // The single-card run waited for or followed the batch and lost: 003_004.
                assert!(codes.contains(&("card".into(), "003_004".into())), "iteration {i}: {codes:?}");
            }
            "card" => {
                card_first += 1;
                // The batch either skipped the card (its result for the as-of existed) or lost the claim.
                assert!(codes.iter().all(|(s, c)| s == "card" || c == "003_004"), "iteration {i}: {codes:?}");
            }
            other => panic!("unexpected winner {other}"),
        }
    }
    println!("{kind:?}: batch first {batch_first}, single card first {card_first}");
    assert!(batch_first > 0 && card_first > 0, "both orders must occur: {batch_first} / {card_first}");
}

both_backends!(holding_either_side_at_its_commit_gives_one_application_in_both_orders);

/// The race made to happen in both orders: one side is held between its claim and its commit
/// (holding its locks) while the other starts, then released.
async fn holding_either_side_at_its_commit_gives_one_application_in_both_orders(kind: Kind) {
    let base = TestDb::of(kind);
    base.seed(300);
    let expected = oracle(&base).await;
    let (card_id, card_no) = eligible_fee_card(&base, &expected).await;
    for (i, batch_first) in [true, false, true, false, true, false].into_iter().enumerate() {
        let db = base.copy().await;
        let release = db.dir.path().join("release");
        let batch_args = ["run", "--as-of", AS_OF];
        let card_args = ["run", "--as-of", AS_OF, "--card", card_no.as_str()];
        let (first_args, second_args): (&[&str], &[&str]) =
            if batch_first { (&batch_args, &card_args) } else { (&card_args, &batch_args) };
        let mut first = Spawned::start(
            db.command(first_args)
                .env(renewal_worker::PAUSE_ENV, "before_commit:1")
                .env(renewal_worker::RELEASE_ENV, &release),
        );
        first.wait_for_line(PAUSED_MARKER, Duration::from_secs(60));
        let mut second = Spawned::start(&mut db.command(second_args));
        std::thread::sleep(Duration::from_millis(300));
        std::fs::write(&release, b"go").unwrap();
        assert_eq!(first.wait(Duration::from_secs(60)), Some(0), "iteration {i}");
        assert_eq!(second.wait(Duration::from_secs(60)), Some(0), "iteration {i}");

        assert_eq!(applications_and_debits(&db, card_id).await, (1, 1), "iteration {i}");
        let codes: Vec<(String, String)> = sqlx::query_as(
            "SELECT run.scope, r.code FROM result r JOIN run ON run.id = r.run_id WHERE r.card_id = $1 ORDER BY r.id",
        )
        .bind(card_id)
        .fetch_all(&db.pool().await)
        .await
        .unwrap();
        if batch_first {
            assert_eq!(codes, [("full".to_owned(), "000_000".to_owned()), ("card".into(), "003_004".into())], "{i}");
        } else {
            // The card's own run reissued it; the batch then skipped it (a result for the as-of exists).
            assert_eq!(codes, [("card".to_owned(), "000_000".to_owned())], "iteration {i}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claim_lost_to_another_writer_costs_only_that_card() {
    if !postgres_available() {
        return;
    }
    let base = TestDb::of(Kind::Postgres);
    base.seed(1500);
    let expected = oracle(&base).await;
    let (card_id, _) = eligible_fee_card(&base, &expected).await;

    // The batch has read and evaluated its chunk; before it claims, another writer (here plain
    // SQL, standing for a path that takes no member lock) creates a live application for one card.
    let held = HeldBeforeClaim::start(&base);
    give_away(&base, card_id).await;
    held.release();

    // That card lost its claim (003_004, no debit); every other card matches the oracle.
    let got = results_by_card(&base).await;
    let mut want = expected.clone();
    want.insert(card_id, ("003_004".to_owned(), 0));
    assert_eq!(got, want);
    assert_eq!(applications_and_debits(&base, card_id).await, (1, 0));
}

/// A one-task batch held after reading and evaluating its first chunk, before claiming it.
struct HeldBeforeClaim {
    batch: Spawned,
    release: std::path::PathBuf,
}

impl HeldBeforeClaim {
    fn start(db: &TestDb) -> Self {
        let release = db.dir.path().join("release");
        let batch = Spawned::start(
            db.command(&["run", "--as-of", AS_OF])
                .env("RENEWAL__RUN__CONCURRENCY", "1")
                .env(renewal_worker::PAUSE_ENV, "before_claim:1")
                .env(renewal_worker::RELEASE_ENV, &release),
        );
        batch.wait_for_line(PAUSED_MARKER, Duration::from_secs(60));
        Self { batch, release }
    }

    /// Lets the batch go on and waits for it to finish (exit 0).
    fn release(mut self) {
        std::fs::write(&self.release, b"go").unwrap();
        assert_eq!(self.batch.wait(Duration::from_secs(60)), Some(0));
    }
}

/// Another writer (plain SQL, standing for a path that takes no member lock) gives `card` a
/// live application.
async fn give_away(db: &TestDb, card: i64) {
    sqlx::query(
        "INSERT INTO card_application (card_apply_no, kind, old_card_id, member_id, product_id, delivery_address, \
             delivery_address_detail, delivery_zip_code, fee, new_expiry_ym, payment_state, correlation_id, \
             created_at, updated_at) \
         SELECT '20261120990000' || lpad(c.id::text, 8, '0'), 'EXPIRY_REISSUE', c.id, c.member_id, c.product_id, \
                'x', 'x', '00000', 0, 203111, 'APPLIED', '261120020000-0000000', now(), now() \
         FROM card c WHERE c.id = $1",
    )
    .bind(card)
    .execute(&db.pool().await)
    .await
    .unwrap();
}

/// Every result row as card -> (code, fee).
async fn results_by_card(db: &TestDb) -> std::collections::BTreeMap<i64, (String, i64)> {
    let rows: Vec<(i64, String, i64)> = sqlx::query_as("SELECT card_id, code, fee FROM result ORDER BY card_id")
        .fetch_all(&db.pool().await)
        .await
        .unwrap();
    rows.into_iter().map(|(card, code, fee)| (card, (code, fee))).collect()
}

/// A card number the batch accepts: `body` and its Luhn check digit.
fn valid_card_no(body: u64) -> String {
    let body = format!("{body:015}");
    let check = renewal_worker::domain::card_number::luhn_check_digit(&body);
    format!("{body}{check}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claim_lost_to_another_writer_frees_its_fee_for_the_members_later_cards() {
    if !postgres_available() {
        return;
    }
    let db = TestDb::of(Kind::Postgres);
    db.seed(1500);
    let mut want = oracle(&db).await;
    let (source, _) = eligible_fee_card(&db, &want).await;
    let fee = want[&source].1;
    let pool = db.pool().await;
    let top_card: i64 = sqlx::query_scalar("SELECT max(id) FROM card").fetch_one(&pool).await.unwrap();
    let top_member: i64 = sqlx::query_scalar("SELECT max(id) FROM member").fetch_one(&pool).await.unwrap();

    // Two new members like the source card's, and their cards like the source card, all in the
    // run's one chunk: the first member's balance pays two of its three cards, the second's one
    // of its two.
    let members = [(top_member + 1, 2 * fee, 3), (top_member + 2, fee, 2)];
    let mut cards = Vec::new();
    for (member, balance, count) in members {
        sqlx::query(
            "INSERT INTO member (id, name, mobile, status, address, address_detail, zip_code) \
             SELECT $1, m.name, m.mobile, m.status, m.address, m.address_detail, m.zip_code \
             FROM member m JOIN card c ON c.member_id = m.id WHERE c.id = $2",
        )
        .bind(member)
        .bind(source)
        .execute(&pool)
        .await
        .unwrap();
        sqlx::query("INSERT INTO wallet (member_id, balance) VALUES ($1, $2)")
            .bind(member)
            .bind(balance)
            .execute(&pool)
            .await
            .unwrap();
        for _ in 0..count {
            let id = top_card + 1 + cards.len() as i64;
            sqlx::query(
                "INSERT INTO card (id, card_no, member_id, product_id, status, expiry_ym, par) \
                 SELECT $1, $2, $3, product_id, status, expiry_ym, par FROM card WHERE id = $4",
            )
            .bind(id)
            .bind(valid_card_no(900_000_000_000_000 + id as u64))
            .bind(member)
            .bind(source)
            .execute(&pool)
            .await
            .unwrap();
            cards.push((id, member));
        }
    }
    let [a, b, c, d, e] = [0, 1, 2, 3, 4].map(|i| cards[i].0);

    // Paused after reading and evaluating, before claiming: another writer creates a live
    // application for the first member's first card (charged, had it been claimed) and for the
    // second member's second card (declined: its member's balance goes to the first).
    let held = HeldBeforeClaim::start(&db);
    for card in [a, e] {
        give_away(&db, card).await;
    }
    held.release();

    // The first member's lost card frees its fee: the other two are both charged. The second
    // member's declined card is reported as renewed by someone else, not as declined.
    for (card, code, charged) in [(a, "003_004", 0), (b, "000_000", fee), (c, "000_000", fee), (d, "000_000", fee)] {
        want.insert(card, (code.to_owned(), charged));
    }
    want.insert(e, ("003_004".to_owned(), 0));
    assert_eq!(results_by_card(&db).await, want);
    for (card, debits) in [(a, 0), (b, 1), (c, 1), (d, 1), (e, 0)] {
        assert_eq!(applications_and_debits(&db, card).await, (1, debits), "card {card}");
    }
    let balances: Vec<i64> = sqlx::query_scalar("SELECT balance FROM wallet WHERE member_id > $1 ORDER BY member_id")
        .bind(top_member)
        .fetch_all(&pool)
        .await
        .unwrap();
    assert_eq!(balances, [0, 0]);
}
