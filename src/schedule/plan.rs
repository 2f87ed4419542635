//! What a check decides, from the schedule and the database's history (pure, unit-tested):
//! which business dates to take over or catch up, oldest first, and which older dates were
//! missed.

use std::collections::BTreeSet;

use chrono::{DateTime, NaiveDate, Utc};

use super::slots::{CronSchedule, Slot};
use crate::store::ScheduleHistory;

/// One run a check starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Planned {
    pub slot: Slot,
    /// The slot's row exists (its claimer died or stopped): link a new run to it.
    pub takeover: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    /// Oldest first.
    pub runs: Vec<Planned>,
    /// Dates older than the catch-up window without a completed full run, oldest first.
    pub missed: Vec<NaiveDate>,
    /// Dates whose slot is held for a person (exit 5).
    pub held: Vec<NaiveDate>,
}

/// The dates a check looks at: the last `max(catch_up_days, 1)` slot dates (the newest one is
/// always looked at, so a dead claimer's slot is taken over even with catch-up off), then up
/// to `lookback_days` older dates for missed counting. Newest first.
pub fn dates_to_check(
    schedule: &CronSchedule,
    catch_up_days: u32,
    lookback_days: u32,
    now: DateTime<Utc>,
) -> Vec<Slot> {
    schedule.last_dates(catch_up_days.max(1) + lookback_days, now)
}

/// Decides from `dates` (newest first, as `dates_to_check` gives them) and the history.
pub fn decide(dates: &[Slot], catch_up_days: u32, history: &ScheduleHistory) -> Plan {
    let mut plan = Plan::default();
    // No scheduled run yet: a first deploy renews nothing from before it.
    let Some(first) = history.first_date else { return plan };
    let window = catch_up_days.max(1) as usize;
    let done: &BTreeSet<NaiveDate> = &history.completed;
    for (i, slot) in dates.iter().enumerate().rev() {
        let date = slot.business_date;
        if date < first || done.contains(&date) {
            continue;
        }
        let claimed: Vec<_> = history.slots.iter().filter(|s| s.as_of == date).collect();
        if i >= window {
            plan.missed.push(date);
            continue;
        }
        if claimed.iter().any(|s| s.held_reason.is_some()) {
            plan.held.push(date);
            continue;
        }
        if claimed.iter().any(|s| s.running) {
            continue;
        }
        match claimed.last() {
            Some(latest) => {
                plan.runs.push(Planned { slot: Slot { at: latest.at, business_date: date }, takeover: true })
            }
            None if catch_up_days > 0 => plan.runs.push(Planned { slot: *slot, takeover: false }),
            None => {}
        }
    }
    plan
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;
    use crate::store::SlotRecord;

    fn daily() -> CronSchedule {
        CronSchedule::parse("0 0 2 * * *", chrono_tz::UTC).unwrap()
    }

    fn d(day: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(2026, 11, day).unwrap()
    }

    fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 20, 3, 0, 0).unwrap()
    }

    fn history(first: u32, completed: &[u32]) -> ScheduleHistory {
        ScheduleHistory {
            first_date: Some(d(first)),
            completed: completed.iter().map(|&c| d(c)).collect(),
            slots: Vec::new(),
        }
    }

    #[test]
    fn missing_dates_in_the_window_run_oldest_first_and_older_ones_are_missed() {
        let dates = dates_to_check(&daily(), 3, 10, now());
        assert_eq!(dates[0].business_date, d(20));
        let plan = decide(&dates, 3, &history(15, &[15, 17, 18]));
        let run_dates: Vec<_> = plan.runs.iter().map(|p| p.slot.business_date).collect();
        assert_eq!(run_dates, vec![d(19), d(20)]);
        assert!(plan.runs.iter().all(|p| !p.takeover));
        assert_eq!(plan.runs[0].slot.at, Utc.with_ymd_and_hms(2026, 11, 19, 2, 0, 0).unwrap());
        assert_eq!(plan.missed, vec![d(16)]);
    }

    #[test]
    fn a_fresh_database_catches_up_nothing_and_nothing_before_the_first_date() {
        let dates = dates_to_check(&daily(), 3, 10, now());
        assert_eq!(decide(&dates, 3, &ScheduleHistory::default()), Plan::default());
        let plan = decide(&dates, 3, &history(20, &[]));
        assert_eq!(plan.runs.len(), 1);
        assert!(plan.missed.is_empty());
    }

    #[test]
    fn a_claimed_slot_is_taken_over_unless_running_or_held() {
        let dates = dates_to_check(&daily(), 0, 0, now());
        let at = Utc.with_ymd_and_hms(2026, 11, 20, 2, 0, 0).unwrap();
        let mut h = history(10, &[]);
        h.slots.push(SlotRecord { at, as_of: d(20), held_reason: None, running: false });
        let plan = decide(&dates, 0, &h);
        assert_eq!(plan.runs, vec![Planned { slot: Slot { at, business_date: d(20) }, takeover: true }]);
        h.slots[0].running = true;
        assert!(decide(&dates, 0, &h).runs.is_empty());
        h.slots[0].running = false;
        h.slots[0].held_reason = Some("limit".into());
        let plan = decide(&dates, 0, &h);
        assert!(plan.runs.is_empty());
        assert_eq!(plan.held, vec![d(20)]);
        // catch-up off: an unclaimed date is left to its tick
        assert!(decide(&dates, 0, &history(10, &[])).runs.is_empty());
    }
}
