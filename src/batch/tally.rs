//! A run's own bookkeeping: the per-code counts of the results this process committed, the fees
//! left pending, and (dry runs, which write nothing) the balances carried from chunk to chunk. A
//! dry run's summary is built from it; so is a real run's when its end cannot be recorded.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use chrono::{NaiveDate, Utc};
use tokio::sync::Mutex;

use super::events::CardEvent;
use crate::store::{CodeCount, RunStatus, RunSummary, Scope, Trigger, totals};

#[derive(Debug, Default)]
pub(super) struct Tally {
    counts: std::sync::Mutex<BTreeMap<String, CodeCount>>,
    pending: AtomicU64,
    /// Dry runs: what each member's wallet has left after the charges this run would make.
    pub dry_balances: Mutex<HashMap<i64, i64>>,
}

/// What a summary from the tally says about its run besides the counts.
pub(super) struct RunOf<'a> {
    pub run_id: i64,
    pub as_of: NaiveDate,
    pub trigger: Trigger,
    pub scope: Scope,
    pub fee_mode: &'a str,
    pub started: Instant,
}

impl Tally {
    /// Adds committed results.
    pub fn add(&self, cards: &[CardEvent]) {
        let mut counts = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        for card in cards {
            let entry = counts.entry(card.code.to_owned()).or_default();
            entry.count += 1;
            entry.fee = entry.fee.saturating_add(card.fee);
        }
    }

    /// Adds fees whose outcome stayed unknown.
    pub fn add_pending(&self, n: u64) {
        self.pending.fetch_add(n, Ordering::SeqCst);
    }

    /// The progress these counts make (`estimate` and `elapsed` are the caller's).
    pub fn progress(&self, estimate: u64, elapsed: std::time::Duration) -> super::progress::Progress {
        let counts = self.counts.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let pending = self.pending();
        let (read, reissued, ineligible, failed, _) = totals(&counts, pending);
        let n = |v: i64| u64::try_from(v).unwrap_or(0);
        super::progress::Progress {
            estimate,
            done: n(read),
            reissued: n(reissued),
            ineligible: n(ineligible),
            failed: n(failed),
            pending: n(pending),
            elapsed,
        }
    }

    pub fn pending(&self) -> i64 {
        i64::try_from(self.pending.load(Ordering::SeqCst)).unwrap_or(i64::MAX)
    }

    pub fn summary(&self, run: RunOf<'_>, status: RunStatus, reason: Option<String>) -> RunSummary {
        let counts = self.counts.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let pending = self.pending();
        let (read, reissued, ineligible, failed, fee_total) = totals(&counts, pending);
        let now = Utc::now();
        RunSummary {
            run_id: run.run_id,
            as_of: run.as_of,
            trigger: run.trigger,
            scope: run.scope,
            status,
            reason,
            started_at: now - chrono::Duration::from_std(run.started.elapsed()).unwrap_or_default(),
            finished_at: Some(now),
            version: crate::VERSION.to_owned(),
            fee_mode: run.fee_mode.to_owned(),
            owner: String::new(),
            abandoned: false,
            counts,
            read,
            reissued,
            ineligible,
            failed,
            pending,
            fee_total,
        }
    }
}
