//! The test harness: a fresh database per test, the real binary, and plain-SQL views of the
//! final state to compare runs by.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc;
use std::time::Duration;

use sqlx::{AnyPool, Connection};

pub const AS_OF: &str = "2026-11-20";
/// The admin database on the machine's PostgreSQL (trust auth); test databases are created beside it.
pub const PG_ADMIN_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

pub fn binary() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_renewal-worker"))
}

pub fn config_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("config")
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Sqlite,
    Postgres,
}

/// Runs a future to completion on a private runtime: usable from sync code and from Drop.
pub fn block_on<F: std::future::Future<Output = T> + Send + 'static, T: Send + 'static>(fut: F) -> T {
    std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime").block_on(fut)
    })
    .join()
    .expect("helper thread")
}

/// Whether PostgreSQL tests can run. In CI a missing server fails the test; elsewhere the
/// test is skipped with a printed reason.
pub fn postgres_available() -> bool {
    let reachable = block_on(async {
        tokio::time::timeout(Duration::from_secs(5), sqlx::PgConnection::connect(PG_ADMIN_URL)).await
    });
    match reachable {
        Ok(Ok(_)) => true,
        Ok(Err(e)) if std::env::var_os("CI").is_some() => panic!("CI requires PostgreSQL at {PG_ADMIN_URL}: {e}"),
        Err(_) if std::env::var_os("CI").is_some() => panic!("CI requires PostgreSQL at {PG_ADMIN_URL}: timeout"),
        Ok(Err(e)) => {
            eprintln!("skipping PostgreSQL test: cannot connect to {PG_ADMIN_URL}: {e}");
            false
        }
        Err(_) => {
            eprintln!("skipping PostgreSQL test: {PG_ADMIN_URL} did not answer within 5 s");
            false
        }
    }
}

/// A fresh database per test: an SQLite file in its own temporary directory, or a new
/// PostgreSQL database (dropped when the test ends).
pub struct TestDb {
    pub kind: Kind,
    pub dir: tempfile::TempDir,
    pub path: PathBuf,
    pub pg_name: Option<String>,
    pub env: Vec<(String, String)>,
}

static NEXT_DB: AtomicU32 = AtomicU32::new(0);

impl TestDb {
    /// SIGKILLs a worker and returns once its run's liveness lock is free, as a rerun right after
    /// a crash in production would find it a moment later. A file lock (SQLite) goes with the
    /// process; a PostgreSQL session lock goes when the server notices the dead connection,
    /// which can be a few milliseconds after the process is gone.
    pub async fn kill(&self, worker: &mut Spawned) {
        let pid = worker.child.id();
        worker.kill();
        if self.kind != Kind::Postgres {
            return;
        }
        let pool = self.pool().await;
        let runs: Vec<i64> = sqlx::query_scalar("SELECT id FROM run WHERE status = 'running' AND owner LIKE $1")
            .bind(format!("%:{pid}"))
            .fetch_all(&pool)
            .await
            .expect("the killed worker's runs");
        assert_eq!(runs.len(), 1, "a worker killed mid-run leaves its run row running");
        for run in runs {
            let deadline = std::time::Instant::now() + Duration::from_secs(10);
            // The run-lock namespace the store uses; autocommit releases the probe's
            // transaction lock at once.
            while !sqlx::query_scalar::<_, bool>(
                "SELECT pg_try_advisory_xact_lock(CAST($1 AS integer), CAST($2 AS integer))",
            )
            .bind(renewal_worker::store::postgres::RUN_LOCK_SPACE)
            .bind(run)
            .fetch_one(&pool)
            .await
            .expect("probing a run lock")
            {
                assert!(std::time::Instant::now() < deadline, "run {run}'s lock outlived its killed process by 10 s");
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
    }

    pub fn new() -> Self {
        Self::of(Kind::Sqlite)
    }

    pub fn of(kind: Kind) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("renewal.db");
        let pg_name = (kind == Kind::Postgres).then(|| {
            let name = format!("renewal_t{}_{}", std::process::id(), NEXT_DB.fetch_add(1, Ordering::SeqCst));
            let sql = format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)");
            block_on(async move {
                let mut admin = sqlx::PgConnection::connect(PG_ADMIN_URL).await.expect("PostgreSQL admin connection");
                sqlx::raw_sql(sqlx::AssertSqlSafe(sql)).execute(&mut admin).await.expect("drop stale test database");
            });
            name
        });
        Self { kind, dir, path, pg_name, env: Vec::new() }
    }

    pub fn url(&self) -> String {
        match &self.pg_name {
            Some(name) => format!("postgres://postgres@127.0.0.1:5432/{name}"),
            None => format!("sqlite://{}", self.path.display()),
        }
    }

    /// Adds an environment variable to every command of this database (e.g. a config override).
    pub fn with_env(mut self, key: &str, value: &str) -> Self {
        self.env.push((key.to_owned(), value.to_owned()));
        self
    }

    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(binary());
        cmd.args(args)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("RENEWAL_CONFIG_DIR", config_dir())
            .env("RENEWAL__DATABASE__URL", self.url())
            .env("RENEWAL__LOG__FORMAT", "json")
            .stdin(Stdio::null());
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        cmd
    }

    pub fn run_cmd(&self, args: &[&str]) -> Output {
        self.command(args).output().expect("run the binary")
    }

    /// Runs a command that must succeed; returns its stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.run_cmd(args);
        assert!(
            out.status.success(),
            "{args:?} failed with {:?}\nstdout: {}\nstderr: {}",
            out.status.code(),
            String::from_utf8_lossy(&out.stdout),
            tail(&String::from_utf8_lossy(&out.stderr)),
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    pub fn seed(&self, cards: u64) {
        self.ok(&["seed-demo", "--cards", &cards.to_string(), "--seed", "7", "--as-of", AS_OF]);
    }

    pub fn run_as_of(&self) -> String {
        self.ok(&["run", "--as-of", AS_OF])
    }

    /// An independent copy of this database (SQLite: a byte copy after a checkpoint;
    /// PostgreSQL: a database created from this one as its template).
    pub async fn copy(&self) -> TestDb {
        let mut copy = TestDb::of(self.kind);
        copy.env = self.env.clone();
        match self.kind {
            Kind::Sqlite => {
                let pool = self.pool().await;
                sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)").execute(&pool).await.expect("checkpoint");
                pool.close().await;
                std::fs::copy(&self.path, &copy.path).expect("copy database");
            }
            Kind::Postgres => {
                let sql = format!(
                    "CREATE DATABASE {} TEMPLATE {} ",
                    copy.pg_name.as_deref().unwrap_or_default(),
                    self.pg_name.as_deref().unwrap_or_default()
                );
                let mut admin = sqlx::PgConnection::connect(PG_ADMIN_URL).await.expect("admin connection");
                sqlx::raw_sql(sqlx::AssertSqlSafe(sql)).execute(&mut admin).await.expect("copy database");
            }
        }
        copy
    }

    /// A plain connection pool for the test's own SQL (`$1` placeholders work on both backends).
    pub async fn pool(&self) -> AnyPool {
        sqlx::any::install_default_drivers();
        let url = match self.kind {
            Kind::Sqlite => format!("{}?mode=rw", self.url()),
            Kind::Postgres => self.url(),
        };
        // No idle reaper: sqlx 0.9.0's can spin forever (sqlx #3645; seen here in the harness too).
        sqlx::any::AnyPoolOptions::new()
            .max_connections(1)
            .idle_timeout(None)
            .max_lifetime(None)
            .connect(&url)
            .await
            .expect("open test database")
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if let Some(name) = self.pg_name.take() {
            let sql = format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)");
            block_on(async move {
                if let Ok(mut admin) = sqlx::PgConnection::connect(PG_ADMIN_URL).await {
                    let _ = sqlx::raw_sql(sqlx::AssertSqlSafe(sql)).execute(&mut admin).await;
                }
            });
        }
    }
}

/// Declares one test per backend from one async body `fn(Kind)`.
macro_rules! both_backends {
    ($($name:ident),* $(,)?) => {
        $(
            mod $name {
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn sqlite() {
                    super::$name($crate::common::Kind::Sqlite).await
                }

                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn postgres() {
                    if $crate::common::postgres_available() {
                        super::$name($crate::common::Kind::Postgres).await
                    }
                }
            }
        )*
    };
}
pub(crate) use both_backends;

pub fn tail(text: &str) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(15)..].join("\n")
}

/// A child process killed (SIGKILL) when dropped, so a failing test never leaves one behind.
pub struct Spawned {
    pub child: Child,
    pub stderr_lines: mpsc::Receiver<String>,
    /// Every stderr line so far, whoever read the channel.
    pub log: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl Spawned {
    pub fn start(cmd: &mut Command) -> Self {
        let mut child = cmd.stdout(Stdio::null()).stderr(Stdio::piped()).spawn().expect("spawn the binary");
        let stderr = child.stderr.take().expect("piped stderr");
        let (tx, rx) = mpsc::channel();
        let log = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let keep = std::sync::Arc::clone(&log);
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                keep.lock().unwrap().push(line.clone());
                let _ = tx.send(line);
            }
        });
        Self { child, stderr_lines: rx, log }
    }

    /// Waits (bounded) for a stderr line containing `needle`.
    pub fn wait_for_line(&self, needle: &str, timeout: Duration) -> String {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match self.stderr_lines.recv_timeout(left) {
                Ok(line) if line.contains(needle) => return line,
                Ok(_) => {}
                Err(e) => panic!("no line containing {needle:?} within {timeout:?}: {e}"),
            }
        }
    }

    /// Whatever the process wrote to stderr and nobody read yet (for failure messages).
    pub fn stderr_so_far(&self) -> String {
        let lines: Vec<String> = self.stderr_lines.try_iter().collect();
        tail(&lines.join("\n"))
    }

    /// The JSON log events with this `event` name, so far.
    pub fn events(&self, event: &str) -> Vec<serde_json::Value> {
        self.log
            .lock()
            .unwrap()
            .iter()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|v| v["event"] == event)
            .collect()
    }

    /// Sends SIGTERM (a clean stop).
    pub fn terminate(&self) {
        use nix::sys::signal::{Signal, kill};
        let _ = kill(nix::unistd::Pid::from_raw(self.child.id() as i32), Signal::SIGTERM);
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Waits (bounded) for the process to exit; returns its exit code.
    pub fn wait(&mut self, timeout: Duration) -> Option<i32> {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().expect("poll child") {
                return status.code();
            }
            if std::time::Instant::now() > deadline {
                self.kill();
                panic!("process did not exit within {timeout:?}; its stderr:\n{}", self.stderr_so_far());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Spawned {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Every row of every table in a stable order: two dumps are equal iff nothing changed.
pub async fn dump(db: &TestDb) -> BTreeMap<String, Vec<String>> {
    let pool = db.pool().await;
    let tables_sql = match db.kind {
        Kind::Sqlite => {
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name"
        }
        Kind::Postgres => {
            "SELECT CAST(table_name AS TEXT) FROM information_schema.tables WHERE table_schema = 'public' ORDER BY 1"
        }
    };
    let tables: Vec<String> = sqlx::query_scalar(tables_sql).fetch_all(&pool).await.expect("list tables");
    let mut out = BTreeMap::new();
    for table in tables {
        let sql = match db.kind {
            Kind::Sqlite => {
                let columns: Vec<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
                    "SELECT name FROM pragma_table_info('{table}') ORDER BY cid"
                )))
                .fetch_all(&pool)
                .await
                .expect("table info");
                let quoted: Vec<String> = columns.iter().map(|c| format!("quote({c})")).collect();
                format!("SELECT json_array({}) FROM {table} ORDER BY rowid", quoted.join(", "))
            }
            Kind::Postgres => format!("SELECT CAST(row_to_json(t) AS TEXT) FROM {table} t ORDER BY 1"),
        };
        let rows: Vec<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(sql)).fetch_all(&pool).await.expect("dump");
        out.insert(table, rows);
    }
    out
}

/// What "the same final state" means (DESIGN §9): marked cards, per-card result for the as-of,
/// applications, debits, balances, per-code counts. Run rows, timestamps and ids may differ.
#[derive(Debug, PartialEq, Eq)]
pub struct FinalState {
    pub results: Vec<(i64, String, i64)>,
    pub marked: Vec<(i64, String)>,
    pub applications: Vec<(i64, String, i64, String)>,
    pub debits: Vec<(i64, String, i64)>,
    pub balances: Vec<(i64, i64)>,
    pub counts: Vec<(String, i64)>,
}

pub async fn final_state(db: &TestDb) -> FinalState {
    let pool = db.pool().await;
    let results: Vec<(i64, String, i64)> =
        sqlx::query_as("SELECT card_id, code, fee FROM result WHERE CAST(as_of AS TEXT) = $1 ORDER BY card_id, id")
            .bind(AS_OF)
            .fetch_all(&pool)
            .await
            .unwrap();
    let marked = sqlx::query_as(
        "SELECT c.id, a.card_apply_no FROM card c JOIN card_application a ON a.id = c.replaced_by_application_id \
         ORDER BY c.id",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    let applications = sqlx::query_as(
        "SELECT old_card_id, card_apply_no, fee, payment_state FROM card_application ORDER BY old_card_id, card_apply_no",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    let debits = sqlx::query_as(
        "SELECT w.member_id, d.reference, d.amount FROM wallet_debit d JOIN wallet w ON w.id = d.wallet_id \
         ORDER BY d.reference",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    let balances =
        sqlx::query_as("SELECT member_id, balance FROM wallet ORDER BY member_id").fetch_all(&pool).await.unwrap();
    let counts =
        sqlx::query_as("SELECT code, count(*) FROM result WHERE CAST(as_of AS TEXT) = $1 GROUP BY code ORDER BY code")
            .bind(AS_OF)
            .fetch_all(&pool)
            .await
            .unwrap();
    FinalState { results, marked, applications, debits, balances, counts }
}

pub async fn running_runs(db: &TestDb) -> i64 {
    scalar(db, "SELECT count(*) FROM run WHERE status = 'running'").await
}

/// One integer from a query without parameters.
pub async fn scalar(db: &TestDb, sql: &'static str) -> i64 {
    sqlx::query_scalar(sql).fetch_one(&db.pool().await).await.expect(sql)
}

/// Result rows per code, for failure messages.
pub async fn codes_of(db: &TestDb) -> Vec<(String, i64)> {
    sqlx::query_as("SELECT code, count(*) FROM result GROUP BY code ORDER BY code")
        .fetch_all(&db.pool().await)
        .await
        .expect("counting results per code")
}

/// The count a summary table (stdout of `run`/`report`) shows for `code`.
pub fn count_in(stdout: &str, code: &str) -> Option<i64> {
    stdout
        .lines()
        .find(|l| l.split_whitespace().next() == Some(code))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|n| n.parse().ok())
}

/// How many expiry-reissue applications, and debits of them, a card has (any state).
pub async fn applications_and_debits(db: &TestDb, card_id: i64) -> (i64, i64) {
    sqlx::query_as(
        "SELECT (SELECT count(*) FROM card_application WHERE old_card_id = $1), \
                (SELECT count(*) FROM wallet_debit d JOIN card_application a ON a.id = d.application_id \
                  WHERE a.old_card_id = $1)",
    )
    .bind(card_id)
    .fetch_one(&db.pool().await)
    .await
    .expect("count applications and debits")
}

/// Starts `n` workers held at a start gate (`tune` adjusts worker `i`'s command), then
/// releases them together.
pub fn start_workers(db: &TestDb, n: usize, tune: impl Fn(usize, &mut std::process::Command)) -> Vec<Spawned> {
    let gate = db.dir.path().join(format!("go-{}", fastrand::u32(..)));
    let workers: Vec<Spawned> = (0..n)
        .map(|i| {
            let mut cmd = db.command(&["run", "--as-of", AS_OF]);
            cmd.env(renewal_worker::START_GATE_ENV, &gate);
            tune(i, &mut cmd);
            Spawned::start(&mut cmd)
        })
        .collect();
    for w in &workers {
        w.wait_for_line(renewal_worker::PAUSED_MARKER, Duration::from_secs(60));
    }
    std::fs::write(&gate, b"go").expect("open the gate");
    workers
}
