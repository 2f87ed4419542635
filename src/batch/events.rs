//! The structured log events dashboards read. Field names here are a public contract.

use crate::domain::card_number::mask;
use crate::domain::ids::CardApplyNo;
use crate::store::RunSummary;

/// What every event of a run carries.
#[derive(Debug, Clone)]
pub struct RunFields {
    pub run_id: i64,
    pub as_of: String,
    pub trigger: &'static str,
    pub dry_run: bool,
}

/// One card's outcome, logged after its chunk commits.
#[derive(Debug, Clone)]
pub struct CardEvent {
    pub card_no: String,
    pub correlation_id: String,
    pub code: &'static str,
    pub message: String,
    pub fee: i64,
    pub card_apply_no: Option<CardApplyNo>,
}

pub fn card_result(run: &RunFields, card: &CardEvent, duration_ms: u64) {
    tracing::info!(
        target: "renewal::card",
        event = "card_result",
        run_id = run.run_id,
        as_of = %run.as_of,
        trigger = run.trigger,
        dry_run = run.dry_run,
        correlation_id = %card.correlation_id,
        card = %mask(&card.card_no),
        code = card.code,
        message = %card.message,
        fee = card.fee,
        card_apply_no = card.card_apply_no.as_ref().map_or("", CardApplyNo::as_str),
        duration_ms,
    );
}

pub fn run_summary(run: &RunFields, summary: &RunSummary, duration_ms: i64) {
    let rate = if duration_ms > 0 { summary.read as f64 * 1000.0 / duration_ms as f64 } else { 0.0 };
    // One flat field per code (every code, 0 when absent): a LogQL `| json` reads each as a number.
    let n = |code: &str| summary.counts.get(code).map_or(0, |c| c.count);
    tracing::info!(
        target: "renewal::run",
        event = "run_summary",
        run_id = run.run_id,
        as_of = %run.as_of,
        trigger = run.trigger,
        dry_run = run.dry_run,
        status = %summary.status,
        reason = summary.reason.as_deref().unwrap_or(""),
        read = summary.read,
        reissued = summary.reissued,
        ineligible = summary.ineligible,
        failed = summary.failed,
        pending = summary.pending,
        fee_total = summary.fee_total,
        duration_ms,
        cards_per_sec = rate,
        count_000_000 = n("000_000"),
        count_000_002 = n("000_002"),
        count_001_006 = n("001_006"),
        count_003_004 = n("003_004"),
        count_003_005 = n("003_005"),
        count_003_006 = n("003_006"),
        count_003_007 = n("003_007"),
        count_003_008 = n("003_008"),
        count_003_009 = n("003_009"),
        count_003_010 = n("003_010"),
        count_900_001 = n("900_001"),
        version = %summary.version,
        fee_mode = %summary.fee_mode,
    );
}
