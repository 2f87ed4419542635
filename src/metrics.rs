//! The process's metrics (DESIGN §10: these names are the dashboards' and alerts' contract).
//! One global recorder per process, installed by the long-running commands, or by `run` when it
//! pushes to a Pushgateway; without one every call here is a no-op. Counters count what this
//! process did; the `(db)` gauges are read from the database and are the same on every replica.

use std::time::Duration;

use chrono::{DateTime, Utc};
use metrics::{counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use crate::store::{DbGauges, RunStatus, Trigger};

pub const RUNS_TOTAL: &str = "renewal_runs_total";
pub const CARDS_TOTAL: &str = "renewal_cards_total";
pub const FEES_CHARGED_TOTAL: &str = "renewal_fees_charged_total";
pub const RUN_DURATION_SECONDS: &str = "renewal_run_duration_seconds";
pub const RUN_CARDS_LEFT: &str = "renewal_run_cards_left";
pub const LAST_SUCCESS: &str = "renewal_last_success_timestamp_seconds";
pub const PENDING_RESERVATIONS: &str = "renewal_pending_reservations";
pub const PENDING_OLDEST_AGE: &str = "renewal_pending_oldest_age_seconds";
pub const FEE_REQUESTS_TOTAL: &str = "renewal_fee_requests_total";
pub const FEE_REQUEST_DURATION: &str = "renewal_fee_request_duration_seconds";
pub const NEXT_SLOT: &str = "renewal_schedule_next_slot_timestamp_seconds";
pub const MISSED_DATES_TOTAL: &str = "renewal_schedule_missed_dates_total";
pub const TICKS_SKIPPED_TOTAL: &str = "renewal_schedule_ticks_skipped_total";
pub const SLOTS_TOTAL: &str = "renewal_schedule_slots_total";
pub const BUILD_INFO: &str = "renewal_build_info";
pub const API_REQUESTS_TOTAL: &str = "renewal_api_requests_total";
pub const API_REQUEST_DURATION: &str = "renewal_api_request_duration_seconds";
/// The sync API's route (served by `serve`).
pub const API_ROUTE: &str = "/api/v1/prepay-card/expired/reissue";

/// Every code a result row can carry.
pub const CODES: [&str; 11] = [
    "000_000", "000_002", "001_006", "003_004", "003_005", "003_006", "003_007", "003_008", "003_009", "003_010",
    "900_001",
];
/// One HTTP attempt to the fee service ended: charged (2xx), declined (402/422), retryable (408,
/// 429, 5xx, timeout, connection), refused (any other answer: contract or credentials).
pub const FEE_OUTCOMES: [&str; 4] = ["charged", "declined", "retryable", "refused"];
/// What the daemon did with a slot: ran it, found it taken by another replica, skipped it (a
/// run was going in this process), took it over from a dead claimer, or caught it up.
pub const SLOT_OUTCOMES: [&str; 5] = ["claimed", "taken", "skipped", "takeover", "catch_up"];

const RUN_BUCKETS: [f64; 12] = [1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1200.0, 1800.0, 3600.0, 7200.0];
const FEE_BUCKETS: [f64; 12] = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];

static CURRENCY: std::sync::OnceLock<String> = std::sync::OnceLock::new();

/// Installs the process's recorder and registers every label set at 0.
pub fn install(currency: &str) -> Result<PrometheusHandle, String> {
    let _ = CURRENCY.set(currency.to_owned());
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Full(RUN_DURATION_SECONDS.to_owned()), &RUN_BUCKETS)
        .and_then(|b| b.set_buckets_for_metric(Matcher::Full(FEE_REQUEST_DURATION.to_owned()), &FEE_BUCKETS))
        .and_then(|b| b.set_buckets_for_metric(Matcher::Full(API_REQUEST_DURATION.to_owned()), &FEE_BUCKETS))
        .map_err(|e| e.to_string())?
        .install_recorder()
        .map_err(|e| format!("cannot install the metrics recorder: {e}"))?;
    describe();
    for trigger in Trigger::ALL {
        for status in RunStatus::ALL.into_iter().filter(|s| *s != RunStatus::Running) {
            counter!(RUNS_TOTAL, "trigger" => trigger.as_str(), "status" => status.as_str()).absolute(0);
        }
    }
    for code in CODES {
        counter!(CARDS_TOTAL, "code" => code).absolute(0);
    }
    counter!(FEES_CHARGED_TOTAL, "currency" => currency.to_owned()).absolute(0);
    for outcome in FEE_OUTCOMES {
        counter!(FEE_REQUESTS_TOTAL, "outcome" => outcome).absolute(0);
        let _ = histogram!(FEE_REQUEST_DURATION, "outcome" => outcome);
    }
    for trigger in Trigger::ALL {
        let _ = histogram!(RUN_DURATION_SECONDS, "trigger" => trigger.as_str());
    }
    // The API's answers: 200 with 000_000, 400 with each refusal code of the seed's contract.
    for code in CODES.iter().filter(|c| !c.starts_with("900")) {
        let status = if *code == "000_000" { "200" } else { "400" };
        counter!(API_REQUESTS_TOTAL, "route" => API_ROUTE, "status" => status, "code" => *code).absolute(0);
    }
    let _ = histogram!(API_REQUEST_DURATION, "route" => API_ROUTE);
    for outcome in SLOT_OUTCOMES {
        counter!(SLOTS_TOTAL, "outcome" => outcome).absolute(0);
    }
    counter!(MISSED_DATES_TOTAL).absolute(0);
    counter!(TICKS_SKIPPED_TOTAL).absolute(0);
    gauge!(RUN_CARDS_LEFT).set(0.0);
    gauge!(BUILD_INFO, "version" => crate::VERSION).set(1.0);
    Ok(handle)
}

fn describe() {
    describe_counter!(RUNS_TOTAL, "Runs this process ended, by trigger and final status.");
    describe_counter!(CARDS_TOTAL, "Cards this process evaluated and recorded, by result code.");
    describe_counter!(FEES_CHARGED_TOTAL, "Reissue fees this process charged, in the currency's minor unit.");
    describe_histogram!(RUN_DURATION_SECONDS, metrics::Unit::Seconds, "Wall time of the runs this process ended.");
    describe_gauge!(
        RUN_CARDS_LEFT,
        "Cards the last run of this process left for a later run (pending fees, locked cards, an early stop)."
    );
    describe_gauge!(LAST_SUCCESS, "(db) Finish time of the completed full run of the latest completed as-of.");
    describe_gauge!(PENDING_RESERVATIONS, "(db) Fee reservations whose outcome is not known yet.");
    describe_gauge!(PENDING_OLDEST_AGE, "(db) Age of the oldest pending fee reservation (0 when none).");
    describe_counter!(FEE_REQUESTS_TOTAL, "HTTP attempts to the fee service, by outcome.");
    describe_histogram!(FEE_REQUEST_DURATION, metrics::Unit::Seconds, "Duration of HTTP attempts to the fee service.");
    describe_gauge!(NEXT_SLOT, "The daemon's next slot (Unix time).");
    describe_counter!(
        MISSED_DATES_TOTAL,
        "Business dates older than schedule.catch_up_days found without a completed full run."
    );
    describe_counter!(TICKS_SKIPPED_TOTAL, "Ticks skipped because a run was going in this process.");
    describe_counter!(SLOTS_TOTAL, "Slots this daemon handled, by what it did with them.");
    describe_gauge!(BUILD_INFO, "1, labelled with the binary's version.");
    describe_counter!(API_REQUESTS_TOTAL, "Requests the sync API answered, by route, HTTP status and code.");
    describe_histogram!(API_REQUEST_DURATION, metrics::Unit::Seconds, "Duration of the sync API's requests.");
}

pub fn run_ended(trigger: Trigger, status: RunStatus, duration: Duration, cards_left: i64) {
    counter!(RUNS_TOTAL, "trigger" => trigger.as_str(), "status" => status.as_str()).increment(1);
    histogram!(RUN_DURATION_SECONDS, "trigger" => trigger.as_str()).record(duration.as_secs_f64());
    gauge!(RUN_CARDS_LEFT).set(cards_left as f64);
}

/// One recorded card; a reissued card's fee is what was charged.
pub fn card(code: &'static str, fee: i64) {
    counter!(CARDS_TOTAL, "code" => code).increment(1);
    if code == crate::domain::codes::Outcome::Success.code() && fee > 0 {
        let currency = CURRENCY.get().map_or("KRW", String::as_str);
        counter!(FEES_CHARGED_TOTAL, "currency" => currency.to_owned()).increment(fee as u64);
    }
}

pub fn fee_request(outcome: &'static str, duration: Duration) {
    counter!(FEE_REQUESTS_TOTAL, "outcome" => outcome).increment(1);
    histogram!(FEE_REQUEST_DURATION, "outcome" => outcome).record(duration.as_secs_f64());
}

/// One answer of the sync API.
pub fn api_request(status: u16, code: &'static str, duration: Duration) {
    api_answer_counted(status, code);
    histogram!(API_REQUEST_DURATION, "route" => API_ROUTE).record(duration.as_secs_f64());
}

/// One answer counted (the framework's own, 404, 405, 408, 413 and shedding, are counted only, not timed).
pub fn api_answer_counted(status: u16, code: &'static str) {
    counter!(API_REQUESTS_TOTAL, "route" => API_ROUTE, "status" => status.to_string(), "code" => code).increment(1);
}

pub fn next_slot(at: DateTime<Utc>) {
    gauge!(NEXT_SLOT).set(at.timestamp() as f64);
}

pub fn slot(outcome: &'static str) {
    counter!(SLOTS_TOTAL, "outcome" => outcome).increment(1);
}

pub fn tick_skipped() {
    counter!(TICKS_SKIPPED_TOTAL).increment(1);
}

pub fn missed_date() {
    counter!(MISSED_DATES_TOTAL).increment(1);
}

/// Sets the `(db)` gauges; a never-succeeded worker has no last-success series (alerts use `absent()`).
pub fn db_gauges(g: &DbGauges, now: DateTime<Utc>) {
    if let Some(at) = g.last_success {
        gauge!(LAST_SUCCESS).set(at.timestamp_millis() as f64 / 1000.0);
    }
    gauge!(PENDING_RESERVATIONS).set(g.pending_reservations as f64);
    let age = g.oldest_pending.map_or(0.0, |t| (now - t).num_milliseconds().max(0) as f64 / 1000.0);
    gauge!(PENDING_OLDEST_AGE).set(age);
}

/// The Pushgateway job a one-shot `run` pushes under (its only grouping label).
pub const PUSH_JOB: &str = "renewal-worker";

/// PUTs the process's metrics to a Pushgateway once (replacing the job's previous push), grouped
/// by job only: a CronJob's pods come and go, so an instance label would leave stale groups.
pub async fn push(base_url: &str, handle: &PrometheusHandle) -> Result<(), String> {
    let url = format!("{}/metrics/job/{PUSH_JOB}", base_url.trim_end_matches('/'));
    let client = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(2))
        .timeout(Duration::from_secs(5))
        .build()
        .map_err(|e| e.to_string())?;
    let response = client
        .put(&url)
        .header(reqwest::header::CONTENT_TYPE, "text/plain; version=0.0.4")
        .body(handle.render())
        .send()
        .await
        .map_err(|e| format!("PUT {url}: {e}"))?;
    if response.status().is_success() {
        Ok(())
    } else {
        let status = response.status();
        let body = response.text().await.unwrap_or_default();
        Err(format!("PUT {url}: HTTP {status}: {}", body.trim()))
    }
}
