//! The tracing subscriber: JSON (one object per line, event fields flattened) or pretty text,
//! written through a non-blocking writer that never drops lines. Keep the returned guard alive
//! until exit: dropping it flushes what is buffered.

use std::io::IsTerminal;

use tracing_appender::non_blocking::{NonBlockingBuilder, WorkerGuard};
use tracing_subscriber::EnvFilter;

use crate::config::{LogDestination, LogFormat, LogSettings};

/// Log lines queued for the writer thread at most.
const BUFFERED_LINES: usize = 4096;

pub fn init(settings: &LogSettings) -> WorkerGuard {
    // A full buffer makes the logging thread wait (never drop). The default bound, 128,000
    // lines, let a lagging writer hold tens of MiB of queued lines on a big run: memory that
    // grew with the card count. A few thousand lines still absorb a chunk's burst.
    let builder = || NonBlockingBuilder::default().lossy(false).buffered_lines_limit(BUFFERED_LINES);
    let (writer, is_terminal) = match settings.destination {
        LogDestination::Stderr => (builder().finish(std::io::stderr()), std::io::stderr().is_terminal()),
        LogDestination::Stdout => (builder().finish(std::io::stdout()), std::io::stdout().is_terminal()),
    };
    let (writer, guard) = writer;
    let filter = EnvFilter::try_new(&settings.level).unwrap_or_else(|_| EnvFilter::new("info"));
    let json = match settings.format {
        LogFormat::Json => true,
        LogFormat::Pretty => false,
        LogFormat::Auto => !is_terminal,
    };
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(writer);
    let result = if json {
        builder.json().flatten_event(true).with_current_span(false).with_span_list(false).with_target(true).try_init()
    } else {
        builder.with_target(true).try_init()
    };
    // A subscriber already set (tests calling in twice) is not an error worth failing a run for.
    let _ = result;
    guard
}
