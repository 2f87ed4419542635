//! One chunk: evaluate every candidate, claim the eligible, charge the winners, mark them and
//! record every card's result, all through one transaction (DESIGN §8, §9 "Write path").

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use chrono::{NaiveDate, Utc};
use chrono_tz::Tz;

use tokio_util::sync::CancellationToken;

use super::events::CardEvent;
use super::hooks::{self, Point};
use crate::config::FeeMode;
use crate::domain::Outcome;
use crate::domain::address::{AddressInput, DeliveryAddress};
use crate::domain::eligibility::{Eligible, ProductFacts, Rules, evaluate};
use crate::domain::expiry::ExpiryMonth;
use crate::domain::fee_plan::{FeeDecision, plan_fees};
use crate::domain::ids::{CardApplyNo, CardApplyNoError, correlation_id};
use crate::fees::ledger::{self, Reserved};
use crate::store::{
    Candidate, ChunkTx, Claimed, NewApplication, PaymentState, Reservation, ResultOrigin, ResultRow, StoreError,
};

/// What every chunk of a run shares.
#[derive(Debug, Clone)]
pub(super) struct ChunkContext {
    pub run_id: Option<i64>,
    /// The sync API's reissue: results are recorded without a run row.
    pub api: bool,
    pub as_of: NaiveDate,
    pub rules: Rules,
    pub tz: Tz,
    pub correlation_seed: u64,
    pub dry_run: bool,
    pub fee_mode: FeeMode,
    /// Products already reported as misconfigured in this run (each is logged once).
    pub reported_products: Arc<Mutex<HashSet<i64>>>,
}

impl ChunkContext {
    /// Whose results this chunk records: none for a dry run.
    pub fn origin(&self) -> Option<ResultOrigin> {
        match (self.dry_run, self.run_id, self.api) {
            (true, _, _) => None,
            (false, Some(id), _) => Some(ResultOrigin::Run(id)),
            (false, None, true) => Some(ResultOrigin::Api),
            (false, None, false) => None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ChunkError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    ApplyNo(#[from] CardApplyNoError),
    #[error("internal error: {0}")]
    Invariant(String),
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
    eligible: Option<Eligible>,
}

/// How often a chunk retries the claims whose card application number another writer had
/// taken: each retry first reads the numbers taken, so one retry settles all but a race.
const CLAIM_ROUNDS: usize = 3;

/// A page's cards evaluated, before anything is written: pure work, which the batch may do
/// before the chunk holds the write lock (on a page read ahead).
pub(super) struct Evaluation {
    evaluated: Vec<Evaluated>,
    applications: Vec<NewApplication>,
}

impl Evaluation {
    /// Whether this is the evaluation of exactly `candidates`, card for card.
    fn covers(&self, candidates: &[Candidate]) -> bool {
        self.evaluated.len() == candidates.len()
            && self.evaluated.iter().zip(candidates).all(|(card, candidate)| card.card_id == candidate.facts.card_id)
    }
}

/// Enters the member of each fee-bearing eligible card of `evaluation` into `balances` with the
/// balance `candidates` (the same cards, `Evaluation::covers`) carry, unless already there. Only
/// a fee-bearing card's balance is read (SQLite skips the wallet otherwise). A page evaluated
/// early, before the chunk before it debited some of its members, takes its balances from the
/// chunk's own read here.
fn enter_balances(evaluation: &Evaluation, candidates: &[Candidate], balances: &mut HashMap<i64, i64>) {
    for (card, candidate) in evaluation.evaluated.iter().zip(candidates) {
        if let Some(eligible) = card.eligible.filter(|e| e.fee > 0) {
            balances.entry(eligible.member_id).or_insert(candidate.balance);
        }
    }
}

/// Evaluates and writes `candidates` (ascending card id) through `tx`. `early` is an evaluation
/// made before the chunk had the lock; it is used when it covers these very cards, and the page
/// is evaluated here otherwise. `balances` holds what each member's wallet has left; members not
/// in it take the balance read with the page.
pub(super) async fn write<T: ChunkTx>(
    tx: &mut T,
    ctx: &ChunkContext,
    candidates: Vec<Candidate>,
    early: Option<Evaluation>,
    balances: &mut HashMap<i64, i64>,
    at: (u64, &CancellationToken),
) -> Result<ChunkWritten, ChunkError> {
    let evaluation = match early {
        Some(early) if early.covers(&candidates) => early,
        _ => evaluate_page(ctx, &candidates)?,
    };
    enter_balances(&evaluation, &candidates, balances);
    drop(candidates);
    write_evaluated(tx, ctx, evaluation, balances, at).await
}

/// Evaluates `candidates` (ascending card id) against the rules, and the eligible into the
/// applications to claim. No balance is looked at: the fee plan comes later, in the lock.
pub(super) fn evaluate_page(ctx: &ChunkContext, candidates: &[Candidate]) -> Result<Evaluation, ChunkError> {
    let now_local = Utc::now().with_timezone(&ctx.tz).naive_local();
    let mut evaluated = Vec::with_capacity(candidates.len());
    let mut applications = Vec::new();
    let deferred_fee = ctx.fee_mode == FeeMode::Http;
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
        let eligible = match evaluate(facts, ctx.as_of, &ctx.rules) {
            Err(outcome) => {
                if outcome == Outcome::ProductNotValid {
                    report_product(ctx, &facts.product);
                }
                set_outcome(&mut event, outcome);
                None
            }
            Ok(eligible) => {
                let member = facts.member.as_ref();
                // Eligible means the address passed the same check, so this is its parsed form.
                let delivery = DeliveryAddress::parse(&AddressInput {
                    address: member.and_then(|m| m.address.as_deref()),
                    address_detail: member.and_then(|m| m.address_detail.as_deref()),
                    zip_code: member.and_then(|m| m.zip_code.as_deref()),
                })
                .map_err(|field| ChunkError::Invariant(format!("an eligible card's {} is invalid", field.as_str())))?;
                applications.push(NewApplication {
                    card_id: facts.card_id,
                    member_id: eligible.member_id,
                    product_id: facts.product.product_id,
                    delivery,
                    card_apply_no: CardApplyNo::derive(ctx.as_of, facts.card_id, candidate.prior_applications)?,
                    attempt: candidate.prior_applications,
                    fee: eligible.fee,
                    new_expiry_yyyymm: ExpiryMonth::of_date(ctx.as_of).plus_months(eligible.validity_months).yyyymm(),
                    correlation_id: correlation,
                    // HTTP mode reserves fee-bearing cards; the charge happens after this commits.
                    payment_state: if deferred_fee && eligible.fee > 0 {
                        PaymentState::PendingPayment
                    } else {
                        PaymentState::Applied
                    },
                    run_id: ctx.run_id,
                });
                Some(eligible)
            }
        };
        evaluated.push(Evaluated { event, card_id: facts.card_id, eligible });
    }
    Ok(Evaluation { evaluated, applications })
}

/// Writes an evaluation through `tx`: claims, fees, marks and results. `balances` holds
/// what each member's wallet has left (`enter_balances`).
async fn write_evaluated<T: ChunkTx>(
    tx: &mut T,
    ctx: &ChunkContext,
    evaluation: Evaluation,
    balances: &mut HashMap<i64, i64>,
    (chunk_no, shutdown): (u64, &CancellationToken),
) -> Result<ChunkWritten, ChunkError> {
    let Evaluation { mut evaluated, applications } = evaluation;
    let deferred_fee = ctx.fee_mode == FeeMode::Http;
    hooks::maybe_pause(Point::BeforeClaim, chunk_no, 0, shutdown).await;
    let claims = match (ctx.fee_mode, ctx.dry_run) {
        (FeeMode::Ledger, false) => {
            let eligibles: Vec<Eligible> = evaluated.iter().filter_map(|card| card.eligible).collect();
            claim_payable(tx, ctx, applications, &eligibles, balances).await?
        }
        _ => claim(tx, ctx, applications).await?,
    };
    let mut reserved = Vec::with_capacity(claims.won.len());
    for card in &mut evaluated {
        if let Some(eligible) = &card.eligible {
            match claims.won.get(&card.card_id) {
                Some((application_id, apply_no)) => reserved.push(Reserved {
                    eligible: *eligible,
                    application_id: *application_id,
                    card_apply_no: apply_no.clone(),
                }),
                None => {
                    let lost = if claims.unavailable.contains(&card.card_id) {
                        Outcome::ApplyNoUnavailable
                    } else if claims.unpaid.contains(&card.card_id) {
                        Outcome::FeePayFail
                    } else {
                        Outcome::AlreadyReissued
                    };
                    set_outcome(&mut card.event, lost);
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
    let defer = deferred_fee && !ctx.dry_run;
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
        let won = claims.won.get(&card.card_id);
        if let (Some(eligible), Some((_, apply_no)), Some(&(application_id, fee))) =
            (card.eligible.as_ref(), won, deferred.get(&card.card_id))
        {
            // Counted against the blast-radius limits as if charged: the service decides later.
            written.fee_total = written.fee_total.saturating_add(fee);
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
        if let (Some(_), Some((_, apply_no))) = (card.eligible.take(), won) {
            if declined.contains(&card.card_id) {
                set_outcome(&mut card.event, Outcome::FeePayFail);
            } else {
                set_outcome(&mut card.event, Outcome::Success);
                card.event.fee = fees.get(&card.card_id).copied().unwrap_or(0);
                card.event.card_apply_no = Some(apply_no.clone());
                written.reissued += 1;
                written.fee_total = written.fee_total.saturating_add(card.event.fee);
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
    if let Some(origin) = ctx.origin() {
        tx.insert_results(origin, ctx.as_of, &results).await?;
    }
    Ok(written)
}

/// The claims of one chunk: which cards won an application (and under which number), which
/// could get no number at all, and which were not claimed because their fee cannot be paid.
#[derive(Default)]
struct Claims {
    won: HashMap<i64, (i64, CardApplyNo)>,
    unavailable: HashSet<i64>,
    unpaid: HashSet<i64>,
}

/// Ledger mode: claims only the cards their member's balance can pay for (and the free ones),
/// so a card that is going to be declined never writes an application only to withdraw it (a
/// seventh of a demo night's claims). `eligibles` are the applications' cards, in card order.
///
/// A claim lost to someone else frees its fee for the member's later cards, so the chunk's
/// fees are planned again without the losers and the cards that became payable are claimed in
/// turn: the winners are then the cards claiming everything would have charged. A planned
/// decline that has a live application meanwhile is left out of `unpaid`: it gets 003_004, as
/// a lost claim does.
async fn claim_payable<T: ChunkTx>(
    tx: &mut T,
    ctx: &ChunkContext,
    applications: Vec<NewApplication>,
    eligibles: &[Eligible],
    balances: &HashMap<i64, i64>,
) -> Result<Claims, ChunkError> {
    let start: HashMap<i64, i64> = eligibles
        .iter()
        .filter(|e| e.fee > 0)
        .map(|e| (e.member_id, balances.get(&e.member_id).copied().unwrap_or(0)))
        .collect();
    let mut claims = Claims::default();
    let mut lost: HashSet<i64> = HashSet::new();
    let mut unclaimed = applications;
    loop {
        let in_play: Vec<Eligible> = eligibles.iter().filter(|e| !lost.contains(&e.card_id)).copied().collect();
        let plan = plan_fees(&in_play, &mut start.clone());
        let payable: HashSet<i64> = in_play
            .iter()
            .zip(&plan)
            .filter(|(_, decision)| **decision != FeeDecision::Decline)
            .map(|(e, _)| e.card_id)
            .collect();
        let (now, later): (Vec<_>, Vec<_>) = unclaimed.into_iter().partition(|a| payable.contains(&a.card_id));
        unclaimed = later;
        if now.is_empty() {
            break;
        }
        let tried: Vec<i64> = now.iter().map(|a| a.card_id).collect();
        let round = claim(tx, ctx, now).await?;
        let losers: Vec<i64> = tried.into_iter().filter(|id| !round.won.contains_key(id)).collect();
        claims.won.extend(round.won);
        claims.unavailable.extend(round.unavailable);
        if losers.is_empty() {
            break;
        }
        lost.extend(losers);
    }
    let declined: Vec<i64> = unclaimed.iter().map(|a| a.card_id).collect();
    if !declined.is_empty() {
        let live: HashSet<i64> = tx.live_application_cards(&declined).await?.into_iter().collect();
        claims.unpaid = declined.into_iter().filter(|id| !live.contains(id)).collect();
    }
    Ok(claims)
}

/// Claim first: a card renewed meanwhile (the API, another replica) loses here, alone. A claim
/// that lost to a card application number written by someone else (not to a live application
/// of the card) is retried under the card's first free number of the day.
async fn claim<T: ChunkTx>(tx: &mut T, ctx: &ChunkContext, apps: Vec<NewApplication>) -> Result<Claims, ChunkError> {
    let mut claims = Claims::default();
    if ctx.dry_run {
        claims.won = apps.into_iter().map(|a| (a.card_id, (0, a.card_apply_no))).collect();
        return Ok(claims);
    }
    let mut pending = apps;
    for _ in 0..CLAIM_ROUNDS {
        if pending.is_empty() {
            break;
        }
        let winners: HashMap<i64, i64> =
            tx.claim(&pending).await?.into_iter().map(|c| (c.card_id, c.application_id)).collect();
        let mut losers = Vec::new();
        for app in pending {
            match winners.get(&app.card_id) {
                Some(&id) => {
                    claims.won.insert(app.card_id, (id, app.card_apply_no));
                }
                None => losers.push(app),
            }
        }
        if losers.is_empty() {
            return Ok(claims);
        }
        let loser_ids: Vec<i64> = losers.iter().map(|a| a.card_id).collect();
        let live: HashSet<i64> = tx.live_application_cards(&loser_ids).await?.into_iter().collect();
        pending = Vec::new();
        for mut app in losers.into_iter().filter(|a| !live.contains(&a.card_id)) {
            let (low, high) = CardApplyNo::day_range(ctx.as_of, app.card_id)?;
            let taken: HashSet<CardApplyNo> = tx.taken_apply_nos(&low, &high).await?.into_iter().collect();
            tracing::warn!(
                event = "card_apply_no_taken",
                run_id = ctx.run_id.unwrap_or(0),
                card_id = app.card_id,
                card_apply_no = %app.card_apply_no,
                taken = taken.len(),
                "the card's application number was already taken by another row; trying the next free one"
            );
            match CardApplyNo::first_free(ctx.as_of, app.card_id, app.attempt, &taken)? {
                Some(next) => {
                    app.card_apply_no = next;
                    pending.push(app);
                }
                None => {
                    claims.unavailable.insert(app.card_id);
                }
            }
        }
    }
    for app in pending {
        claims.unavailable.insert(app.card_id);
    }
    for card_id in &claims.unavailable {
        tracing::error!(
            event = "card_apply_no_unavailable",
            run_id = ctx.run_id.unwrap_or(0),
            card_id,
            "no free card application number for the card today; it gets 900_001 and is tried again tomorrow"
        );
    }
    Ok(claims)
}

/// Logs a misconfigured product once per run: its fee or validity cannot be right, so every one
/// of its cards gets `003_009` until the product is fixed.
fn report_product(ctx: &ChunkContext, product: &ProductFacts) {
    let Some(problem) = product.problem(&ctx.rules) else { return };
    let first = ctx.reported_products.lock().unwrap_or_else(|p| p.into_inner()).insert(product.product_id);
    if first {
        tracing::error!(
            event = "product_misconfigured",
            run_id = ctx.run_id.unwrap_or(0),
            product_id = product.product_id,
            problem = problem.as_str(),
            "the product's data is impossible: its cards get 003_009 until it is fixed"
        );
    }
}

fn set_outcome(event: &mut CardEvent, outcome: Outcome) {
    event.code = outcome.code();
    event.message = outcome.message();
}
