//! Joining and leaving Pusher channels: authorization, presence membership, the cache replay,
//! and the webhooks of a channel's first and last subscriber and of a user's first and last
//! connection on a presence channel.
//!
//! Owns: `Pusher::subscribe`, `unsubscribe` and `leave`. Invariants: the history lock is taken
//! before the state lock, and both are held while the subscription takes effect, so a cache
//! replay (queued on the connection before it joins the topic) is never followed by a publish it
//! already holds, nor preceded by a gap; a presence user gets `member_added` sent to the others
//! on its first connection only and `member_removed` after its last, and the joining connection
//! gets the member list (itself included), never a `member_added` about itself; a refused
//! subscription changes no count; a channel's webhooks are queued under the history lock, so
//! they leave in the order their decisions were made (no `channel_occupied` before the
//! `channel_vacated` that preceded it).

use std::time::Instant;

use fanout::{ConnId, Ctx, Message};
use serde_json::value::RawValue;

use super::protocol::{self, Kind, SubscribeData};
use super::session::{PusherSession, Subscription};
use super::webhook::WebhookEvent;
use super::{signature, Pusher};
use crate::cluster::{Cluster, JoinDone, Member, Side};
use crate::space::{app_key, is_cache_channel, pusher_topic};

impl Pusher {
    /// `pusher:subscribe`.
    pub(super) fn subscribe(
        &self,
        ctx: &mut Ctx<'_>,
        id: ConnId,
        s: &mut PusherSession,
        app: usize,
        data: Option<&RawValue>,
    ) {
        let d: SubscribeData = match protocol::data_object(data) {
            Ok(d) => d,
            Err(e) => return Self::send(ctx, id, protocol::error(None, &format!("pusher:subscribe: {e}"))),
        };
        let name = d.channel.as_str();
        let kind = Kind::of(name);
        if kind == Kind::User {
            return self.subscribe_own_user_channel(ctx, id, s, name);
        }
        let refuse = |ctx: &mut Ctx<'_>, kind: &str, message: &str, status: u16| {
            Self::send(ctx, id, protocol::subscription_error(name, kind, message, status))
        };
        if let Err(e) = protocol::validate_channel(name) {
            return refuse(ctx, "InvalidChannel", &e, 400);
        }
        let config = &self.apps[app].config;
        let mut member = None;
        if kind.needs_auth() {
            let channel_data = d.channel_data.as_deref().filter(|_| kind == Kind::Presence);
            if kind == Kind::Presence && channel_data.is_none() {
                return refuse(ctx, "AuthError", "a presence subscription needs channel_data", 400);
            }
            let auth = d.auth.as_deref().unwrap_or_default();
            if !signature::channel_auth_ok(&config.key, &config.secret, s.socket_id(), name, channel_data, auth) {
                let message = format!(
                    "invalid signature: expected the HMAC SHA256 of the app secret over {}:{name}{}",
                    s.socket_id(),
                    if channel_data.is_some() { ":<channel_data>" } else { "" }
                );
                return refuse(ctx, "AuthError", &message, 401);
            }
            if let Some(channel_data) = channel_data {
                match protocol::parse_channel_data(channel_data) {
                    Ok(m) => member = Some(m),
                    Err(e) => return refuse(ctx, "AuthError", &e, 400),
                }
            }
        }
        if let (Some(cluster), Some(sub)) = (&self.cluster, s.channels.iter().find(|c| &*c.name == name)) {
            // Joins are idempotent; the first may have been refused (Redis went away).
            let member = member.map(|m| Member { user: m.user_id, info: m.user_info });
            return self.join_cluster(cluster, id, app, name, &sub.key.clone(), member);
        }
        if s.channels.iter().any(|c| &*c.name == name) {
            // Already on it: confirm again without counting twice.
            let key = app_key(app, name);
            let reply = match kind {
                Kind::Presence => protocol::presence_succeeded(name, self.state().members(&key)),
                _ => protocol::subscription_succeeded(name),
            };
            return Self::send(ctx, id, reply);
        }
        if s.channels.len() >= self.max_channels_per_connection {
            let message = format!("this connection is on {} channels, the most it may be on", s.channels.len());
            return refuse(ctx, "LimitReached", &message, 403);
        }

        let key = app_key(app, name).into_owned();
        if let Some(cluster) = &self.cluster {
            let member = member.map(|m| Member { user: m.user_id, info: m.user_info });
            self.join_cluster(cluster, id, app, name, &key, member.clone());
            let member = member.map(|m| m.user.into());
            s.channels.push(Subscription { name: name.into(), key: key.into(), member });
            return;
        }
        let topic = pusher_topic(&key);
        let cache = is_cache_channel(name);
        let now = Instant::now();
        let mut channels = self.space.lock();
        let Ok(joined) = channels.join(&key, cache, now) else {
            return refuse(ctx, "LimitReached", "the server tracks too many channels", 503);
        };
        let mut new_member = false;
        if let Some(m) = &member {
            let mut state = self.state();
            match state.join(&key, &m.user_id, &m.user_info, config.max_presence_members) {
                Ok(first) => new_member = first,
                Err(_) => {
                    drop(state);
                    channels.leave(&key, now);
                    let message = format!("presence channel is full ({} members)", config.max_presence_members);
                    return refuse(ctx, "LimitReached", &message, 403);
                }
            }
            if new_member {
                // A plain publish: this connection is not on the topic yet (its subscribe is
                // queued after, and the library delivers a topic's pending frames before a new
                // member joins), and `publish_except` would bypass the per-turn batch.
                let added = protocol::member_added(name, &m.user_id, &m.user_info);
                ctx.publish(&topic, Message::Text(added.into()));
            }
            Self::send(ctx, id, protocol::presence_succeeded(name, state.members(&key)));
        } else {
            Self::send(ctx, id, protocol::subscription_succeeded(name));
        }
        let cache_miss = cache && joined.last.is_none();
        if let Some(last) = joined.last.filter(|_| cache) {
            ctx.send(id, Message::Text(last.pusher_frame()));
        } else if cache_miss {
            Self::send(ctx, id, protocol::cache_miss(name));
        }
        // After the replay, under the lock: every later publish reaches this connection live.
        ctx.subscribe(id, &topic);
        // The webhooks are queued under the lock too (a channel send, cheap): the decisions were
        // made under it, so another worker's `channel_vacated` cannot be queued after this
        // `channel_occupied` when it was decided before.
        if joined.first {
            self.webhook(app, WebhookEvent::channel_occupied(name));
        }
        if cache_miss {
            self.webhook(app, WebhookEvent::cache_miss(name));
        }
        if let Some(m) = member.as_ref().filter(|_| new_member) {
            self.webhook(app, WebhookEvent::member_added(name, &m.user_id));
        }
        drop(channels);
        s.channels.push(Subscription { name: name.into(), key: key.into(), member: member.map(|m| m.user_id.into()) });
    }

    /// A subscription through the Redis engine: counted over the cluster, then confirmed (with
    /// the members of a presence channel, or a cache channel's last event) once this node
    /// receives the channel from Redis.
    fn join_cluster(
        &self,
        cluster: &Cluster,
        id: ConnId,
        app: usize,
        channel: &str,
        key: &str,
        member: Option<Member>,
    ) {
        let (name, cache, presence) = (channel.to_owned(), is_cache_channel(channel), member.is_some());
        let max_members = self.apps[app].config.max_presence_members;
        let cache_miss_hook = self.webhooks.clone().zip(self.apps[app].webhook.clone());
        let done: JoinDone = Box::new(move |remote, result| match result {
            Ok(joined) if joined.full => {
                let message = format!("presence channel is full ({max_members} members)");
                remote.send_text(id, &protocol::subscription_error(&name, "LimitReached", &message, 403));
                false
            }
            Ok(joined) => {
                let reply = if presence {
                    protocol::presence_succeeded(
                        &name,
                        joined.members.iter().map(|m| (m.user.as_str(), m.info.as_str())),
                    )
                } else {
                    protocol::subscription_succeeded(&name)
                };
                remote.send_text(id, &reply);
                match joined.replay.last().filter(|_| cache) {
                    Some(last) => remote.send(id, Message::Text(last.pusher_frame())),
                    None if cache => {
                        remote.send_text(id, &protocol::cache_miss(&name));
                        if let Some((webhooks, target)) = &cache_miss_hook {
                            webhooks.send(target, WebhookEvent::cache_miss(&name));
                        }
                    }
                    None => {}
                }
                true
            }
            Err(e) => {
                remote.send_text(id, &protocol::subscription_error(&name, "Unavailable", &e.0, 503));
                false
            }
        });
        cluster.join(id, key, channel, Side::Pusher { member, max_members }, done);
    }

    /// `pusher:unsubscribe`: leaves the channel (no reply, as in Pusher); unknown channels are
    /// ignored.
    pub(super) fn unsubscribe(
        &self,
        ctx: &mut Ctx<'_>,
        id: ConnId,
        s: &mut PusherSession,
        app: usize,
        data: Option<&RawValue>,
    ) {
        let d: protocol::UnsubscribeData = match protocol::data_object(data) {
            Ok(d) => d,
            Err(e) => return Self::send(ctx, id, protocol::error(None, &format!("pusher:unsubscribe: {e}"))),
        };
        if let Some(pos) = s.channels.iter().position(|c| *c.name == *d.channel) {
            let sub = s.channels.swap_remove(pos);
            if self.cluster.is_none() {
                ctx.unsubscribe(id, &pusher_topic(&sub.key));
            }
            self.leave(ctx, id, app, &sub);
        }
    }

    /// Uncounts a subscription (unsubscribed, or its connection gone): `member_removed` to the
    /// others after the user's last connection, and the webhooks.
    pub(super) fn leave(&self, ctx: &mut Ctx<'_>, id: ConnId, app: usize, sub: &Subscription) {
        if let Some(cluster) = &self.cluster {
            return cluster.leave(id, &sub.key, true, sub.member.as_deref());
        }
        let mut channels = self.space.lock();
        let vacated = channels.leave(&sub.key, Instant::now());
        let removed = sub.member.as_deref().filter(|user| self.state().leave(&sub.key, user));
        if let Some(user) = removed {
            let frame = protocol::member_removed(&sub.name, user);
            // A plain publish: the leaving connection is off the topic already (unsubscribed
            // before this, queued in order on its worker, or closed).
            ctx.publish(&pusher_topic(&sub.key), Message::Text(frame.into()));
        }
        // Queued under the lock, in the order decided under it (see `subscribe`).
        if let Some(user) = removed {
            self.webhook(app, WebhookEvent::member_removed(&sub.name, user));
        }
        if vacated {
            self.webhook(app, WebhookEvent::channel_vacated(&sub.name));
        }
        drop(channels);
    }
}
