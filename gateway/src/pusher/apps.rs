//! The Pusher apps the gateway serves: their credentials, limits and webhook, as the settings
//! give them (`--pusher-app-id/-key/-secret` for one app; `[[pusher.apps]]` tables in the file
//! for several).
//!
//! Owns: `AppConfig` (its defaults and its file form, which refuses unknown keys) and
//! `validate`. Invariants: ids and keys are unique and non-empty, so a key finds one app for a
//! WebSocket and an id one app for the HTTP API; the first app is the one that shares the native
//! channel space (`crate::space::app_key`). Nothing here touches connections.

use serde::Deserialize;

use super::webhook::WebhookTarget;

/// The webhook events an app may ask for (`webhook_events`; empty means all of them).
pub const WEBHOOK_EVENTS: [&str; 6] =
    ["channel_occupied", "channel_vacated", "member_added", "member_removed", "client_event", "cache_miss"];

/// One Pusher app.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AppConfig {
    /// The app id, in the HTTP API's paths (`/apps/{id}/events`).
    pub id: String,
    /// The public key clients connect with (`/app/{key}`) and sign with.
    pub key: String,
    /// The secret that signs channel authorizations, user sign-ins, API requests and webhooks.
    pub secret: String,
    /// A disabled app refuses connections (4003) and API requests (403). Default true.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Whether clients may send `client-*` events on private and presence channels. Default true.
    #[serde(default = "yes")]
    pub client_events: bool,
    /// Open connections of this app; more get 4004. 0 (the default) for no limit.
    #[serde(default)]
    pub max_connections: usize,
    /// Distinct users on one presence channel; more get a subscription error. Default 100.
    #[serde(default = "default_presence_members")]
    pub max_presence_members: usize,
    /// Largest event data in bytes (API triggers and client events); larger gets 413 or an
    /// error. Default 10240.
    #[serde(default = "default_event_size")]
    pub max_event_size: usize,
    /// Client events one connection may send per second; more get error 4301. Default 10.
    #[serde(default = "default_client_event_rate")]
    pub client_event_rate: u32,
    /// Where webhooks are POSTed (`http://host[:port]/path`: this build has no TLS); none by
    /// default.
    #[serde(default)]
    pub webhook_url: Option<String>,
    /// The webhook events to send; empty (the default) sends all of them.
    #[serde(default)]
    pub webhook_events: Vec<String>,
}

fn yes() -> bool {
    true
}

fn default_presence_members() -> usize {
    100
}

fn default_event_size() -> usize {
    10 * 1024
}

fn default_client_event_rate() -> u32 {
    10
}

impl AppConfig {
    /// An app with these credentials and every other setting at its default.
    pub fn new(id: impl Into<String>, key: impl Into<String>, secret: impl Into<String>) -> Self {
        AppConfig {
            id: id.into(),
            key: key.into(),
            secret: secret.into(),
            enabled: true,
            client_events: true,
            max_connections: 0,
            max_presence_members: default_presence_members(),
            max_event_size: default_event_size(),
            client_event_rate: default_client_event_rate(),
            webhook_url: None,
            webhook_events: Vec::new(),
        }
    }

    /// Where the app's webhooks go, if it has a `webhook_url`.
    pub fn webhook_target(&self) -> Option<WebhookTarget> {
        Some(WebhookTarget {
            url: self.webhook_url.clone()?,
            app_key: self.key.clone(),
            app_secret: self.secret.clone(),
            events: self.webhook_events.clone(),
        })
    }
}

/// The `[pusher]` table of the settings file.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PusherFile {
    /// `[[pusher.apps]]`: one table per app.
    #[serde(default)]
    pub apps: Vec<AppConfig>,
}

/// Checks a list of apps: every field, and ids and keys unique.
pub fn validate(apps: &[AppConfig]) -> Result<(), String> {
    for (n, app) in apps.iter().enumerate() {
        let which = format!("pusher app {} ({:?})", n + 1, app.id);
        for (field, value) in [("id", &app.id), ("key", &app.key), ("secret", &app.secret)] {
            if value.is_empty() {
                return Err(format!("{which}: {field} must not be empty"));
            }
        }
        if app.key.contains(['/', '?', '#']) || app.key.contains(char::is_whitespace) {
            return Err(format!("{which}: key must not contain '/', '?', '#' or spaces (it goes in the URL)"));
        }
        if app.id.contains(['/', '?', '#']) || app.id.contains(char::is_whitespace) {
            return Err(format!("{which}: id must not contain '/', '?', '#' or spaces (it goes in the URL)"));
        }
        if app.max_event_size == 0 {
            return Err(format!("{which}: max_event_size must be greater than 0"));
        }
        if let Some(target) = app.webhook_target() {
            target.check_url().map_err(|e| format!("{which}: {e}"))?;
        }
        if let Some(bad) = app.webhook_events.iter().find(|e| !WEBHOOK_EVENTS.contains(&e.as_str())) {
            return Err(format!("{which}: unknown webhook event {bad:?}; known: {}", WEBHOOK_EVENTS.join(", ")));
        }
        if let Some(other) = apps[..n].iter().find(|a| a.id == app.id) {
            return Err(format!("{which}: id {:?} is used twice", other.id));
        }
        if apps[..n].iter().any(|a| a.key == app.key) {
            return Err(format!("{which}: its key is used by another app"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_apps_take_defaults_and_refuse_unknown_keys() {
        let file: PusherFile = toml::from_str(
            "[[apps]]\nid = \"1\"\nkey = \"k\"\nsecret = \"s\"\n[[apps]]\nid = \"2\"\nkey = \"k2\"\nsecret = \"s\"\nclient_events = false\nwebhook_url = \"http://h/\"\nwebhook_events = [\"member_added\"]\n",
        )
        .unwrap();
        assert_eq!(file.apps[0], AppConfig::new("1", "k", "s"));
        assert!(!file.apps[1].client_events);
        let target = file.apps[1].webhook_target().unwrap();
        assert!(target.wants("member_added") && !target.wants("client_event"));
        assert_eq!((target.app_key.as_str(), target.url.as_str()), ("k2", "http://h/"));
        assert!(file.apps[0].webhook_target().is_none(), "no url");
        assert!(validate(&file.apps).is_ok());
        let err = toml::from_str::<PusherFile>("[[apps]]\nid = \"1\"\nkey = \"k\"\nsecret = \"s\"\nclient_event = 1\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("client_event"), "{err}");
    }

    #[test]
    fn validation_names_the_app_and_the_problem() {
        let ok = AppConfig::new("1", "k", "s");
        let check = |apps: &[AppConfig]| validate(apps).unwrap_err();
        assert!(check(&[AppConfig::new("1", "", "s")]).contains("key must not be empty"));
        assert!(check(&[ok.clone(), AppConfig::new("1", "k2", "s")]).contains("used twice"));
        assert!(check(&[ok.clone(), AppConfig::new("2", "k", "s")]).contains("key is used"));
        assert!(check(&[AppConfig::new("1", "a/b", "s")]).contains("key must not contain"));
        let hook = AppConfig { webhook_events: vec!["nope".into()], ..ok.clone() };
        assert!(check(&[hook]).contains("unknown webhook event"));
        let url = AppConfig { webhook_url: Some("ftp://x".into()), ..ok };
        assert!(check(&[url]).contains("only http://"));
    }
}
