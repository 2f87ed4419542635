//! The sync API: the real `serve` on a loopback port and a real HTTP client, each case set up
//! through the database and checked for status, code, verbatim message, headers and the rows
//! written (or none).

use std::time::Duration;

use chrono::Utc;
use renewal_worker::PAUSE_ENV;
use serde_json::{Value, json};

use crate::common::*;
use crate::schedule::free_port;

both_backends!(
    every_seed_case_answers_its_code_message_headers_and_rows,
    fifty_concurrent_requests_for_one_card_give_one_application_and_one_debit,
    an_idempotency_key_replays_the_first_answer_and_refuses_another_body,
    bad_input_gets_the_documented_answers_and_writes_nothing,
    the_api_racing_a_batch_run_on_one_card_gives_one_application_in_both_orders,
);

pub const KEY: &str = "0123456789abcdef0123";
const PATH: &str = "/api/v1/prepay-card/expired/reissue";
/// The demo's showcase: card id -> the outcome it trips (src/demo.rs).
const SUCCESS_FREE: i64 = 1;
const SUCCESS_FEE: i64 = 2;

/// Today's business date (the API's as-of) in the demo's zone.
pub fn today() -> String {
    Utc::now().with_timezone(&chrono_tz::Asia::Seoul).date_naive().to_string()
}

/// A seeded database (as-of today) with `serve` on it.
pub struct Served {
    pub db: TestDb,
    pub worker: Spawned,
    pub base: String,
    pub metrics: u16,
}

pub fn serve(db: TestDb, tune: impl FnOnce(&mut std::process::Command)) -> Served {
    let (port, metrics) = (free_port(), free_port());
    let mut cmd = db.command(&["serve"]);
    cmd.env("RENEWAL__API__KEYS", format!("tester:{KEY},other:fedcba9876543210fedc"))
        .env("RENEWAL__API__LISTEN", format!("127.0.0.1:{port}"))
        .env("RENEWAL__METRICS__LISTEN", format!("127.0.0.1:{metrics}"));
    tune(&mut cmd);
    let worker = Spawned::start(&mut cmd);
    worker.wait_for_line("\"what\":\"api\"", Duration::from_secs(30));
    Served { db, worker, base: format!("http://127.0.0.1:{port}"), metrics }
}

pub fn seeded(kind: Kind, cards: u64) -> TestDb {
    let db = TestDb::of(kind);
    db.ok(&["seed-demo", "--cards", &cards.to_string(), "--seed", "7", "--as-of", &today()]);
    db
}

/// (card number, member id) of a card.
pub async fn card(db: &TestDb, id: i64) -> (String, i64) {
    sqlx::query_as("SELECT card_no, member_id FROM card WHERE id = $1")
        .bind(id)
        .fetch_one(&db.pool().await)
        .await
        .unwrap()
}

pub fn body(user_id: i64, card_no: &str) -> Value {
    json!({
        "userInfo": {"userId": user_id},
        "cardInfo": {"oldCardNo": card_no},
        "addressInfo": {"address": "77 Teheran-ro, Seoul", "addressDetail": "5F", "zipCode": "06164"}
    })
}

pub async fn post(base: &str, body: &Value, headers: &[(&str, &str)]) -> (u16, reqwest::header::HeaderMap, Value) {
    let mut request = reqwest::Client::new().post(format!("{base}{PATH}")).header("X-Api-Key", KEY).json(body);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = request.send().await.expect("an answer");
    let (status, headers) = (response.status().as_u16(), response.headers().clone());
    let text = response.text().await.unwrap();
    (status, headers, serde_json::from_str(&text).unwrap_or_else(|_| panic!("a JSON body: {text:?}")))
}

/// What the request wrote for a card: applications, debits, marked, and its API result rows.
async fn effects(db: &TestDb, card_id: i64) -> (i64, i64, bool, Vec<(Option<i64>, String, String, String)>) {
    let pool = db.pool().await;
    let (apps, debits) = applications_and_debits(db, card_id).await;
    let marked: i64 = sqlx::query_scalar(
        "SELECT CAST(CASE WHEN replaced_by_application_id IS NULL THEN 0 ELSE 1 END AS BIGINT) FROM card WHERE id = $1",
    )
    .bind(card_id)
    .fetch_one(&pool)
    .await
    .unwrap();
    let marked = marked == 1;
    let results = sqlx::query_as(
        "SELECT run_id, trigger, code, correlation_id FROM result WHERE card_id = $1 AND trigger = 'api' ORDER BY id",
    )
    .bind(card_id)
    .fetch_all(&pool)
    .await
    .unwrap();
    (apps, debits, marked, results)
}

fn correlation_ok(id: &str) -> bool {
    regex::Regex::new(r"^\d{12}-[0-9a-f]{7}$").unwrap().is_match(id)
}

async fn every_seed_case_answers_its_code_message_headers_and_rows(kind: Kind) {
    let served = serve(seeded(kind, 200), |_| {});
    let db = &served.db;
    let crypto = "0123456789abcdef0123456789abcdef";
    // (card id, status, code, message, writes a result row)
    let cases: [(i64, u16, &str, &str, bool); 11] = [
        (SUCCESS_FREE, 200, "000_000", "Success", true),
        (SUCCESS_FEE, 200, "000_000", "Success", true),
        (3, 400, "000_002", "Invalid input parameter. cardInfo.oldCardNo", false),
        (5, 400, "001_006", "Wallet user not found.", false),
        (6, 400, "003_004", "Card issue status is not allowed to reissue", true),
        (7, 400, "003_005", "Card status is not active or suspended", true),
        (8, 400, "003_006", "Card expiry date is not proper to reissue.", true),
        (9, 400, "003_007", "User name not found error", true),
        (10, 400, "003_008", "Par not found from cardNo.", true),
        (12, 400, "003_009", "Not valid product for card issue type", true),
        (13, 400, "003_010", "Card reissue cost pay fail", true),
    ];
    for (id, status, code, message, recorded) in cases {
        let (card_no, member) = card(db, id).await;
        let before = effects(db, id).await;
        let (got, headers, answer) =
            post(&served.base, &body(member, &card_no), &[("X-KM-Crypto-Key-Id", crypto)]).await;
        assert_eq!(
            (got, answer["code"].as_str(), answer["message"].as_str()),
            (status, Some(code), Some(message)),
            "card {id}: {answer}"
        );
        let correlation = headers["x-km-correlation-id"].to_str().unwrap().to_owned();
        assert!(correlation_ok(&correlation), "card {id}: {correlation}");
        assert_eq!(headers["x-km-crypto-key-id"], crypto, "echoed");
        let (apps, debits, marked, results) = effects(db, id).await;
        if status == 200 {
            let no = answer["cardApplyNo"].as_str().expect("a cardApplyNo");
            assert_eq!(no.len(), 22);
            assert_eq!(&no[..6], &today().replace('-', "")[2..], "YYMMDD of the business date");
            assert_eq!((apps, marked), (before.0 + 1, true), "card {id}: one application, the card marked");
            let fee_debits = if id == SUCCESS_FEE { 1 } else { 0 };
            assert_eq!(debits, before.1 + fee_debits, "card {id}: the fee debited once where the product has one");
            let delivered: (String, String, String) = sqlx::query_as(
                "SELECT delivery_address, delivery_address_detail, delivery_zip_code FROM card_application \
                 WHERE old_card_id = $1 AND card_apply_no = $2",
            )
            .bind(id)
            .bind(no)
            .fetch_one(&db.pool().await)
            .await
            .unwrap();
            assert_eq!(
                delivered,
                ("77 Teheran-ro, Seoul".into(), "5F".into(), "06164".into()),
                "the request's address"
            );
        } else {
            assert!(answer.get("cardApplyNo").is_none());
            assert_eq!(
                (apps, debits, marked),
                (before.0, before.1, before.2),
                "card {id}: nothing reissued or charged"
            );
        }
        if recorded {
            assert_eq!(results.len(), before.3.len() + 1, "card {id}: one API result row");
            let last = results.last().unwrap();
            assert_eq!((last.0, last.1.as_str(), last.2.as_str()), (None, "api", code), "card {id}: no run row");
            assert_eq!(last.3, correlation, "card {id}: the header's correlation id is the row's");
        } else {
            assert_eq!(results.len(), before.3.len(), "card {id}: refused before its card: no result row");
        }
    }
    // Not the member's card: the same answer as a malformed number (nothing revealed).
    let (someone_elses, _) = card(db, 20).await;
    let (_, member_1) = card(db, 1).await;
    let (status, _, answer) = post(&served.base, &body(member_1, &someone_elses), &[]).await;
    assert_eq!((status, answer["code"].as_str()), (400, Some("000_002")));
    assert_eq!(answer["message"], "Invalid input parameter. cardInfo.oldCardNo");
    // A member that does not exist.
    let (status, _, answer) = post(&served.base, &body(999_999, &someone_elses), &[]).await;
    assert_eq!((status, answer["code"].as_str()), (400, Some("001_006")));
    // No run row was written by any of it; the batch still evaluates the refused cards tonight.
    assert_eq!(scalar(db, "SELECT count(*) FROM run").await, 0);
    let out = db.ok(&["run", "--as-of", &today()]);
    assert!(out.contains("status completed"), "{out}");
    let batch_on_7: i64 = scalar(db, "SELECT count(*) FROM result WHERE card_id = 7 AND trigger = 'run'").await;
    assert_eq!(batch_on_7, 1, "an API result never makes the batch skip a card");
    let report = db.ok(&["report"]);
    assert!(
        report.contains(&format!("api as-of {}: 000_000 2 (fee 3000)", today())),
        "API renewals per business date: {report}"
    );
    // A metric per answer.
    let metrics =
        reqwest::get(format!("http://127.0.0.1:{}/metrics", served.metrics)).await.unwrap().text().await.unwrap();
    let line = metrics
        .lines()
        .find(|l| l.starts_with("renewal_api_requests_total") && l.contains("code=\"000_000\""))
        .unwrap();
    assert!(line.ends_with(" 2"), "{line}");
}

async fn fifty_concurrent_requests_for_one_card_give_one_application_and_one_debit(kind: Kind) {
    let served = serve(seeded(kind, 200), |_| {});
    let (card_no, member) = card(&served.db, SUCCESS_FEE).await;
    let request = body(member, &card_no);
    let answers = futures_join(50, |_| {
        let (base, request) = (served.base.clone(), request.clone());
        async move { post(&base, &request, &[]).await }
    })
    .await;
    let mut codes: Vec<&str> = answers.iter().map(|(_, _, a)| a["code"].as_str().unwrap()).collect();
    codes.sort();
    assert_eq!(codes.iter().filter(|c| **c == "000_000").count(), 1, "{codes:?}");
    assert_eq!(codes.iter().filter(|c| **c == "003_004").count(), 49, "{codes:?}");
    assert_eq!(applications_and_debits(&served.db, SUCCESS_FEE).await, (1, 1));
}

/// Runs `n` futures at once and collects their outputs.
pub async fn futures_join<F, Fut, T>(n: usize, make: F) -> Vec<T>
where
    F: Fn(usize) -> Fut,
    Fut: std::future::Future<Output = T> + Send + 'static,
    T: Send + 'static,
{
    let tasks: Vec<_> = (0..n).map(|i| tokio::spawn(make(i))).collect();
    let mut out = Vec::with_capacity(n);
    for task in tasks {
        out.push(task.await.expect("a request task"));
    }
    out
}

async fn an_idempotency_key_replays_the_first_answer_and_refuses_another_body(kind: Kind) {
    let served = serve(seeded(kind, 200), |_| {});
    let (card_no, member) = card(&served.db, SUCCESS_FEE).await;
    let request = body(member, &card_no);
    let answers = futures_join(20, |_| {
        let (base, request) = (served.base.clone(), request.clone());
        async move { post(&base, &request, &[("Idempotency-Key", "retry-1")]).await }
    })
    .await;
    let first = &answers[0];
    assert_eq!(first.0, 200, "{}", first.2);
    for (status, headers, answer) in &answers {
        assert_eq!((status, answer), (&first.0, &first.2), "20 identical answers");
        assert_eq!(headers["x-km-correlation-id"], first.1["x-km-correlation-id"]);
    }
    assert_eq!(applications_and_debits(&served.db, SUCCESS_FEE).await, (1, 1), "one charge");
    // The same key with another body (key order and spacing do not count as another body).
    let reordered = json!({"addressInfo": request["addressInfo"], "cardInfo": request["cardInfo"], "userInfo": request["userInfo"]});
    let (status, _, again) = post(&served.base, &reordered, &[("Idempotency-Key", "retry-1")]).await;
    assert_eq!((status, &again), (200, &first.2), "the same canonical body replays");
    let mut other = request.clone();
    other["addressInfo"]["zipCode"] = json!("06165");
    let (status, _, answer) = post(&served.base, &other, &[("Idempotency-Key", "retry-1")]).await;
    assert_eq!((status, answer["code"].as_str()), (422, Some("900_422")));
    // Keys are per calling API key: another key's "retry-1" is its own request (003_004 now).
    let response = reqwest::Client::new()
        .post(format!("{}{PATH}", served.base))
        .header("X-Api-Key", "fedcba9876543210fedc")
        .header("Idempotency-Key", "retry-1")
        .json(&request)
        .send()
        .await
        .unwrap();
    let answer: Value = response.json().await.unwrap();
    assert_eq!(answer["code"], "003_004");
    // Without a key, a retry learns 003_004: the key is what makes retries safe.
    let (_, _, plain) = post(&served.base, &request, &[]).await;
    assert_eq!(plain["code"], "003_004");
    // prune removes expired keys only.
    let out = served.db.ok(&["prune"]);
    assert!(out.contains("deleted 0 expired idempotency keys"), "{out}");
}

async fn bad_input_gets_the_documented_answers_and_writes_nothing(kind: Kind) {
    let served = serve(seeded(kind, 200), |_| {});
    let (card_no, member) = card(&served.db, SUCCESS_FREE).await;
    let before = dump(&served.db).await;
    let url = format!("{}{PATH}", served.base);
    let client = reqwest::Client::new();
    let raw = |payload: &'static str, content_type: &'static str| {
        client.post(&url).header("X-Api-Key", KEY).header("Content-Type", content_type).body(payload).send()
    };
    let check = |response: reqwest::Response, status: u16, code: &'static str, message: &'static str| async move {
        assert_eq!(response.status().as_u16(), status);
        assert!(response.headers()["content-type"].to_str().unwrap().starts_with("application/json"));
        let answer: Value = response.json().await.unwrap();
        assert_eq!((answer["code"].as_str(), answer["message"].as_str()), (Some(code), Some(message)), "{answer}");
    };
    check(raw("{not json", "application/json").await.unwrap(), 400, "000_002", "Invalid input parameter. body").await;
    check(raw("[]", "application/json").await.unwrap(), 400, "000_002", "Invalid input parameter. body").await;
    check(raw("{}", "text/plain").await.unwrap(), 400, "000_002", "Invalid input parameter. body").await;
    let wrong_type = r#"{"userInfo":{"userId":"7"},"cardInfo":{"oldCardNo":"1"},"addressInfo":{}}"#;
    check(
        raw(wrong_type, "application/json").await.unwrap(),
        400,
        "000_002",
        "Invalid input parameter. userInfo.userId",
    )
    .await;
    // The answer, never a reset connection: an oversized body is read and dropped first.
    for size in [20_000, 100_000, 1_000_000, 100_000, 20_000] {
        let huge = Box::leak("x".repeat(size).into_boxed_str());
        check(raw(huge, "application/json").await.unwrap(), 413, "900_413", "Request body too large").await;
    }
    let no_key = client.post(&url).json(&body(member, &card_no)).send().await.unwrap();
    check(no_key, 401, "900_401", "API key missing or not valid").await;
    let bad_key = client
        .post(&url)
        .header("X-Api-Key", "0123456789abcdef0124")
        .json(&body(member, &card_no))
        .send()
        .await
        .unwrap();
    check(bad_key, 401, "900_401", "API key missing or not valid").await;
    let crypto = client
        .post(&url)
        .header("X-Api-Key", KEY)
        .header("X-KM-Crypto-Key-Id", "short")
        .json(&body(member, &card_no))
        .send()
        .await
        .unwrap();
    check(crypto, 400, "000_002", "Invalid input parameter. X-KM-Crypto-Key-Id").await;
    check(client.get(&url).send().await.unwrap(), 405, "900_405", "Method not allowed").await;
    check(client.post(format!("{}/nope", served.base)).send().await.unwrap(), 404, "900_404", "No such endpoint").await;
    assert_eq!(dump(&served.db).await, before, "nothing written");
    // Unknown fields are ignored.
    let mut extra = body(member, &card_no);
    extra["extra"] = json!({"anything": [1, 2]});
    let (status, _, answer) = post(&served.base, &extra, &[]).await;
    assert_eq!((status, answer["code"].as_str()), (200, Some("000_000")));
    // Keys never reach the log.
    let log = served.worker.log.lock().unwrap().join("\n");
    assert!(!log.contains(KEY) && !log.contains("fedcba9876543210fedc"));
    assert!(!log.contains(&card_no), "card numbers are masked");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_refuses_to_start_without_a_key_and_api_paused_answers_503() {
    let db = seeded(Kind::Sqlite, 50);
    let out = db.command(&["serve"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.starts_with("error: api.keys is empty"), "{stderr}");
    let served = serve(db, |cmd| {
        cmd.env("RENEWAL__API__PAUSED", "true");
    });
    let (card_no, member) = card(&served.db, SUCCESS_FREE).await;
    let (status, headers, answer) = post(&served.base, &body(member, &card_no), &[]).await;
    assert_eq!((status, answer["code"].as_str()), (503, Some("900_503")));
    assert_eq!(headers["retry-after"], "1");
    assert_eq!(applications_and_debits(&served.db, SUCCESS_FREE).await, (0, 0));
}

async fn the_api_racing_a_batch_run_on_one_card_gives_one_application_in_both_orders(kind: Kind) {
    // API first, then the batch: the batch skips the card (its application).
    let served = serve(seeded(kind, 200), |_| {});
    let (card_no, member) = card(&served.db, SUCCESS_FEE).await;
    let (status, _, _) = post(&served.base, &body(member, &card_no), &[]).await;
    assert_eq!(status, 200);
    served.db.ok(&["run", "--as-of", &today()]);
    assert_eq!(applications_and_debits(&served.db, SUCCESS_FEE).await, (1, 1));

    // The batch first, held at its commit; the API request waits for it and learns 003_004.
    let served = serve(seeded(kind, 200), |_| {});
    let (card_no, member) = card(&served.db, SUCCESS_FEE).await;
    let release = served.db.dir.path().join("release");
    let mut batch = Spawned::start(
        served
            .db
            .command(&["run", "--as-of", &today()])
            .env(PAUSE_ENV, "before_commit:1")
            .env(renewal_worker::RELEASE_ENV, &release),
    );
    batch.wait_for_line(renewal_worker::PAUSED_MARKER, Duration::from_secs(30));
    let base = served.base.clone();
    let request = body(member, &card_no);
    let api = tokio::spawn(async move { post(&base, &request, &[]).await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    std::fs::write(&release, b"go").unwrap();
    assert_eq!(batch.wait(Duration::from_secs(30)), Some(0));
    let (status, _, answer) = api.await.unwrap();
    assert_eq!((status, answer["code"].as_str()), (400, Some("003_004")), "{answer}");
    assert_eq!(applications_and_debits(&served.db, SUCCESS_FEE).await, (1, 1));
}

/// PostgreSQL: the API's member lookup takes the member's wallet lock, as the batch's pages and
/// the single-card path do, so a request waits for a chunk that holds its member (and then reads
/// the card as that chunk left it) instead of evaluating it beside the chunk.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_postgres_the_members_lookup_waits_for_the_wallet_lock() {
    if !postgres_available() {
        return;
    }
    let served = serve(seeded(Kind::Postgres, 200), |_| {});
    let (card_no, member) = card(&served.db, SUCCESS_FEE).await;
    let (pool, holding) = (served.db.pool().await, served.db.pool().await);
    let mut holder = holding.begin().await.unwrap();
    sqlx::query("SELECT member_id FROM wallet WHERE member_id = $1 FOR UPDATE")
        .bind(member)
        .execute(&mut *holder)
        .await
        .unwrap();
    let base = served.base.clone();
    let request = body(member, &card_no);
    let api = tokio::spawn(async move { post(&base, &request, &[]).await });
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let waiting = loop {
        let waiting: Option<String> = sqlx::query_scalar(
            "SELECT query FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND datname = current_database() LIMIT 1",
        )
        .fetch_optional(&pool)
        .await
        .unwrap();
        if let Some(query) = waiting {
            break query;
        }
        assert!(std::time::Instant::now() < deadline, "no request waited for the held wallet");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(waiting.contains("FROM member m"), "the lookup itself waits: {waiting}");
    assert!(!api.is_finished());
    holder.commit().await.unwrap();
    let (status, _, answer) = api.await.unwrap();
    assert_eq!((status, answer["code"].as_str()), (200, Some("000_000")), "{answer}");
    assert_eq!(applications_and_debits(&served.db, SUCCESS_FEE).await, (1, 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_under_load_finishes_the_requests_in_flight_and_exits_0() {
    let mut served = serve(seeded(Kind::Sqlite, 400), |_| {});
    let ids: Vec<(String, i64)> =
        sqlx::query_as("SELECT card_no, member_id FROM card WHERE id > 13 ORDER BY id LIMIT 40")
            .fetch_all(&served.db.pool().await)
            .await
            .unwrap();
    let base = served.base.clone();
    let requests: Vec<_> = ids
        .into_iter()
        .map(|(card_no, member)| {
            let base = base.clone();
            tokio::spawn(async move {
                reqwest::Client::new()
                    .post(format!("{base}{PATH}"))
                    .header("X-Api-Key", KEY)
                    .json(&body(member, &card_no))
                    .send()
                    .await
                    .map(|r| r.status().as_u16())
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(30)).await;
    served.worker.terminate();
    let mut answered = 0;
    for request in requests {
        match request.await.unwrap() {
            Ok(status) => {
                assert!(status == 200 || status == 400, "a request in flight completes: {status}");
                answered += 1;
            }
            Err(e) => assert!(e.is_connect() || e.is_request(), "refused, not broken: {e}"),
        }
    }
    assert!(answered > 0);
    assert_eq!(served.worker.wait(Duration::from_secs(30)), Some(0), "serve exits 0 after SIGTERM");
    let pool = served.db.pool().await;
    let (results, applied): (i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM result WHERE trigger = 'api' AND code = '000_000'), \
                (SELECT count(*) FROM card_application a JOIN card c ON c.replaced_by_application_id = a.id \
                  WHERE c.id > 13)",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(results, applied, "every reissue whole: result, application and mark together");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openapi_document_lists_every_status_and_code_with_code_and_message_required() {
    let served = serve(seeded(Kind::Sqlite, 50), |_| {});
    let doc: Value = reqwest::get(format!("{}/openapi.json", served.base)).await.unwrap().json().await.unwrap();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    let op = &doc["paths"][PATH]["post"];
    let mut statuses: Vec<u16> = op["responses"].as_object().unwrap().keys().map(|k| k.parse().unwrap()).collect();
    statuses.sort();
    let mut want: Vec<u16> = renewal_worker::api::answer::Own::ALL.iter().map(|o| o.status().as_u16()).collect();
    want.extend([200, 400]);
    // 404 and 405 answer other paths and methods, not this operation.
    want.retain(|s| *s != 404 && *s != 405);
    want.sort();
    want.dedup();
    assert_eq!(statuses, want, "every status the operation can answer is documented");
    let failure = &doc["components"]["schemas"]["Failure"];
    let required: Vec<&str> = failure["required"].as_array().unwrap().iter().filter_map(Value::as_str).collect();
    assert_eq!(required, ["code", "message"]);
    let codes: Vec<&str> =
        failure["properties"]["code"]["enum"].as_array().unwrap().iter().filter_map(Value::as_str).collect();
    for code in [
        "000_002", "001_006", "003_004", "003_005", "003_006", "003_007", "003_008", "003_009", "003_010", "900_001",
        "900_401", "900_503", "900_504",
    ] {
        assert!(codes.contains(&code), "{code} enumerated: {codes:?}");
    }
    let success = &doc["components"]["schemas"]["Success"];
    let required: Vec<&str> = success["required"].as_array().unwrap().iter().filter_map(Value::as_str).collect();
    assert_eq!(required, ["code", "message", "cardApplyNo"]);
    assert!(doc["components"]["securitySchemes"]["api_key"]["name"] == "X-Api-Key");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_fee_outcome_is_503_and_a_repeat_after_the_batch_settles_it_returns_the_outcome() {
    use crate::fee_server::{Fault, FeeServer};
    let db = seeded(Kind::Sqlite, 200);
    let balances: Vec<(i64, i64)> =
        sqlx::query_as("SELECT member_id, balance FROM wallet").fetch_all(&db.pool().await).await.unwrap();
    let server = FeeServer::start(balances.into_iter().collect(), Duration::from_millis(1));
    // The first request of each key is charged, then answered too late: its outcome is unknown.
    server.fail_each_key_first(vec![Fault::SlowAfterCharge(Duration::from_millis(800))]);
    let db = db
        .with_env("RENEWAL__FEES__MODE", "http")
        .with_env("RENEWAL__FEES__HTTP__URL", &server.url())
        .with_env("RENEWAL__FEES__HTTP__REQUEST_TIMEOUT_MS", "200")
        .with_env("RENEWAL__FEES__HTTP__MAX_RETRIES", "0");
    let served = serve(db, |_| {});
    let (card_no, member) = card(&served.db, SUCCESS_FEE).await;
    let request = body(member, &card_no);
    let key = [("Idempotency-Key", "pay-1")];
    let (status, headers, answer) = post(&served.base, &request, &key).await;
    assert_eq!((status, answer["code"].as_str()), (503, Some("900_504")), "{answer}");
    assert_eq!(headers["retry-after"], "30");
    let (status, _, again) = post(&served.base, &request, &key).await;
    assert_eq!((status, again["code"].as_str()), (503, Some("900_504")), "still unknown: not stored, not rerun");
    // A run leaves an API reservation to its request for 10 minutes...
    served.db.ok(&["run", "--as-of", &today()]);
    let (status, _, still) = post(&served.base, &request, &key).await;
    assert_eq!((status, still["code"].as_str()), (503, Some("900_504")), "not settled by a run yet");
    // ...then settles it with the same idempotency key toward the fee service.
    sqlx::query("UPDATE card_application SET created_at = '2000-01-01T00:00:00.000000Z' WHERE payment_state = 'PENDING_PAYMENT'")
        .execute(&served.db.pool().await)
        .await
        .unwrap();
    served.db.ok(&["run", "--as-of", &today()]);
    let (status, headers, settled) = post(&served.base, &request, &key).await;
    assert_eq!((status, settled["code"].as_str()), (200, Some("000_000")), "{settled}");
    let number: String = sqlx::query_scalar("SELECT card_apply_no FROM card_application WHERE old_card_id = $1")
        .bind(SUCCESS_FEE)
        .fetch_one(&served.db.pool().await)
        .await
        .unwrap();
    assert_eq!(settled["cardApplyNo"], number.as_str());
    assert!(correlation_ok(headers["x-km-correlation-id"].to_str().unwrap()));
    // From now on it is the stored answer.
    let (status, _, replay) = post(&served.base, &request, &key).await;
    assert_eq!((status, &replay), (200, &settled));
    server.assert_no_card_charged_twice();
    assert_eq!(server.ledger().charged_cards.get(&SUCCESS_FEE), Some(&1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rate_limited_key_gets_429_and_a_timed_out_request_still_completes() {
    let served = serve(seeded(Kind::Sqlite, 100), |cmd| {
        cmd.env("RENEWAL__API__RATE_LIMIT_PER_SECOND", "1");
    });
    let (card_no, member) = card(&served.db, SUCCESS_FREE).await;
    let (first, _, _) = post(&served.base, &body(member, &card_no), &[]).await;
    let (second, headers, answer) = post(&served.base, &body(member, &card_no), &[]).await;
    assert_eq!((first, second, answer["code"].as_str()), (200, 429, Some("900_429")));
    assert!(headers["retry-after"].to_str().unwrap().parse::<u64>().unwrap() >= 1);

    use crate::fee_server::{Fault, FeeServer};
    let db = seeded(Kind::Sqlite, 100);
    let balances: Vec<(i64, i64)> =
        sqlx::query_as("SELECT member_id, balance FROM wallet").fetch_all(&db.pool().await).await.unwrap();
    let server = FeeServer::start(balances.into_iter().collect(), Duration::from_millis(1));
    server.fail_each_key_first(vec![Fault::SlowAfterCharge(Duration::from_millis(1500))]);
    let db = db.with_env("RENEWAL__FEES__MODE", "http").with_env("RENEWAL__FEES__HTTP__URL", &server.url());
    let served = serve(db, |cmd| {
        cmd.env("RENEWAL__API__REQUEST_TIMEOUT_MS", "300");
    });
    let (card_no, member) = card(&served.db, SUCCESS_FEE).await;
    let (status, _, answer) = post(&served.base, &body(member, &card_no), &[]).await;
    assert_eq!((status, answer["code"].as_str()), (408, Some("900_408")), "{answer}");
    // The reissue went on without the client: charged once, applied, recorded.
    crate::schedule::eventually("the reissue completes", Duration::from_secs(30), || async {
        scalar(&served.db, "SELECT count(*) FROM result WHERE trigger = 'api' AND code = '000_000'").await == 1
    })
    .await;
    server.assert_no_card_charged_twice();
}
