//! The command line (clap derive). Parsing only; `app` does the work.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::output::Format;

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

    /// How results are printed on stdout (JSON shapes: docs/schemas/).
    #[arg(long, global = true, value_enum, default_value_t = Format::Table)]
    pub output: Format,

    /// Shorthand for --output json.
    #[arg(long, global = true)]
    pub json: bool,

    /// Print results and errors only: no progress bar, no hints.
    #[arg(long, short, global = true)]
    pub quiet: bool,

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
        /// Keep one in N of the cards that would expire inside the window there and move the others
        /// later: a larger card base with the same night's work (10M cards with --sparse 10 hold
        /// about the candidates of 1M cards). 1 = the usual 10% of cards in the window.
        #[arg(long, value_name = "N", default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
        sparse: u32,
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

    /// Print the summary of a run (counts per code, fee total, timing), or of every run of a
    /// business date; `--output csv` lists the charges instead, for finance's reconciliation.
    Report {
        /// The run id [default: the latest run]
        #[arg(conflicts_with = "as_of")]
        run_id: Option<i64>,
        /// Sum every run of this business date (YYYY-MM-DD), with the API's results of that date.
        #[arg(long, value_name = "YYYY-MM-DD")]
        as_of: Option<String>,
    },

    /// The run history, newest first, like `kubectl get jobs`.
    Runs {
        /// How many runs at most.
        #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..))]
        last: u32,
        /// Only runs with this status (running, completed, failed, interrupted, failed_dependency).
        #[arg(long, value_name = "STATUS")]
        status: Option<String>,
        /// Only runs of this business date (YYYY-MM-DD).
        #[arg(long, value_name = "YYYY-MM-DD")]
        as_of: Option<String>,
    },

    /// Delete result rows older than run.result_retention_days.
    Prune,

    /// Print the database's plan for the candidate query (it must seek the expiry index).
    Explain {
        /// Business date whose window to explain (YYYY-MM-DD) [default: today in run.time_zone]
        #[arg(long, value_name = "YYYY-MM-DD")]
        as_of: Option<String>,
    },

    /// The configuration: `show` (default) prints every value, secrets redacted, with its source;
    /// `check` validates files and environment and names each bad key.
    Config {
        #[command(subcommand)]
        action: Option<ConfigAction>,
    },

    /// Print a shell completion script (e.g. `renewal-worker completions bash > /etc/bash_completion.d/renewal-worker`).
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },

    /// Print the man page (roff) generated from these definitions.
    Man,

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

#[derive(Debug, Subcommand, Clone, Copy, PartialEq, Eq)]
pub enum ConfigAction {
    /// Every setting's value (secrets redacted) and where it came from: default, file or env.
    Show,
    /// Validate the merged configuration (files + environment); exit 2 naming each bad key.
    Check,
}

impl Cli {
    /// `--json` wins over `--output`.
    pub fn format(&self) -> Format {
        if self.json { Format::Json } else { self.output }
    }
}
