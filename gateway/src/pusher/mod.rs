//! The Pusher Channels protocol (version 7) on the gateway: pusher-js, Laravel Echo and the
//! Pusher server SDKs talk to fanout as they would to Pusher, soketi or Laravel Reverb.
//!
//! Owns: `Pusher`, the process-wide part shared by every worker's handler (the apps, the
//! presence and user state behind its lock, the webhook queue), and through its submodules the
//! WebSocket endpoint `/app/{key}` (`session`), the signed HTTP API under `/apps/{id}/`
//! (`rest`), the wire format (`protocol`), the state (`state`), the apps' settings (`apps`),
//! signatures (`signature`) and webhooks (`webhook`).
//!
//! Imports run one way: the submodules that serve requests (`session`, `channels`, `rest`)
//! extend `Pusher` from below and import this module; this one imports only the leaves
//! (`apps`, `protocol`, `state`, `webhook`), never them.
//!
//! Must not: import `crate::app` (the application hands this module what it needs: the shared
//! `Space`, the settings) or `crate::http`; this module is below both. Invariants: the upgrade
//! of a WebSocket under `/app/` always succeeds, and a refused connection gets `pusher:error`
//! with its code and a close with the same code, never an HTTP error (pusher-js would retry
//! forever); channel counts, presence members and webhooks are per process, whatever the number
//! of workers; locks are taken history first (`Space::lock`), then `Pusher::state`.
//!
//! One channel space with the native protocol (the mapping is in `crate::space`): a publish on
//! channel C through `fanout.v1` or `POST /api/publish` reaches the first app's Pusher
//! subscribers of C, and a Pusher publish (API trigger, client event) reaches native subscribers
//! of C, with a `seq` like any publish. Other apps have channel spaces of their own.
//!
//! Close codes sent (after a `pusher:error` with the same code): 4001 unknown app key, 4003 app
//! disabled, 4004 over the app's `max_connections`, 4005 a path under `/app/` that is not
//! `/app/{key}`, 4006 a `protocol` that is not a number, 4007 a version other than 7 or none
//! (the spec reads a missing version as version 1), 4009 an origin not allowed or a user
//! terminated through the API. Errors that leave the connection open: `pusher:error` 4301 (a
//! client event over the rate limit) and 4009 (a bad sign-in), `pusher:error` without a code
//! (bad frames, refused client events), `pusher:subscription_error` on the channel (bad
//! signature, member limit). The library's own ends keep their codes: 1001 for a silent
//! connection and for a graceful stop (pusher-js reconnects after both), 503 at the upgrade
//! when the server is at `max_connections`.

pub mod apps;
mod channels;
pub mod protocol;
pub mod rest;
pub mod session;
pub mod signature;
pub mod state;
pub mod webhook;

use std::sync::{Arc, Mutex, MutexGuard};

use fanout::{ConnId, Ctx, Message};

use crate::cluster::{Cluster, Happened};
use crate::space::{split_key, Space};
use apps::AppConfig;
use state::State;
use webhook::{WebhookEvent, WebhookSettings, WebhookTarget, Webhooks};

/// What the Pusher side needs from the gateway's settings.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The apps; the first shares the native channel space.
    pub apps: Vec<AppConfig>,
    /// Seconds of silence after which a client should ping (`activity_timeout`).
    pub activity_timeout: u64,
    /// Browser origins allowed to connect (exact `scheme://host[:port]`); empty allows any.
    pub allowed_origins: Vec<String>,
    /// Channels one connection may be subscribed to at once.
    pub max_channels_per_connection: usize,
    /// The Redis engine, in a cluster: publishes and subscriptions go through it.
    pub cluster: Option<Arc<Cluster>>,
}

/// One app as served: its settings and its webhook target.
struct App {
    config: AppConfig,
    webhook: Option<Arc<WebhookTarget>>,
}

/// The Pusher side of the gateway, shared by every worker's handler.
pub struct Pusher {
    apps: Vec<App>,
    state: Mutex<State>,
    space: Arc<Space>,
    webhooks: Option<Webhooks>,
    activity_timeout: u64,
    allowed_origins: Vec<String>,
    max_channels_per_connection: usize,
    cluster: Option<Arc<Cluster>>,
}

impl Pusher {
    /// The Pusher side for `settings` (None without an app), publishing into `space`. Starts the
    /// webhook queue when an app has a webhook.
    pub fn new(settings: Settings, space: Arc<Space>) -> Option<Pusher> {
        if settings.apps.is_empty() {
            return None;
        }
        let apps: Vec<App> = settings
            .apps
            .into_iter()
            .map(|config| App { webhook: config.webhook_target().map(Arc::new), config })
            .collect();
        let webhooks = apps.iter().any(|a| a.webhook.is_some()).then(|| Webhooks::start(WebhookSettings::default()));
        if let (Some(cluster), Some(webhooks)) = (&settings.cluster, &webhooks) {
            // In a cluster, the engine tells which node decided a change: that one sends it.
            let (targets, webhooks) = (apps.iter().map(|a| a.webhook.clone()).collect::<Vec<_>>(), webhooks.clone());
            cluster.on_change(Box::new(move |what| {
                let (key, event) = match &what {
                    Happened::Occupied { key } => (key, None),
                    Happened::Vacated { key } => (key, None),
                    Happened::MemberAdded { key, user } | Happened::MemberRemoved { key, user } => (key, Some(user)),
                };
                let (app, name) = split_key(key);
                let event = match (&what, event) {
                    (Happened::Occupied { .. }, _) => WebhookEvent::channel_occupied(name),
                    (Happened::Vacated { .. }, _) => WebhookEvent::channel_vacated(name),
                    (Happened::MemberAdded { .. }, Some(user)) => WebhookEvent::member_added(name, user),
                    (_, Some(user)) => WebhookEvent::member_removed(name, user),
                    (_, None) => return,
                };
                if let Some(Some(target)) = targets.get(app) {
                    webhooks.send(target, event);
                }
            }));
        }
        Some(Pusher {
            state: Mutex::new(State::new(apps.len())),
            apps,
            space,
            webhooks,
            activity_timeout: settings.activity_timeout,
            allowed_origins: settings.allowed_origins,
            max_channels_per_connection: settings.max_channels_per_connection,
            cluster: settings.cluster,
        })
    }

    /// The presence and user state. Take `Space::lock` first when both are needed.
    fn state(&self) -> MutexGuard<'_, State> {
        // Every method of `State` finishes its update before anything can panic.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn app_by_key(&self, key: &str) -> Option<usize> {
        self.apps.iter().position(|a| a.config.key == key)
    }

    fn app_by_id(&self, id: &str) -> Option<usize> {
        self.apps.iter().position(|a| a.config.id == id)
    }

    /// Queues a webhook of app `app`, if it has a webhook (which filters by its `events`).
    /// Never blocks.
    fn webhook(&self, app: usize, event: WebhookEvent) {
        if let (Some(target), Some(webhooks)) = (&self.apps[app].webhook, &self.webhooks) {
            webhooks.send(target, event);
        }
    }

    /// The webhook queue's figures for `/metrics`: (name, help, type, value).
    pub fn metrics(&self) -> Vec<(&'static str, &'static str, &'static str, u64)> {
        let m = self.webhooks.as_ref().map(Webhooks::metrics).unwrap_or_default();
        vec![
            ("webhook_queued", "Webhook events held: queued, batched or being sent.", "gauge", m.queued as u64),
            ("webhook_sent_total", "Webhook batches the receiver accepted (2xx).", "counter", m.sent_batches),
            ("webhook_failed_total", "Webhook batches given up after their retries.", "counter", m.failed_batches),
            ("webhook_retries_total", "Webhook attempts after a failure.", "counter", m.retries),
            ("webhook_dropped_total", "Webhook events dropped: the queue was full.", "counter", m.dropped),
        ]
    }

    /// Stops the webhook queue: delivers what it holds, within its `stop_timeout`.
    pub fn stop(&self) {
        if let Some(webhooks) = &self.webhooks {
            webhooks.stop();
        }
    }

    /// Closes every connection signed in as `user` of `app`, on every worker: `pusher:error`
    /// 4009, then close 4009. Returns how many.
    fn terminate_user(&self, ctx: &mut Ctx<'_>, app: usize, user: &str) -> usize {
        let conns = self.state().user_connections(app, user);
        let code = protocol::ErrorCode::Unauthorized;
        let message = "the application terminated this user's connections";
        for &id in &conns {
            ctx.send(id, Message::Text(protocol::error(Some(code.code()), message).into()));
            ctx.close(id, code.close_code(), message);
        }
        conns.len()
    }

    /// This node's number in `socket_id`s (0 without a cluster).
    fn node(&self) -> u32 {
        self.cluster.as_ref().map_or(0, |c| c.node())
    }

    /// Sends to one connection.
    fn send(ctx: &mut Ctx<'_>, id: ConnId, text: String) {
        ctx.send(id, Message::Text(text.into()));
    }
}

impl Drop for Pusher {
    /// The last worker's handler is gone (the server stopped): the webhooks still queued go out
    /// before the worker thread ends, so `ServerHandle::join`, and the binary, wait for them
    /// (at most the queue's `stop_timeout`). No event loop runs any more.
    fn drop(&mut self) {
        self.stop();
    }
}
