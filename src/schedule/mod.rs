//! The nightly daemon (`schedule`): slots computed in our code, woken up by tokio-cron-scheduler,
//! claimed in the database so replicas make one run per slot, caught up per business date, and
//! stopped gracefully (README "Operating it").

pub mod admin;
pub mod clock;
mod daemon;
mod plan;
pub mod slots;

pub use daemon::{DaemonOptions, Stopped, run_daemon};
pub use slots::{CronSchedule, ScheduleError, Slot};
