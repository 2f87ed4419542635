//! Balance sequencing: which of a member's fee-bearing cards the wallet can pay for.

use std::collections::HashMap;

use super::eligibility::Eligible;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FeeDecision {
    /// Free product: nothing to charge.
    Free,
    /// Charge this amount; the balance covers it after the member's earlier cards.
    Charge(i64),
    /// The remaining balance does not cover the fee: `003_010`.
    Decline,
}

/// Decides every card's fee against its member's balance, carrying the balance forward.
///
/// `cards` must be in ascending card id (the order the batch reads them); each is charged if
/// what is left covers its fee, otherwise declined, and later (cheaper) cards are still tried.
/// `balances` is updated in place so a caller can carry it across chunks. A member with no
/// known balance is treated as having none.
pub fn plan_fees(cards: &[Eligible], balances: &mut HashMap<i64, i64>) -> Vec<FeeDecision> {
    cards
        .iter()
        .map(|card| {
            if card.fee == 0 {
                return FeeDecision::Free;
            }
            let balance = balances.entry(card.member_id).or_insert(0);
            if *balance >= card.fee {
                *balance -= card.fee;
                FeeDecision::Charge(card.fee)
            } else {
                FeeDecision::Decline
            }
        })
        .collect()
}
