//! The OpenAPI 3 document served at `/openapi.json`, generated from the request and response
//! types (utoipa), with the codes each answer can carry enumerated from `answer`.

use utoipa::OpenApi;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, SecurityScheme};

use super::answer::{Failure, Own, Success, all_codes};
use super::request::{AddressInfo, CardInfo, ReissueRequest, UserInfo};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "renewal-worker sync API",
        description = "Reissue one prepaid card that expires within the window (the seed's endpoint). Every answer is JSON with `code` and `message`; unknown fields are ignored.",
    ),
    paths(reissue),
    components(schemas(ReissueRequest, UserInfo, CardInfo, AddressInfo, Success, Failure)),
    modifiers(&Security)
)]
struct Doc;

struct Security;

impl utoipa::Modify for Security {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let header = crate::config::Settings::load(None).map(|s| s.api.key_header).unwrap_or("X-Api-Key".to_owned());
        if let Some(components) = openapi.components.as_mut() {
            components.add_security_scheme("api_key", SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::new(header))));
        }
    }
}

/// Reissue an expiring card.
#[utoipa::path(
    post,
    path = "/api/v1/prepay-card/expired/reissue",
    request_body(content = ReissueRequest, content_type = "application/json"),
    params(
        ("X-KM-Crypto-Key-Id" = Option<String>, Header, description = "The platform's encryption key id (32 characters); echoed back"),
        ("Idempotency-Key" = Option<String>, Header, description = "A repeated request with the same key and body gets the first final answer"),
    ),
    responses(
        (status = 200, description = "Reissued: the card application's number", body = Success,
            headers(("X-KM-Correlation-Id" = String, description = "yyMMddHHmmss- and 7 hex digits"))),
        (status = 400, description = "Refused by a format check or a reissue rule", body = Failure),
        (status = 401, description = "API key missing or not valid (900_401)", body = Failure),
        (status = 408, description = "No answer in time (900_408); the reissue still completes", body = Failure),
        (status = 413, description = "Body too large (900_413)", body = Failure),
        (status = 422, description = "Idempotency-Key reused with another body (900_422)", body = Failure),
        (status = 429, description = "Rate limited (900_429); see Retry-After", body = Failure),
        (status = 503, description = "Unavailable (900_503) or payment outcome unknown (900_504); see Retry-After", body = Failure),
    ),
    security(("api_key" = []))
)]
#[allow(dead_code)]
fn reissue() {}

/// The document as served: generated, with `code` enumerated per answer.
pub fn document() -> String {
    let mut doc = serde_json::to_value(Doc::openapi()).unwrap_or_default();
    let failures: Vec<&str> = all_codes().into_iter().filter(|c| *c != "000_000").collect();
    let schemas = &mut doc["components"]["schemas"];
    schemas["Failure"]["properties"]["code"]["enum"] = serde_json::json!(failures);
    schemas["Success"]["properties"]["code"]["enum"] = serde_json::json!(["000_000"]);
    schemas["Success"]["properties"]["message"]["enum"] = serde_json::json!(["Success"]);
    let _ = Own::ALL;
    doc.to_string()
}
