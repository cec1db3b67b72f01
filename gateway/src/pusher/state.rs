//! The Pusher side's process-wide state: connections per app, presence members, and the
//! connections of each signed-in user. One `State` behind one lock serves every worker's
//! handler, so counts, members and webhooks are right whatever worker a connection is on.
//!
//! Owns: `State`. Invariants: a presence channel counts each user once however many of its
//! connections are subscribed (`join` says when a user arrives, `leave` when its last connection
//! goes), and holds at most the app's member limit; every count goes back to zero as connections
//! leave, and empty entries are removed, so memory follows what is open. Pure data: no I/O, no
//! locks of its own; the caller takes the history lock (`crate::space`) before this one.

use std::collections::{BTreeMap, HashMap};

use fanout::ConnId;

/// A presence channel is at its member limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Full;

#[derive(Debug, Default)]
struct Member {
    /// This user's connections subscribed to the channel.
    connections: usize,
    /// `user_info` as JSON, from the user's first subscription.
    info: Box<str>,
}

#[derive(Debug, Default)]
pub struct State {
    /// Open connections per app (by the app's index).
    connections: Vec<usize>,
    /// Presence members by channel key, then by user id (sorted, for stable answers).
    presence: HashMap<Box<str>, BTreeMap<Box<str>, Member>>,
    /// Signed-in connections by (app, user id).
    users: HashMap<(usize, Box<str>), Vec<ConnId>>,
}

impl State {
    pub fn new(apps: usize) -> Self {
        State { connections: vec![0; apps], ..State::default() }
    }

    /// Counts a connection of `app`, unless that makes more than `max` (0: no limit).
    pub fn connect(&mut self, app: usize, max: usize) -> bool {
        let n = &mut self.connections[app];
        if max > 0 && *n >= max {
            return false;
        }
        *n += 1;
        true
    }

    pub fn disconnect(&mut self, app: usize) {
        self.connections[app] = self.connections[app].saturating_sub(1);
    }

    /// Open connections of `app`.
    pub fn connections(&self, app: usize) -> usize {
        self.connections[app]
    }

    /// Adds a connection of `user` to presence channel `key`; true when the user was not a
    /// member yet (its `member_added`). A new user beyond `max` distinct users (0: no limit) is
    /// refused.
    pub fn join(&mut self, key: &str, user: &str, info: &str, max: usize) -> Result<bool, Full> {
        let members = self.presence.entry(key.into()).or_default();
        if let Some(member) = members.get_mut(user) {
            member.connections += 1;
            return Ok(false);
        }
        if max > 0 && members.len() >= max {
            if members.is_empty() {
                self.presence.remove(key);
            }
            return Err(Full);
        }
        members.insert(user.into(), Member { connections: 1, info: info.into() });
        Ok(true)
    }

    /// Takes a connection of `user` out of presence channel `key`; true when it was the user's
    /// last one there (its `member_removed`).
    pub fn leave(&mut self, key: &str, user: &str) -> bool {
        let Some(members) = self.presence.get_mut(key) else {
            return false;
        };
        let Some(member) = members.get_mut(user) else {
            return false;
        };
        member.connections -= 1;
        if member.connections > 0 {
            return false;
        }
        members.remove(user);
        if members.is_empty() {
            self.presence.remove(key);
        }
        true
    }

    /// A presence channel's members: (user id, user_info JSON), by user id.
    pub fn members<'a>(&'a self, key: &str) -> impl Iterator<Item = (&'a str, &'a str)> + 'a {
        self.presence.get(key).into_iter().flat_map(|m| m.iter().map(|(id, m)| (&**id, &*m.info)))
    }

    /// Distinct users on a presence channel.
    pub fn user_count(&self, key: &str) -> usize {
        self.presence.get(key).map_or(0, BTreeMap::len)
    }

    /// Records that `conn` signed in as `user` of `app`.
    pub fn sign_in(&mut self, app: usize, user: &str, conn: ConnId) {
        self.users.entry((app, user.into())).or_default().push(conn);
    }

    /// Forgets `conn`'s sign-in as `user`.
    pub fn sign_out(&mut self, app: usize, user: &str, conn: ConnId) {
        let key = (app, Box::<str>::from(user));
        if let Some(conns) = self.users.get_mut(&key) {
            conns.retain(|c| *c != conn);
            if conns.is_empty() {
                self.users.remove(&key);
            }
        }
    }

    /// The connections signed in as `user` of `app`, on every worker.
    pub fn user_connections(&self, app: usize, user: &str) -> Vec<ConnId> {
        self.users.get(&(app, user.into())).cloned().unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connections_are_counted_per_app_under_the_quota() {
        let mut s = State::new(2);
        assert!(s.connect(0, 2) && s.connect(0, 2));
        assert!(!s.connect(0, 2), "over the quota");
        assert!(s.connect(1, 0), "no limit");
        s.disconnect(0);
        assert_eq!((s.connections(0), s.connections(1)), (1, 1));
        assert!(s.connect(0, 2));
    }

    #[test]
    fn presence_counts_users_once_across_connections() {
        let mut s = State::new(1);
        assert_eq!(s.join("presence-a", "u1", r#"{"n":1}"#, 10), Ok(true));
        assert_eq!(s.join("presence-a", "u1", "{}", 10), Ok(false), "second connection");
        assert_eq!(s.join("presence-a", "u2", "null", 10), Ok(true));
        assert_eq!(s.user_count("presence-a"), 2);
        let members: Vec<_> = s.members("presence-a").collect();
        assert_eq!(members, [("u1", r#"{"n":1}"#), ("u2", "null")], "first info kept");
        assert!(!s.leave("presence-a", "u1"), "one connection left");
        assert!(s.leave("presence-a", "u1"));
        assert!(s.leave("presence-a", "u2"));
        assert!(!s.leave("presence-a", "u2"), "gone already");
        assert_eq!(s.user_count("presence-a"), 0);
        assert!(s.presence.is_empty(), "emptied entries are removed");
    }

    #[test]
    fn presence_member_limit_refuses_new_users_only() {
        let mut s = State::new(1);
        assert_eq!(s.join("presence-a", "u1", "null", 1), Ok(true));
        assert_eq!(s.join("presence-a", "u2", "null", 1), Err(Full));
        assert_eq!(s.join("presence-a", "u1", "null", 1), Ok(false), "a known user's new connection");
        assert_eq!(s.join("presence-b", "u2", "null", 0), Ok(true), "0: no limit");
    }

    #[test]
    fn users_and_their_connections() {
        let mut s = State::new(2);
        let (a, b) = (ConnId::from_parts(1, 1), ConnId::from_parts(2, 1));
        s.sign_in(0, "u", a);
        s.sign_in(0, "u", b);
        s.sign_in(1, "u", a);
        assert_eq!(s.user_connections(0, "u"), [a, b]);
        s.sign_out(0, "u", a);
        assert_eq!(s.user_connections(0, "u"), [b]);
        s.sign_out(0, "u", b);
        assert!(s.user_connections(0, "u").is_empty());
        assert_eq!(s.user_connections(1, "u"), [a], "apps apart");
    }
}
