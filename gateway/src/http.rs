//! The gateway's plain HTTP endpoints: on the WebSocket port the demo page, health, metrics,
//! stats, publish, and the Pusher HTTP API's place in the routing; on the admin listener
//! (`--admin-listen`, `crate::admin`) health, metrics and stats.
//!
//! Owns: routing (`route`, `route_admin`) and the JSON answers of `POST /api/publish`: one
//! `{"channel","data"}` object answered 200 `{"seq":N}`, or an array of them (a batch, at most
//! `Endpoints::batch_max`) answered 200 `{"seqs":[N,...]}` in input order; 400, 401, 405, 413
//! (a batch over its limit, a `data` over `Endpoints::max_data`; a body over the library's
//! limit gets 413 before routing), 429, 503 (Redis) with `{"error":...}`, and a bad item of a
//! batch names its `index`. The API key check and the admin token check. Paths under `/apps/`
//! go to the Pusher HTTP API (`Api::pusher_api`), or 404 without a Pusher app. Must not:
//! import the application; what it needs from it (channel count, keys, anonymous access,
//! publish, the Pusher API and its metrics) comes through the `Api` trait, and the server's
//! figures through `Figures` (the callback's `Ctx`, or the main server's `Remote` on the admin
//! listener), so there is no import circle. Invariants: a key or token is compared in constant
//! time and never echoed; a batch is checked whole before any of it is published (all or
//! nothing); `/metrics` and `/api/stats` answer on one listener only, the admin one when there
//! is one, and with an admin token only to its bearer; `/healthz` is open everywhere (load
//! balancers probe it).

use fanout::metrics::Snapshot;
use fanout::{Ctx, Remote, Request, Response};
use serde::Deserialize;
use serde_json::json;
use serde_json::value::RawValue;

use crate::cluster::{BatchDone, Cluster, PublishDone};
use crate::history::TooManyChannels;
use crate::native::{auth, protocol};

const DEMO_HTML: &str = include_str!("demo.html");

/// How the plain endpoints behave: the gateway settings they need, built once by the
/// application.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoints {
    /// Serve the demo page at `/` (off with `--no-demo`: 404).
    pub demo: bool,
    /// The bearer token `/metrics` and `/api/stats` require wherever they are served.
    pub admin_token: Option<String>,
    /// `/metrics` and `/api/stats` are served on the admin listener: 404 on the main one.
    pub admin_elsewhere: bool,
    /// Most messages in one `POST /api/publish` array.
    pub batch_max: usize,
    /// Largest `data` of one published message (its JSON text), in bytes.
    pub max_data: usize,
}

/// One message of `POST /api/publish`, parsed (`check_item` validates it).
#[derive(Deserialize)]
pub struct Item<'a> {
    pub channel: String,
    #[serde(default)]
    pub event: Option<String>,
    #[serde(borrow)]
    pub data: &'a RawValue,
}

/// What the endpoints need from the application (implemented by `crate::app::Gateway`).
pub trait Api {
    /// Channels with history or subscribers (the `channels` gauge).
    fn channels(&self) -> usize;
    /// The key `POST /api/publish` and `GET /api/stats` require, if one is configured.
    fn api_key(&self) -> Option<&str>;
    /// Whether clients without a token are allowed (then the API is open without a key).
    fn anonymous_allowed(&self) -> bool;
    /// The endpoints' settings.
    fn endpoints(&self) -> &Endpoints;
    /// Assigns the next seq of each item's channel, records and publishes its `data` (with the
    /// event name Pusher subscribers see, if given), in order; returns the seqs. All or
    /// nothing: refused before any is published when their channels cannot all be tracked.
    fn publish(&self, ctx: &mut Ctx<'_>, items: &[Item<'_>]) -> Result<Vec<u64>, TooManyChannels>;
    /// Answers a request under `/apps/` (the Pusher HTTP API); None when no Pusher app is
    /// configured.
    fn pusher_api(&self, ctx: &mut Ctx<'_>, request: &Request<'_>) -> Option<Response>;
    /// Extra `/metrics` lines: (name, help, type, value).
    fn extra_metrics(&self) -> Vec<(&'static str, &'static str, &'static str, u64)>;
    /// The Redis engine, when the gateway runs in a cluster: publishes go through it and are
    /// answered once Redis has numbered them.
    fn cluster(&self) -> Option<&Cluster>;
}

/// The main server's figures, as the endpoints read them: through the callback's `Ctx` on the
/// WebSocket port, through the main server's `Remote` on the admin listener.
pub trait Figures {
    fn prometheus(&self, extra: &[(&str, &str, &str, u64)]) -> String;
    fn worker_stats(&self) -> Vec<Snapshot>;
    fn top_topics(&self, n: usize) -> Vec<(String, u64)>;
    fn draining(&self) -> bool;
}

impl Figures for Ctx<'_> {
    fn prometheus(&self, extra: &[(&str, &str, &str, u64)]) -> String {
        Ctx::prometheus(self, extra)
    }
    fn worker_stats(&self) -> Vec<Snapshot> {
        Ctx::worker_stats(self)
    }
    fn top_topics(&self, n: usize) -> Vec<(String, u64)> {
        Ctx::top_topics(self, n)
    }
    fn draining(&self) -> bool {
        Ctx::draining(self)
    }
}

impl Figures for Remote {
    fn prometheus(&self, extra: &[(&str, &str, &str, u64)]) -> String {
        Remote::prometheus(self, extra)
    }
    fn worker_stats(&self) -> Vec<Snapshot> {
        Remote::worker_stats(self)
    }
    fn top_topics(&self, n: usize) -> Vec<(String, u64)> {
        Remote::top_topics(self, n)
    }
    fn draining(&self) -> bool {
        Remote::draining(self)
    }
}

/// Answers one plain HTTP request on the WebSocket port.
pub fn route(gateway: &impl Api, ctx: &mut Ctx<'_>, request: &Request<'_>) -> Response {
    let endpoints = gateway.endpoints();
    match (request.method(), request.path()) {
        (_, "/" | "/index.html") if !endpoints.demo => not_found(),
        ("GET" | "HEAD", "/" | "/index.html") => Response::new(200)
            .header("Content-Type", "text/html; charset=utf-8")
            .header("Cache-Control", "no-cache")
            .body(DEMO_HTML),
        ("GET" | "HEAD", "/healthz") => health(gateway, ctx),
        ("POST", "/api/publish") => publish(gateway, ctx, request),
        (_, path) if path.starts_with("/apps/") => match gateway.pusher_api(ctx, request) {
            Some(response) => response,
            None => json_response(404, json!({"error": "not found: no Pusher app is configured"})),
        },
        (_, "/metrics" | "/api/stats") if endpoints.admin_elsewhere => not_found(),
        ("GET", "/metrics") => metrics(gateway, ctx, request, false),
        ("GET", "/api/stats") => stats(gateway, ctx, request, false),
        (_, "/" | "/index.html" | "/healthz" | "/api/publish" | "/metrics" | "/api/stats") => method_not_allowed(),
        _ => not_found(),
    }
}

/// Answers one request on the admin listener: `/metrics`, `/api/stats` and `/healthz` of the
/// main server, whose figures `main` reads.
pub fn route_admin(gateway: &impl Api, main: &impl Figures, request: &Request<'_>) -> Response {
    match (request.method(), request.path()) {
        ("GET" | "HEAD", "/healthz") => health(gateway, main),
        ("GET", "/metrics") => metrics(gateway, main, request, true),
        ("GET", "/api/stats") => stats(gateway, main, request, true),
        (_, "/healthz" | "/metrics" | "/api/stats") => method_not_allowed(),
        _ => json_response(
            404,
            json!({"error": "not found: the admin listener serves /metrics, /api/stats and /healthz"}),
        ),
    }
}

fn not_found() -> Response {
    json_response(404, json!({"error": "not found"}))
}

fn method_not_allowed() -> Response {
    json_response(405, json!({"error": "method not allowed"}))
}

/// 200 `{"status":"ok"}`; 503 while draining, or while the Redis link is down (`"redis":"down"`)
/// so that a load balancer sends new clients to another node.
fn health(gateway: &impl Api, figures: &impl Figures) -> Response {
    let draining = figures.draining();
    let mut body = json!({"status": if draining { "draining" } else { "ok" }});
    let mut healthy = !draining;
    if let Some(cluster) = gateway.cluster() {
        body["redis"] = if cluster.up() { "up" } else { "down" }.into();
        healthy &= cluster.up();
    }
    json_response(if healthy { 200 } else { 503 }, body)
}

/// The Prometheus text of the main server and the application.
fn metrics(gateway: &impl Api, figures: &impl Figures, request: &Request<'_>, on_admin: bool) -> Response {
    if let Some(refusal) = refuse_reader(gateway, request, on_admin, false) {
        return refusal;
    }
    let channels = gateway.channels() as u64;
    let mut lines = vec![("channels", "Channels with history or subscribers.", "gauge", channels)];
    lines.extend(gateway.extra_metrics());
    let body = figures.prometheus(&lines);
    Response::new(200).header("Content-Type", "text/plain; version=0.0.4").body(body)
}

/// Who may read `/metrics` (`stats` false) or `/api/stats`. With an admin token, its bearers
/// only, on either listener. Without one: anyone who reaches the admin listener (its address
/// is the protection); on the main listener `/metrics` is open and `/api/stats` takes the API
/// key, as they did before the admin listener existed.
fn refuse_reader(gateway: &impl Api, request: &Request<'_>, on_admin: bool, stats: bool) -> Option<Response> {
    match gateway.endpoints().admin_token.as_deref() {
        Some(token) => {
            let given = auth::bearer(request);
            if given.is_some_and(|given| constant_time_eq(given.as_bytes(), token.as_bytes())) {
                return None;
            }
            let reason = if given.is_some() {
                "invalid admin token"
            } else {
                "missing admin token: send Authorization: Bearer <admin token>"
            };
            Some(json_response(401, json!({"error": reason})).header("WWW-Authenticate", "Bearer"))
        }
        None if on_admin || !stats => None,
        None => unauthorized(gateway, request),
    }
}

/// Whether an upgrade's `Origin` is allowed by `allowed` (exact `scheme://host[:port]`
/// entries): always when the list is empty or the request names no origin (not a browser). The
/// one check both protocols' upgrades make.
pub fn origin_allowed(allowed: &[String], request: &Request<'_>) -> bool {
    allowed.is_empty() || request.header_str("origin").is_none_or(|origin| allowed.iter().any(|o| o == origin))
}

fn json_response(status: u16, body: serde_json::Value) -> Response {
    Response::new(status).header("Content-Type", "application/json").body(body.to_string())
}

fn bad_request(reason: impl std::fmt::Display) -> Response {
    json_response(400, json!({"error": reason.to_string()}))
}

/// The API key check of `/api/publish` and `/api/stats`: the key when one is configured,
/// otherwise open exactly when anonymous clients are.
fn unauthorized(gateway: &impl Api, request: &Request<'_>) -> Option<Response> {
    let authorized = match gateway.api_key() {
        Some(key) => auth::bearer(request).is_some_and(|given| constant_time_eq(given.as_bytes(), key.as_bytes())),
        None => gateway.anonymous_allowed(),
    };
    if authorized {
        return None;
    }
    let reason = if gateway.api_key().is_some() { "invalid API key" } else { "no API key configured" };
    Some(json_response(401, json!({"error": reason})).header("WWW-Authenticate", "Bearer"))
}

/// Per-worker connection counts and the ten channels with the most subscribers.
fn stats(gateway: &impl Api, figures: &impl Figures, request: &Request<'_>, on_admin: bool) -> Response {
    if let Some(refusal) = refuse_reader(gateway, request, on_admin, true) {
        return refusal;
    }
    let workers: Vec<serde_json::Value> = figures
        .worker_stats()
        .iter()
        .enumerate()
        .map(|(w, s)| {
            json!({"worker": w, "connections": s.connections, "handshakes": s.handshakes, "queued_bytes": s.queued_bytes})
        })
        .collect();
    // Every topic: a channel's two topics may each be below the cut and their sum above it.
    let top: Vec<serde_json::Value> = top_channels(figures.top_topics(usize::MAX), 10)
        .into_iter()
        .map(|(channel, n)| json!({"channel": channel, "subscribers": n}))
        .collect();
    json_response(
        200,
        json!({"workers": workers, "top_channels": top, "channels": gateway.channels(), "draining": figures.draining()}),
    )
}

/// `POST /api/publish`: one message or a batch, every message checked before any is published.
fn publish(gateway: &impl Api, ctx: &mut Ctx<'_>, request: &Request<'_>) -> Response {
    if let Some(refusal) = unauthorized(gateway, request) {
        return refusal;
    }
    let body = request.body();
    let Ok(text) = std::str::from_utf8(&body) else {
        return bad_request("body must be UTF-8 JSON");
    };
    let (items, batch) = match parse_publish(text, gateway.endpoints()) {
        Ok(parsed) => parsed,
        Err(refusal) => return refusal,
    };
    let answer = move |seqs: &[u64]| {
        json_response(200, if batch { json!({"seqs": seqs}) } else { json!({"seq": seqs.first()}) })
    };
    if items.is_empty() {
        return answer(&[]);
    }
    if let Some(cluster) = gateway.cluster() {
        // Answered once Redis has numbered them (or refused them, at once when Redis is down).
        let pending = ctx.defer();
        if let [item] = &items[..] {
            let done: PublishDone = Box::new(move |result| {
                pending.respond(match result {
                    Ok(seq) => answer(&[seq]),
                    Err(e) => e.response(),
                })
            });
            cluster.publish_native(&item.channel, item.event.as_deref(), item.data, done);
        } else {
            let done: BatchDone = Box::new(move |result| {
                pending.respond(match result {
                    Ok(seqs) => answer(&seqs),
                    Err(e) => e.response(),
                })
            });
            let batch: Vec<_> = items.iter().map(|i| (i.channel.as_str(), i.event.as_deref(), i.data)).collect();
            cluster.publish_batch(&batch, done);
        }
        return Response::new(202); // not sent: the deferred answer is
    }
    match gateway.publish(ctx, &items) {
        Ok(seqs) => answer(&seqs),
        Err(_) => json_response(429, json!({"error": "the server tracks too many channels"})),
    }
}

/// The messages of a publish body and whether it was an array; a refusal names what is wrong
/// (in a batch, the index of the first bad item).
fn parse_publish<'a>(text: &'a str, endpoints: &Endpoints) -> Result<(Vec<Item<'a>>, bool), Response> {
    if !text.trim_start().starts_with('[') {
        let item =
            check_item(text, endpoints).map_err(|(status, reason)| json_response(status, json!({"error": reason})))?;
        return Ok((vec![item], false));
    }
    let raw: Vec<&RawValue> = serde_json::from_str(text)
        .map_err(|e| bad_request(format_args!("expected an array of {{\"channel\":...,\"data\":...}}: {e}")))?;
    if raw.len() > endpoints.batch_max {
        let reason = format!("a batch holds at most {} messages; this one has {}", endpoints.batch_max, raw.len());
        return Err(json_response(413, json!({"error": reason})));
    }
    let items = raw.iter().enumerate().map(|(index, item)| {
        check_item(item.get(), endpoints).map_err(|(status, reason)| {
            json_response(status, json!({"error": format!("item {index}: {reason}"), "index": index}))
        })
    });
    Ok((items.collect::<Result<_, _>>()?, true))
}

/// One message parsed and checked: its shape, channel, event name and size.
fn check_item<'a>(text: &'a str, endpoints: &Endpoints) -> Result<Item<'a>, (u16, String)> {
    let item: Item<'a> =
        serde_json::from_str(text).map_err(|e| (400, format!("expected {{\"channel\":...,\"data\":...}}: {e}")))?;
    protocol::validate_channel(&item.channel).map_err(|reason| (400, reason))?;
    if let Some(event) = &item.event {
        protocol::validate_event(event).map_err(|reason| (400, reason))?;
    }
    let size = item.data.get().len();
    if size > endpoints.max_data {
        return Err((413, format!("data is {size} bytes, over the limit of {}", endpoints.max_data)));
    }
    Ok(item)
}

/// The `n` channels with the most subscribers, most first, from the library's topics: a
/// channel's Pusher topic (`#p:C`) counts for `C` beside its native one, and internal topics
/// (other apps' `#<app>:...`, users' `#server-to-user-...`, anything else `#`-prefixed) are not
/// listed, so the answer names first-app and native channels only.
fn top_channels(topics: Vec<(String, u64)>, n: usize) -> Vec<(String, u64)> {
    let mut channels: std::collections::HashMap<String, u64> = std::collections::HashMap::new();
    for (topic, subscribers) in topics {
        let channel = topic.strip_prefix("#p:").unwrap_or(&topic);
        if !channel.starts_with('#') {
            *channels.entry(channel.to_owned()).or_default() += subscribers;
        }
    }
    let mut top: Vec<(String, u64)> = channels.into_iter().collect();
    top.sort_unstable_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    top.truncate(n);
    top
}

/// Compares secrets without an early exit, so timing does not reveal a matching prefix.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::{constant_time_eq, top_channels};

    #[test]
    fn top_channels_name_channels_not_topics() {
        let topics =
            [("#p:news", 3), ("news", 2), ("#p:#server-to-user-42", 9), ("#p:#1:news", 8), ("chat", 4), ("#p:a", 1)];
        let topics = topics.iter().map(|&(t, n)| (t.to_owned(), n)).collect();
        let top = top_channels(topics, 2);
        assert_eq!(top, [("news".to_owned(), 5), ("chat".to_owned(), 4)]);
    }

    #[test]
    fn constant_time_eq_compares_whole_values() {
        assert!(constant_time_eq(b"key", b"key"));
        assert!(!constant_time_eq(b"key", b"kez"));
        assert!(!constant_time_eq(b"key", b"key2"));
    }
}
