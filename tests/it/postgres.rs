//! Several replicas on one PostgreSQL database: four workers at once, SIGKILL of one of
//! several workers, and connection loss mid-run.

use std::time::Duration;

use renewal_worker::{CHUNK_DELAY_ENV, PAUSE_ENV, PAUSED_MARKER, RELEASE_ENV};

use crate::common::*;
use crate::run::{assert_exactly_once, oracle};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_workers_at_once_equal_one_worker() {
    if !postgres_available() {
        return;
    }
    let db = TestDb::of(Kind::Postgres).with_env("RENEWAL__RUN__CHUNK_SIZE", "500");
    db.seed(200_000);
    let candidates = oracle(&db).await.len();
    assert!(candidates >= 20_000, "{candidates} candidates");
    let reference = db.copy().await;
    reference.run_as_of();

    let mut workers = start_workers(&db, 4, |_, cmd| {
        cmd.env(CHUNK_DELAY_ENV, "2");
    });
    for w in &mut workers {
        assert_eq!(w.wait(Duration::from_secs(300)), Some(0));
    }
    assert_eq!(final_state(&db).await, final_state(&reference).await);
    let pool = db.pool().await;
    let per_run: Vec<(i64, i64, String)> = sqlx::query_as(
        "SELECT run.id, count(r.id), run.status FROM run LEFT JOIN result r ON r.run_id = run.id \
         GROUP BY run.id, run.status ORDER BY run.id",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(per_run.len(), 4);
    assert!(per_run.iter().all(|(_, n, status)| *n > 0 && status == "completed"), "{per_run:?}");
    // No card appears in two runs' success results.
    let doubled = scalar(
        &db,
        "SELECT count(*) FROM (SELECT card_id FROM result WHERE code = '000_000' GROUP BY card_id HAVING count(*) > 1) t",
    )
    .await;
    assert_eq!(doubled, 0);
    assert_exactly_once(&db).await;
    println!("four workers: {candidates} candidates, results per run {per_run:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_of_one_of_several_workers_then_rerun_equals_an_uninterrupted_run() {
    if !postgres_available() {
        return;
    }
    let base = TestDb::of(Kind::Postgres).with_env("RENEWAL__RUN__CHUNK_SIZE", "10");
    base.seed(3000);
    let reference = base.copy().await;
    reference.run_as_of();
    let want = final_state(&reference).await;
    let candidates = want.results.len() as i64;

    let mut rng = fastrand::Rng::with_seed(20261120);
    for trial in 0..10 {
        let victim = rng.usize(..3);
        let chunk = rng.u32(2..6);
        let db = base.copy().await;
        let point = format!("before_commit:{chunk}");
        let mut workers = start_workers(&db, 3, |i, cmd| {
            if i == victim {
                // One chunk task in the victim: its pause at chunk N then follows the commit of
                // chunks 1..N-1 (with two tasks, chunk N can reach its commit point first and the
                // pause holds the budget lock chunk N-1 needs to commit). The survivors are paced
                // slower, so the victim reaches chunk N before they drain the window.
                cmd.env(PAUSE_ENV, &point).env("RENEWAL__RUN__CONCURRENCY", "1").env(CHUNK_DELAY_ENV, "3");
            } else {
                cmd.env(CHUNK_DELAY_ENV, "40");
            }
        });
        let marker = workers[victim].wait_for_line(PAUSED_MARKER, Duration::from_secs(60));
        // Cards, not result rows: a card that lost a claim race has two rows.
        let committed = scalar(&db, "SELECT count(DISTINCT card_id) FROM result").await;
        assert!(committed > 0, "trial {trial}: at least one chunk committed before the kill ({marker})");
        assert!(
            committed < candidates,
            "trial {trial}: candidates left at the kill: {committed} of {candidates} cards have results; \
             victim at {marker}; codes {:?}",
            codes_of(&db).await
        );
        db.kill(&mut workers[victim]).await;
        for (i, w) in workers.iter_mut().enumerate() {
            if i != victim {
                assert_eq!(w.wait(Duration::from_secs(120)), Some(0), "trial {trial}: survivor {i}");
            }
        }
        db.run_as_of();
        assert_eq!(running_runs(&db).await, 0, "trial {trial}");
        assert_eq!(final_state(&db).await, want, "trial {trial}: victim {victim} at {point}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_loss_mid_run_fails_the_run_and_the_next_run_picks_up_the_rest() {
    if !postgres_available() {
        return;
    }
    let db = TestDb::of(Kind::Postgres).with_env("RENEWAL__RUN__CHUNK_SIZE", "30");
    db.seed(3000);
    let reference = db.copy().await;
    reference.run_as_of();

    let release = db.dir.path().join("release");
    let mut worker = Spawned::start(
        db.command(&["run", "--as-of", AS_OF]).env(PAUSE_ENV, "before_commit:2").env(RELEASE_ENV, &release),
    );
    worker.wait_for_line(PAUSED_MARKER, Duration::from_secs(60));
    let pool = db.pool().await;
    let killed: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
         WHERE datname = current_database() AND pid <> pg_backend_pid()) t",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert!(killed > 0);
    std::fs::write(&release, b"go").unwrap();
    let code = worker.wait(Duration::from_secs(60));
    assert_eq!(code, Some(1), "a lost connection fails the run");
    let (status, reason): (String, String) =
        sqlx::query_as("SELECT status, coalesce(reason, '') FROM run WHERE id = 1").fetch_one(&pool).await.unwrap();
    assert_eq!(status, "failed");
    assert!(!reason.is_empty());
    db.run_as_of();
    assert_eq!(final_state(&db).await, final_state(&reference).await);
    assert_eq!(running_runs(&db).await, 0);
}
