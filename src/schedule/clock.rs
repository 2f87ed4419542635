//! The daemon's wall clock. Tests reach a DST transition (or a business date of the demo data)
//! without waiting for one through `RENEWAL_TEST_CLOCK_SHIFT_SECONDS`: the schedule's clock is
//! real time shifted by that many seconds, the same shift for every process a test starts, so
//! replicas agree on the slots. Unset in production: `Utc::now()`.

use std::sync::OnceLock;

use chrono::{DateTime, Duration, Utc};

pub const CLOCK_SHIFT_ENV: &str = "RENEWAL_TEST_CLOCK_SHIFT_SECONDS";

fn shift() -> Duration {
    static SHIFT: OnceLock<Duration> = OnceLock::new();
    *SHIFT.get_or_init(|| {
        std::env::var(CLOCK_SHIFT_ENV)
            .ok()
            .and_then(|raw| raw.trim().parse::<i64>().ok())
            .map(Duration::seconds)
            .unwrap_or_default()
    })
}

pub fn now() -> DateTime<Utc> {
    Utc::now() + shift()
}
