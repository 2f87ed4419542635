//! The tracing subscriber: JSON (one object per line, event fields flattened) or pretty text,
//! written through a non-blocking writer that never drops lines. Keep the returned guard alive
//! until exit: dropping it flushes what is buffered.
//!
//! Two layers share the writer: the audit trail (`renewal::card`, `renewal::run`) at info,
//! whatever `log.level` says, and everything else filtered by `log.level`.

use std::io::IsTerminal;

use tracing::Metadata;
use tracing_appender::non_blocking::{NonBlocking, NonBlockingBuilder, WorkerGuard};
use tracing_subscriber::filter::{EnvFilter, FilterExt, LevelFilter, Targets, filter_fn};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{Layer, fmt};

use crate::config::{LogDestination, LogFormat, LogSettings};

/// Log lines queued for the writer thread at most.
const BUFFERED_LINES: usize = 4096;

/// Bytes of queued lines the writer thread gathers into one write.
const WRITE_BUFFER_BYTES: usize = 64 * 1024;

/// The per-card results and run summaries: the audit trail `log.level` cannot silence.
pub const AUDIT_TARGETS: [&str; 2] = ["renewal::card", "renewal::run"];

fn is_audit(meta: &Metadata<'_>) -> bool {
    AUDIT_TARGETS.iter().any(|t| meta.target() == *t)
}

/// The progress bar on the terminal, if one shows: log lines are written around it.
static BAR: std::sync::Mutex<Option<indicatif::ProgressBar>> = std::sync::Mutex::new(None);

/// Shows (or, with `None`, forgets) the bar log lines must not tear.
pub fn show_bar(bar: Option<indicatif::ProgressBar>) {
    *BAR.lock().unwrap_or_else(|p| p.into_inner()) = bar;
}

/// A log stream that hides the bar while it writes a line, then redraws it.
struct AroundBar<W: std::io::Write>(fn() -> W);

impl<W: std::io::Write> std::io::Write for AroundBar<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let bar = BAR.lock().unwrap_or_else(|p| p.into_inner()).clone();
        match bar {
            Some(bar) => bar.suspend(|| (self.0)().write_all(buf)).map(|()| buf.len()),
            None => (self.0)().write(buf),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        (self.0)().flush()
    }
}

/// The writer thread flushes whenever it has drained its queue, so the buffer only gathers the
/// lines already waiting into one write: a busy run made a write call per card (100,000 on a
/// 1M-card night), and a quiet one still shows each line at once.
fn buffered<W: std::io::Write>(stream: fn() -> W) -> std::io::BufWriter<AroundBar<W>> {
    std::io::BufWriter::with_capacity(WRITE_BUFFER_BYTES, AroundBar(stream))
}

/// Whether colour codes may be written: only to a terminal, and never with `NO_COLOR` set.
pub fn colour_allowed(is_terminal: bool) -> bool {
    is_terminal && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

/// Whether `settings` write JSON lines to the terminal the operator watches (stderr or stdout).
pub fn json_on(settings: &LogSettings) -> bool {
    let is_terminal = match settings.destination {
        LogDestination::Stderr => std::io::stderr().is_terminal(),
        LogDestination::Stdout => std::io::stdout().is_terminal(),
    };
    match settings.format {
        LogFormat::Json => true,
        LogFormat::Pretty => false,
        LogFormat::Auto => !is_terminal,
    }
}

pub fn init(settings: &LogSettings) -> WorkerGuard {
    // A full buffer makes the logging thread wait (never drop). The default bound, 128,000
    // lines, let a lagging writer hold tens of MiB of queued lines on a big run: memory that
    // grew with the card count. A few thousand lines still absorb a chunk's burst.
    let builder = || NonBlockingBuilder::default().lossy(false).buffered_lines_limit(BUFFERED_LINES);
    let (writer, is_terminal) = match settings.destination {
        LogDestination::Stderr => (builder().finish(buffered(std::io::stderr)), std::io::stderr().is_terminal()),
        LogDestination::Stdout => (builder().finish(buffered(std::io::stdout)), std::io::stdout().is_terminal()),
    };
    let (writer, guard) = writer;
    // `log.level` was checked at load (config::log_level); "info" only backs a filter the
    // library rejects after all.
    let audit = AUDIT_TARGETS.iter().fold(Targets::new(), |t, target| t.with_target(*target, LevelFilter::INFO));
    let ansi = colour_allowed(is_terminal);
    // The same formatting twice, once per filter: a closure would fix its layer to the first
    // subscriber type it meets.
    let result = if json_on(settings) {
        tracing_subscriber::registry()
            .with(json_layer(writer.clone()).with_filter(audit))
            .with(json_layer(writer).with_filter(general(&settings.level)))
            .try_init()
    } else {
        tracing_subscriber::registry()
            .with(text_layer(writer.clone(), ansi).with_filter(audit))
            .with(text_layer(writer, ansi).with_filter(general(&settings.level)))
            .try_init()
    };
    // A subscriber already set (tests calling in twice) is not an error worth failing a run for.
    let _ = result;
    guard
}

fn json_layer<S>(writer: NonBlocking) -> impl Layer<S>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    fmt::layer()
        .json()
        .flatten_event(true)
        .with_current_span(false)
        .with_span_list(false)
        .with_target(true)
        .with_writer(writer)
}

fn text_layer<S>(writer: NonBlocking, ansi: bool) -> impl Layer<S>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    fmt::layer().with_target(true).with_ansi(ansi).with_writer(writer)
}

/// `log.level` for everything but the audit trail (which has its own layer).
fn general<S>(level: &str) -> impl tracing_subscriber::layer::Filter<S> + use<S>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    EnvFilter::try_new(level).unwrap_or_else(|_| EnvFilter::new("info")).and(filter_fn(|meta| !is_audit(meta)))
}
