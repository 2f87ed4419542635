//! The request body of `POST /api/v1/prepay-card/expired/reissue`, checked field by field in
//! the order DESIGN §10 fixes, naming the first bad one by its JSON path. Unknown fields are
//! ignored. Pure: no I/O.

use serde::Deserialize;
use serde_json::Value;
use utoipa::ToSchema;

use crate::domain::address::{AddressInput, DeliveryAddress};
use crate::domain::codes::InvalidField;

/// The request as the OpenAPI document describes it (parsing goes through [`parse`], which
/// names the first bad field instead of failing on the first serde error).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[allow(dead_code)]
pub struct ReissueRequest {
    pub user_info: UserInfo,
    pub card_info: CardInfo,
    pub address_info: AddressInfo,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[allow(dead_code)]
pub struct UserInfo {
    /// The member's id: an integer above 0 that fits 64 bits.
    #[schema(minimum = 1)]
    pub user_id: i64,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[allow(dead_code)]
pub struct CardInfo {
    /// The card to renew: 16 digits.
    #[schema(pattern = "^[0-9]{16}$", min_length = 16, max_length = 16)]
    pub old_card_no: String,
}

/// Where the new card goes (snapshotted in the application).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[allow(dead_code)]
pub struct AddressInfo {
    #[schema(min_length = 1, max_length = 255)]
    pub address: String,
    #[schema(min_length = 1, max_length = 255)]
    pub address_detail: String,
    #[schema(pattern = "^[0-9]{5}$", min_length = 5, max_length = 5)]
    pub zip_code: String,
}

/// A request that passed every format check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checked {
    pub user_id: i64,
    pub card_no: String,
    pub delivery: DeliveryAddress,
}

/// Checks the body: a JSON object whose fields are present, of their type and format.
pub fn parse(body: &[u8]) -> Result<Checked, InvalidField> {
    let value: Value = serde_json::from_slice(body).map_err(|_| InvalidField::Body)?;
    let Value::Object(_) = value else { return Err(InvalidField::Body) };
    let user_id =
        value.pointer("/userInfo/userId").and_then(Value::as_i64).filter(|id| *id > 0).ok_or(InvalidField::UserId)?;
    let card_no = value
        .pointer("/cardInfo/oldCardNo")
        .and_then(Value::as_str)
        .filter(|c| c.len() == 16 && c.bytes().all(|b| b.is_ascii_digit()))
        .ok_or(InvalidField::OldCardNo)?;
    let text = |path: &str| value.pointer(path).and_then(Value::as_str);
    let delivery = DeliveryAddress::parse(&AddressInput {
        address: text("/addressInfo/address"),
        address_detail: text("/addressInfo/addressDetail"),
        zip_code: text("/addressInfo/zipCode"),
    })?;
    Ok(Checked { user_id, card_no: card_no.to_owned(), delivery })
}

/// The body's canonical JSON (keys sorted, no insignificant whitespace), for comparing repeated
/// requests of one Idempotency-Key; a body that is not JSON stays as it is.
pub fn canonical(body: &[u8]) -> Vec<u8> {
    match serde_json::from_slice::<Value>(body) {
        Ok(value) => sorted(value).to_string().into_bytes(),
        Err(_) => body.to_vec(),
    }
}

/// Objects rebuilt with their keys in order, whatever order the map type keeps.
fn sorted(value: Value) -> Value {
    match value {
        Value::Object(map) => {
            let mut entries: Vec<(String, Value)> = map.into_iter().collect();
            entries.sort_by(|a, b| a.0.cmp(&b.0));
            Value::Object(entries.into_iter().map(|(k, v)| (k, sorted(v))).collect())
        }
        Value::Array(items) => Value::Array(items.into_iter().map(sorted).collect()),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"{"userInfo":{"userId":7},"cardInfo":{"oldCardNo":"4111111111111111"},
        "addressInfo":{"address":"Seoul","addressDetail":"101-1","zipCode":"04524"},"extra":true}"#;

    fn with(path: &str, value: Value) -> Vec<u8> {
        let mut v: Value = serde_json::from_str(GOOD).unwrap();
        *v.pointer_mut(path).unwrap() = value;
        v.to_string().into_bytes()
    }

    #[test]
    fn the_first_bad_field_is_named_in_the_contracts_order() {
        assert!(parse(GOOD.as_bytes()).is_ok(), "unknown fields are ignored");
        assert_eq!(parse(b"not json"), Err(InvalidField::Body));
        assert_eq!(parse(b"[1]"), Err(InvalidField::Body));
        assert_eq!(parse(b"{}"), Err(InvalidField::UserId));
        assert_eq!(parse(&with("/userInfo/userId", Value::from("7"))), Err(InvalidField::UserId));
        assert_eq!(parse(&with("/userInfo/userId", Value::from(0))), Err(InvalidField::UserId));
        assert_eq!(parse(&with("/userInfo/userId", serde_json::json!(1.5))), Err(InvalidField::UserId));
        assert_eq!(
            parse(&with("/userInfo/userId", serde_json::json!(18446744073709551615u64))),
            Err(InvalidField::UserId)
        );
        assert_eq!(parse(&with("/cardInfo/oldCardNo", Value::from("411111111111111"))), Err(InvalidField::OldCardNo));
        assert_eq!(parse(&with("/cardInfo/oldCardNo", Value::from(4111111111111111u64))), Err(InvalidField::OldCardNo));
        assert_eq!(parse(&with("/addressInfo/address", Value::from(" \u{3000}"))), Err(InvalidField::Address));
        assert_eq!(
            parse(&with("/addressInfo/addressDetail", Value::from("x".repeat(256)))),
            Err(InvalidField::AddressDetail)
        );
        assert_eq!(parse(&with("/addressInfo/zipCode", Value::from("0452"))), Err(InvalidField::ZipCode));
        // Two bad fields: the earlier one in the order is named.
        let mut both: Value = serde_json::from_slice(&with("/addressInfo/zipCode", Value::Null)).unwrap();
        *both.pointer_mut("/cardInfo/oldCardNo").unwrap() = Value::Null;
        assert_eq!(parse(both.to_string().as_bytes()), Err(InvalidField::OldCardNo));
    }

    #[test]
    fn canonical_json_ignores_key_order_and_whitespace() {
        assert_eq!(canonical(br#"{"b": 1, "a": [1, 2]}"#), canonical(br#"{"a":[1,2],"b":1}"#));
        assert_ne!(canonical(br#"{"a":1}"#), canonical(br#"{"a":2}"#));
        assert_eq!(canonical(b"not json"), b"not json".to_vec());
    }
}
