//! The API cell: `serve` (release build) on a copy of generated data, driven by `wrk` with a
//! script that walks eligible cards (bench/api.lua), at 16 connections; then a rate-holding run at
//! half that rate for p99; and, on PostgreSQL, `pgbench` running the API's own statements for
//! one card (bench/api_pgbench.sql) at the same client count on the same data: the database's
//! limit for this job.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use sqlx::Connection;

use super::{Args, Dialect, Error, copy, template, worker, worker_exe};

const KEY: &str = "bench-api-key-0123456789";

#[derive(Debug, Clone, serde::Serialize)]
pub struct ApiRow {
    pub database: String,
    pub cards: u64,
    pub eligible: usize,
    pub connections: u32,
    pub requests_per_second: f64,
    /// Successful reissues (000_000 API result rows) per second of the wrk run.
    pub success_per_second: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    /// The rate-holding run at half `requests_per_second`.
    pub held_rate: f64,
    pub held_p50_ms: f64,
    pub held_p99_ms: f64,
    /// pgbench on the same data and client count (PostgreSQL only).
    pub pgbench_tps: Option<f64>,
    pub ratio_to_pgbench: Option<f64>,
}

fn today() -> String {
    chrono::Utc::now().with_timezone(&chrono_tz::Asia::Seoul).date_naive().to_string()
}

fn free_port() -> Result<u16, Error> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// The cards a batch run reissues on a copy of the data: the API's success path, one per request.
async fn eligible(args: &Args, dialect: Dialect, tpl: &str) -> Result<Vec<(i64, String, i64, i64, i64)>, Error> {
    let url = copy(args, dialect, tpl, "api_list").await?;
    worker(&url, &["run", "--as-of", &today()], &args.out.join("logs").join("api_list.log"), &[])?;
    let sql = "SELECT c.member_id, c.card_no, c.id, c.product_id, r.fee FROM result r JOIN card c ON c.id = r.card_id \
               WHERE r.code = '000_000' ORDER BY r.id";
    Ok(match dialect {
        Dialect::Sqlite => sqlx::query_as(sql).fetch_all(&mut sqlx::SqliteConnection::connect(&url).await?).await?,
        Dialect::Postgres => sqlx::query_as(sql).fetch_all(&mut sqlx::PgConnection::connect(&url).await?).await?,
    })
}

struct Server {
    child: std::process::Child,
    port: u16,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn serve(args: &Args, url: &str, log: &Path) -> Result<Server, Error> {
    let (port, metrics) = (free_port()?, free_port()?);
    let child = Command::new(worker_exe()?)
        .arg("serve")
        .env("RENEWAL__DATABASE__URL", url)
        .env("RENEWAL__LOG__FORMAT", "json")
        .env("RENEWAL__LOG__LEVEL", "warn")
        .env("RENEWAL__API__KEYS", format!("bench:{KEY}"))
        // One pooled session per connection the load generator opens, as pgbench has.
        .env("RENEWAL__DATABASE__MAX_CONNECTIONS", args.api_connections.to_string())
        .env("RENEWAL__API__LISTEN", format!("127.0.0.1:{port}"))
        .env("RENEWAL__METRICS__LISTEN", format!("127.0.0.1:{metrics}"))
        .env("RENEWAL_CONFIG_DIR", Path::new(env!("CARGO_MANIFEST_DIR")).join("config"))
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log)?)
        .spawn()?;
    let server = Server { child, port };
    let deadline = Instant::now() + Duration::from_secs(30);
    while reqwest::get(format!("http://127.0.0.1:{port}/openapi.json")).await.is_err() {
        if Instant::now() > deadline {
            return Err(format!("serve did not start; see {}", log.display()).into());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(server)
}

/// A wrk latency figure ("1.23ms", "850.00us", "1.02s") in milliseconds.
fn millis(text: &str) -> Option<f64> {
    let (number, unit) = text.trim().split_at(text.trim().find(|c: char| c.is_ascii_alphabetic())?);
    let value: f64 = number.parse().ok()?;
    Some(match unit {
        "us" => value / 1000.0,
        "ms" => value,
        "s" => value * 1000.0,
        _ => return None,
    })
}

async fn api_successes(dialect: Dialect, url: &str) -> Result<i64, Error> {
    let sql = "SELECT count(*) FROM result WHERE trigger = 'api' AND code = '000_000'";
    Ok(match dialect {
        Dialect::Sqlite => sqlx::query_scalar(sql).fetch_one(&mut sqlx::SqliteConnection::connect(url).await?).await?,
        Dialect::Postgres => sqlx::query_scalar(sql).fetch_one(&mut sqlx::PgConnection::connect(url).await?).await?,
    })
}

/// Requests at a fixed rate for `seconds` (each on its own card), their latencies sorted.
async fn held(port: u16, cards: &[(i64, String, i64, i64, i64)], rate: f64, seconds: u64) -> Vec<f64> {
    let client = reqwest::Client::new();
    let url = format!("http://127.0.0.1:{port}/api/v1/prepay-card/expired/reissue");
    let mut ticks = tokio::time::interval(Duration::from_secs_f64(1.0 / rate.max(1.0)));
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let end = Instant::now() + Duration::from_secs(seconds);
    let mut tasks = Vec::new();
    for (user, card, ..) in cards.iter().cycle() {
        ticks.tick().await;
        if Instant::now() >= end {
            break;
        }
        let body = serde_json::json!({
            "userInfo": {"userId": user}, "cardInfo": {"oldCardNo": card},
            "addressInfo": {"address": "77 Teheran-ro, Seoul", "addressDetail": "5F", "zipCode": "06164"}
        });
        let (client, url) = (client.clone(), url.clone());
        tasks.push(tokio::spawn(async move {
            let started = Instant::now();
            let ok = client.post(&url).header("X-Api-Key", KEY).json(&body).send().await.is_ok();
            ok.then(|| started.elapsed().as_secs_f64() * 1000.0)
        }));
    }
    let mut latencies = Vec::new();
    for task in tasks {
        if let Ok(Some(ms)) = task.await {
            latencies.push(ms);
        }
    }
    latencies.sort_by(|a, b| a.total_cmp(b));
    latencies
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

pub async fn api_cell(args: &Args, dialect: Dialect) -> Result<ApiRow, Error> {
    let mut seeded = args.clone();
    seeded.as_of = today();
    let tpl = template(&seeded, dialect, args.api_cards, 1).await?;
    let cards = eligible(args, dialect, &tpl).await?;
    if cards.is_empty() {
        return Err("no eligible card in the API cell's data".into());
    }
    let name = match dialect {
        Dialect::Sqlite => "sqlite",
        Dialect::Postgres => "postgres",
    };
    let list = args.out.join("work").join("api_cards.txt");
    std::fs::write(&list, cards.iter().map(|(u, c, ..)| format!("{u},{c}\n")).collect::<String>())?;

    // Maximum throughput: wrk at the connection count.
    let url = copy(args, dialect, &tpl, "api").await?;
    let server = serve(args, &url, &args.out.join("logs").join(format!("api_{name}.log"))).await?;
    let threads = 2;
    let out = Command::new("wrk")
        .args(["-t", &threads.to_string(), "-c", &args.api_connections.to_string()])
        .args(["-d", &format!("{}s", args.api_seconds), "--latency", "-s"])
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("bench/api.lua"))
        .arg(format!("http://127.0.0.1:{}", server.port))
        .env("CARDS_FILE", &list)
        .env("THREADS", threads.to_string())
        .env("API_KEY", KEY)
        .output()?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() {
        return Err(format!("wrk failed: {text}{}", String::from_utf8_lossy(&out.stderr)).into());
    }
    drop(server);
    let rps: f64 = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("Requests/sec:"))
        .and_then(|v| v.trim().parse().ok())
        .ok_or_else(|| format!("no Requests/sec in wrk's output: {text}"))?;
    let pct = |p: &str| text.lines().find_map(|l| l.trim().strip_prefix(p).and_then(millis)).unwrap_or(f64::NAN);
    let (p50, p99) = (pct("50%"), pct("99%"));
    let successes = api_successes(dialect, &url).await?;

    // Latency at half that rate, held by a rate-keeping client, on a fresh copy.
    let url = copy(args, dialect, &tpl, "api_held").await?;
    let server = serve(args, &url, &args.out.join("logs").join(format!("api_held_{name}.log"))).await?;
    let held_rate = rps / 2.0;
    let latencies = held(server.port, &cards, held_rate, args.api_seconds).await;
    drop(server);

    // The database's own limit: pgbench with the API's statements.
    let pgbench_tps = match dialect {
        Dialect::Postgres => Some(pgbench(args, &tpl, &cards).await?),
        Dialect::Sqlite => None,
    };
    let success_per_second = successes as f64 / args.api_seconds as f64;
    Ok(ApiRow {
        database: name.to_owned(),
        cards: args.api_cards,
        eligible: cards.len(),
        connections: args.api_connections,
        requests_per_second: rps,
        success_per_second,
        p50_ms: p50,
        p99_ms: p99,
        held_rate,
        held_p50_ms: percentile(&latencies, 0.5),
        held_p99_ms: percentile(&latencies, 0.99),
        pgbench_tps,
        ratio_to_pgbench: pgbench_tps.map(|tps| success_per_second / tps),
    })
}

async fn pgbench(args: &Args, tpl: &str, cards: &[(i64, String, i64, i64, i64)]) -> Result<f64, Error> {
    let url = copy(args, Dialect::Postgres, tpl, "api_pgbench").await?;
    let mut conn = sqlx::PgConnection::connect(&url).await?;
    sqlx::raw_sql(
        "CREATE TABLE bench_api_cards (i BIGINT PRIMARY KEY, card_id BIGINT, member_id BIGINT, product_id BIGINT, fee BIGINT); \
         CREATE SEQUENCE bench_api_seq",
    )
    .execute(&mut conn)
    .await?;
    for (i, (member, _, card, product, fee)) in cards.iter().enumerate() {
        sqlx::query("INSERT INTO bench_api_cards VALUES ($1, $2, $3, $4, $5)")
            .bind(i as i64 + 1)
            .bind(card)
            .bind(member)
            .bind(product)
            .bind(fee)
            .execute(&mut conn)
            .await?;
    }
    drop(conn);
    let out = Command::new("pgbench")
        .args(["-n", "-M", "prepared", "-c", &args.api_connections.to_string(), "-j", "2"])
        .args(["-t", &(cards.len() as u32 / args.api_connections).max(1).to_string(), "-f"])
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("bench/api_pgbench.sql"))
        .arg(&url)
        .output()?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() {
        return Err(format!("pgbench failed: {text}{}", String::from_utf8_lossy(&out.stderr)).into());
    }
    text.lines()
        .find_map(|l| l.strip_prefix("tps = "))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .ok_or_else(|| format!("no tps in pgbench's output: {text}").into())
}
