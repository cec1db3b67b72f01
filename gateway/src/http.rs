//! The gateway's plain HTTP endpoints on the WebSocket port: the demo page, health, metrics,
//! stats, publish, and the Pusher HTTP API's place in the routing.
//!
//! Owns: routing and the JSON answers of `POST /api/publish` (200 `{"seq":N}`; 400, 401, 405,
//! 429 with `{"error":...}`; 413 comes from the library's body limit before routing), and the
//! API key check. Paths under `/apps/` go to the Pusher HTTP API (`Api::pusher_api`), or 404
//! without a Pusher app. Must not: import the application; what it needs from it (channel count,
//! key, anonymous access, publish, the Pusher API and its metrics) comes through the `Api` trait,
//! so there is no import circle. Invariant: a key is compared in constant time and never echoed.

use fanout::{Ctx, Request, Response};
use serde::Deserialize;
use serde_json::json;
use serde_json::value::RawValue;

use crate::cluster::{Cluster, PublishDone};
use crate::history::TooManyChannels;
use crate::native::{auth, protocol};

const DEMO_HTML: &str = include_str!("demo.html");

/// What the endpoints need from the application (implemented by `crate::app::Gateway`).
pub trait Api {
    /// Channels with history or subscribers (the `channels` gauge).
    fn channels(&self) -> usize;
    /// The key `POST /api/publish` and `GET /api/stats` require, if one is configured.
    fn api_key(&self) -> Option<&str>;
    /// Whether clients without a token are allowed (then the API is open without a key).
    fn anonymous_allowed(&self) -> bool;
    /// Assigns the next seq of `channel`, records and publishes `data` (with the event name
    /// Pusher subscribers see, if given); returns the seq.
    fn publish(
        &self,
        ctx: &mut Ctx<'_>,
        channel: &str,
        event: Option<&str>,
        data: &RawValue,
    ) -> Result<u64, TooManyChannels>;
    /// Answers a request under `/apps/` (the Pusher HTTP API); None when no Pusher app is
    /// configured.
    fn pusher_api(&self, ctx: &mut Ctx<'_>, request: &Request<'_>) -> Option<Response>;
    /// Extra `/metrics` lines: (name, help, type, value).
    fn extra_metrics(&self) -> Vec<(&'static str, &'static str, &'static str, u64)>;
    /// The Redis engine, when the gateway runs in a cluster: publishes go through it and are
    /// answered once Redis has numbered them.
    fn cluster(&self) -> Option<&Cluster>;
}

/// Answers one plain HTTP request.
pub fn route(gateway: &impl Api, ctx: &mut Ctx<'_>, request: &Request<'_>) -> Response {
    match (request.method(), request.path()) {
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
        ("GET", "/metrics") => {
            let channels = gateway.channels() as u64;
            let mut lines = vec![("channels", "Channels with history or subscribers.", "gauge", channels)];
            lines.extend(gateway.extra_metrics());
            let body = ctx.prometheus(&lines);
            Response::new(200).header("Content-Type", "text/plain; version=0.0.4").body(body)
        }
        ("GET", "/api/stats") => stats(gateway, ctx, request),
        (_, "/" | "/index.html" | "/healthz" | "/api/publish" | "/metrics" | "/api/stats") => {
            json_response(405, json!({"error": "method not allowed"}))
        }
        _ => json_response(404, json!({"error": "not found"})),
    }
}

/// 200 `{"status":"ok"}`; 503 while draining, or while the Redis link is down (`"redis":"down"`)
/// so that a load balancer sends new clients to another node.
fn health(gateway: &impl Api, ctx: &Ctx<'_>) -> Response {
    let status = if ctx.draining() { "draining" } else { "ok" };
    let mut body = json!({"status": status});
    let mut healthy = !ctx.draining();
    if let Some(cluster) = gateway.cluster() {
        body["redis"] = if cluster.up() { "up" } else { "down" }.into();
        healthy &= cluster.up();
    }
    json_response(if healthy { 200 } else { 503 }, body)
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

#[derive(Deserialize)]
struct PublishBody<'a> {
    channel: String,
    #[serde(default)]
    event: Option<String>,
    #[serde(borrow)]
    data: &'a RawValue,
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
fn stats(gateway: &impl Api, ctx: &mut Ctx<'_>, request: &Request<'_>) -> Response {
    if let Some(refusal) = unauthorized(gateway, request) {
        return refusal;
    }
    let workers: Vec<serde_json::Value> = ctx
        .worker_stats()
        .iter()
        .enumerate()
        .map(|(w, s)| {
            json!({"worker": w, "connections": s.connections, "handshakes": s.handshakes, "queued_bytes": s.queued_bytes})
        })
        .collect();
    // Every topic: a channel's two topics may each be below the cut and their sum above it.
    let top: Vec<serde_json::Value> = top_channels(ctx.top_topics(usize::MAX), 10)
        .into_iter()
        .map(|(channel, n)| json!({"channel": channel, "subscribers": n}))
        .collect();
    json_response(
        200,
        json!({"workers": workers, "top_channels": top, "channels": gateway.channels(), "draining": ctx.draining()}),
    )
}

fn publish(gateway: &impl Api, ctx: &mut Ctx<'_>, request: &Request<'_>) -> Response {
    if let Some(refusal) = unauthorized(gateway, request) {
        return refusal;
    }
    let body = request.body();
    let Ok(text) = std::str::from_utf8(&body) else {
        return bad_request("body must be UTF-8 JSON");
    };
    let body: PublishBody<'_> = match serde_json::from_str(text) {
        Ok(b) => b,
        Err(e) => return bad_request(format_args!("expected {{\"channel\":...,\"data\":...}}: {e}")),
    };
    if let Err(reason) = protocol::validate_channel(&body.channel) {
        return bad_request(reason);
    }
    if let Err(reason) = body.event.as_deref().map_or(Ok(()), protocol::validate_event) {
        return bad_request(reason);
    }
    if let Some(cluster) = gateway.cluster() {
        // Answered once Redis has numbered it (or refused it, at once when Redis is down).
        let pending = ctx.defer();
        let done: PublishDone = Box::new(move |result| {
            pending.respond(match result {
                Ok(seq) => json_response(200, json!({"seq": seq})),
                Err(e) => e.response(),
            })
        });
        cluster.publish_native(&body.channel, body.event.as_deref(), body.data, done);
        return Response::new(202); // not sent: the deferred answer is
    }
    match gateway.publish(ctx, &body.channel, body.event.as_deref(), body.data) {
        Ok(seq) => json_response(200, json!({"seq": seq})),
        Err(_) => json_response(429, json!({"error": "the server tracks too many channels"})),
    }
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
