//! Slots and their business dates, computed here rather than by the scheduler (DESIGN §10):
//! tokio-cron-scheduler 0.15.1 freezes a zone's UTC offset when a job is created (#107), so the
//! daemon only asks it to wake up at instants this module computes.
//!
//! The expression is matched against *local wall-clock* times (croner on naive times, with the
//! parser settings tokio-cron-scheduler uses), and each match becomes an instant:
//! - a wall-clock time that happens once is that instant;
//! - one a fall-back repeats is its first occurrence (so the slot runs once);
//! - one inside a spring-forward gap is the first instant after the gap; several matches in one
//!   gap share that instant, which is one slot.
//!
//! A slot's business date is the local date of its wall-clock match.

use chrono::{DateTime, Duration, LocalResult, NaiveDate, NaiveDateTime, TimeZone, Timelike, Utc};
use chrono_tz::Tz;
use croner::Cron;
use croner::parser::{CronParser, Seconds};

/// The largest UTC offset change of any zone's transition (hours), plus margin.
const MAX_SHIFT_HOURS: i64 = 3;
/// How far a search for a slot looks before giving up (a pattern like "Feb 30" never matches).
const SEARCH_STEPS: usize = 200_000;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScheduleError {
    #[error(
        "schedule.cron = {0:?} has 5 fields; it needs 6, seconds first (e.g. \"0 0 2 * * *\" for 02:00:00 every day)"
    )]
    FiveFields(String),
    #[error("schedule.cron = {expr:?} is not a cron expression: {reason}")]
    Invalid { expr: String, reason: String },
    #[error("schedule.cron = {0:?} never fires")]
    Never(String),
}

/// One firing of the schedule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Slot {
    pub at: DateTime<Utc>,
    /// The run's as-of: the slot's local date.
    pub business_date: NaiveDate,
}

#[derive(Debug, Clone)]
pub struct CronSchedule {
    expr: String,
    cron: Cron,
    tz: Tz,
}

impl CronSchedule {
    /// Parses exactly as tokio-cron-scheduler 0.15 does: seconds required, day-of-month and
    /// day-of-week both honoured.
    pub fn parse(expr: &str, tz: Tz) -> Result<Self, ScheduleError> {
        if expr.split_whitespace().count() == 5 {
            return Err(ScheduleError::FiveFields(expr.to_owned()));
        }
        let cron = CronParser::builder()
            .seconds(Seconds::Required)
            .dom_and_dow(true)
            .build()
            .parse(expr)
            .map_err(|e| ScheduleError::Invalid { expr: expr.to_owned(), reason: e.to_string() })?;
        let schedule = Self { expr: expr.to_owned(), cron, tz };
        let probe = Utc.with_ymd_and_hms(2000, 1, 1, 0, 0, 0).single().unwrap_or_default();
        match schedule.next_after(probe) {
            Some(_) => Ok(schedule),
            None => Err(ScheduleError::Never(expr.to_owned())),
        }
    }

    pub fn expr(&self) -> &str {
        &self.expr
    }

    pub fn time_zone(&self) -> Tz {
        self.tz
    }

    /// The first slot strictly after `t`.
    pub fn next_after(&self, t: DateTime<Utc>) -> Option<Slot> {
        // Matches before t's wall-clock time map to instants at or before t (the mapping never
        // moves a later wall-clock time to an earlier instant), so the search starts there.
        let mut naive = self.local(t);
        let mut inclusive = true;
        for _ in 0..SEARCH_STEPS {
            let found = whole_second(self.cron.find_next_occurrence(&as_utc(naive), inclusive).ok()?.naive_utc());
            let slot = self.slot_of(found);
            if slot.at > t {
                return Some(slot);
            }
            naive = found;
            inclusive = false;
        }
        None
    }

    /// The latest slot at or before `t`.
    pub fn latest_at_or_before(&self, t: DateTime<Utc>) -> Option<Slot> {
        self.latest_matching(t, |_| true)
    }

    /// The latest slot of business date `date` at or before `t`.
    pub fn latest_on(&self, date: NaiveDate, t: DateTime<Utc>) -> Option<Slot> {
        let end_of_day = date.succ_opt()?.and_hms_opt(0, 0, 0)? - Duration::seconds(1);
        let start = (self.local(t) + Duration::hours(MAX_SHIFT_HOURS)).min(end_of_day);
        self.search_back(start, t, |slot| slot.business_date <= date).filter(|slot| slot.business_date == date)
    }

    /// The latest slot of each of the last `n` business dates that have a slot at or before
    /// `t`, newest first.
    pub fn last_dates(&self, n: u32, t: DateTime<Utc>) -> Vec<Slot> {
        let mut out = Vec::new();
        let mut next = if n == 0 { None } else { self.latest_at_or_before(t) };
        while let Some(slot) = next {
            out.push(slot);
            if out.len() >= n as usize {
                break;
            }
            // The latest wall-clock match before this date's first second.
            let day_start = slot.business_date.and_hms_opt(0, 0, 0).unwrap_or_default();
            next = self.search_back(day_start - Duration::seconds(1), slot.at, |_| true);
        }
        out
    }

    fn latest_matching(&self, t: DateTime<Utc>, accept: impl Fn(&Slot) -> bool) -> Option<Slot> {
        // A wall-clock match up to one offset change after t's can be an instant before t.
        self.search_back(self.local(t) + Duration::hours(MAX_SHIFT_HOURS), t, accept)
    }

    /// Walks wall-clock matches backwards from `start` (inclusive) to the first slot at or
    /// before `t` that `accept` takes.
    fn search_back(&self, start: NaiveDateTime, t: DateTime<Utc>, accept: impl Fn(&Slot) -> bool) -> Option<Slot> {
        let mut naive = start;
        let mut inclusive = true;
        for _ in 0..SEARCH_STEPS {
            let found = whole_second(self.cron.find_previous_occurrence(&as_utc(naive), inclusive).ok()?.naive_utc());
            let slot = self.slot_of(found);
            if slot.at <= t && accept(&slot) {
                return Some(slot);
            }
            naive = found;
            inclusive = false;
        }
        None
    }

    /// `t`'s wall-clock time, to the whole second (croner keeps a start's fraction in its matches).
    fn local(&self, t: DateTime<Utc>) -> NaiveDateTime {
        let wall = t.with_timezone(&self.tz).naive_local();
        wall.with_nanosecond(0).unwrap_or(wall)
    }

    fn slot_of(&self, wall: NaiveDateTime) -> Slot {
        Slot { at: instant_of(self.tz, wall), business_date: wall.date() }
    }
}

fn whole_second(t: NaiveDateTime) -> NaiveDateTime {
    t.with_nanosecond(0).unwrap_or(t)
}

/// croner matches fields literally on a UTC time: a wall-clock time with no zone rules applied.
fn as_utc(naive: NaiveDateTime) -> DateTime<Utc> {
    Utc.from_utc_datetime(&naive)
}

/// The instant a wall-clock match fires at (see the module's rules).
pub fn instant_of(tz: Tz, wall: NaiveDateTime) -> DateTime<Utc> {
    match tz.from_local_datetime(&wall) {
        LocalResult::Single(t) => t.with_timezone(&Utc),
        LocalResult::Ambiguous(first, second) => first.min(second).with_timezone(&Utc),
        LocalResult::None => {
            // In a gap: the first wall-clock minute that exists is the transition instant.
            let mut minute = wall.with_second(0).unwrap_or(wall);
            for _ in 0..(24 * 60) {
                minute += Duration::minutes(1);
                if let Some(t) = tz.from_local_datetime(&minute).earliest() {
                    return t.with_timezone(&Utc);
                }
            }
            as_utc(wall)
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use chrono::NaiveTime;
    use chrono_tz::{America::New_York, Asia::Seoul, Europe::Berlin};

    use super::*;

    fn utc(y: i32, m: u32, d: u32, h: u32, min: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(y, m, d, h, min, 0).unwrap()
    }

    fn date(y: i32, m: u32, d: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(y, m, d).unwrap()
    }

    /// Every slot from `from` to `to`, by business date.
    fn slots_between(s: &CronSchedule, from: DateTime<Utc>, to: DateTime<Utc>) -> BTreeMap<NaiveDate, Vec<Slot>> {
        let mut by_date: BTreeMap<NaiveDate, Vec<Slot>> = BTreeMap::new();
        let mut t = from;
        let mut last = None;
        while let Some(slot) = s.next_after(t) {
            if slot.at >= to {
                break;
            }
            assert!(last.is_none_or(|l| slot.at > l), "slots strictly increase");
            last = Some(slot.at);
            by_date.entry(slot.business_date).or_default().push(slot);
            t = slot.at;
        }
        by_date
    }

    #[test]
    fn every_local_date_of_a_year_gets_exactly_one_daily_slot_in_dst_and_non_dst_zones() {
        for tz in [New_York, Berlin, Seoul] {
            for expr in ["0 0 2 * * *", "0 30 2 * * *", "0 30 1 * * *", "0 0 0 * * *", "59 59 23 * * *"] {
                let s = CronSchedule::parse(expr, tz).unwrap();
                let start = instant_of(tz, date(2026, 1, 1).and_hms_opt(0, 0, 0).unwrap()) - Duration::seconds(1);
                let end = instant_of(tz, date(2027, 1, 1).and_hms_opt(0, 0, 0).unwrap());
                let by_date = slots_between(&s, start, end);
                assert_eq!(by_date.len(), 365, "{expr} in {tz}");
                let mut day = date(2026, 1, 1);
                for (business_date, slots) in &by_date {
                    assert_eq!(*business_date, day, "{expr} in {tz}: no date skipped");
                    assert_eq!(slots.len(), 1, "{expr} in {tz} on {business_date}: {slots:?}");
                    let local = slots[0].at.with_timezone(&tz);
                    assert_eq!(local.date_naive(), *business_date, "{expr} in {tz}: fires on its own date");
                    day = day.succ_opt().unwrap();
                }
            }
        }
    }

    #[test]
    fn a_slot_in_a_spring_forward_gap_runs_once_at_the_first_instant_after_it() {
        let ny = CronSchedule::parse("0 30 2 * * *", New_York).unwrap();
        let slot = ny.next_after(utc(2026, 3, 8, 0, 0)).unwrap();
        assert_eq!(slot, Slot { at: utc(2026, 3, 8, 7, 0), business_date: date(2026, 3, 8) }); // 03:00 EDT
        assert_eq!(ny.next_after(slot.at).unwrap().at, utc(2026, 3, 9, 6, 30)); // 02:30 EDT

        let berlin = CronSchedule::parse("0 30 2 * * *", Berlin).unwrap();
        assert_eq!(berlin.next_after(utc(2026, 3, 28, 12, 0)).unwrap().at, utc(2026, 3, 29, 1, 0)); // 03:00 CEST

        // Several matches inside one gap (and the one right after it) are one slot.
        let half_hourly = CronSchedule::parse("0 0,30 * * * *", New_York).unwrap();
        let night = slots_between(&half_hourly, utc(2026, 3, 8, 6, 0), utc(2026, 3, 8, 8, 0));
        let instants: Vec<_> = night.values().flatten().map(|s| s.at).collect();
        assert_eq!(instants, vec![utc(2026, 3, 8, 6, 30), utc(2026, 3, 8, 7, 0), utc(2026, 3, 8, 7, 30)]);
    }

    #[test]
    fn a_slot_a_fall_back_repeats_runs_once_at_its_first_occurrence() {
        let ny = CronSchedule::parse("0 30 1 * * *", New_York).unwrap();
        let slot = ny.next_after(utc(2026, 11, 1, 0, 0)).unwrap();
        assert_eq!(slot, Slot { at: utc(2026, 11, 1, 5, 30), business_date: date(2026, 11, 1) }); // 01:30 EDT
        // The second 01:30 (EST, 06:30 UTC) is no slot: the next one is the next night's.
        assert_eq!(ny.next_after(slot.at).unwrap().at, utc(2026, 11, 2, 6, 30));
        // During the repeated hour, the latest slot is the first occurrence.
        assert_eq!(ny.latest_at_or_before(utc(2026, 11, 1, 6, 45)).unwrap(), slot);

        let berlin = CronSchedule::parse("0 30 2 * * *", Berlin).unwrap();
        let slot = berlin.next_after(utc(2026, 10, 24, 12, 0)).unwrap();
        assert_eq!(slot.at, utc(2026, 10, 25, 0, 30)); // 02:30 CEST, not 02:30 CET
        assert_eq!(berlin.next_after(slot.at).unwrap().at, utc(2026, 10, 26, 1, 30));
    }

    #[test]
    fn the_business_date_is_the_slots_local_date_not_utcs() {
        let seoul = CronSchedule::parse("0 0 2 * * *", Seoul).unwrap();
        // 02:00 KST on the 21st is 17:00 UTC on the 20th.
        let slot = seoul.next_after(utc(2026, 11, 20, 12, 0)).unwrap();
        assert_eq!(slot, Slot { at: utc(2026, 11, 20, 17, 0), business_date: date(2026, 11, 21) });
        // A job started late (or retried after midnight) still gets its slot's date.
        assert_eq!(seoul.latest_at_or_before(utc(2026, 11, 21, 16, 59)).unwrap().business_date, date(2026, 11, 21));
        assert_eq!(seoul.latest_at_or_before(utc(2026, 11, 20, 16, 59)).unwrap().business_date, date(2026, 11, 20));
    }

    #[test]
    fn the_last_dates_and_the_latest_slot_of_a_date() {
        let every_2s = CronSchedule::parse("*/2 * * * * *", chrono_tz::UTC).unwrap();
        let now = Utc.with_ymd_and_hms(2026, 11, 20, 0, 0, 3).unwrap() + Duration::milliseconds(886);
        // Slots are whole seconds whatever the fraction of the instant asked about.
        assert_eq!(every_2s.next_after(now).unwrap().at, Utc.with_ymd_and_hms(2026, 11, 20, 0, 0, 4).unwrap());
        let last = every_2s.last_dates(3, now);
        let dates: Vec<_> = last.iter().map(|s| s.business_date).collect();
        assert_eq!(dates, vec![date(2026, 11, 20), date(2026, 11, 19), date(2026, 11, 18)]);
        assert_eq!(last[0].at, Utc.with_ymd_and_hms(2026, 11, 20, 0, 0, 2).unwrap());
        assert_eq!(last[1].at, Utc.with_ymd_and_hms(2026, 11, 19, 23, 59, 58).unwrap());
        let on = every_2s.latest_on(date(2026, 11, 19), now).unwrap();
        assert_eq!(on.at.time(), NaiveTime::from_hms_opt(23, 59, 58).unwrap());
        assert_eq!(every_2s.latest_on(date(2026, 11, 21), now), None);
        assert!(every_2s.last_dates(0, now).is_empty());

        // Dates without a slot are not dates of the schedule: a weekly one steps a week.
        let mondays = CronSchedule::parse("0 0 2 * * Mon", chrono_tz::UTC).unwrap();
        let dates: Vec<_> = mondays.last_dates(2, now).iter().map(|s| s.business_date).collect();
        assert_eq!(dates, vec![date(2026, 11, 16), date(2026, 11, 9)]);
    }

    #[test]
    fn expressions_are_parsed_as_the_scheduler_parses_them() {
        let five = CronSchedule::parse("0 2 * * *", Seoul).unwrap_err();
        assert!(matches!(five, ScheduleError::FiveFields(_)));
        assert!(five.to_string().contains("needs 6, seconds first"), "{five}");
        assert!(matches!(CronSchedule::parse("0 0 25 * * *", Seoul), Err(ScheduleError::Invalid { .. })));
        assert!(matches!(CronSchedule::parse("every night", Seoul), Err(ScheduleError::Invalid { .. })));
        assert!(matches!(CronSchedule::parse("0 0 2 30 2 *", Seoul), Err(ScheduleError::Never(_))));
        // Day-of-month and day-of-week are both honoured (AND), as tokio-cron-scheduler sets it.
        let friday_13th = CronSchedule::parse("0 0 2 13 * Fri", chrono_tz::UTC).unwrap();
        let next = friday_13th.next_after(utc(2026, 1, 1, 0, 0)).unwrap();
        assert_eq!(next.business_date, date(2026, 2, 13));
        // The same parse tokio-cron-scheduler makes accepts it.
        assert!(tokio_cron_scheduler::Job::new("0 0 2 13 * Fri", |_, _| {}).is_ok());
        assert!(tokio_cron_scheduler::Job::new("0 2 * * *", |_, _| {}).is_err());
    }
}
