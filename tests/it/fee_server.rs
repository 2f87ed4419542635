//! A small fee service for tests: a real HTTP server on loopback that holds member balances,
//! answers idempotently per key, sleeps inside its handler (so it can count requests in flight,
//! which wiremock cannot), and checks that no card is ever charged twice across all keys.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use serde::Deserialize;

/// What the server does with one request before its normal processing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Answer this status without charging.
    Status(u16),
    /// Charge, then sleep this long before answering (the client times out first).
    SlowAfterCharge(Duration),
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ChargeBody {
    member_id: i64,
    amount: i64,
    currency: String,
    reference: String,
}

#[derive(Default)]
pub struct Ledger {
    pub balances: HashMap<i64, i64>,
    /// Requests per idempotency key.
    pub requests: HashMap<String, u32>,
    /// The answer given to a key, replayed on every later request with it.
    answers: HashMap<String, (u16, Option<String>)>,
    /// Successful charges per card id (parsed from the key), across all keys.
    pub charged_cards: HashMap<i64, u32>,
    pub charges: u64,
    pub first_request: Option<Instant>,
    pub last_response: Option<Instant>,
    /// Faults applied to each key's first requests, in order.
    per_key_faults: Vec<Fault>,
    always: Option<Fault>,
    pub missing_headers: u32,
    /// Values of the X-Api-Key header seen.
    pub api_keys: std::collections::BTreeSet<String>,
}

pub struct Shared {
    pub ledger: Mutex<Ledger>,
    latency: Duration,
    alarms: Arc<Alarms>,
    in_flight: AtomicUsize,
    pub max_in_flight: AtomicUsize,
    /// Requests answered and the time they spent in the handler, for the mean service time.
    handled: AtomicU64,
    handled_nanos: AtomicU64,
}

/// The service's latency, kept to within a fraction of a millisecond. tokio's timer rounds each
/// sleep up to its next millisecond tick and fires on the runtime's next wake-up: with
/// `tokio::time::sleep`, the bench's "20 ms" service spent 21.2 ms per request (Little's law on
/// its in-flight samples), so no client could reach 64 / 20 ms. One thread holds the deadlines
/// (a condition variable's timed wait is a futex, late by tens of microseconds) and wakes each
/// request's task when its deadline passes.
struct Alarms {
    state: Mutex<AlarmState>,
    changed: Condvar,
}

#[derive(Default)]
struct AlarmState {
    /// Deadlines, soonest first; the sequence number keeps equal deadlines apart.
    due: BinaryHeap<Reverse<(Instant, u64)>>,
    wakers: HashMap<u64, tokio::sync::oneshot::Sender<()>>,
    next: u64,
    stopped: bool,
}

impl Alarms {
    fn start() -> (Arc<Self>, std::thread::JoinHandle<()>) {
        let alarms = Arc::new(Self { state: Mutex::new(AlarmState::default()), changed: Condvar::new() });
        let ring = Arc::clone(&alarms);
        (alarms, std::thread::spawn(move || ring.ring()))
    }

    async fn sleep(&self, wait: Duration) {
        let (wake, woken) = tokio::sync::oneshot::channel();
        {
            let mut state = self.state.lock().unwrap();
            let seq = state.next;
            state.next += 1;
            state.due.push(Reverse((Instant::now() + wait, seq)));
            state.wakers.insert(seq, wake);
        }
        self.changed.notify_one();
        let _ = woken.await;
    }

    fn ring(&self) {
        let mut state = self.state.lock().unwrap();
        while !state.stopped {
            let Some(&Reverse((at, seq))) = state.due.peek() else {
                state = self.changed.wait(state).unwrap();
                continue;
            };
            let now = Instant::now();
            if at <= now {
                state.due.pop();
                if let Some(wake) = state.wakers.remove(&seq) {
                    let _ = wake.send(());
                }
            } else {
                state = self.changed.wait_timeout(state, at - now).unwrap().0;
            }
        }
    }

    fn stop(&self) {
        self.state.lock().unwrap().stopped = true;
        self.changed.notify_one();
    }
}

pub struct FeeServer {
    pub addr: SocketAddr,
    pub shared: Arc<Shared>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
    alarm_thread: Option<std::thread::JoinHandle<()>>,
}

impl FeeServer {
    pub fn start(balances: HashMap<i64, i64>, latency: Duration) -> Self {
        let (alarms, alarm_thread) = Alarms::start();
        let shared = Arc::new(Shared {
            ledger: Mutex::new(Ledger { balances, ..Ledger::default() }),
            latency,
            alarms,
            in_flight: AtomicUsize::new(0),
            max_in_flight: AtomicUsize::new(0),
            handled: AtomicU64::new(0),
            handled_nanos: AtomicU64::new(0),
        });
        let (addr_tx, addr_rx) = std::sync::mpsc::channel();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let state = Arc::clone(&shared);
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
            runtime.block_on(async move {
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
                addr_tx.send(listener.local_addr().unwrap()).unwrap();
                let app = Router::new().route("/charges", post(charge)).with_state(state);
                let _ = axum::serve(listener, app)
                    .with_graceful_shutdown(async {
                        let _ = stop_rx.await;
                    })
                    .await;
            });
        });
        let addr = addr_rx.recv_timeout(Duration::from_secs(10)).expect("fee server address");
        Self { addr, shared, shutdown: Some(stop_tx), thread: Some(thread), alarm_thread: Some(alarm_thread) }
    }

    pub fn url(&self) -> String {
        format!("http://{}/charges", self.addr)
    }

    pub fn ledger(&self) -> std::sync::MutexGuard<'_, Ledger> {
        self.shared.ledger.lock().unwrap()
    }

    /// Every key's first `faults.len()` requests get these faults, in order.
    pub fn fail_each_key_first(&self, faults: Vec<Fault>) {
        self.ledger().per_key_faults = faults;
    }

    pub fn fail_always(&self, fault: Option<Fault>) {
        self.ledger().always = fault;
    }

    pub fn max_in_flight(&self) -> usize {
        self.shared.max_in_flight.load(Ordering::SeqCst)
    }

    /// Requests being answered right now (the bench samples it).
    #[allow(dead_code)]
    pub fn in_flight(&self) -> usize {
        self.shared.in_flight.load(Ordering::SeqCst)
    }

    /// The mean time a request spent in the handler (the latency as served), if any was answered.
    #[allow(dead_code)]
    pub fn mean_service_time(&self) -> Option<Duration> {
        let handled = self.shared.handled.load(Ordering::SeqCst);
        (handled > 0).then(|| Duration::from_nanos(self.shared.handled_nanos.load(Ordering::SeqCst) / handled))
    }

    /// The server's own invariant: no card charged twice, whatever the keys.
    pub fn assert_no_card_charged_twice(&self) {
        let ledger = self.ledger();
        let twice: Vec<_> = ledger.charged_cards.iter().filter(|(_, n)| **n > 1).collect();
        assert!(twice.is_empty(), "cards charged more than once: {twice:?}");
        assert_eq!(ledger.missing_headers, 0, "requests without Idempotency-Key or X-KM-Correlation-Id");
    }
}

impl Drop for FeeServer {
    fn drop(&mut self) {
        if let Some(stop) = self.shutdown.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        self.shared.alarms.stop();
        if let Some(thread) = self.alarm_thread.take() {
            let _ = thread.join();
        }
    }
}

struct InFlight<'a>(&'a Shared, Instant);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
        self.0.handled.fetch_add(1, Ordering::SeqCst);
        let nanos = u64::try_from(self.1.elapsed().as_nanos()).unwrap_or(u64::MAX);
        self.0.handled_nanos.fetch_add(nanos, Ordering::SeqCst);
    }
}

async fn charge(State(shared): State<Arc<Shared>>, headers: HeaderMap, Json(body): Json<ChargeBody>) -> Response {
    let now = shared.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
    let _guard = InFlight(&shared, Instant::now());
    shared.max_in_flight.fetch_max(now, Ordering::SeqCst);
    shared.alarms.sleep(shared.latency).await;

    let key = headers.get("Idempotency-Key").and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
    let has_correlation =
        headers.get("X-KM-Correlation-Id").and_then(|v| v.to_str().ok()).is_some_and(|v| v.len() == 20);
    let (fault, answer) = {
        let mut ledger = shared.ledger.lock().unwrap();
        ledger.first_request.get_or_insert_with(Instant::now);
        if key.is_empty() || !has_correlation || body.currency != "KRW" {
            ledger.missing_headers += 1;
        }
        if let Some(api_key) = headers.get("X-Api-Key").and_then(|v| v.to_str().ok()) {
            ledger.api_keys.insert(api_key.to_owned());
        }
        let n = {
            let count = ledger.requests.entry(key.clone()).or_insert(0);
            *count += 1;
            *count as usize
        };
        let fault = ledger.always.or_else(|| ledger.per_key_faults.get(n - 1).copied());
        let answer = match fault {
            Some(Fault::Status(code)) => (code, None),
            _ => settle(&mut ledger, &key, &body),
        };
        ledger.last_response = Some(Instant::now());
        (fault, answer)
    };
    if let Some(Fault::SlowAfterCharge(wait)) = fault {
        tokio::time::sleep(wait).await;
    }
    let status = StatusCode::from_u16(answer.0).unwrap();
    match answer.1 {
        Some(charge_id) => (status, Json(serde_json::json!({ "chargeId": charge_id }))).into_response(),
        None => status.into_response(),
    }
}

/// Charges a key once; every later request with the key gets the same answer.
fn settle(ledger: &mut Ledger, key: &str, body: &ChargeBody) -> (u16, Option<String>) {
    if let Some(answer) = ledger.answers.get(key) {
        return answer.clone();
    }
    let card_id: i64 = key.split('-').nth(1).and_then(|c| c.parse().ok()).unwrap_or(-1);
    let balance = ledger.balances.entry(body.member_id).or_insert(0);
    let answer = if *balance >= body.amount {
        *balance -= body.amount;
        ledger.charges += 1;
        *ledger.charged_cards.entry(card_id).or_insert(0) += 1;
        (200, Some(format!("ch-{}", body.reference)))
    } else {
        (402, None)
    };
    ledger.answers.insert(key.to_owned(), answer.clone());
    answer
}
