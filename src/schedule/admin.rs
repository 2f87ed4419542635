//! `POST /runs` on `admin.listen`: an operator starts a run while the daemon is up. It goes
//! through the daemon's single flight: 202 with the run id, 409 while a run goes (never queued
//! or dropped silently). Needs an `admin.keys` key in `Authorization: Bearer <secret>`; the key's
//! id is logged, the secret never.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use chrono::NaiveDate;
use serde_json::json;
use tokio::sync::{mpsc, oneshot};

use crate::config::KeyList;
use crate::domain::as_of::parse_as_of;

/// A manual run asked for, with where to answer.
#[derive(Debug)]
pub struct Trigger {
    pub as_of: Option<NaiveDate>,
    pub key_id: String,
    pub reply: oneshot::Sender<Answer>,
}

#[derive(Debug)]
pub enum Answer {
    /// Its run id arrives once the run row exists (dropped: the run ended before writing one).
    Started {
        as_of: NaiveDate,
        run_id: oneshot::Receiver<i64>,
    },
    Busy {
        run_id: Option<i64>,
    },
}

/// How far ahead a requested as-of may lie (`run.max_days_ahead` in `run.time_zone`), as for
/// `run --as-of`: later is refused unless the body says `"force_as_of": true`.
#[derive(Debug, Clone, Copy)]
pub struct AsOfBound {
    pub max_days_ahead: u32,
    pub time_zone: chrono_tz::Tz,
}

#[derive(Clone)]
struct AdminState {
    keys: Arc<KeyList>,
    triggers: mpsc::Sender<Trigger>,
    bound: AsOfBound,
}

pub fn router(keys: KeyList, triggers: mpsc::Sender<Trigger>, bound: AsOfBound) -> Router {
    Router::new()
        .route("/runs", post(start_run))
        .fallback(|| async { error(StatusCode::NOT_FOUND, "no such endpoint; POST /runs starts a run") })
        .with_state(AdminState { keys: Arc::new(keys), triggers, bound })
}

fn error(status: StatusCode, message: &str) -> Response {
    (status, Json(json!({ "error": message }))).into_response()
}

async fn start_run(State(state): State<AdminState>, headers: HeaderMap, body: axum::body::Bytes) -> Response {
    let presented = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    let Some(key_id) = state.keys.identify(presented).map(str::to_owned) else {
        tracing::warn!(event = "admin_unauthorized", "POST /runs without a valid admin key");
        return error(StatusCode::UNAUTHORIZED, "an admin.keys key is required (Authorization: Bearer <secret>)");
    };
    let (as_of, force) = match parse_body(&body) {
        Ok(parsed) => parsed,
        Err(message) => return error(StatusCode::BAD_REQUEST, &message),
    };
    let today = crate::domain::as_of::business_date(chrono::Utc::now(), state.bound.time_zone);
    if let Some(ahead) =
        as_of.filter(|_| !force).and_then(|d| crate::domain::as_of::too_far_ahead(d, today, state.bound.max_days_ahead))
    {
        let message = format!(
            "as_of is {ahead} days after today ({today}), beyond run.max_days_ahead = {}: it would renew cards early; \
             send \"force_as_of\": true if that is meant",
            state.bound.max_days_ahead
        );
        return error(StatusCode::BAD_REQUEST, &message);
    }
    let (reply, answer) = oneshot::channel();
    if state.triggers.send(Trigger { as_of, key_id: key_id.clone(), reply }).await.is_err() {
        return error(StatusCode::SERVICE_UNAVAILABLE, "the daemon is shutting down");
    }
    match answer.await {
        Ok(Answer::Started { as_of, run_id }) => match tokio::time::timeout(Duration::from_secs(30), run_id).await {
            Ok(Ok(run_id)) => {
                tracing::info!(event = "admin_run_started", key_id = %key_id, run_id, as_of = %as_of);
                (StatusCode::ACCEPTED, Json(json!({ "run_id": run_id, "as_of": as_of.to_string() }))).into_response()
            }
            Ok(Err(_)) => error(
                StatusCode::SERVICE_UNAVAILABLE,
                "the run ended before writing its row (run.paused, or a configuration error: see the log)",
            ),
            Err(_) => error(StatusCode::GATEWAY_TIMEOUT, "the run did not start within 30 s (database busy?)"),
        },
        Ok(Answer::Busy { run_id }) => {
            (StatusCode::CONFLICT, Json(json!({ "error": "a run is going in this process", "run_id": run_id })))
                .into_response()
        }
        Err(_) => error(StatusCode::SERVICE_UNAVAILABLE, "the daemon is shutting down"),
    }
}

/// `{}` or no body: the latest slot's business date; `{"as_of": "YYYY-MM-DD"}` otherwise, with
/// `"force_as_of": true` to accept a date beyond `run.max_days_ahead`.
fn parse_body(body: &[u8]) -> Result<(Option<NaiveDate>, bool), String> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok((None, false));
    }
    let value: serde_json::Value = serde_json::from_slice(body).map_err(|e| format!("the body is not JSON: {e}"))?;
    let force = match value.get("force_as_of") {
        None | Some(serde_json::Value::Null) => false,
        Some(serde_json::Value::Bool(force)) => *force,
        Some(_) => return Err("force_as_of must be true or false".to_owned()),
    };
    let as_of = match value.get("as_of") {
        None | Some(serde_json::Value::Null) => None,
        Some(serde_json::Value::String(raw)) => {
            Some(parse_as_of(raw).ok_or_else(|| format!("as_of {raw:?} is not a date of the form YYYY-MM-DD"))?)
        }
        Some(_) => return Err("as_of must be a string of the form YYYY-MM-DD".to_owned()),
    };
    Ok((as_of, force))
}
