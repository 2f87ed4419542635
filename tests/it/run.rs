//! `seed-demo` then `run`, on both backends from one set of bodies: outcomes against an
//! independent plain-SQL oracle, exactly-once writes, reruns, dry runs, the single-card path,
//! reports, limits, several processes and the index plan.

use std::collections::{BTreeMap, HashMap};

use crate::common::*;

/// The Luhn check as plain SQL over a 16-digit column (positions 1, 3, ..., 15 doubled).
fn luhn_sql(col: &str) -> String {
    let terms: Vec<String> = (1..=16)
        .map(|i| {
            let d = format!("CAST(substr({col}, {i}, 1) AS INTEGER)");
            if i % 2 == 1 { format!("(({d} * 2) % 10 + ({d} * 2) / 10)") } else { d }
        })
        .collect();
    format!("(({}) % 10 = 0)", terms.join(" + "))
}

/// A Luhn check written here, independent of the crate's.
fn luhn_ok(number: &str) -> bool {
    number.len() == 16
        && number.bytes().all(|b| b.is_ascii_digit())
        && number
            .bytes()
            .rev()
            .enumerate()
            .map(|(i, b)| {
                let d = u32::from(b - b'0');
                if i % 2 == 1 { (d * 2) / 10 + (d * 2) % 10 } else { d }
            })
            .sum::<u32>()
            % 10
            == 0
}

/// Expected code per candidate card for `AS_OF`, derived from business columns only, with the
/// fee sequencing (per member, ascending card id, cheaper later cards still tried) done here.
pub async fn oracle(db: &TestDb) -> BTreeMap<i64, (String, i64)> {
    let (digits16, bad_zip, forbids, days_to_end) = match db.kind {
        Kind::Sqlite => (
            "length(c.card_no) = 16 AND c.card_no NOT GLOB '*[^0-9]*'",
            "length(m.zip_code) <> 5 OR m.zip_code GLOB '*[^0-9]*'",
            "p.allows_expiry_reissue = 0",
            "julianday(date(printf('%04d-%02d-01', c.expiry_ym / 100, c.expiry_ym % 100), '+1 month', '-1 day')) \
             - julianday($1)",
        ),
        Kind::Postgres => (
            "c.card_no ~ '^[0-9]{16}$'",
            "m.zip_code !~ '^[0-9]{5}$'",
            "NOT p.allows_expiry_reissue",
            "(make_date(c.expiry_ym / 100, c.expiry_ym % 100, 1) + interval '1 month' - interval '1 day')::date \
             - CAST($1 AS DATE)",
        ),
    };
    let sql = format!(
        "SELECT c.id, c.member_id, p.reissue_fee, w.balance, CASE \
           WHEN NOT ({digits16}) THEN '000_002' \
           WHEN NOT {luhn} THEN '000_002' \
           WHEN m.id IS NULL OR m.status = 'CANCELLED' THEN '001_006' \
           WHEN m.address IS NULL OR trim(m.address) = '' OR length(m.address) > 255 \
             OR m.address_detail IS NULL OR trim(m.address_detail) = '' OR length(m.address_detail) > 255 \
             OR m.zip_code IS NULL OR {bad_zip} THEN '000_002' \
           WHEN c.status NOT IN ('ACTIVE', 'SUSPENDED') THEN '003_005' \
           WHEN m.name IS NULL OR trim(m.name) = '' THEN '003_007' \
           WHEN c.par IS NULL OR c.par = '' OR m.mobile IS NULL OR trim(m.mobile) = '' THEN '003_008' \
           WHEN {forbids} THEN '003_009' \
           ELSE 'PASS' END \
         FROM card c JOIN member m ON m.id = c.member_id JOIN card_product p ON p.id = c.product_id \
         JOIN wallet w ON w.member_id = c.member_id \
         WHERE c.replaced_by_application_id IS NULL AND {days_to_end} BETWEEN 0 AND 30 \
         ORDER BY c.id",
        luhn = luhn_sql("c.card_no")
    );
    let rows: Vec<(i64, i64, i64, i64, String)> =
        sqlx::query_as(sqlx::AssertSqlSafe(sql)).bind(AS_OF).fetch_all(&db.pool().await).await.expect("oracle query");
    let mut left: HashMap<i64, i64> = HashMap::new();
    let mut expected = BTreeMap::new();
    for (card, member, fee, balance, code) in rows {
        let outcome = match code.as_str() {
            "PASS" if fee == 0 => ("000_000".to_owned(), 0),
            "PASS" => {
                let wallet = left.entry(member).or_insert(balance);
                if *wallet >= fee {
                    *wallet -= fee;
                    ("000_000".to_owned(), fee)
                } else {
                    ("003_010".to_owned(), 0)
                }
            }
            _ => (code, 0),
        };
        expected.insert(card, outcome);
    }
    expected
}

/// A card the oracle renews with a fee, and its number.
pub async fn eligible_fee_card(db: &TestDb, expected: &BTreeMap<i64, (String, i64)>) -> (i64, String) {
    let card_id = *expected
        .iter()
        .find(|(_, (code, fee))| code == "000_000" && *fee > 0)
        .map(|(card, _)| card)
        .expect("an eligible fee-bearing card");
    let card_no = sqlx::query_scalar("SELECT card_no FROM card WHERE id = $1")
        .bind(card_id)
        .fetch_one(&db.pool().await)
        .await
        .expect("its card number");
    (card_id, card_no)
}

async fn actual(db: &TestDb) -> BTreeMap<i64, (String, i64)> {
    let rows: Vec<(i64, String, i64)> =
        sqlx::query_as("SELECT card_id, code, fee FROM result WHERE CAST(as_of AS TEXT) = $1 ORDER BY card_id")
            .bind(AS_OF)
            .fetch_all(&db.pool().await)
            .await
            .unwrap();
    let mut out = BTreeMap::new();
    for (card, code, fee) in rows {
        assert!(out.insert(card, (code, fee)).is_none(), "card {card} has two results for the as-of");
    }
    out
}

fn counts(outcomes: &BTreeMap<i64, (String, i64)>) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for (code, _) in outcomes.values() {
        *counts.entry(code.clone()).or_default() += 1;
    }
    counts
}

pub async fn assert_exactly_once(db: &TestDb) {
    let pool = db.pool().await;
    // Every success: one application, one mark pointing at it, one debit equal to the product fee.
    let broken: Vec<(i64, i64, i64, i64)> = sqlx::query_as(
        "SELECT r.card_id, \
                (SELECT count(*) FROM card_application a WHERE a.old_card_id = r.card_id), \
                (SELECT count(*) FROM card c2 JOIN card_application a ON a.id = c2.replaced_by_application_id \
                   WHERE c2.id = r.card_id AND a.card_apply_no = r.card_apply_no), \
                CAST((SELECT coalesce(sum(d.amount), 0) FROM wallet_debit d \
                      JOIN card_application a ON a.id = d.application_id WHERE a.old_card_id = r.card_id) AS BIGINT) \
                  - p.reissue_fee \
         FROM result r JOIN card c ON c.id = r.card_id JOIN card_product p ON p.id = c.product_id \
         WHERE r.code = '000_000'",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert!(!broken.is_empty());
    let bad: Vec<_> = broken.iter().filter(|(_, apps, marks, gap)| *apps != 1 || *marks != 1 || *gap != 0).collect();
    assert!(bad.is_empty(), "successes without exactly one application/mark/debit: {bad:?}");
    let debits_per_app: i64 = scalar(
        db,
        "SELECT CAST(coalesce(max(n), 0) AS BIGINT) FROM (SELECT count(*) AS n FROM wallet_debit GROUP BY application_id) t",
    )
    .await;
    assert!(debits_per_app <= 1);
    assert_eq!(scalar(db, "SELECT count(*) FROM wallet WHERE balance < 0").await, 0);
    // No card the run declined or found ineligible holds an application a run wrote.
    let stray: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM result r JOIN card_application a ON a.old_card_id = r.card_id AND a.run_id IS NOT NULL \
         WHERE CAST(r.as_of AS TEXT) = $1 AND r.code NOT IN ('000_000', '003_004')",
    )
    .bind(AS_OF)
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(stray, 0);
}

const BATCH_CODES: [&str; 8] = ["000_000", "000_002", "001_006", "003_005", "003_007", "003_008", "003_009", "003_010"];

both_backends!(
    run_matches_the_plain_sql_oracle_card_by_card,
    several_tasks_in_one_process_give_the_oracle_outcome,
    a_second_run_for_the_same_as_of_changes_nothing_but_its_own_run_row,
    dry_run_changes_no_row_at_all,
    single_card_path_reissues_once_then_reports_already_reissued,
    report_shows_a_run_and_prune_deletes_only_old_results,
    blast_radius_limit_stops_the_run_before_the_chunk_that_would_exceed_it,
    a_paused_worker_touches_nothing,
    several_processes_on_one_database_reach_the_single_run_outcome,
    the_candidate_scan_seeks_the_expiry_index,
    no_personal_data_reaches_any_output,
    a_limited_run_takes_the_first_candidates_and_a_full_run_finishes_the_rest,
);

async fn run_matches_the_plain_sql_oracle_card_by_card(kind: Kind) {
    let db = TestDb::of(kind).with_env("RENEWAL__RUN__CHUNK_SIZE", "64");
    db.seed(3000);
    let expected = oracle(&db).await;
    let stdout = db.run_as_of();
    let got = actual(&db).await;
    assert_eq!(counts(&got), counts(&expected));
    assert_eq!(got, expected);
    for code in BATCH_CODES {
        assert!(counts(&got).contains_key(code), "the demo data never produced {code}");
    }
    assert_exactly_once(&db).await;
    // The human summary names the counts; the run row agrees with the results.
    assert!(stdout.contains("status completed"), "{stdout}");
    let successes = counts(&got)["000_000"];
    assert_eq!(count_in(&stdout, "000_000"), Some(successes as i64), "{stdout}");
    let (status, read, reissued): (String, i64, i64) =
        sqlx::query_as("SELECT status, read_count, reissued_count FROM run").fetch_one(&db.pool().await).await.unwrap();
    assert_eq!((status.as_str(), read as usize, reissued as usize), ("completed", got.len(), successes));
}

async fn several_tasks_in_one_process_give_the_oracle_outcome(kind: Kind) {
    let db = TestDb::of(kind).with_env("RENEWAL__RUN__CHUNK_SIZE", "16").with_env("RENEWAL__RUN__CONCURRENCY", "4");
    db.seed(2000);
    let expected = oracle(&db).await;
    db.run_as_of();
    assert_eq!(actual(&db).await, expected);
    assert_exactly_once(&db).await;
}

async fn a_second_run_for_the_same_as_of_changes_nothing_but_its_own_run_row(kind: Kind) {
    let db = TestDb::of(kind);
    db.seed(1500);
    db.run_as_of();
    let mut before = dump(&db).await;
    let stdout = db.run_as_of();
    assert!(stdout.contains("read 0 "), "{stdout}");
    let mut after = dump(&db).await;
    let runs_before = before.remove("run").unwrap();
    let runs_after = after.remove("run").unwrap();
    assert_eq!(before, after, "a rerun changed data");
    assert_eq!(runs_after.len(), runs_before.len() + 1);
    if kind == Kind::Sqlite {
        assert_eq!(runs_after[..runs_before.len()], runs_before[..]);
    }
}

async fn dry_run_changes_no_row_at_all(kind: Kind) {
    let db = TestDb::of(kind).with_env("RENEWAL__RUN__CHUNK_SIZE", "50");
    db.seed(1500);
    let expected = oracle(&db).await;
    let before = dump(&db).await;
    let stdout = db.ok(&["run", "--as-of", AS_OF, "--dry-run"]);
    assert_eq!(dump(&db).await, before);
    // ... and reports what a real run would do, fees sequenced across chunks included.
    for (code, n) in counts(&expected) {
        assert_eq!(count_in(&stdout, &code), Some(n as i64), "dry run should report {n} x {code}:\n{stdout}");
    }
    // A dry run after a real one reports nothing left.
    db.run_as_of();
    let before = dump(&db).await;
    let stdout = db.ok(&["run", "--as-of", AS_OF, "--dry-run"]);
    assert!(stdout.contains("read 0 "), "{stdout}");
    assert_eq!(dump(&db).await, before);
}

fn one_result(stdout: &str, code: &str) -> bool {
    count_in(stdout, code) == Some(1) && stdout.contains("read 1 ")
}

async fn single_card_path_reissues_once_then_reports_already_reissued(kind: Kind) {
    let db = TestDb::of(kind);
    db.seed(1500);
    let pool = db.pool().await;
    let expected = oracle(&db).await;
    let (card_id, number) = eligible_fee_card(&db, &expected).await;
    let first = db.ok(&["run", "--as-of", AS_OF, "--card", &number]);
    assert!(one_result(&first, "000_000"), "{first}");
    // The card's own outcome line: masked card, code, message, cardApplyNo and fee.
    let (stored, fee): (String, i64) =
        sqlx::query_as("SELECT card_apply_no, fee FROM card_application WHERE old_card_id = $1")
            .bind(card_id)
            .fetch_one(&pool)
            .await
            .unwrap();
    let line = format!(
        "card {}******{}  code 000_000  message Success  cardApplyNo {stored}  fee {fee}",
        &number[..6],
        &number[12..]
    );
    assert!(first.lines().any(|l| l == line), "{line:?} in:\n{first}");
    assert!(!first.contains(number.as_str()), "the full number is never printed");
    let second = db.ok(&["run", "--as-of", AS_OF, "--card", &number]);
    assert!(one_result(&second, "003_004"), "{second}");
    assert!(
        second.contains("code 003_004  message Card issue status is not allowed to reissue  cardApplyNo -  fee 0"),
        "{second}"
    );
    assert_eq!(applications_and_debits(&db, card_id).await, (1, 1));
    // The batch afterwards leaves that card alone (it has results for the as-of) and still
    // matches the oracle for every other card.
    db.run_as_of();
    let codes: Vec<String> = sqlx::query_scalar("SELECT code FROM result WHERE card_id = $1 ORDER BY id")
        .bind(card_id)
        .fetch_all(&pool)
        .await
        .unwrap();
    assert_eq!(codes, ["000_000", "003_004"]);
    let rows: Vec<(i64, String, i64)> = sqlx::query_as(
        "SELECT r.card_id, r.code, r.fee FROM result r JOIN run ON run.id = r.run_id WHERE run.scope = 'full'",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    let batch: BTreeMap<i64, (String, i64)> = rows.into_iter().map(|(c, code, fee)| (c, (code, fee))).collect();
    let mut rest = expected.clone();
    rest.remove(&card_id);
    assert_eq!(batch, rest);
    assert_exactly_once(&db).await;

    // The seeded cards the batch never selects: one already reissued, one expiring too late
    // (chosen from business columns: every check before the expiry passes).
    let reissued: String = sqlx::query_scalar(
        "SELECT c.card_no FROM card c JOIN card_application a ON a.id = c.replaced_by_application_id \
         WHERE a.run_id IS NULL ORDER BY c.id LIMIT 1",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert!(one_result(&db.ok(&["run", "--as-of", AS_OF, "--card", &reissued]), "003_004"));
    let far: Vec<(String, String, String, String)> = sqlx::query_as(
        "SELECT c.card_no, m.zip_code, m.address, m.address_detail FROM card c JOIN member m ON m.id = c.member_id \
         WHERE c.expiry_ym >= 202703 AND c.status = 'ACTIVE' AND m.status = 'ACTIVE' \
           AND c.replaced_by_application_id IS NULL ORDER BY c.id LIMIT 200",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    let far = far
        .into_iter()
        .find(|(no, zip, addr, detail)| {
            luhn_ok(no)
                && zip.len() == 5
                && zip.bytes().all(|b| b.is_ascii_digit())
                && !addr.trim().is_empty()
                && !detail.trim().is_empty()
                && detail.chars().count() <= 255
        })
        .expect("a clean card expiring far away");
    let out = db.ok(&["run", "--as-of", AS_OF, "--card", &far.0]);
    assert!(one_result(&out, "003_006"), "{out}");
}

async fn report_shows_a_run_and_prune_deletes_only_old_results(kind: Kind) {
    let db = TestDb::of(kind);
    db.seed(800);
    let run_out = db.run_as_of();
    let report = db.ok(&["report"]);
    assert_eq!(report.lines().next(), run_out.lines().next());
    assert!(report.contains("status completed"));
    assert!(db.ok(&["report", "1"]).contains("run 1 "));
    // The run row and the CLI name the build: the package version, plus the commit in a checkout.
    let version: String = sqlx::query_scalar("SELECT version FROM run").fetch_one(&db.pool().await).await.unwrap();
    assert_eq!(version, renewal_worker::VERSION);
    assert!(report.contains(&format!("version {version}")), "{report}");
    assert_eq!(db.ok(&["--version"]).trim(), format!("renewal-worker {version}"));
    let head = std::process::Command::new("git").args(["rev-parse", "--short=12", "HEAD"]).output().unwrap();
    if head.status.success() {
        let head = String::from_utf8(head.stdout).unwrap();
        assert!(version.starts_with(&format!("{}+{}", env!("CARGO_PKG_VERSION"), head.trim())), "{version}");
    }
    let missing = db.run_cmd(&["report", "99"]);
    assert_eq!(missing.status.code(), Some(2));
    let total = scalar(&db, "SELECT count(*) FROM result").await;
    assert!(total > 0);
    sqlx::query("UPDATE result SET created_at = '2020-01-01T00:00:00.000000Z' WHERE id % 2 = 0")
        .execute(&db.pool().await)
        .await
        .unwrap();
    let old = scalar(&db, "SELECT count(*) FROM result WHERE id % 2 = 0").await;
    let out = db.ok(&["prune"]);
    assert!(out.contains(&format!("deleted {old} result rows")), "{out}");
    assert_eq!(scalar(&db, "SELECT count(*) FROM result").await, total - old);
}

async fn blast_radius_limit_stops_the_run_before_the_chunk_that_would_exceed_it(kind: Kind) {
    let db = TestDb::of(kind).with_env("RENEWAL__RUN__CHUNK_SIZE", "40").with_env("RENEWAL__RUN__MAX_REISSUES", "50");
    db.seed(2000);
    let out = db.run_cmd(&["run", "--as-of", AS_OF]);
    assert_eq!(out.status.code(), Some(5), "stopped for a person");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.lines().any(|l| l.starts_with("error: blast-radius limit")), "{}", tail(&stderr));
    let (status, reissued): (String, i64) =
        sqlx::query_as("SELECT status, reissued_count FROM run").fetch_one(&db.pool().await).await.unwrap();
    assert_eq!(status, "failed");
    assert!(reissued > 0 && reissued <= 50, "{reissued}");
    let marked = scalar(
        &db,
        "SELECT count(*) FROM card c JOIN card_application a ON a.id = c.replaced_by_application_id \
         WHERE a.run_id IS NOT NULL",
    )
    .await;
    assert_eq!(marked, reissued);
    // The limit holds per as-of: a retry (or a second replica) adds to the same totals, so it
    // stops before the chunk that would take the date past 50 instead of renewing another 50 (a
    // page that meets the first run's last cards may hold only a few new ones, which fit).
    let retry = db.run_cmd(&["run", "--as-of", AS_OF]);
    assert_eq!(retry.status.code(), Some(5), "{}", tail(&String::from_utf8_lossy(&retry.stderr)));
    let total = scalar(&db, "SELECT count(*) FROM result WHERE code = '000_000'").await;
    assert!(
        total >= reissued && total <= 50,
        "the date's total stays within the limit: {total} (first run {reissued})"
    );
    // Another as-of has its own budget.
    let next_day = db.run_cmd(&["run", "--as-of", "2026-11-21"]);
    assert_eq!(next_day.status.code(), Some(5));
    let next: i64 =
        sqlx::query_scalar("SELECT count(*) FROM result WHERE code = '000_000' AND CAST(as_of AS TEXT) = $1")
            .bind("2026-11-21")
            .fetch_one(&db.pool().await)
            .await
            .unwrap();
    assert!(next > 0 && next <= 50, "{next}");
}

async fn a_paused_worker_touches_nothing(kind: Kind) {
    let db = TestDb::of(kind);
    db.seed(500);
    let before = dump(&db).await;
    let out = db.command(&["run", "--as-of", AS_OF]).env("RENEWAL__RUN__PAUSED", "true").output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stdout).contains("paused"));
    assert_eq!(dump(&db).await, before);
}

async fn several_processes_on_one_database_reach_the_single_run_outcome(kind: Kind) {
    let db = TestDb::of(kind).with_env("RENEWAL__RUN__CHUNK_SIZE", "8");
    db.seed(3000);
    let reference = db.copy().await;
    reference.run_as_of();
    let gate = db.dir.path().join("go");
    let mut workers: Vec<Spawned> = (0..3)
        .map(|_| {
            Spawned::start(
                db.command(&["run", "--as-of", AS_OF])
                    .env(renewal_worker::START_GATE_ENV, &gate)
                    // Pacing leaves the write lock free between chunks: SQLite's busy handler
                    // backs off up to 100 ms a try, and without gaps two processes could take
                    // every turn while the third sleeps (the outcome would still be right, but
                    // the test needs every worker to commit).
                    .env(renewal_worker::CHUNK_DELAY_ENV, "30"),
            )
        })
        .collect();
    for w in &workers {
        w.wait_for_line(renewal_worker::PAUSED_MARKER, std::time::Duration::from_secs(60));
    }
    std::fs::write(&gate, b"go").unwrap();
    for w in &mut workers {
        assert_eq!(w.wait(std::time::Duration::from_secs(120)), Some(0));
    }
    assert_eq!(final_state(&db).await, final_state(&reference).await);
    let per_run: Vec<i64> =
        sqlx::query_scalar("SELECT count(r.id) FROM run LEFT JOIN result r ON r.run_id = run.id GROUP BY run.id")
            .fetch_all(&db.pool().await)
            .await
            .unwrap();
    assert_eq!(per_run.len(), 3);
    assert!(per_run.iter().all(|n| *n > 0), "every worker should have committed a chunk: {per_run:?}");
    assert_exactly_once(&db).await;
}

async fn the_candidate_scan_seeks_the_expiry_index(kind: Kind) {
    let db = TestDb::of(kind);
    db.seed(50_000);
    // A night's results exist (the once-per-as-of anti-join must probe them, not scan them).
    db.run_as_of();
    sqlx::query("ANALYZE").execute(&db.pool().await).await.unwrap();
    let out = db.ok(&["explain", "--as-of", "2026-11-21"]);
    match kind {
        Kind::Sqlite => {
            assert!(out.contains("SEARCH card USING INDEX card_expiry_unreissued (expiry_ym=? AND id>?)"), "{out}");
            assert!(
                out.contains("SEARCH r USING COVERING INDEX result_card_as_of_run (card_id=? AND as_of=?)"),
                "{out}"
            );
            let table_scans: Vec<&str> = out
                .lines()
                .map(str::trim)
                // The page's own ids (a materialized scan of at most a chunk) are not a table.
                .filter(|l| {
                    l.starts_with("SCAN ")
                        && !l.starts_with("SCAN (")
                        && !l.starts_with("SCAN page")
                        && !l.starts_with("SCAN scan")
                })
                .collect();
            assert!(table_scans.is_empty(), "no table may be scanned:\n{out}");
        }
        Kind::Postgres => {
            assert!(out.contains("card_expiry_unreissued"), "{out}");
            assert!(!out.contains("Seq Scan on card c"), "{out}");
        }
    }
}

async fn no_personal_data_reaches_any_output(kind: Kind) {
    let db = TestDb::of(kind);
    let mut outputs = vec![db.run_cmd(&["seed-demo", "--cards", "1000", "--seed", "7", "--as-of", AS_OF])];
    let pool = db.pool().await;
    let some_card: String =
        sqlx::query_scalar("SELECT card_no FROM card ORDER BY id DESC LIMIT 1").fetch_one(&pool).await.unwrap();
    for args in [
        vec!["run", "--as-of", AS_OF, "--dry-run"],
        vec!["run", "--as-of", AS_OF],
        vec!["run", "--as-of", AS_OF, "--card", &some_card],
        vec!["report"],
        vec!["report", "--json"],
        vec!["report", "--output", "csv"],
        vec!["report", "--as-of", AS_OF],
        vec!["runs", "--json"],
        vec!["config"],
        vec!["explain", "--as-of", AS_OF],
    ] {
        let out = db.run_cmd(&args);
        assert!(out.status.success(), "{args:?}");
        outputs.push(out);
    }
    // A failing command too: the card number it was given must not be echoed back.
    let failing = db.run_cmd(&["run", "--as-of", AS_OF, "--card", "4000000000000002"]);
    assert_eq!(failing.status.code(), Some(2));
    outputs.push(failing);
    let output: String = outputs
        .iter()
        .map(|o| format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr)))
        .collect();
    assert!(output.contains("\"card\":\"941000******"), "per-card events should carry masked cards");
    assert!(!output.contains("4000000000000002"));
    let secrets: Vec<String> = sqlx::query_scalar(
        "SELECT card_no FROM card UNION ALL SELECT par FROM card WHERE par IS NOT NULL \
         UNION ALL SELECT name FROM member WHERE name IS NOT NULL UNION ALL SELECT mobile FROM member WHERE mobile IS NOT NULL \
         UNION ALL SELECT address FROM member WHERE length(trim(address)) > 0 \
         UNION ALL SELECT address_detail FROM member WHERE length(trim(address_detail)) > 0",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert!(secrets.len() > 3000);
    for secret in &secrets {
        assert!(!output.contains(secret.as_str()), "output contains personal data: {secret}");
    }
    // Zip codes are five digits, too short to search for as bare text: look for them as values.
    let zips: Vec<String> =
        sqlx::query_scalar("SELECT zip_code FROM member WHERE zip_code IS NOT NULL").fetch_all(&pool).await.unwrap();
    for zip in &zips {
        for shape in [format!("\"{zip}\""), format!("={zip}")] {
            assert!(!output.contains(&shape), "output contains a zip code: {shape}");
        }
    }
}

async fn a_limited_run_takes_the_first_candidates_and_a_full_run_finishes_the_rest(kind: Kind) {
    let db = TestDb::of(kind).with_env("RENEWAL__RUN__CHUNK_SIZE", "7");
    db.seed(1500);
    let reference = db.copy().await;
    reference.run_as_of();
    let out = db.ok(&["run", "--as-of", AS_OF, "--limit", "20"]);
    assert!(out.contains("scope limit"), "{out}");
    assert!(out.contains("read 20 "), "{out}");
    assert_eq!(scalar(&db, "SELECT count(*) FROM result").await, 20);
    db.run_as_of();
    assert_eq!(final_state(&db).await, final_state(&reference).await);
}
