//! The progress bar of `run` and `demo` on a terminal: cards done of the estimate counted at
//! start, rate, ETA, and live counts. Shown only on a terminal, never with `--quiet` or when JSON
//! log lines go to the same terminal; there the run logs `run_progress` events instead.

use std::io::IsTerminal;
use std::sync::Arc;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use tokio::sync::watch;

use super::Ui;
use crate::batch::progress::{Progress, ProgressOptions};
use crate::config::{LogDestination, Settings};
use crate::telemetry;

/// Whether this process shows a bar (on stderr).
pub fn bar_wanted(ui: Ui, settings: &Settings) -> bool {
    let json_here = telemetry::json_on(&settings.log) && settings.log.destination == LogDestination::Stderr;
    std::io::stderr().is_terminal() && !ui.quiet && !json_here
}

/// A running bar: drop it (or call `finish`) when the run ends.
pub struct Bar {
    task: tokio::task::JoinHandle<()>,
    bar: ProgressBar,
}

/// The options a run gets from this UI, and the bar when one shows.
pub fn start(ui: Ui, settings: &Settings) -> (ProgressOptions, Option<Bar>) {
    if !bar_wanted(ui, settings) {
        let every = Duration::from_secs(settings.log.progress_seconds);
        return (ProgressOptions { watch: None, events_every: Some(every) }, None);
    }
    let (tx, mut rx) = watch::channel(Progress::default());
    let bar = ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::stderr_with_hz(10));
    let style = ProgressStyle::with_template("{bar:30} {pos}/{len} cards  {msg}  {rate}  ETA {eta}  {elapsed_precise}")
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .with_key("rate", |state: &indicatif::ProgressState, w: &mut dyn std::fmt::Write| {
            let _ = write!(w, "{:.0} cards/s", state.per_sec());
        })
        .progress_chars("=> ");
    bar.set_style(style);
    telemetry::show_bar(Some(bar.clone()));
    let shown = bar.clone();
    let task = tokio::spawn(async move {
        while rx.changed().await.is_ok() {
            let p = *rx.borrow_and_update();
            shown.set_length(p.estimate.max(p.done));
            shown.set_position(p.done);
            shown.set_message(format!(
                "reissued {}  ineligible {}  failed {}{}",
                p.reissued,
                p.ineligible,
                p.failed,
                if p.pending > 0 { format!("  pending {}", p.pending) } else { String::new() }
            ));
        }
    });
    (ProgressOptions { watch: Some(Arc::new(tx)), events_every: None }, Some(Bar { task, bar }))
}

impl Bar {
    /// Takes the bar off the terminal before the summary prints.
    pub fn finish(self) {
        self.task.abort();
        self.bar.finish_and_clear();
        telemetry::show_bar(None);
    }
}
