//! Metrics and probes against real tools: a real Prometheus scrapes the daemon after it ran a
//! night, and its numbers equal the tables; `/readyz` follows the database away and back; a
//! one-shot `run` pushes to a real Pushgateway, and a stopped one changes nothing.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use crate::common::*;
use crate::schedule::{NIGHT, daemon, eventually, free_port, shift_to};

both_backends!(
    prometheus_scrapes_the_daemon_and_its_numbers_equal_the_tables,
    readyz_follows_the_database_away_and_back,
    run_pushes_its_metrics_to_a_pushgateway_and_a_stopped_one_changes_nothing,
);

/// A tool of `../shared/TOOLS.md` (`.ci/run` installs them): CI fails without it, elsewhere the
/// test is skipped with the reason printed.
pub fn tool(name: &str) -> Option<PathBuf> {
    let found = std::env::var_os("PATH")
        .and_then(|paths| std::env::split_paths(&paths).map(|p| p.join(name)).find(|p| p.is_file()));
    if found.is_none() {
        assert!(std::env::var_os("CI").is_none(), "CI requires {name} (apt-get install {name}; .ci/run installs it)");
        eprintln!("skipping: {name} is not installed");
    }
    found
}

pub async fn get(url: &str) -> (u16, String) {
    match reqwest::get(url).await {
        Ok(r) => (r.status().as_u16(), r.text().await.unwrap_or_default()),
        Err(_) => (0, String::new()),
    }
}

/// Prometheus' answer to an instant query (`at`: its evaluation time, Unix seconds).
pub async fn query_at(prometheus: u16, promql: &str, at: Option<f64>) -> serde_json::Value {
    let url = format!("http://127.0.0.1:{prometheus}/api/v1/query");
    let mut params = vec![("query", promql.to_owned())];
    if let Some(at) = at {
        params.push(("time", format!("{at:.3}")));
    }
    match reqwest::Client::new().get(&url).query(&params).send().await {
        Ok(r) => r.json().await.unwrap_or_default(),
        Err(_) => serde_json::Value::Null,
    }
}

/// One instant-query value from Prometheus' HTTP API (None: no such series).
pub async fn query(prometheus: u16, promql: &str) -> Option<f64> {
    let body = query_at(prometheus, promql, None).await;
    let result = body["data"]["result"].as_array()?;
    assert!(result.len() <= 1, "{promql}: one series expected, got {result:?}");
    result.first()?["value"][1].as_str()?.parse().ok()
}

/// A real Prometheus on loopback scraping `127.0.0.1:{target}` every second.
pub fn start_prometheus(prometheus: PathBuf, target: u16) -> (Spawned, u16, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global: {{ scrape_interval: 1s, evaluation_interval: 1s }}\nscrape_configs:\n  - job_name: renewal\n    static_configs: [{{ targets: ['127.0.0.1:{target}'] }}]\n"
        ),
    )
    .unwrap();
    let port = free_port();
    let spawned = Spawned::start(Command::new(prometheus).args([
        format!("--config.file={}", config.display()),
        format!("--storage.tsdb.path={}", dir.path().join("data").display()),
        format!("--web.listen-address=127.0.0.1:{port}"),
    ]));
    (spawned, port, dir)
}

async fn prometheus_scrapes_the_daemon_and_its_numbers_equal_the_tables(kind: Kind) {
    let Some(prometheus) = tool("prometheus") else { return };
    let db = TestDb::of(kind);
    db.seed(400);
    let metrics_port = free_port();
    // The daemon runs the night itself (--run-now), on a schedule that does not fire meanwhile.
    let worker = Spawned::start(daemon(&db, "0 0 2 * * *", &shift_to(NIGHT), metrics_port).args([
        "--run-now",
        "--as-of",
        AS_OF,
    ]));
    worker.wait_for_line("manual_run_ended", Duration::from_secs(60));

    let (_prom, prom_port, _dir) = start_prometheus(prometheus, metrics_port);
    eventually("Prometheus scraped the daemon", Duration::from_secs(60), || async {
        query(prom_port, r#"renewal_runs_total{trigger="manual",status="completed"}"#).await == Some(1.0)
    })
    .await;

    let pool = db.pool().await;
    let runs: Vec<(String, String, i64)> =
        sqlx::query_as("SELECT trigger, status, count(*) FROM run GROUP BY trigger, status")
            .fetch_all(&pool)
            .await
            .unwrap();
    assert_eq!(runs, vec![("manual".to_owned(), "completed".to_owned(), 1)]);
    for trigger in ["schedule", "manual", "api"] {
        for status in ["completed", "failed", "interrupted", "failed_dependency"] {
            let want = runs.iter().find(|r| r.0 == trigger && r.1 == status).map_or(0, |r| r.2) as f64;
            let promql = format!(r#"renewal_runs_total{{trigger="{trigger}",status="{status}"}}"#);
            assert_eq!(query(prom_port, &promql).await, Some(want), "{promql} is registered at 0 and counts runs");
        }
    }
    let codes: Vec<(String, i64)> =
        sqlx::query_as("SELECT code, count(*) FROM result GROUP BY code").fetch_all(&pool).await.unwrap();
    assert!(codes.len() > 3, "the demo night has several outcomes: {codes:?}");
    for code in renewal_worker::metrics::CODES {
        let want = codes.iter().find(|c| c.0 == code).map_or(0, |c| c.1) as f64;
        let promql = format!(r#"renewal_cards_total{{code="{code}"}}"#);
        assert_eq!(query(prom_port, &promql).await, Some(want), "{promql}");
    }
    let fees: i64 =
        sqlx::query_scalar("SELECT CAST(coalesce(sum(fee), 0) AS BIGINT) FROM result WHERE code = '000_000'")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert!(fees > 0);
    assert_eq!(query(prom_port, r#"renewal_fees_charged_total{currency="KRW"}"#).await, Some(fees as f64));
    let finished_sql = match kind {
        Kind::Sqlite => "SELECT CAST(strftime('%s', max(finished_at)) AS INTEGER) FROM run WHERE status = 'completed'",
        Kind::Postgres => {
            "SELECT CAST(floor(extract(epoch FROM max(finished_at))) AS BIGINT) FROM run WHERE status = 'completed'"
        }
    };
    let finished: i64 = sqlx::query_scalar(finished_sql).fetch_one(&pool).await.unwrap();
    let last_success = query(prom_port, "renewal_last_success_timestamp_seconds").await.expect("last success");
    assert_eq!(last_success.floor() as i64, finished, "the (db) gauge is the table's finish time");
    let pending: i64 =
        sqlx::query_scalar("SELECT count(*) FROM card_application WHERE payment_state = 'PENDING_PAYMENT'")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(query(prom_port, "renewal_pending_reservations").await, Some(pending as f64));
    assert_eq!(query(prom_port, "renewal_pending_oldest_age_seconds").await, Some(0.0));
    let next = query(prom_port, "renewal_schedule_next_slot_timestamp_seconds").await.expect("next slot");
    assert_eq!(next as i64 % 86_400, 2 * 3600, "the next slot is 02:00 UTC");
    assert!(query(prom_port, r#"renewal_run_duration_seconds_count{trigger="manual"}"#).await == Some(1.0));
    drop(worker);
}

async fn readyz_follows_the_database_away_and_back(kind: Kind) {
    let db = TestDb::of(kind);
    db.seed(100);
    let port = free_port();
    let worker = Spawned::start(&mut daemon(&db, "0 0 2 * * *", &shift_to(NIGHT), port));
    let ready = format!("http://127.0.0.1:{port}/readyz");
    eventually("ready", Duration::from_secs(30), || async { get(&ready).await.0 == 200 }).await;
    assert_eq!(get(&format!("http://127.0.0.1:{port}/healthz")).await.0, 200);

    let moved = db.dir.path().join("elsewhere.db");
    let pg_admin = || async { sqlx::PgConnection::connect(PG_ADMIN_URL).await.expect("admin connection") };
    use sqlx::Connection;
    match kind {
        Kind::Sqlite => std::fs::rename(&db.path, &moved).unwrap(),
        Kind::Postgres => {
            let name = db.pg_name.clone().unwrap();
            let mut admin = pg_admin().await;
            sqlx::raw_sql(sqlx::AssertSqlSafe(format!("ALTER DATABASE {name} ALLOW_CONNECTIONS false")))
                .execute(&mut admin)
                .await
                .unwrap();
            sqlx::query("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1")
                .bind(&name)
                .execute(&mut admin)
                .await
                .unwrap();
        }
    }
    eventually("not ready without its database", Duration::from_secs(30), || async { get(&ready).await.0 == 503 })
        .await;
    assert_eq!(get(&format!("http://127.0.0.1:{port}/healthz")).await.0, 200, "alive all the same");
    match kind {
        Kind::Sqlite => std::fs::rename(&moved, &db.path).unwrap(),
        Kind::Postgres => {
            let name = db.pg_name.clone().unwrap();
            sqlx::raw_sql(sqlx::AssertSqlSafe(format!("ALTER DATABASE {name} ALLOW_CONNECTIONS true")))
                .execute(&mut pg_admin().await)
                .await
                .unwrap();
        }
    }
    eventually("ready again", Duration::from_secs(30), || async { get(&ready).await.0 == 200 }).await;
    drop(worker);
}

async fn run_pushes_its_metrics_to_a_pushgateway_and_a_stopped_one_changes_nothing(kind: Kind) {
    let Some(pushgateway) = tool("prometheus-pushgateway") else { return };
    let db = TestDb::of(kind);
    db.seed(300);
    let port = free_port();
    let dir = tempfile::tempdir().unwrap();
    let mut gateway = Spawned::start(Command::new(pushgateway).args([
        format!("--web.listen-address=127.0.0.1:{port}"),
        format!("--persistence.file={}", dir.path().join("push.data").display()),
    ]));
    let base = format!("http://127.0.0.1:{port}");
    eventually("Pushgateway up", Duration::from_secs(30), || async { get(&format!("{base}/-/ready")).await.0 == 200 })
        .await;

    let out = db.command(&["run", "--as-of", AS_OF]).env("RENEWAL__METRICS__PUSHGATEWAY_URL", &base).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let (_, pushed) = get(&format!("{base}/metrics")).await;
    let series = |name: &str, labels: &[&str]| -> Option<f64> {
        pushed
            .lines()
            .filter(|l| l.starts_with(&format!("{name}{{")))
            .find(|l| labels.iter().all(|want| l.contains(want)))
            .and_then(|l| l.rsplit(' ').next()?.parse().ok())
    };
    let job = "job=\"renewal-worker\"";
    assert_eq!(
        series("renewal_runs_total", &[job, "trigger=\"manual\"", "status=\"completed\""]),
        Some(1.0),
        "{pushed}"
    );
    let reissued: i64 = scalar(&db, "SELECT count(*) FROM result WHERE code = '000_000'").await;
    assert_eq!(series("renewal_cards_total", &[job, "code=\"000_000\""]), Some(reissued as f64));
    assert!(series("renewal_last_success_timestamp_seconds", &[job]).is_some(), "the (db) gauges go with the push");
    assert!(
        pushed.lines().filter(|l| l.starts_with("renewal_runs_total{")).all(|l| l.contains("instance=\"\"")),
        "grouped by job only, no instance label"
    );

    gateway.kill();
    let out = db.command(&["run", "--as-of", AS_OF]).env("RENEWAL__METRICS__PUSHGATEWAY_URL", &base).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "a stopped Pushgateway does not fail the run");
    assert!(String::from_utf8_lossy(&out.stderr).contains("metrics_push_failed"));
}
