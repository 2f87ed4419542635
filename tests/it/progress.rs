//! Progress: a bar on a terminal (a real pseudo-terminal), whose frames change as a run held by
//! a pause hook moves on; never in a pipe, where `run_progress` events carry the same numbers.

use std::time::Duration;

use expectrl::Expect;

use renewal_worker::{PAUSE_ENV, PAUSED_MARKER, RELEASE_ENV};

use crate::common::*;

/// The `done/estimate` pairs of every bar frame in `text`.
fn frames(text: &str) -> Vec<(u64, u64)> {
    let re = regex::Regex::new(r"(\d+)/(\d+) cards  reissued").unwrap();
    re.captures_iter(text).map(|c| (c[1].parse().unwrap(), c[2].parse().unwrap())).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_terminal_shows_a_bar_whose_frames_move_with_the_run() {
    let db = TestDb::new().with_env("RENEWAL__RUN__CHUNK_SIZE", "20");
    db.seed(1_000);
    let release = db.dir.path().join("release");
    let mut cmd = db.command(&["run", "--as-of", AS_OF]);
    // JSON lines to stdout: not the bar's stream (stderr), so the bar shows.
    cmd.env("RENEWAL__LOG__DESTINATION", "stdout")
        .env(PAUSE_ENV, "before_commit:4")
        .env(RELEASE_ENV, &release)
        .env("TERM", "xterm");
    let mut session = expectrl::Session::spawn(cmd).expect("a pty session");
    session.set_expect_timeout(Some(Duration::from_secs(60)));
    let held = session.expect(PAUSED_MARKER).expect("the run reaches its pause");
    // Let the bar draw at least once more while the run is held.
    std::thread::sleep(Duration::from_millis(400));
    std::fs::write(&release, b"go").unwrap();
    let rest = session.expect(expectrl::Eof).expect("the run ends");
    let mut text = String::from_utf8_lossy(held.before()).into_owned();
    for m in rest.matches() {
        text.push_str(&String::from_utf8_lossy(m));
    }
    text.push_str(&String::from_utf8_lossy(rest.before()));
    let seen = frames(&text);
    assert!(!seen.is_empty(), "no bar frame in:\n{}", tail(&text));
    let estimate = seen[0].1;
    assert!(estimate > 0 && seen.iter().all(|f| f.1 == estimate), "{seen:?}");
    let positions: std::collections::BTreeSet<u64> = seen.iter().map(|f| f.0).collect();
    assert!(positions.len() >= 2, "the frames never moved: {seen:?}");
    assert!(text.contains("ETA"), "{}", tail(&text));
    let read = scalar(&db, "SELECT CAST(read_count AS BIGINT) FROM run WHERE id = 1").await;
    assert!(read as u64 <= estimate, "the estimate ({estimate}) bounds the cards read ({read})");
}

#[test]
fn a_pipe_gets_no_bar_and_run_progress_events_with_the_same_numbers() {
    let db = TestDb::new().with_env("RENEWAL__RUN__CHUNK_SIZE", "20").with_env("RENEWAL__LOG__PROGRESS_SECONDS", "1");
    db.seed(1_000);
    let release = db.dir.path().join("release");
    let mut worker = Spawned::start(
        db.command(&["run", "--as-of", AS_OF]).env(PAUSE_ENV, "before_commit:4").env(RELEASE_ENV, &release),
    );
    worker.wait_for_line(PAUSED_MARKER, Duration::from_secs(60));
    std::thread::sleep(Duration::from_millis(2_600));
    std::fs::write(&release, b"go").unwrap();
    assert_eq!(worker.wait(Duration::from_secs(60)), Some(0));
    let events = worker.events("run_progress");
    assert!(events.len() >= 2, "{} run_progress events", events.len());
    let summary = &worker.events("run_summary")[0];
    for e in &events {
        let done = e["done"].as_u64().unwrap();
        assert_eq!(
            done,
            e["reissued"].as_u64().unwrap()
                + e["ineligible"].as_u64().unwrap()
                + e["failed"].as_u64().unwrap()
                + e["pending"].as_u64().unwrap()
        );
        assert!(done <= e["estimate"].as_u64().unwrap());
        assert!(e["run_id"].as_i64() == summary["run_id"].as_i64());
    }
    let done: Vec<u64> = events.iter().map(|e| e["done"].as_u64().unwrap()).collect();
    assert!(done.windows(2).all(|w| w[0] <= w[1]), "{done:?}");
    assert!(done[done.len() - 1] >= 60, "three chunks of 20 committed before the hold: {done:?}");
    assert!(events[0]["estimate"].as_u64().unwrap() >= summary["read"].as_u64().unwrap());
    assert!(!worker.stderr_so_far().contains("cards  reissued"), "a bar in a pipe");
}
