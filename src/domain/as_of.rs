//! The business date of a run.

use chrono::{DateTime, NaiveDate, Utc};
use chrono_tz::Tz;

/// The business date of `instant` in the issuer's time zone: 23:30 UTC on the 1st is already
/// the 2nd in Asia/Seoul, and that is the date the rules must use.
pub fn business_date(instant: DateTime<Utc>, tz: Tz) -> NaiveDate {
    instant.with_timezone(&tz).date_naive()
}

/// Parses `--as-of` (`YYYY-MM-DD`).
pub fn parse_as_of(raw: &str) -> Option<NaiveDate> {
    NaiveDate::parse_from_str(raw, "%Y-%m-%d").ok().filter(|_| raw.len() == 10)
}
