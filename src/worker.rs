//! The application value: one per process, built once from the store and the settings, holding
//! the fee service client, so that `max_in_flight`, the rate limit and the failure breaker hold
//! across every run and request of the process (DESIGN §10). Entry points take the shutdown as a
//! value, as mini-redis' `run(listener, shutdown)` does:
//!
//! - [`App::run_once`]: one run (`run`, the CronJob and the operator);
//! - [`App::reissue_card`]: the reissue-one-card operation (`run --card`; the sync API's handler);
//! - `schedule(shutdown)` (the daemon) and `serve(listener, shutdown)` (the API) plug in here:
//!   both call `run_once` / `reissue_card` on the same `App`.

use std::sync::Arc;

use chrono::NaiveDate;
use tokio_util::sync::CancellationToken;

use crate::batch::{self, ReissueOutcome, RunError, RunReport, RunRequest};
use crate::config::{FeeMode, Settings};
use crate::domain::address::DeliveryAddress;
use crate::fees::http::HttpCharger;
use crate::store::{Store, Trigger};

/// The shutdown value every entry point takes: cancelled once, on SIGTERM/SIGINT (or by a test);
/// whoever holds a clone sees it.
pub type Shutdown = CancellationToken;

/// One card to reissue, as an entry point asks for it.
#[derive(Debug, Clone)]
pub struct ReissueRequest {
    /// The card number (16 digits).
    pub card_no: String,
    pub as_of: NaiveDate,
    pub trigger: Trigger,
    /// Replaces the member's registered address (the API's `addressInfo`); checked the same way.
    pub delivery: Option<DeliveryAddress>,
}

pub struct App<S: Store> {
    store: S,
    settings: Settings,
    charger: Option<Arc<HttpCharger>>,
}

impl<S: Store> App<S> {
    /// Builds the process's fee client in HTTP fee mode: one that cannot be built is a
    /// configuration error (exit 2), found before any run row is written.
    pub fn new(store: S, settings: Settings) -> Result<Self, RunError> {
        let charger = match settings.fees.mode {
            FeeMode::Http => {
                Some(HttpCharger::new(&settings.fees.http).map_err(|e| RunError::FeeClient(e.to_string()))?)
            }
            FeeMode::Ledger => None,
        };
        Ok(Self { store, settings, charger })
    }

    pub fn store(&self) -> &S {
        &self.store
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// The process's fee client (HTTP fee mode).
    pub fn fee_client(&self) -> Option<&Arc<HttpCharger>> {
        self.charger.as_ref()
    }

    /// One run, to its end or to the shutdown.
    pub async fn run_once(&self, request: RunRequest, shutdown: Shutdown) -> Result<RunReport, RunError> {
        batch::execute(&self.store, &self.settings, self.charger.as_ref(), request, shutdown).await
    }

    /// The sync API's reissue of one card the caller must own: its member and card looked up,
    /// then the same operation in the same transaction, recorded without a run row (result
    /// trigger `api`), delivered to the request's address.
    pub async fn reissue_for_api(
        &self,
        (user_id, card_no): (i64, &str),
        delivery: &DeliveryAddress,
        as_of: NaiveDate,
        shutdown: Shutdown,
    ) -> Result<batch::ApiReissue, RunError> {
        let request = (user_id, card_no, delivery, as_of);
        batch::reissue_for_api(&self.store, &self.settings, self.charger.as_ref(), request, &shutdown).await
    }

    /// Evaluates, claims, charges and records exactly one card (its own run row, scope `card`)
    /// and returns its outcome.
    pub async fn reissue_card(&self, request: ReissueRequest, shutdown: Shutdown) -> Result<ReissueOutcome, RunError> {
        let run = RunRequest {
            card: Some(request.card_no),
            delivery: request.delivery,
            ..RunRequest::full(request.as_of, request.trigger)
        };
        match self.run_once(run, shutdown).await? {
            RunReport::Finished { card: Some(outcome), .. } => Ok(*outcome),
            RunReport::Finished { summary, .. } => Err(RunError::Internal(format!(
                "run {} ended {} without the card's outcome",
                summary.run_id, summary.status
            ))),
            RunReport::Paused => Err(RunError::Paused),
        }
    }
}
