//! Integration tests: the real binary against real SQLite files, one fresh database per test.

mod api;
mod app;
mod bad_data;
mod checkpoint;
mod cli_errors;
mod cli_output;
mod common;
mod crash;
mod deploy;
mod fee_server;
mod fees_http;
mod observability;
mod postgres;
mod progress;
mod race;
mod read_ahead;
mod run;
mod schedule;
mod store;
