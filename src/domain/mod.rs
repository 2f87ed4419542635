//! The issuer's reissue rules and the values they work on.
//!
//! Everything here is pure: no I/O, no async, no database types. The batch and (later) the API
//! both call [`eligibility::evaluate`] and [`fee_plan::plan_fees`], so a rule lives in one place.

pub mod address;
pub mod as_of;
pub mod card_number;
pub mod codes;
pub mod eligibility;
pub mod expiry;
pub mod fee_plan;
pub mod ids;
pub mod text;

pub use codes::Outcome;
