//! One long-lived process across several idle periods (DESIGN §10): after each idle period the
//! next run gets fresh PostgreSQL sessions (the pool recycles without sqlx's reaper), and while
//! idle the process uses no CPU. Its own test binary, so no other test shares the process whose
//! CPU time is measured.

use std::time::Duration;

use renewal_worker::app::{Backend, open};
use renewal_worker::batch::{RunReport, RunRequest};
use renewal_worker::config::Settings;
use renewal_worker::store::postgres::APPLICATION_NAME;
use renewal_worker::store::sqlite::Create;
use renewal_worker::store::{RunStatus, Trigger};
use renewal_worker::worker::{App, Shutdown};
use sqlx::Connection;

const ADMIN: &str = "postgres://postgres@127.0.0.1:5432/test";
const AS_OF: &str = "2026-11-20";

/// User + system CPU time of this process.
fn cpu_time() -> Duration {
    let mut usage = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: getrusage fills the struct it is given; RUSAGE_SELF is always valid.
    let usage = unsafe {
        assert_eq!(libc::getrusage(libc::RUSAGE_SELF, usage.as_mut_ptr()), 0);
        usage.assume_init()
    };
    let tv = |t: libc::timeval| Duration::from_secs(t.tv_sec as u64) + Duration::from_micros(t.tv_usec as u64);
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

async fn worker_pids(admin: &mut sqlx::PgConnection, db: &str) -> Vec<i32> {
    sqlx::query_scalar("SELECT pid FROM pg_stat_activity WHERE datname = $1 AND application_name = $2 ORDER BY pid")
        .bind(db)
        .bind(APPLICATION_NAME)
        .fetch_all(admin)
        .await
        .expect("read pg_stat_activity")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_lived_process_recycles_its_sessions_and_idles_without_cpu() {
    let mut admin = match sqlx::PgConnection::connect(ADMIN).await {
        Ok(admin) => admin,
        Err(e) if std::env::var_os("CI").is_some() => panic!("CI requires PostgreSQL at {ADMIN}: {e}"),
        Err(e) => {
            eprintln!("skipping: cannot connect to {ADMIN}: {e}");
            return;
        }
    };
    let name = format!("renewal_pools_{}", std::process::id());
    let drop_db = format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)");
    sqlx::raw_sql(sqlx::AssertSqlSafe(drop_db.clone())).execute(&mut admin).await.unwrap();
    let url = format!("postgres://postgres@127.0.0.1:5432/{name}");
    let config = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config");
    let seeded = std::process::Command::new(env!("CARGO_BIN_EXE_renewal-worker"))
        .args(["seed-demo", "--cards", "500", "--as-of", AS_OF])
        .env("RENEWAL_CONFIG_DIR", &config)
        .env("RENEWAL__DATABASE__URL", &url)
        .output()
        .expect("run seed-demo");
    assert!(seeded.status.success(), "{}", String::from_utf8_lossy(&seeded.stderr));

    let mut settings = Settings::load(Some(&config)).unwrap();
    settings.database.url = url;
    settings.database.idle_timeout_ms = 300;
    let Backend::Postgres(store) = open(&settings, Create::Never).await.unwrap() else { panic!("a PostgreSQL URL") };
    let app = App::new(store, settings).unwrap();
    let as_of = chrono::NaiveDate::parse_from_str(AS_OF, "%Y-%m-%d").unwrap();
    let mut previous: Vec<i32> = Vec::new();
    for round in 0..3 {
        let request = RunRequest::full(as_of, Trigger::Manual);
        match app.run_once(request, Shutdown::new()).await.expect("run") {
            RunReport::Finished { status, .. } => assert_eq!(status, RunStatus::Completed, "round {round}"),
            RunReport::Paused => panic!("not paused"),
        }
        let pids = worker_pids(&mut admin, &name).await;
        assert!(!pids.is_empty(), "round {round}: the pool keeps its sessions between runs");
        if round > 0 {
            assert!(
                pids.iter().any(|p| !previous.contains(p)),
                "round {round}: after an idle period the run used a fresh session: before {previous:?}, now {pids:?}"
            );
        }
        previous = pids;
        // The idle period: nothing runs, nothing spins.
        let before = cpu_time();
        tokio::time::sleep(Duration::from_millis(800)).await;
        let spent = cpu_time() - before;
        assert!(spent < Duration::from_millis(40), "round {round}: an idle process used {spent:?} of CPU");
    }
    drop(app);
    sqlx::raw_sql(sqlx::AssertSqlSafe(drop_db)).execute(&mut admin).await.unwrap();
}
