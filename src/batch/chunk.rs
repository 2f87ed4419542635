//! One chunk: evaluate every candidate, claim the eligible, charge the winners, mark them and
//! record every card's result, all through one transaction (DESIGN §8, §9 "Write path").

use std::collections::{HashMap, HashSet};

use chrono::{NaiveDate, Utc};
use chrono_tz::Tz;

use tokio::sync::watch;

use super::events::CardEvent;
use super::hooks::{self, Point};
use crate::config::FeeMode;
use crate::domain::Outcome;
use crate::domain::eligibility::{Eligible, evaluate};
use crate::domain::expiry::ExpiryMonth;
use crate::domain::fee_plan::FeeDecision;
use crate::domain::ids::{CardApplyNo, CardApplyNoError, correlation_id};
use crate::fees::ledger::{self, Reserved};
use crate::store::{Candidate, ChunkTx, Claimed, NewApplication, PaymentState, Reservation, ResultRow, StoreError};

/// What every chunk of a run shares.
#[derive(Debug, Clone)]
pub(super) struct ChunkContext {
    pub run_id: Option<i64>,
    pub as_of: NaiveDate,
    pub window_days: u32,
    pub tz: Tz,
    pub correlation_seed: u64,
    pub dry_run: bool,
    pub default_validity_months: u32,
    pub fee_mode: FeeMode,
}

#[derive(Debug, thiserror::Error)]
pub enum ChunkError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    ApplyNo(#[from] CardApplyNoError),
}

/// A chunk written but not yet committed.
#[derive(Debug, Default)]
pub(super) struct ChunkWritten {
    /// Cards with their result in this chunk.
    pub cards: Vec<CardEvent>,
    pub reissued: u64,
    /// Fees debited (ledger) or about to be charged (HTTP reservations).
    pub fee_total: i64,
    /// HTTP fee mode: applications reserved in this chunk, to charge once it commits.
    pub reserved: Vec<Reservation>,
}

struct Evaluated {
    event: CardEvent,
    card_id: i64,
    /// `Some` while the card is still on its way to 000_000.
    eligible: Option<(Eligible, String)>,
}

/// Evaluates and writes `candidates` (ascending card id) through `tx`. `balances` holds what
/// each member's wallet has left; members not in it take the balance read with the page.
pub(super) async fn write<T: ChunkTx>(
    tx: &mut T,
    ctx: &ChunkContext,
    candidates: Vec<Candidate>,
    balances: &mut HashMap<i64, i64>,
    (chunk_no, shutdown): (u64, &watch::Receiver<bool>),
) -> Result<ChunkWritten, ChunkError> {
    let now_local = Utc::now().with_timezone(&ctx.tz).naive_local();
    let mut evaluated = Vec::with_capacity(candidates.len());
    let mut applications = Vec::new();
    for candidate in candidates {
        let facts = &candidate.facts;
        let correlation = correlation_id(now_local, ctx.correlation_seed, facts.card_id);
        let mut event = CardEvent {
            card_no: facts.card_no.clone(),
            correlation_id: correlation.clone(),
            code: "",
            message: String::new(),
            fee: 0,
            card_apply_no: None,
        };
        let deferred_fee = ctx.fee_mode == FeeMode::Http;
        let eligible = match evaluate(facts, ctx.as_of, ctx.window_days) {
            Err(outcome) => {
                set_outcome(&mut event, outcome);
                None
            }
            Ok(eligible) => {
                if let Some(m) = &facts.member {
                    balances.entry(m.member_id).or_insert(candidate.balance);
                }
                let apply_no = CardApplyNo::derive(ctx.as_of, candidate.prior_applications, facts.card_id)?;
                let validity = candidate.validity_months.unwrap_or(i64::from(ctx.default_validity_months));
                let validity = u32::try_from(validity.clamp(1, 600)).unwrap_or(60);
                applications.push(NewApplication {
                    card_id: facts.card_id,
                    member_id: eligible.member_id,
                    product_id: facts.product.product_id,
                    card_apply_no: apply_no.to_string(),
                    fee: eligible.fee,
                    new_expiry_yyyymm: ExpiryMonth::of_date(ctx.as_of).plus_months(validity).yyyymm(),
                    correlation_id: correlation,
                    // HTTP mode reserves fee-bearing cards; the charge happens after this commits.
                    payment_state: if deferred_fee && eligible.fee > 0 {
                        PaymentState::PendingPayment
                    } else {
                        PaymentState::Applied
                    },
                    run_id: ctx.run_id,
                });
                Some((eligible, apply_no.to_string()))
            }
        };
        evaluated.push(Evaluated { event, card_id: facts.card_id, eligible });
    }

    hooks::maybe_pause(Point::BeforeClaim, chunk_no, 0, shutdown).await;
    // Claim first: a card renewed meanwhile (the API, another replica) loses here, alone.
    let claimed: Vec<Claimed> = if ctx.dry_run {
        applications.iter().map(|a| Claimed { card_id: a.card_id, application_id: 0 }).collect()
    } else {
        tx.claim(&applications).await?
    };
    let won: HashMap<i64, i64> = claimed.iter().map(|c| (c.card_id, c.application_id)).collect();
    let mut reserved = Vec::with_capacity(won.len());
    for card in &mut evaluated {
        if let Some((eligible, apply_no)) = &card.eligible {
            match won.get(&card.card_id) {
                Some(&application_id) => {
                    reserved.push(Reserved { eligible: *eligible, application_id, card_apply_no: apply_no.clone() })
                }
                None => {
                    set_outcome(&mut card.event, Outcome::AlreadyReissued);
                    card.eligible = None;
                }
            }
        }
    }

    let decisions = match ctx.fee_mode {
        FeeMode::Ledger => ledger::charge(tx, &reserved, balances, ctx.dry_run).await?,
        // The service decides after commit; a dry run reports the charge it would ask for.
        FeeMode::Http => reserved
            .iter()
            .map(|r| if r.eligible.fee == 0 { FeeDecision::Free } else { FeeDecision::Charge(r.eligible.fee) })
            .collect(),
    };
    let defer = ctx.fee_mode == FeeMode::Http && !ctx.dry_run;
    let mut declined = HashSet::new();
    let mut deferred = HashMap::new();
    let mut marks = Vec::new();
    let mut fees = HashMap::new();
    for (r, decision) in reserved.iter().zip(&decisions) {
        match decision {
            FeeDecision::Decline => {
                declined.insert(r.eligible.card_id);
            }
            FeeDecision::Charge(amount) if defer => {
                deferred.insert(r.eligible.card_id, (r.application_id, *amount));
            }
            FeeDecision::Charge(amount) => {
                fees.insert(r.eligible.card_id, *amount);
                marks.push(Claimed { card_id: r.eligible.card_id, application_id: r.application_id });
            }
            FeeDecision::Free => marks.push(Claimed { card_id: r.eligible.card_id, application_id: r.application_id }),
        }
    }
    if !ctx.dry_run {
        let withdrawn: Vec<i64> =
            reserved.iter().filter(|r| declined.contains(&r.eligible.card_id)).map(|r| r.application_id).collect();
        tx.unclaim(&withdrawn).await?;
        tx.mark(&marks).await?;
    }

    let mut written = ChunkWritten::default();
    let mut results = Vec::with_capacity(evaluated.len());
    for mut card in evaluated {
        if let (Some((eligible, apply_no)), Some(&(application_id, fee))) =
            (card.eligible.as_ref(), deferred.get(&card.card_id))
        {
            // Counted against the blast-radius limits as if charged: the service decides later.
            written.fee_total += fee;
            written.reissued += 1;
            written.reserved.push(Reservation {
                application_id,
                card_id: card.card_id,
                card_no: card.event.card_no,
                member_id: eligible.member_id,
                fee,
                card_apply_no: apply_no.clone(),
                correlation_id: card.event.correlation_id,
            });
            continue;
        }
        if let Some((_, apply_no)) = card.eligible.take() {
            if declined.contains(&card.card_id) {
                set_outcome(&mut card.event, Outcome::FeePayFail);
            } else {
                set_outcome(&mut card.event, Outcome::Success);
                card.event.fee = fees.get(&card.card_id).copied().unwrap_or(0);
                card.event.card_apply_no = Some(apply_no);
                written.reissued += 1;
                written.fee_total += card.event.fee;
            }
        }
        results.push(ResultRow {
            card_id: card.card_id,
            code: card.event.code,
            message: card.event.message.clone(),
            fee: card.event.fee,
            card_apply_no: card.event.card_apply_no.clone(),
            correlation_id: card.event.correlation_id.clone(),
        });
        written.cards.push(card.event);
    }
    if let (false, Some(run_id)) = (ctx.dry_run, ctx.run_id) {
        tx.insert_results(run_id, ctx.as_of, &results).await?;
    }
    Ok(written)
}

fn set_outcome(event: &mut CardEvent, outcome: Outcome) {
    event.code = outcome.code();
    event.message = outcome.message();
}
