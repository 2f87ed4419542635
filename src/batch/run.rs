//! A run's life: resolve its scope, open its row, drive chunks until the window is empty (or a
//! limit, an error or a shutdown stops it), close its row, log its summary.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use chrono::NaiveDate;
use tokio::sync::Mutex;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::budget::{Budget, Limits};
use super::chunk::{self, ChunkContext, ChunkError};
use super::cursor::{Cursor, RETRY_PASS_PAUSE, Step};
use super::events::{self, CardEvent, RunFields};
use super::hooks::{self, Point};
use super::progress::{self, ProgressOptions};
use super::reissue::{self, ReissueOutcome};
use super::settle;
use super::tally::{RunOf, Tally};
use crate::config::{FeeMode, Settings};
use crate::domain::address::DeliveryAddress;
use crate::domain::card_number::mask;
use crate::domain::expiry::window_months;
use crate::fees::http::HttpCharger;
use crate::store::{
    ChunkTx, NewRun, PageQuery, ResultOrigin, RunStatus, RunSummary, Scope, SlotClaim, Store, StoreError, Trigger,
};

#[derive(Debug, Clone)]
pub struct RunRequest {
    pub as_of: NaiveDate,
    pub trigger: Trigger,
    pub dry_run: bool,
    /// The single-card path: evaluate and record exactly this card.
    pub card: Option<String>,
    /// With `card`: the delivery address to use instead of the member's registered one.
    pub delivery: Option<DeliveryAddress>,
    pub limit: Option<u64>,
    /// A scheduled run: the slot it claims with its row (or takes over).
    pub slot: Option<SlotClaim>,
    /// Told the run's id as soon as its row exists.
    pub started: StartNotice,
    /// Progress snapshots and `run_progress` events.
    pub progress: ProgressOptions,
}

impl RunRequest {
    /// A full run of `as_of`.
    pub fn full(as_of: NaiveDate, trigger: Trigger) -> Self {
        Self {
            as_of,
            trigger,
            dry_run: false,
            card: None,
            delivery: None,
            limit: None,
            slot: None,
            started: StartNotice::default(),
            progress: ProgressOptions::default(),
        }
    }
}

/// Hands a run's id to whoever asked for the run (the admin endpoint's 202) once its row exists.
#[derive(Clone, Default)]
pub struct StartNotice(Option<Arc<std::sync::Mutex<Option<tokio::sync::oneshot::Sender<i64>>>>>);

impl StartNotice {
    pub fn channel() -> (Self, tokio::sync::oneshot::Receiver<i64>) {
        let (tx, rx) = tokio::sync::oneshot::channel();
        (Self(Some(Arc::new(std::sync::Mutex::new(Some(tx))))), rx)
    }

    pub fn send(&self, run_id: i64) {
        if let Some(slot) = &self.0
            && let Some(tx) = slot.lock().unwrap_or_else(|p| p.into_inner()).take()
        {
            let _ = tx.send(run_id);
        }
    }
}

impl std::fmt::Debug for StartNotice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() { "StartNotice(waiting)" } else { "StartNotice(none)" })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("--card must be 16 digits, got {0}")]
    MalformedCard(String),
    #[error("card {0} not found")]
    UnknownCard(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Chunk(#[from] ChunkError),
    #[error("blast-radius limit: {0}")]
    Limit(String),
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error("configuration: cannot build the fee service client: {0}")]
    FeeClient(String),
    #[error("run.paused is set: nothing was done")]
    Paused,
    #[error("internal error: {0}")]
    Internal(String),
}

impl RunError {
    /// True when the error happened before any run row was written (a usage error).
    pub fn is_usage(&self) -> bool {
        matches!(self, Self::MalformedCard(_) | Self::UnknownCard(_) | Self::Config(_) | Self::FeeClient(_))
    }
}

#[derive(Debug)]
pub enum RunReport {
    /// `run.paused` is set: nothing was touched.
    Paused,
    Finished {
        summary: Box<RunSummary>,
        status: RunStatus,
        /// The single-card path: what happened to the card.
        card: Option<Box<ReissueOutcome>>,
    },
}

struct Shared {
    ctx: ChunkContext,
    fields: RunFields,
    window_months: Vec<i64>,
    chunk_size: u32,
    limits: Limits,
    cursor: Mutex<Cursor>,
    budget: Mutex<Budget>,
    chunks: AtomicU64,
    stop: AtomicBool,
    /// Counts, pending fees and a dry run's balances.
    tally: Tally,
    /// The progress watch (a terminal's bar) and the run's start.
    progress: Option<(Arc<tokio::sync::watch::Sender<progress::Progress>>, Instant)>,
    /// The progress total, once counted: progress is shown from then on.
    estimate: OnceLock<u64>,
    /// HTTP fee mode (real runs): the fee service client.
    charger: Option<Arc<HttpCharger>>,
}

impl Shared {
    /// Sends the bar a snapshot, once the total is known.
    fn show_progress(&self) {
        if let (Some((watch, started)), Some(estimate)) = (&self.progress, self.estimate.get()) {
            watch.send_replace(self.tally.progress(*estimate, started.elapsed()));
        }
    }

    /// Cards whose results committed: counted, logged (`duration_ms`: unless the reissue
    /// operation logged them itself) and, for real runs, added to the process's metrics.
    fn committed(&self, cards: &[CardEvent], duration_ms: Option<u64>) {
        self.tally.add(cards);
        self.show_progress();
        for card in cards {
            if let Some(duration_ms) = duration_ms {
                events::card_result(&self.fields, card, duration_ms);
            }
            if !self.ctx.dry_run {
                crate::metrics::card(card.code, card.fee);
            }
        }
    }
}

enum Stopped {
    Drained,
    Interrupted,
    /// The fee service failed: no new chunks; what was in flight is finished.
    Dependency,
}

/// One run. `charger` is the process's fee service client (HTTP fee mode), shared by every run
/// and request of the process so its in-flight bound, rate limit and breaker hold across them.
pub async fn execute<S: Store>(
    store: &S,
    settings: &Settings,
    charger: Option<&Arc<HttpCharger>>,
    request: RunRequest,
    shutdown: CancellationToken,
) -> Result<RunReport, RunError> {
    if settings.run.paused {
        tracing::warn!(event = "run_paused", "run.paused is set: no card was touched");
        return Ok(RunReport::Paused);
    }
    let only_card = match &request.card {
        Some(card_no) => Some(resolve_card(store, card_no).await?),
        None => None,
    };
    let tz = settings.time_zone();
    let charger = match (settings.fees.mode, request.dry_run, charger) {
        (FeeMode::Http, false, Some(charger)) => Some(Arc::clone(charger)),
        (FeeMode::Http, false, None) => {
            return Err(RunError::FeeClient("fees.mode = \"http\" but no fee client was built".to_owned()));
        }
        _ => None,
    };
    let started = Instant::now();
    let scope = match (&request.card, request.limit) {
        (Some(_), _) => Scope::Card,
        (None, Some(_)) => Scope::Limit,
        (None, None) => Scope::Full,
    };
    let handle = if request.dry_run {
        None
    } else {
        for id in store.close_abandoned_runs().await? {
            tracing::warn!(event = "run_abandoned", run_id = id, "closed run left running by a dead process as failed");
        }
        let handle = store.start_run(&new_run(settings, &request, scope)).await?;
        request.started.send(handle.id);
        Some(handle)
    };
    let run_id = handle.as_ref().map(|h| h.id);
    let charger = if run_id.is_some() { charger } else { None };
    let window: Vec<i64> = window_months(request.as_of, settings.run.window_days).iter().map(|m| m.yyyymm()).collect();
    let fields = RunFields {
        run_id: run_id.unwrap_or(0),
        as_of: request.as_of.to_string(),
        trigger: request.trigger.as_str(),
        dry_run: request.dry_run,
    };
    let shared = Arc::new(Shared {
        ctx: ChunkContext {
            run_id,
            api: false,
            as_of: request.as_of,
            rules: settings.run.rules(),
            tz,
            correlation_seed: fastrand::u64(..),
            dry_run: request.dry_run,
            fee_mode: settings.fees.mode,
            reported_products: Arc::default(),
        },
        fields: fields.clone(),
        window_months: window,
        chunk_size: settings.run.chunk_size,
        limits: Limits { max_reissues: settings.run.max_reissues, max_fee_total: settings.run.max_fee_total },
        cursor: Mutex::new(Cursor::new(request.limit)),
        budget: Mutex::new(Budget::default()),
        chunks: AtomicU64::new(0),
        stop: AtomicBool::new(false),
        tally: Tally::default(),
        charger,
        progress: request.progress.watch.as_ref().map(|watch| (Arc::clone(watch), started)),
        estimate: OnceLock::new(),
    });
    let estimate_count = count_estimate(store, &shared, request.progress.wanted(), only_card.is_some());
    let progress_events = request.progress.events_every.map(|every| {
        let shared = Arc::clone(&shared);
        AbortOnDrop(progress::spawn_events(fields.clone(), every, move || {
            shared.estimate.get().map(|estimate| shared.tally.progress(*estimate, started.elapsed()))
        }))
    });
    let tasks = if request.dry_run { 1 } else { settings.chunk_tasks() };
    // Tests hold replicas here, started and connected, to release them together.
    hooks::wait_at_start_gate().await;
    let mut card_outcome = None;
    let outcome = match (settle_leftovers(store, &shared, &shutdown).await, only_card) {
        (Err(e), _) => Err(e),
        (Ok(()), None) => drive(store, &shared, tasks, shutdown).await,
        (Ok(()), Some(card_id)) => {
            single(store, &shared, (card_id, request.delivery.as_ref()), &shutdown).await.map(|(stopped, outcome)| {
                card_outcome = outcome.map(Box::new);
                stopped
            })
        }
    };
    let (status, reason) = match &outcome {
        Ok(Stopped::Drained) => (RunStatus::Completed, None),
        Ok(Stopped::Interrupted) => (RunStatus::Interrupted, Some("interrupted by a shutdown signal".to_owned())),
        Ok(Stopped::Dependency) => {
            let reason = match &shared.charger {
                Some(charger) => charger.stop_reason().await,
                None => None,
            };
            (RunStatus::FailedDependency, Some(reason.unwrap_or_else(|| "fee service failed".to_owned())))
        }
        Err(e) => (RunStatus::Failed, Some(e.to_string())),
    };
    drop(progress_events);
    drop(estimate_count);
    let pending = shared.tally.pending();
    let summary = match handle {
        Some(handle) => match store.finish_run(handle, status, reason.as_deref(), pending).await {
            Ok(summary) => summary,
            Err(close_error) => {
                // The row stays `running` only while this process lives: its liveness lock goes
                // with it, and the next run closes the row as failed. The summary event still goes
                // out, from this process's own counts.
                tracing::error!(
                    event = "run_close_failed",
                    run_id = fields.run_id,
                    error = %close_error,
                    "could not record the run's end; the next run closes its row as failed"
                );
                let reason = Some(format!("could not record the run's end: {close_error}"));
                let summary = shared.tally.summary(
                    run_of(&request, settings, &shared, scope, started),
                    RunStatus::Failed,
                    reason,
                );
                events::run_summary(&fields, &summary, started.elapsed().as_millis() as i64);
                // The run's own error says more than the failure to record it.
                return Err(outcome.err().unwrap_or(RunError::Store(close_error)));
            }
        },
        None => shared.tally.summary(run_of(&request, settings, &shared, scope, started), status, reason),
    };
    events::run_summary(&fields, &summary, started.elapsed().as_millis() as i64);
    if !request.dry_run {
        crate::metrics::run_ended(request.trigger, status, started.elapsed(), summary.pending);
    }
    match outcome {
        Err(e) => Err(e),
        Ok(_) => Ok(RunReport::Finished { summary: Box::new(summary), status, card: card_outcome }),
    }
}

/// HTTP fee mode: settle the reservations earlier runs left pending (their outcome unknown, or
/// their process killed between charge and commit) before claiming anything new.
async fn settle_leftovers<S: Store>(store: &S, shared: &Shared, shutdown: &CancellationToken) -> Result<(), RunError> {
    let (Some(charger), Some(run_id)) = (&shared.charger, shared.ctx.run_id) else { return Ok(()) };
    let leftovers = store.pending_reservations().await?;
    if leftovers.is_empty() {
        return Ok(());
    }
    tracing::info!(event = "settling_pending", run_id, count = leftovers.len(), "settling pending fee reservations");
    let started = Instant::now();
    let hook = settle::HookAt { chunk: 0, committed_cards: 0, shutdown };
    let origin = ResultOrigin::Run(run_id);
    let settled = settle::charge_and_finish(store, charger, origin, leftovers, settle::Origin::Leftover, hook).await?;
    shared.tally.add_pending(settled.pending);
    let duration_ms = started.elapsed().as_millis() as u64;
    shared.committed(&settled.cards, Some(duration_ms));
    Ok(())
}

async fn resolve_card<S: Store>(store: &S, card_no: &str) -> Result<i64, RunError> {
    if card_no.len() != 16 || !card_no.bytes().all(|b| b.is_ascii_digit()) {
        return Err(RunError::MalformedCard(mask(card_no)));
    }
    store.find_card_id(card_no).await?.ok_or_else(|| RunError::UnknownCard(mask(card_no)))
}

fn new_run(settings: &Settings, request: &RunRequest, scope: Scope) -> NewRun {
    NewRun {
        as_of: request.as_of,
        trigger: request.trigger,
        scope,
        params: serde_json::json!({
            "card": request.card.as_deref().map(mask),
            "limit": request.limit,
            "window_days": settings.run.window_days,
            "chunk_size": settings.run.chunk_size,
            "concurrency": settings.chunk_tasks(),
        }),
        version: crate::VERSION.to_owned(),
        fee_mode: settings.fees.mode.as_str().to_owned(),
        slot: request.slot.clone(),
    }
}

/// The single-card path: the reissue operation on the one card, counted like a chunk.
async fn single<S: Store>(
    store: &S,
    shared: &Shared,
    card: (i64, Option<&DeliveryAddress>),
    shutdown: &CancellationToken,
) -> Result<(Stopped, Option<ReissueOutcome>), RunError> {
    if shutdown.is_cancelled() {
        return Ok((Stopped::Interrupted, None));
    }
    let charger = shared.charger.as_ref();
    let done = reissue::reissue_one(store, &shared.ctx, &shared.fields, charger, card, shutdown).await?;
    shared.chunks.fetch_add(1, Ordering::SeqCst);
    shared.tally.add_pending(done.pending);
    shared.committed(&done.results, None);
    let stopped = if charger.is_some_and(|c| c.tripped()) { Stopped::Dependency } else { Stopped::Drained };
    Ok((stopped, Some(done.outcome)))
}

async fn drive<S: Store>(
    store: &S,
    shared: &Arc<Shared>,
    tasks: u32,
    shutdown: CancellationToken,
) -> Result<Stopped, RunError> {
    let mut set = JoinSet::new();
    for _ in 0..tasks {
        let (store, shared, shutdown) = (store.clone(), Arc::clone(shared), shutdown.clone());
        set.spawn(async move {
            let result = chunk_loop(&store, &shared, &shutdown).await;
            if result.is_err() {
                shared.stop.store(true, Ordering::SeqCst);
            }
            result
        });
    }
    let mut first_error = None;
    let mut interrupted = false;
    let mut dependency = false;
    while let Some(joined) = set.join_next().await {
        match joined {
            Ok(Ok(Stopped::Drained)) => {}
            Ok(Ok(Stopped::Interrupted)) => interrupted = true,
            Ok(Ok(Stopped::Dependency)) => dependency = true,
            Ok(Err(e)) => {
                first_error.get_or_insert(e);
            }
            Err(join_error) => {
                first_error.get_or_insert(RunError::Internal(format!("a chunk task ended abnormally: {join_error}")));
            }
        }
    }
    match (first_error, dependency, interrupted) {
        (Some(e), _, _) => Err(e),
        (None, true, _) => Ok(Stopped::Dependency),
        (None, false, true) => Ok(Stopped::Interrupted),
        (None, false, false) => Ok(Stopped::Drained),
    }
}

async fn chunk_loop<S: Store>(store: &S, shared: &Shared, shutdown: &CancellationToken) -> Result<Stopped, RunError> {
    loop {
        if shared.stop.load(Ordering::SeqCst) {
            return Ok(Stopped::Drained);
        }
        if shutdown.is_cancelled() {
            return Ok(Stopped::Interrupted);
        }
        if shared.charger.as_ref().is_some_and(|c| c.tripped()) {
            return Ok(Stopped::Dependency);
        }
        let chunk_started = Instant::now();
        // The cursor is taken before the transaction: a task must never wait for the cursor
        // while holding SQLite's write lock, or the two locks could be taken in opposite orders.
        let mut cursor = shared.cursor.lock().await;
        let Some(limit) = cursor.page_limit(shared.chunk_size) else { return Ok(Stopped::Drained) };
        let page = PageQuery {
            as_of: shared.ctx.as_of,
            window_months: shared.window_months.clone(),
            after: cursor.after(),
            limit,
            only_card: None,
            // Ledger fees write only the database, and only in the chunk: nothing but the
            // chunk's debits changes what the next page shows once it commits.
            read_ahead: !shared.ctx.dry_run && shared.ctx.fee_mode == FeeMode::Ledger,
        };
        let early = evaluate_early(store, &shared.ctx, &page).await;
        let mut tx = store.begin_chunk(shared.ctx.dry_run).await?;
        // Waiting for the transaction (another writer's lock) can take a while: a shutdown
        // requested meanwhile must not start a new chunk.
        if shutdown.is_cancelled() {
            return Ok(Stopped::Interrupted);
        }
        let page = tx.read_candidates(&page).await?;
        let candidates_read = page.candidates.len();
        let page_early = page.early;
        if cursor.needs_end() && cursor.would_leap(page.scanned, page.skipped_locked, candidates_read) {
            cursor.set_end(tx.keyset_end(&shared.window_months).await?);
        }
        let leaps = cursor.leaps();
        let step = cursor
            .record(page.scanned, page.next_after, page.skipped_locked, candidates_read)
            .map_err(|stuck| RunError::Internal(stuck.to_string()))?;
        if cursor.leaps() > leaps {
            tracing::debug!(
                event = "keyset_leap",
                scanned = page.scanned,
                kept = candidates_read,
                after = cursor.after(),
                "another worker holds this stretch of the window: leaping halfway to its end"
            );
        }
        let mut candidates = page.candidates;
        match step {
            Step::Done { left_locked } => {
                if left_locked {
                    tracing::warn!(
                        event = "cards_left_locked",
                        "cards stayed locked by other transactions; the next run takes them"
                    );
                }
                return Ok(Stopped::Drained);
            }
            Step::Pass => {
                // Cards other transactions held were skipped: look at the window again.
                drop(tx);
                drop(cursor);
                tokio::time::sleep(RETRY_PASS_PAUSE).await;
                continue;
            }
            Step::Take { keep: 0 } => continue,
            Step::Take { keep } => candidates.truncate(keep),
        }
        drop(cursor);
        let chunk_no = shared.chunks.fetch_add(1, Ordering::SeqCst) + 1;

        let written = if shared.ctx.dry_run {
            // A dry run debits nothing in the database: what each wallet would have left carries
            // over from chunk to chunk here.
            let mut balances = shared.tally.dry_balances.lock().await;
            chunk::write(&mut tx, &shared.ctx, candidates, None, &mut balances, (chunk_no, shutdown)).await?
        } else {
            // The early evaluation serves only when this chunk's read is that very read (the
            // balances still come from this chunk's read: the chunk before may have debited).
            let early = early.filter(|early| page_early == Some(early.read)).map(|early| early.evaluation);
            chunk::write(&mut tx, &shared.ctx, candidates, early, &mut HashMap::new(), (chunk_no, shutdown)).await?
        };

        let committed_cards = {
            let mut budget = shared.budget.lock().await;
            let reissued = budget.reissued + written.reissued;
            let fee_total = budget.fee_total.saturating_add(written.fee_total);
            if shared.limits.any() {
                // The limits hold per as-of over all of its runs: a real chunk adds to the
                // database's totals in its own transaction (rolled back with it when over).
                let (as_of_reissued, as_of_fees) = if shared.ctx.dry_run {
                    (reissued as i64, fee_total)
                } else {
                    tx.add_to_budget(shared.ctx.as_of, written.reissued as i64, written.fee_total).await?
                };
                if let Some(reason) = shared.limits.exceeded(chunk_no, as_of_reissued, as_of_fees) {
                    return Err(RunError::Limit(reason));
                }
            }
            hooks::maybe_pause(Point::BeforeCommit, chunk_no, budget.cards, shutdown).await;
            if !shared.ctx.dry_run {
                tx.commit().await?;
                // The commit hands the connection back to the pool through a task spawned on
                // this worker thread, where it cannot be stolen: without a yield it waited for
                // this task to log the whole chunk, with the write lock free and the next chunk
                // waiting (11 ms a chunk on SQLite, a tenth of the run).
                tokio::task::yield_now().await;
            }
            *budget = Budget { reissued, fee_total, cards: budget.cards + written.cards.len() as u64 };
            budget.cards
        };
        if chunk_no == 1 && !shared.ctx.dry_run {
            // An optimisation only: two replicas analysing at once can fail one of them
            // ("tuple concurrently updated"), which must not fail a run.
            if let Err(e) = store.refresh_statistics().await {
                tracing::warn!(event = "statistics_refresh_failed", error = %e);
            }
        }
        hooks::maybe_pause(Point::AfterCommit, chunk_no, committed_cards, shutdown).await;
        hooks::pace_after_commit().await;

        let duration_ms = chunk_started.elapsed().as_millis() as u64;
        shared.committed(&written.cards, Some(duration_ms));
        if let (Some(charger), Some(run_id), false) = (&shared.charger, shared.ctx.run_id, written.reserved.is_empty())
        {
            let hook = settle::HookAt { chunk: chunk_no, committed_cards, shutdown };
            let settled = settle::charge_and_finish(
                store,
                charger,
                ResultOrigin::Run(run_id),
                written.reserved,
                settle::Origin::ThisChunk,
                hook,
            )
            .await?;
            shared.tally.add_pending(settled.pending);
            let duration_ms = chunk_started.elapsed().as_millis() as u64;
            shared.committed(&settled.cards, Some(duration_ms));
        }
    }
}

/// A page read ahead, evaluated before its chunk has the write lock.
struct EarlyEvaluation {
    /// The read it came from (`CandidatePage::early`).
    read: u64,
    evaluation: chunk::Evaluation,
}

/// Evaluates the page read ahead for `page`, if there is one, while the chunk before this one
/// still holds the write lock: the evaluation then stays off the lock's path (a tenth of a
/// SQLite night's writer time was this chunk evaluating its page with the lock held). An
/// evaluation that fails is left for the chunk to redo and report.
async fn evaluate_early<S: Store>(store: &S, ctx: &ChunkContext, page: &PageQuery) -> Option<EarlyEvaluation> {
    let early = store.early_page(page).await?;
    let read = early.early?;
    // The balances are entered later, from the chunk's own read (`chunk::write`).
    let evaluation = chunk::evaluate_page(ctx, &early.candidates).ok()?;
    Some(EarlyEvaluation { read, evaluation })
}

/// The run a summary from the tally describes.
fn run_of<'a>(
    request: &RunRequest,
    settings: &'a Settings,
    shared: &Shared,
    scope: Scope,
    started: Instant,
) -> RunOf<'a> {
    RunOf {
        run_id: shared.ctx.run_id.unwrap_or(0),
        as_of: request.as_of,
        trigger: request.trigger,
        scope: if request.dry_run { Scope::DryRun } else { scope },
        fee_mode: settings.fees.mode.as_str(),
        started,
    }
}

/// The progress total, only when someone watches (DESIGN §10: at most 2% of a run): one count
/// over the expiry index, made beside the first chunks rather than before them. On PostgreSQL,
/// right after a run, the count checks each index entry's row (the run left them unvacuumed) and
/// took as long as the rest of an empty rerun (0.41 s of 0.77 s at 1M cards).
fn count_estimate<S: Store>(store: &S, shared: &Arc<Shared>, wanted: bool, one_card: bool) -> Option<AbortOnDrop> {
    if !wanted {
        return None;
    }
    if one_card {
        let _ = shared.estimate.set(1);
        shared.show_progress();
        return None;
    }
    let (store, shared) = (store.clone(), Arc::clone(shared));
    Some(AbortOnDrop(tokio::spawn(async move {
        let estimate = store.estimate_candidates(&shared.window_months, shared.ctx.run_id).await.unwrap_or_else(|e| {
            tracing::warn!(event = "progress_estimate_failed", error = %e, "the progress total is unknown");
            0
        });
        let _ = shared.estimate.set(estimate);
        shared.show_progress();
    })))
}

/// Ends a spawned task when the run ends, whichever way it ends.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
