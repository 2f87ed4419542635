//! The benchmark: the worker's `run` (release build, ledger fees) against a set-based SQL
//! reference on identical copies of the same generated data, on SQLite and PostgreSQL, plus the
//! HTTP fee mode against a local fee service. Run it with `bench/run.sh` (see README
//! "Performance"); it prints one table and writes the same as JSON.

mod api;
mod reference;

#[allow(dead_code)]
#[path = "../tests/it/fee_server.rs"]
mod fee_server;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::str::FromStr;
use std::time::{Duration, Instant};

use chrono::NaiveDate;
use clap::Parser;
use reference::Dialect;
use sqlx::{Connection, Row};

type Error = Box<dyn std::error::Error + Send + Sync>;

/// DESIGN §9: HTTP throughput is measured on at least this many fee-bearing candidates.
const HTTP_MIN_FEE_CARDS: u64 = 20_000;

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
enum Balances {
    Funded,
    Wallets,
}

#[derive(Parser, Debug, Clone)]
#[command(about = "Worker throughput, memory and HTTP fee throughput against the database's set-based limit")]
struct Args {
    /// Card counts to measure (comma-separated), e.g. 100000,1000000.
    #[arg(long, value_delimiter = ',', default_value = "100000")]
    cards: Vec<u64>,
    /// Databases to measure: sqlite, postgres.
    #[arg(long, value_delimiter = ',', default_value = "sqlite,postgres")]
    db: Vec<String>,
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Runs per measurement; the median is reported.
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Also measure HTTP fee mode on this many cards (0 = skip; 420000 gives the 20,000 fee-bearing
    /// candidates a measurement needs).
    #[arg(long, default_value_t = 0)]
    http_cards: u64,
    /// What the fee service holds: `funded` (every member can pay every fee, so each request is a
    /// charge: the worker's throughput) or `wallets` (the generated wallet balances, so the demo
    /// mix's declines take round trips too).
    #[arg(long, value_enum, default_value_t = Balances::Funded)]
    http_balances: Balances,
    /// Fee service latency for the HTTP cell, milliseconds.
    #[arg(long, default_value_t = 20)]
    http_latency_ms: u64,
    #[arg(long, default_value_t = 64)]
    http_max_in_flight: u32,
    /// Chunks in flight at once in the HTTP cell (`run.concurrency`) [default: the configured default]
    #[arg(long)]
    http_concurrency: Option<u32>,
    /// PostgreSQL cells: also run this many `run` processes together on one copy (0 or 1 = skip);
    /// wall time from the first start to the last exit.
    #[arg(long, default_value_t = 2)]
    replicas: u32,
    /// Also measure a card base this large holding the candidates of the largest `--cards` size
    /// (`seed-demo --sparse`), e.g. 10000000 beside 1000000; one run per program on the data set
    /// itself (no copies), which is put back after each run (0 = skip).
    #[arg(long, default_value_t = 0)]
    wide_cards: u64,
    /// Also measure the sync API on this many cards (0 = skip; its data is generated for today,
    /// the API's business date). wrk and pgbench must be installed.
    #[arg(long, default_value_t = 0)]
    api_cards: u64,
    #[arg(long, default_value_t = 16)]
    api_connections: u32,
    /// Seconds per API measurement.
    #[arg(long, default_value_t = 10)]
    api_seconds: u64,
    /// PostgreSQL server (trust auth); bench databases are created beside `test`.
    #[arg(long, default_value = "postgres://postgres@127.0.0.1:5432")]
    pg: String,
    #[arg(long, default_value = "2026-11-20")]
    as_of: String,
    /// Where data, logs and results go.
    #[arg(long, default_value = "bench-out")]
    out: PathBuf,
}

#[derive(Debug, Clone, serde::Serialize)]
struct Row_ {
    database: String,
    cards: u64,
    /// `seed-demo --sparse`: 1 for the usual 10% of cards in the window.
    sparse: u64,
    /// Worker processes started together (1 = the usual cell).
    processes: u32,
    runs: usize,
    candidates: i64,
    worker_seconds: f64,
    reference_seconds: f64,
    ratio: f64,
    cards_per_second: f64,
    /// Microseconds of worker time per candidate.
    us_per_candidate: f64,
    /// The largest of the processes' peaks.
    peak_rss_mib: f64,
    /// The same `run` again on the finished data (nothing left), median.
    rerun_seconds: Option<f64>,
    /// PostgreSQL: what the server did during the cell's last worker run.
    server: Option<ServerWal>,
}

/// What the PostgreSQL server did during one worker run: checkpoints started and WAL written,
/// cluster-wide. A page's first change after a checkpoint writes the whole page to the WAL, so a
/// night that forces checkpoints writes many pages again: at 10M cards, where each candidate's
/// pages are its own, that is most of the run's extra time (README, the seventh round).
#[derive(Debug, Clone, Copy, serde::Serialize)]
struct ServerWal {
    checkpoints: i64,
    wal_mib: f64,
    full_page_images: i64,
}

impl ServerWal {
    async fn now(args: &Args) -> Result<Self, Error> {
        let mut conn = admin(args).await?;
        let (checkpoints, full_page_images, wal_bytes): (i64, i64, f64) = sqlx::query_as(
            "SELECT (SELECT checkpoints_timed + checkpoints_req FROM pg_stat_bgwriter), \
                    (SELECT wal_fpi FROM pg_stat_wal), (SELECT wal_bytes::float8 FROM pg_stat_wal)",
        )
        .fetch_one(&mut conn)
        .await?;
        Ok(Self { checkpoints, wal_mib: wal_bytes / 1048576.0, full_page_images })
    }

    fn since(self, before: Self) -> Self {
        Self {
            checkpoints: self.checkpoints - before.checkpoints,
            wal_mib: self.wal_mib - before.wal_mib,
            full_page_images: self.full_page_images - before.full_page_images,
        }
    }
}

/// A worker run, and on PostgreSQL the server's WAL and checkpoints during it.
async fn measured_worker(
    args: &Args,
    dialect: Dialect,
    url: &str,
    run: &[&str],
    log: &Path,
) -> Result<(f64, f64, Option<ServerWal>), Error> {
    let before = match dialect {
        Dialect::Postgres => Some(ServerWal::now(args).await?),
        Dialect::Sqlite => None,
    };
    let (seconds, rss) = worker(url, run, log, &[])?;
    let server = match before {
        Some(before) => Some(ServerWal::now(args).await?.since(before)),
        None => None,
    };
    Ok((seconds, rss, server))
}

/// Counts per code, total fee and the set of marked cards: what must agree.
#[derive(Debug, PartialEq, Eq)]
struct Outcome {
    counts: BTreeMap<String, (i64, i64)>,
    fee_total: i64,
    marked: Vec<i64>,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn worker_exe() -> Result<PathBuf, Error> {
    let exe = std::env::current_exe()?.with_file_name("renewal-worker");
    if !exe.exists() {
        return Err(format!("{} not found: build it first (bench/run.sh does)", exe.display()).into());
    }
    Ok(exe)
}

struct Target {
    dialect: Dialect,
}

impl Target {
    fn name(&self) -> &'static str {
        match self.dialect {
            Dialect::Sqlite => "sqlite",
            Dialect::Postgres => "postgres",
        }
    }
}

fn worker(url: &str, args: &[&str], log: &Path, envs: &[(&str, String)]) -> Result<(f64, f64), Error> {
    let started = Instant::now();
    let process = spawn_worker(url, args, log, envs)?;
    let rss = process.wait()?;
    Ok((started.elapsed().as_secs_f64(), rss))
}

/// A worker process under `/usr/bin/time` (for its peak RSS).
struct Worker {
    child: std::process::Child,
    rss_file: PathBuf,
    log: PathBuf,
    args: Vec<String>,
}

impl Worker {
    /// Waits for the exit; the peak RSS in MiB.
    fn wait(mut self) -> Result<f64, Error> {
        let status = self.child.wait()?;
        if !status.success() {
            return Err(format!("worker {:?} failed ({status}); see {}", self.args, self.log.display()).into());
        }
        let rss_kib: f64 =
            std::fs::read_to_string(&self.rss_file)?.trim().lines().last().unwrap_or("0").trim().parse()?;
        Ok(rss_kib / 1024.0)
    }
}

fn spawn_worker(url: &str, args: &[&str], log: &Path, envs: &[(&str, String)]) -> Result<Worker, Error> {
    let rss_file = log.with_extension("rss");
    let mut cmd = Command::new("/usr/bin/time");
    cmd.arg("-f").arg("%M").arg("-o").arg(&rss_file).arg(worker_exe()?).args(args);
    cmd.env("RENEWAL__DATABASE__URL", url)
        .env("RENEWAL__LOG__FORMAT", "json")
        .env("RENEWAL_CONFIG_DIR", Path::new(env!("CARGO_MANIFEST_DIR")).join("config"))
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log)?);
    for (k, v) in envs {
        cmd.env(k, v);
    }
    Ok(Worker {
        child: cmd.spawn()?,
        rss_file,
        log: log.to_owned(),
        args: args.iter().map(|a| (*a).to_owned()).collect(),
    })
}

async fn admin(args: &Args) -> Result<sqlx::PgConnection, Error> {
    Ok(sqlx::PgConnection::connect(&format!("{}/test", args.pg)).await?)
}

async fn pg_exists(args: &Args, name: &str) -> Result<bool, Error> {
    let mut conn = admin(args).await?;
    Ok(sqlx::query("SELECT 1 FROM pg_database WHERE datname = $1")
        .bind(name)
        .fetch_optional(&mut conn)
        .await?
        .is_some())
}

async fn pg_exec(args: &Args, sql: String) -> Result<(), Error> {
    let mut conn = admin(args).await?;
    sqlx::raw_sql(sqlx::AssertSqlSafe(sql)).execute(&mut conn).await?;
    Ok(())
}

/// The generated data set for (database, cards, seed), made once and reused.
async fn template(args: &Args, dialect: Dialect, cards: u64, sparse: u64) -> Result<String, Error> {
    // The as-of is part of the data: the API cell's data is made for today.
    let mut tag = format!("{cards}_s{}_{}", args.seed, args.as_of.replace('-', ""));
    if sparse > 1 {
        tag.push_str(&format!("_sparse{sparse}"));
    }
    let (url, exists) = match dialect {
        Dialect::Sqlite => {
            let path = args.out.join("data").join(format!("sqlite_{tag}.db"));
            (format!("sqlite://{}", path.display()), path.exists())
        }
        Dialect::Postgres => {
            let name = format!("bench_tpl_{tag}");
            (format!("{}/{name}", args.pg), pg_exists(args, &name).await?)
        }
    };
    let migrate_log = args.out.join("logs").join(format!("migrate_{tag}.log"));
    // Data made by an older build gets this build's migrations; data whose schema this build
    // cannot migrate (a migration that changed since) is made again.
    let usable = exists && worker(&url, &["migrate"], &migrate_log, &[]).is_ok();
    if !usable {
        if exists {
            println!("the {dialect:?} data set for {tag} has a schema this build cannot migrate: generating it again");
            drop_template(args, dialect, &url, &tag).await?;
        }
        let log = args.out.join("logs").join(format!("seed_{tag}.log"));
        let started = Instant::now();
        let seed = args.seed.to_string();
        let n = cards.to_string();
        let sparse = sparse.to_string();
        let seed_args = ["seed-demo", "--cards", &n, "--seed", &seed, "--as-of", &args.as_of, "--sparse", &sparse];
        worker(&url, &seed_args, &log, &[])?;
        println!("generated {cards} cards on {dialect:?} in {:.1} s", started.elapsed().as_secs_f64());
    }
    // A run made on the data set itself (by hand, or a bench stopped mid-cell) would leave every
    // copy with nothing to do, and the worker and the reference would agree on an empty night.
    if holds_runs(dialect, &url).await? {
        println!("the {dialect:?} data set for {tag} holds runs: putting it back as generated");
        reset(dialect, &url).await?;
    }
    if dialect == Dialect::Sqlite {
        let mut conn = sqlx::SqliteConnection::connect(&url).await?;
        sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)").execute(&mut conn).await?;
    }
    Ok(url)
}

async fn holds_runs(dialect: Dialect, url: &str) -> Result<bool, Error> {
    let sql = "SELECT EXISTS (SELECT 1 FROM run)";
    Ok(match dialect {
        Dialect::Sqlite => sqlx::query_scalar(sql).fetch_one(&mut sqlx::SqliteConnection::connect(url).await?).await?,
        Dialect::Postgres => sqlx::query_scalar(sql).fetch_one(&mut sqlx::PgConnection::connect(url).await?).await?,
    })
}

async fn drop_template(args: &Args, dialect: Dialect, url: &str, tag: &str) -> Result<(), Error> {
    match dialect {
        Dialect::Sqlite => {
            let path = url.trim_start_matches("sqlite://");
            for suffix in ["", "-wal", "-shm"] {
                let _ = std::fs::remove_file(format!("{path}{suffix}"));
            }
            Ok(())
        }
        Dialect::Postgres => pg_exec(args, format!("DROP DATABASE IF EXISTS bench_tpl_{tag} WITH (FORCE)")).await,
    }
}

/// PostgreSQL: a checkpoint before a timed run, so the run starts as a night does, long after the
/// last one: each page's first change writes the whole page to the WAL. A fresh copy's pages were
/// just written there by `CREATE DATABASE`, and without this they would need no page image.
async fn checkpoint(args: &Args, dialect: Dialect) -> Result<(), Error> {
    match dialect {
        Dialect::Postgres => pg_exec(args, "CHECKPOINT".to_owned()).await,
        Dialect::Sqlite => Ok(()),
    }
}

/// A fresh copy of the template named `role`; returns its URL.
async fn copy(args: &Args, dialect: Dialect, template: &str, role: &str) -> Result<String, Error> {
    match dialect {
        Dialect::Sqlite => {
            let from = template.trim_start_matches("sqlite://");
            let to = args.out.join("work").join(format!("{role}.db"));
            for suffix in ["", "-wal", "-shm"] {
                let _ = std::fs::remove_file(format!("{}{suffix}", to.display()));
            }
            std::fs::copy(from, &to)?;
            Ok(format!("sqlite://{}", to.display()))
        }
        Dialect::Postgres => {
            let name = format!("bench_{role}");
            let tpl = template.rsplit('/').next().unwrap_or_default();
            pg_exec(args, format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")).await?;
            pg_exec(args, format!("CREATE DATABASE {name} TEMPLATE {tpl}")).await?;
            checkpoint(args, dialect).await?;
            Ok(format!("{}/{name}", args.pg))
        }
    }
}

async fn run_reference(dialect: Dialect, url: &str, as_of: NaiveDate, months: &[i64]) -> Result<f64, Error> {
    macro_rules! go {
        ($conn:expr) => {{
            let mut conn = $conn;
            let started = Instant::now();
            let mut tx = conn.begin().await?;
            let run_id: i64 =
                sqlx::query_scalar(sqlx::AssertSqlSafe(reference::run_row(dialect, as_of))).fetch_one(&mut *tx).await?;
            let verbose = std::env::var_os("BENCH_STATEMENT_TIMES").is_some();
            for sql in reference::statements(dialect, as_of, months, run_id) {
                let at = Instant::now();
                sqlx::raw_sql(sqlx::AssertSqlSafe(sql.clone())).execute(&mut *tx).await?;
                if verbose {
                    eprintln!("reference {:>8.1} ms  {}", at.elapsed().as_secs_f64() * 1e3, &sql[..sql.len().min(60)]);
                }
            }
            let at = Instant::now();
            tx.commit().await?;
            if verbose {
                eprintln!("reference {:>8.1} ms  COMMIT", at.elapsed().as_secs_f64() * 1e3);
            }
            Ok(started.elapsed().as_secs_f64())
        }};
    }
    match dialect {
        Dialect::Sqlite => {
            let options = sqlx::sqlite::SqliteConnectOptions::from_str(url)?
                .journal_mode(sqlx::sqlite::SqliteJournalMode::Wal)
                .synchronous(sqlx::sqlite::SqliteSynchronous::Normal)
                .foreign_keys(true);
            go!(sqlx::SqliteConnection::connect_with(&options).await?)
        }
        Dialect::Postgres => go!(sqlx::PgConnection::connect(url).await?),
    }
}

async fn outcome(dialect: Dialect, url: &str, as_of: &str) -> Result<Outcome, Error> {
    let counts_sql = "SELECT code, count(*), CAST(coalesce(sum(fee), 0) AS BIGINT) FROM result \
                      WHERE CAST(as_of AS TEXT) = $1 GROUP BY code ORDER BY code";
    let marked_sql = "SELECT id FROM card WHERE replaced_by_application_id IS NOT NULL ORDER BY id";
    macro_rules! read {
        ($conn:expr) => {{
            let mut conn = $conn;
            let rows = sqlx::query(counts_sql).bind(as_of).fetch_all(&mut conn).await?;
            let mut counts = BTreeMap::new();
            for r in &rows {
                counts.insert(r.try_get::<String, _>(0)?, (r.try_get::<i64, _>(1)?, r.try_get::<i64, _>(2)?));
            }
            let marked: Vec<i64> = sqlx::query_scalar(marked_sql).fetch_all(&mut conn).await?;
            let fee_total = counts.values().map(|(_, f)| f).sum();
            Outcome { counts, fee_total, marked }
        }};
    }
    Ok(match dialect {
        Dialect::Sqlite => read!(sqlx::SqliteConnection::connect(url).await?),
        Dialect::Postgres => read!(sqlx::PgConnection::connect(url).await?),
    })
}

fn window(as_of: NaiveDate) -> Vec<i64> {
    renewal_worker::domain::expiry::window_months(as_of, 30).iter().map(|m| m.yyyymm()).collect()
}

/// Fails unless the candidate scan on `url` uses `card_expiry_unreissued`.
fn check_plan(args: &Args, target: &Target, url: &str) -> Result<(), Error> {
    let explain = Command::new(worker_exe()?)
        .args(["explain", "--as-of", &args.as_of])
        .env("RENEWAL__DATABASE__URL", url)
        .env("RENEWAL_CONFIG_DIR", Path::new(env!("CARGO_MANIFEST_DIR")).join("config"))
        .output()?;
    let plan = String::from_utf8_lossy(&explain.stdout);
    if !explain.status.success() || !plan.contains("card_expiry_unreissued") {
        return Err(
            format!("the candidate scan does not use card_expiry_unreissued on {}:\n{plan}", target.name()).into()
        );
    }
    Ok(())
}

fn differ(what: &str, worker: &Outcome, reference: &Outcome) -> Error {
    format!(
        "OUTCOMES DIFFER ({what}):\nworker    {:?} fee {} marked {}\nreference {:?} fee {} marked {}",
        worker.counts,
        worker.fee_total,
        worker.marked.len(),
        reference.counts,
        reference.fee_total,
        reference.marked.len()
    )
    .into()
}

fn row(target: &Target, cards: u64, outcome: &Outcome, worker: &[f64], reference: &[f64], rss: &[f64]) -> Row_ {
    let candidates: i64 = outcome.counts.values().map(|(n, _)| n).sum();
    let (w, r) = (median(worker.to_vec()), median(reference.to_vec()));
    Row_ {
        database: target.name().to_owned(),
        cards,
        sparse: 1,
        processes: 1,
        runs: worker.len(),
        candidates,
        worker_seconds: w,
        reference_seconds: r,
        ratio: r / w,
        cards_per_second: candidates as f64 / w,
        us_per_candidate: w * 1e6 / candidates.max(1) as f64,
        peak_rss_mib: median(rss.to_vec()),
        rerun_seconds: None,
        server: None,
    }
}

const RUN: [&str; 2] = ["run", "--as-of"];

/// One size on one database: the worker and the reference on fresh copies, `--runs` times, then
/// (PostgreSQL) `--replicas` workers together on a copy.
async fn cell(args: &Args, target: &Target, cards: u64) -> Result<Vec<Row_>, Error> {
    let as_of = NaiveDate::parse_from_str(&args.as_of, "%Y-%m-%d")?;
    let tpl = template(args, target.dialect, cards, 1).await?;
    check_plan(args, target, &tpl)?;
    let run = [RUN[0], RUN[1], &args.as_of];
    let (mut worker_s, mut rss, mut reference_s, mut rerun_s) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut worker_url = String::new();
    let mut reference_url = String::new();
    let name = target.name();
    let mut server = None;
    for i in 0..args.runs {
        worker_url = copy(args, target.dialect, &tpl, "worker").await?;
        let log = args.out.join("logs").join(format!("{name}_{cards}_run{i}.log"));
        let (s, mib, wal) = measured_worker(args, target.dialect, &worker_url, &run, &log).await?;
        server = wal;
        worker_s.push(s);
        rss.push(mib);
        let log = args.out.join("logs").join(format!("{name}_{cards}_rerun{i}.log"));
        rerun_s.push(worker(&worker_url, &run, &log, &[])?.0);
        reference_url = copy(args, target.dialect, &tpl, "reference").await?;
        reference_s.push(run_reference(target.dialect, &reference_url, as_of, &window(as_of)).await?);
    }
    let worker_outcome = outcome(target.dialect, &worker_url, &args.as_of).await?;
    let reference_outcome = outcome(target.dialect, &reference_url, &args.as_of).await?;
    if worker_outcome != reference_outcome {
        return Err(differ(&format!("{name} at {cards} cards"), &worker_outcome, &reference_outcome));
    }
    let mut first = row(target, cards, &worker_outcome, &worker_s, &reference_s, &rss);
    first.rerun_seconds = Some(median(rerun_s));
    first.server = server;
    let mut rows = vec![first];
    if target.dialect == Dialect::Postgres && args.replicas > 1 {
        let (mut wall, mut peak) = (Vec::new(), Vec::new());
        for i in 0..args.runs {
            let url = copy(args, target.dialect, &tpl, "replicas").await?;
            let started = Instant::now();
            let processes = (0..args.replicas)
                .map(|p| {
                    let log = args.out.join("logs").join(format!("{name}_{cards}_replicas_run{i}_p{p}.log"));
                    spawn_worker(&url, &run, &log, &[])
                })
                .collect::<Result<Vec<_>, _>>()?;
            let mut most = 0.0_f64;
            for process in processes {
                most = most.max(process.wait()?);
            }
            wall.push(started.elapsed().as_secs_f64());
            peak.push(most);
            let together = outcome(target.dialect, &url, &args.as_of).await?;
            if together != reference_outcome {
                return Err(differ(
                    &format!("{} replicas on {name} at {cards} cards", args.replicas),
                    &together,
                    &reference_outcome,
                ));
            }
            let idle = idle_runs(&url).await?;
            if idle > 0 {
                // A smoke-sized set fits one chunk; a measurement needs every process working.
                println!(
                    "  warning: {idle} of {} replica runs read no card: this cell measured fewer processes",
                    args.replicas
                );
            }
        }
        let mut together = row(target, cards, &worker_outcome, &wall, &reference_s, &peak);
        together.processes = args.replicas;
        rows.push(together);
    }
    Ok(rows)
}

/// Worker runs on `url` (PostgreSQL) that read no card.
async fn idle_runs(url: &str) -> Result<i64, Error> {
    let mut conn = sqlx::PgConnection::connect(url).await?;
    Ok(sqlx::query_scalar("SELECT count(*) FROM run WHERE read_count = 0").fetch_one(&mut conn).await?)
}

/// A card base of `--wide-cards` holding the candidates of `base` (`seed-demo --sparse`): one
/// worker run, its empty rerun and one reference run, each on the data set itself, put back after.
async fn wide_cell(args: &Args, target: &Target, base: &Row_) -> Result<Row_, Error> {
    let as_of = NaiveDate::parse_from_str(&args.as_of, "%Y-%m-%d")?;
    let sparse = args.wide_cards / base.cards;
    let tpl = template(args, target.dialect, args.wide_cards, sparse).await?;
    check_plan(args, target, &tpl)?;
    let name = target.name();
    let run = [RUN[0], RUN[1], &args.as_of];
    let log = args.out.join("logs").join(format!("{name}_{}_wide.log", args.wide_cards));
    checkpoint(args, target.dialect).await?;
    let (seconds, rss, server) = measured_worker(args, target.dialect, &tpl, &run, &log).await?;
    let log = args.out.join("logs").join(format!("{name}_{}_wide_rerun.log", args.wide_cards));
    let (rerun, _) = worker(&tpl, &run, &log, &[])?;
    let worker_outcome = outcome(target.dialect, &tpl, &args.as_of).await?;
    reset(target.dialect, &tpl).await?;
    checkpoint(args, target.dialect).await?;
    let reference_s = run_reference(target.dialect, &tpl, as_of, &window(as_of)).await?;
    let reference_outcome = outcome(target.dialect, &tpl, &args.as_of).await?;
    reset(target.dialect, &tpl).await?;
    if worker_outcome != reference_outcome {
        return Err(differ(&format!("{name} at {} cards", args.wide_cards), &worker_outcome, &reference_outcome));
    }
    let mut wide = row(target, args.wide_cards, &worker_outcome, &[seconds], &[reference_s], &[rss]);
    wide.sparse = sparse;
    wide.rerun_seconds = Some(rerun);
    wide.server = server;
    Ok(wide)
}

/// Puts a data set back as `seed-demo` made it: every run's writes undone (the generated data
/// has no run, result or debit of its own).
async fn reset(dialect: Dialect, url: &str) -> Result<(), Error> {
    let statements = [
        "UPDATE card SET replaced_by_application_id = NULL, reissued_at = NULL \
         WHERE replaced_by_application_id IN (SELECT id FROM card_application WHERE run_id IS NOT NULL)",
        "UPDATE wallet SET balance = wallet.balance + d.total \
         FROM (SELECT wallet_id, sum(amount) AS total FROM wallet_debit GROUP BY wallet_id) AS d \
         WHERE wallet.id = d.wallet_id",
        "DELETE FROM wallet_debit",
        "DELETE FROM result",
        "DELETE FROM card_application WHERE run_id IS NOT NULL",
        "DELETE FROM run",
        "DELETE FROM schedule_slot",
        "DELETE FROM as_of_budget",
    ];
    macro_rules! go {
        ($conn:expr, $after:expr) => {{
            let mut conn = $conn;
            let mut tx = conn.begin().await?;
            for sql in statements {
                sqlx::query(sql).execute(&mut *tx).await?;
            }
            tx.commit().await?;
            for sql in $after {
                sqlx::query(sql).execute(&mut conn).await?;
            }
        }};
    }
    match dialect {
        Dialect::Sqlite => go!(sqlx::SqliteConnection::connect(url).await?, ["PRAGMA wal_checkpoint(TRUNCATE)"]),
        Dialect::Postgres => go!(
            sqlx::PgConnection::connect(url).await?,
            ["VACUUM (ANALYZE) card, card_application, wallet, wallet_debit, result, run"]
        ),
    }
    Ok(())
}

#[derive(Debug, serde::Serialize)]
struct HttpRow {
    cards: u64,
    balances: Balances,
    /// Fee-bearing cards the service answered (charged or declined).
    fee_cards: u64,
    fee_charges: u64,
    fee_declines: u64,
    /// Requests sent, retries included (equal to `fee_cards` when nothing failed).
    requests: u64,
    /// From the service's first request to its last response.
    seconds: f64,
    /// DESIGN §9's throughput: successful charges per second.
    charges_per_second: f64,
    /// Every answered fee card per second, declines included.
    cards_per_second: f64,
    ideal_per_second: f64,
    /// `charges_per_second / ideal_per_second`.
    ratio_to_ideal: f64,
    max_in_flight_seen: usize,
    /// Requests in flight at the service, sampled every 0.5 ms between its first and last answer.
    mean_in_flight: f64,
    /// The mean time a request spent in the service's handler: the latency as served, the
    /// ideal's denominator in fact.
    mean_service_ms: f64,
    /// `run.concurrency` of the run: `--http-concurrency`, or what the configuration gives.
    concurrency: String,
    peak_rss_mib: f64,
}

async fn http_cell(args: &Args) -> Result<HttpRow, Error> {
    let tpl = template(args, Dialect::Sqlite, args.http_cards, 1).await?;
    let url = copy(args, Dialect::Sqlite, &tpl, "http").await?;
    let balances: HashMap<i64, i64> = {
        let mut conn = sqlx::SqliteConnection::connect(&url).await?;
        let sql = match args.http_balances {
            // Far more than any member's fees add up to: the service charges every request.
            Balances::Funded => "SELECT id, 1000000000000 FROM member",
            Balances::Wallets => "SELECT member_id, balance FROM wallet",
        };
        sqlx::query_as(sql).fetch_all(&mut conn).await?.into_iter().collect()
    };
    let server = fee_server::FeeServer::start(balances, Duration::from_millis(args.http_latency_ms));
    let log = args.out.join("logs").join("http.log");
    let mut envs = vec![
        ("RENEWAL__FEES__MODE", "http".to_owned()),
        ("RENEWAL__FEES__HTTP__URL", server.url()),
        ("RENEWAL__FEES__HTTP__MAX_IN_FLIGHT", args.http_max_in_flight.to_string()),
    ];
    if let Some(n) = args.http_concurrency {
        envs.push(("RENEWAL__RUN__CONCURRENCY", n.to_string()));
    }
    let server = std::sync::Arc::new(server);
    let sampling = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let sampler = {
        let (server, sampling) = (std::sync::Arc::clone(&server), std::sync::Arc::clone(&sampling));
        std::thread::spawn(move || {
            let mut samples = Vec::new();
            while sampling.load(std::sync::atomic::Ordering::Relaxed) {
                samples.push((Instant::now(), server.in_flight()));
                std::thread::sleep(Duration::from_micros(500));
            }
            samples
        })
    };
    let (_, peak_rss_mib) = worker(&url, &["run", "--as-of", &args.as_of], &log, &envs)?;
    sampling.store(false, std::sync::atomic::Ordering::Relaxed);
    let samples = sampler.join().map_err(|_| "the in-flight sampler panicked")?;
    server.assert_no_card_charged_twice();
    let ledger = server.ledger();
    let (first, last) = match (ledger.first_request, ledger.last_response) {
        (Some(a), Some(b)) => (a, b),
        _ => return Err("the fee service saw no request".into()),
    };
    let seconds = (last - first).as_secs_f64();
    let window: Vec<usize> = samples.iter().filter(|(at, _)| *at >= first && *at <= last).map(|(_, n)| *n).collect();
    let mean_in_flight = window.iter().sum::<usize>() as f64 / window.len().max(1) as f64;
    let ideal = f64::from(args.http_max_in_flight) / (args.http_latency_ms as f64 / 1000.0);
    let fee_cards = ledger.requests.len() as u64;
    if args.http_balances == Balances::Funded && ledger.charges != fee_cards {
        return Err(format!("a funded service declined {} of {fee_cards} fee cards", fee_cards - ledger.charges).into());
    }
    let charges_per_second = ledger.charges as f64 / seconds;
    Ok(HttpRow {
        cards: args.http_cards,
        balances: args.http_balances,
        fee_cards,
        fee_charges: ledger.charges,
        fee_declines: fee_cards - ledger.charges,
        requests: ledger.requests.values().map(|n| u64::from(*n)).sum(),
        seconds,
        charges_per_second,
        cards_per_second: fee_cards as f64 / seconds,
        ideal_per_second: ideal,
        ratio_to_ideal: charges_per_second / ideal,
        max_in_flight_seen: server.max_in_flight(),
        mean_in_flight,
        mean_service_ms: server.mean_service_time().map_or(0.0, |t| t.as_secs_f64() * 1000.0),
        concurrency: args.http_concurrency.map_or_else(|| "default".to_owned(), |n| n.to_string()),
        peak_rss_mib,
    })
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    let args = Args::parse();
    for dir in ["data", "work", "logs"] {
        std::fs::create_dir_all(args.out.join(dir))?;
    }
    let mut targets = Vec::new();
    for db in &args.db {
        targets.push(match db.as_str() {
            "sqlite" => Target { dialect: Dialect::Sqlite },
            "postgres" => Target { dialect: Dialect::Postgres },
            other => return Err(format!("unknown --db {other}").into()),
        });
    }
    let mut rows: Vec<Row_> = Vec::new();
    for &cards in &args.cards {
        for target in &targets {
            for row in cell(&args, target, cards).await? {
                print_progress(&row);
                rows.push(row);
            }
        }
    }
    if args.wide_cards > 0 {
        for target in &targets {
            let base = rows
                .iter()
                .filter(|r| r.database == target.name() && r.processes == 1)
                .max_by_key(|r| r.cards)
                .cloned()
                .ok_or("--wide-cards needs a --cards size to compare with")?;
            if args.wide_cards < 2 * base.cards {
                return Err(
                    format!("--wide-cards {} must be at least twice --cards {}", args.wide_cards, base.cards).into()
                );
            }
            let row = wide_cell(&args, target, &base).await?;
            print_progress(&row);
            println!(
                "    against {} cards: time x{:.2}, per candidate x{:.2}",
                base.cards,
                row.worker_seconds / base.worker_seconds,
                row.us_per_candidate / base.us_per_candidate
            );
            rows.push(row);
        }
    }
    println!();
    println!(
        "{:<9} {:>9} {:>6} {:>3} {:>10} {:>9} {:>9} {:>6} {:>10} {:>8} {:>8} {:>7} {:>8}",
        "database",
        "cards",
        "sparse",
        "ps",
        "candidates",
        "worker s",
        "ref s",
        "ratio",
        "cards/s",
        "us/cand",
        "rerun s",
        "rerun%",
        "rss MiB"
    );
    for r in &rows {
        let (rerun, share) = match r.rerun_seconds {
            Some(s) => (format!("{s:.2}"), format!("{:.1}", 100.0 * s / r.worker_seconds)),
            None => ("-".to_owned(), "-".to_owned()),
        };
        println!(
            "{:<9} {:>9} {:>6} {:>3} {:>10} {:>9.2} {:>9.2} {:>6.2} {:>10.0} {:>8.1} {:>8} {:>7} {:>8.1}",
            r.database,
            r.cards,
            r.sparse,
            r.processes,
            r.candidates,
            r.worker_seconds,
            r.reference_seconds,
            r.ratio,
            r.cards_per_second,
            r.us_per_candidate,
            rerun,
            share,
            r.peak_rss_mib
        );
    }
    let http = if args.http_cards > 0 { Some(http_cell(&args).await?) } else { None };
    if let Some(h) = &http {
        println!();
        println!(
            "http fees ({:?} service): {} successful charges in {:.2} s = {:.0} charges/s; ideal {:.0}/s \
             (max_in_flight {} / {} ms); ratio {:.2}",
            h.balances,
            h.fee_charges,
            h.seconds,
            h.charges_per_second,
            h.ideal_per_second,
            args.http_max_in_flight,
            args.http_latency_ms,
            h.ratio_to_ideal,
        );
        println!(
            "  {} fee cards answered ({} declined), {} requests, {:.0} cards/s; in flight: max {}, mean {:.1}; \
             {:.2} ms per request in the service",
            h.fee_cards,
            h.fee_declines,
            h.requests,
            h.cards_per_second,
            h.max_in_flight_seen,
            h.mean_in_flight,
            h.mean_service_ms
        );
        println!("  run.concurrency {}; peak RSS {:.1} MiB", h.concurrency, h.peak_rss_mib);
        if h.fee_cards < HTTP_MIN_FEE_CARDS {
            println!(
                "  (a smoke run: a throughput figure needs at least {HTTP_MIN_FEE_CARDS} fee-bearing candidates; \
                 use --http-cards 420000)"
            );
        }
    }
    let mut api_rows = Vec::new();
    if args.api_cards > 0 {
        for target in &targets {
            let row = api::api_cell(&args, target.dialect).await?;
            println!();
            println!(
                "api {:<9} {} cards, {} eligible, {} connections: {:.0} requests/s ({:.0} reissues/s), p50 {:.2} ms, p99 {:.2} ms",
                row.database,
                row.cards,
                row.eligible,
                row.connections,
                row.requests_per_second,
                row.success_per_second,
                row.p50_ms,
                row.p99_ms
            );
            println!(
                "    held at {:.0}/s: p50 {:.2} ms, p99 {:.2} ms{}",
                row.held_rate,
                row.held_p50_ms,
                row.held_p99_ms,
                match (row.pgbench_tps, row.ratio_to_pgbench) {
                    (Some(tps), Some(ratio)) =>
                        format!("; pgbench (the API's statements) {tps:.0} tps, ratio {ratio:.2}"),
                    _ => String::new(),
                }
            );
            api_rows.push(row);
        }
    }
    let json = serde_json::json!({
        "api": api_rows,
        "machine": machine(),
        "as_of": args.as_of,
        "seed": args.seed,
        "runs": args.runs,
        "rows": rows,
        "http": http,
    });
    let path = args.out.join("results.json");
    std::fs::write(&path, serde_json::to_string_pretty(&json)?)?;
    println!("\nwritten {}", path.display());
    Ok(())
}

fn print_progress(row: &Row_) {
    println!(
        "  {:<9} {:>9} cards{}{}: worker {:.2} s, reference {:.2} s, ratio {:.2}, {:.1} us/candidate, rss {:.1} MiB{}",
        row.database,
        row.cards,
        if row.sparse > 1 { format!(" (sparse {})", row.sparse) } else { String::new() },
        if row.processes > 1 { format!(", {} processes", row.processes) } else { String::new() },
        row.worker_seconds,
        row.reference_seconds,
        row.ratio,
        row.us_per_candidate,
        row.peak_rss_mib,
        row.rerun_seconds.map_or_else(String::new, |s| format!(", empty rerun {s:.2} s"))
    );
    if let Some(wal) = row.server {
        println!(
            "    server during the last worker run: {} checkpoints, {:.0} MiB of WAL, {} full-page images",
            wal.checkpoints, wal.wal_mib, wal.full_page_images
        );
    }
}

fn machine() -> serde_json::Value {
    let cpu = std::fs::read_to_string("/proc/cpuinfo").ok().and_then(|s| {
        s.lines().find(|l| l.starts_with("model name")).map(|l| l.split(':').nth(1).unwrap_or("").trim().to_owned())
    });
    serde_json::json!({
        "cpus": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        "cpu": cpu,
        "version": env!("CARGO_PKG_VERSION"),
    })
}
