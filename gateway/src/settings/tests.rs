//! The settings' unit tests: flags, environment and file agree, defaults come from the library,
//! and bad values are refused with the setting named.

use super::*;

#[test]
fn file_settings_yield_to_flags_and_environment() {
    use clap::Parser;
    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        serve: ServeArgs,
    }
    let mut args = Cli::parse_from(["fanout", "--history-size", "7"]).serve;
    let file: FileConfig =
        toml::from_str("history_size = 50\nhistory_ttl = 60\nallowed_origins = [\"https://a\"]").unwrap();
    file.apply(&mut args, |key| key == "history_size");
    assert_eq!((args.history_size, args.history_ttl), (7, 60));
    assert_eq!(args.allowed_origins, ["https://a"]);
}

#[test]
fn defaults_are_the_library_and_application_defaults_but_for_the_message_size() {
    use clap::Parser;
    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        serve: ServeArgs,
    }
    let (server, gateway) = Cli::parse_from(["fanout", "--workers", "1"]).serve.into_configs().unwrap();
    let size = MAX_MESSAGE_SIZE;
    let expected =
        Config { max_frame_size: size, max_message_size: size, max_body_bytes: MAX_BODY_SIZE, ..Config::default() };
    assert_eq!(server, expected);
    assert_eq!(gateway, GatewayConfig::default());
}

#[test]
fn compression_flags_reach_the_library_config() {
    use clap::Parser;
    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        serve: ServeArgs,
    }
    let args = ["fanout", "--workers", "1", "--compression", "--compression-threshold", "1024"];
    let (server, _) = Cli::parse_from(args).serve.into_configs().unwrap();
    assert_eq!((server.compression, server.compression_threshold), (true, 1024));
    let mut args = Cli::parse_from(["fanout", "--workers", "1"]).serve;
    let file: FileConfig = toml::from_str("compression = true").unwrap();
    file.apply(&mut args, |_| false);
    assert!(args.into_configs().unwrap().0.compression, "from the file too");
}

#[test]
fn proxy_and_rate_flags_reach_the_library_config() {
    use clap::Parser;
    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        serve: ServeArgs,
    }
    let args =
        ["fanout", "--trusted-proxies", "10.0.0.0/8, ::1", "--proxy-protocol", "--handshake-rate-per-ip", "20/s:40"];
    let (server, _) = Cli::parse_from(args).serve.into_configs().unwrap();
    let proxies: Vec<String> = server.trusted_proxies.iter().map(|c| c.to_string()).collect();
    assert_eq!((proxies.join(" "), server.proxy_protocol), ("10.0.0.0/8 ::1/128".into(), true));
    assert_eq!(server.handshake_rate_per_ip, Some("20/s:40".parse().unwrap()));
}

#[test]
fn file_errors_name_the_file_the_key_and_the_reason() {
    let dir = std::env::temp_dir().join(format!("fanout-config-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("bad.toml");
    std::fs::write(&path, "history_size = 10\nhistroy_ttl = 5\n").unwrap();
    let err = FileConfig::read(&path).unwrap_err();
    assert!(err.contains("bad.toml") && err.contains("histroy_ttl"), "{err}");
    std::fs::write(&path, "history_size = \"many\"\n").unwrap();
    let err = FileConfig::read(&path).unwrap_err();
    assert!(err.contains("history_size") && err.contains("invalid type"), "{err}");
}

#[test]
fn the_default_file_parses_and_lists_every_setting() {
    let text = default_file();
    let uncommented: String = text
        .lines()
        .filter_map(|l| l.strip_prefix("# "))
        .filter(|l| l.contains(" = ") && !l.contains("no default"))
        .map(|l| l.split("    #").next().unwrap().to_string() + "\n")
        .collect();
    let parsed: FileConfig = toml::from_str(&uncommented).unwrap_or_else(|e| panic!("{e}\n{uncommented}"));
    assert_eq!(parsed.history_size, Some(100));
    assert_eq!((parsed.compression, parsed.compression_threshold), (Some(false), Some(256)));
    for key in ["listen", "jwt_secret", "max_connections_per_ip", "drain_window", "log_level", "compression"] {
        assert!(text.contains(&format!("# {key} = ")), "{key} missing");
    }
}

#[test]
fn pusher_apps_from_flags_and_file() {
    use clap::Parser;
    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        serve: ServeArgs,
    }
    let flags = ["fanout", "--pusher-app-id", "1", "--pusher-app-key", "k", "--pusher-app-secret", "s"];
    let mut args = Cli::parse_from(flags).serve;
    let file: FileConfig =
        toml::from_str("[[pusher.apps]]\nid = \"2\"\nkey = \"k2\"\nsecret = \"s2\"\nmax_connections = 5\n").unwrap();
    file.apply(&mut args, |_| false);
    let (_, gateway) = args.into_configs().unwrap();
    let ids: Vec<_> = gateway.pusher_apps.iter().map(|a| (a.id.as_str(), a.max_connections)).collect();
    assert_eq!(ids, [("1", 0), ("2", 5)], "the flags' app first");

    let partial = Cli::parse_from(["fanout", "--pusher-app-id", "1"]).serve;
    assert!(partial.into_configs().unwrap_err().contains("go together"));

    let dir = std::env::temp_dir().join(format!("fanout-pusher-config-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("apps.toml");
    std::fs::write(&path, "[[pusher.apps]]\nid = \"1\"\nkey = \"k\"\nsecret = \"s\"\nclient_event = true\n").unwrap();
    let err = FileConfig::read(&path).unwrap_err();
    assert!(err.contains("apps.toml") && err.contains("client_event"), "{err}");
    let twice = "[[pusher.apps]]\nid = \"1\"\nkey = \"k\"\nsecret = \"s\"\n[[pusher.apps]]\nid = \"1\"\nkey = \"k2\"\nsecret = \"s\"\n";
    std::fs::write(&path, twice).unwrap();
    let err = check_file(&path).unwrap_err();
    assert!(err.contains("apps.toml") && err.contains("used twice"), "{err}");
    std::fs::write(&path, "[pusher]\nappz = []\n").unwrap();
    assert!(FileConfig::read(&path).unwrap_err().contains("appz"));
}

#[test]
fn the_coalescing_window_reaches_the_library_config_and_is_bounded() {
    use clap::Parser;
    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        serve: ServeArgs,
    }
    let (server, _) =
        Cli::parse_from(["fanout", "--workers", "1", "--coalesce-us", "1000"]).serve.into_configs().unwrap();
    assert_eq!(server.coalesce, Duration::from_micros(1000));
    let mut args = Cli::parse_from(["fanout", "--workers", "1"]).serve;
    let file: FileConfig = toml::from_str("coalesce_us = 250").unwrap();
    file.apply(&mut args, |_| false);
    assert_eq!(args.into_configs().unwrap().0.coalesce, Duration::from_micros(250), "from the file too");
    let err = Cli::parse_from(["fanout", "--coalesce-us", "100001"]).serve.into_configs().unwrap_err();
    assert_eq!(err, "coalesce_us must be at most 100000, got 100001");
}
