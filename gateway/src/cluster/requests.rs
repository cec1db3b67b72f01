//! The workers' requests as the engine takes them (publish, join, leave, query), and the
//! publishes of Laravel's broadcasts from the ingest.
//!
//! Owns the `impl Engine` methods of that duty. Invariants: every request is answered, by its
//! callback, exactly once (refused at once while the link is down); the `waiting` count goes
//! back down for each; an ingested message is published only while this node holds the lease.

use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use super::engine::{Channel, Engine, Linked, Waiting, MALFORMED_LOG_EVERY, TIMEOUT};
use super::types::{BatchDone, PublishDone, Query, QueryDone, Request, Side, Unavailable};
use super::{ingest, script, wire};
use crate::space::{is_cache_channel, pusher_topic};

impl Engine {
    pub(super) fn handle(self: &Rc<Self>, request: Request, link: Option<&Linked>) {
        match request {
            Request::Publish { key, body, keep_last, done } => match link {
                Some(link) => self.publish(key, body, keep_last, done, link),
                None => {
                    self.link.waiting.fetch_sub(1, Ordering::AcqRel);
                    done(Err(Unavailable("redis is unreachable".into())));
                }
            },
            Request::PublishBatch { items, done } => match link {
                Some(link) => self.publish_batch(items, done, link),
                None => {
                    self.link.waiting.fetch_sub(1, Ordering::AcqRel);
                    done(Err(Unavailable("redis is unreachable".into())));
                }
            },
            Request::Join { conn, key, name, side, done } => {
                if link.is_none() {
                    self.link.waiting.fetch_sub(1, Ordering::AcqRel);
                    (done)(&self.remote, Err(Unavailable("redis is unreachable".into())));
                    return;
                }
                let mut channels = self.channels.borrow_mut();
                let channel = channels.entry(key.clone()).or_insert_with(|| {
                    self.to_subscribe.borrow_mut().push(key.clone());
                    self.to_unsubscribe.borrow_mut().retain(|k| *k != key);
                    Channel::new(&name)
                });
                let waiting = Waiting { conn, side, done };
                if let (true, Some(link)) = (channel.active, link) {
                    self.complete(&key, channel, waiting, link);
                } else {
                    channel.waiting.push(waiting);
                }
                self.link.channels.store(channels.len() as u64, Ordering::Relaxed);
            }
            Request::Query { query, done } => match link {
                Some(link) => self.query(query, done, link),
                None => {
                    self.link.waiting.fetch_sub(1, Ordering::AcqRel);
                    done(Err(Unavailable("redis is unreachable".into())));
                }
            },
            Request::Leave { conn, key, pusher, member } => {
                let mut channels = self.channels.borrow_mut();
                let Some(channel) = channels.get_mut(&key) else {
                    return;
                };
                // A join whose Redis step is out (a Pusher join being counted, a resume's epoch
                // check) is marked off: when its answer comes back, the count is undone or the
                // resume dropped.
                if pusher {
                    channel.joining.remove(&conn);
                } else {
                    channel.resuming.remove(&conn);
                }
                let pending = channel
                    .waiting
                    .iter()
                    .position(|w| w.conn == conn && matches!(w.side, Side::Pusher { .. }) == pusher);
                if let Some(at) = pending {
                    channel.waiting.remove(at);
                    self.link.waiting.fetch_sub(1, Ordering::AcqRel);
                } else {
                    let removed =
                        if pusher { channel.pusher.remove(&conn).is_some() } else { channel.native.remove(&conn) };
                    if removed {
                        let topic = if pusher { pusher_topic(&key) } else { key.to_string() };
                        self.remote.unsubscribe(conn, &topic);
                        match (pusher, link) {
                            (true, Some(link)) => self.uncount(link, &key, &channel.name, member.as_deref()),
                            // Undone in Redis once the link is back.
                            (true, None) => self.to_uncount.borrow_mut().push((
                                key.to_string(),
                                channel.name.to_string(),
                                member.map(Into::into),
                            )),
                            _ => {}
                        }
                    }
                }
                if channel.unused() {
                    if link.is_some() {
                        self.to_unsubscribe.borrow_mut().push(key.clone());
                    }
                    self.to_subscribe.borrow_mut().retain(|k| *k != key);
                    channels.remove(&key);
                }
                self.link.channels.store(channels.len() as u64, Ordering::Relaxed);
            }
        }
    }

    pub(super) fn query(self: &Rc<Self>, query: Query, done: QueryDone, link: &Linked) {
        let engine = self.clone();
        let mut con = link.con.clone();
        tokio::task::spawn_local(async move {
            let n = &engine.names;
            let answer = tokio::time::timeout(TIMEOUT, async {
                match &query {
                    Query::Channel(key) => {
                        let (subs, members): (Vec<u64>, u64) = redis::pipe()
                            .cmd("HVALS")
                            .arg(n.subscriptions(key))
                            .cmd("HLEN")
                            .arg(n.members(key))
                            .query_async(&mut con)
                            .await?;
                        Ok(vec![(key.clone(), subs.iter().sum(), members)])
                    }
                    Query::Users(key) => {
                        let users: Vec<String> = redis::cmd("HKEYS").arg(n.members(key)).query_async(&mut con).await?;
                        Ok(users.into_iter().map(|u| (u, 0, 0)).collect())
                    }
                    Query::Occupied(prefix) => {
                        let mut call = script::CHANNELS.prepare_invoke();
                        let (subs, members) = (n.subscriptions(""), n.members(""));
                        call.arg(format!("{subs}{prefix}*")).arg(&subs).arg(&members);
                        call.invoke_async::<Vec<(String, u64, u64)>>(&mut con).await
                    }
                }
            })
            .await;
            engine.link.waiting.fetch_sub(1, Ordering::AcqRel);
            done(match answer {
                Ok(Ok(rows)) => Ok(rows),
                Ok(Err(e)) => Err(Unavailable(format!("redis: {e}"))),
                Err(_) => Err(Unavailable("redis: no answer".into())),
            });
        });
    }

    pub(super) fn publish(
        self: &Rc<Self>,
        key: Box<str>,
        body: String,
        keep_last: bool,
        done: PublishDone,
        link: &Linked,
    ) {
        let size = if keep_last { self.settings.history_size.max(1) } else { self.settings.history_size };
        let mut con = link.con.clone();
        let lost = link.lost.clone();
        let (meta, history, channel, epoch) =
            (self.names.meta(&key), self.names.history(&key), self.names.channel(&key), self.new_epoch());
        let ttl = self.settings.history_ttl.as_millis() as u64;
        let engine = self.clone();
        tokio::task::spawn_local(async move {
            let started = Instant::now();
            engine.link.in_flight.fetch_add(1, Ordering::Relaxed);
            let mut call = script::PUBLISH.prepare_invoke();
            call.key(meta).key(history).arg(channel).arg(body).arg(size).arg(ttl).arg(epoch);
            let result = call.invoke_async::<(u64, String)>(&mut con).await;
            engine.link.in_flight.fetch_sub(1, Ordering::Relaxed);
            engine.link.waiting.fetch_sub(1, Ordering::AcqRel);
            match result {
                Ok((seq, _)) => {
                    engine.link.publishes.fetch_add(1, Ordering::Relaxed);
                    engine.link.publish_us.fetch_add(started.elapsed().as_micros() as u64, Ordering::Relaxed);
                    done(Ok(seq));
                }
                Err(e) => {
                    done(Err(Unavailable(format!("redis: {e}"))));
                    if e.is_io_error() || e.is_timeout() || e.is_connection_dropped() || e.is_unrecoverable_error() {
                        let _ = lost.send(format!("publish: {e}"));
                    }
                }
            }
        });
    }

    /// A batch of publishes as one `MULTI`/`EXEC` of the publish script, sent in one write: one
    /// round trip, and Redis runs the whole transaction or none of it, so a batch is never half
    /// published by Redis (a link lost after Redis took the `EXEC` but before its answer
    /// arrived is the one case that answers 503 for a published batch). Publishes to one
    /// channel get consecutive seqs in the batch's order, and no other node's publish falls
    /// between two of the batch's. A script cache emptied by a Redis restart (`NOSCRIPT`, for
    /// every item alike) loads the script and runs the batch again.
    pub(super) fn publish_batch(self: &Rc<Self>, items: Vec<(Box<str>, String, bool)>, done: BatchDone, link: &Linked) {
        let mut pipe = redis::pipe();
        pipe.atomic();
        let ttl = self.settings.history_ttl.as_millis() as u64;
        for (key, body, keep_last) in &items {
            let size = if *keep_last { self.settings.history_size.max(1) } else { self.settings.history_size };
            pipe.cmd("EVALSHA")
                .arg(script::PUBLISH.get_hash())
                .arg(2)
                .arg(self.names.meta(key))
                .arg(self.names.history(key))
                .arg(self.names.channel(key))
                .arg(body)
                .arg(size)
                .arg(ttl)
                .arg(self.new_epoch());
        }
        let mut con = link.con.clone();
        let lost = link.lost.clone();
        let engine = self.clone();
        let n = items.len() as u64;
        tokio::task::spawn_local(async move {
            let started = Instant::now();
            engine.link.in_flight.fetch_add(n, Ordering::Relaxed);
            let mut result = pipe.query_async::<Vec<(u64, String)>>(&mut con).await;
            if result.as_ref().is_err_and(|e| e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript)) {
                result = match script::PUBLISH.prepare_invoke().load_async(&mut con).await {
                    Ok(_) => pipe.query_async(&mut con).await,
                    Err(e) => Err(e),
                };
            }
            engine.link.in_flight.fetch_sub(n, Ordering::Relaxed);
            engine.link.waiting.fetch_sub(1, Ordering::AcqRel);
            match result {
                Ok(answers) => {
                    engine.link.publishes.fetch_add(n, Ordering::Relaxed);
                    let us = started.elapsed().as_micros() as u64;
                    engine.link.publish_us.fetch_add(us * n, Ordering::Relaxed);
                    done(Ok(answers.into_iter().map(|(seq, _)| seq).collect()));
                }
                Err(e) => {
                    done(Err(Unavailable(format!("redis: {e}"))));
                    if e.is_io_error() || e.is_timeout() || e.is_connection_dropped() || e.is_unrecoverable_error() {
                        let _ = lost.send(format!("publish batch: {e}"));
                    }
                }
            }
        });
    }

    /// A Laravel broadcast on an ingested pattern: published once, by the lease holder.
    pub(super) fn ingest(self: &Rc<Self>, message: &redis::Msg, link: &Linked) {
        if !self.link.lease.load(Ordering::Relaxed) {
            return;
        }
        let strip = self.settings.ingest_strip.as_deref();
        let broadcast = match ingest::parse(
            message.get_channel_name().as_bytes(),
            message.get_payload_bytes(),
            strip,
            self.settings.max_message,
        ) {
            Ok(b) => b,
            Err(why) => {
                self.link.malformed.fetch_add(1, Ordering::Relaxed);
                let due = self.last_malformed_log.get().is_none_or(|at| at.elapsed() >= MALFORMED_LOG_EVERY);
                if due {
                    self.last_malformed_log.set(Some(Instant::now()));
                    log::warn!("redis ingest: refused a message on {}: {why} (counted in /metrics; logged at most every {MALFORMED_LOG_EVERY:?})", message.get_channel_name());
                }
                return;
            }
        };
        if self.link.in_flight.load(Ordering::Relaxed) as usize >= self.settings.queue {
            self.link.refused.fetch_add(1, Ordering::Relaxed);
            return log::warn!(
                "redis ingest: {} commands in flight; a broadcast on {} was dropped",
                self.settings.queue,
                broadcast.channel
            );
        }
        let body = wire::Body {
            channel: broadcast.channel.as_str().into(),
            event: Some(broadcast.event.as_str().into()),
            data: &broadcast.data,
            pusher: None,
            user_id: None,
            except: broadcast.socket.as_deref().map(Into::into),
        };
        let keep_last = is_cache_channel(&broadcast.channel);
        let channel = broadcast.channel.clone();
        let counts = self.link.clone();
        let done: PublishDone = Box::new(move |result| match result {
            Ok(_) => drop(counts.ingested.fetch_add(1, Ordering::Relaxed)),
            Err(e) => log::warn!("redis ingest: a broadcast on {channel} was not published: {}", e.0),
        });
        self.link.waiting.fetch_add(1, Ordering::AcqRel);
        let key: Box<str> = broadcast.channel.as_str().into();
        self.publish(key, body.encode(), keep_last, done, link);
    }
}
