//! The reissue-one-card operation: evaluate, claim, charge and record exactly one card, through
//! the very code the batch applies to a page of cards (`chunk::write`, then the HTTP settlement),
//! and return what happened to it as a value. `run --card` calls it today; the sync API will.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use serde::Serialize;
use tokio_util::sync::CancellationToken;

use super::chunk::{self, ChunkContext};
use super::events::{self, CardEvent, RunFields};
use super::hooks::{self, Point};
use super::run::RunError;
use super::settle;
use crate::domain::address::{AddressInput, DeliveryAddress};
use crate::domain::card_number::mask;
use crate::domain::ids::CardApplyNo;
use crate::fees::http::HttpCharger;
use crate::store::{ChunkTx, PageQuery, Store};

/// What the operation did to the card.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ReissueOutcome {
    /// First 6 + last 4 digits.
    pub card: String,
    /// The recorded code (§2); `None` while the fee's outcome is unknown or it was never sent.
    pub code: Option<&'static str>,
    pub message: Option<String>,
    pub card_apply_no: Option<CardApplyNo>,
    /// Charged (or, while pending, asked for).
    pub fee: i64,
    pub correlation_id: String,
    /// The address the application was written to (the request's, else the registered one),
    /// when it passed the address checks.
    pub delivery: Option<DeliveryAddress>,
    /// HTTP fee mode: the charge's outcome is still unknown; a later run settles it.
    pub fee_pending: bool,
}

/// The committed effects of one call, for the run that made it.
pub(super) struct Reissued {
    pub outcome: ReissueOutcome,
    /// Cards with a committed result (one, or none while pending).
    pub results: Vec<CardEvent>,
    pub pending: u64,
}

/// Reissues `card_id` for `ctx.as_of`. `delivery` replaces the member's registered address
/// (the API's `addressInfo`) and is checked the same way.
pub(super) async fn reissue_one<S: Store>(
    store: &S,
    ctx: &ChunkContext,
    fields: &RunFields,
    charger: Option<&Arc<HttpCharger>>,
    (card_id, delivery): (i64, Option<&DeliveryAddress>),
    shutdown: &CancellationToken,
) -> Result<Reissued, RunError> {
    let tx = store.begin_chunk(ctx.dry_run).await?;
    reissue_in(store, tx, ctx, fields, charger, (card_id, delivery), shutdown).await
}

/// [`reissue_one`] in a transaction already begun (the API looks its member up in it first).
async fn reissue_in<S: Store>(
    store: &S,
    mut tx: S::Chunk,
    ctx: &ChunkContext,
    fields: &RunFields,
    charger: Option<&Arc<HttpCharger>>,
    (card_id, delivery): (i64, Option<&DeliveryAddress>),
    shutdown: &CancellationToken,
) -> Result<Reissued, RunError> {
    let started = Instant::now();
    let page = PageQuery {
        as_of: ctx.as_of,
        window_months: Vec::new(),
        after: 0,
        limit: 1,
        only_card: Some(card_id),
        read_ahead: false,
    };
    let Some(mut candidate) = tx.read_candidates(&page).await?.candidates.pop() else {
        return Err(RunError::UnknownCard(format!("card id {card_id}")));
    };
    if let (Some(d), Some(member)) = (delivery, candidate.facts.member.as_mut()) {
        member.address = Some(d.address.clone());
        member.address_detail = Some(d.address_detail.clone());
        member.zip_code = Some(d.zip_code.clone());
    }
    let used = candidate.facts.member.as_ref().and_then(|m| {
        DeliveryAddress::parse(&AddressInput {
            address: m.address.as_deref(),
            address_detail: m.address_detail.as_deref(),
            zip_code: m.zip_code.as_deref(),
        })
        .ok()
    });
    let card = mask(&candidate.facts.card_no);
    let written = chunk::write(&mut tx, ctx, vec![candidate], None, &mut HashMap::new(), (1, shutdown)).await?;
    hooks::maybe_pause(Point::BeforeCommit, 1, 0, shutdown).await;
    if !ctx.dry_run {
        tx.commit().await?;
    }
    hooks::maybe_pause(Point::AfterCommit, 1, written.cards.len() as u64, shutdown).await;
    let duration_ms = started.elapsed().as_millis() as u64;
    for event in &written.cards {
        events::card_result(fields, event, duration_ms);
    }
    let mut results = written.cards;
    let mut pending = 0;
    let reservation = written.reserved.first().cloned();
    if let (Some(charger), Some(origin), false) = (charger, ctx.origin(), written.reserved.is_empty()) {
        let hook = settle::HookAt { chunk: 1, committed_cards: 0, shutdown };
        let settled =
            settle::charge_and_finish(store, charger, origin, written.reserved, settle::Origin::ThisChunk, hook)
                .await?;
        let duration_ms = started.elapsed().as_millis() as u64;
        for event in &settled.cards {
            events::card_result(fields, event, duration_ms);
        }
        pending = settled.pending;
        results.extend(settled.cards);
    }
    let outcome = match (results.first(), reservation) {
        (Some(event), _) => ReissueOutcome {
            card,
            code: Some(event.code),
            message: Some(event.message.clone()),
            card_apply_no: event.card_apply_no.clone(),
            fee: event.fee,
            correlation_id: event.correlation_id.clone(),
            delivery: used,
            fee_pending: false,
        },
        (None, Some(r)) => ReissueOutcome {
            card,
            code: None,
            message: None,
            card_apply_no: Some(r.card_apply_no),
            fee: r.fee,
            correlation_id: r.correlation_id,
            delivery: used,
            fee_pending: pending > 0,
        },
        (None, None) => {
            return Err(RunError::Internal(format!("card id {card_id} was evaluated without an outcome")));
        }
    };
    Ok(Reissued { outcome, results, pending })
}

/// What the sync API's reissue found: the caller's member and card, then the operation's outcome.
#[derive(Debug)]
pub enum ApiReissue {
    /// No such member, or a cancelled one (`001_006`).
    NoMember,
    /// The member has no card with that number (`000_002 cardInfo.oldCardNo`).
    NotTheirs,
    Done(Box<ReissueOutcome>),
}

/// The sync API's reissue: the caller's member and card looked up, then [`reissue_one`] on that
/// card in the same transaction, its results recorded without a run row (trigger `api`), on
/// `as_of`, to the request's delivery address.
pub async fn reissue_for_api<S: Store>(
    store: &S,
    settings: &crate::config::Settings,
    charger: Option<&Arc<HttpCharger>>,
    (user_id, card_no, delivery, as_of): (i64, &str, &DeliveryAddress, chrono::NaiveDate),
    shutdown: &CancellationToken,
) -> Result<ApiReissue, RunError> {
    let charger = match (settings.fees.mode, charger) {
        (crate::config::FeeMode::Http, None) => {
            return Err(RunError::FeeClient("fees.mode = \"http\" but no fee client was built".to_owned()));
        }
        (crate::config::FeeMode::Http, charger) => charger,
        (crate::config::FeeMode::Ledger, _) => None,
    };
    let mut tx = store.begin_chunk(false).await?;
    let card_id = match tx.member_card(user_id, card_no).await? {
        crate::store::MemberCard::NoMember => return Ok(ApiReissue::NoMember),
        crate::store::MemberCard::NotTheirs => return Ok(ApiReissue::NotTheirs),
        crate::store::MemberCard::Card(id) => id,
    };
    let ctx = ChunkContext {
        run_id: None,
        api: true,
        as_of,
        rules: settings.run.rules(),
        tz: settings.time_zone(),
        correlation_seed: fastrand::u64(..),
        dry_run: false,
        fee_mode: settings.fees.mode,
        reported_products: Arc::default(),
    };
    let fields = RunFields { run_id: 0, as_of: as_of.to_string(), trigger: "api", dry_run: false };
    let done = reissue_in(store, tx, &ctx, &fields, charger, (card_id, Some(delivery)), shutdown).await?;
    for card in &done.results {
        crate::metrics::card(card.code, card.fee);
    }
    Ok(ApiReissue::Done(Box::new(done.outcome)))
}
