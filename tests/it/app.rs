//! The reissue-one-card operation called in-process, as zero2prod's tests call the unit of work:
//! a fresh database per test, the real store, an `App` built once, one card per outcome code,
//! the returned value and the rows written checked; and the fee client's breaker cool-down.

use std::collections::BTreeMap;
use std::time::Duration;

use renewal_worker::app::{Backend, open};
use renewal_worker::batch::ReissueOutcome;
use renewal_worker::config::Settings;
use renewal_worker::domain::address::DeliveryAddress;
use renewal_worker::fees::http::{ChargeOutcome, ChargeRequest, HttpCharger};
use renewal_worker::store::Trigger;
use renewal_worker::store::sqlite::Create;
use renewal_worker::worker::{App, ReissueRequest, Shutdown};

use crate::common::*;
use crate::run::{eligible_fee_card, oracle};

both_backends!(
    the_reissue_operation_returns_each_outcome_and_writes_its_rows,
    a_delivery_address_replaces_the_registered_one
);

/// The settings a process would load for `db`: the repository's config files, `db`'s URL.
fn settings_for(db: &TestDb) -> Settings {
    let mut settings = Settings::load(Some(&config_dir())).expect("the repository's configuration loads");
    settings.database.url = db.url();
    settings
}

/// Runs `$body` with `$app` bound to an `App` on `$db`'s store, whichever engine it is.
macro_rules! with_app {
    ($db:expr, $app:ident => $body:expr) => {{
        let settings = settings_for($db);
        match open(&settings, Create::Never).await.expect("open the test database") {
            Backend::Sqlite(store) => {
                let $app = App::new(store, settings).expect("build the app");
                $body
            }
            Backend::Postgres(store) => {
                let $app = App::new(store, settings).expect("build the app");
                $body
            }
        }
    }};
}

fn as_of(days_before: i64) -> chrono::NaiveDate {
    chrono::NaiveDate::parse_from_str(AS_OF, "%Y-%m-%d").unwrap() - chrono::Duration::days(days_before)
}

fn request(card_no: &str, days_before: i64, delivery: Option<DeliveryAddress>) -> ReissueRequest {
    ReissueRequest { card_no: card_no.to_owned(), as_of: as_of(days_before), trigger: Trigger::Manual, delivery }
}

async fn card_no_of(db: &TestDb, card: i64) -> String {
    sqlx::query_scalar("SELECT card_no FROM card WHERE id = $1").bind(card).fetch_one(&db.pool().await).await.unwrap()
}

/// The seed's verbatim messages (DESIGN §2), kept here as a literal copy.
fn message(code: &str) -> &'static str {
    match code {
        "000_000" => "Success",
        "001_006" => "Wallet user not found.",
        "003_004" => "Card issue status is not allowed to reissue",
        "003_005" => "Card status is not active or suspended",
        "003_006" => "Card expiry date is not proper to reissue.",
        "003_007" => "User name not found error",
        "003_008" => "Par not found from cardNo.",
        "003_009" => "Not valid product for card issue type",
        "003_010" => "Card reissue cost pay fail",
        _ => panic!("no fixed message for {code}"),
    }
}

async fn result_of(
    db: &TestDb,
    card: i64,
    as_of: chrono::NaiveDate,
) -> Vec<(String, String, i64, Option<String>, String)> {
    sqlx::query_as(
        "SELECT r.code, r.message, r.fee, r.card_apply_no, r.correlation_id FROM result r \
         WHERE r.card_id = $1 AND CAST(r.as_of AS TEXT) = $2 ORDER BY r.id",
    )
    .bind(card)
    .bind(as_of.to_string())
    .fetch_all(&db.pool().await)
    .await
    .unwrap()
}

fn check_returned(outcome: &ReissueOutcome, card_no: &str, code: &str) {
    assert_eq!(outcome.code, Some(code), "{outcome:?}");
    assert_eq!(outcome.card, format!("{}******{}", &card_no[..6], &card_no[12..]));
    let corr = regex::Regex::new(r"^\d{12}-[0-9a-f]{7}$").unwrap();
    assert!(corr.is_match(&outcome.correlation_id), "{}", outcome.correlation_id);
    assert!(!outcome.fee_pending);
    assert_eq!(outcome.card_apply_no.is_some(), code == "000_000", "{outcome:?}");
}

async fn the_reissue_operation_returns_each_outcome_and_writes_its_rows(kind: Kind) {
    let db = TestDb::of(kind);
    db.seed(1500);
    let expected = oracle(&db).await;
    let pool = db.pool().await;
    // One card per code the in-window oracle yields; 003_010 where the balance alone is short.
    let mut cases: BTreeMap<String, i64> = BTreeMap::new();
    for (card, (code, _)) in &expected {
        if code == "003_010" {
            let short: i64 = sqlx::query_scalar(
                "SELECT CASE WHEN w.balance < p.reissue_fee THEN 1 ELSE 0 END FROM card c JOIN wallet w ON w.member_id = c.member_id \
                 JOIN card_product p ON p.id = c.product_id WHERE c.id = $1",
            )
            .bind(*card)
            .fetch_one(&pool)
            .await
            .unwrap();
            if short == 0 {
                continue;
            }
        }
        if code != "000_000" && code != "000_002" {
            cases.entry(code.clone()).or_insert(*card);
        }
    }
    let (success, _) = eligible_fee_card(&db, &expected).await;
    // A 000_002 card whose number has 16 digits (Luhn or the address fails): `run --card` reads it.
    let mut invalid = None;
    for card in expected.iter().filter(|(_, (c, _))| c == "000_002").map(|(card, _)| *card) {
        let number = card_no_of(&db, card).await;
        if number.len() == 16 && number.bytes().all(|b| b.is_ascii_digit()) {
            invalid = Some(number);
            break;
        }
    }
    let invalid = invalid.expect("a 000_002 card with a 16-digit number");
    for code in ["001_006", "003_005", "003_007", "003_008", "003_009", "003_010"] {
        assert!(cases.contains_key(code), "the demo data has a {code} card: {cases:?}");
    }
    let already: String = sqlx::query_scalar(
        "SELECT c.card_no FROM card c JOIN card_application a ON a.id = c.replaced_by_application_id \
         WHERE a.run_id IS NULL ORDER BY c.id LIMIT 1",
    )
    .fetch_one(&pool)
    .await
    .unwrap();

    with_app!(&db, app => {
        let shutdown = Shutdown::new();
        for (code, card) in &cases {
            let card_no = card_no_of(&db, *card).await;
            let outcome = app.reissue_card(request(&card_no, 0, None), shutdown.clone()).await.expect("reissue");
            check_returned(&outcome, &card_no, code);
            assert_eq!(outcome.message.as_deref(), Some(message(code)));
            assert_eq!(outcome.fee, 0);
            let rows = result_of(&db, *card, as_of(0)).await;
            assert_eq!(rows.len(), 1, "one result row for card {card}");
            assert_eq!((rows[0].0.as_str(), rows[0].1.as_str(), rows[0].2), (code.as_str(), message(code), 0));
            assert_eq!(rows[0].4, outcome.correlation_id);
            assert_eq!(applications_and_debits(&db, *card).await, (0, 0), "{code}: nothing claimed");
        }
        // 000_002, naming the field.
        let outcome = app.reissue_card(request(&invalid, 0, None), shutdown.clone()).await.expect("reissue");
        check_returned(&outcome, &invalid, "000_002");
        let named = ["cardInfo.oldCardNo", "addressInfo.address", "addressInfo.addressDetail", "addressInfo.zipCode"]
            .map(|f| format!("Invalid input parameter. {f}"));
        assert!(named.iter().any(|m| outcome.message.as_deref() == Some(m.as_str())), "{outcome:?}");
        // 003_006: the renewable card, asked 90 days too early.
        let card_no = card_no_of(&db, success).await;
        let early = app.reissue_card(request(&card_no, 90, None), shutdown.clone()).await.expect("reissue");
        check_returned(&early, &card_no, "003_006");
        assert_eq!(early.message.as_deref(), Some(message("003_006")));
        assert_eq!(applications_and_debits(&db, success).await, (0, 0));
        // 000_000: one application, one debit, the returned number is the stored one.
        let done = app.reissue_card(request(&card_no, 0, None), shutdown.clone()).await.expect("reissue");
        check_returned(&done, &card_no, "000_000");
        assert_eq!(done.message.as_deref(), Some("Success"));
        assert!(done.fee > 0);
        let (stored, fee, address): (String, i64, String) = sqlx::query_as(
            "SELECT card_apply_no, fee, delivery_address FROM card_application WHERE old_card_id = $1",
        )
        .bind(success)
        .fetch_one(&pool)
        .await
        .unwrap();
        assert_eq!(done.card_apply_no.as_ref().map(|n| n.as_str()), Some(stored.as_str()));
        assert_eq!(fee, done.fee);
        assert_eq!(done.delivery.as_ref().map(|d| d.address.as_str()), Some(address.as_str()));
        let rows = result_of(&db, success, as_of(0)).await;
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].3.as_deref(), Some(stored.as_str()));
        assert_eq!(applications_and_debits(&db, success).await, (1, 1));
        // 003_004: the same card again, and a card the seed had already reissued.
        for number in [card_no.as_str(), already.as_str()] {
            let again = app.reissue_card(request(number, 0, None), shutdown.clone()).await.expect("reissue");
            check_returned(&again, number, "003_004");
            assert_eq!(again.message.as_deref(), Some(message("003_004")));
        }
        assert_eq!(applications_and_debits(&db, success).await, (1, 1), "never a second application or charge");
    });
    // Every call wrote its own run row (scope card), none left running.
    assert_eq!(running_runs(&db).await, 0);
    assert_eq!(scalar(&db, "SELECT count(*) FROM run WHERE scope <> 'card'").await, 0);
}

async fn a_delivery_address_replaces_the_registered_one(kind: Kind) {
    let db = TestDb::of(kind);
    db.seed(800);
    let expected = oracle(&db).await;
    let renewable: Vec<i64> = expected.iter().filter(|(_, (c, _))| c == "000_000").map(|(card, _)| *card).collect();
    assert!(renewable.len() >= 2);
    let given = DeliveryAddress {
        address: "1 Sejong-daero, Jung-gu".to_owned(),
        address_detail: "Unit 7".to_owned(),
        zip_code: "04524".to_owned(),
    };
    let blank = DeliveryAddress { address: "\u{3000}".to_owned(), ..given.clone() };
    with_app!(&db, app => {
        let card_no = card_no_of(&db, renewable[0]).await;
        let done = app.reissue_card(request(&card_no, 0, Some(given.clone())), Shutdown::new()).await.unwrap();
        assert_eq!(done.code, Some("000_000"), "{done:?}");
        assert_eq!(done.delivery.as_ref(), Some(&given));
        let stored: (String, String, String) = sqlx::query_as(
            "SELECT delivery_address, delivery_address_detail, delivery_zip_code FROM card_application \
             WHERE old_card_id = $1",
        )
        .bind(renewable[0])
        .fetch_one(&db.pool().await)
        .await
        .unwrap();
        assert_eq!(stored, (given.address.clone(), given.address_detail.clone(), given.zip_code.clone()));
        // The replacement is checked like a registered address.
        let card_no = card_no_of(&db, renewable[1]).await;
        let refused = app.reissue_card(request(&card_no, 0, Some(blank.clone())), Shutdown::new()).await.unwrap();
        assert_eq!(refused.code, Some("000_002"));
        assert_eq!(refused.message.as_deref(), Some("Invalid input parameter. addressInfo.address"));
        assert_eq!(refused.delivery, None);
        assert_eq!(applications_and_debits(&db, renewable[1]).await, (0, 0));
    });
}

/// The breaker of the process's fee client opens after `max_consecutive_failures` and closes
/// again after `breaker_cool_down_ms`, so a long-lived process is not stopped for good.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fee_breaker_closes_after_its_cool_down() {
    let mut settings = Settings::load(Some(&config_dir())).unwrap().fees.http;
    // Nothing listens on port 9 here: every charge fails fast, as a transient error.
    settings.url = "http://127.0.0.1:9/charge".to_owned();
    settings.max_retries = 0;
    settings.max_consecutive_failures = 2;
    settings.breaker_cool_down_ms = 400;
    let charger = HttpCharger::new(&settings).unwrap();
    let charge = |card_id| ChargeRequest {
        member_id: 1,
        card_id,
        amount: 1000,
        reference: format!("26112000000000000{card_id}0000"),
        correlation_id: "261120020000-0000001".to_owned(),
    };
    assert!(matches!(charger.charge(&charge(1)).await, ChargeOutcome::Unknown { .. }));
    assert!(!charger.tripped(), "one failure is below the threshold");
    assert!(matches!(charger.charge(&charge(2)).await, ChargeOutcome::Unknown { .. }));
    assert!(charger.tripped(), "two failures in a row open the breaker");
    assert_eq!(charger.charge(&charge(3)).await, ChargeOutcome::NotSent, "nothing is sent while open");
    assert!(charger.stop_reason().await.is_some());
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!charger.tripped(), "closed after the cool-down");
    assert!(charger.stop_reason().await.is_none());
    assert!(matches!(charger.charge(&charge(4)).await, ChargeOutcome::Unknown { .. }), "it tries the service again");
}
