//! A page a store reads ahead (`PageQuery::read_ahead`: SQLite reads the next page beside the
//! chunk that writes) must show the database as the chunk that asks for it finds it: after the
//! previous chunk's debits, after another connection's write, after a write of another chunk of
//! the same process. The same body on both engines (PostgreSQL reads every page in its chunk).
//!
//! The batch evaluates a page read ahead before its chunk has the lock (`Store::early_page`), and
//! keeps that work only when the chunk's read says it is that very read (`CandidatePage::early`),
//! whose balances it then takes: never after a write the snapshot did not see.

use std::sync::Arc;
use std::time::Duration;

use renewal_worker::app::{Backend, open};
use renewal_worker::config::Settings;
use renewal_worker::demo;
use renewal_worker::store::sqlite::Create;
use renewal_worker::store::{Candidate, CandidatePage, ChunkTx, Claimed, Debit, DemoLoad, PaymentState, Store};

use crate::common::*;
use crate::store::{application, new_run, page};

both_backends!(a_page_read_ahead_shows_the_database_as_the_chunk_finds_it);

/// Cards per page: the window of the demo data below holds several pages.
const PAGE: u32 = 6;
/// Long enough for a read ahead to take its snapshot before the chunk commits.
const SETTLE: Duration = Duration::from_millis(400);

async fn a_page_read_ahead_shows_the_database_as_the_chunk_finds_it(kind: Kind) {
    let db = TestDb::of(kind);
    let mut settings = Settings::load(Some(&config_dir())).unwrap();
    settings.database.url = db.url();
    match open(&settings, Create::IfMissing).await.expect("open a fresh database") {
        Backend::Sqlite(store) => {
            read_ahead(&store, &db).await;
            let (used, wasted) = store.read_ahead_counts();
            // The first read ahead served its chunk; the two after a foreign write did not.
            assert!(used >= 1 && wasted >= 2, "read ahead: used {used}, wasted {wasted}");
        }
        Backend::Postgres(store) => read_ahead(&store, &db).await,
    }
}

fn read_ahead_page(after: i64) -> renewal_worker::store::PageQuery {
    renewal_worker::store::PageQuery { read_ahead: true, ..page(after, PAGE) }
}

/// A fee-bearing candidate with a funded wallet.
fn funded(page: &CandidatePage) -> Option<&Candidate> {
    page.candidates.iter().find(|c| c.facts.product.reissue_fee > 0 && c.facts.member.is_some() && c.balance > 0)
}

fn member(c: &Candidate) -> i64 {
    c.facts.member.as_ref().expect("a member").member_id
}

fn balance_of(page: &CandidatePage, card_id: i64) -> i64 {
    page.candidates.iter().find(|c| c.facts.card_id == card_id).expect("the card is on the page").balance
}

/// The pages of the window as they are now, read without writing.
async fn pages<S: Store>(store: &S, n: usize) -> Vec<CandidatePage> {
    let mut tx = store.begin_chunk(true).await.unwrap();
    let mut pages: Vec<CandidatePage> = Vec::new();
    for _ in 0..n {
        let after = pages.last().map_or(0, |p| p.next_after);
        pages.push(tx.read_candidates(&page(after, PAGE)).await.unwrap());
    }
    pages
}

/// What the store shows of `query`'s page before its chunk begins: on SQLite the read ahead (a
/// snapshot taken while the chunk before held the lock), on PostgreSQL nothing.
async fn early<S: Store>(
    store: &S,
    query: &renewal_worker::store::PageQuery,
    sqlite: bool,
) -> Option<Arc<CandidatePage>> {
    let early = store.early_page(query).await;
    match (sqlite, &early) {
        (true, Some(page)) => assert!(page.early.is_some(), "an early page names its read"),
        (true, None) => panic!("SQLite read this page ahead"),
        (false, Some(_)) => panic!("PostgreSQL reads no page ahead"),
        (false, None) => {}
    }
    early
}

async fn read_ahead<S: Store + DemoLoad>(store: &S, db: &TestDb) {
    let sqlite = db.kind == Kind::Sqlite;
    store.migrate().await.unwrap();
    store.load_demo(&demo::generate(600, 11, crate::store::as_of(), 30, 1)).await.unwrap();
    let run_id = store.start_run(&new_run()).await.unwrap().id;
    let before = pages(store, 5).await;
    assert!(!before[4].candidates.is_empty(), "the demo window holds five pages");
    let (Some(x), Some(z)) = (funded(&before[1]), funded(&before[2])) else {
        panic!("pages 2 and 3 of the demo data should each hold a funded fee card");
    };
    let y = before[3].candidates.iter().find(|c| c.facts.member.is_some()).expect("page 4 holds a card with a member");

    // Chunk 1 debits the member of a card on page 2 (through a claim of one of its own cards).
    let mut tx = store.begin_chunk(false).await.unwrap();
    let first = tx.read_candidates(&read_ahead_page(0)).await.unwrap();
    assert_eq!(first.next_after, before[0].next_after);
    let mine = &first.candidates[0];
    let mut app = application(mine, run_id, PaymentState::Applied, 7);
    app.member_id = member(x);
    let won = tx.claim(&[app.clone()]).await.unwrap();
    let claimed = Claimed { card_id: mine.facts.card_id, application_id: won[0].application_id };
    let debit = Debit {
        member_id: member(x),
        application_id: claimed.application_id,
        reference: app.card_apply_no.to_string(),
        amount: 7,
    };
    tx.debit(&[debit]).await.unwrap();
    tx.mark(&[claimed]).await.unwrap();
    tokio::time::sleep(SETTLE).await;
    tx.commit().await.unwrap();

    // Chunk 2 sees the balance after chunk 1's debit; its page as shown early did not, and is
    // not the page chunk 2 gets.
    let early_second = early(store, &read_ahead_page(first.next_after), sqlite).await;
    if let Some(page) = &early_second {
        assert_eq!(balance_of(page, x.facts.card_id), x.balance, "the early page is the snapshot");
    }
    let mut tx = store.begin_chunk(false).await.unwrap();
    let second = tx.read_candidates(&read_ahead_page(first.next_after)).await.unwrap();
    assert_eq!(balance_of(&second, x.facts.card_id), x.balance - 7, "the debit of the chunk before");
    // The same read, its cards the early page's, its balances the debited ones.
    assert_eq!(second.early, early_second.as_ref().and_then(|p| p.early));
    if let Some(page) = &early_second {
        let ids = |p: &CandidatePage| p.candidates.iter().map(|c| c.facts.card_id).collect::<Vec<_>>();
        assert_eq!(ids(&second), ids(page));
    }
    tokio::time::sleep(SETTLE).await;
    tx.commit().await.unwrap();

    // Another connection funds the member of a card on page 3 between the chunks, after the
    // early look.
    let early_third = early(store, &read_ahead_page(second.next_after), sqlite).await;
    sqlx::query("UPDATE wallet SET balance = 777777 WHERE member_id = $1")
        .bind(member(z))
        .execute(&db.pool().await)
        .await
        .unwrap();
    let mut tx = store.begin_chunk(false).await.unwrap();
    let third = tx.read_candidates(&read_ahead_page(second.next_after)).await.unwrap();
    assert_eq!(balance_of(&third, z.facts.card_id), 777777, "another connection's write");
    if let Some(page) = &early_third {
        assert_eq!(balance_of(page, z.facts.card_id), z.balance, "the early page predates the write");
    }
    assert_eq!(third.early, None, "a page read again in the lock is not the early one");
    tokio::time::sleep(SETTLE).await;
    tx.commit().await.unwrap();

    // Another chunk of this process (the sync API's, say) reissues a card of page 4 meanwhile.
    let mut api = store.begin_chunk(false).await.unwrap();
    let won = api.claim(&[application(y, run_id, PaymentState::Applied, 0)]).await.unwrap();
    api.mark(&[Claimed { card_id: y.facts.card_id, application_id: won[0].application_id }]).await.unwrap();
    api.commit().await.unwrap();
    let mut tx = store.begin_chunk(false).await.unwrap();
    let fourth = tx.read_candidates(&read_ahead_page(third.next_after)).await.unwrap();
    assert!(
        fourth.candidates.iter().all(|c| c.facts.card_id != y.facts.card_id),
        "a card reissued by another chunk of the process is no candidate"
    );
    assert_eq!(fourth.early, None);
    // Chunk 4 writes nothing and rolls back: the page it read ahead is chunk 5's, unchanged.
    tokio::time::sleep(SETTLE).await;
    drop(tx);
    let early_fifth = early(store, &read_ahead_page(fourth.next_after), sqlite).await;
    let mut tx = store.begin_chunk(false).await.unwrap();
    let fifth = tx.read_candidates(&read_ahead_page(fourth.next_after)).await.unwrap();
    assert!(!fifth.candidates.is_empty());
    match early_fifth {
        Some(page) => {
            assert_eq!(fifth.early, page.early, "nothing changed since the early look: the same read");
            assert_eq!(fifth.candidates, page.candidates);
        }
        None => assert_eq!(fifth.early, None),
    }
    drop(tx);
}
