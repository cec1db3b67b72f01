//! The `fanout` gateway: channels, tokens, per-channel sequence numbers, history and an HTTP
//! publish API, built on the fanout library's public API (`Server`, `Handler`, `Ctx`) only.
//!
//! ```text
//!   main.rs  (the `fanout` binary: subcommands, signals, logging, rlimit)
//!      |
//!   settings.rs  (clap + TOML + env in one field list -> Config + GatewayConfig)
//!      |
//!   app.rs  (the Handler: sessions, subscribe / publish / resume)
//!      |            \
//!   http.rs          \      (/api/publish, /healthz, /metrics, /api/stats, the demo page)
//!      |      \       \
//!   native/    history.rs   (fanout.v1 ops and JWT auth; per-channel seq and history)
//!      |
//!   fanout  (the library)
//! ```
//!
//! Dependencies point down: no module imports one above it. The library is embedded through
//! its public API alone (ARCHITECTURE.md, "Crates and layers"); this crate is where the CLI, TOML, JSON and JWT crates
//! live, so that the library never compiles them.

#![forbid(unsafe_code)]

pub mod app;
pub mod history;
pub mod http;
pub mod native;
pub mod pusher;
pub mod settings;
