//! The run: select -> evaluate -> claim -> charge -> write, one transaction per chunk, a bounded
//! number of chunks at once. The batch and the single-card path (`run --card`) share it.

mod budget;
mod chunk;
mod cursor;
mod events;
mod hooks;
pub mod progress;
mod reissue;
mod run;
mod settle;
mod tally;

pub use hooks::{CHUNK_DELAY_ENV, PAUSE_ENV, PAUSED_MARKER, RELEASE_ENV, START_GATE_ENV};
pub use reissue::{ApiReissue, ReissueOutcome, reissue_for_api};
pub use run::{RunError, RunReport, RunRequest, StartNotice, execute};
