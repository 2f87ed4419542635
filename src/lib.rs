//! The expiring-card renewal worker: finds prepaid cards expiring within the window, checks
//! each against the issuer's reissue rules, charges the reissue fee, writes the application,
//! marks the card, and records one result per card, exactly once per card.
//!
//! See ARCHITECTURE.md for the code map and the invariants.

pub mod api;
pub mod app;
pub mod batch;
pub mod cli;
pub mod config;
pub mod demo;
pub mod domain;
pub mod fees;
pub mod metrics;
pub mod ops;
pub mod output;
pub mod report;
pub mod schedule;
pub mod store;
pub mod telemetry;
pub mod worker;

/// The program version recorded on run rows and summary events.
/// The package version, with the git commit when the build knew it (`build.rs`).
pub const VERSION: &str = env!("RENEWAL_VERSION");

/// The test-only hooks' environment variables and their stderr marker.
pub use batch::{CHUNK_DELAY_ENV, PAUSE_ENV, PAUSED_MARKER, RELEASE_ENV, START_GATE_ENV};
