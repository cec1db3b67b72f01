//! Pusher subscriptions counted over the cluster: joins and leaves through the `JOIN` and
//! `LEAVE` scripts, presence frames to every node, what is decided once for the cluster (the
//! webhooks), counting again after Redis forgot a node, and the reaping of dead nodes.
//!
//! Owns the `impl Engine` methods of that duty. Invariants: a Pusher join is counted in Redis
//! before it is answered, and undone when its connection left meanwhile; a change decided by a
//! script (first subscription, a user's first or last connection) is told by the node that ran
//! it, so once per cluster; a node's counts are undone once, by whoever removes it from the node
//! set first.

use std::rc::Rc;
use std::sync::atomic::Ordering;

use fanout::ConnId;
use redis::aio::MultiplexedConnection;

use super::engine::{Engine, Linked, Waiting, TIMEOUT};
use super::types::{Happened, Joined, Member, Unavailable};
use super::{script, wire};
use crate::space::pusher_topic;

impl Engine {
    /// Counts a Pusher join over the cluster (`script::JOIN`), then answers it: members, the
    /// cache channel's last event, the topic; `member_added` to the other members on every
    /// node; the webhooks of what this join decided.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn count(
        self: &Rc<Self>,
        key: &str,
        name: &str,
        w: Waiting,
        member: Option<Member>,
        max: usize,
        again: bool,
        link: &Linked,
    ) {
        let engine = self.clone();
        let mut con = link.con.clone();
        let link = link.clone();
        let (key, name) = (key.to_owned(), name.to_owned());
        tokio::task::spawn_local(async move {
            let n = &engine.names;
            let (user, info) = member.as_ref().map_or(("", ""), |m| (m.user.as_str(), m.info.as_str()));
            let mut call = script::JOIN.prepare_invoke();
            call.key(n.subscriptions(&key))
                .key(n.held(&engine.node_name))
                .key(n.members(&key))
                .key(n.member_info(&key));
            call.arg(&engine.node_name).arg(&key).arg(user).arg(info).arg(max);
            engine.link.in_flight.fetch_add(1, Ordering::Relaxed);
            let result = if again {
                // {not occupied, not added, the members}: nothing counted.
                let read = redis::cmd("HGETALL").arg(n.member_info(&key)).to_owned();
                let members = tokio::time::timeout(TIMEOUT, read.query_async::<Vec<redis::Value>>(&mut con)).await;
                members.map(|r| r.map(|m| [vec![redis::Value::Int(0), redis::Value::Int(0)], m].concat()))
            } else {
                tokio::time::timeout(TIMEOUT, call.invoke_async::<Vec<redis::Value>>(&mut con)).await
            };
            engine.link.in_flight.fetch_sub(1, Ordering::Relaxed);
            engine.link.waiting.fetch_sub(1, Ordering::AcqRel);
            let counted = match result {
                Ok(Ok(values)) => values,
                failed => {
                    if let Some(channel) = engine.channels.borrow_mut().get_mut(key.as_str()) {
                        channel.joining.remove(&w.conn);
                    }
                    let why = match failed {
                        Ok(Err(e)) => e.to_string(),
                        _ => "no answer".to_owned(),
                    };
                    (w.done)(&engine.remote, Err(Unavailable(format!("redis: {why}"))));
                    return drop(link.lost.send(format!("join: {why}")));
                }
            };
            let number = |v: Option<&redis::Value>| match v {
                Some(redis::Value::Int(i)) => *i,
                _ => 0,
            };
            let (occupied, added) = (number(counted.first()) == 1, number(counted.get(1)));
            let text = |v: &redis::Value| redis::from_redis_value_ref::<String>(v).unwrap_or_default();
            let mut members: Vec<Member> = counted[2.min(counted.len())..]
                .chunks(2)
                .filter(|pair| pair.len() == 2)
                .map(|pair| Member { user: text(&pair[0]), info: text(&pair[1]) })
                .collect();
            members.sort_unstable_by(|a, b| a.user.cmp(&b.user)); // stable answers, as one node gives

            let mut channels = engine.channels.borrow_mut();
            let still = channels.get_mut(key.as_str()).and_then(|c| {
                let joined = (again && c.pusher.contains_key(&w.conn)) || c.joining.remove(&w.conn);
                joined.then_some(c)
            });
            let Some(channel) = still else {
                // The connection left while it was being counted: undo the count.
                drop(channels);
                if added >= 0 && !again {
                    engine.uncount(&link, &key, &name, member.as_ref().map(|m| m.user.as_str()));
                }
                return;
            };
            if added < 0 {
                let joined =
                    Joined { seq: 0, epoch: String::new(), replay: Vec::new(), recovered: false, members, full: true };
                (w.done)(&engine.remote, Ok(joined));
                return;
            }
            let replay = engine.kept(channel).last().cloned().into_iter().collect();
            let epoch = channel.epoch.as_deref().unwrap_or_default().to_owned();
            let joined = Joined { seq: channel.delivered, epoch, replay, recovered: false, members, full: false };
            if !(w.done)(&engine.remote, Ok(joined)) && !again {
                drop(channels);
                return engine.uncount(&link, &key, &name, member.as_ref().map(|m| m.user.as_str()));
            }
            if channel.pusher.insert(w.conn, member.clone()).is_none() {
                engine.remote.subscribe(w.conn, &pusher_topic(&key));
            }
            drop(channels);
            engine.counted(&link, &key, &name, w.conn, member.as_ref(), occupied, added == 1);
        });
    }

    /// What a counted join decided, told once for the cluster: the occupied webhook, and
    /// `member_added` to the other members on every node (not to `conn`, which joined).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn counted(
        &self,
        link: &Linked,
        key: &str,
        name: &str,
        conn: ConnId,
        member: Option<&Member>,
        occupied: bool,
        added: bool,
    ) {
        if occupied {
            self.happened(Happened::Occupied { key: key.to_owned() });
        }
        if let (Some(m), true) = (member, added) {
            let frame = crate::pusher::protocol::member_added(name, &m.user, &m.info);
            let except = crate::pusher::protocol::socket_id(conn, self.node);
            self.control(link, key, &frame, Some(&except));
            self.happened(Happened::MemberAdded { key: key.to_owned(), user: m.user.clone() });
        }
    }

    /// Relinked: when Redis no longer holds this node's Pusher subscriptions (it lost its data,
    /// or the others took this node for dead while it could not reach Redis and undid them),
    /// they are counted again, with their webhooks and `member_added`, so presence and channel
    /// counts match the connections this node still holds.
    pub(super) async fn count_again(self: Rc<Self>, link: Linked) {
        let mut con = link.con.clone();
        let held: Result<bool, _> =
            redis::cmd("EXISTS").arg(self.names.held(&self.node_name)).query_async(&mut con).await;
        if held.unwrap_or(true) {
            return;
        }
        let joined: Vec<(String, String, ConnId, Option<Member>)> = self
            .channels
            .borrow()
            .iter()
            .flat_map(|(key, c)| {
                c.pusher.iter().map(move |(id, m)| (key.to_string(), c.name.to_string(), *id, m.clone()))
            })
            .collect();
        if !joined.is_empty() {
            log::warn!("redis: this node's {} Pusher subscriptions were gone from Redis; counted again", joined.len());
        }
        for (key, name, conn, member) in joined {
            let n = &self.names;
            let (user, info) = member.as_ref().map_or(("", ""), |m| (m.user.as_str(), m.info.as_str()));
            let mut call = script::JOIN.prepare_invoke();
            call.key(n.subscriptions(&key)).key(n.held(&self.node_name)).key(n.members(&key)).key(n.member_info(&key));
            call.arg(&self.node_name).arg(&key).arg(user).arg(info).arg(0);
            match call.invoke_async::<Vec<redis::Value>>(&mut con).await {
                Ok(counted) => {
                    let number = |v: Option<&redis::Value>| matches!(v, Some(redis::Value::Int(1)));
                    self.counted(
                        &link,
                        &key,
                        &name,
                        conn,
                        member.as_ref(),
                        number(counted.first()),
                        number(counted.get(1)),
                    );
                }
                Err(e) => return drop(link.lost.send(format!("counting again: {e}"))),
            }
        }
    }

    /// Undoes a Pusher join over the cluster (`script::LEAVE`): `member_removed` to the other
    /// members on every node after a user's last connection, and the webhooks.
    pub(super) fn uncount(self: &Rc<Self>, link: &Linked, key: &str, name: &str, user: Option<&str>) {
        let engine = self.clone();
        let mut con = link.con.clone();
        let link = link.clone();
        let (key, name, user) = (key.to_owned(), name.to_owned(), user.unwrap_or_default().to_owned());
        tokio::task::spawn_local(async move {
            let n = &engine.names;
            let mut call = script::LEAVE.prepare_invoke();
            call.key(n.subscriptions(&key))
                .key(n.held(&engine.node_name))
                .key(n.members(&key))
                .key(n.member_info(&key));
            call.arg(&engine.node_name).arg(&key).arg(&user);
            let result = tokio::time::timeout(TIMEOUT, call.invoke_async::<(i64, i64)>(&mut con)).await;
            let (vacated, removed) = match result {
                Ok(Ok(answer)) => answer,
                Ok(Err(e)) => return drop(link.lost.send(format!("leave: {e}"))),
                Err(_) => return drop(link.lost.send("leave: no answer".into())),
            };
            if removed == 1 {
                let frame = crate::pusher::protocol::member_removed(&name, &user);
                engine.control(&link, &key, &frame, None);
                engine.happened(Happened::MemberRemoved { key: key.clone(), user });
            }
            if vacated == 1 {
                engine.happened(Happened::Vacated { key });
            }
        });
    }

    /// A Pusher frame for channel `key`'s Pusher subscribers on every node (a presence change),
    /// except the connection `except` names.
    pub(super) fn control(&self, link: &Linked, key: &str, frame: &str, except: Option<&str>) {
        let text = wire::Control { frame: frame.into(), except: except.map(Into::into) }.encode();
        let command = redis::cmd("PUBLISH").arg(self.names.channel(key)).arg(text).to_owned();
        let mut con = link.con.clone();
        let lost = link.lost.clone();
        tokio::task::spawn_local(async move {
            if let Err(e) = command.query_async::<()>(&mut con).await {
                let _ = lost.send(format!("publish: {e}"));
            }
        });
    }

    pub(super) fn happened(&self, what: Happened) {
        if let Some(hook) = self.link.hook.get() {
            hook(what);
        }
    }

    /// Undoes what `node` held (a dead node, or this one stopping) once over the cluster, and
    /// tells every node's members of the users it removed.
    pub(super) async fn reap(&self, con: &mut MultiplexedConnection, node: &str) -> redis::RedisResult<()> {
        let mut call = script::REAP.prepare_invoke();
        call.key(self.names.nodes()).key(self.names.held(node)).arg(node).arg(format!("{}:", self.names.prefix()));
        let undone: Vec<String> = call.invoke_async(con).await?;
        if undone.is_empty() {
            return Ok(());
        }
        if node != self.node_name {
            self.link.reaped.fetch_add(1, Ordering::Relaxed);
            log::warn!("redis: node {node} went silent; its presence members were removed");
        }
        let mut items = undone.iter();
        while let Some(kind) = items.next() {
            let Some(key) = items.next() else { break };
            if kind == "r" {
                let Some(user) = items.next() else { break };
                let name = key.rsplit_once(':').filter(|_| key.starts_with('#')).map_or(key.as_str(), |(_, n)| n);
                let text =
                    wire::Control { frame: crate::pusher::protocol::member_removed(name, user).into(), except: None }
                        .encode();
                redis::cmd("PUBLISH").arg(self.names.channel(key)).arg(text).query_async::<()>(con).await?;
                self.happened(Happened::MemberRemoved { key: key.clone(), user: user.clone() });
            } else {
                self.happened(Happened::Vacated { key: key.clone() });
            }
        }
        Ok(())
    }
}
