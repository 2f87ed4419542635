//! The outcome codes and their verbatim messages (DESIGN §2).

use std::fmt;

/// A request parameter named by `000_002`'s message, spelled as the source API spells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum InvalidField {
    OldCardNo,
    Address,
    AddressDetail,
    ZipCode,
    UserId,
    /// The sync API: the request body is not a JSON object (or not JSON at all).
    Body,
    /// The sync API: an `X-KM-Crypto-Key-Id` header that is not 32 characters.
    CryptoKeyId,
}

impl InvalidField {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::OldCardNo => "cardInfo.oldCardNo",
            Self::Address => "addressInfo.address",
            Self::AddressDetail => "addressInfo.addressDetail",
            Self::ZipCode => "addressInfo.zipCode",
            Self::UserId => "userInfo.userId",
            Self::Body => "body",
            Self::CryptoKeyId => "X-KM-Crypto-Key-Id",
        }
    }
}

/// The result of evaluating one card. The variant order is the check order of DESIGN §2.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outcome {
    Success,
    InvalidInput(InvalidField),
    WalletUserNotFound,
    AlreadyReissued,
    CardStatusNotAllowed,
    ExpiryNotProper,
    UserNameNotFound,
    ParNotFound,
    ProductNotValid,
    FeePayFail,
    /// The worker's own code (outside the seed's range): every card application number of the
    /// card's day is taken by rows written elsewhere, so no application could be written.
    ApplyNoUnavailable,
}

impl Outcome {
    pub fn code(self) -> &'static str {
        match self {
            Self::Success => "000_000",
            Self::InvalidInput(_) => "000_002",
            Self::WalletUserNotFound => "001_006",
            Self::AlreadyReissued => "003_004",
            Self::CardStatusNotAllowed => "003_005",
            Self::ExpiryNotProper => "003_006",
            Self::UserNameNotFound => "003_007",
            Self::ParNotFound => "003_008",
            Self::ProductNotValid => "003_009",
            Self::FeePayFail => "003_010",
            Self::ApplyNoUnavailable => "900_001",
        }
    }

    pub fn message(self) -> String {
        match self {
            Self::InvalidInput(field) => format!("Invalid input parameter. {}", field.as_str()),
            other => other.fixed_message().to_owned(),
        }
    }

    fn fixed_message(self) -> &'static str {
        match self {
            Self::Success => "Success",
            Self::InvalidInput(_) => "Invalid input parameter.",
            Self::WalletUserNotFound => "Wallet user not found.",
            Self::AlreadyReissued => "Card issue status is not allowed to reissue",
            Self::CardStatusNotAllowed => "Card status is not active or suspended",
            Self::ExpiryNotProper => "Card expiry date is not proper to reissue.",
            Self::UserNameNotFound => "User name not found error",
            Self::ParNotFound => "Par not found from cardNo.",
            Self::ProductNotValid => "Not valid product for card issue type",
            Self::FeePayFail => "Card reissue cost pay fail",
            Self::ApplyNoUnavailable => "Card application number unavailable",
        }
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.code(), self.message())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Category {
    Reissued,
    Ineligible,
    Failed,
}

/// The dashboard category (DESIGN §9) of a code as stored in a result row: reissued, failed
/// (the fee, or the worker's own `900_xxx` codes) or ineligible.
pub fn category_of_code(code: &str) -> Category {
    match code {
        "000_000" => Category::Reissued,
        "003_010" => Category::Failed,
        c if c.starts_with("900_") => Category::Failed,
        _ => Category::Ineligible,
    }
}
