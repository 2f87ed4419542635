//! Idempotency-Key: a repeated request (same calling key, same key, same body) gets the first
//! final answer, status and body, for `api.idempotency_hours`; the same key with another body is
//! 422; a 503 is not stored; a concurrent duplicate waits, outside any transaction and bounded
//! by the request timeout, for the first answer. Stored in the database: it holds across
//! replicas and restarts.

use std::time::{Duration, Instant};

use axum::http::StatusCode;
use chrono::Utc;
use sha2::{Digest, Sha256};

use super::answer::{Answer, Own, all_codes};
use super::request::canonical;
use crate::domain::codes::Outcome;
use crate::store::{IdempotencyClaim, Store, StoredAnswer};

/// How often a duplicate looks again for the first request's answer (a read, no write).
const POLL: Duration = Duration::from_millis(50);
/// An unanswered key older than this belongs to a request whose process died: a request's work
/// outlives its 408 (fee retries, a busy SQLite), so this is far above the request timeout.
const ABANDONED_AFTER: Duration = Duration::from_secs(600);

pub enum Claimed {
    /// This request answers for the key.
    Owner(Claim),
    /// The first final answer, and the correlation id it carried.
    Replay {
        answer: Answer,
        correlation_id: String,
    },
    Refused(Answer),
}

pub struct Claim {
    api_key_id: String,
    key: String,
    body_hash: String,
    token: String,
}

impl Claim {
    fn owner(&self) -> crate::store::KeyOwner<'_> {
        (&self.api_key_id, &self.key, &self.token)
    }
}

fn hex_sha256(bytes: &[u8]) -> String {
    Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

/// The stored form of a key: its hash, so any header value fits and none is kept in clear.
pub fn storage_key(raw: &[u8]) -> String {
    hex_sha256(raw)
}

pub async fn claim<S: Store>(
    store: &S,
    api_key_id: &str,
    key: &str,
    body: &[u8],
    keep: Duration,
    timeout: Duration,
) -> Claimed {
    let body_hash = hex_sha256(&canonical(body));
    let deadline = Instant::now() + timeout.saturating_sub(Duration::from_millis(200));
    let keep = chrono::Duration::from_std(keep).unwrap_or(chrono::Duration::hours(24));
    let stale = chrono::Duration::from_std(ABANDONED_AFTER.max(timeout * 2)).unwrap_or(chrono::Duration::minutes(10));
    let token = format!("{:016x}{:016x}", fastrand::u64(..), fastrand::u64(..));
    loop {
        let now = Utc::now();
        let claim = IdempotencyClaim {
            api_key_id: api_key_id.to_owned(),
            key: key.to_owned(),
            body_hash: body_hash.clone(),
            now,
            expires_at: now + keep,
            stale_before: now - stale,
            token: token.clone(),
        };
        let mut stored = match store.claim_idempotency(&claim).await {
            Err(e) => {
                tracing::error!(event = "api_store_error", error = %e);
                return Claimed::Refused(Answer::own(Own::Unavailable));
            }
            Ok(None) => {
                return Claimed::Owner(Claim { api_key_id: claim.api_key_id, key: claim.key, body_hash, token });
            }
            Ok(Some(stored)) => stored,
        };
        // The first request is still being answered: wait for its answer with reads only.
        while stored.body_hash == body_hash && stored.status.is_none() && stored.waits_on.is_none() {
            if Instant::now() >= deadline {
                return Claimed::Refused(Answer::own(Own::Unavailable));
            }
            tokio::time::sleep(POLL).await;
            match store.read_idempotency(api_key_id, key).await {
                Ok(Some(again)) => stored = again,
                Ok(None) => break, // given up (a 503): claim it again
                Err(e) => {
                    tracing::error!(event = "api_store_error", error = %e);
                    return Claimed::Refused(Answer::own(Own::Unavailable));
                }
            }
        }
        match stored {
            StoredAnswer { body_hash: other, .. } if other != body_hash => {
                return Claimed::Refused(Answer::own(Own::IdempotencyMismatch));
            }
            StoredAnswer { status: Some(status), response, correlation_id, .. } => {
                return Claimed::Replay {
                    answer: replayed(status, response.as_deref().unwrap_or_default()),
                    correlation_id: correlation_id.unwrap_or_default(),
                };
            }
            StoredAnswer { waits_on: Some((state, card_apply_no)), correlation_id, .. } => {
                let Some(answer) = settled(&state, card_apply_no) else {
                    return Claimed::Refused(Answer::own(Own::PaymentUnknown));
                };
                // The settled outcome is the request's final answer from now on: whoever sees
                // it first stores it (the parked row keeps its claimer's token).
                let correlation_id = correlation_id.unwrap_or_default();
                if let Err(e) = store
                    .settle_parked_idempotency(api_key_id, key, &answer_to_stored(&body_hash, &answer, &correlation_id))
                    .await
                {
                    tracing::error!(event = "idempotency_store_failed", error = %e);
                }
                return Claimed::Replay { answer, correlation_id };
            }
            // Released while we waited: take it.
            StoredAnswer { .. } => continue,
        }
    }
}

fn answer_to_stored(body_hash: &str, answer: &Answer, correlation_id: &str) -> StoredAnswer {
    StoredAnswer {
        body_hash: body_hash.to_owned(),
        status: Some(answer.status.as_u16()),
        response: Some(answer.body()),
        correlation_id: Some(correlation_id.to_owned()),
        waits_on: None,
    }
}

/// The answer of an application a run has settled since (none while still pending).
fn settled(state: &str, card_apply_no: String) -> Option<Answer> {
    match state {
        "APPLIED" => Some(Answer::outcome(Outcome::Success, Some(card_apply_no))),
        "CANCELLED" => Some(Answer::outcome(Outcome::FeePayFail, None)),
        _ => None,
    }
}

/// Stores a final answer; parks the key on the application of a fee whose outcome is unknown
/// (`pending`: its card application number); gives the key up for any other 503 (so a retry
/// runs again).
pub async fn finish<S: Store>(store: &S, claim: &Claim, answer: &Answer, correlation_id: &str, pending: Option<&str>) {
    let result = if let (Some(card_apply_no), false) = (pending, answer.is_final()) {
        store.park_idempotency(claim.owner(), card_apply_no, correlation_id).await
    } else if answer.is_final() {
        store.answer_idempotency(claim.owner(), &answer_to_stored(&claim.body_hash, answer, correlation_id)).await
    } else {
        store.release_idempotency(claim.owner()).await
    };
    if let Err(e) = result {
        tracing::error!(event = "idempotency_store_failed", error = %e, "a retry of this request runs again");
    }
}

/// A stored answer back into its status and body.
fn replayed(status: u16, body: &str) -> Answer {
    let value: serde_json::Value = serde_json::from_str(body).unwrap_or_default();
    let stored_code = value["code"].as_str().unwrap_or_default();
    let code = all_codes().into_iter().find(|c| *c == stored_code).unwrap_or(Own::Unavailable.code());
    Answer {
        status: StatusCode::from_u16(status).unwrap_or(StatusCode::SERVICE_UNAVAILABLE),
        code,
        message: value["message"].as_str().unwrap_or_default().to_owned(),
        card_apply_no: value["cardApplyNo"].as_str().map(str::to_owned),
        retry_after: None,
    }
}
