//! The blast-radius budget: a run stops before a chunk would bring its as-of's reissues or fees
//! over `run.max_reissues` / `run.max_fee_total` (0 = no limit). Real chunks count through the
//! database (`ChunkTx::add_to_budget`, over every run of the as-of); a dry run counts in memory.

/// What this process committed so far (a dry run's totals; the test hooks' card count).
#[derive(Debug, Default)]
pub(super) struct Budget {
    pub reissued: u64,
    pub fee_total: i64,
    /// Cards with a committed result.
    pub cards: u64,
}

#[derive(Debug, Clone, Copy)]
pub(super) struct Limits {
    pub max_reissues: u64,
    pub max_fee_total: i64,
}

impl Limits {
    pub fn any(&self) -> bool {
        self.max_reissues > 0 || self.max_fee_total > 0
    }

    /// Why the as-of's totals with chunk `chunk_no` would exceed a limit, if they would.
    pub fn exceeded(&self, chunk_no: u64, reissued: i64, fee_total: i64) -> Option<String> {
        if self.max_reissues > 0 && reissued > i64::try_from(self.max_reissues).unwrap_or(i64::MAX) {
            return Some(format!(
                "chunk {chunk_no} would bring the as-of's reissues to {reissued}, over run.max_reissues = {}",
                self.max_reissues
            ));
        }
        if self.max_fee_total > 0 && fee_total > self.max_fee_total {
            return Some(format!(
                "chunk {chunk_no} would bring the as-of's fees to {fee_total}, over run.max_fee_total = {}",
                self.max_fee_total
            ));
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_of_zero_are_off_and_a_limit_is_exceeded_only_above_it() {
        let off = Limits { max_reissues: 0, max_fee_total: 0 };
        assert!(!off.any());
        assert_eq!(off.exceeded(1, i64::MAX, i64::MAX), None);
        let limits = Limits { max_reissues: 50, max_fee_total: 10_000 };
        assert!(limits.any());
        assert_eq!(limits.exceeded(1, 50, 10_000), None);
        assert!(limits.exceeded(2, 51, 0).is_some_and(|r| r.contains("run.max_reissues = 50")));
        assert!(limits.exceeded(3, 0, 10_001).is_some_and(|r| r.contains("run.max_fee_total = 10000")));
    }
}
