//! Fuzz target: the operator's TOML configuration file (`fanout_gateway::settings::FileConfig`),
//! read as `fanout serve --config FILE` reads it, applied over the defaults and turned into the
//! library's `Config` and the gateway's settings (`ServeArgs::into_configs`), with validation.
//!
//! Input: the file's text (not UTF-8: skipped, since reading the file refuses it first).
//! Invariants checked, beyond "no panic, no hang":
//! - a file that is refused, or settings that fail validation, give a non-empty reason;
//! - accepted settings validate, and carry what the file said (history size, message size,
//!   listen address, Pusher apps).
#![no_main]

use std::sync::OnceLock;

use clap::{Args, FromArgMatches};
use fanout_gateway::settings::{FileConfig, ServeArgs};
use libfuzzer_sys::fuzz_target;

/// `fanout serve` with no flag: the defaults a file is applied over (built once: clap is slow).
fn defaults() -> &'static ServeArgs {
    static DEFAULTS: OnceLock<ServeArgs> = OnceLock::new();
    DEFAULTS.get_or_init(|| {
        let command = ServeArgs::augment_args(clap::Command::new("fanout"));
        let matches = command.try_get_matches_from(["fanout"]).expect("no flags parse");
        let mut args = ServeArgs::from_arg_matches(&matches).expect("the defaults parse");
        // A fixed count, so a run does not read the machine's CPUs (the file may still set it).
        args.workers = Some(1);
        args
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let file: FileConfig = match toml::from_str(text) {
        Ok(file) => file,
        Err(e) => return assert!(!e.to_string().is_empty()),
    };
    let (history_size, max_message_size, listen) = (file.history_size, file.max_message_size, file.listen);
    let apps_in_file = file.pusher.as_ref().map_or(0, |p| p.apps.len());
    let mut args = defaults().clone();
    file.apply(&mut args, |_| false);
    match args.into_configs() {
        Ok((server, gateway)) => {
            server.validate().expect("accepted settings validate");
            assert_eq!(gateway.history_size, history_size.unwrap_or(defaults().history_size));
            assert_eq!(server.max_message_size, max_message_size.unwrap_or(defaults().max_message_size));
            assert_eq!(server.listen, listen.unwrap_or(defaults().listen));
            assert_eq!(gateway.pusher_apps.len(), apps_in_file);
        }
        Err(reason) => assert!(!reason.is_empty()),
    }
});
