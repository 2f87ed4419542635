//! The command line (clap derive). Parsing only; `app` does the work.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "renewal-worker",
    version = crate::VERSION,
    about = "Renews prepaid cards that expire within the window, exactly once per card."
)]
pub struct Cli {
    /// Directory holding default.toml and $APP_ENV.toml overlays [env: RENEWAL_CONFIG_DIR; default: ./config]
    #[arg(long, global = true, value_name = "DIR")]
    pub config_dir: Option<PathBuf>,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create the database if needed and apply migrations.
    Migrate,

    /// Load deterministic demo data (members, wallets, products, cards) into an empty database.
    SeedDemo {
        /// Number of cards to generate (members: 60% of that, plus a showcase of every outcome).
        #[arg(long, default_value_t = 10_000)]
        cards: u64,
        /// Random seed: the same seed, card count and as-of give the same data.
        #[arg(long, default_value_t = crate::demo::DEFAULT_SEED)]
        seed: u64,
        /// The business date the expiries are spread around (YYYY-MM-DD) [default: today in run.time_zone]
        #[arg(long, value_name = "YYYY-MM-DD")]
        as_of: Option<String>,
    },

    /// Run the renewal once now (the cron container's and the operator's command).
    Run {
        /// Business date to evaluate against (YYYY-MM-DD) [default: today in run.time_zone]
        #[arg(long, value_name = "YYYY-MM-DD")]
        as_of: Option<String>,
        /// Evaluate and report, but write nothing at all (no application, charge, mark, result or run row).
        #[arg(long)]
        dry_run: bool,
        /// Evaluate and record exactly this card (16 digits), whatever its expiry: the manual rerun path.
        #[arg(long, value_name = "CARDNO")]
        card: Option<String>,
        /// Evaluate at most this many candidate cards.
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
        limit: Option<u64>,
        /// Accept an as-of later than today plus run.max_days_ahead (renews cards early).
        #[arg(long)]
        force_as_of: bool,
        /// Record the run as triggered by the schedule (the cron container) instead of by hand; without
        /// --as-of, the as-of is the business date of the latest slot of schedule.cron at or before now.
        #[arg(long)]
        scheduled: bool,
    },

    /// The nightly daemon: runs on schedule.cron in schedule.time_zone, one run per slot across
    /// replicas, catches up missed dates, serves /metrics, /healthz, /readyz (and POST /runs).
    Schedule {
        /// Start one manual run at once (then keep the schedule): the rerun flag.
        #[arg(long)]
        run_now: bool,
        /// With --run-now: the business date to run (YYYY-MM-DD) [default: the latest slot's date]
        #[arg(long, value_name = "YYYY-MM-DD", requires = "run_now")]
        as_of: Option<String>,
        /// With --as-of: accept a date later than today plus run.max_days_ahead.
        #[arg(long, requires = "as_of")]
        force_as_of: bool,
    },

    /// The sync API: POST /api/v1/prepay-card/expired/reissue on api.listen (and /openapi.json),
    /// /metrics, /healthz, /readyz on metrics.listen; with schedule.enabled also the daemon.
    Serve,

    /// Print the summary of a run: counts per code, fee total, timing.
    Report {
        /// The run id [default: the latest run]
        run_id: Option<i64>,
    },

    /// Delete result rows older than run.result_retention_days.
    Prune,

    /// Print the database's plan for the candidate query (it must seek the expiry index).
    Explain {
        /// Business date whose window to explain (YYYY-MM-DD) [default: today in run.time_zone]
        #[arg(long, value_name = "YYYY-MM-DD")]
        as_of: Option<String>,
    },

    /// Print the effective configuration, secrets redacted.
    Config,

    /// Fresh demo: create an SQLite file, seed demo data, run once for today, show the summary.
    Demo {
        /// Number of demo cards.
        #[arg(long, default_value_t = 10_000)]
        cards: u64,
        /// Random seed for the demo data.
        #[arg(long, default_value_t = crate::demo::DEFAULT_SEED)]
        seed: u64,
        /// The SQLite file to (re)create; any existing file there is replaced.
        #[arg(long, default_value = "renewal-demo.db")]
        db: PathBuf,
    },
}
