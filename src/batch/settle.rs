//! HTTP fee mode, after a reservation commits: charge through the fee service, then finish
//! (APPLIED, card marked, `000_000`) or release (declined: CANCELLED, `003_010`, card not marked,
//! so it is evaluated again next night) in one short transaction. No transaction is held open
//! around the network calls. An outcome still unknown after the retries stays PENDING and is
//! settled by a later run, with the same idempotency key.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use chrono::NaiveDate;
use tokio_util::sync::CancellationToken;

use super::events::CardEvent;
use super::hooks::{self, Point};
use crate::domain::Outcome;
use crate::domain::card_number::mask;
use crate::fees::http::{ChargeOutcome, ChargeRequest, HttpCharger};
use crate::store::{
    ChunkTx, Claimed, PaymentState, Reservation, ResultOrigin, ResultRow, Settlement, Store, StoreError,
};

#[derive(Debug, Default)]
pub(super) struct Settled {
    pub cards: Vec<CardEvent>,
    /// Charges whose outcome is still unknown.
    pub pending: u64,
}

/// Where a settlement stands in its run, for the test pause hook.
pub(super) struct HookAt<'a> {
    pub chunk: u64,
    pub committed_cards: u64,
    pub shutdown: &'a CancellationToken,
}

/// Where the reservations come from, which decides what happens to one that was not charged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Origin {
    /// Reserved by this run's chunk just now: never sent means never charged, so it is withdrawn.
    ThisChunk,
    /// Left pending by an earlier run: an earlier request may have reached the service, so it
    /// stays pending until the service answers for its key.
    Leftover,
}

pub(super) async fn charge_and_finish<S: Store>(
    store: &S,
    charger: &Arc<HttpCharger>,
    results_of: ResultOrigin,
    reservations: Vec<Reservation>,
    origin: Origin,
    hook: HookAt<'_>,
) -> Result<Settled, StoreError> {
    let mut settled = Settled::default();
    if reservations.is_empty() {
        return Ok(settled);
    }
    let requests = reservations
        .iter()
        .map(|r| ChargeRequest {
            member_id: r.member_id,
            card_id: r.card_id,
            amount: r.fee,
            reference: r.card_apply_no.to_string(),
            correlation_id: r.correlation_id.clone(),
        })
        .collect();
    let outcomes = charger.charge_all(requests).await;
    let by_reference: BTreeMap<&str, &Reservation> =
        reservations.iter().map(|r| (r.card_apply_no.as_str(), r)).collect();

    let mut settlements = Vec::new();
    let mut unsent = Vec::new();
    for (request, outcome) in &outcomes {
        let Some(r) = by_reference.get(request.reference.as_str()) else { continue };
        match outcome {
            ChargeOutcome::Charged { payment_ref } => settlements.push(Settlement {
                application_id: r.application_id,
                state: PaymentState::Applied,
                payment_ref: payment_ref.clone(),
            }),
            ChargeOutcome::Declined { .. } => settlements.push(Settlement {
                application_id: r.application_id,
                state: PaymentState::Cancelled,
                payment_ref: None,
            }),
            ChargeOutcome::Unknown { reason } => {
                settled.pending += 1;
                tracing::warn!(
                    target: "renewal::card",
                    event = "fee_pending",
                    run_id = results_of.run_id().unwrap_or(0),
                    correlation_id = %r.correlation_id,
                    card = %mask(&r.card_no),
                    card_apply_no = %r.card_apply_no,
                    reason = %reason,
                    "fee outcome unknown; the reservation stays pending for a later run"
                );
            }
            ChargeOutcome::NotSent if origin == Origin::ThisChunk => unsent.push(r.application_id),
            ChargeOutcome::NotSent => settled.pending += 1,
        }
    }

    hooks::maybe_pause(Point::AfterCharge, hook.chunk, hook.committed_cards, hook.shutdown).await;
    let mut tx = store.begin_chunk(false).await?;
    let changed: HashSet<i64> = tx.settle(&settlements).await?.into_iter().collect();
    tx.release(&unsent).await?;
    let mut marks = Vec::new();
    let mut results: BTreeMap<NaiveDate, Vec<ResultRow>> = BTreeMap::new();
    for s in settlements.iter().filter(|s| changed.contains(&s.application_id)) {
        let Some(r) = reservations.iter().find(|r| r.application_id == s.application_id) else { continue };
        let (outcome, fee) = match s.state {
            PaymentState::Applied => {
                marks.push(Claimed { card_id: r.card_id, application_id: r.application_id });
                (Outcome::Success, r.fee)
            }
            _ => (Outcome::FeePayFail, 0),
        };
        let success = outcome == Outcome::Success;
        let row = ResultRow {
            card_id: r.card_id,
            code: outcome.code(),
            message: outcome.message(),
            fee,
            card_apply_no: success.then(|| r.card_apply_no.clone()),
            correlation_id: r.correlation_id.clone(),
        };
        settled.cards.push(CardEvent {
            card_no: r.card_no.clone(),
            correlation_id: r.correlation_id.clone(),
            code: row.code,
            message: row.message.clone(),
            fee,
            card_apply_no: row.card_apply_no.clone(),
        });
        let as_of = r.card_apply_no.as_of().ok_or_else(|| StoreError::Invariant {
            context: "settling a reservation",
            detail: format!("card application {} has no as-of date in its number", r.application_id),
        })?;
        results.entry(as_of).or_default().push(row);
    }
    tx.mark(&marks).await?;
    for (as_of, rows) in &results {
        tx.insert_results(results_of, *as_of, rows).await?;
    }
    tx.commit().await?;
    Ok(settled)
}
