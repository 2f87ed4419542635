//! The commands: what `main` calls once arguments and configuration are known.
//! Errors carry the process exit code (README "Exit codes").

pub mod print;
mod progress;
pub use print::Ui;

use std::path::Path;
use std::sync::Arc;

use chrono::{NaiveDate, Utc};

use crate::batch::{RunError, RunReport, RunRequest};
use crate::cli::{Command, ConfigAction};
use crate::config::{ConfigError, Settings, redact_url};
use crate::domain::as_of::{business_date, parse_as_of};
use crate::domain::expiry::window_months;
use crate::schedule::admin;
use crate::schedule::{self, DaemonOptions, Stopped, run_daemon};
use crate::store::postgres::PgStore;
use crate::store::sqlite::{Create, SqliteStore};
use crate::store::{Admin, DemoLoad, PageQuery, RunStatus, Store, StoreError, Trigger};
use crate::worker::App;
pub use crate::worker::Shutdown;
use crate::{api, demo, metrics, ops};

/// Process exit codes (README "Exit codes").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    Completed = 0,
    Failed = 1,
    Usage = 2,
    FailedDependency = 3,
    Interrupted = 4,
    /// A person must look before anything retries: a blast-radius limit was reached, or the
    /// schema does not match the binary. A CronJob fails at once on it; no replica takes over.
    StoppedForPerson = 5,
}

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error("{0}")]
    Usage(String),
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Run(#[from] RunError),
    #[error("{0}")]
    Failed(String),
}

impl AppError {
    pub fn exit(&self) -> Exit {
        match self {
            Self::Usage(_)
            | Self::Config(_)
            | Self::Store(StoreError::MissingDatabase(_) | StoreError::NotWritable(_)) => Exit::Usage,
            Self::Run(e) if e.is_usage() => Exit::Usage,
            Self::Store(e) | Self::Run(RunError::Store(e)) if e.is_schema_mismatch() => Exit::StoppedForPerson,
            Self::Run(RunError::Limit(_)) => Exit::StoppedForPerson,
            _ => Exit::Failed,
        }
    }
}

/// The database a command runs against, chosen by the scheme of `database.url`.
pub enum Backend {
    Sqlite(SqliteStore),
    Postgres(PgStore),
}

/// Runs `$body` with `$store` bound to the concrete store, whichever backend it is.
macro_rules! with_store {
    ($backend:expr, $store:ident => $body:expr) => {
        match $backend {
            Backend::Sqlite($store) => $body,
            Backend::Postgres($store) => $body,
        }
    };
}

/// Runs one command; stdout gets its output, the returned code becomes the exit status.
pub async fn dispatch(command: Command, settings: &Settings, ui: Ui, shutdown: Shutdown) -> Result<Exit, AppError> {
    match command {
        Command::Config { action: None | Some(ConfigAction::Show) } => print::config_show(ui, settings),
        Command::Config { action: Some(ConfigAction::Check) } => Ok(print::config_check(ui, Vec::new())),
        Command::Completions { .. } | Command::Man => Ok(Exit::Completed),
        Command::Demo { cards, seed, db } => {
            let mut settings = settings.clone();
            settings.database.url = format!("sqlite://{}", db.display());
            remove_sqlite_files(&db)?;
            let as_of = resolve_as_of(None, &settings)?;
            let store = SqliteStore::connect(&settings.database, Create::IfMissing).await?;
            seed_demo(&store, &settings, cards, seed, as_of, 1).await?;
            let exit = run(&store, &settings, ui, RunRequest::full(as_of, Trigger::Manual), shutdown).await;
            store.close().await;
            // Every other command defaults to database.url: this one line points them at the demo's file.
            if ui.format == crate::output::Format::Table && !ui.quiet {
                println!(
                    "next: export RENEWAL__DATABASE__URL={}  (then report, runs, explain, run read this file)",
                    settings.database.url
                );
            }
            exit
        }
        command => {
            let create = match command {
                Command::Migrate | Command::SeedDemo { .. } => Create::IfMissing,
                Command::Report { .. } | Command::Runs { .. } | Command::Explain { .. } => Create::ReadOnly,
                Command::Run { dry_run: true, .. } => Create::ReadOnly,
                _ => Create::Never,
            };
            with_store!(open(settings, create).await?, store => {
                let exit = on_store(&store, command, settings, ui, shutdown).await;
                store.close().await;
                exit
            })
        }
    }
}

async fn on_store<S: Store + DemoLoad>(
    store: &S,
    command: Command,
    settings: &Settings,
    ui: Ui,
    shutdown: Shutdown,
) -> Result<Exit, AppError> {
    match command {
        Command::Migrate => {
            store.migrate().await?;
            println!("migrated {}", redact_url(&settings.database.url));
            return Ok(Exit::Completed);
        }
        Command::SeedDemo { cards, seed, as_of, sparse } => {
            let as_of = resolve_as_of(as_of.as_deref(), settings)?;
            seed_demo(store, settings, cards, seed, as_of, sparse).await?;
            return Ok(Exit::Completed);
        }
        _ => store.check_schema().await?,
    }
    match command {
        Command::Run { as_of, dry_run, card, limit, scheduled, force_as_of } => {
            let as_of = match (as_of.as_deref(), scheduled) {
                (None, true) => latest_slot_date(settings)?,
                (raw, _) => resolve_as_of(raw, settings)?,
            };
            if !dry_run && !force_as_of {
                refuse_far_as_of(as_of, settings)?;
            }
            let trigger = if scheduled { Trigger::Schedule } else { Trigger::Manual };
            let request = RunRequest { dry_run, card, limit, ..RunRequest::full(as_of, trigger) };
            if settings.metrics.pushgateway_url.is_empty() {
                return run(store, settings, ui, request, shutdown).await;
            }
            let handle = metrics::install(&settings.metrics.currency).map_err(AppError::Failed)?;
            let result = run(store, settings, ui, request, shutdown).await;
            // The pushed group is the last run's view: the (db) gauges as this run leaves them.
            match store.db_gauges().await {
                Ok(gauges) => metrics::db_gauges(&gauges, Utc::now()),
                Err(e) => tracing::warn!(event = "gauges_refresh_failed", error = %e),
            }
            match metrics::push(&settings.metrics.pushgateway_url, &handle).await {
                Ok(()) => tracing::info!(event = "metrics_pushed", job = metrics::PUSH_JOB),
                Err(e) => tracing::warn!(event = "metrics_push_failed", error = %e, "the run's result stands"),
            }
            result
        }
        Command::Schedule { run_now, as_of, force_as_of } => {
            let run_now = match (run_now, as_of.as_deref()) {
                (false, _) => None,
                (true, None) => Some(None),
                (true, Some(raw)) => {
                    let as_of = resolve_as_of(Some(raw), settings)?;
                    if !force_as_of {
                        refuse_far_as_of(as_of, settings)?;
                    }
                    Some(Some(as_of))
                }
            };
            services(store, settings, Services { schedule: Some(DaemonOptions { run_now }), api: false }, shutdown)
                .await
        }
        Command::Serve => {
            if settings.api.keys.0.is_empty() {
                return Err(AppError::Usage(
                    "api.keys is empty: `serve` needs at least one key (RENEWAL__API__KEYS=id:secret,...)".to_owned(),
                ));
            }
            let schedule = settings.schedule.enabled.then(DaemonOptions::default);
            services(store, settings, Services { schedule, api: true }, shutdown).await
        }
        Command::Report { run_id, as_of } => {
            let as_of = as_of.as_deref().map(|raw| resolve_as_of(Some(raw), settings)).transpose()?;
            print::report(ui, store, run_id, as_of).await
        }
        Command::Runs { last, status, as_of } => {
            let filter = crate::store::RunFilter {
                last,
                status: status.as_deref().map(print::parse_status).transpose()?,
                as_of: as_of.as_deref().map(|raw| resolve_as_of(Some(raw), settings)).transpose()?,
            };
            print::runs(ui, store, filter).await
        }
        Command::Prune => {
            let days = i64::from(settings.run.result_retention_days);
            let deleted = store.prune_results(Utc::now() - chrono::Duration::days(days)).await?;
            println!("deleted {deleted} result rows older than {days} days");
            let keys = store.prune_idempotency(Utc::now()).await?;
            println!("deleted {keys} expired idempotency keys");
            Ok(Exit::Completed)
        }
        Command::Explain { as_of } => {
            let as_of = resolve_as_of(as_of.as_deref(), settings)?;
            let page = PageQuery {
                as_of,
                window_months: window_months(as_of, settings.run.window_days).iter().map(|m| m.yyyymm()).collect(),
                after: 0,
                limit: settings.run.chunk_size,
                only_card: None,
                read_ahead: false,
            };
            print::plan(ui, as_of, &store.explain_candidate_query(&page).await?)
        }
        Command::Migrate
        | Command::SeedDemo { .. }
        | Command::Config { .. }
        | Command::Demo { .. }
        | Command::Completions { .. }
        | Command::Man => Ok(Exit::Completed),
    }
}

/// What a long-running process serves besides its operations listener.
struct Services {
    /// The daemon (`schedule`, or `serve` with `schedule.enabled`).
    schedule: Option<DaemonOptions>,
    /// The sync API (`serve`).
    api: bool,
}

/// `schedule` and `serve`: one store, one fee client and one metrics registry for everything
/// the process serves, stopped together by `shutdown`.
async fn services<S: Store>(
    store: &S,
    settings: &Settings,
    services: Services,
    shutdown: Shutdown,
) -> Result<Exit, AppError> {
    let handle = metrics::install(&settings.metrics.currency).map_err(AppError::Failed)?;
    let app = Arc::new(App::new(store.clone(), settings.clone())?);
    let mut listeners = tokio::task::JoinSet::new();
    let ops_listener = ops::bind(&settings.metrics.listen, "metrics.listen").await.map_err(AppError::Failed)?;
    tracing::info!(event = "listening", what = "metrics", addr = %settings.metrics.listen);
    listeners.spawn(ops::serve(ops_listener, ops::router(store.clone(), handle), shutdown.clone()));
    let work = api::TaskTracker::new();
    if services.api {
        let api_listener = ops::bind(&settings.api.listen, "api.listen").await.map_err(AppError::Failed)?;
        tracing::info!(event = "listening", what = "api", addr = %settings.api.listen);
        listeners.spawn(ops::serve(api_listener, api::router(Arc::clone(&app), work.clone()), shutdown.clone()));
    }
    let (triggers, admin_rx) = tokio::sync::mpsc::channel(8);
    if services.schedule.is_none() {
        tracing::info!(event = "schedule_disabled", "schedule.enabled is false: this process runs no schedule");
    } else if settings.admin.keys.0.is_empty() {
        tracing::info!(event = "admin_disabled", "admin.keys is empty: POST /runs is not served");
    } else {
        let admin_listener = ops::bind(&settings.admin.listen, "admin.listen").await.map_err(AppError::Failed)?;
        tracing::info!(event = "listening", what = "admin", addr = %settings.admin.listen);
        let bound = admin::AsOfBound { max_days_ahead: settings.run.max_days_ahead, time_zone: settings.time_zone() };
        let router = admin::router(settings.admin.keys.clone(), triggers.clone(), bound);
        listeners.spawn(ops::serve(admin_listener, router, shutdown.clone()));
    }
    let stopped = match services.schedule {
        Some(options) => run_daemon(app, options, admin_rx, shutdown.clone()).await,
        None => {
            shutdown.cancelled().await;
            Ok(Stopped::Clean)
        }
    };
    shutdown.cancel();
    // Listeners drain their requests in flight (the API's reissues finish) within the grace.
    let grace = std::time::Duration::from_secs(settings.shutdown.grace_seconds);
    let _ = tokio::time::timeout(grace, async { while listeners.join_next().await.is_some() {} }).await;
    match stopped? {
        Stopped::Clean => {
            tracing::info!(event = "shutdown_complete", "stopped cleanly");
            Ok(Exit::Completed)
        }
        Stopped::GraceExceeded => Ok(Exit::Interrupted),
    }
}

/// `run --scheduled`: the business date of the latest slot at or before now (a Job started late,
/// or retried after midnight, still runs its night).
fn latest_slot_date(settings: &Settings) -> Result<NaiveDate, AppError> {
    let schedule = settings.cron_schedule()?;
    let now = schedule::clock::now();
    Ok(schedule
        .latest_at_or_before(now)
        .map(|slot| slot.business_date)
        .unwrap_or_else(|| business_date(now, schedule.time_zone())))
}

/// A run on a date later than today plus `run.max_days_ahead` would renew cards early: refused
/// unless forced. Past dates stay allowed (a rerun finishes what a night left).
pub fn refuse_far_as_of(as_of: NaiveDate, settings: &Settings) -> Result<(), AppError> {
    let today = business_date(Utc::now(), settings.time_zone());
    if let Some(ahead) = crate::domain::as_of::too_far_ahead(as_of, today, settings.run.max_days_ahead) {
        return Err(AppError::Usage(format!(
            "--as-of {as_of} is {ahead} days after today ({today} in {}), beyond run.max_days_ahead = {}: \
             it would renew cards early; pass --force-as-of if that is meant (a --dry-run takes any date)",
            settings.time_zone().name(),
            settings.run.max_days_ahead
        )));
    }
    Ok(())
}

fn pool_size(settings: &Settings) -> u32 {
    settings.database.max_connections.max(settings.chunk_tasks() + 1)
}

/// Opens the store `database.url` names (`create`: whether a missing SQLite file may be created).
pub async fn open(settings: &Settings, create: Create) -> Result<Backend, AppError> {
    let url = &settings.database.url;
    if url.starts_with("sqlite:") {
        Ok(Backend::Sqlite(SqliteStore::connect(&settings.database, create).await?))
    } else {
        Ok(Backend::Postgres(PgStore::connect(&settings.database, create, pool_size(settings)).await?))
    }
}

fn resolve_as_of(raw: Option<&str>, settings: &Settings) -> Result<NaiveDate, AppError> {
    match raw {
        Some(raw) => parse_as_of(raw)
            .ok_or_else(|| AppError::Usage(format!("--as-of {raw:?} is not a date of the form YYYY-MM-DD"))),
        None => Ok(business_date(Utc::now(), settings.time_zone())),
    }
}

async fn seed_demo<S: Store + DemoLoad>(
    store: &S,
    settings: &Settings,
    cards: u64,
    seed: u64,
    as_of: NaiveDate,
    sparse: u32,
) -> Result<(), AppError> {
    store.migrate().await?;
    if store.holds_data().await? {
        return Err(AppError::Usage(format!(
            "{} already holds products, members or cards: seed-demo loads into an empty database \
             (point database.url at a new file or database, or use `demo`, which recreates its own file)",
            redact_url(&settings.database.url)
        )));
    }
    let data = demo::generate(cards, seed, as_of, settings.run.window_days, sparse);
    store.load_demo(&data).await?;
    println!(
        "seeded {} cards, {} members, {} products (seed {seed}, as-of {as_of})",
        data.cards.len(),
        data.members.len(),
        data.products.len()
    );
    Ok(())
}

async fn run<S: Store>(
    store: &S,
    settings: &Settings,
    ui: Ui,
    request: RunRequest,
    shutdown: Shutdown,
) -> Result<Exit, AppError> {
    let app = App::new(store.clone(), settings.clone())?;
    let (progress, bar) = progress::start(ui, settings);
    let request = RunRequest { progress, ..request };
    let report = app.run_once(request, shutdown).await;
    if let Some(bar) = bar {
        bar.finish();
    }
    match report? {
        RunReport::Paused => {
            println!("run.paused is set: nothing was done");
            Ok(Exit::Completed)
        }
        RunReport::Finished { summary, status, card } => {
            print::run_summary(ui, &summary, card.as_deref())?;
            if let (RunStatus::FailedDependency | RunStatus::Interrupted, Some(reason)) = (status, &summary.reason) {
                eprintln!("error: {reason}");
            }
            Ok(match status {
                RunStatus::Completed => Exit::Completed,
                RunStatus::Interrupted => Exit::Interrupted,
                RunStatus::FailedDependency => Exit::FailedDependency,
                RunStatus::Failed | RunStatus::Running => Exit::Failed,
            })
        }
    }
}

fn remove_sqlite_files(db: &Path) -> Result<(), AppError> {
    for suffix in ["", "-wal", "-shm"] {
        let mut path = db.as_os_str().to_owned();
        path.push(suffix);
        match std::fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(AppError::Failed(format!("cannot replace {}: {e}", Path::new(&path).display())));
            }
        }
    }
    Ok(())
}
