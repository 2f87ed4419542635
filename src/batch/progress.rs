//! How far a run is. After every committed chunk a snapshot goes out on a watch channel (a
//! terminal's progress bar reads it); where no bar shows it, a `run_progress` event every
//! `log.progress_seconds` carries the same numbers, from the moment the total is known. The
//! total is an estimate counted once, beside the run's first chunks: the window's cards not marked
//! reissued (from the expiry index) plus the cards the run has already recorded. An upper bound,
//! since it ignores cards with a result or a live application already.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;

use super::events::RunFields;

/// One moment of a run.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Progress {
    /// Candidates counted at start (an estimate, see the module's note).
    pub estimate: u64,
    /// Cards with a result, plus fees still pending.
    pub done: u64,
    pub reissued: u64,
    pub ineligible: u64,
    pub failed: u64,
    pub pending: u64,
    /// Since the run started.
    pub elapsed: Duration,
}

impl Progress {
    pub fn rate(&self) -> f64 {
        let secs = self.elapsed.as_secs_f64();
        if secs > 0.0 { self.done as f64 / secs } else { 0.0 }
    }

    /// Seconds left at the rate so far (`None` before the first card or past the estimate).
    pub fn eta_seconds(&self) -> Option<u64> {
        let rate = self.rate();
        (rate > 0.0 && self.estimate > self.done).then(|| ((self.estimate - self.done) as f64 / rate).ceil() as u64)
    }
}

/// What the caller wants to see of a run's progress (nothing by default).
#[derive(Debug, Clone, Default)]
pub struct ProgressOptions {
    /// Receives a snapshot after every committed chunk.
    pub watch: Option<Arc<watch::Sender<Progress>>>,
    /// Log `run_progress` this often.
    pub events_every: Option<Duration>,
}

impl ProgressOptions {
    pub fn wanted(&self) -> bool {
        self.watch.is_some() || self.events_every.is_some()
    }
}

pub fn event(run: &RunFields, p: &Progress) {
    tracing::info!(
        event = "run_progress",
        run_id = run.run_id,
        as_of = %run.as_of,
        trigger = run.trigger,
        dry_run = run.dry_run,
        done = p.done,
        estimate = p.estimate,
        reissued = p.reissued,
        ineligible = p.ineligible,
        failed = p.failed,
        pending = p.pending,
        cards_per_sec = p.rate(),
        eta_seconds = p.eta_seconds().unwrap_or(0),
        elapsed_ms = p.elapsed.as_millis() as u64,
    );
}

/// Logs `run_progress` every `every` from `current()` (`None` while the total is not counted
/// yet: that tick is skipped) until dropped.
pub fn spawn_events(
    run: RunFields,
    every: Duration,
    current: impl Fn() -> Option<Progress> + Send + 'static,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let started = Instant::now();
        let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        loop {
            tick.tick().await;
            if let Some(mut p) = current() {
                p.elapsed = started.elapsed().max(p.elapsed);
                event(&run, &p);
            }
        }
    })
}
