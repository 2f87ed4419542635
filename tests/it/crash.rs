//! SIGKILL mid-run, at known points, then a rerun: the final state equals an uninterrupted
//! run's on a copy of the same data.

use std::time::Duration;

use renewal_worker::{PAUSE_ENV, PAUSED_MARKER};

use crate::common::*;

/// One chunk task per process here: the pause marker then accounts for every committed card.
const CHUNK: i64 = 30;

both_backends!(
    sigkill_at_several_points_then_rerun_equals_an_uninterrupted_run,
    sigterm_finishes_the_chunk_in_flight_records_interrupted_and_the_next_run_resumes,
);

/// Seeded data for the kill trials and the final state of one uninterrupted run on a copy of it.
async fn seeded_with_reference(kind: Kind) -> (TestDb, FinalState) {
    let base = TestDb::of(kind)
        .with_env("RENEWAL__RUN__CHUNK_SIZE", &CHUNK.to_string())
        .with_env("RENEWAL__RUN__CONCURRENCY", "1");
    base.seed(3000);
    let reference = base.copy().await;
    reference.run_as_of();
    let want = final_state(&reference).await;
    (base, want)
}

async fn sigkill_at_several_points_then_rerun_equals_an_uninterrupted_run(kind: Kind) {
    let (base, want) = seeded_with_reference(kind).await;
    let candidates = want.results.len() as i64;
    assert!(candidates > 6 * CHUNK, "too few candidates ({candidates}) for the kill points");

    // Kill points land mid-run by construction: between a chunk's charge and its commit, or
    // just after a commit; every trial has at least one chunk committed and candidates left.
    for point in ["before_commit:2", "after_commit:1", "before_commit:3", "after_commit:4", "after_commit:6"] {
        let db = base.copy().await;
        let mut worker = Spawned::start(db.command(&["run", "--as-of", AS_OF]).env(PAUSE_ENV, point));
        let marker = worker.wait_for_line(PAUSED_MARKER, Duration::from_secs(60));
        db.kill(&mut worker).await;

        let results = scalar(&db, "SELECT count(*) FROM result").await;
        assert_eq!(results, committed_cards(&marker), "{point}: whole chunks only ({marker})");
        assert!(results > 0, "{point}: at least one chunk committed");
        assert!(results < candidates, "{point}: the kill must leave candidates");
        assert_eq!(running_runs(&db).await, 1, "{point}: the killed run is left running");

        db.run_as_of();
        assert_eq!(running_runs(&db).await, 0, "{point}: the rerun closes the dead run");
        let status: String =
            sqlx::query_scalar("SELECT status FROM run WHERE id = 1").fetch_one(&db.pool().await).await.unwrap();
        assert_eq!(status, "failed");
        assert_eq!(final_state(&db).await, want, "{point}: final state differs from an uninterrupted run");
    }
}

async fn sigterm_finishes_the_chunk_in_flight_records_interrupted_and_the_next_run_resumes(kind: Kind) {
    let (base, want) = seeded_with_reference(kind).await;

    let db = base.copy().await;
    let mut worker = Spawned::start(db.command(&["run", "--as-of", AS_OF]).env(PAUSE_ENV, "before_commit:2"));
    let marker = worker.wait_for_line(PAUSED_MARKER, Duration::from_secs(60));
    let before_chunk_two = committed_cards(&marker);
    let pid = nix::unistd::Pid::from_raw(worker.child.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    assert_eq!(worker.wait(Duration::from_secs(60)), Some(4), "interrupted runs exit 4");

    let (status, results, chunks): (String, i64, i64) = sqlx::query_as(
        "SELECT status, (SELECT count(*) FROM result), (SELECT count(DISTINCT created_at) FROM result) FROM run WHERE id = 1",
    )
    .fetch_one(&db.pool().await)
    .await
    .unwrap();
    assert_eq!(status, "interrupted");
    assert!(results > before_chunk_two, "the chunk in flight at SIGTERM commits whole");
    assert_eq!(chunks, 2, "no further chunk starts after SIGTERM");
    db.run_as_of();
    assert_eq!(final_state(&db).await, want);
}

/// The `committed_cards=N` a pause marker reports.
fn committed_cards(marker: &str) -> i64 {
    marker
        .split_whitespace()
        .find_map(|w| w.strip_prefix("committed_cards="))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no committed_cards in {marker:?}"))
}
