//! End-to-end tests: real coordinator and agent processes, real sockets,
//! real signals. One test binary, one module per scenario, so that a fresh
//! build links the whole stack once rather than once per scenario (each link
//! is ~100 MB of output and tens of seconds on two cores). nextest still runs
//! every test in its own process.

#![allow(clippy::unwrap_used)] // helpers outside #[test] fns panic on failed setup

mod common;

mod aggregator;
mod bad_input;
mod chaos;
mod compute;
mod daemon;
mod engine;
mod fleet;
mod observability;
mod operators;
mod partition;
mod reputation;
mod restart;
mod roster;
mod trust;
