//! Identifiers the worker generates: card application numbers and correlation ids.

use chrono::{NaiveDate, NaiveDateTime};
use std::fmt;

/// A card application number: exactly 22 digits, `YYMMDD` + `CCCCCCCCCCCC` + `SSSS`: the
/// as-of date, the card's id zero-padded to 12 digits, and a sequence number of this card's
/// applications on that date (10,000 of them).
///
/// Derived, not random: the card id is already unique, so two replicas, a restart or the API
/// can never mint the same number for different cards, and a retried attempt reproduces the
/// same number. The sequence starts at the number of expiry-reissue applications the card had
/// before (cancelled ones included, modulo 10,000); a number some other writer already took
/// is skipped with [`CardApplyNo::first_free`]. The database's UNIQUE constraint has the last word.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CardApplyNo(String);

pub const CARD_APPLY_NO_LEN: usize = 22;
const MAX_CARD_ID: i64 = 999_999_999_999;
/// How many numbers one card has on one as-of date.
pub const SEQUENCES_PER_DAY: u32 = 10_000;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CardApplyNoError {
    #[error("card id {0} does not fit the 12 digits of a card application number")]
    CardIdOutOfRange(i64),
    #[error("{0:?} is not a card application number (22 digits)")]
    Malformed(String),
}

impl CardApplyNo {
    /// The number with sequence `attempt % 10,000`.
    pub fn derive(as_of: NaiveDate, card_id: i64, attempt: i64) -> Result<Self, CardApplyNoError> {
        if !(0..=MAX_CARD_ID).contains(&card_id) {
            return Err(CardApplyNoError::CardIdOutOfRange(card_id));
        }
        let sequence = attempt.rem_euclid(i64::from(SEQUENCES_PER_DAY));
        Ok(Self(format!("{}{card_id:012}{sequence:04}", as_of.format("%y%m%d"))))
    }

    /// Every number `card_id` can have on `as_of`, as an inclusive range: (lowest, highest).
    pub fn day_range(as_of: NaiveDate, card_id: i64) -> Result<(Self, Self), CardApplyNoError> {
        Ok((Self::derive(as_of, card_id, 0)?, Self::derive(as_of, card_id, i64::from(SEQUENCES_PER_DAY) - 1)?))
    }

    /// The first number at or after sequence `attempt` (wrapping around) that is not in `taken`;
    /// `None` when all 10,000 numbers of the card's day are taken.
    pub fn first_free(
        as_of: NaiveDate,
        card_id: i64,
        attempt: i64,
        taken: &std::collections::HashSet<CardApplyNo>,
    ) -> Result<Option<Self>, CardApplyNoError> {
        for step in 0..i64::from(SEQUENCES_PER_DAY) {
            let candidate = Self::derive(as_of, card_id, attempt.rem_euclid(i64::from(SEQUENCES_PER_DAY)) + step)?;
            if !taken.contains(&candidate) {
                return Ok(Some(candidate));
            }
        }
        Ok(None)
    }

    /// Reads a stored number back (22 ASCII digits).
    pub fn parse(raw: &str) -> Result<Self, CardApplyNoError> {
        if raw.len() == CARD_APPLY_NO_LEN && raw.bytes().all(|b| b.is_ascii_digit()) {
            Ok(Self(raw.to_owned()))
        } else {
            Err(CardApplyNoError::Malformed(raw.to_owned()))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The as-of date the number was minted for (its `YYMMDD` prefix).
    pub fn as_of(&self) -> Option<NaiveDate> {
        NaiveDate::parse_from_str(self.0.get(..6)?, "%y%m%d").ok()
    }
}

impl fmt::Display for CardApplyNo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl serde::Serialize for CardApplyNo {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
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
