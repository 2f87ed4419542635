//! The next page, read while the current chunk writes. SQLite has one writer, but in WAL mode a
//! reader runs beside it on another connection (and another core): the page read was a third of
//! the writer's time, spent with the write lock held.
//!
//! A page read ahead is a snapshot taken while the chunk before it held the write lock, so it
//! shows the database as that chunk found it. It is used only when nothing but that chunk wrote
//! between then and the next chunk's `BEGIN IMMEDIATE`, which the writer connection itself
//! tells: `total_changes()` counts the rows it changed, so an equal count means no other
//! statement of this process wrote through it, and `data_version` changes when any other
//! connection (another process, a prune) committed. What the chunk itself wrote cannot reach
//! the next page's cards (the keyset puts them after every card the chunk holds) except its
//! members' wallets: its debits are taken off the page's balances. In every other case the page
//! is read again inside the lock, as it is without read-ahead.
//!
//! The chunk that will take the page may look at it early (`early`), before it has the lock:
//! the batch evaluates it while the chunk before still writes, and keeps that evaluation when
//! `take` hands back the same read (`CandidatePage::early`), with its balances as they are then.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use sqlx::{SqliteConnection, SqlitePool};
use tokio::sync::watch;

use super::chunk::read_page;
use crate::store::{CandidatePage, Context, PageQuery, StoreError};

/// Where the writer connection stands: the rows it changed since it opened, and SQLite's
/// counter of the other connections' commits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct WriterMark {
    changes: i64,
    data_version: i64,
}

pub(super) async fn writer_mark(conn: &mut SqliteConnection) -> Result<WriterMark, StoreError> {
    let (changes, data_version): (i64, i64) =
        sqlx::query_as("SELECT total_changes(), data_version FROM pragma_data_version()")
            .fetch_one(conn)
            .await
            .context("reading the writer's change counters")?;
    Ok(WriterMark { changes, data_version })
}

pub(super) struct ReadAhead {
    /// A connection of its own (a small page cache: every commit of the writer empties it).
    reader: SqlitePool,
    pending: Mutex<Option<Pending>>,
    /// Chunks get a serial, so a commit finds the read its chunk started.
    serials: AtomicU64,
    /// Pages read ahead and used, and read ahead in vain (for the debug event at the end).
    used: AtomicU64,
    wasted: AtomicU64,
    /// How long chunks waited for a page read ahead, µs.
    waited_us: AtomicU64,
}

struct Pending {
    query: PageQuery,
    /// The chunk that started the read, while it held the write lock.
    started_by: u64,
    /// Set once the read's snapshot is taken; a snapshot taken after that chunk committed
    /// would show its writes, and the debits would be taken off twice.
    snapshot_taken: Arc<AtomicBool>,
    /// The writer's mark as that chunk ended (committed, or rolled back after reading its
    /// page); `None` until then, and for ever if the snapshot came too late.
    valid_at: Option<WriterMark>,
    /// What that chunk debited, per member.
    debited: BTreeMap<i64, i64>,
    /// The read's outcome once it ends.
    read: watch::Receiver<Option<ReadOutcome>>,
}

/// The page is shared with an early look, the error is its text (`StoreError` is not `Clone`).
type ReadOutcome = Result<Arc<CandidatePage>, String>;

/// The outcome of a read started by `start`; an error if its task died without one.
async fn outcome(mut read: watch::Receiver<Option<ReadOutcome>>) -> ReadOutcome {
    match read.wait_for(Option::is_some).await {
        Ok(outcome) => outcome.clone().unwrap_or_else(|| Err("no outcome".into())),
        Err(_) => Err("the read-ahead task ended without an outcome".into()),
    }
}

impl std::fmt::Debug for ReadAhead {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (used, wasted) = self.counts();
        f.debug_struct("ReadAhead").field("used", &used).field("wasted", &wasted).finish_non_exhaustive()
    }
}

impl ReadAhead {
    pub(super) fn new(reader: SqlitePool) -> Self {
        Self {
            reader,
            pending: Mutex::new(None),
            serials: AtomicU64::new(0),
            used: AtomicU64::new(0),
            wasted: AtomicU64::new(0),
            waited_us: AtomicU64::new(0),
        }
    }

    pub(super) fn serial(&self) -> u64 {
        self.serials.fetch_add(1, Ordering::Relaxed) + 1
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Pending>> {
        self.pending.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The page read ahead for `query`, if it still shows the database as it is now (`now`: the
    /// writer's mark inside the asking chunk's lock, before it wrote anything).
    pub(super) async fn take(&self, query: &PageQuery, now: WriterMark) -> Option<CandidatePage> {
        let pending = self.lock().take()?;
        if pending.valid_at != Some(now) || pending.query != *query {
            // Left to finish on its own: it holds only the reader's connection.
            self.wasted.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        let started = std::time::Instant::now();
        let read = outcome(pending.read).await;
        self.waited_us.fetch_add(started.elapsed().as_micros() as u64, Ordering::Relaxed);
        // The page moves out when no one else holds it any more; an early look or the watch
        // channel's sender may still hold it for a moment, and then it is cloned.
        match read.map(|page| Arc::try_unwrap(page).unwrap_or_else(|shared| (*shared).clone())) {
            Ok(mut page) => {
                take_off_debits(&mut page, &pending.debited);
                self.used.fetch_add(1, Ordering::Relaxed);
                Some(page)
            }
            Err(error) => {
                tracing::debug!(event = "read_ahead_failed", error, "reading the page again inside the lock");
                self.wasted.fetch_add(1, Ordering::Relaxed);
                None
            }
        }
    }

    /// The page being read ahead for `query`, as its snapshot shows it (the debits of the chunk
    /// that started it not taken off), once the read ends; `None` if it is for another query or
    /// failed. Marked with the read, so `take` can tell it handed back the same one.
    pub(super) async fn early(&self, query: &PageQuery) -> Option<Arc<CandidatePage>> {
        let read = self.lock().as_ref().filter(|p| p.query == *query)?.read.clone();
        outcome(read).await.ok()
    }

    /// Starts reading `query` on the reader's connection; `started_by` holds the write lock.
    pub(super) fn start(&self, started_by: u64, query: PageQuery) {
        let snapshot_taken = Arc::new(AtomicBool::new(false));
        let (done, read) = watch::channel(None);
        let reading = read_ahead(self.reader.clone(), query.clone(), Arc::clone(&snapshot_taken));
        tokio::spawn(async move {
            let outcome = reading.await.map(|page| Arc::new(CandidatePage { early: Some(started_by), ..page }));
            done.send_replace(Some(outcome.map_err(|e| e.to_string())));
        });
        let previous = self.lock().replace(Pending {
            query,
            started_by,
            snapshot_taken,
            valid_at: None,
            debited: BTreeMap::new(),
            read,
        });
        if previous.is_some() {
            self.wasted.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Whether the read `serial` started has its snapshot: asked inside the lock, before the
    /// commit, so a snapshot taken by then cannot show the chunk's writes.
    pub(super) fn snapshot_taken(&self, serial: u64) -> bool {
        self.lock().as_ref().is_some_and(|p| p.started_by == serial && p.snapshot_taken.load(Ordering::Acquire))
    }

    /// Chunk `serial` ended with the writer at `mark`, its writes `debited` only: the read it
    /// started may serve the next chunk.
    fn ended(&self, serial: u64, mark: WriterMark, debited: BTreeMap<i64, i64>) {
        if let Some(pending) = self.lock().as_mut().filter(|p| p.started_by == serial) {
            pending.valid_at = Some(mark);
            pending.debited = debited;
        }
    }

    /// Pages read ahead and used, and in vain.
    pub(super) fn counts(&self) -> (u64, u64) {
        (self.used.load(Ordering::Relaxed), self.wasted.load(Ordering::Relaxed))
    }

    /// Waits for a read still running, and closes the reader's connection.
    pub(super) async fn close(&self) {
        let pending = self.lock().take();
        if let Some(pending) = pending {
            let _ = outcome(pending.read).await;
        }
        self.reader.close().await;
    }

    /// How long chunks waited for their page read ahead, ms.
    pub(super) fn waited_ms(&self) -> u64 {
        self.waited_us.load(Ordering::Relaxed) / 1000
    }
}

/// One writing chunk's part: it takes the page read for it, starts the next one, and says how it
/// ended.
pub(super) struct Turn {
    read_ahead: Arc<ReadAhead>,
    serial: u64,
    /// The writer's mark when this chunk read its page, before it wrote anything.
    read_at: Option<WriterMark>,
    /// Fees debited per member.
    debited: BTreeMap<i64, i64>,
    committed: bool,
}

impl Turn {
    pub(super) fn new(read_ahead: Arc<ReadAhead>) -> Self {
        let serial = read_ahead.serial();
        Self { read_ahead, serial, read_at: None, debited: BTreeMap::new(), committed: false }
    }

    /// The chunk's page: the one read ahead when it still holds, else read now through `conn`
    /// (the chunk's transaction); then the next page is started.
    pub(super) async fn read(
        &mut self,
        conn: &mut SqliteConnection,
        page: &PageQuery,
    ) -> Result<CandidatePage, StoreError> {
        let mark = writer_mark(conn).await?;
        self.read_at = Some(mark);
        let read = match self.read_ahead.take(page, mark).await {
            Some(read) => read,
            None => read_page(conn, page).await?,
        };
        if read.scanned > 0 {
            self.read_ahead.start(self.serial, PageQuery { after: read.next_after, ..page.clone() });
        }
        Ok(read)
    }

    pub(super) fn debited(&mut self, totals: &BTreeMap<i64, i64>) {
        for (member, total) in totals {
            *self.debited.entry(*member).or_default() += total;
        }
    }

    /// Inside the lock, just before the commit: the writer's mark, when the read this chunk
    /// started has its snapshot (one taken later could show this chunk's writes).
    pub(super) async fn before_commit(&self, conn: &mut SqliteConnection) -> Result<Option<WriterMark>, StoreError> {
        if !self.read_ahead.snapshot_taken(self.serial) {
            return Ok(None);
        }
        // The commit itself leaves the writer's counters as they are.
        Ok(Some(writer_mark(conn).await?))
    }

    pub(super) fn committed(mut self, mark: Option<WriterMark>) {
        self.committed = true;
        if let Some(mark) = mark {
            self.read_ahead.ended(self.serial, mark, std::mem::take(&mut self.debited));
        }
    }
}

impl Drop for Turn {
    /// Rolled back (a chunk that kept none of its page, an error): the transaction still holds
    /// the lock here, its rollback comes with the connection's next use. A chunk that wrote
    /// nothing leaves the database as the read found it; one that wrote moved the writer's
    /// change count, and the read will not match.
    fn drop(&mut self) {
        if !self.committed
            && let Some(mark) = self.read_at
            && self.read_ahead.snapshot_taken(self.serial)
        {
            self.read_ahead.ended(self.serial, mark, BTreeMap::new());
        }
    }
}

async fn read_ahead(
    reader: SqlitePool,
    query: PageQuery,
    snapshot_taken: Arc<AtomicBool>,
) -> Result<CandidatePage, StoreError> {
    let mut tx = reader.begin().await.context("beginning a read-ahead")?;
    // A deferred transaction takes its snapshot at its first read.
    sqlx::query("SELECT 1 FROM card LIMIT 1").execute(&mut *tx).await.context("beginning a read-ahead")?;
    snapshot_taken.store(true, Ordering::Release);
    read_page(&mut tx, &query).await
}

/// The snapshot's balances predate the debits of the chunk that committed after it.
fn take_off_debits(page: &mut CandidatePage, debited: &BTreeMap<i64, i64>) {
    if debited.is_empty() {
        return;
    }
    for candidate in &mut page.candidates {
        let member = candidate.facts.member.as_ref().map(|m| m.member_id);
        // Only a fee-bearing card carries its wallet's balance.
        if candidate.facts.product.reissue_fee > 0
            && let Some(debit) = member.and_then(|m| debited.get(&m))
        {
            candidate.balance -= debit;
        }
    }
}
