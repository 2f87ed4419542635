//! The WAL's checkpoints on a connection of their own, beside the writer.
//!
//! SQLite's one writer is a run's critical path: its thread is busy from the first chunk to the
//! last. Left to it, the checkpoint (copying the pages the WAL holds back into the database file,
//! two fsyncs) runs on that thread, at an autocheckpoint or when the last connection closes: on
//! a 1M-card night, 0.6 s after the last chunk, with the WAL at 290 MB. A PASSIVE checkpoint on
//! another connection never takes the write lock and never waits for the writer, so it copies
//! on the other core while chunks commit, and the close finds little left to copy. (The copy
//! is larger in all: a page rewritten by several chunks is copied once per checkpoint that finds
//! it changed, not once.)

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sqlx::ConnectOptions;
use sqlx::sqlite::{SqliteConnectOptions, SqliteConnection};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Cards committed since the last request before a checkpoint is asked for: about a batch
/// chunk's worth. A single-card commit (the API) writes a handful of pages, and a checkpoint
/// costs two fsyncs, so a stream of those is checkpointed per thousand cards, not per commit.
const CARDS_PER_CHECKPOINT: usize = 1000;

/// Asks for checkpoints after commits; cheap, never blocks, and coalesces while one runs.
#[derive(Clone, Debug)]
pub struct Checkpointer {
    nudge: mpsc::Sender<()>,
    cards: Arc<AtomicUsize>,
    stop: CancellationToken,
    task: Arc<Mutex<Option<JoinHandle<()>>>>,
}

impl Checkpointer {
    /// Starts the checkpoint task for the file `options` open; `pause` between checkpoints
    /// bounds how often the database file is written and synced. Its connection opens at the
    /// first nudge, so a process that never commits a chunk never opens it.
    pub fn start(options: &SqliteConnectOptions, pause: Duration) -> Self {
        let (nudge, nudged) = mpsc::channel::<()>(1);
        let stop = CancellationToken::new();
        // Its page cache holds nothing of interest: a checkpoint copies frames, not pages it reads.
        let options = options.clone().pragma("cache_size", "-64").disable_statement_logging();
        let task = tokio::spawn(checkpoint_loop(options, nudged, stop.clone(), pause));
        Self { nudge, cards: Arc::new(AtomicUsize::new(0)), stop, task: Arc::new(Mutex::new(Some(task))) }
    }

    /// A transaction recording `cards` results committed: the WAL grew.
    pub fn committed(&self, cards: usize) {
        let total = self.cards.fetch_add(cards, Ordering::Relaxed) + cards;
        if total >= CARDS_PER_CHECKPOINT {
            self.cards.store(0, Ordering::Relaxed);
            // Full means a checkpoint is already asked for.
            let _ = self.nudge.try_send(());
        }
    }

    /// Stops the task (a checkpoint under way finishes first) and closes its connection, so the
    /// store's own last connection does the final checkpoint.
    pub async fn stop(&self) {
        self.stop.cancel();
        let task = self.task.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(task) = task {
            let _ = task.await;
        }
    }
}

async fn checkpoint_loop(
    options: SqliteConnectOptions,
    mut nudged: mpsc::Receiver<()>,
    stop: CancellationToken,
    pause: Duration,
) {
    let mut conn: Option<SqliteConnection> = None;
    loop {
        tokio::select! {
            biased;
            () = stop.cancelled() => break,
            // Every store clone dropped.
            nudge = nudged.recv() => if nudge.is_none() { break },
        }
        if conn.is_none() {
            match options.connect().await {
                Ok(c) => conn = Some(c),
                Err(e) => {
                    tracing::warn!(event = "sqlite_checkpoint_failed", error = %e,
                        "cannot open the checkpoint connection; the writer checkpoints on its own");
                    return;
                }
            }
        }
        if let Some(c) = conn.as_mut()
            && let Err(e) = sqlx::query("PRAGMA wal_checkpoint(PASSIVE)").execute(&mut *c).await
        {
            tracing::warn!(event = "sqlite_checkpoint_failed", error = %e,
                "a background checkpoint failed; the writer checkpoints on its own");
        }
        tokio::select! {
            () = stop.cancelled() => break,
            () = tokio::time::sleep(pause) => {}
        }
    }
    if let Some(c) = conn {
        let _ = sqlx::Connection::close(c).await;
    }
}
