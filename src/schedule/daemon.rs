//! The daemon's loop. One run at a time per process: ticks that come while a run goes are
//! skipped (and logged); checks (at start, after each run, every `schedule.check_seconds`) take
//! over slots whose claimer died and catch up missed business dates, oldest first; a manual
//! trigger (`--run-now`, `POST /runs`) goes through the same single flight.
//!
//! tokio-cron-scheduler only wakes us up: each slot is armed as a one-shot job at the instant
//! `slots` computed (no repeated jobs, #113; no `_tz` constructors, #107), and the next one is
//! armed when it fires.

use std::collections::{HashSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use chrono::NaiveDate;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_cron_scheduler::{Job, JobScheduler};

use super::admin::{Answer, Trigger as AdminTrigger};
use super::clock;
use super::plan::{self, Planned};
use super::slots::{CronSchedule, Slot};
use crate::batch::{RunError, RunReport, RunRequest, StartNotice};
use crate::store::{RunStatus, SlotClaim, Store, StoreError, Trigger};
use crate::worker::{App, Shutdown};

/// How far back a check counts missed dates (beyond the catch-up window).
const MISSED_LOOKBACK_DAYS: u32 = 400;
/// A replica that claimed recent slots waits this long per recent claim before claiming the
/// next, so slots spread over replicas that tick together instead of one always winning.
const CLAIM_STAGGER: Duration = Duration::from_millis(150);
const RECENT_TICKS: usize = 6;

#[derive(Debug, Clone, Default)]
pub struct DaemonOptions {
    /// `--run-now [--as-of D]`: one manual run at start.
    pub run_now: Option<Option<NaiveDate>>,
}

/// How the daemon ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stopped {
    /// Shut down with nothing in flight, or its run ended within the grace.
    Clean,
    /// A run was still going when `shutdown.grace_seconds` ran out.
    GraceExceeded,
}

#[derive(Debug)]
enum Kind {
    Tick,
    Planned(Planned),
    Manual { key_id: String },
}

struct InFlight {
    kind: Kind,
    as_of: NaiveDate,
    slot: Option<Slot>,
    run_id: Arc<std::sync::Mutex<Option<i64>>>,
    task: JoinHandle<Result<RunReport, RunError>>,
}

struct Daemon<S: Store> {
    app: Arc<App<S>>,
    schedule: CronSchedule,
    name: String,
    shutdown: Shutdown,
    queue: VecDeque<Planned>,
    missed_seen: HashSet<NaiveDate>,
    held_seen: HashSet<NaiveDate>,
    recent_claims: VecDeque<bool>,
}

/// Runs the daemon until `shutdown`; `admin` carries manual triggers from `POST /runs`.
pub async fn run_daemon<S: Store>(
    app: Arc<App<S>>,
    options: DaemonOptions,
    mut admin: mpsc::Receiver<AdminTrigger>,
    shutdown: Shutdown,
) -> Result<Stopped, RunError> {
    let settings = app.settings().clone();
    let schedule = settings.cron_schedule()?;
    let mut daemon = Daemon {
        app,
        schedule,
        name: settings.schedule.name.clone(),
        shutdown: shutdown.clone(),
        queue: VecDeque::new(),
        missed_seen: HashSet::new(),
        held_seen: HashSet::new(),
        recent_claims: VecDeque::new(),
    };
    let scheduler = JobScheduler::new().await.map_err(|e| RunError::Internal(format!("scheduler: {e}")))?;
    scheduler.start().await.map_err(|e| RunError::Internal(format!("scheduler: {e}")))?;
    let (tick_tx, mut ticks) = mpsc::channel::<Slot>(16);
    let next = daemon.arm(&scheduler, &tick_tx, clock::now()).await;
    let mut armed = next;
    let tz = daemon.schedule.time_zone();
    tracing::info!(
        event = "schedule_started",
        schedule = %daemon.name,
        cron = daemon.schedule.expr(),
        time_zone = tz.name(),
        next_slot_local = %next.map(|s| s.at.with_timezone(&tz).to_rfc3339()).unwrap_or_default(),
        next_slot_utc = %next.map(|s| s.at.to_rfc3339()).unwrap_or_default(),
        next_business_date = %next.map(|s| s.business_date.to_string()).unwrap_or_default(),
        catch_up_days = settings.schedule.catch_up_days,
        paused = settings.schedule.paused,
        "daemon started"
    );
    let mut current: Option<InFlight> = None;
    if let Some(as_of) = options.run_now {
        let as_of = as_of.unwrap_or_else(|| daemon.default_as_of());
        current =
            Some(daemon.start(Kind::Manual { key_id: "--run-now".to_owned() }, as_of, None, StartNotice::default()));
    }
    let mut check = tokio::time::interval(Duration::from_secs(settings.schedule.check_seconds));
    check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            biased;
            _ = shutdown.cancelled() => break,
            ended = wait(&mut current) => {
                // The gauges first: what the end's log events announce is on /metrics already.
                daemon.refresh_gauges().await;
                let done = current.take().map(|c| (c.kind, c.as_of, c.slot));
                if let Some((kind, as_of, slot)) = done {
                    daemon.ended(kind, as_of, slot, ended).await;
                }
                // A check after each run: the next date is planned from the history as it is now.
                if !settings.schedule.paused && !shutdown.is_cancelled() {
                    daemon.check(settings.schedule.catch_up_days).await;
                }
                current = daemon.next_queued();
            }
            Some(slot) = ticks.recv() => {
                armed = daemon.arm(&scheduler, &tick_tx, slot.at).await;
                daemon.tick(slot, armed, &mut current).await;
            }
            _ = check.tick() => {
                if armed.is_none() {
                    // Arming failed earlier: try again rather than never ticking again.
                    armed = daemon.arm(&scheduler, &tick_tx, clock::now()).await;
                }
                daemon.refresh_gauges().await;
                if current.is_none() && !settings.schedule.paused {
                    daemon.check(settings.schedule.catch_up_days).await;
                    current = daemon.next_queued();
                }
            }
            Some(request) = admin.recv() => {
                daemon.manual(request, &mut current);
            }
        }
    }
    let stopped = daemon.stop(current, &settings).await;
    let mut scheduler = scheduler;
    // Its shutdown can hang (upstream #14, #76): bounded.
    let _ = tokio::time::timeout(Duration::from_secs(2), scheduler.shutdown()).await;
    tracing::info!(event = "shutdown_scheduler_stopped", "no more ticks");
    Ok(stopped)
}

/// Resolves when the run in flight ends (never, when none is).
async fn wait(current: &mut Option<InFlight>) -> Result<RunReport, RunError> {
    match current {
        Some(c) => match (&mut c.task).await {
            Ok(result) => result,
            Err(e) => Err(RunError::Internal(format!("the run task ended abnormally: {e}"))),
        },
        None => std::future::pending().await,
    }
}

impl<S: Store> Daemon<S> {
    /// Arms a one-shot wake-up for the first slot after `after`.
    async fn arm(
        &self,
        scheduler: &JobScheduler,
        ticks: &mpsc::Sender<Slot>,
        after: chrono::DateTime<chrono::Utc>,
    ) -> Option<Slot> {
        let slot = self.schedule.next_after(after.max(clock::now() - chrono::Duration::seconds(1)))?;
        crate::metrics::next_slot(slot.at);
        let wait = (slot.at - clock::now()).to_std().unwrap_or_default();
        let ticks = ticks.clone();
        let job = Job::new_one_shot_async(wait, move |_id, _lock| {
            let ticks = ticks.clone();
            Box::pin(async move {
                // The scheduler fires on whole seconds and can be up to one early.
                let early = (slot.at - clock::now()).to_std().unwrap_or_default();
                tokio::time::sleep(early).await;
                let _ = ticks.send(slot).await;
            })
        });
        match job {
            Ok(job) => match scheduler.add(job).await {
                Ok(_) => Some(slot),
                Err(e) => {
                    tracing::error!(event = "schedule_arm_failed", error = %e, "cannot arm the next slot");
                    None
                }
            },
            Err(e) => {
                tracing::error!(event = "schedule_arm_failed", error = %e, "cannot arm the next slot");
                None
            }
        }
    }

    fn default_as_of(&self) -> NaiveDate {
        self.schedule
            .latest_at_or_before(clock::now())
            .map(|s| s.business_date)
            .unwrap_or_else(|| crate::domain::as_of::business_date(clock::now(), self.schedule.time_zone()))
    }

    async fn tick(&mut self, slot: Slot, next: Option<Slot>, current: &mut Option<InFlight>) {
        let fields = (slot.at.to_rfc3339(), slot.business_date.to_string());
        let next_utc = next.map(|n| n.at.to_rfc3339()).unwrap_or_default();
        if self.app.settings().schedule.paused {
            tracing::info!(event = "tick_paused", slot_utc = %fields.0, business_date = %fields.1, "schedule.paused is set");
            return;
        }
        if let Some(busy) = current {
            let running = *busy.run_id.lock().unwrap_or_else(|p| p.into_inner());
            tracing::warn!(
                event = "tick_skipped",
                slot_utc = %fields.0,
                business_date = %fields.1,
                running_run_id = running.unwrap_or(0),
                "a run is going in this process; this slot is left to another replica or to catch-up"
            );
            crate::metrics::tick_skipped();
            crate::metrics::slot("skipped");
            return;
        }
        tracing::info!(event = "tick", slot_utc = %fields.0, business_date = %fields.1, next_slot_utc = %next_utc);
        *current = Some(self.start(Kind::Tick, slot.business_date, Some(slot), StartNotice::default()));
    }

    fn manual(&mut self, request: AdminTrigger, current: &mut Option<InFlight>) {
        if let Some(busy) = current {
            let run_id = *busy.run_id.lock().unwrap_or_else(|p| p.into_inner());
            tracing::warn!(event = "manual_run_refused", key_id = %request.key_id, running_run_id = run_id.unwrap_or(0), "a run is going");
            let _ = request.reply.send(Answer::Busy { run_id });
            return;
        }
        let as_of = request.as_of.unwrap_or_else(|| self.default_as_of());
        tracing::info!(event = "manual_run_requested", key_id = %request.key_id, as_of = %as_of);
        let (notice, started) = StartNotice::channel();
        *current = Some(self.start(Kind::Manual { key_id: request.key_id }, as_of, None, notice));
        let _ = request.reply.send(Answer::Started { as_of, run_id: started });
    }

    fn start(&mut self, kind: Kind, as_of: NaiveDate, slot: Option<Slot>, notice: StartNotice) -> InFlight {
        let (trigger, claim) = match &kind {
            Kind::Tick => (Trigger::Schedule, slot.map(|s| self.slot_claim(s, false))),
            Kind::Planned(p) => (Trigger::Schedule, Some(self.slot_claim(p.slot, p.takeover))),
            Kind::Manual { .. } => (Trigger::Manual, None),
        };
        let stagger = match kind {
            Kind::Tick => CLAIM_STAGGER * self.recent_claims.iter().filter(|c| **c).count() as u32,
            _ => Duration::ZERO,
        };
        let run_id = Arc::new(std::sync::Mutex::new(None));
        let (own_notice, own_started) = StartNotice::channel();
        let progress = crate::batch::progress::ProgressOptions {
            watch: None,
            events_every: Some(Duration::from_secs(self.app.settings().log.progress_seconds)),
        };
        let request =
            RunRequest { slot: claim.clone(), started: own_notice, progress, ..RunRequest::full(as_of, trigger) };
        let (app, shutdown, seen) = (Arc::clone(&self.app), self.shutdown.clone(), Arc::clone(&run_id));
        let claimed = claim.as_ref().map(|c| (c.at.to_rfc3339(), c.as_of.to_string(), c.takeover));
        let task = tokio::spawn(async move {
            tokio::time::sleep(stagger).await;
            let forward = tokio::spawn(async move {
                if let Ok(id) = own_started.await {
                    *seen.lock().unwrap_or_else(|p| p.into_inner()) = Some(id);
                    notice.send(id);
                    if let Some((slot_utc, business_date, takeover)) = claimed {
                        tracing::info!(event = "slot_claimed", run_id = id, slot_utc, business_date, takeover);
                    }
                }
            });
            // A rolling deploy may have migrated the schema since this process started: a
            // schema it must not run on stops the run before it claims anything (exit-5 rule).
            if let Err(e) = app.store().check_schema().await {
                forward.abort();
                return Err(RunError::Store(e));
            }
            let result = app.run_once(request, shutdown).await;
            let _ = forward.await;
            result
        });
        InFlight { kind, as_of, slot, run_id, task }
    }

    fn slot_claim(&self, slot: Slot, takeover: bool) -> SlotClaim {
        SlotClaim { schedule: self.name.clone(), at: slot.at, as_of: slot.business_date, takeover }
    }

    fn next_queued(&mut self) -> Option<InFlight> {
        if self.shutdown.is_cancelled() {
            return None;
        }
        let planned = self.queue.pop_front()?;
        let (as_of, slot) = (planned.slot.business_date, planned.slot);
        tracing::info!(
            event = if planned.takeover { "slot_takeover" } else { "catch_up" },
            slot_utc = %slot.at.to_rfc3339(),
            business_date = %as_of,
            "running a business date without a completed full run"
        );
        crate::metrics::slot(if planned.takeover { "takeover" } else { "catch_up" });
        Some(self.start(Kind::Planned(planned), as_of, Some(slot), StartNotice::default()))
    }

    async fn ended(&mut self, kind: Kind, as_of: NaiveDate, slot: Option<Slot>, result: Result<RunReport, RunError>) {
        let slot_utc = slot.map(|s| s.at.to_rfc3339()).unwrap_or_default();
        let claimed = match &result {
            Err(RunError::Store(StoreError::SlotTaken { held, .. })) => {
                tracing::info!(
                    event = "slot_taken",
                    slot_utc = %slot_utc,
                    business_date = %as_of,
                    held = held.as_deref().unwrap_or(""),
                    "another replica claimed this slot"
                );
                crate::metrics::slot("taken");
                false
            }
            Ok(RunReport::Paused) => false,
            Ok(RunReport::Finished { summary, status, .. }) => {
                tracing::info!(
                    event = "slot_run_ended",
                    slot_utc = %slot_utc,
                    business_date = %as_of,
                    run_id = summary.run_id,
                    status = %status,
                    "run ended"
                );
                if matches!(kind, Kind::Tick) {
                    crate::metrics::slot("claimed");
                }
                *status != RunStatus::Running
            }
            Err(e) => {
                tracing::error!(event = "slot_run_failed", slot_utc = %slot_utc, business_date = %as_of, error = %e);
                match (slot, e) {
                    // Exit 5 after the run started: a person looks before anything retries; no
                    // replica takes the slot over.
                    (Some(slot), RunError::Limit(_)) => {
                        if let Err(hold) = self.app.store().hold_slot(&self.name, slot.at, &e.to_string()).await {
                            tracing::error!(event = "slot_hold_failed", error = %hold);
                        }
                    }
                    // Nothing was claimed: a binary of the right version takes the date.
                    (_, RunError::Store(s)) if s.is_schema_mismatch() => {
                        tracing::error!(event = "schema_mismatch", error = %s, "this binary does not run on the schema; deploy the matching version");
                    }
                    _ => {}
                }
                true
            }
        };
        if let Kind::Manual { key_id } = &kind {
            tracing::info!(event = "manual_run_ended", key_id = %key_id, as_of = %as_of);
        }
        if matches!(kind, Kind::Tick) {
            self.recent_claims.push_back(claimed);
            while self.recent_claims.len() > RECENT_TICKS {
                self.recent_claims.pop_front();
            }
        }
    }

    /// Takeover and catch-up: plans the runs of business dates without a completed full run.
    async fn check(&mut self, catch_up_days: u32) {
        let store = self.app.store();
        match store.close_abandoned_runs().await {
            Ok(ids) => {
                for id in ids {
                    tracing::warn!(
                        event = "run_abandoned",
                        run_id = id,
                        "closed run left running by a dead process as failed"
                    );
                }
            }
            Err(e) => {
                tracing::warn!(event = "schedule_check_failed", error = %e);
                return;
            }
        }
        let dates = plan::dates_to_check(&self.schedule, catch_up_days, MISSED_LOOKBACK_DAYS, clock::now());
        let Some(oldest) = dates.last() else { return };
        let history = match store.schedule_history(&self.name, oldest.business_date).await {
            Ok(history) => history,
            Err(e) => {
                tracing::warn!(event = "schedule_check_failed", error = %e);
                return;
            }
        };
        let decided = plan::decide(&dates, catch_up_days, &history);
        for date in decided.missed {
            if self.missed_seen.insert(date) {
                tracing::warn!(
                    event = "missed_slot",
                    business_date = %date,
                    catch_up_days,
                    "no completed full run for this date, older than schedule.catch_up_days: not run; rerun it by hand if it matters"
                );
                crate::metrics::missed_date();
            }
        }
        for date in decided.held {
            if self.held_seen.insert(date) {
                tracing::warn!(event = "slot_held", business_date = %date, "its run stopped for a person (exit 5); not taken over");
            }
        }
        // One at a time: each run's end checks again, so the next date is planned from the
        // history as it is then (another replica may have completed it meanwhile).
        self.queue = decided.runs.into_iter().take(1).collect();
    }

    async fn refresh_gauges(&self) {
        match self.app.store().db_gauges().await {
            Ok(g) => crate::metrics::db_gauges(&g, chrono::Utc::now()),
            Err(e) => tracing::warn!(event = "gauges_refresh_failed", error = %e),
        }
    }

    async fn stop(&mut self, current: Option<InFlight>, settings: &crate::config::Settings) -> Stopped {
        tracing::info!(event = "shutdown_stop_claiming", "no new runs will start");
        self.queue.clear();
        let Some(mut current) = current else {
            tracing::info!(event = "shutdown_idle", "no run in flight");
            return Stopped::Clean;
        };
        let grace = Duration::from_secs(settings.shutdown.grace_seconds);
        let run_id = *current.run_id.lock().unwrap_or_else(|p| p.into_inner());
        tracing::info!(
            event = "shutdown_waiting_for_run",
            run_id = run_id.unwrap_or(0),
            grace_seconds = grace.as_secs(),
            "letting the chunk in flight commit or roll back"
        );
        match tokio::time::timeout(grace, &mut current.task).await {
            Ok(joined) => {
                let result = joined.unwrap_or_else(|e| Err(RunError::Internal(e.to_string())));
                let status = match &result {
                    Ok(RunReport::Finished { status, .. }) => status.as_str(),
                    Ok(RunReport::Paused) => "paused",
                    Err(_) => "failed",
                };
                tracing::info!(
                    event = "shutdown_run_stopped",
                    run_id = run_id.unwrap_or(0),
                    status,
                    "the run recorded its end"
                );
                let (kind, as_of, slot) = (current.kind, current.as_of, current.slot);
                self.ended(kind, as_of, slot, result).await;
                Stopped::Clean
            }
            Err(_) => {
                tracing::error!(
                    event = "shutdown_grace_exceeded",
                    run_id = run_id.unwrap_or(0),
                    "the run did not stop within shutdown.grace_seconds; its open transaction rolls back as the process exits"
                );
                Stopped::GraceExceeded
            }
        }
    }
}
