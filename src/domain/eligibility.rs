//! The reissue rules: which outcome a card gets before any fee is charged.

use chrono::NaiveDate;

use super::address::{AddressInput, first_invalid_field};
use super::card_number::CardNumber;
use super::codes::{InvalidField, Outcome};
use super::expiry::ExpiryMonth;

/// What the rules need to know about a card, as read from the database. Raw values stay raw
/// (a status is any string, an expiry any number) so bad rows become outcomes, not panics.
/// Names and mobile numbers are carried only as "present or not": the rules never need them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CardFacts {
    pub card_id: i64,
    pub card_no: String,
    pub status: String,
    pub expiry_yyyymm: i64,
    pub has_par: bool,
    /// Marked reissued, or an expiry-reissue application that is not cancelled exists.
    pub already_reissued: bool,
    pub member: Option<MemberFacts>,
    pub product: ProductFacts,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberFacts {
    pub member_id: i64,
    pub cancelled: bool,
    pub has_name: bool,
    pub has_mobile: bool,
    pub address: Option<String>,
    pub address_detail: Option<String>,
    pub zip_code: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProductFacts {
    pub product_id: i64,
    pub allows_expiry_reissue: bool,
    pub reissue_fee: i64,
}

/// A card that passed every rule before the fee.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Eligible {
    pub card_id: i64,
    pub member_id: i64,
    pub fee: i64,
}

pub const REISSUABLE_STATUSES: [&str; 2] = ["ACTIVE", "SUSPENDED"];

/// Runs the checks in the batch's order (DESIGN §9): card number, member, registered address,
/// then 003_004 to 003_009. The first failing check decides. Never panics, whatever the row.
pub fn evaluate(card: &CardFacts, as_of: NaiveDate, window_days: u32) -> Result<Eligible, Outcome> {
    if CardNumber::parse(&card.card_no).is_none() {
        return Err(Outcome::InvalidInput(InvalidField::OldCardNo));
    }
    let member = match &card.member {
        Some(m) if !m.cancelled => m,
        _ => return Err(Outcome::WalletUserNotFound),
    };
    let address = AddressInput {
        address: member.address.as_deref(),
        address_detail: member.address_detail.as_deref(),
        zip_code: member.zip_code.as_deref(),
    };
    if let Some(field) = first_invalid_field(&address) {
        return Err(Outcome::InvalidInput(field));
    }
    if card.already_reissued {
        return Err(Outcome::AlreadyReissued);
    }
    if !REISSUABLE_STATUSES.contains(&card.status.as_str()) {
        return Err(Outcome::CardStatusNotAllowed);
    }
    let in_window = ExpiryMonth::from_yyyymm(card.expiry_yyyymm).is_some_and(|m| m.within_window(as_of, window_days));
    if !in_window {
        return Err(Outcome::ExpiryNotProper);
    }
    if !member.has_name {
        return Err(Outcome::UserNameNotFound);
    }
    if !card.has_par || !member.has_mobile {
        return Err(Outcome::ParNotFound);
    }
    if !card.product.allows_expiry_reissue || card.product.reissue_fee < 0 {
        return Err(Outcome::ProductNotValid);
    }
    Ok(Eligible { card_id: card.card_id, member_id: member.member_id, fee: card.product.reissue_fee })
}
