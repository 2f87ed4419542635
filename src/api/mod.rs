//! The sync API (`serve`): `POST /api/v1/prepay-card/expired/reissue`, the seed's endpoint, on
//! the same reissue operation as the batch (README "Sync API"). Check order (DESIGN §10): the
//! API key, the rate limit, `api.paused`, the Idempotency-Key, `X-KM-Crypto-Key-Id`, the body's
//! fields, the member, the member's card, then the reissue rules.

pub mod answer;
mod idempotency;
pub mod openapi;
pub mod request;

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::error_handling::HandleErrorLayer;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use chrono::Utc;
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use tokio_util::sync::CancellationToken;
pub use tokio_util::task::TaskTracker;
use tower::ServiceBuilder;

use self::answer::{Answer, Own};
use crate::batch::ApiReissue;
use crate::domain::as_of::business_date;
use crate::domain::card_number::mask;
use crate::domain::codes::{InvalidField, Outcome};
use crate::domain::ids::correlation_id;
use crate::store::Store;
use crate::worker::App;

pub const CRYPTO_KEY_HEADER: &str = "X-KM-Crypto-Key-Id";
pub const CORRELATION_HEADER: &str = "X-KM-Correlation-Id";
pub const IDEMPOTENCY_HEADER: &str = "Idempotency-Key";
pub use crate::metrics::API_ROUTE as ROUTE;

struct ApiState<S: Store> {
    app: Arc<App<S>>,
    /// Requests' work, spawned so it completes without its client; shutdown waits for it.
    work: TaskTracker,
    key_header: HeaderName,
    limiter: Option<DefaultKeyedRateLimiter<String>>,
    idempotency: Duration,
    timeout: Duration,
}

/// The API's router: the endpoint, `/openapi.json`, JSON bodies on every answer, and the
/// protections (body limit, timeout, load shedding) from tower and tower-http.
pub fn router<S: Store>(app: Arc<App<S>>, work: TaskTracker) -> Router {
    let api = &app.settings().api;
    let state = Arc::new(ApiState {
        work,
        key_header: HeaderName::from_bytes(api.key_header.as_bytes()).unwrap_or(HeaderName::from_static("x-api-key")),
        limiter: NonZeroU32::new(api.rate_limit_per_second).map(|rate| RateLimiter::keyed(Quota::per_second(rate))),
        idempotency: Duration::from_secs(u64::from(api.idempotency_hours) * 3600),
        timeout: Duration::from_millis(api.request_timeout_ms),
        app: Arc::clone(&app),
    });
    let (limit, timeout, in_flight) = (api.body_limit_bytes, state.timeout, api.max_in_flight);
    Router::new()
        .route(ROUTE, post(reissue::<S>))
        .route("/openapi.json", get(|| async { ([(header::CONTENT_TYPE, "application/json")], openapi::document()) }))
        .fallback(|| async { StatusCode::NOT_FOUND })
        .with_state(state)
        .layer(axum::middleware::from_fn_with_state(limit, limit_body))
        .layer(axum::extract::DefaultBodyLimit::max(limit))
        .layer(tower_http::timeout::TimeoutLayer::with_status_code(StatusCode::REQUEST_TIMEOUT, timeout))
        .layer(
            ServiceBuilder::new()
                .layer(HandleErrorLayer::new(|_: tower::BoxError| async { StatusCode::SERVICE_UNAVAILABLE }))
                .load_shed()
                .concurrency_limit(in_flight),
        )
        .layer(axum::middleware::map_response(json_errors))
}

/// How much of an oversized body is read (and dropped) before its 413, so that the client gets
/// the answer instead of a connection reset; a bigger one is cut off.
const DRAIN_MAX: usize = 8 * 1024 * 1024;

/// Refuses a body over `api.body_limit_bytes` with 413, after reading it (up to `DRAIN_MAX`).
async fn limit_body(
    State(limit): State<usize>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    use http_body_util::BodyExt;
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    let (parts, mut body) = request.into_parts();
    let mut kept = Vec::new();
    let (mut over, mut read) = (declared.is_some_and(|n| n > limit), 0usize);
    while let Some(frame) = body.frame().await {
        let Ok(frame) = frame else {
            // A broken upload is no request: answered, not passed on half-read (and not claimed).
            let answer = Answer::invalid(InvalidField::Body);
            return (answer.status, [(header::CONTENT_TYPE, "application/json")], answer.body()).into_response();
        };
        if let Some(data) = frame.data_ref() {
            read += data.len();
            if !over {
                kept.extend_from_slice(data);
                over = kept.len() > limit;
            }
            if read > DRAIN_MAX {
                break;
            }
        }
    }
    if over {
        return StatusCode::PAYLOAD_TOO_LARGE.into_response();
    }
    next.run(axum::extract::Request::from_parts(parts, axum::body::Body::from(kept))).await
}

/// The framework's own answers (404, 405, 408, 413, 503 when shedding) get the same JSON body as
/// the handler's.
async fn json_errors(response: Response) -> Response {
    let status = response.status();
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if status.as_u16() < 400 || is_json {
        return response;
    }
    let own = Own::for_status(status);
    crate::metrics::api_answer_counted(status.as_u16(), own.code());
    let mut out = (status, [(header::CONTENT_TYPE, "application/json")], Answer::own(own).body()).into_response();
    for (name, value) in response.headers() {
        if name != header::CONTENT_TYPE && name != header::CONTENT_LENGTH {
            out.headers_mut().insert(name.clone(), value.clone());
        }
    }
    out
}

/// What one request was answered, for its response, its log event and its metric.
struct Answered {
    answer: Answer,
    correlation_id: String,
    key_id: Option<String>,
    card: Option<String>,
    /// A stored answer replayed for its Idempotency-Key.
    replayed: bool,
}

async fn reissue<S: Store>(State(state): State<Arc<ApiState<S>>>, headers: HeaderMap, body: Bytes) -> Response {
    let started = Instant::now();
    let crypto = headers.get(CRYPTO_KEY_HEADER).cloned();
    let answered = decide(&state, &headers, body).await;
    let a = &answered.answer;
    tracing::info!(
        target: "renewal::api",
        event = "api_request",
        route = ROUTE,
        status = a.status.as_u16(),
        code = a.code,
        message = %a.message,
        correlation_id = %answered.correlation_id,
        key_id = answered.key_id.as_deref().unwrap_or(""),
        card = answered.card.as_deref().unwrap_or(""),
        card_apply_no = a.card_apply_no.as_deref().unwrap_or(""),
        replayed = answered.replayed,
        duration_ms = started.elapsed().as_millis() as u64,
    );
    crate::metrics::api_request(a.status.as_u16(), a.code, started.elapsed());
    respond(a, &answered.correlation_id, crypto)
}

fn respond(answer: &Answer, correlation_id: &str, crypto: Option<HeaderValue>) -> Response {
    let mut response = (answer.status, [(header::CONTENT_TYPE, "application/json")], answer.body()).into_response();
    let headers = response.headers_mut();
    if let Ok(value) = HeaderValue::from_str(correlation_id) {
        headers.insert(CORRELATION_HEADER, value);
    }
    if let Some(crypto) = crypto {
        headers.insert(CRYPTO_KEY_HEADER, crypto);
    }
    if let Some(seconds) = answer.retry_after {
        headers.insert(header::RETRY_AFTER, HeaderValue::from(seconds));
    }
    response
}

fn new_correlation_id<S: Store>(state: &ApiState<S>) -> String {
    let now_local = Utc::now().with_timezone(&state.app.settings().time_zone()).naive_local();
    correlation_id(now_local, fastrand::u64(..), 0)
}

async fn decide<S: Store>(state: &Arc<ApiState<S>>, headers: &HeaderMap, body: Bytes) -> Answered {
    let correlation_id = new_correlation_id(state);
    let refused = |answer: Answer, key_id: Option<String>| Answered {
        answer,
        correlation_id: correlation_id.clone(),
        key_id,
        card: None,
        replayed: false,
    };
    let presented = headers.get(&state.key_header).and_then(|v| v.to_str().ok()).unwrap_or("");
    let Some(key_id) = state.app.settings().api.keys.identify(presented).map(str::to_owned) else {
        return refused(Answer::own(Own::Unauthorized), None);
    };
    if let Some(limiter) = &state.limiter
        && let Err(not_until) = limiter.check_key(&key_id)
    {
        let wait = not_until.wait_time_from(governor::clock::Clock::now(&governor::clock::DefaultClock::default()));
        let mut answer = Answer::own(Own::RateLimited);
        answer.retry_after = Some(wait.as_secs().max(1));
        return refused(answer, Some(key_id));
    }
    if state.app.settings().api.paused {
        return refused(Answer::own(Own::Unavailable), Some(key_id));
    }
    let idempotency_key = headers.get(IDEMPOTENCY_HEADER).map(|v| idempotency::storage_key(v.as_bytes()));
    let claim = match &idempotency_key {
        Some(key) => {
            match idempotency::claim(state.app.store(), &key_id, key, &body, state.idempotency, state.timeout).await {
                idempotency::Claimed::Owner(claim) => Some(claim),
                idempotency::Claimed::Replay { answer, correlation_id: first } => {
                    return Answered {
                        answer,
                        correlation_id: first,
                        key_id: Some(key_id),
                        card: None,
                        replayed: true,
                    };
                }
                idempotency::Claimed::Refused(answer) => return refused(answer, Some(key_id)),
            }
        }
        None => None,
    };
    // From here the request runs to its end even when the client goes away or the request
    // times out: spawned, not dropped with the handler.
    let (state, headers) = (Arc::clone(state), headers.clone());
    let tracker = state.work.clone();
    let work = tracker.spawn(async move {
        let (answer, correlation, card, pending) = evaluate(&state, &headers, &body).await;
        let correlation = correlation.unwrap_or(correlation_id);
        if let Some(claim) = &claim {
            idempotency::finish(state.app.store(), claim, &answer, &correlation, pending.as_deref()).await;
        }
        Answered { answer, correlation_id: correlation, key_id: Some(key_id), card, replayed: false }
    });
    match work.await {
        Ok(answered) => answered,
        Err(e) => {
            tracing::error!(event = "api_request_failed", error = %e);
            Answered {
                answer: Answer::own(Own::Unavailable),
                correlation_id: String::new(),
                key_id: None,
                card: None,
                replayed: false,
            }
        }
    }
}

/// What `evaluate` found: the answer, the correlation id of the result row (when one was
/// written), the masked card, and the card application number whose fee is still unknown.
type Evaluated = (Answer, Option<String>, Option<String>, Option<String>);

/// The checks after access: header, body, member, card; then the reissue operation.
async fn evaluate<S: Store>(state: &ApiState<S>, headers: &HeaderMap, body: &[u8]) -> Evaluated {
    if headers.get(CRYPTO_KEY_HEADER).is_some_and(|v| v.len() != 32) {
        return (Answer::invalid(InvalidField::CryptoKeyId), None, None, None);
    }
    let json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim_start().to_ascii_lowercase().starts_with("application/json"));
    if !json {
        return (Answer::invalid(InvalidField::Body), None, None, None);
    }
    let checked = match request::parse(body) {
        Ok(checked) => checked,
        Err(field) => return (Answer::invalid(field), None, None, None),
    };
    let card = Some(mask(&checked.card_no));
    let as_of = business_date(Utc::now(), state.app.settings().time_zone());
    // Its own token: a shutdown lets requests in flight finish (the listener drains them).
    let asked = (checked.user_id, checked.card_no.as_str());
    match state.app.reissue_for_api(asked, &checked.delivery, as_of, CancellationToken::new()).await {
        Ok(ApiReissue::NoMember) => (Answer::outcome(Outcome::WalletUserNotFound, None), None, card, None),
        Ok(ApiReissue::NotTheirs) => (Answer::invalid(InvalidField::OldCardNo), None, card, None),
        Ok(ApiReissue::Done(outcome)) => {
            let number = outcome.card_apply_no.map(|n| n.as_str().to_owned());
            let (answer, pending) = match (outcome.code, outcome.message) {
                (Some(code), Some(message)) => (Answer::recorded(code, message, number), None),
                _ if outcome.fee_pending => (Answer::own(Own::PaymentUnknown), number),
                _ => (Answer::own(Own::Unavailable), None),
            };
            (answer, Some(outcome.correlation_id), card, pending)
        }
        Err(e) => {
            tracing::error!(event = "api_reissue_failed", error = %e, card = card.as_deref().unwrap_or(""));
            (Answer::own(Own::Unavailable), None, card, None)
        }
    }
}
