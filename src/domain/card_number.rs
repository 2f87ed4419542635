//! Card numbers: validation (16 digits, Luhn) and masking for logs.

/// A card number known to be 16 ASCII digits with a valid Luhn check digit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CardNumber(String);

impl CardNumber {
    pub fn parse(raw: &str) -> Option<Self> {
        (raw.len() == 16 && raw.bytes().all(|b| b.is_ascii_digit()) && luhn_valid(raw)).then(|| Self(raw.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Luhn checksum over ASCII digits; false for any non-digit or an empty string.
pub fn luhn_valid(digits: &str) -> bool {
    if digits.is_empty() {
        return false;
    }
    let mut sum = 0u32;
    for (i, b) in digits.bytes().rev().enumerate() {
        if !b.is_ascii_digit() {
            return false;
        }
        let mut d = u32::from(b - b'0');
        if i % 2 == 1 {
            d *= 2;
            if d > 9 {
                d -= 9;
            }
        }
        sum += d;
    }
    sum.is_multiple_of(10)
}

/// The Luhn check digit that completes `body` (digits only).
pub fn luhn_check_digit(body: &str) -> u8 {
    (0..10u8).find(|d| luhn_valid(&format!("{body}{d}"))).unwrap_or(0)
}

/// How a card number may appear in logs: a 16-digit value as first 6 + `******` + last 4,
/// anything else only by its length, so a malformed value can never leak a full number.
pub fn mask(raw: &str) -> String {
    if raw.len() == 16 && raw.bytes().all(|b| b.is_ascii_digit()) {
        format!("{}******{}", &raw[..6], &raw[12..])
    } else {
        format!("invalid(len={})", raw.chars().count())
    }
}
