//! The business date of a run.

use chrono::{DateTime, NaiveDate, Utc};
use chrono_tz::Tz;

/// The business date of `instant` in the issuer's time zone: 23:30 UTC on the 1st is already
/// the 2nd in Asia/Seoul, and that is the date the rules must use.
pub fn business_date(instant: DateTime<Utc>, tz: Tz) -> NaiveDate {
    instant.with_timezone(&tz).date_naive()
}

/// How many days `as_of` lies beyond `today` plus `max_days_ahead`'s allowance: `Some(days
/// after today)` when a run on it would renew cards early, `None` when it may run.
pub fn too_far_ahead(as_of: NaiveDate, today: NaiveDate, max_days_ahead: u32) -> Option<i64> {
    let ahead = (as_of - today).num_days();
    (ahead > i64::from(max_days_ahead)).then_some(ahead)
}

/// Parses `--as-of` (`YYYY-MM-DD`).
pub fn parse_as_of(raw: &str) -> Option<NaiveDate> {
    NaiveDate::parse_from_str(raw, "%Y-%m-%d").ok().filter(|_| raw.len() == 10)
}
