//! Card expiry months and the renewal window.

use chrono::{Datelike, NaiveDate};

/// A card's expiry month. A card expires at the end of the last day of this month.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct ExpiryMonth {
    year: i32,
    month: u32,
}

impl ExpiryMonth {
    /// Parses the stored `YYYYMM` form; `None` for anything that is not a real month.
    pub fn from_yyyymm(raw: i64) -> Option<Self> {
        let year = i32::try_from(raw / 100).ok()?;
        let month = u32::try_from(raw % 100).ok()?;
        ((1000..=9999).contains(&year) && (1..=12).contains(&month)).then_some(Self { year, month })
    }

    pub fn of_date(date: NaiveDate) -> Self {
        Self { year: date.year(), month: date.month() }
    }

    pub fn yyyymm(self) -> i64 {
        i64::from(self.year) * 100 + i64::from(self.month)
    }

    pub fn last_day(self) -> NaiveDate {
        let (y, m) = if self.month == 12 { (self.year + 1, 1) } else { (self.year, self.month + 1) };
        NaiveDate::from_ymd_opt(y, m, 1).and_then(|first_of_next| first_of_next.pred_opt()).unwrap_or(NaiveDate::MAX)
    }

    pub fn plus_months(self, months: u32) -> Self {
        let zero_based = self.month - 1 + months;
        Self { year: self.year + (zero_based / 12) as i32, month: zero_based % 12 + 1 }
    }

    pub fn minus_months(self, months: u32) -> Self {
        let zero_based = i64::from(self.year) * 12 + i64::from(self.month - 1) - i64::from(months);
        Self { year: zero_based.div_euclid(12) as i32, month: zero_based.rem_euclid(12) as u32 + 1 }
    }

    fn next(self) -> Self {
        self.plus_months(1)
    }

    /// Days from `as_of` to the end of this month (negative once the card has expired).
    pub fn days_until_end(self, as_of: NaiveDate) -> i64 {
        (self.last_day() - as_of).num_days()
    }

    /// `0 <= days to end of month <= window_days` (DESIGN §2).
    pub fn within_window(self, as_of: NaiveDate, window_days: u32) -> bool {
        (0..=i64::from(window_days)).contains(&self.days_until_end(as_of))
    }
}

/// The contiguous range of expiry months (`YYYYMM`, inclusive) whose cards fall in the window
/// for `as_of`. Selection queries use it to seek the expiry index instead of scanning cards.
pub fn window_months(as_of: NaiveDate, window_days: u32) -> Vec<ExpiryMonth> {
    let mut months = Vec::new();
    let mut m = ExpiryMonth::of_date(as_of);
    while m.days_until_end(as_of) <= i64::from(window_days) {
        if m.within_window(as_of, window_days) {
            months.push(m);
        }
        m = m.next();
    }
    months
}
