//! Delivery-address validation (the source API's `addressInfo`).

use super::codes::InvalidField;
use super::text::is_blank;

pub const MAX_ADDRESS_CHARS: usize = 255;

/// A delivery address as stored or received; fields may be missing in bad data.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AddressInput<'a> {
    pub address: Option<&'a str>,
    pub address_detail: Option<&'a str>,
    pub zip_code: Option<&'a str>,
}

/// The first malformed field, in the order the source API validates them.
pub fn first_invalid_field(input: &AddressInput<'_>) -> Option<InvalidField> {
    if !text_ok(input.address) {
        return Some(InvalidField::Address);
    }
    if !text_ok(input.address_detail) {
        return Some(InvalidField::AddressDetail);
    }
    if !zip_ok(input.zip_code) {
        return Some(InvalidField::ZipCode);
    }
    None
}

fn text_ok(value: Option<&str>) -> bool {
    value.is_some_and(|v| !is_blank(v) && v.chars().count() <= MAX_ADDRESS_CHARS)
}

fn zip_ok(value: Option<&str>) -> bool {
    value.is_some_and(|v| v.len() == 5 && v.bytes().all(|b| b.is_ascii_digit()))
}

/// A delivery address that passed [`first_invalid_field`]: the one snapshotted in an application.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct DeliveryAddress {
    pub address: String,
    pub address_detail: String,
    pub zip_code: String,
}

impl DeliveryAddress {
    /// The address, or the first malformed field in the source API's order.
    pub fn parse(input: &AddressInput<'_>) -> Result<Self, InvalidField> {
        if let Some(field) = first_invalid_field(input) {
            return Err(field);
        }
        Ok(Self {
            address: input.address.unwrap_or_default().to_owned(),
            address_detail: input.address_detail.unwrap_or_default().to_owned(),
            zip_code: input.zip_code.unwrap_or_default().to_owned(),
        })
    }

    pub fn as_input(&self) -> AddressInput<'_> {
        AddressInput {
            address: Some(&self.address),
            address_detail: Some(&self.address_detail),
            zip_code: Some(&self.zip_code),
        }
    }
}
