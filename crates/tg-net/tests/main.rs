//! tg-net's integration tests, built as one binary: each file beside this
//! one is a module, so the tests link once rather than once per file (link
//! time and disk grow with every test binary).

#![allow(clippy::unwrap_used)] // helpers outside #[test] fns panic on failed setup

mod hold;
mod relay;
mod two_nodes;
