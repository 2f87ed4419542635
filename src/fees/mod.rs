//! Fee charging. The shape is reserve -> charge -> finish: the batch reserves (claims an
//! application), charges, then finishes (marks) or releases (withdraws the claim).
//!
//! Ledger mode, the default: the fee is a debit of the member's wallet in the card database,
//! written in the chunk's own transaction, so reserve, charge and finish commit together.

pub mod http;
pub mod ledger;
