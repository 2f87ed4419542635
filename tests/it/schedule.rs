//! The daemon (`schedule`), as real processes on short real schedules: ticks without overlap,
//! one run per slot across replicas, takeover of a killed claimer, catch-up per business date,
//! a DST night through the test clock shift, SIGTERM mid-run, and the manual trigger.

use std::process::Command;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use renewal_worker::schedule::clock::CLOCK_SHIFT_ENV;
use renewal_worker::{CHUNK_DELAY_ENV, PAUSE_ENV, PAUSED_MARKER};

use crate::common::*;

both_backends!(
    replicas_make_one_run_per_slot_and_the_same_final_state_as_one_run,
    a_killed_claimers_slot_is_taken_over_by_another_replica,
    catch_up_runs_missing_dates_oldest_first_and_counts_older_ones_missed,
    sigterm_mid_run_exits_0_records_interrupted_and_the_next_start_completes_the_date,
);

/// The demo data's business date at 03:00 UTC: schedules here run in UTC on that date.
pub const NIGHT: &str = "2026-11-20T03:00:00Z";
pub const EVERY_2S: &str = "*/2 * * * * *";

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").expect("a free port").local_addr().expect("its address").port()
}

/// The clock shift that makes the schedule's "now" `target` (the same for every process of a test).
pub fn shift_to(target: &str) -> String {
    let target: DateTime<Utc> = DateTime::parse_from_rfc3339(target).expect("an RFC 3339 instant").into();
    (target - Utc::now()).num_seconds().to_string()
}

/// `schedule` on `cron` in UTC, checking every second, with the clock at `shift`.
pub fn daemon(db: &TestDb, cron: &str, shift: &str, metrics_port: u16) -> Command {
    let mut cmd = db.command(&["schedule"]);
    cmd.env("RENEWAL__SCHEDULE__CRON", cron)
        .env("RENEWAL__SCHEDULE__TIME_ZONE", "UTC")
        .env("RENEWAL__SCHEDULE__CHECK_SECONDS", "1")
        .env("RENEWAL__METRICS__LISTEN", format!("127.0.0.1:{metrics_port}"))
        .env(CLOCK_SHIFT_ENV, shift);
    cmd
}

/// Polls `check` until it holds (bounded).
pub async fn eventually<F, Fut>(what: &str, timeout: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    while !check().await {
        assert!(Instant::now() < deadline, "{what}: not within {timeout:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn count(db: &TestDb, sql: &'static str) -> i64 {
    scalar(db, sql).await
}

/// Seeded data and the final state one `run` of the night gives on a copy of it.
async fn seeded_with_reference(kind: Kind, cards: u64) -> (TestDb, FinalState) {
    let db = TestDb::of(kind).with_env("RENEWAL__RUN__CHUNK_SIZE", "25");
    db.seed(cards);
    let reference = db.copy().await;
    reference.run_as_of();
    (db, final_state(&reference).await)
}

fn stop_cleanly(mut worker: Spawned) -> Spawned {
    worker.terminate();
    let code = worker.wait(Duration::from_secs(30));
    assert_eq!(
        code,
        Some(0),
        "a SIGTERM'd schedule exits 0; stderr:\n{}",
        tail(&worker.log.lock().unwrap().join("\n"))
    );
    worker
}

async fn replicas_make_one_run_per_slot_and_the_same_final_state_as_one_run(kind: Kind) {
    for replicas in [2, 3] {
        let (db, want) = seeded_with_reference(kind, 300).await;
        let shift = shift_to(NIGHT);
        let workers: Vec<Spawned> =
            (0..replicas).map(|_| Spawned::start(&mut daemon(&db, EVERY_2S, &shift, free_port()))).collect();
        // Enough slots for the claims to rotate over every replica.
        let slots_wanted = 3 * replicas as i64 + 1;
        eventually("slots claimed", Duration::from_secs(60), || async {
            count(&db, "SELECT count(*) FROM schedule_slot").await >= slots_wanted
        })
        .await;
        // Stopped between two slots, all at once: a SIGTERM to one replica mid-run would leave
        // an interrupted run that another replica rightly takes over (two runs for that slot),
        // and slow machines make runs long enough to meet a sequential stop.
        eventually("no run in flight", Duration::from_secs(30), || async {
            count(&db, "SELECT count(*) FROM run WHERE status = 'running'").await == 0
        })
        .await;
        for worker in &workers {
            worker.terminate();
        }
        let workers: Vec<Spawned> = workers
            .into_iter()
            .map(|mut worker| {
                let code = worker.wait(Duration::from_secs(30));
                assert_eq!(
                    code,
                    Some(0),
                    "a SIGTERM'd schedule exits 0:\n{}",
                    tail(&worker.log.lock().unwrap().join("\n"))
                );
                worker
            })
            .collect();

        let pool = db.pool().await;
        let per_slot: Vec<(i64, i64)> = sqlx::query_as(
            "SELECT s.id, (SELECT count(*) FROM run r WHERE r.slot_id = s.id) FROM schedule_slot s ORDER BY s.id",
        )
        .fetch_all(&pool)
        .await
        .unwrap();
        if !per_slot.iter().all(|(_, runs)| *runs == 1) {
            let runs: Vec<(i64, Option<i64>, String, Option<String>)> =
                sqlx::query_as("SELECT id, slot_id, status, reason FROM run ORDER BY id")
                    .fetch_all(&pool)
                    .await
                    .unwrap();
            let logs: Vec<String> = workers.iter().map(|w| tail(&w.log.lock().unwrap().join("\n"))).collect();
            panic!(
                "{replicas} replicas: one run row per slot: {per_slot:?}\nruns: {runs:?}\n{}",
                logs.join("\n----\n")
            );
        }
        assert_eq!(
            count(&db, "SELECT count(*) FROM run WHERE trigger = 'schedule' AND slot_id IS NULL").await,
            0,
            "every scheduled run records its slot"
        );
        for worker in &workers {
            let pid = worker.child.id();
            let claimed: i64 = sqlx::query_scalar("SELECT count(*) FROM schedule_slot WHERE claimed_by LIKE $1")
                .bind(format!("%:{pid}"))
                .fetch_one(&pool)
                .await
                .unwrap();
            assert!(claimed >= 1, "replica {pid} of {replicas} claimed no slot over {per_slot:?}");
            let taken = worker.events("slot_taken").len() + worker.events("tick_skipped").len();
            assert!(claimed as usize + taken > 0);
        }
        assert_eq!(
            count(&db, "SELECT count(*) FROM run WHERE status <> 'completed'").await,
            0,
            "every run completed (a SIGTERM between runs interrupts none)"
        );
        assert_eq!(final_state(&db).await, want, "{replicas} replicas end where one run ends");
    }
}

async fn a_killed_claimers_slot_is_taken_over_by_another_replica(kind: Kind) {
    let (db, want) = seeded_with_reference(kind, 600).await;
    let shift = shift_to(NIGHT);
    // A schedule that fires once in the test's reach: the claimer pauses mid-run and is killed.
    let mut claimer = Spawned::start(daemon(&db, EVERY_2S, &shift, free_port()).env(PAUSE_ENV, "after_commit:2"));
    claimer.wait_for_line(PAUSED_MARKER, Duration::from_secs(60));
    let pool = db.pool().await;
    let (slot_id, killed_run): (i64, i64) =
        sqlx::query_as("SELECT slot_id, id FROM run WHERE status = 'running'").fetch_one(&pool).await.unwrap();
    db.kill(&mut claimer).await;

    let taker = Spawned::start(&mut daemon(&db, EVERY_2S, &shift, free_port()));
    eventually("the killed claimer's slot taken over", Duration::from_secs(60), || async {
        let done: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM run WHERE slot_id = $1 AND id <> $2 AND status = 'completed' AND scope = 'full'",
        )
        .bind(slot_id)
        .bind(killed_run)
        .fetch_one(&pool)
        .await
        .unwrap();
        done == 1
    })
    .await;
    let taker = stop_cleanly(taker);
    let owner: String = sqlx::query_scalar("SELECT owner FROM run WHERE slot_id = $1 AND id <> $2")
        .bind(slot_id)
        .bind(killed_run)
        .fetch_one(&pool)
        .await
        .unwrap();
    assert!(owner.ends_with(&format!(":{}", taker.child.id())), "the other replica took it over: {owner}");
    let killed_status: String =
        sqlx::query_scalar("SELECT status FROM run WHERE id = $1").bind(killed_run).fetch_one(&pool).await.unwrap();
    assert_eq!(killed_status, "failed", "the dead claimer's run is closed, not left running");
    assert!(!taker.events("slot_takeover").is_empty(), "the takeover is logged");
    assert_eq!(final_state(&db).await, want);
}

/// `run --scheduled --as-of D` for each day: a history of completed scheduled nights.
fn history(db: &TestDb, days: &[u32]) {
    for day in days {
        db.ok(&["run", "--scheduled", "--as-of", &format!("2026-11-{day:02}")]);
    }
}

async fn catch_up_runs_missing_dates_oldest_first_and_counts_older_ones_missed(kind: Kind) {
    let db = TestDb::of(kind);
    db.seed(300);
    // Nights 15, 17 and 18 ran; 16 (outside the 3-day window) and 19, 20 did not.
    history(&db, &[15, 17, 18]);
    let runs_before = count(&db, "SELECT count(*) FROM run").await;
    let shift = shift_to("2026-11-20T03:00:00Z");
    let port = free_port();
    let worker = Spawned::start(&mut daemon(&db, "0 0 2 * * *", &shift, port));
    eventually("two catch-up runs", Duration::from_secs(60), || async {
        count(&db, "SELECT count(*) FROM run WHERE status = 'completed'").await == runs_before + 2
    })
    .await;
    let metrics = reqwest::get(format!("http://127.0.0.1:{port}/metrics")).await.unwrap().text().await.unwrap();
    let worker = stop_cleanly(worker);

    let pool = db.pool().await;
    let caught: Vec<(i64, String, i64)> = sqlx::query_as(
        "SELECT r.id, CAST(r.as_of AS TEXT), (SELECT count(*) FROM result x WHERE x.run_id = r.id \
         AND CAST(x.as_of AS TEXT) = CAST(r.as_of AS TEXT)) FROM run r WHERE r.slot_id IS NOT NULL ORDER BY r.id",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    let dates: Vec<&str> = caught.iter().map(|(_, d, _)| d.as_str()).collect();
    assert_eq!(dates, vec!["2026-11-19", "2026-11-20"], "oldest first, each with its own as-of");
    assert!(caught.iter().all(|(_, _, results)| *results > 0), "each wrote result rows for its as-of: {caught:?}");
    let missed = worker.events("missed_slot");
    assert_eq!(missed.len(), 1, "one older date missed: {missed:?}");
    assert_eq!(missed[0]["business_date"], "2026-11-16");
    assert!(metrics.lines().any(|l| l == "renewal_schedule_missed_dates_total 1"), "{metrics}");
    assert_eq!(worker.events("catch_up").len(), 2);

    // With them completed, a restart runs nothing.
    let worker = Spawned::start(&mut daemon(&db, "0 0 2 * * *", &shift, free_port()));
    tokio::time::sleep(Duration::from_secs(4)).await;
    let worker = stop_cleanly(worker);
    assert_eq!(count(&db, "SELECT count(*) FROM run").await, runs_before + 2, "nothing left to catch up");
    assert!(worker.events("catch_up").is_empty());

    // A database with no scheduled run yet catches up nothing.
    let fresh = TestDb::of(kind);
    fresh.seed(300);
    fresh.ok(&["run", "--as-of", "2026-11-19"]); // a manual run is not a schedule's history
    let worker = Spawned::start(&mut daemon(&fresh, "0 0 2 * * *", &shift, free_port()));
    tokio::time::sleep(Duration::from_secs(4)).await;
    stop_cleanly(worker);
    assert_eq!(count(&fresh, "SELECT count(*) FROM run").await, 1, "a first deploy renews nothing from before it");
}

async fn sigterm_mid_run_exits_0_records_interrupted_and_the_next_start_completes_the_date(kind: Kind) {
    let db = TestDb::of(kind).with_env("RENEWAL__RUN__CHUNK_SIZE", "25");
    db.seed(600);
    // A scheduled history (the 19th ran), so the start's check catches the 20th up.
    history(&db, &[19]);
    let reference = db.copy().await;
    reference.run_as_of();
    let want = final_state(&reference).await;
    let shift = shift_to(NIGHT);
    let worker = Spawned::start(daemon(&db, "0 0 2 * * *", &shift, free_port()).env(PAUSE_ENV, "before_commit:2"));
    let marker = worker.wait_for_line(PAUSED_MARKER, Duration::from_secs(60));
    let chunk_one: i64 = marker
        .split_whitespace()
        .find_map(|w| w.strip_prefix("committed_cards="))
        .and_then(|n| n.parse().ok())
        .expect("the marker's committed_cards");
    let started = Instant::now();
    let worker = stop_cleanly(worker);
    assert!(started.elapsed() < Duration::from_secs(20), "within shutdown.grace_seconds");
    let pool = db.pool().await;
    let (status, results, chunks): (String, i64, i64) = sqlx::query_as(
        "SELECT status, (SELECT count(*) FROM result x WHERE x.run_id = r.id), \
         (SELECT count(DISTINCT created_at) FROM result x WHERE x.run_id = r.id) FROM run r WHERE slot_id IS NOT NULL",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(status, "interrupted");
    // Chunk one was committed at the pause; the chunk in flight at SIGTERM commits whole; no third starts.
    assert_eq!(chunks, 2, "{results} results");
    assert!(results > chunk_one, "the chunk in flight committed whole: {results} results, {chunk_one} before it");
    for phase in ["shutdown_stop_claiming", "shutdown_waiting_for_run", "shutdown_run_stopped", "shutdown_complete"] {
        assert_eq!(worker.events(phase).len(), 1, "{phase} logged");
    }

    let next = Spawned::start(&mut daemon(&db, "0 0 2 * * *", &shift, free_port()));
    eventually("the next start completes the date", Duration::from_secs(60), || async {
        count(&db, "SELECT count(*) FROM run WHERE CAST(as_of AS TEXT) = '2026-11-20' AND status = 'completed'").await
            == 1
    })
    .await;
    stop_cleanly(next);
    assert_eq!(final_state(&db).await, want, "the same final state as an uninterrupted run");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ticks_never_overlap_a_run_slower_than_the_interval() {
    let db = TestDb::new().with_env("RENEWAL__RUN__CHUNK_SIZE", "5").with_env("RENEWAL__RUN__CONCURRENCY", "1");
    db.seed(300);
    let shift = shift_to(NIGHT);
    // Each chunk sleeps 400 ms after its commit: the night's first run takes several intervals.
    let worker = Spawned::start(daemon(&db, EVERY_2S, &shift, free_port()).env(CHUNK_DELAY_ENV, "400"));
    eventually("a few runs", Duration::from_secs(60), || async {
        count(&db, "SELECT count(*) FROM run WHERE status = 'completed'").await >= 3
    })
    .await;
    let worker = stop_cleanly(worker);
    let pool = db.pool().await;
    let intervals: Vec<(String, String)> =
        sqlx::query_as("SELECT started_at, finished_at FROM run WHERE finished_at IS NOT NULL ORDER BY started_at")
            .fetch_all(&pool)
            .await
            .unwrap();
    for pair in intervals.windows(2) {
        assert!(pair[0].1 <= pair[1].0, "runs of one process overlap: {pair:?}");
    }
    assert!(!worker.events("tick_skipped").is_empty(), "a tick during the slow run is skipped and logged");
    assert!(worker.events("tick").len() >= 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dst_night_runs_its_slot_once_at_the_right_instant_with_its_local_date() {
    let db = TestDb::new();
    db.seed(100);
    // New York, spring forward: 02:30 does not exist on 2026-03-08; the slot is 03:00 EDT (07:00Z).
    let spring = db.command(&["schedule"]);
    let mut spring = spring;
    spring
        .env("RENEWAL__SCHEDULE__CRON", "0 30 2 * * *")
        .env("RENEWAL__SCHEDULE__TIME_ZONE", "America/New_York")
        .env("RENEWAL__SCHEDULE__CHECK_SECONDS", "1")
        .env("RENEWAL__METRICS__LISTEN", format!("127.0.0.1:{}", free_port()))
        .env(CLOCK_SHIFT_ENV, shift_to("2026-03-08T06:59:57Z"));
    let worker = Spawned::start(&mut spring);
    let start = worker.wait_for_line("schedule_started", Duration::from_secs(30));
    let start: serde_json::Value = serde_json::from_str(&start).unwrap();
    assert_eq!(start["next_slot_utc"], "2026-03-08T07:00:00+00:00");
    assert_eq!(start["next_slot_local"], "2026-03-08T03:00:00-04:00");
    let tick: serde_json::Value =
        serde_json::from_str(&worker.wait_for_line("\"tick\"", Duration::from_secs(30))).unwrap();
    assert_eq!(tick["business_date"], "2026-03-08");
    assert_eq!(tick["next_slot_utc"], "2026-03-09T06:30:00+00:00", "the next night is back at 02:30 EDT");
    eventually("the night's run", Duration::from_secs(30), || async {
        count(&db, "SELECT count(*) FROM run WHERE status = 'completed'").await == 1
    })
    .await;
    stop_cleanly(worker);
    let (slot_at, as_of): (String, String) =
        sqlx::query_as("SELECT s.slot_at, r.as_of FROM schedule_slot s JOIN run r ON r.slot_id = s.id")
            .fetch_one(&db.pool().await)
            .await
            .unwrap();
    assert_eq!((slot_at.as_str(), as_of.as_str()), ("2026-03-08T07:00:00.000000Z", "2026-03-08"));

    // Fall back: 01:30 happens twice on 2026-11-01; the slot is the first (05:30Z), once.
    let mut fall = db.command(&["schedule"]);
    fall.env("RENEWAL__SCHEDULE__CRON", "0 30 1 * * *")
        .env("RENEWAL__SCHEDULE__TIME_ZONE", "America/New_York")
        .env("RENEWAL__SCHEDULE__CATCH_UP_DAYS", "0")
        .env("RENEWAL__METRICS__LISTEN", format!("127.0.0.1:{}", free_port()))
        .env(CLOCK_SHIFT_ENV, shift_to("2026-11-01T05:29:58Z"));
    let worker = Spawned::start(&mut fall);
    let tick: serde_json::Value =
        serde_json::from_str(&worker.wait_for_line("\"tick\"", Duration::from_secs(30))).unwrap();
    assert_eq!(tick["slot_utc"], "2026-11-01T05:30:00+00:00");
    assert_eq!(tick["next_slot_utc"], "2026-11-02T06:30:00+00:00", "the repeated 01:30 EST is no second slot");
    stop_cleanly(worker);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn post_runs_starts_a_run_refuses_a_second_while_it_goes_and_needs_a_key() {
    let db = TestDb::new().with_env("RENEWAL__RUN__CHUNK_SIZE", "25");
    db.seed(300);
    let admin_port = free_port();
    let mut cmd = daemon(&db, "0 0 2 * * *", &shift_to(NIGHT), free_port());
    cmd.env("RENEWAL__ADMIN__LISTEN", format!("127.0.0.1:{admin_port}"))
        .env("RENEWAL__ADMIN__KEYS", "oncall:0123456789abcdef0123,ci:fedcba9876543210fedc")
        .env(PAUSE_ENV, "after_commit:1");
    let worker = Spawned::start(&mut cmd);
    worker.wait_for_line("\"what\":\"admin\"", Duration::from_secs(30));
    let url = format!("http://127.0.0.1:{admin_port}/runs");
    let client = reqwest::Client::new();
    let no_key = client.post(&url).send().await.unwrap();
    assert_eq!(no_key.status(), 401);
    let wrong = client.post(&url).bearer_auth("0123456789abcdef0124").send().await.unwrap();
    assert_eq!(wrong.status(), 401);

    let started =
        client.post(&url).bearer_auth("fedcba9876543210fedc").body(r#"{"as_of":"2026-11-20"}"#).send().await.unwrap();
    assert_eq!(started.status(), 202);
    let body: serde_json::Value = started.json().await.unwrap();
    let run_id = body["run_id"].as_i64().expect("the run id");
    assert_eq!(body["as_of"], "2026-11-20");
    worker.wait_for_line(PAUSED_MARKER, Duration::from_secs(30));
    let busy = client.post(&url).bearer_auth("0123456789abcdef0123").send().await.unwrap();
    assert_eq!(busy.status(), 409, "a second manual run while one goes is refused");
    let body: serde_json::Value = busy.json().await.unwrap();
    assert_eq!(body["run_id"], run_id);
    let bad =
        client.post(&url).bearer_auth("0123456789abcdef0123").body(r#"{"as_of":"20-11-2026"}"#).send().await.unwrap();
    assert_eq!(bad.status(), 400);
    // A date beyond run.max_days_ahead would renew cards early: refused, as `run --as-of` is.
    let far = (chrono::Utc::now().date_naive() + chrono::Duration::days(90)).to_string();
    let early = client
        .post(&url)
        .bearer_auth("0123456789abcdef0123")
        .body(format!(r#"{{"as_of":"{far}"}}"#))
        .send()
        .await
        .unwrap();
    assert_eq!(early.status(), 400);
    let body: serde_json::Value = early.json().await.unwrap();
    assert!(body["error"].as_str().unwrap().contains("run.max_days_ahead = 0"), "{body}");

    let worker = stop_cleanly(worker);
    let (trigger, as_of): (String, String) = sqlx::query_as("SELECT trigger, as_of FROM run WHERE id = $1")
        .bind(run_id)
        .fetch_one(&db.pool().await)
        .await
        .unwrap();
    assert_eq!((trigger.as_str(), as_of.as_str()), ("manual", "2026-11-20"));
    let asked = worker.events("admin_run_started");
    assert_eq!(asked.len(), 1);
    assert_eq!(asked[0]["key_id"], "ci", "the asking key's id is logged");
    let log = worker.log.lock().unwrap().join("\n");
    assert!(!log.contains("fedcba9876543210fedc") && !log.contains("0123456789abcdef0123"), "secrets never logged");
    assert_eq!(worker.events("manual_run_refused").len(), 1);
}

#[test]
fn run_now_runs_at_start_and_a_bad_schedule_is_one_line_exit_2() {
    let db = TestDb::new();
    db.seed(100);
    for (cron, needle) in
        [("0 2 * * *", "has 5 fields; it needs 6, seconds first"), ("0 0 25 * * *", "is not a cron expression")]
    {
        let out = db.command(&["schedule"]).env("RENEWAL__SCHEDULE__CRON", cron).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{cron}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
        assert!(stderr.starts_with("error: ") && stderr.contains(needle), "{stderr}");
    }
    let out = db.command(&["schedule"]).env("RENEWAL__SCHEDULE__TIME_ZONE", "Mars/Olympus").output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("Mars/Olympus"));

    let mut cmd = db.command(&["schedule", "--run-now", "--as-of", AS_OF]);
    cmd.env("RENEWAL__METRICS__LISTEN", format!("127.0.0.1:{}", free_port()));
    let mut worker = Spawned::start(&mut cmd);
    worker.wait_for_line("manual_run_ended", Duration::from_secs(60));
    worker.terminate();
    assert_eq!(worker.wait(Duration::from_secs(30)), Some(0));
    let out = db.ok(&["report"]);
    assert!(out.contains("manual") && out.contains(AS_OF) && out.contains("completed"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_stopped_for_a_person_holds_its_slot_and_paused_ticks_start_nothing() {
    let db = TestDb::new();
    db.seed(300);
    // A scheduled history whose window (October's expiries) leaves November's cards to the 20th.
    db.ok(&["run", "--scheduled", "--as-of", "2026-10-10"]);
    let shift = shift_to(NIGHT);
    // The 20th's catch-up run reaches the blast-radius limit (exit 5): nobody takes it over.
    let mut cmd = daemon(&db, "0 0 2 * * *", &shift, free_port());
    cmd.env("RENEWAL__RUN__MAX_REISSUES", "3").env("RENEWAL__SCHEDULE__CATCH_UP_DAYS", "1");
    let worker = Spawned::start(&mut cmd);
    eventually("the limited run ends", Duration::from_secs(60), || async {
        count(&db, "SELECT count(*) FROM schedule_slot WHERE held_reason IS NOT NULL").await == 1
    })
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let worker = stop_cleanly(worker);
    assert_eq!(count(&db, "SELECT count(*) FROM run WHERE slot_id IS NOT NULL").await, 1, "held: no takeover");
    assert_eq!(worker.events("slot_held").len(), 1, "the hold is logged once");

    // schedule.paused: the daemon stays up, its ticks start nothing.
    let paused = TestDb::new();
    paused.seed(100);
    let worker =
        Spawned::start(daemon(&paused, EVERY_2S, &shift, free_port()).env("RENEWAL__SCHEDULE__PAUSED", "true"));
    worker.wait_for_line("tick_paused", Duration::from_secs(30));
    let worker = stop_cleanly(worker);
    assert_eq!(count(&paused, "SELECT count(*) FROM run").await, 0);
    assert!(worker.events("tick").is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_signal_exits_at_once_and_leaves_no_half_written_chunk() {
    let db = TestDb::new().with_env("RENEWAL__RUN__CHUNK_SIZE", "10").with_env("RENEWAL__RUN__CONCURRENCY", "1");
    db.seed(300);
    // Each commit is followed by a long pause the first signal cannot cut short.
    let mut cmd = db.command(&["schedule", "--run-now", "--as-of", AS_OF]);
    cmd.env("RENEWAL__METRICS__LISTEN", format!("127.0.0.1:{}", free_port())).env(CHUNK_DELAY_ENV, "30000");
    let mut worker = Spawned::start(&mut cmd);
    eventually("a chunk committed", Duration::from_secs(60), || async {
        count(&db, "SELECT count(*) FROM result").await > 0
    })
    .await;
    worker.terminate();
    worker.wait_for_line("shutdown_waiting_for_run", Duration::from_secs(10));
    let second = Instant::now();
    worker.terminate();
    assert_eq!(worker.wait(Duration::from_secs(10)), Some(4), "a second signal exits 4");
    assert!(second.elapsed() < Duration::from_secs(3), "at once: {:?}", second.elapsed());
    let (results, chunks): (i64, i64) = sqlx::query_as("SELECT count(*), count(DISTINCT created_at) FROM result")
        .fetch_one(&db.pool().await)
        .await
        .unwrap();
    assert_eq!((results, chunks), (10, 1), "one whole chunk committed, nothing half-written");
    // The next run finishes the date.
    db.run_as_of();
    assert_eq!(count(&db, "SELECT count(*) FROM run WHERE status = 'completed'").await, 1);
}
