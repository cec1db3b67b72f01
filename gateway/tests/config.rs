//! The binary's configuration: a TOML file under FANOUT_* variables under flags, a commented
//! default file, and `config check` naming the file, key and reason of each mistake.

#[path = "../../tests/common/mod.rs"]
mod common;

use std::path::PathBuf;
use std::process::Command;

use common::spawn_listening;

fn fanout() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_fanout"));
    for (key, _) in std::env::vars().filter(|(k, _)| k.starts_with("FANOUT_")) {
        c.env_remove(key);
    }
    c
}

fn temp_file(name: &str, text: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("fanout-config-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

/// Starts `fanout serve` with `args` and `env`, returns the address it reports, and stops it.
fn listen_address(args: &[&str], env: &[(&str, &str)]) -> String {
    let mut command = fanout();
    command.arg("serve").args(args).envs(env.iter().copied());
    let (_fanout, addr) = spawn_listening(command);
    addr.ip().to_string()
}

#[test]
fn precedence_is_flag_then_environment_then_file_then_default() {
    let file = temp_file("listen.toml", "listen = \"127.0.0.2:0\"\nhistory_size = 5\n");
    let file = file.to_str().unwrap();
    assert_eq!(listen_address(&["--config", file], &[]), "127.0.0.2");
    assert_eq!(listen_address(&["--config", file], &[("FANOUT_LISTEN", "127.0.0.3:0")]), "127.0.0.3");
    assert_eq!(
        listen_address(&["--config", file, "--listen", "127.0.0.4:0"], &[("FANOUT_LISTEN", "127.0.0.3:0")]),
        "127.0.0.4"
    );
    assert_eq!(listen_address(&["--listen", "127.0.0.5:0"], &[("FANOUT_CONFIG", file)]), "127.0.0.5");
    assert_eq!(listen_address(&[], &[("FANOUT_CONFIG", file)]), "127.0.0.2", "the file named by the environment");
}

fn check(text: &str) -> (bool, String) {
    let path = temp_file(&format!("check-{}.toml", text.len()), text);
    let out = fanout().args(["config", "check", path.to_str().unwrap()]).output().unwrap();
    let said = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        assert_eq!(out.status.code(), Some(2), "{said}");
    }
    (out.status.success(), said)
}

#[test]
fn config_check_names_the_file_the_key_and_the_reason() {
    let (ok, said) = check("history_size = 10\nallowed_origins = [\"https://app.example\"]\n");
    assert!(ok && said.contains(": ok"), "{said}");
    let cases = [
        ("histroy_size = 10\n", "unknown field `histroy_size`"),
        ("history_size = \"ten\"\n", "history_size"),
        ("listen = \"nowhere\"\n", "listen"),
        ("workers = 0\n", "workers must be between 1 and 64"),
        ("listen = \"0.0.0.0:8080\"\n", "--jwt-secret"),
        ("slow_consumer = \"maybe\"\n", "slow_consumer"),
        ("admin_listen = \"0.0.0.0:9090\"\n", "--admin-token"),
        ("publish_batch_max = 0\n", "publish_batch_max"),
    ];
    for (text, reason) in cases {
        let (ok, said) = check(text);
        assert!(!ok, "{text} passed");
        assert!(said.contains(".toml"), "the file is named: {said}");
        assert!(said.contains(reason), "{text}: expected {reason:?} in {said}");
    }
}

#[test]
fn the_default_file_is_commented_complete_and_checks_ok() {
    let out = fanout().args(["config", "default"]).output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    let keys = ["listen", "workers", "jwt_secret", "history_ttl", "max_connections_per_ip", "drain_window"];
    let admin = ["admin_listen", "admin_token", "no_demo", "publish_batch_max", "max_body_size"];
    for key in keys.into_iter().chain(admin) {
        assert!(text.contains(&format!("# {key} = ")), "{key} missing from\n{text}");
    }
    let (ok, said) = check(&text);
    assert!(ok, "{said}");
    let help = fanout().args(["serve", "--help"]).output().unwrap();
    let help = String::from_utf8(help.stdout).unwrap();
    let flags = ["--config", "--workers", "--max-connections-per-ip", "--drain-window", "[env: FANOUT_HISTORY_SIZE="];
    let admin = ["--admin-listen", "[env: FANOUT_ADMIN_TOKEN]", "--no-demo", "--publish-batch-max", "--max-body-size"];
    for flag in flags.into_iter().chain(admin) {
        assert!(help.contains(flag), "{flag} missing from serve --help");
    }
}

#[test]
fn config_check_applies_the_environment_over_the_file_as_serve_does() {
    let path = temp_file("check-env.toml", "max_channels = 5\n");
    let run = |env: &[(&str, &str)]| {
        let out =
            fanout().args(["config", "check", path.to_str().unwrap()]).envs(env.iter().copied()).output().unwrap();
        (out.status.success(), String::from_utf8_lossy(&out.stderr).into_owned())
    };
    assert!(run(&[]).0, "the file alone is fine");
    let (ok, said) = run(&[("FANOUT_MAX_CHANNELS", "0")]);
    assert!(!ok && said.contains("max_channels"), "serve would take the environment's 0 and refuse: {said}");
}
