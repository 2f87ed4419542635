//! Identifiers the worker generates: card application numbers and correlation ids.

use chrono::{NaiveDate, NaiveDateTime};
use std::fmt;

/// A card application number: exactly 22 digits, `YYYYMMDD` + `AA` + `CCCCCCCCCCCC`:
/// the as-of date, the card's attempt number (how many expiry-reissue applications it had
/// before, cancelled ones included), and the card's id, zero-padded to 12 digits.
///
/// Derived, not random: the card id is already unique, so two replicas, a restart or the API
/// can never mint the same number for different cards, and a retried attempt reproduces the
/// same number (the database's UNIQUE constraint still has the last word).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CardApplyNo(String);

pub const CARD_APPLY_NO_LEN: usize = 22;
const MAX_CARD_ID: i64 = 999_999_999_999;
const MAX_ATTEMPT: i64 = 99;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CardApplyNoError {
    #[error("card id {0} does not fit the 12 digits of a card application number")]
    CardIdOutOfRange(i64),
    #[error("card {card_id} has had {attempt} applications; a card application number holds at most 99")]
    TooManyAttempts { card_id: i64, attempt: i64 },
}

impl CardApplyNo {
    pub fn derive(as_of: NaiveDate, attempt: i64, card_id: i64) -> Result<Self, CardApplyNoError> {
        if !(0..=MAX_CARD_ID).contains(&card_id) {
            return Err(CardApplyNoError::CardIdOutOfRange(card_id));
        }
        if !(0..=MAX_ATTEMPT).contains(&attempt) {
            return Err(CardApplyNoError::TooManyAttempts { card_id, attempt });
        }
        Ok(Self(format!("{}{attempt:02}{card_id:012}", as_of.format("%Y%m%d"))))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for CardApplyNo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A correlation id in the source platform's form `yyMMddHHmmss-xxxxxxx` (20 characters, the
/// suffix 7 lowercase hex digits). The suffix mixes a per-run seed with the card id; ids only
/// trace a card through logs and calls, nothing keys on them.
pub fn correlation_id(local_time: NaiveDateTime, seed: u64, card_id: i64) -> String {
    let suffix = mix(seed ^ (card_id as u64).rotate_left(17)) & 0x0fff_ffff;
    format!("{}-{suffix:07x}", local_time.format("%y%m%d%H%M%S"))
}

/// SplitMix64's finaliser: spreads neighbouring inputs over the whole range.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}
