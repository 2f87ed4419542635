//! Reissue fees through an external payment service.
//!
//! One `POST {url}` per fee with `{memberId, amount, currency, reference}`, the card's
//! correlation id and an idempotency key derived from the card and its application (the same on
//! every retry and every rerun, so the service charges a key at most once). 2xx = charged;
//! 402/422 = declined (`003_010`); 408, 429 (Retry-After honoured), 5xx, timeouts and connection
//! errors = transient, retried with exponential backoff and jitter (`backon`), bounded by count
//! and total delay; any other 4xx is a contract or credentials problem and stops the run.
//! At most `max_in_flight` requests at once and, optionally, `rate_limit_per_second`.

use std::collections::{BTreeMap, HashMap};
use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::{Duration, Instant};

use backon::{ExponentialBuilder, Retryable};
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use serde::Serialize;
use tokio::sync::{Mutex, Semaphore};
use tokio::task::JoinSet;

use secrecy::ExposeSecret;

use crate::config::HttpFeeSettings;

/// One fee to charge.
#[derive(Debug, Clone)]
pub struct ChargeRequest {
    pub member_id: i64,
    pub card_id: i64,
    pub amount: i64,
    /// The application's cardApplyNo.
    pub reference: String,
    pub correlation_id: String,
}

impl ChargeRequest {
    /// Identical for every attempt of this application, across retries, reruns and replicas.
    pub fn idempotency_key(&self) -> String {
        format!("reissue-{}-{}", self.card_id, self.reference)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChargeOutcome {
    Charged {
        payment_ref: Option<String>,
    },
    Declined {
        status: u16,
    },
    /// Still unknown after the retries: the reservation stays pending for a later settlement.
    Unknown {
        reason: String,
    },
    /// Not charged for sure: never sent (the run stopped before this fee's turn), or refused with
    /// a contract error on the first and only request.
    NotSent,
}

#[derive(Debug, thiserror::Error)]
pub enum FeeServiceError {
    #[error("fee service configuration: {0}")]
    Config(String),
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ChargeBody<'a> {
    member_id: i64,
    amount: i64,
    currency: &'static str,
    reference: &'a str,
}

/// Why one attempt did not end the charge.
#[derive(Debug)]
enum Attempt {
    Transient { reason: String, retry_after: Option<Duration> },
    Fatal(String),
}

pub struct HttpCharger {
    client: reqwest::Client,
    settings: HttpFeeSettings,
    in_flight: Semaphore,
    limiter: Option<DefaultDirectRateLimiter>,
    consecutive_failures: AtomicU32,
    panicked_tasks: AtomicU32,
    tripped: AtomicBool,
    /// Why the run must stop (consecutive transient failures or a fatal answer), once known.
    stop_reason: std::sync::Mutex<Option<String>>,
    /// When the breaker opened (for its cool-down).
    opened_at: std::sync::Mutex<Option<Instant>>,
    /// Members with charges under way: a member's fees are sent one at a time even when two
    /// chunks of the run hold cards of the same member (SQLite pages by card).
    members: std::sync::Mutex<HashMap<i64, Arc<Mutex<()>>>>,
}

impl HttpCharger {
    pub fn new(settings: &HttpFeeSettings) -> Result<Arc<Self>, FeeServiceError> {
        let client = reqwest::Client::builder()
            .connect_timeout(Duration::from_millis(settings.connect_timeout_ms))
            .timeout(Duration::from_millis(settings.request_timeout_ms))
            .pool_max_idle_per_host(settings.max_in_flight as usize)
            .build()
            .map_err(|e| FeeServiceError::Config(e.to_string()))?;
        let limiter = NonZeroU32::new(settings.rate_limit_per_second)
            .map(|rate| RateLimiter::direct(Quota::per_second(rate).allow_burst(NonZeroU32::MIN)));
        Ok(Arc::new(Self {
            client,
            settings: settings.clone(),
            in_flight: Semaphore::new(settings.max_in_flight as usize),
            limiter,
            consecutive_failures: AtomicU32::new(0),
            panicked_tasks: AtomicU32::new(0),
            tripped: AtomicBool::new(false),
            stop_reason: std::sync::Mutex::new(None),
            opened_at: std::sync::Mutex::new(None),
            members: std::sync::Mutex::new(HashMap::new()),
        }))
    }

    /// True while the breaker is open: the run in progress must stop claiming cards, and (in a
    /// long-lived process) nothing is sent. It closes again `breaker_cool_down_ms` after it
    /// opened: the next charge then tries the service, and enough failures open it again.
    pub fn tripped(&self) -> bool {
        if !self.tripped.load(Ordering::SeqCst) {
            return false;
        }
        let mut opened = self.opened_at.lock().unwrap_or_else(|p| p.into_inner());
        let cool_down = Duration::from_millis(self.settings.breaker_cool_down_ms);
        match *opened {
            Some(at) if at.elapsed() >= cool_down => {
                *opened = None;
                self.consecutive_failures.store(0, Ordering::SeqCst);
                self.stop_reason.lock().unwrap_or_else(|p| p.into_inner()).take();
                self.tripped.store(false, Ordering::SeqCst);
                tracing::info!(event = "fee_breaker_closed", "fee service breaker closed after its cool-down");
                false
            }
            _ => true,
        }
    }

    pub async fn stop_reason(&self) -> Option<String> {
        self.stop_reason.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    async fn trip(&self, reason: String) {
        self.opened_at.lock().unwrap_or_else(|p| p.into_inner()).get_or_insert_with(Instant::now);
        self.stop_reason.lock().unwrap_or_else(|p| p.into_inner()).get_or_insert_with(|| reason.clone());
        if !self.tripped.swap(true, Ordering::SeqCst) {
            tracing::warn!(event = "fee_breaker_opened", reason = %reason, "no new charges until the cool-down ends");
        }
    }

    fn backoff(&self) -> ExponentialBuilder {
        let s = &self.settings;
        ExponentialBuilder::default()
            .with_min_delay(Duration::from_millis(s.backoff_min_ms))
            .with_max_delay(Duration::from_millis(s.backoff_max_ms))
            .with_max_times(s.max_retries as usize)
            .with_total_delay(Some(Duration::from_millis(s.retry_total_ms)))
            .with_jitter()
    }

    /// Charges every request, one member's fees one at a time in the given (card) order so the
    /// service's balance decides them in that order, different members concurrently.
    pub async fn charge_all(self: &Arc<Self>, requests: Vec<ChargeRequest>) -> Vec<(ChargeRequest, ChargeOutcome)> {
        let mut by_member: BTreeMap<i64, Vec<ChargeRequest>> = BTreeMap::new();
        for r in requests {
            by_member.entry(r.member_id).or_default().push(r);
        }
        let mut tasks = JoinSet::new();
        // What each task was given, so a task that panics leaves its fees pending, not lost.
        let mut given = HashMap::new();
        for (_, member_requests) in by_member {
            let charger = Arc::clone(self);
            let copy = member_requests.clone();
            let handle = tasks.spawn(async move {
                let member = member_requests.first().map_or(0, |r| r.member_id);
                let turn = charger.member_turn(member);
                let guard = turn.lock().await;
                let mut done = Vec::with_capacity(member_requests.len());
                for request in member_requests {
                    let outcome = charger.charge(&request).await;
                    done.push((request, outcome));
                }
                drop(guard);
                charger.end_turn(member, turn);
                done
            });
            given.insert(handle.id(), copy);
        }
        let mut all = Vec::new();
        while let Some(joined) = tasks.join_next_with_id().await {
            match joined {
                Ok((_, done)) => all.extend(done),
                Err(join_error) => {
                    // A member task cannot panic by design; if one did, nobody knows whether its
                    // requests reached the service: they stay pending (the same idempotency key
                    // settles them later), counted and logged.
                    let requests = given.remove(&join_error.id()).unwrap_or_default();
                    self.panicked_tasks.fetch_add(1, Ordering::SeqCst);
                    tracing::error!(
                        event = "fee_task_failed",
                        error = %join_error,
                        requests = requests.len(),
                        "a fee task ended abnormally; its charges stay pending"
                    );
                    let reason = format!("the charge task ended abnormally: {join_error}");
                    all.extend(requests.into_iter().map(|r| (r, ChargeOutcome::Unknown { reason: reason.clone() })));
                }
            }
        }
        all
    }

    /// Fee tasks that ended abnormally in this process's life.
    pub fn panicked_tasks(&self) -> u32 {
        self.panicked_tasks.load(Ordering::SeqCst)
    }

    fn member_turn(&self, member: i64) -> Arc<Mutex<()>> {
        let mut members = self.members.lock().unwrap_or_else(|p| p.into_inner());
        Arc::clone(members.entry(member).or_default())
    }

    /// Forgets the member's turn once nobody else waits for it, so the map stays small.
    fn end_turn(&self, member: i64, turn: Arc<Mutex<()>>) {
        let mut members = self.members.lock().unwrap_or_else(|p| p.into_inner());
        if Arc::strong_count(&turn) == 2 {
            members.remove(&member);
        }
    }

    pub async fn charge(&self, request: &ChargeRequest) -> ChargeOutcome {
        if self.tripped() {
            return ChargeOutcome::NotSent;
        }
        // Attempts that reached the wire: after a transient failure a later 4xx does not prove
        // the earlier request was not charged.
        let attempts = AtomicU32::new(0);
        let attempt = || async {
            attempts.fetch_add(1, Ordering::SeqCst);
            self.attempt(request).await
        };
        let result = attempt
            .retry(self.backoff())
            .when(|e| matches!(e, Attempt::Transient { .. }) && !self.tripped())
            .adjust(|e, planned| match e {
                Attempt::Transient { retry_after: Some(wait), .. } => planned.map(|_| *wait),
                _ => planned,
            })
            .notify(|e, wait| {
                tracing::warn!(event = "fee_retry", correlation_id = %request.correlation_id, wait_ms = wait.as_millis() as u64, error = ?e);
            })
            .await;
        let outcome = match result {
            Ok(outcome) => outcome,
            Err(Attempt::Fatal(reason)) => {
                self.trip(format!("fee service: {reason}")).await;
                if attempts.load(Ordering::SeqCst) > 1 {
                    ChargeOutcome::Unknown { reason }
                } else {
                    // The service refused the only request it got: nothing was charged.
                    ChargeOutcome::NotSent
                }
            }
            Err(Attempt::Transient { reason, .. }) => {
                // Retries cut short by the breaker (say a 401 on another charge): the pending
                // line names that cause, not only this charge's own last timeout.
                let reason = match (self.tripped(), self.stop_reason().await) {
                    (true, Some(stop)) => {
                        format!("retries stopped when the breaker opened ({stop}); last attempt: {reason}")
                    }
                    _ => reason,
                };
                ChargeOutcome::Unknown { reason }
            }
        };
        self.count(&outcome).await;
        outcome
    }

    async fn attempt(&self, request: &ChargeRequest) -> Result<ChargeOutcome, Attempt> {
        let _permit = self.in_flight.acquire().await.map_err(|e| Attempt::Fatal(e.to_string()))?;
        if let Some(limiter) = &self.limiter {
            limiter.until_ready().await;
        }
        let body = ChargeBody {
            member_id: request.member_id,
            amount: request.amount,
            currency: "KRW",
            reference: &request.reference,
        };
        let mut call = self
            .client
            .post(&self.settings.url)
            .header("X-KM-Correlation-Id", &request.correlation_id)
            .header("Idempotency-Key", request.idempotency_key())
            .json(&body);
        let api_key = self.settings.api_key.expose_secret();
        if !api_key.is_empty() {
            call = call.header(self.settings.api_key_header.as_str(), api_key);
        }
        let started = Instant::now();
        let result = match call.send().await {
            Err(e) => Err(Attempt::Transient { reason: transport_reason(&e), retry_after: None }),
            Ok(response) => classify(response).await,
        };
        let outcome = match &result {
            Ok(ChargeOutcome::Charged { .. }) => "charged",
            Ok(ChargeOutcome::Declined { .. }) => "declined",
            Ok(_) | Err(Attempt::Transient { .. }) => "retryable",
            Err(Attempt::Fatal(_)) => "refused",
        };
        crate::metrics::fee_request(outcome, started.elapsed());
        result
    }

    /// Counts charges, not attempts: a charge that succeeds after retries is no failure, while
    /// one still unknown after all its retries is. Any definitive answer resets the count.
    async fn count(&self, outcome: &ChargeOutcome) {
        match outcome {
            ChargeOutcome::Unknown { reason } => {
                let failures = self.consecutive_failures.fetch_add(1, Ordering::SeqCst) + 1;
                if failures >= self.settings.max_consecutive_failures {
                    self.trip(format!("fee service: {failures} charges failed in a row, last: {reason}")).await;
                }
            }
            ChargeOutcome::Charged { .. } | ChargeOutcome::Declined { .. } => {
                self.consecutive_failures.store(0, Ordering::SeqCst)
            }
            ChargeOutcome::NotSent => {}
        }
    }
}

fn transport_reason(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        "timeout".to_owned()
    } else if e.is_connect() {
        "connection failed".to_owned()
    } else {
        "transport error".to_owned()
    }
}

async fn classify(response: reqwest::Response) -> Result<ChargeOutcome, Attempt> {
    let status = response.status();
    let code = status.as_u16();
    if status.is_success() {
        let payment_ref = response
            .json::<serde_json::Value>()
            .await
            .ok()
            .and_then(|v| v.get("chargeId").and_then(|c| c.as_str().map(str::to_owned)));
        return Ok(ChargeOutcome::Charged { payment_ref });
    }
    match code {
        402 | 422 => Ok(ChargeOutcome::Declined { status: code }),
        408 | 429 | 500..=599 => {
            let retry_after = response
                .headers()
                .get(reqwest::header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<u64>().ok())
                .map(Duration::from_secs);
            Err(Attempt::Transient { reason: format!("HTTP {code}"), retry_after })
        }
        _ => Err(Attempt::Fatal(format!("HTTP {code} (a contract or credentials problem, not a member's)"))),
    }
}
