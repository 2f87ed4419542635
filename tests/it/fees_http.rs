//! `fees.mode = "http"` against a real fee service on loopback (`fee_server.rs`).

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use renewal_worker::{PAUSE_ENV, PAUSED_MARKER};

use crate::common::*;
use crate::fee_server::{Fault, FeeServer};
use crate::run::oracle;

/// The wallet balances the seeded database holds: the fee service's starting balances.
async fn seeded_balances(db: &TestDb) -> HashMap<i64, i64> {
    let rows: Vec<(i64, i64)> =
        sqlx::query_as("SELECT member_id, balance FROM wallet").fetch_all(&db.pool().await).await.unwrap();
    rows.into_iter().collect()
}

fn http_mode(db: TestDb, server: &FeeServer) -> TestDb {
    db.with_env("RENEWAL__FEES__MODE", "http")
        .with_env("RENEWAL__FEES__HTTP__URL", &server.url())
        .with_env("RENEWAL__FEES__HTTP__BACKOFF_MIN_MS", "5")
        .with_env("RENEWAL__FEES__HTTP__BACKOFF_MAX_MS", "50")
        .with_env("RENEWAL__FEES__HTTP__REQUEST_TIMEOUT_MS", "2000")
}

async fn results(db: &TestDb, as_of: &str) -> BTreeMap<i64, (String, i64)> {
    let rows: Vec<(i64, String, i64)> =
        sqlx::query_as("SELECT card_id, code, fee FROM result WHERE CAST(as_of AS TEXT) = $1 ORDER BY card_id, id")
            .bind(as_of)
            .fetch_all(&db.pool().await)
            .await
            .unwrap();
    let mut out = BTreeMap::new();
    for (card, code, fee) in rows {
        assert!(out.insert(card, (code, fee)).is_none(), "card {card} has two results for {as_of}");
    }
    out
}

/// Balances the service should hold after charging what the oracle says.
fn expected_balances(
    start: &HashMap<i64, i64>,
    expected: &BTreeMap<i64, (String, i64)>,
    members: &HashMap<i64, i64>,
) -> BTreeMap<i64, i64> {
    let mut balances: BTreeMap<i64, i64> = start.iter().map(|(m, b)| (*m, *b)).collect();
    for (card, (_, fee)) in expected {
        *balances.get_mut(&members[card]).unwrap() -= fee;
    }
    balances
}

async fn card_members(db: &TestDb) -> HashMap<i64, i64> {
    let rows: Vec<(i64, i64)> =
        sqlx::query_as("SELECT id, member_id FROM card").fetch_all(&db.pool().await).await.unwrap();
    rows.into_iter().collect()
}

fn service_balances(server: &FeeServer) -> BTreeMap<i64, i64> {
    server.ledger().balances.iter().map(|(m, b)| (*m, *b)).collect()
}

both_backends!(http_fees_reach_the_ledger_outcome_and_a_declined_card_is_tried_again_next_night);

async fn http_fees_reach_the_ledger_outcome_and_a_declined_card_is_tried_again_next_night(kind: Kind) {
    let seeded = TestDb::of(kind);
    seeded.seed(1500);
    let start = seeded_balances(&seeded).await;
    let server = FeeServer::start(start.clone(), Duration::from_millis(2));
    let db = http_mode(seeded, &server)
        .with_env("RENEWAL__RUN__CHUNK_SIZE", "40")
        .with_env("RENEWAL__FEES__HTTP__API_KEY", "sk-test-secret-4242");
    let expected = oracle(&db).await;
    let out = db.run_cmd(&["run", "--as-of", AS_OF]);
    assert_eq!(out.status.code(), Some(0), "{}", tail(&String::from_utf8_lossy(&out.stderr)));
    let logs = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(!logs.contains("sk-test-secret-4242"), "the API key must never be logged");
    assert_eq!(server.ledger().api_keys.iter().collect::<Vec<_>>(), ["sk-test-secret-4242"]);

    assert_eq!(results(&db, AS_OF).await, expected);
    server.assert_no_card_charged_twice();
    let members = card_members(&db).await;
    assert_eq!(service_balances(&server), expected_balances(&start, &expected, &members));
    assert!(server.ledger().requests.values().all(|n| *n == 1), "one request per key without faults");
    // The card database's wallets are not the ledger in this mode.
    assert_eq!(scalar(&db, "SELECT count(*) FROM wallet_debit").await, 0);
    assert_eq!(seeded_balances(&db).await, start);
    // Applications: APPLIED with the service's reference for successes, CANCELLED for declines.
    let states: Vec<(String, i64)> = sqlx::query_as(
        "SELECT payment_state, count(*) FROM card_application WHERE run_id IS NOT NULL GROUP BY payment_state ORDER BY 1",
    )
    .fetch_all(&db.pool().await)
    .await
    .unwrap();
    let count = |code: &str| expected.values().filter(|(c, _)| c == code).count() as i64;
    assert_eq!(states, vec![("APPLIED".to_owned(), count("000_000")), ("CANCELLED".to_owned(), count("003_010"))]);
    assert_eq!(
        scalar(&db, "SELECT count(*) FROM card_application WHERE payment_state = 'APPLIED' AND fee > 0 AND payment_ref IS NULL AND run_id IS NOT NULL").await,
        0
    );

    // A declined card is not marked: after its member tops up, the next night renews it.
    let (declined, _) = expected.iter().find(|(_, (c, _))| c == "003_010").expect("a declined card");
    server.ledger().balances.insert(members[declined], 1_000_000);
    db.ok(&["run", "--as-of", "2026-11-21"]);
    let next = results(&db, "2026-11-21").await;
    assert_eq!(next.get(declined).map(|(c, _)| c.as_str()), Some("000_000"));
    let apply_nos: Vec<String> =
        sqlx::query_scalar("SELECT card_apply_no FROM card_application WHERE old_card_id = $1 ORDER BY id")
            .bind(declined)
            .fetch_all(&db.pool().await)
            .await
            .unwrap();
    assert_eq!(apply_nos.len(), 2);
    assert_eq!(&apply_nos[1][..6], "261121", "the second attempt's number carries its own as-of");
    assert_eq!(&apply_nos[1][18..], "0001", "a second attempt gets sequence 0001");
    server.assert_no_card_charged_twice();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transient_errors_are_retried_and_each_card_is_charged_once() {
    let seeded = TestDb::new();
    seeded.seed(1000);
    let server = FeeServer::start(seeded_balances(&seeded).await, Duration::from_millis(1));
    server.fail_each_key_first(vec![Fault::Status(500), Fault::Status(429)]);
    let db = http_mode(seeded, &server);
    let expected = oracle(&db).await;
    db.run_as_of();
    assert_eq!(results(&db, AS_OF).await, expected);
    server.assert_no_card_charged_twice();
    let ledger = server.ledger();
    assert!(!ledger.requests.is_empty());
    assert!(ledger.requests.values().all(|n| *n == 3), "two failures then one answer per key");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timeout_after_the_charge_is_retried_with_the_same_key_and_charges_once() {
    let seeded = TestDb::new();
    seeded.seed(600);
    let server = FeeServer::start(seeded_balances(&seeded).await, Duration::from_millis(1));
    server.fail_each_key_first(vec![Fault::SlowAfterCharge(Duration::from_millis(800))]);
    let db = http_mode(seeded, &server).with_env("RENEWAL__FEES__HTTP__REQUEST_TIMEOUT_MS", "200");
    let expected = oracle(&db).await;
    db.run_as_of();
    assert_eq!(results(&db, AS_OF).await, expected);
    server.assert_no_card_charged_twice();
    assert!(server.ledger().requests.values().all(|n| *n == 2), "a timeout, then the replayed answer");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_service_stops_the_run_with_failed_dependency_and_a_rerun_finishes() {
    let seeded = TestDb::new();
    seeded.seed(2000);
    let server = FeeServer::start(seeded_balances(&seeded).await, Duration::from_millis(1));
    server.fail_always(Some(Fault::Status(500)));
    // Two chunks in flight (HTTP mode's default is 8, which on this small set would have every
    // chunk reserved before the breaker opens): the test is about what stops, not how many.
    let db = http_mode(seeded, &server)
        .with_env("RENEWAL__RUN__CHUNK_SIZE", "30")
        .with_env("RENEWAL__RUN__CONCURRENCY", "2")
        .with_env("RENEWAL__FEES__HTTP__MAX_RETRIES", "1")
        .with_env("RENEWAL__FEES__HTTP__MAX_CONSECUTIVE_FAILURES", "6");
    let expected = oracle(&db).await;
    let out = db.run_cmd(&["run", "--as-of", AS_OF]);
    assert_eq!(out.status.code(), Some(3), "failed_dependency exits 3");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error: ")).collect();
    assert_eq!(errors.len(), 1, "{stderr}");
    assert!(errors[0].contains("charges failed in a row"), "{}", errors[0]);
    let (status, pending): (String, i64) =
        sqlx::query_as("SELECT status, pending_count FROM run").fetch_one(&db.pool().await).await.unwrap();
    assert_eq!(status, "failed_dependency");
    // The run stopped claiming: cards after the first chunk(s) are untouched.
    let touched = scalar(&db, "SELECT count(*) FROM result").await + pending;
    assert!(touched < expected.len() as i64 / 2, "{touched} of {}", expected.len());
    assert_eq!(
        scalar(&db, "SELECT count(*) FROM card_application WHERE payment_state = 'PENDING_PAYMENT'").await,
        pending
    );

    assert!(pending > 0, "charges still unknown after their retries stay pending");

    // A rerun while the service refuses (401) must not drop the pending reservations: their
    // earlier requests may have been charged, only their own key can tell.
    server.fail_always(Some(Fault::Status(401)));
    assert_eq!(db.run_cmd(&["run", "--as-of", AS_OF]).status.code(), Some(3));
    assert_eq!(
        scalar(&db, "SELECT count(*) FROM card_application WHERE payment_state = 'PENDING_PAYMENT'").await,
        pending,
        "pending reservations survive a refusing service"
    );

    // The service recovers: the next run settles what was pending, then finishes the window.
    server.fail_always(None);
    db.run_as_of();
    assert_eq!(results(&db, AS_OF).await, expected);
    assert_eq!(scalar(&db, "SELECT count(*) FROM card_application WHERE payment_state = 'PENDING_PAYMENT'").await, 0);
    server.assert_no_card_charged_twice();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_contract_error_stops_the_run_at_once_and_charges_nothing() {
    let seeded = TestDb::new();
    seeded.seed(1000);
    let server = FeeServer::start(seeded_balances(&seeded).await, Duration::from_millis(1));
    server.fail_always(Some(Fault::Status(401)));
    let db = http_mode(seeded, &server).with_env("RENEWAL__RUN__CHUNK_SIZE", "30");
    let out = db.run_cmd(&["run", "--as-of", AS_OF]);
    assert_eq!(out.status.code(), Some(3));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.lines().any(|l| l.starts_with("error: fee service: HTTP 401")), "{}", tail(&stderr));
    assert_eq!(server.ledger().charges, 0);
    // Nothing was charged, so nothing is left pending: unsent reservations are released.
    assert_eq!(scalar(&db, "SELECT count(*) FROM card_application WHERE payment_state = 'PENDING_PAYMENT'").await, 0);
    assert_eq!(
        scalar(
            &db,
            "SELECT count(*) FROM card WHERE reissued_at IS NOT NULL AND id IN \
        (SELECT old_card_id FROM card_application WHERE fee > 0 AND run_id IS NOT NULL)"
        )
        .await,
        0
    );
    assert!(server.ledger().requests.values().all(|n| *n == 1), "a contract error is not retried");
}

both_backends!(
    sigkill_between_charge_and_commit_then_a_rerun_settles_without_charging_twice,
    after_a_sigkill_two_replicas_settling_together_charge_each_card_once,
);

/// A database in HTTP mode whose worker was killed between a chunk's charges and its commit,
/// with the fee service, its starting balances and the uninterrupted outcome.
struct Killed {
    db: TestDb,
    server: FeeServer,
    start: HashMap<i64, i64>,
    expected: BTreeMap<i64, (String, i64)>,
}

async fn killed_between_charge_and_commit(kind: Kind) -> Killed {
    let seeded = TestDb::of(kind);
    seeded.seed(2000);
    let start = seeded_balances(&seeded).await;
    let server = FeeServer::start(start.clone(), Duration::from_millis(1));
    let db = http_mode(seeded, &server).with_env("RENEWAL__RUN__CHUNK_SIZE", "40");
    let expected = oracle(&db).await;
    let mut worker = Spawned::start(db.command(&["run", "--as-of", AS_OF]).env(PAUSE_ENV, "after_charge:2"));
    worker.wait_for_line(PAUSED_MARKER, Duration::from_secs(60));
    db.kill(&mut worker).await;
    let charged_before = server.ledger().charges;
    let pending = scalar(&db, "SELECT count(*) FROM card_application WHERE payment_state = 'PENDING_PAYMENT'").await;
    assert!(pending > 0 && charged_before > 0, "the kill lands between charge and commit");
    assert!(scalar(&db, "SELECT count(*) FROM result").await > 0, "the first chunk committed");
    Killed { db, server, start, expected }
}

/// The uninterrupted outcome, no reservation left, every wallet debited once per charged card.
async fn assert_settled(k: &Killed) {
    assert_eq!(results(&k.db, AS_OF).await, k.expected);
    assert_eq!(scalar(&k.db, "SELECT count(*) - count(DISTINCT card_id) FROM result").await, 0, "one result a card");
    assert_eq!(scalar(&k.db, "SELECT count(*) FROM card_application WHERE payment_state = 'PENDING_PAYMENT'").await, 0);
    assert_eq!(running_runs(&k.db).await, 0);
    let members = card_members(&k.db).await;
    assert_eq!(service_balances(&k.server), expected_balances(&k.start, &k.expected, &members), "per-wallet balances");
    k.server.assert_no_card_charged_twice();
}

async fn sigkill_between_charge_and_commit_then_a_rerun_settles_without_charging_twice(kind: Kind) {
    let k = killed_between_charge_and_commit(kind).await;
    k.db.run_as_of();
    assert_settled(&k).await;
    let ledger = k.server.ledger();
    assert!(ledger.requests.values().any(|n| *n == 2), "the killed chunk's keys were asked again");
    assert!(ledger.requests.values().all(|n| *n <= 2));
}

/// Two replicas start together after the kill: both find the killed run's reservations. The
/// service may hear a key from each (it answers a key once), but every card ends with one charge,
/// one result and one debit of its member's balance.
async fn after_a_sigkill_two_replicas_settling_together_charge_each_card_once(kind: Kind) {
    let k = killed_between_charge_and_commit(kind).await;
    let leftover_keys = k.server.ledger().requests.len();
    // Each replica stops after charging the leftovers it found, before recording them, so the
    // other one finds them still pending whatever the scheduling: both settle the same ones.
    let release = k.db.dir.path().join("release-settlers");
    let mut replicas = start_workers(&k.db, 2, |_, cmd| {
        cmd.env(PAUSE_ENV, "after_charge:0").env(renewal_worker::RELEASE_ENV, &release);
    });
    for r in &replicas {
        r.wait_for_line(PAUSED_MARKER, Duration::from_secs(60));
    }
    std::fs::write(&release, b"go").unwrap();
    for (i, r) in replicas.iter_mut().enumerate() {
        assert_eq!(r.wait(Duration::from_secs(120)), Some(0), "replica {i}: {}", r.stderr_so_far());
    }
    assert_settled(&k).await;
    {
        let ledger = k.server.ledger();
        assert!(ledger.requests.len() > leftover_keys, "the replicas went on to new cards");
        assert!(ledger.requests.values().all(|n| *n <= 3), "a leftover key at most once per process");
        // The race this test is for: both replicas settled some of the same reservations.
        assert!(ledger.requests.values().any(|n| *n == 3), "no leftover key was asked by both replicas");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_in_flight_never_exceed_max_in_flight() {
    let seeded = TestDb::new();
    seeded.seed(22_000);
    let server = FeeServer::start(seeded_balances(&seeded).await, Duration::from_millis(20));
    let db = http_mode(seeded, &server).with_env("RENEWAL__FEES__HTTP__MAX_IN_FLIGHT", "16");
    db.run_as_of();
    let requests: u32 = server.ledger().requests.values().sum();
    assert!(requests >= 1000, "{requests} requests");
    assert!(server.max_in_flight() <= 16, "{} in flight", server.max_in_flight());
    assert_eq!(server.max_in_flight(), 16, "the bound should also be reached");
    server.assert_no_card_charged_twice();
}

#[test]
fn http_mode_configuration_errors_are_one_line() {
    let db = TestDb::new();
    db.ok(&["migrate"]);
    for (extra, named) in [
        (vec![], "fees.http.url"),
        (vec![("RENEWAL__FEES__HTTP__URL", "ftp://x")], "fees.http.url"),
        (
            vec![("RENEWAL__FEES__HTTP__URL", "http://127.0.0.1:9"), ("RENEWAL__FEES__HTTP__REQUEST_TIMEOUT_MS", "0")],
            "request_timeout_ms",
        ),
        (
            vec![("RENEWAL__FEES__HTTP__URL", "http://127.0.0.1:9"), ("RENEWAL__FEES__HTTP__MAX_IN_FLIGHT", "0")],
            "max_in_flight",
        ),
    ] {
        let mut cmd = db.command(&["run", "--as-of", AS_OF]);
        cmd.env("RENEWAL__FEES__MODE", "http");
        for (k, v) in &extra {
            cmd.env(k, v);
        }
        let out = cmd.output().unwrap();
        assert_eq!(out.status.code(), Some(2));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        assert!(stderr.starts_with("error: configuration: ") && stderr.contains(named), "{stderr}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rate_limit_bounds_requests_per_second() {
    let seeded = TestDb::new();
    seeded.seed(6000);
    let server = FeeServer::start(seeded_balances(&seeded).await, Duration::from_millis(1));
    let db = http_mode(seeded, &server).with_env("RENEWAL__FEES__HTTP__RATE_LIMIT_PER_SECOND", "100");
    db.run_as_of();
    let ledger = server.ledger();
    let requests: u32 = ledger.requests.values().sum();
    assert!(requests >= 200, "{requests} requests");
    let span = match (ledger.first_request, ledger.last_response) {
        (Some(a), Some(b)) => (b - a).as_secs_f64(),
        _ => panic!("no requests"),
    };
    // At 100/s with a burst of one, n requests need at least (n - 1) / 100 seconds.
    let floor = f64::from(requests - 1) / 100.0;
    assert!(span >= floor * 0.95, "{requests} requests in {span:.2} s, faster than 100/s");
}

/// After a 401 opens the breaker, every charge left pending says so: those whose retries it cut
/// short name it beside their own last error (they used to say only "HTTP 503").
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pending_charges_after_a_401_stop_name_the_401() {
    let seeded = TestDb::new();
    seeded.seed(1000);
    let server = FeeServer::start(seeded_balances(&seeded).await, Duration::from_millis(1));
    server.fail_each_key_first(vec![Fault::Status(503), Fault::Status(401)]);
    let db = http_mode(seeded, &server).with_env("RENEWAL__RUN__CHUNK_SIZE", "200");
    let out = db.run_cmd(&["run", "--as-of", AS_OF]);
    assert_eq!(out.status.code(), Some(3));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let reasons: Vec<String> = stderr
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|e| e["event"] == "fee_pending")
        .map(|e| e["reason"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert!(!reasons.is_empty(), "{}", tail(&stderr));
    assert!(reasons.iter().all(|r| r.contains("401")), "{reasons:?}");
}
