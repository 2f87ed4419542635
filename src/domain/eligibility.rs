//! The reissue rules: which outcome a card gets before any fee is charged.

use chrono::NaiveDate;

use super::address::{AddressInput, first_invalid_field};
use super::card_number::CardNumber;
use super::codes::{InvalidField, Outcome};
use super::expiry::ExpiryMonth;

/// What the rules need to know about a card, as read from the database. Raw values stay raw
/// (a status is any string, an expiry any number) so bad rows become outcomes, not panics.
/// Names, mobile numbers and PARs are carried only as "present or not" (decided by
/// [`super::text::is_present`] on the raw value): the rules never need the values.
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
    /// Months the new card is valid; `None` takes [`Rules::default_validity_months`].
    pub validity_months: Option<i64>,
}

/// The configurable bounds of the rules (`run.*` settings).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rules {
    /// A card is in the window when its expiry month ends 0 to `window_days` days after the as-of.
    pub window_days: u32,
    /// A product whose fee is above this is misconfigured: its cards get `003_009`.
    pub max_fee_per_card: i64,
    /// The new card's validity when the product names none.
    pub default_validity_months: u32,
}

impl Default for Rules {
    fn default() -> Self {
        Self { window_days: 30, max_fee_per_card: DEFAULT_MAX_FEE_PER_CARD, default_validity_months: 60 }
    }
}

pub const DEFAULT_MAX_FEE_PER_CARD: i64 = 10_000_000;
/// A product's validity must be 1 to 600 months (50 years) to be believed (DESIGN §10).
pub const VALIDITY_MONTHS: std::ops::RangeInclusive<i64> = 1..=600;

/// Why a product's own data makes its cards `003_009` (beyond not allowing expiry reissue):
/// impossible money or an impossible validity. Logged once per product per run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProductProblem {
    NegativeFee,
    FeeAboveLimit,
    ValidityOutOfRange,
}

impl ProductProblem {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::NegativeFee => "reissue fee is negative",
            Self::FeeAboveLimit => "reissue fee is above run.max_fee_per_card",
            Self::ValidityOutOfRange => "validity is outside 1-600 months",
        }
    }
}

impl ProductFacts {
    /// The product's data problem, if its fee or validity cannot be right.
    pub fn problem(&self, rules: &Rules) -> Option<ProductProblem> {
        if self.reissue_fee < 0 {
            Some(ProductProblem::NegativeFee)
        } else if self.reissue_fee > rules.max_fee_per_card {
            Some(ProductProblem::FeeAboveLimit)
        } else if self.validity_months.is_some_and(|v| !VALIDITY_MONTHS.contains(&v)) {
            Some(ProductProblem::ValidityOutOfRange)
        } else {
            None
        }
    }
}

/// A card that passed every rule before the fee.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Eligible {
    pub card_id: i64,
    pub member_id: i64,
    pub fee: i64,
    /// The new card's validity in months (1-600).
    pub validity_months: u32,
}

pub const REISSUABLE_STATUSES: [&str; 2] = ["ACTIVE", "SUSPENDED"];

/// Runs the checks in the batch's order (DESIGN §9): card number, member, registered address,
/// then 003_004 to 003_009. The first failing check decides. Never panics, whatever the row.
pub fn evaluate(card: &CardFacts, as_of: NaiveDate, rules: &Rules) -> Result<Eligible, Outcome> {
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
    let in_window =
        ExpiryMonth::from_yyyymm(card.expiry_yyyymm).is_some_and(|m| m.within_window(as_of, rules.window_days));
    if !in_window {
        return Err(Outcome::ExpiryNotProper);
    }
    if !member.has_name {
        return Err(Outcome::UserNameNotFound);
    }
    if !card.has_par || !member.has_mobile {
        return Err(Outcome::ParNotFound);
    }
    if !card.product.allows_expiry_reissue || card.product.problem(rules).is_some() {
        return Err(Outcome::ProductNotValid);
    }
    let validity = card.product.validity_months.unwrap_or(i64::from(rules.default_validity_months));
    Ok(Eligible {
        card_id: card.card_id,
        member_id: member.member_id,
        fee: card.product.reissue_fee,
        validity_months: u32::try_from(validity).map_err(|_| Outcome::ProductNotValid)?,
    })
}
