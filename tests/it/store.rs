//! The store conformance suite: every method of `Store`, `RunLog`, `Admin`, `DemoLoad` and
//! `ChunkTx` called directly, the same body on both engines (as riverqueue's driver tests do),
//! so a backend cannot drift from the contract the batch and the reissue operation rely on.

use std::time::Duration;

use renewal_worker::app::{Backend, open};
use renewal_worker::config::Settings;
use renewal_worker::demo;
use renewal_worker::domain::address::DeliveryAddress;
use renewal_worker::domain::expiry::window_months;
use renewal_worker::domain::ids::CardApplyNo;
use renewal_worker::store::sqlite::Create;
use renewal_worker::store::{
    Candidate, ChunkTx, Claimed, Debit, DemoLoad, NewApplication, NewRun, PageQuery, PaymentState, ResultOrigin,
    ResultRow, RunStatus, Scope, Settlement, SlotClaim, SlotRecord, Store, StoreError, Trigger,
};

use crate::common::*;

both_backends!(every_store_method_keeps_its_contract);

pub(crate) fn as_of() -> chrono::NaiveDate {
    chrono::NaiveDate::parse_from_str(AS_OF, "%Y-%m-%d").unwrap()
}

pub(crate) fn page(after: i64, limit: u32) -> PageQuery {
    PageQuery {
        as_of: as_of(),
        window_months: window_months(as_of(), 30).iter().map(|m| m.yyyymm()).collect(),
        after,
        limit,
        only_card: None,
        read_ahead: false,
    }
}

pub(crate) fn application(c: &Candidate, run_id: i64, state: PaymentState, fee: i64) -> NewApplication {
    let member = c.facts.member.as_ref().expect("the candidate has a member");
    NewApplication {
        card_id: c.facts.card_id,
        member_id: member.member_id,
        product_id: c.facts.product.product_id,
        delivery: DeliveryAddress {
            address: "a".to_owned(),
            address_detail: "b".to_owned(),
            zip_code: "12345".to_owned(),
        },
        card_apply_no: CardApplyNo::derive(as_of(), c.facts.card_id, c.prior_applications).unwrap(),
        attempt: c.prior_applications,
        fee,
        new_expiry_yyyymm: 203111,
        correlation_id: "261120020000-0000abc".to_owned(),
        payment_state: state,
        run_id: Some(run_id),
    }
}

pub(crate) fn new_run() -> NewRun {
    NewRun {
        as_of: as_of(),
        trigger: Trigger::Manual,
        scope: Scope::Full,
        params: serde_json::json!({}),
        version: "test".to_owned(),
        fee_mode: "ledger".to_owned(),
        slot: None,
    }
}

async fn every_store_method_keeps_its_contract(kind: Kind) {
    let db = TestDb::of(kind);
    let mut settings = Settings::load(Some(&config_dir())).unwrap();
    settings.database.url = db.url();
    match open(&settings, Create::IfMissing).await.expect("open a fresh database") {
        Backend::Sqlite(store) => conformance(&store, &db).await,
        Backend::Postgres(store) => conformance(&store, &db).await,
    }
}

async fn conformance<S: Store + DemoLoad>(store: &S, db: &TestDb) {
    // Admin: a fresh database has an older schema than the binary until migrated.
    assert!(store.check_schema().await.is_err_and(|e| e.is_schema_mismatch()));
    store.migrate().await.expect("migrate");
    store.migrate().await.expect("migrating twice is a no-op");
    store.check_schema().await.expect("the schema matches after migrate");
    // DemoLoad.
    let data = demo::generate(400, 7, as_of(), 30, 1);
    store.load_demo(&data).await.expect("load demo data");
    // Store reads.
    let first = &data.cards[0];
    assert_eq!(store.find_card_id(&first.card_no).await.unwrap(), Some(first.id));
    assert_eq!(store.find_card_id("0000000000000000").await.unwrap(), None);
    let plan = store.explain_candidate_query(&page(0, 100)).await.unwrap();
    assert!(plan.contains("card_expiry_unreissued"), "{plan}");
    let window: Vec<i64> = page(0, 1).window_months;
    let unmarked_at_start = store.estimate_candidates(&window, None).await.unwrap();
    let unmarked: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM card WHERE expiry_ym BETWEEN $1 AND $2 AND replaced_by_application_id IS NULL",
    )
    .bind(window.iter().min().copied())
    .bind(window.iter().max().copied())
    .fetch_one(&db.pool().await)
    .await
    .unwrap();
    assert!(unmarked > 0);
    assert_eq!(unmarked_at_start, unmarked as u64, "the window's unmarked cards");
    // RunLog, empty.
    assert!(store.run_summary(None).await.unwrap().is_none());
    assert!(store.close_abandoned_runs().await.unwrap().is_empty());
    let run = store.start_run(&new_run()).await.expect("start a run");
    let run_id = run.id;
    assert!(store.close_abandoned_runs().await.unwrap().is_empty(), "a live run is not abandoned");

    // ChunkTx: a read-only page, then a page to write.
    let mut read_only = store.begin_chunk(true).await.unwrap();
    let dry = read_only.read_candidates(&page(0, 50)).await.unwrap();
    // keyset_end: where the whole window's one page ends, before anything is recorded.
    let whole = read_only.read_candidates(&page(0, 1_000_000)).await.unwrap();
    assert!(whole.scanned > dry.scanned, "the window holds more than one page of 50");
    assert_eq!(read_only.keyset_end(&window).await.unwrap(), Some(whole.next_after));
    assert_eq!(read_only.keyset_end(&[190001]).await.unwrap(), None, "a month without cards");
    assert_eq!(read_only.keyset_end(&[]).await.unwrap(), None, "no months");
    drop(read_only);
    let mut tx = store.begin_chunk(false).await.unwrap();
    let got = tx.read_candidates(&page(0, 50)).await.unwrap();
    assert_eq!(got.candidates.len(), dry.candidates.len(), "a dry page reads what a real one does");
    assert!(!got.candidates.is_empty() && got.scanned >= got.candidates.len());
    assert!(got.next_after > 0);
    let funded: Vec<Candidate> =
        got.candidates.iter().filter(|c| c.facts.member.is_some() && c.balance >= 10).cloned().collect();
    assert!(funded.len() >= 4, "the page has four candidates with a funded wallet");
    let (a, b, c, d) = (&funded[0], &funded[1], &funded[2], &funded[3]);
    // claim: the first claim wins, a second claim of the same card loses without an error.
    let won = tx.claim(&[application(a, run_id, PaymentState::Applied, 10)]).await.unwrap();
    assert_eq!(won.len(), 1);
    assert_eq!(won[0].card_id, a.facts.card_id);
    let again = application(a, run_id, PaymentState::Applied, 10);
    let mut other_number = again.clone();
    other_number.card_apply_no = CardApplyNo::derive(as_of(), a.facts.card_id, 77).unwrap();
    assert!(tx.claim(&[other_number]).await.unwrap().is_empty(), "one live application per card");
    // A number another card's row holds also loses (no error), and is listed as taken.
    let mut taken_by_a = application(b, run_id, PaymentState::Applied, 0);
    taken_by_a.card_apply_no = again.card_apply_no.clone();
    assert!(tx.claim(&[taken_by_a]).await.unwrap().is_empty());
    assert_eq!(tx.live_application_cards(&[a.facts.card_id, b.facts.card_id]).await.unwrap(), vec![a.facts.card_id]);
    let (low, high) = CardApplyNo::day_range(as_of(), a.facts.card_id).unwrap();
    assert_eq!(tx.taken_apply_nos(&low, &high).await.unwrap(), vec![again.card_apply_no.clone()]);
    // debit, mark, results, budget.
    let claimed = Claimed { card_id: a.facts.card_id, application_id: won[0].application_id };
    let member = a.facts.member.as_ref().unwrap().member_id;
    let debit = Debit {
        member_id: member,
        application_id: claimed.application_id,
        reference: again.card_apply_no.to_string(),
        amount: 10,
    };
    tx.debit(std::slice::from_ref(&debit)).await.expect("debit");
    tx.mark(&[claimed]).await.expect("mark");
    assert!(tx.mark(&[claimed]).await.is_err(), "a card is marked once");
    let row = ResultRow {
        card_id: a.facts.card_id,
        code: "000_000",
        message: "Success".to_owned(),
        fee: 10,
        card_apply_no: Some(again.card_apply_no.clone()),
        correlation_id: again.correlation_id.clone(),
    };
    tx.insert_results(ResultOrigin::Run(run_id), as_of(), std::slice::from_ref(&row)).await.expect("insert results");
    assert_eq!(tx.add_to_budget(as_of(), 1, 10).await.unwrap(), (1, 10));
    assert_eq!(tx.add_to_budget(as_of(), 2, 5).await.unwrap(), (3, 15));
    tx.commit().await.expect("commit");
    let balance: i64 = sqlx::query_scalar("SELECT balance FROM wallet WHERE member_id = $1")
        .bind(member)
        .fetch_one(&db.pool().await)
        .await
        .unwrap();
    assert_eq!(balance, a.balance - 10);
    // The progress total counted after a chunk: a marked card has left the expiry index, and
    // is counted again through the run's result row, so the total still bounds what the run read.
    assert_eq!(store.estimate_candidates(&window, None).await.unwrap(), unmarked_at_start - 1);
    assert_eq!(store.estimate_candidates(&window, Some(run_id)).await.unwrap(), unmarked_at_start);

    // A debit a wallet cannot cover fails (the chunk would roll back); a rolled-back budget is gone.
    let mut tx = store.begin_chunk(false).await.unwrap();
    let too_much = Debit { amount: i64::MAX / 2, reference: "ref-too-much".to_owned(), ..debit.clone() };
    assert!(tx.debit(&[too_much]).await.is_err());
    drop(tx);
    let mut tx = store.begin_chunk(false).await.unwrap();
    assert_eq!(tx.add_to_budget(as_of(), 0, 0).await.unwrap(), (3, 15), "committed totals only");
    // unclaim withdraws a claim made in the transaction.
    let won_b = tx.claim(&[application(b, run_id, PaymentState::Applied, 0)]).await.unwrap();
    tx.unclaim(&[won_b[0].application_id]).await.expect("unclaim");
    assert!(tx.live_application_cards(&[b.facts.card_id]).await.unwrap().is_empty());
    // Reservations for the HTTP path: c to settle, d to release.
    let won_c = tx.claim(&[application(c, run_id, PaymentState::PendingPayment, 10)]).await.unwrap();
    let won_d = tx.claim(&[application(d, run_id, PaymentState::PendingPayment, 10)]).await.unwrap();
    tx.commit().await.unwrap();
    assert!(store.pending_reservations().await.unwrap().is_empty(), "a live run's reservations are its own");

    // finish_run: counts from the result rows, the lock released.
    let summary = store.finish_run(run, RunStatus::Completed, None, 2).await.expect("finish");
    assert_eq!(
        (summary.run_id, summary.status, summary.scope, summary.trigger),
        (run_id, RunStatus::Completed, Scope::Full, Trigger::Manual)
    );
    assert_eq!(summary.counts.get("000_000").map(|c| (c.count, c.fee)), Some((1, 10)));
    assert_eq!((summary.read, summary.reissued, summary.pending, summary.fee_total), (3, 1, 2, 10));
    let read_back = store.run_summary(Some(run_id)).await.unwrap().expect("the run");
    assert_eq!((read_back.status, read_back.read, read_back.fee_total), (RunStatus::Completed, 3, 10));
    assert_eq!(store.run_summary(None).await.unwrap().map(|s| s.run_id), Some(run_id));

    // pending_reservations lists what no live run owns; settle and release end them once.
    let pending = store.pending_reservations().await.unwrap();
    let ids: Vec<i64> = pending.iter().map(|r| r.application_id).collect();
    // Member, then card order.
    let key = |x: &Candidate| (x.facts.member.as_ref().map_or(0, |m| m.member_id), x.facts.card_id);
    let mut want = vec![(key(c), won_c[0].application_id), (key(d), won_d[0].application_id)];
    want.sort();
    assert_eq!(ids, want.into_iter().map(|(_, id)| id).collect::<Vec<_>>());
    let mut tx = store.begin_chunk(false).await.unwrap();
    let settlement = Settlement {
        application_id: won_c[0].application_id,
        state: PaymentState::Applied,
        payment_ref: Some("pay-1".to_owned()),
    };
    assert_eq!(tx.settle(std::slice::from_ref(&settlement)).await.unwrap(), vec![won_c[0].application_id]);
    assert!(tx.settle(&[settlement]).await.unwrap().is_empty(), "a settled reservation changes once");
    tx.release(&[won_d[0].application_id]).await.expect("release");
    tx.commit().await.unwrap();
    assert!(store.pending_reservations().await.unwrap().is_empty());

    // refresh_statistics and prune_results.
    store.refresh_statistics().await.expect("refresh statistics");
    assert_eq!(store.prune_results(chrono::Utc::now() - chrono::Duration::days(1)).await.unwrap(), 0);
    assert_eq!(store.prune_results(chrono::Utc::now() + chrono::Duration::days(1)).await.unwrap(), 1);

    // close_abandoned_runs: a run whose owner let go of its lock is closed as failed.
    let orphan = store.start_run(&new_run()).await.unwrap();
    let orphan_id = orphan.id;
    drop(orphan);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let closed = store.close_abandoned_runs().await.unwrap();
        if closed == vec![orphan_id] {
            break;
        }
        assert!(closed.is_empty() && std::time::Instant::now() < deadline, "{closed:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let orphan = store.run_summary(Some(orphan_id)).await.unwrap().unwrap();
    assert_eq!(orphan.status, RunStatus::Failed);
    assert!(orphan.reason.is_some_and(|r| r.contains("abandoned")));
    schedules(store).await;
}

/// Schedules, and slot claims through `start_run`: a slot is claimed once with its run row; a
/// takeover links another run to it only while none of its runs is running and it is not held.
async fn schedules<S: Store>(store: &S) {
    use chrono::TimeZone;
    let at = chrono::Utc.with_ymd_and_hms(2026, 11, 20, 2, 0, 0).unwrap();
    let claim = SlotClaim { schedule: "nightly".to_owned(), at, as_of: as_of(), takeover: false };
    let with = |claim: &SlotClaim| NewRun { trigger: Trigger::Schedule, slot: Some(claim.clone()), ..new_run() };
    let taken = |r: Result<_, StoreError>| matches!(r, Err(StoreError::SlotTaken { .. }));
    let first = store.start_run(&with(&claim)).await.expect("the first claim");
    assert!(taken(store.start_run(&with(&claim)).await), "a slot is claimed once");
    let takeover = SlotClaim { takeover: true, ..claim.clone() };
    assert!(taken(store.start_run(&with(&takeover)).await), "no takeover while a run of the slot is running");
    let history = store.schedule_history("nightly", as_of()).await.unwrap();
    assert_eq!(history.first_date, Some(as_of()));
    assert!(history.completed.contains(&as_of()), "the completed full run above");
    assert_eq!(history.slots, vec![SlotRecord { at, as_of: as_of(), held_reason: None, running: true }]);
    assert!(store.schedule_history("other", as_of()).await.unwrap().slots.is_empty(), "per schedule name");
    store.finish_run(first, RunStatus::Interrupted, None, 0).await.unwrap();
    let second = store.start_run(&with(&takeover)).await.expect("a takeover once the slot's run ended");
    store.finish_run(second, RunStatus::Failed, Some("limit"), 0).await.unwrap();
    store.hold_slot("nightly", at, "blast-radius limit").await.unwrap();
    match store.start_run(&with(&takeover)).await {
        Err(StoreError::SlotTaken { held: Some(reason), .. }) => assert_eq!(reason, "blast-radius limit"),
        other => panic!("a held slot is not taken over: {other:?}"),
    }
    let history = store.schedule_history("nightly", as_of()).await.unwrap();
    assert_eq!(history.slots[0].held_reason.as_deref(), Some("blast-radius limit"));
    assert!(!history.slots[0].running);
    // The gauges and readiness.
    let gauges = store.db_gauges().await.unwrap();
    assert!(gauges.last_success.is_some());
    assert_eq!((gauges.pending_reservations, gauges.oldest_pending), (0, None));
    store.probe_ready().await.expect("ready");
    // Slot rows go with the results at retention; their runs stay, unlinked.
    store.prune_results(chrono::Utc::now() + chrono::Duration::days(1)).await.unwrap();
    assert!(store.schedule_history("nightly", as_of()).await.unwrap().slots.is_empty());
}
