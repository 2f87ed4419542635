//! Test-only pause points. `RENEWAL_TEST_PAUSE_AT=after_commit:3` (or `before_commit:3`,
//! `after_charge:3`) makes
//! the process announce itself on stderr and stop at that point of its 3rd chunk, so a crash
//! test can SIGKILL it at a known place instead of guessing with timers (DESIGN §9).
//! Unset in production: the check is one comparison per chunk.

use std::sync::OnceLock;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

pub const PAUSE_ENV: &str = "RENEWAL_TEST_PAUSE_AT";
/// A file path: the run waits before its first chunk until the file exists, so a test can
/// start several workers and release them together.
pub const START_GATE_ENV: &str = "RENEWAL_TEST_START_GATE";
/// A file path: a paused run resumes when the file appears (as it does on shutdown).
pub const RELEASE_ENV: &str = "RENEWAL_TEST_RELEASE_FILE";
/// Milliseconds to sleep after each commit, outside any lock, so concurrent test workers
/// interleave instead of one process re-taking SQLite's write lock every time.
pub const CHUNK_DELAY_ENV: &str = "RENEWAL_TEST_CHUNK_DELAY_MS";
pub const PAUSED_MARKER: &str = "renewal-test-hook: paused at";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Point {
    /// The chunk's candidates are read and evaluated, its claims not yet inserted.
    BeforeClaim,
    BeforeCommit,
    AfterCommit,
    /// HTTP fee mode: the chunk's fees were charged, their finishing transaction not begun.
    AfterCharge,
}

fn configured() -> Option<(Point, u64)> {
    static PARSED: OnceLock<Option<(Point, u64)>> = OnceLock::new();
    *PARSED.get_or_init(|| {
        let raw = std::env::var(PAUSE_ENV).ok()?;
        let (name, n) = raw.split_once(':')?;
        let point = match name {
            "before_claim" => Point::BeforeClaim,
            "before_commit" => Point::BeforeCommit,
            "after_commit" => Point::AfterCommit,
            "after_charge" => Point::AfterCharge,
            _ => return None,
        };
        Some((point, n.parse().ok()?))
    })
}

/// Pauses if the test asked to stop at `point` of chunk number `chunk` (1-based), until the
/// process is killed or asked to shut down (then the run goes on to its clean stop).
/// The marker line carries how many cards this process has committed so far, so a test can
/// check the database against it after the kill.
pub async fn maybe_pause(point: Point, chunk: u64, committed_cards: u64, shutdown: &CancellationToken) {
    if configured() == Some((point, chunk)) {
        eprintln!("{PAUSED_MARKER} {point:?}:{chunk} committed_cards={committed_cards}");
        let release = std::env::var_os(RELEASE_ENV).map(std::path::PathBuf::from);
        while !shutdown.is_cancelled() {
            if release.as_ref().is_some_and(|p| p.exists()) {
                return;
            }
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(20)) => {}
                _ = shutdown.cancelled() => return,
            }
        }
    }
}

/// Waits at the start gate, if a test set one.
pub async fn wait_at_start_gate() {
    let Ok(path) = std::env::var(START_GATE_ENV) else {
        return;
    };
    eprintln!("{PAUSED_MARKER} start gate");
    while !std::path::Path::new(&path).exists() {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Sleeps after a commit, if a test asked for pacing.
pub async fn pace_after_commit() {
    static DELAY: OnceLock<Option<u64>> = OnceLock::new();
    let delay = *DELAY.get_or_init(|| std::env::var(CHUNK_DELAY_ENV).ok().and_then(|v| v.parse().ok()));
    if let Some(ms) = delay {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
}
