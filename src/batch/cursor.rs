//! The keyset cursor a run's chunk tasks share: where the next page starts, how many candidates a
//! `--limit` run may still take, and the retry passes over cards other transactions held (a
//! PostgreSQL page skips members another replica has locked; a later pass looks again).
//!
//! Replicas split the window by leaping: a page that lost most of its cards to another
//! transaction's locks means another worker is reading at this keyset, and following it would
//! lose every page again. The cursor then leaps halfway to the window's end and leaves the
//! stretch in between to the worker it met, which is walking into it. Nothing is lost by a leap:
//! it only happens on a page that skipped locked cards, and such a pass always ends with another
//! pass from the start, which takes whatever is still left.

/// How many extra passes a run makes for members other transactions held before it leaves them
/// to the next run (logged); with [`RETRY_PASS_PAUSE`] between passes that is several seconds.
pub(super) const MAX_RETRY_PASSES: u32 = 200;
pub(super) const RETRY_PASS_PAUSE: std::time::Duration = std::time::Duration::from_millis(50);

#[derive(Debug)]
pub(super) struct Cursor {
    after: i64,
    remaining: Option<u64>,
    exhausted: bool,
    /// This pass met cards locked by another transaction: another pass must look again.
    pass_skipped: bool,
    passes: u32,
    /// The keyset's last value in the window, once a leap needed it; `None` before.
    end: Option<i64>,
    leaps: u32,
}

/// What to do with the page just read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Step {
    /// Write the page's first `keep` candidates (0: nothing of it is left for this run).
    Take { keep: usize },
    /// The window is done for this pass but some cards were held: pause, then start over.
    Pass,
    /// Nothing is left; `left_locked` when cards stayed held through every pass.
    Done { left_locked: bool },
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the candidate keyset did not advance past {0} (a card without a member?)")]
pub(super) struct Stuck(pub i64);

impl Cursor {
    /// A cursor at the start of the window; `limit` caps the candidates the run takes.
    pub fn new(limit: Option<u64>) -> Self {
        Self { after: 0, remaining: limit, exhausted: false, pass_skipped: false, passes: 0, end: None, leaps: 0 }
    }

    /// Whether a page like this one lost the keyset to another worker: it skipped locked cards
    /// and kept fewer than half of those it scanned. A run with a `--limit` never leaps: it takes
    /// the window's first cards. A lone card the API holds keeps the page's others and does not
    /// count.
    pub fn would_leap(&self, scanned: usize, skipped_locked: bool, candidates: usize) -> bool {
        skipped_locked && self.remaining.is_none() && candidates * 2 < scanned
    }

    /// Whether the cursor still needs the window's last keyset value before it can leap.
    pub fn needs_end(&self) -> bool {
        self.end.is_none()
    }

    /// The keyset's last value in the window (`None`: the window is empty).
    pub fn set_end(&mut self, end: Option<i64>) {
        self.end = Some(end.unwrap_or(0));
    }

    /// How many times the run leapt (each leap is logged as `keyset_leap`, at debug level).
    pub fn leaps(&self) -> u32 {
        self.leaps
    }

    /// Where the next page starts.
    pub fn after(&self) -> i64 {
        self.after
    }

    /// How many candidates the next page may hold, or `None` once the run has taken all it may.
    pub fn page_limit(&mut self, chunk_size: u32) -> Option<u32> {
        if self.exhausted {
            return None;
        }
        match self.remaining {
            Some(0) => {
                self.exhausted = true;
                None
            }
            Some(left) => Some(u32::try_from(left).unwrap_or(u32::MAX).min(chunk_size)),
            None => Some(chunk_size),
        }
    }

    /// Records a page read at [`Cursor::after`]: `scanned` rows looked at, the keyset where the
    /// next page starts, whether locked cards were skipped, and how many candidates it holds.
    pub fn record(
        &mut self,
        scanned: usize,
        next_after: i64,
        skipped_locked: bool,
        candidates: usize,
    ) -> Result<Step, Stuck> {
        if scanned == 0 {
            if !self.pass_skipped {
                self.exhausted = true;
                return Ok(Step::Done { left_locked: false });
            }
            if self.passes >= MAX_RETRY_PASSES {
                self.exhausted = true;
                return Ok(Step::Done { left_locked: true });
            }
            self.passes += 1;
            self.after = 0;
            self.pass_skipped = false;
            return Ok(Step::Pass);
        }
        if next_after <= self.after {
            return Err(Stuck(self.after));
        }
        self.after = next_after;
        self.pass_skipped |= skipped_locked;
        if self.would_leap(scanned, skipped_locked, candidates)
            && let Some(end) = self.end
            && end > next_after
        {
            self.after = next_after + (end - next_after) / 2;
            self.leaps += 1;
        }
        let keep = match self.remaining.as_mut() {
            // A page may hold whole members beyond the limit; cards past it stay for a later run.
            Some(left) => {
                let keep = candidates.min(usize::try_from(*left).unwrap_or(usize::MAX));
                *left -= keep as u64;
                keep
            }
            None => candidates,
        };
        Ok(Step::Take { keep })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unlimited_cursor_walks_the_keyset_until_an_empty_page() {
        let mut c = Cursor::new(None);
        assert_eq!(c.page_limit(100), Some(100));
        assert_eq!(c.record(100, 40, false, 100), Ok(Step::Take { keep: 100 }));
        assert_eq!(c.after(), 40);
        assert_eq!(c.record(3, 41, false, 3), Ok(Step::Take { keep: 3 }));
        assert_eq!(c.record(0, 41, false, 0), Ok(Step::Done { left_locked: false }));
        assert_eq!(c.page_limit(100), None, "exhausted");
    }

    #[test]
    fn a_limit_shrinks_pages_and_truncates_whole_members_past_it() {
        let mut c = Cursor::new(Some(150));
        assert_eq!(c.page_limit(100), Some(100));
        // A PostgreSQL page can hold more than asked (whole members): kept while the limit lasts.
        assert_eq!(c.record(104, 10, false, 104), Ok(Step::Take { keep: 104 }));
        assert_eq!(c.page_limit(100), Some(46));
        // Past the limit, the page's last cards stay for a later run.
        assert_eq!(c.record(50, 20, false, 52), Ok(Step::Take { keep: 46 }));
        assert_eq!(c.page_limit(100), None, "the limit is used up");
        assert_eq!(c.page_limit(100), None);
    }

    #[test]
    fn skipped_locked_cards_make_another_pass_from_the_start_then_give_up() {
        let mut c = Cursor::new(None);
        assert_eq!(c.record(10, 5, true, 6), Ok(Step::Take { keep: 6 }));
        assert_eq!(c.record(0, 5, false, 0), Ok(Step::Pass));
        assert_eq!(c.after(), 0, "a pass starts over");
        // A pass that meets nothing locked ends the run.
        assert_eq!(c.record(4, 3, false, 4), Ok(Step::Take { keep: 4 }));
        assert_eq!(c.record(0, 3, false, 0), Ok(Step::Done { left_locked: false }));

        let mut held = Cursor::new(None);
        for _ in 0..MAX_RETRY_PASSES {
            assert_eq!(held.record(1, 9, true, 0), Ok(Step::Take { keep: 0 }));
            assert_eq!(held.record(0, 9, false, 0), Ok(Step::Pass));
        }
        assert_eq!(held.record(1, 9, true, 0), Ok(Step::Take { keep: 0 }));
        assert_eq!(held.record(0, 9, false, 0), Ok(Step::Done { left_locked: true }));
    }

    #[test]
    fn a_page_lost_to_another_worker_leaps_halfway_to_the_end_and_the_next_pass_starts_over() {
        let mut c = Cursor::new(None);
        c.set_end(Some(1_000));
        // Kept 10 of 100 scanned, the rest locked: another worker is here.
        assert!(c.would_leap(100, true, 10));
        assert_eq!(c.record(100, 200, true, 10), Ok(Step::Take { keep: 10 }));
        assert_eq!(c.after(), 600, "halfway from 200 to 1000");
        assert_eq!(c.leaps(), 1);
        // A page that kept most of its cards walks on.
        assert_eq!(c.record(100, 700, true, 90), Ok(Step::Take { keep: 90 }));
        assert_eq!(c.after(), 700);
        assert_eq!(c.record(0, 700, false, 0), Ok(Step::Pass), "a leap is a skip: another pass follows");
        assert_eq!(c.after(), 0);
        // Past the end there is nowhere to leap to.
        assert_eq!(c.record(100, 1_000, true, 0), Ok(Step::Take { keep: 0 }));
        assert_eq!(c.after(), 1_000);
        assert_eq!(c.leaps(), 1);
    }

    #[test]
    fn no_leap_without_a_skip_with_a_limit_or_before_the_end_is_known() {
        let c = Cursor::new(None);
        assert!(!c.would_leap(100, false, 0), "nothing locked: an empty stretch, not a worker");
        assert!(!c.would_leap(100, true, 50), "kept half");
        assert!(!Cursor::new(Some(500)).would_leap(100, true, 0), "a --limit run takes the first cards");
        let mut unknown = Cursor::new(None);
        assert!(unknown.needs_end());
        assert_eq!(unknown.record(100, 200, true, 0), Ok(Step::Take { keep: 0 }));
        assert_eq!(unknown.after(), 200);
        unknown.set_end(None);
        assert!(!unknown.needs_end());
        assert_eq!(unknown.record(100, 300, true, 0), Ok(Step::Take { keep: 0 }));
        assert_eq!(unknown.after(), 300, "an empty window's end is behind the cursor");
    }

    #[test]
    fn a_keyset_that_does_not_advance_is_an_error_not_a_loop() {
        let mut c = Cursor::new(None);
        assert_eq!(c.record(5, 30, false, 5), Ok(Step::Take { keep: 5 }));
        assert_eq!(c.record(5, 30, false, 5), Err(Stuck(30)));
        assert_eq!(c.record(5, 12, false, 5), Err(Stuck(30)));
    }
}
