//! The per-worker topic table and the publish batches. Pure data: no sockets, no protocol, no
//! clock (due times are numbers the caller gives); it stores member ids and `Bytes`.
//!
//! Owns: `Topics` (topic -> members and member -> topics, both directions, and each topic's
//! open batches with their due time); `Batch` (frames not yet delivered) is its leaf
//! `batch.rs`. A topic's members are of two kinds, those that take plain frames and those that
//! take compressed ones (permessage-deflate, chosen at subscribe), and it keeps a batch for
//! each; the compressed frame is made by the caller, only when the topic has a member of that
//! kind. Invariants:
//! - A member leaves all its topics at a cost proportional to its own topics (`leave_all`), and
//!   any one subscribe or unsubscribe is O(1) plus a scan of one member's own topic list.
//! - Small frames published to a topic in one turn (or window) are appended to one contiguous
//!   buffer; when it is delivered the buffer is frozen into a single `Bytes`, so each
//!   subscriber receives one refcounted slice per batch however many frames were published.
//!   Frames at or above the large threshold are never copied; they are queued as they are, in
//!   publish order.
//! - With a coalescing window, a topic's batch is due at the time set when its first frame came
//!   (`set_due`, in the caller's units) and stays open, taking later frames, until
//!   `deliver_due` passes that time or an early delivery (`deliver_topic`, `deliver_member`,
//!   `publish_except`) takes it. Batches are opened in order of their due times, so the ones
//!   due are a prefix of the dirty list and each turn costs only the batches it delivers.
//! - A topic with no members holds no memory and is forgotten.

use std::collections::{HashMap, VecDeque};

use bytes::Bytes;

mod batch;
pub use batch::Batch;

/// Identifies a subscriber within one worker (the reactor uses its connection slot).
pub type Member = u32;

struct Topic {
    name: Box<str>,
    /// Members that take plain frames, and their batch.
    members: Vec<Member>,
    batch: Batch,
    /// Members that take compressed frames, and theirs.
    compressed: Vec<Member>,
    compressed_batch: Batch,
    dirty: bool,
    /// When the open batch must go out (meaningful while `dirty`).
    due: u64,
}

impl Topic {
    fn deliver(&mut self, deliver: &mut impl FnMut(Member, &Bytes)) {
        if !self.dirty {
            return;
        }
        self.dirty = false;
        for (batch, members) in [(&mut self.batch, &self.members), (&mut self.compressed_batch, &self.compressed)] {
            for bytes in batch.take() {
                for &member in members {
                    deliver(member, &bytes);
                }
            }
        }
    }

    fn len(&self) -> usize {
        self.members.len() + self.compressed.len()
    }

    /// The member list holding `member` at `index`: a member is in one list of a topic only.
    fn list_of(&mut self, member: Member, index: usize) -> &mut Vec<Member> {
        if self.members.get(index) == Some(&member) {
            &mut self.members
        } else {
            &mut self.compressed
        }
    }
}

/// Makes the compressed form of a frame as `(head, tail)`; asked for only when a topic has
/// members that take compressed frames. `None` sends them the plain frame (a short message).
pub type Compressed = Option<(Bytes, Bytes)>;

/// One membership of a member: which topic, and where in that topic's member list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Membership {
    topic: u32,
    index: u32,
}

/// The topic table of one worker.
#[derive(Default)]
pub struct Topics {
    ids: HashMap<Box<str>, u32>,
    topics: Vec<Option<Topic>>,
    free: Vec<u32>,
    memberships: HashMap<Member, Vec<Membership>>,
    /// Topics with an open batch and its due time, in the order they were opened. An entry is
    /// stale once its topic was delivered early (or forgotten): the topic is then not dirty, or
    /// dirty again with a later due time and a later entry of its own.
    dirty: VecDeque<(u32, u64)>,
    /// The due time of a batch opened now.
    due: u64,
}

impl Topics {
    /// A table with no topic.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `member` to `name`, among the members that take compressed frames if `compressed`;
    /// false if it was already there.
    pub fn subscribe(&mut self, member: Member, name: &str, compressed: bool) -> bool {
        let topic = match self.ids.get(name) {
            Some(&t) => t,
            None => self.create(name),
        };
        let mine = self.memberships.entry(member).or_default();
        if mine.iter().any(|m| m.topic == topic) {
            return false;
        }
        let t = self.topics[topic as usize].as_mut().expect("topic id maps to a topic");
        let list = if compressed { &mut t.compressed } else { &mut t.members };
        mine.push(Membership { topic, index: list.len() as u32 });
        list.push(member);
        true
    }

    /// Removes `member` from `name`; false if it was not there.
    pub fn unsubscribe(&mut self, member: Member, name: &str) -> bool {
        let Some(&topic) = self.ids.get(name) else {
            return false;
        };
        let Some(mine) = self.memberships.get_mut(&member) else {
            return false;
        };
        let Some(pos) = mine.iter().position(|m| m.topic == topic) else {
            return false;
        };
        let membership = mine.swap_remove(pos);
        if mine.is_empty() {
            self.memberships.remove(&member);
        }
        self.detach(member, membership);
        true
    }

    /// Removes `member` from every topic it is in, naming each to `left`.
    pub fn leave_all(&mut self, member: Member, mut left: impl FnMut(&str)) {
        for membership in self.memberships.remove(&member).unwrap_or_default() {
            if let Some(t) = self.topics[membership.topic as usize].as_ref() {
                left(&t.name);
            }
            self.detach(member, membership);
        }
    }

    /// Members of `name` now.
    pub fn member_count(&self, name: &str) -> usize {
        self.ids.get(name).map_or(0, |&t| self.topic(t).len())
    }

    /// Topics `member` is in.
    pub fn topic_count(&self, member: Member) -> usize {
        self.memberships.get(&member).map_or(0, Vec::len)
    }

    /// Topics with at least one member.
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    /// True when no topic has a member.
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// Sets when the batches opened from now on are due (0 until set). The caller only moves
    /// it forward, so batches are opened in order of their due times.
    pub fn set_due(&mut self, due: u64) {
        self.due = due;
    }

    /// Queues a frame for the members of `name` in the topic's batch: `header` and `payload`
    /// for those that take plain frames, what `compress` makes (called once, only if the topic
    /// has members that take compressed frames) for the others. A batch opened by this frame is
    /// due at the time `set_due` gave; a frame that joins an open batch keeps that batch's.
    /// Returns the number of members it will reach (0: nothing is stored).
    pub fn publish(
        &mut self,
        name: &str,
        header: &[u8],
        payload: &Bytes,
        large: usize,
        compress: impl FnOnce() -> Compressed,
    ) -> usize {
        let Some(&id) = self.ids.get(name) else {
            return 0;
        };
        let t = self.topics[id as usize].as_mut().expect("topic id maps to a topic");
        if !t.members.is_empty() {
            t.batch.push(header, payload, large);
        }
        if !t.compressed.is_empty() {
            match compress() {
                Some((h, p)) => t.compressed_batch.push(&h, &p, large),
                None => t.compressed_batch.push(header, payload, large),
            }
        }
        if !t.dirty {
            t.dirty = true;
            t.due = self.due;
            self.dirty.push_back((id, self.due));
        }
        t.len()
    }

    /// Hands every open batch to `deliver`, once per member, in publish order per topic. Each
    /// call gets a clone of the same `Bytes` (a refcount bump, no copy).
    pub fn deliver(&mut self, mut deliver: impl FnMut(Member, &Bytes)) {
        for (id, _) in std::mem::take(&mut self.dirty) {
            if let Some(t) = self.topics.get_mut(id as usize).and_then(Option::as_mut) {
                t.deliver(&mut deliver);
            }
        }
    }

    /// Hands the batches due at or before `now` to `deliver`, as `deliver` does; the others
    /// stay open. Stale entries at the front are dropped, so `next_due` is exact afterwards.
    pub fn deliver_due(&mut self, now: u64, mut deliver: impl FnMut(Member, &Bytes)) {
        while let Some(&(id, due)) = self.dirty.front() {
            let open = self.topics.get_mut(id as usize).and_then(Option::as_mut).filter(|t| t.dirty && t.due == due);
            match open {
                Some(_) if due > now => break,
                Some(t) => t.deliver(&mut deliver),
                None => {}
            }
            self.dirty.pop_front();
        }
    }

    /// When the oldest open batch is due, if one may be open (an entry made stale by an early
    /// delivery can answer too, which only wakes the caller early).
    pub fn next_due(&self) -> Option<u64> {
        self.dirty.front().map(|&(_, due)| due)
    }

    /// Delivers what `name` has pending now, to its current members only. Called before a
    /// member joins mid-turn, so the newcomer gets none of the frames published before it joined.
    pub fn deliver_topic(&mut self, name: &str, mut deliver: impl FnMut(Member, &Bytes)) {
        if let Some(&id) = self.ids.get(name) {
            if let Some(t) = self.topics[id as usize].as_mut() {
                t.deliver(&mut deliver);
            }
        }
    }

    /// Delivers what the topics `member` is in have pending now, to all their members, so
    /// that bytes queued for `member` right after (a direct send, a close) follow the frames
    /// published to its topics before them. Costs nothing while no topic has pending frames.
    pub fn deliver_member(&mut self, member: Member, mut deliver: impl FnMut(Member, &Bytes)) {
        if self.dirty.is_empty() {
            return;
        }
        let Some(mine) = self.memberships.get(&member) else {
            return;
        };
        for membership in mine {
            if let Some(t) = self.topics[membership.topic as usize].as_mut() {
                t.deliver(&mut deliver);
            }
        }
    }

    /// Hands a frame (its `head` and `tail`, either possibly empty) at once to every member of
    /// `name` except `except`, after what the topic has pending (so order holds), and returns how
    /// many members it reached. For the rare publish that must skip one member (its sender); the
    /// frame's `Bytes` are shared, not copied.
    /// `compress` is called as `publish` calls it.
    pub fn publish_except(
        &mut self,
        name: &str,
        head: &Bytes,
        tail: &Bytes,
        except: Member,
        compress: impl FnOnce() -> Compressed,
        mut deliver: impl FnMut(Member, &Bytes),
    ) -> usize {
        let Some(&id) = self.ids.get(name) else {
            return 0;
        };
        let t = self.topics[id as usize].as_mut().expect("topic id maps to a topic");
        t.deliver(&mut deliver);
        let mut send = |members: &[Member], head: &Bytes, tail: &Bytes| {
            for bytes in [head, tail].into_iter().filter(|b| !b.is_empty()) {
                for &member in members.iter().filter(|&&m| m != except) {
                    deliver(member, bytes);
                }
            }
            members.iter().filter(|&&m| m != except).count()
        };
        let mut reached = send(&t.members, head, tail);
        if !t.compressed.is_empty() {
            let (h, p) = compress().unwrap_or_else(|| (head.clone(), tail.clone()));
            reached += send(&t.compressed, &h, &p);
        }
        reached
    }

    fn topic(&self, id: u32) -> &Topic {
        self.topics[id as usize].as_ref().expect("topic id maps to a topic")
    }

    fn create(&mut self, name: &str) -> u32 {
        let topic = Topic {
            name: name.into(),
            members: Vec::new(),
            batch: Batch::default(),
            compressed: Vec::new(),
            compressed_batch: Batch::default(),
            dirty: false,
            due: 0,
        };
        let id = match self.free.pop() {
            Some(id) => {
                self.topics[id as usize] = Some(topic);
                id
            }
            None => {
                self.topics.push(Some(topic));
                (self.topics.len() - 1) as u32
            }
        };
        self.ids.insert(name.into(), id);
        id
    }

    /// Takes `member` out of one topic's member list (swap-remove), fixing the index of the
    /// member that moved into its place, and forgets the topic when it empties.
    fn detach(&mut self, member: Member, membership: Membership) {
        let t = self.topics[membership.topic as usize].as_mut().expect("topic id maps to a topic");
        let index = membership.index as usize;
        let list = t.list_of(member, index);
        debug_assert_eq!(list[index], member);
        list.swap_remove(index);
        if let Some(&moved) = list.get(index) {
            let theirs = self.memberships.get_mut(&moved).expect("every member has memberships");
            let entry =
                theirs.iter_mut().find(|m| m.topic == membership.topic).expect("membership of the moved member");
            entry.index = membership.index;
        }
        if t.len() == 0 {
            let t = self.topics[membership.topic as usize].take().expect("topic id maps to a topic");
            self.ids.remove(&t.name);
            self.free.push(membership.topic);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LARGE: usize = 1024;

    fn published(t: &mut Topics) -> Vec<(Member, Vec<u8>)> {
        let mut out = Vec::new();
        t.deliver(|m, b| out.push((m, b.to_vec())));
        out.sort();
        out
    }

    #[test]
    fn publish_reaches_members_only() {
        let mut t = Topics::new();
        assert!(t.subscribe(1, "news", false));
        assert!(!t.subscribe(1, "news", false), "idempotent");
        t.subscribe(2, "news", false);
        t.subscribe(3, "sport", false);
        assert_eq!(t.publish("news", b"H", &Bytes::from_static(b"1"), LARGE, || None), 2);
        assert_eq!(t.publish("nobody", b"H", &Bytes::from_static(b"x"), LARGE, || None), 0);
        assert_eq!(published(&mut t), vec![(1, b"H1".to_vec()), (2, b"H1".to_vec())]);
        assert!(published(&mut t).is_empty(), "delivered once");
    }

    #[test]
    fn a_turn_of_small_frames_is_one_shared_buffer_per_member() {
        let mut t = Topics::new();
        for m in 0..100 {
            t.subscribe(m, "news", false);
        }
        for i in 0..100u8 {
            t.publish("news", &[0x81, 1], &Bytes::copy_from_slice(&[i]), LARGE, || None);
        }
        let mut seen: Vec<(Member, Bytes)> = Vec::new();
        t.deliver(|m, b| seen.push((m, b.clone())));
        assert_eq!(seen.len(), 100, "one buffer per member, not one per frame");
        let first = seen[0].1.as_ptr();
        assert!(seen.iter().all(|(_, b)| b.as_ptr() == first && b.len() == 300), "same memory for all");
        let expected: Vec<u8> = (0..100u8).flat_map(|i| [0x81, 1, i]).collect();
        assert_eq!(&seen[0].1[..], &expected[..], "publish order kept");
    }

    #[test]
    fn a_member_joining_mid_turn_gets_nothing_published_before_it_joined() {
        let mut t = Topics::new();
        t.subscribe(1, "news", false);
        t.publish("news", b"", &Bytes::from_static(b"early"), LARGE, || None);
        let mut early = Vec::new();
        t.deliver_topic("news", |m, b| early.push((m, b.to_vec())));
        assert_eq!(early, vec![(1, b"early".to_vec())]);
        t.subscribe(2, "news", false);
        t.publish("news", b"", &Bytes::from_static(b"late"), LARGE, || None);
        assert_eq!(published(&mut t), vec![(1, b"late".to_vec()), (2, b"late".to_vec())]);
    }

    #[test]
    fn deliver_member_flushes_only_the_member_s_own_topics() {
        let mut t = Topics::new();
        t.subscribe(1, "mine", false);
        t.subscribe(2, "mine", false);
        t.subscribe(2, "other", false);
        let mut got = Vec::new();
        t.deliver_member(1, |m, b| got.push((m, b.to_vec())));
        assert!(got.is_empty(), "nothing pending, nothing delivered");
        t.publish("mine", b"", &Bytes::from_static(b"m"), LARGE, || None);
        t.publish("other", b"", &Bytes::from_static(b"o"), LARGE, || None);
        t.deliver_member(1, |m, b| got.push((m, b.to_vec())));
        got.sort();
        assert_eq!(got, vec![(1, b"m".to_vec()), (2, b"m".to_vec())], "all of 'mine', none of 'other'");
        assert_eq!(published(&mut t), vec![(2, b"o".to_vec())], "the rest waits for the turn's end");
    }

    #[test]
    fn unsubscribe_and_leave_all_keep_indexes_consistent() {
        let mut t = Topics::new();
        for m in 0..10 {
            t.subscribe(m, "a", false);
            t.subscribe(m, "b", false);
        }
        assert!(t.unsubscribe(0, "a")); // member 9 moves into index 0 of "a"
        assert!(!t.unsubscribe(0, "a"));
        t.leave_all(9, |_| {});
        t.leave_all(3, |_| {});
        assert_eq!((t.member_count("a"), t.member_count("b")), (7, 8));
        assert_eq!(t.topic_count(0), 1);
        t.publish("a", b"", &Bytes::from_static(b"x"), LARGE, || None);
        let members: Vec<Member> = published(&mut t).into_iter().map(|(m, _)| m).collect();
        assert_eq!(members, [1, 2, 4, 5, 6, 7, 8]);
        for m in 0..10 {
            t.leave_all(m, |_| {});
        }
        assert!(t.is_empty(), "empty topics are forgotten");
        assert!(t.memberships.is_empty());
    }

    #[test]
    fn a_topic_emptied_before_delivery_delivers_nothing_and_ids_are_reused() {
        let mut t = Topics::new();
        t.subscribe(1, "x", false);
        t.publish("x", b"", &Bytes::from_static(b"1"), LARGE, || None);
        t.leave_all(1, |_| {});
        t.subscribe(2, "y", false); // reuses the freed topic id
        assert!(published(&mut t).is_empty());
        t.publish("y", b"", &Bytes::from_static(b"2"), LARGE, || None);
        assert_eq!(published(&mut t), vec![(2, b"2".to_vec())]);
    }

    #[test]
    fn publish_except_skips_one_member_after_the_pending_batch() {
        let mut topics = Topics::new();
        for m in [1, 2, 3] {
            topics.subscribe(m, "t", false);
        }
        topics.publish("t", b"a", &Bytes::new(), 1024, || None);
        let mut got = Vec::new();
        let b = Bytes::from_static(b"b");
        let reached = topics.publish_except("t", &b, &Bytes::new(), 2, || None, |m, b| got.push((m, b.clone())));
        assert_eq!(reached, 2);
        let want: Vec<(Member, Bytes)> = vec![
            (1, Bytes::from_static(b"a")),
            (2, Bytes::from_static(b"a")),
            (3, Bytes::from_static(b"a")),
            (1, Bytes::from_static(b"b")),
            (3, Bytes::from_static(b"b")),
        ];
        assert_eq!(got, want, "the pending frame first, to everyone; then the new one, not to 2");
        assert_eq!(topics.publish_except("none", &b, &Bytes::new(), 1, || None, |_, _| panic!("no members")), 0);
    }

    #[test]
    fn compressed_members_get_the_compressed_batch_made_once_per_publish() {
        let mut t = Topics::new();
        for m in 0..6 {
            t.subscribe(m, "t", m % 2 == 1);
        }
        let mut made = 0;
        for i in 0..3u8 {
            let reached = t.publish("t", &[0x81, 1], &Bytes::copy_from_slice(&[i]), LARGE, || {
                made += 1;
                Some((Bytes::copy_from_slice(&[0xc1, 1, b'z' + i]), Bytes::new()))
            });
            assert_eq!(reached, 6);
        }
        assert_eq!(made, 3, "once per publish, not per compressed member");
        let got = published(&mut t);
        let plain: Vec<u8> = (0..3u8).flat_map(|i| [0x81, 1, i]).collect();
        let compressed: Vec<u8> = (0..3u8).flat_map(|i| [0xc1, 1, b'z' + i]).collect();
        for (member, bytes) in got {
            assert_eq!(bytes, if member % 2 == 1 { compressed.clone() } else { plain.clone() }, "member {member}");
        }
        // No compressed member: nothing is compressed. None: the plain frame for everyone.
        let mut u = Topics::new();
        u.subscribe(1, "u", false);
        u.publish("u", b"p", &Bytes::new(), LARGE, || panic!("no compressed member"));
        u.subscribe(2, "u", true);
        assert_eq!(published(&mut u), vec![(1, b"p".to_vec())]);
        u.publish("u", b"q", &Bytes::new(), LARGE, || None);
        assert_eq!(published(&mut u), vec![(1, b"q".to_vec()), (2, b"q".to_vec())]);
    }

    #[test]
    fn both_kinds_of_members_leave_with_indexes_kept() {
        let mut t = Topics::new();
        for m in 0..8 {
            t.subscribe(m, "a", m >= 4);
        }
        assert!(t.unsubscribe(4, "a")); // member 7 moves into index 0 of the compressed list
        assert!(t.unsubscribe(0, "a")); // member 3 moves into index 0 of the plain list
        t.leave_all(7, |_| {});
        assert_eq!(t.member_count("a"), 5);
        t.publish("a", b"", &Bytes::from_static(b"x"), LARGE, || Some((Bytes::from_static(b"c"), Bytes::new())));
        let got = published(&mut t);
        assert_eq!(
            got,
            vec![(1, b"x".to_vec()), (2, b"x".to_vec()), (3, b"x".to_vec()), (5, b"c".to_vec()), (6, b"c".to_vec())]
        );
        for m in 0..8 {
            t.leave_all(m, |_| {});
        }
        assert!(t.is_empty());
    }

    #[test]
    fn publish_except_sends_each_kind_its_frame() {
        let mut t = Topics::new();
        for m in 1..=4 {
            t.subscribe(m, "t", m > 2);
        }
        let mut got = Vec::new();
        let frame = Bytes::from_static(b"p");
        let reached = t.publish_except(
            "t",
            &frame,
            &Bytes::new(),
            3,
            || Some((Bytes::from_static(b"c"), Bytes::new())),
            |m, b| got.push((m, b.clone())),
        );
        assert_eq!(reached, 3);
        assert_eq!(got, vec![(1, frame.clone()), (2, frame), (4, Bytes::from_static(b"c"))]);
    }

    #[test]
    fn deliver_due_takes_the_batches_due_and_keeps_the_rest_open() {
        let mut t = Topics::new();
        t.subscribe(1, "a", false);
        t.subscribe(1, "b", false);
        t.subscribe(2, "b", false);
        t.set_due(10);
        t.publish("a", b"", &Bytes::from_static(b"a1"), LARGE, || None);
        t.set_due(20);
        t.publish("b", b"", &Bytes::from_static(b"b1"), LARGE, || None);
        t.publish("a", b"", &Bytes::from_static(b"a2"), LARGE, || None); // joins a's batch
        assert_eq!(t.next_due(), Some(10));
        let mut got = Vec::new();
        t.deliver_due(9, |m, b| got.push((m, b.to_vec())));
        assert!(got.is_empty(), "nothing due yet");
        t.deliver_due(10, |m, b| got.push((m, b.to_vec())));
        assert_eq!(got, vec![(1, b"a1a2".to_vec())], "a's batch, both frames in one buffer");
        assert_eq!(t.next_due(), Some(20));
        // b is taken early (a member's direct send); its entry goes stale and a new batch
        // opens with its own due time.
        t.deliver_member(2, |_, _| {});
        t.set_due(30);
        t.publish("b", b"", &Bytes::from_static(b"b2"), LARGE, || None);
        got.clear();
        t.deliver_due(25, |m, b| got.push((m, b.to_vec())));
        assert!(got.is_empty(), "the stale entry delivers nothing");
        assert_eq!(t.next_due(), Some(30));
        t.deliver_due(30, |m, b| got.push((m, b.to_vec())));
        got.sort();
        assert_eq!(got, vec![(1, b"b2".to_vec()), (2, b"b2".to_vec())]);
        assert_eq!(t.next_due(), None);
    }
}
