//! Every answer of the sync API: a status and a JSON `{"code","message"}` body (plus
//! `cardApplyNo` on success). The seed's codes come from `domain::codes`; the worker's own,
//! outside the seed's range, are `900_xxx` (README "Sync API").

use axum::http::StatusCode;
use serde::Serialize;
use utoipa::ToSchema;

use crate::domain::codes::{InvalidField, Outcome};

/// The worker's own answers, outside the seed's codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Own {
    /// 401: no API key, or not one of `api.keys`.
    Unauthorized,
    /// 404: no such endpoint.
    NotFound,
    /// 405: the endpoint takes POST only.
    MethodNotAllowed,
    /// 408: no answer within `api.request_timeout_ms` (the reissue still runs to its end).
    Timeout,
    /// 413: a body above `api.body_limit_bytes`.
    TooLarge,
    /// 422: an Idempotency-Key already used with another body.
    IdempotencyMismatch,
    /// 429: over `api.rate_limit_per_second` for this API key.
    RateLimited,
    /// 503: paused, overloaded, shutting down, the database unreachable, or the first request of
    /// this Idempotency-Key still being answered. Not stored; retry.
    Unavailable,
    /// 503: the fee's outcome is still unknown; a retry with the same Idempotency-Key learns it.
    PaymentUnknown,
}

impl Own {
    pub const ALL: [Self; 9] = [
        Self::Unauthorized,
        Self::NotFound,
        Self::MethodNotAllowed,
        Self::Timeout,
        Self::TooLarge,
        Self::IdempotencyMismatch,
        Self::RateLimited,
        Self::Unavailable,
        Self::PaymentUnknown,
    ];

    pub fn status(self) -> StatusCode {
        match self {
            Self::Unauthorized => StatusCode::UNAUTHORIZED,
            Self::NotFound => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Self::Timeout => StatusCode::REQUEST_TIMEOUT,
            Self::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Self::IdempotencyMismatch => StatusCode::UNPROCESSABLE_ENTITY,
            Self::RateLimited => StatusCode::TOO_MANY_REQUESTS,
            Self::Unavailable | Self::PaymentUnknown => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    pub fn code(self) -> &'static str {
        match self {
            Self::Unauthorized => "900_401",
            Self::NotFound => "900_404",
            Self::MethodNotAllowed => "900_405",
            Self::Timeout => "900_408",
            Self::TooLarge => "900_413",
            Self::IdempotencyMismatch => "900_422",
            Self::RateLimited => "900_429",
            Self::Unavailable => "900_503",
            Self::PaymentUnknown => "900_504",
        }
    }

    pub fn message(self) -> &'static str {
        match self {
            Self::Unauthorized => "API key missing or not valid",
            Self::NotFound => "No such endpoint",
            Self::MethodNotAllowed => "Method not allowed",
            Self::Timeout => "Request timed out",
            Self::TooLarge => "Request body too large",
            Self::IdempotencyMismatch => "Idempotency-Key already used with another request body",
            Self::RateLimited => "Too many requests",
            Self::Unavailable => "Service temporarily unavailable; retry later",
            Self::PaymentUnknown => "Payment outcome not known yet; retry with the same Idempotency-Key",
        }
    }

    /// The framework's own answers by status, for the layer that gives them a JSON body.
    pub fn for_status(status: StatusCode) -> Self {
        match status {
            StatusCode::UNAUTHORIZED => Self::Unauthorized,
            StatusCode::NOT_FOUND => Self::NotFound,
            StatusCode::METHOD_NOT_ALLOWED => Self::MethodNotAllowed,
            StatusCode::REQUEST_TIMEOUT => Self::Timeout,
            StatusCode::PAYLOAD_TOO_LARGE => Self::TooLarge,
            StatusCode::UNPROCESSABLE_ENTITY => Self::IdempotencyMismatch,
            StatusCode::TOO_MANY_REQUESTS => Self::RateLimited,
            _ => Self::Unavailable,
        }
    }
}

/// An answer, before it becomes a response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    pub card_apply_no: Option<String>,
    /// Seconds, for `Retry-After`.
    pub retry_after: Option<u64>,
}

/// `200`: the card application's number.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Success {
    #[schema(example = "000_000")]
    pub code: String,
    #[schema(example = "Success")]
    pub message: String,
    /// 22 digits: YYMMDD (the business date) + the card id in 12 digits + a 4-digit sequence.
    #[schema(pattern = "^[0-9]{22}$", example = "2611200000000000170000")]
    pub card_apply_no: String,
}

/// Every other answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct Failure {
    /// `000_002`, `001_006`, `003_004` ... `003_010` (the seed's), or the worker's own `900_xxx`.
    #[schema(value_type = String, example = "003_010")]
    pub code: String,
    /// The code's verbatim message (`000_002`: "Invalid input parameter. <field>").
    #[schema(example = "Card reissue cost pay fail")]
    pub message: String,
}

impl Answer {
    pub fn outcome(outcome: Outcome, card_apply_no: Option<String>) -> Self {
        let status = if outcome == Outcome::Success { StatusCode::OK } else { StatusCode::BAD_REQUEST };
        Self { status, code: outcome.code(), message: outcome.message(), card_apply_no, retry_after: None }
    }

    pub fn invalid(field: InvalidField) -> Self {
        Self::outcome(Outcome::InvalidInput(field), None)
    }

    pub fn own(own: Own) -> Self {
        let retry_after = match own {
            Own::Unavailable => Some(1),
            Own::PaymentUnknown => Some(30),
            _ => None,
        };
        Self {
            status: own.status(),
            code: own.code(),
            message: own.message().to_owned(),
            card_apply_no: None,
            retry_after,
        }
    }

    /// The recorded code and message of the reissue (the codes `domain::codes` defines).
    pub fn recorded(code: &'static str, message: String, card_apply_no: Option<String>) -> Self {
        let status = if code == Outcome::Success.code() { StatusCode::OK } else { StatusCode::BAD_REQUEST };
        let card_apply_no = if status == StatusCode::OK { card_apply_no } else { None };
        Self { status, code, message, card_apply_no, retry_after: None }
    }

    /// Final answers are stored for their Idempotency-Key; a 503 is not.
    pub fn is_final(&self) -> bool {
        self.status != StatusCode::SERVICE_UNAVAILABLE
    }

    /// The JSON body, fields in the contract's order.
    pub fn body(&self) -> String {
        let (code, message) = (self.code.to_owned(), self.message.clone());
        let body = match &self.card_apply_no {
            Some(no) => serde_json::to_string(&Success { code, message, card_apply_no: no.clone() }),
            None => serde_json::to_string(&Failure { code, message }),
        };
        body.unwrap_or_default()
    }
}

/// Every code an answer can carry, for the OpenAPI document and the metrics.
pub fn all_codes() -> Vec<&'static str> {
    let mut codes: Vec<&'static str> = crate::metrics::CODES.to_vec();
    codes.extend(Own::ALL.iter().map(|o| o.code()));
    codes
}
