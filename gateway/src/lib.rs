//! The `fanout` gateway: channels, tokens, per-channel sequence numbers, history and an HTTP
//! publish API, built on the fanout library's public API (`Server`, `Handler`, `Ctx`) only.
//!
//! ```text
//!   main.rs  (the `fanout` binary: subcommands, signals, logging, rlimit)
//!      |
//!   settings/    (clap + TOML + env in one field list -> Config + GatewayConfig)
//!      |
//!   app.rs  (the Handler: native or Pusher sessions, subscribe / publish / resume)
//!      |   admin.rs  (the admin listener: /metrics, /api/stats, /healthz of the main server)
//!      |        \
//!   http.rs    pusher/     (/api/publish, /healthz, /metrics, the demo page; Pusher protocol 7:
//!      |        |    \      /app/{key}, the signed /apps/{id}/ API, presence, webhooks)
//!      |      space.rs  \  (the one channel space: both protocols' frames from one publish)
//!      |     /      \    \
//!   native/    history.rs   (fanout.v1 ops and JWT auth; per-channel seq, counts and history)
//!      |
//!   fanout  (the library)
//! ```
//!
//! Dependencies point down: no module imports one above it. The library is embedded through
//! its public API alone (ARCHITECTURE.md, "Crates and layers"); this crate is where the CLI, TOML, JSON and JWT crates
//! live, so that the library never compiles them.

#![forbid(unsafe_code)]

pub mod admin;
pub mod app;
pub mod cluster;
pub mod history;
pub mod http;
pub mod native;
pub mod pusher;
pub mod settings;
pub mod space;
