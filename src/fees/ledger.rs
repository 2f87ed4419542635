//! The in-database ledger: sequence each member's fees against the wallet, debit in the chunk.

use std::collections::HashMap;

use crate::domain::eligibility::Eligible;
use crate::domain::fee_plan::{FeeDecision, plan_fees};
use crate::domain::ids::CardApplyNo;
use crate::store::{ChunkTx, Debit, StoreError};

/// A claimed card waiting for its fee.
#[derive(Debug, Clone)]
pub struct Reserved {
    pub eligible: Eligible,
    pub application_id: i64,
    pub card_apply_no: CardApplyNo,
}

/// Charges the reserved cards (ascending card id) against `balances`, which the caller read in
/// this transaction; returns each card's decision. Debits are written through `tx` (unless
/// `dry_run`), conditional on the wallet's balance, so a wrong plan rolls the chunk back
/// instead of overdrawing a wallet.
pub async fn charge<T: ChunkTx>(
    tx: &mut T,
    reserved: &[Reserved],
    balances: &mut HashMap<i64, i64>,
    dry_run: bool,
) -> Result<Vec<FeeDecision>, StoreError> {
    let eligible: Vec<Eligible> = reserved.iter().map(|r| r.eligible).collect();
    let decisions = plan_fees(&eligible, balances);
    let debits: Vec<Debit> = reserved
        .iter()
        .zip(&decisions)
        .filter_map(|(r, d)| match d {
            FeeDecision::Charge(amount) => Some(Debit {
                member_id: r.eligible.member_id,
                application_id: r.application_id,
                reference: r.card_apply_no.to_string(),
                amount: *amount,
            }),
            FeeDecision::Free | FeeDecision::Decline => None,
        })
        .collect();
    if !dry_run {
        tx.debit(&debits).await?;
    }
    Ok(decisions)
}
