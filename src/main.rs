//! CLI entry point: parse arguments, load configuration, start telemetry, call the library.

use std::process::ExitCode;

use clap::{CommandFactory, Parser};
use renewal_worker::app::{self, Exit};
use renewal_worker::cli::{Cli, Command, ConfigAction};
use renewal_worker::config::Settings;
use renewal_worker::telemetry;

fn main() -> ExitCode {
    cap_malloc_arenas();
    let cli = Cli::parse();
    let ui = app::Ui { format: cli.format(), quiet: cli.quiet };
    if matches!(
        cli.command,
        Command::Report { .. }
            | Command::Runs { .. }
            | Command::Explain { .. }
            | Command::Config { .. }
            | Command::Completions { .. }
            | Command::Man
    ) {
        die_quietly_on_a_closed_pipe();
    }
    // Generated from the definitions alone: no configuration needed.
    match &cli.command {
        Command::Completions { shell } => {
            clap_complete::generate(*shell, &mut Cli::command(), "renewal-worker", &mut std::io::stdout());
            return ExitCode::SUCCESS;
        }
        Command::Man => {
            return match clap_mangen::Man::new(Cli::command()).render(&mut std::io::stdout()) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("error: cannot write the man page: {e}");
                    ExitCode::from(Exit::Failed as u8)
                }
            };
        }
        _ => {}
    }
    let settings = match Settings::load(cli.config_dir.as_deref()) {
        Ok(settings) => settings,
        Err(e) if matches!(cli.command, Command::Config { action: Some(ConfigAction::Check) }) => {
            return ExitCode::from(app::print::config_check(ui, e.problems()) as u8);
        }
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(Exit::Usage as u8);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(Exit::Failed as u8);
        }
    };
    let log_guard = telemetry::init(&settings.log);
    let code = runtime.block_on(async {
        let shutdown = app::Shutdown::new();
        let on_signal = shutdown.clone();
        let grace = std::time::Duration::from_secs(settings.shutdown.grace_seconds);
        tokio::spawn(async move {
            shutdown_signal().await;
            tracing::warn!(
                event = "shutdown_requested",
                grace_seconds = grace.as_secs(),
                "finishing the chunk in flight, then stopping; a second signal exits at once"
            );
            on_signal.cancel();
            // The command stops by itself within the grace; this is the backstop. Exiting here
            // never half-writes a chunk: its open transaction rolls back with the connection.
            tokio::select! {
                _ = shutdown_signal() => eprintln!("error: second signal: exiting at once"),
                _ = tokio::time::sleep(grace + std::time::Duration::from_secs(1)) => {
                    eprintln!("error: still busy {} s after the shutdown signal: exiting", grace.as_secs());
                }
            }
            std::process::exit(i32::from(Exit::Interrupted as u8));
        });
        match app::dispatch(cli.command, &settings, ui, shutdown).await {
            Ok(exit) => exit,
            Err(e) => {
                let exit = e.exit();
                if exit != Exit::Usage {
                    tracing::error!(event = "command_failed", error = %e);
                }
                eprintln!("error: {e}");
                exit
            }
        }
    });
    drop(log_guard); // flush buffered log lines before the process ends
    ExitCode::from(code as u8)
}

/// glibc gives each allocating thread its own malloc arena; the SQLite connection thread, the
/// runtime's workers and the log writer would keep about 20 MiB of mostly idle arena memory. One
/// arena keeps peak RSS flat as the card count grows and the same from run to run: with two,
/// whether a second arena came into use depended on lock timing, and the peak moved by 4 MiB
/// between identical runs. The run is bound by the database, not by allocator contention
/// (measured: the same wall time with one arena or two).
fn cap_malloc_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only tunes the allocator; it runs before any other thread exists.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 1);
    }
}

/// `report ... | head`: a reader that stops early ends the command as it ends `cat`, silently.
/// Only for the commands that print and exit; the long-running ones keep Rust's ignored SIGPIPE,
/// so a client closing its socket is an error on that socket, not the end of the process.
fn die_quietly_on_a_closed_pipe() {
    #[cfg(unix)]
    // SAFETY: restoring the default disposition of one signal before any other thread exists.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(term) => term,
            Err(_) => {
                let _ = ctrl_c.await;
                return;
            }
        };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}
