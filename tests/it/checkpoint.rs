//! SQLite's background checkpoints: while the writer is still open (paused after its first
//! chunk's commit), the database file itself already holds that chunk, copied from the WAL by the
//! checkpoint connection; with `sqlite_checkpoint_pause_ms = 0` the file is untouched until the
//! writer closes. Both runs then finish with the same results and no WAL left behind.

use std::time::{Duration, Instant};

use renewal_worker::{PAUSE_ENV, PAUSED_MARKER, RELEASE_ENV};

use crate::common::*;

/// Runs the window with a pause after chunk 1 (1,000 cards committed, the writer still open);
/// returns whether the database file changed from what the seed left within `wait`, and lets
/// the run finish.
fn file_changes_while_paused(db: &TestDb, wait: Duration) -> bool {
    assert!(!wal_of(db).exists(), "the seed's close left no WAL");
    let before = std::fs::read(&db.path).expect("read the seeded file");
    let release = db.path.with_extension("release");
    let mut worker = Spawned::start(
        db.command(&["run", "--as-of", AS_OF])
            .env(PAUSE_ENV, "after_commit:1")
            .env(RELEASE_ENV, &release)
            .env("RENEWAL__RUN__CHUNK_SIZE", "1000")
            .env("RENEWAL__RUN__CONCURRENCY", "1"),
    );
    worker.wait_for_line(PAUSED_MARKER, Duration::from_secs(60));
    let deadline = Instant::now() + wait;
    let changed = loop {
        if std::fs::read(&db.path).expect("read the database file") != before {
            break true;
        }
        if Instant::now() >= deadline {
            break false;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    std::fs::write(&release, b"").expect("release the paused run");
    assert_eq!(worker.wait(Duration::from_secs(60)), Some(0), "{}", tail(&worker.stderr_so_far()));
    assert!(!wal_of(db).exists(), "the run's close left its WAL behind");
    changed
}

fn wal_of(db: &TestDb) -> std::path::PathBuf {
    db.path.with_extension("db-wal")
}

#[test]
fn a_connection_of_its_own_checkpoints_the_wal_while_the_writer_works() {
    let on = TestDb::new().with_env("RENEWAL__DATABASE__SQLITE_CHECKPOINT_PAUSE_MS", "10");
    let off = TestDb::new().with_env("RENEWAL__DATABASE__SQLITE_CHECKPOINT_PAUSE_MS", "0");
    on.seed(20_000);
    off.seed(20_000);

    assert!(
        file_changes_while_paused(&on, Duration::from_secs(10)),
        "no checkpoint reached the database file while the writer was open"
    );
    // The control: the writer alone writes only the WAL until it closes (its autocheckpoint is
    // 100,000 pages away), so the change above is the checkpoint connection's.
    assert!(
        !file_changes_while_paused(&off, Duration::from_secs(1)),
        "the database file changed before the writer closed, with background checkpoints off"
    );

    let (state_on, state_off) = block_on(async move { (final_state(&on).await, final_state(&off).await) });
    assert!(!state_on.results.is_empty(), "the run recorded nothing");
    assert_eq!(state_on, state_off, "the checkpoints changed what the run did");
}
