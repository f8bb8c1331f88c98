//! A router-shard actor: owns the topic table and the retro buffer of its
//! share of the topic space. Nothing else reaches them except through its
//! mailbox.
//!
//! - [`Route`]: a batch of messages from one publisher. The shard stores
//!   each in its retro buffer and answers, per topic of the message that it
//!   owns, the topic's subscriber list ([`SubList`], an immutable shared
//!   snapshot). The publisher gathers the answers of every shard a message
//!   touches and only then delivers, one entry per subscriber
//!   (`crate::publish`). Fan-out therefore happens outside the shard: no
//!   shard, and no lock, is held while a message is pushed to thousands of
//!   queues.
//! - [`Subscribe`] / [`Unsubscribe`]: a client queue changes its
//!   subscriptions here; a subscribe with a horizon also answers the
//!   buffered messages since it. Adding the subscriber and reading the
//!   buffer happen in one handler, so every message is either in the
//!   answer or routed afterwards with the subscriber in its list: no gap.
//! - On a failure (a panic in a handler, caught by `crate::guard`) the
//!   shard drops its table and buffer, tells its supervisor
//!   (`crate::shard_pool::ShardPool`), and holds back routing until the
//!   supervisor restarts it with the list of client queues: each queue
//!   sends back its topics on this shard ([`ResyncReply`]), the source of
//!   truth. Subscription changes are applied meanwhile; routes wait, so no
//!   subscriber is missed. The new retro buffer is complete only from the
//!   restart on: older horizons answer `NOT_FOUND`.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use bytes::Bytes;
use slog::warn;

use crate::board::Home;
use crate::client::{FastMap, FastSet};
use crate::clock::{Horizon, SeqClock};
use crate::guard::{guard, Panicked, Supervised};
use crate::message::Message;
use crate::node::Node;
use crate::placement::shard_of;

/// Which topics a replay covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplayScope {
    /// After `register`, a subscribe that adds topics: every topic then
    /// held, skipping the messages already queued for the client since the
    /// register (those on topics held before are replayed only when still
    /// in flight, so that nothing overtakes them).
    NewTopics,
    /// `retro_subscribe`: every requested topic (at-least-once).
    Requested,
}

/// What a proxy node (`crate::proxy`) must hear from the router to mirror
/// its clients' topics upstream and to forward their publishes. Given to
/// the shards when they start; a plain node has none.
///
/// `gained`/`lost` are called by the shard actor that owns the topics, in
/// the order the changes happen there; `published` by the publisher, in
/// its publish order. Implementations must be quick and must not block: a
/// non-blocking `do_send` is the intended body.
pub trait TopicObserver: Send + Sync {
    /// These topics just gained their first local subscriber.
    fn gained(&self, topics: Vec<Bytes>);
    /// These topics just lost their last local subscriber.
    fn lost(&self, topics: Vec<Bytes>);
    /// A local client published `msg`. Not called for messages relayed
    /// from upstream.
    fn published(&self, msg: &Arc<Message>);
}

/// Topic whose publish makes its router shard panic when `fault_injection` is on.
pub const FAULT_SHARD_PANIC: &[u8] = b"__kraken_fault_shard_panic__";
/// With `fault_injection`, a message naming this topic stalls its shard's
/// thread for a second (a shard that is slow to answer).
pub const FAULT_SHARD_STALL: &[u8] = b"__kraken_fault_shard_stall__";

/// How long a restarted shard waits for the queues' topics before it
/// routes again without those that did not answer (their clients are gone).
const RESYNC_PATIENCE: Duration = Duration::from_secs(5);

/// What a shard needs of a client queue: to ask it for its topics when the
/// shard restarts (deliveries go through its arbiter's board,
/// `crate::board`). Implemented by the client queue actor's address
/// (`crate::queue`), so that this module does not depend on the queue's.
pub trait QueueHandle: Send + Sync {
    /// Ask for the queue's topics on shard `msg.shard` ([`ResyncReply`]).
    fn resync(&self, msg: Resync);
    /// Whether the queue still runs.
    fn alive(&self) -> bool;
}

/// A client queue, shared: one allocation per client, cloned as a
/// reference count (an actix `Addr` clone would allocate a sender slot).
pub type QueueRef = Arc<dyn QueueHandle>;

/// From a restarted shard: send it this client's topics on it.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Resync {
    pub shard: usize,
    pub shards: usize,
    pub reply_to: Addr<RouterShard>,
}

/// One subscriber of a topic: what a publisher needs to deliver to it.
/// Small and without a reference count: tables hold one per subscription,
/// and every routed message clones a list of them.
#[derive(Clone, Copy)]
pub struct Sub {
    pub id: u64,
    /// The worker arbiter the queue lives on (its courier's index) and
    /// its slot on that arbiter's delivery board.
    pub home: Home,
}

/// A topic's subscribers, as the shard answers them: an immutable
/// snapshot, cheap to clone. Most topics have one subscriber, which is held
/// without an allocation of its own; a list of several is shared and
/// copied on write.
#[derive(Clone)]
pub enum SubList {
    One(Sub),
    Many(Arc<Vec<Sub>>),
}

impl SubList {
    pub fn iter(&self) -> std::slice::Iter<'_, Sub> {
        match self {
            SubList::One(s) => std::slice::from_ref(s).iter(),
            SubList::Many(v) => v.iter(),
        }
    }

    pub fn len(&self) -> usize {
        match self {
            SubList::One(_) => 1,
            SubList::Many(v) => v.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Equal for two snapshots with the same subscribers (used to reuse
    /// the work of one message for the next on the same topic): a shared
    /// list's address (even), or a lone subscriber's id, made odd.
    pub fn key(&self) -> usize {
        match self {
            SubList::One(s) => ((s.id as usize) << 1) | 1,
            SubList::Many(v) => Arc::as_ptr(v) as usize,
        }
    }
}

/// Which topics of a message a shard owns (indices into `Message::topics`).
#[derive(Debug, Clone)]
pub enum Owned {
    One(u32),
    Many(Vec<u32>),
}

impl Owned {
    pub fn iter(&self) -> impl Iterator<Item = u32> + '_ {
        let (one, many) = match self {
            Owned::One(i) => (Some(*i), &[][..]),
            Owned::Many(v) => (None, &v[..]),
        };
        one.into_iter().chain(many.iter().copied())
    }

    pub fn len(&self) -> usize {
        match self {
            Owned::One(_) => 1,
            Owned::Many(v) => v.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// One message of a [`Route`] batch.
pub struct RouteItem {
    pub msg: Arc<Message>,
    pub owned: Owned,
}

/// Store and look up a batch of messages; answered with [`Routed`].
#[derive(Message)]
#[rtype(result = "()")]
pub struct Route {
    pub batch: u64,
    pub items: Vec<RouteItem>,
    pub reply_to: Recipient<Routed>,
}

/// A shard's answer to a [`Route`]: per item, per owned topic in order, its
/// subscriber list (`None`: no subscriber).
#[derive(Message)]
#[rtype(result = "()")]
pub struct Routed {
    pub batch: u64,
    pub shard: usize,
    pub lists: Result<Vec<Option<SubList>>, ShardFailed>,
}

/// The request failed because the shard failed (and is being restarted).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShardFailed;

impl ShardFailed {
    /// What the client is answered.
    pub fn reply(self) -> kraken_protocol::Response {
        kraken_protocol::Response::ServerError(
            "router shard failed; it was restarted, retry".into(),
        )
    }
}

/// Add subscriber `id` to `add`; with `replay`, also answer the buffered
/// messages at or after the horizon that name one of the replay topics and
/// were not published by `id`.
#[derive(Message)]
#[rtype(result = "Result<Replay, ShardFailed>")]
pub struct Subscribe {
    pub id: u64,
    pub home: Home,
    pub add: Vec<Bytes>,
    pub replay: Option<(Horizon, Vec<Bytes>)>,
    /// Sent without awaiting the answer: its new topics were counted
    /// against `max_topics_per_node` in advance, so the shard applies it
    /// without checking the cap.
    pub reserved: Option<Reservation>,
}

/// Room reserved under `max_topics_per_node` for a [`Subscribe`] the queue
/// does not wait for (`Counters::topics_reserved`); released when the
/// message is dropped, after its shard counted what it added (or if it
/// never arrives).
pub struct Reservation {
    node: Arc<Node>,
    topics: u64,
}

/// At most this many topics wait in reserved subscribes node-wide; past
/// it, subscribes wait for their shards' answers (backpressure on a
/// client that pipelines changes faster than the shards apply them).
pub const MAX_RESERVED_TOPICS: u64 = 1 << 18;

impl Reservation {
    /// Reserves room for `topics` new topics, unless the node could then
    /// pass `max_topics_per_node` (the held ones, those reserved and these
    /// all counted as new) or too many already wait.
    pub fn take(node: &Arc<Node>, topics: u64) -> Option<Reservation> {
        let c = &node.counters;
        let before = c.topics_reserved.fetch_add(topics, Ordering::Relaxed);
        let cap = node.settings.max_topics_per_node as u64;
        let held = c.topics.load(Ordering::Relaxed);
        if before + topics > MAX_RESERVED_TOPICS || held + before + topics > cap {
            c.topics_reserved.fetch_sub(topics, Ordering::Relaxed);
            return None;
        }
        Some(Reservation {
            node: node.clone(),
            topics,
        })
    }

    /// Moves `topics` of this reservation into one of its own (one per
    /// shard's part of a subscribe).
    pub fn part(&mut self, topics: u64) -> Reservation {
        let topics = topics.min(self.topics);
        self.topics -= topics;
        Reservation {
            node: self.node.clone(),
            topics,
        }
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if self.topics == 0 {
            return;
        }
        self.node
            .counters
            .topics_reserved
            .fetch_sub(self.topics, Ordering::Relaxed);
    }
}

/// What a [`Subscribe`] with a horizon found.
#[derive(Debug, Default)]
pub struct Replay {
    /// The buffer holds everything since the horizon (else `NOT_FOUND`).
    pub complete: bool,
    /// The matching messages, ascending sequence.
    pub messages: Vec<Arc<Message>>,
    /// Refused, nothing applied: the topics new to the node would pass
    /// `max_topics_per_node`.
    pub over_topic_cap: bool,
}

/// Remove subscriber `id` from `topics` (unknown ones are ignored).
#[derive(Message)]
#[rtype(result = "()")]
pub struct Unsubscribe {
    pub id: u64,
    pub topics: Vec<Bytes>,
}

/// From the supervisor: restart, recovering the table from these queues.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Restart {
    pub queues: Vec<(u64, QueueRef)>,
}

/// A client queue's topics on this shard, for a restart.
#[derive(Message)]
#[rtype(result = "()")]
pub struct ResyncReply {
    pub id: u64,
    pub home: Home,
    pub topics: Vec<Bytes>,
}

/// Answered once the shard has handled everything that reached its mailbox
/// before: a `stats` after `STORED` counts the subscribe, which its queue
/// sent without awaiting the shards.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Settle;

/// Every topic with its subscriber count.
#[derive(Message)]
#[rtype(result = "Vec<(Bytes, usize)>")]
pub struct DumpTopics;

/// A topic table with room for more topics than this shrinks when it is
/// an eighth full (small tables that empty and fill again under churn keep
/// their size).
const SHRINK_FROM: usize = 16384;

/// Told to the shard's supervisor when the shard failed.
#[derive(Message)]
#[rtype(result = "()")]
pub struct ShardDown {
    pub index: usize,
    pub why: Panicked,
}

/// The retro buffer: the newest messages that named a topic of this shard,
/// ascending sequence; bounded by count and by bytes, oldest evicted first.
struct RetroBuffer {
    items: VecDeque<Arc<Message>>,
    bytes: usize,
    max_messages: usize,
    max_bytes: usize,
    /// Complete for horizons at or after this sequence number.
    complete_from: u64,
}

impl RetroBuffer {
    fn new(max_messages: usize, max_bytes: usize, complete_from: u64) -> Self {
        RetroBuffer {
            items: VecDeque::new(),
            bytes: 0,
            max_messages,
            max_bytes,
            complete_from,
        }
    }

    fn store(&mut self, msg: &Arc<Message>) {
        if self.max_messages == 0 {
            self.complete_from = self.complete_from.max(msg.seq + 1);
            return;
        }
        // Messages arrive almost in sequence order (publishers take their
        // numbers concurrently): insert from the back.
        let at = self
            .items
            .iter()
            .rev()
            .position(|m| m.seq < msg.seq)
            .map_or(0, |from_back| self.items.len() - from_back);
        self.items.insert(at, msg.clone());
        self.bytes += msg.queued_bytes();
        while self.items.len() > self.max_messages
            || (self.bytes > self.max_bytes && !self.items.is_empty())
        {
            if let Some(old) = self.items.pop_front() {
                self.bytes -= old.queued_bytes();
                self.complete_from = self.complete_from.max(old.seq + 1);
            }
        }
    }

    fn complete_for(&self, h: Horizon) -> bool {
        h >= self.complete_from
    }

    /// Messages at or after `h`, ascending.
    fn since(&self, h: Horizon) -> impl Iterator<Item = &Arc<Message>> {
        let from = self.items.partition_point(|m| m.seq < h);
        self.items.range(from..)
    }
}

/// A restart in progress.
struct Rebuilding {
    /// Queues whose topics are still awaited (`None`: the supervisor has not
    /// restarted the shard yet).
    awaiting: Option<FastMap<u64, QueueRef>>,
    /// Routes held back until the table is whole again.
    deferred: Vec<Route>,
    /// The topics held before the failure (a proxy's observer is told the
    /// difference).
    previous: FastSet<Bytes>,
    since: Instant,
}

/// One router shard.
pub struct RouterShard {
    index: usize,
    shards: usize,
    node: Arc<Node>,
    clock: Arc<SeqClock>,
    topics: FastMap<Bytes, SubList>,
    subscriptions: usize,
    buffer: RetroBuffer,
    observer: Option<Arc<dyn TopicObserver>>,
    supervisor: Recipient<ShardDown>,
    rebuilding: Option<Box<Rebuilding>>,
    /// Changes to the node's (topics, subscriptions) counts not yet published.
    delta: (i64, i64),
}

impl RouterShard {
    /// `born`: a number the pool took from `clock` before any client could
    /// connect (the shard itself is made later, on its arbiter, perhaps
    /// after a client registered): the buffer is complete from there.
    pub fn new(
        index: usize,
        node: Arc<Node>,
        clock: Arc<SeqClock>,
        born: Horizon,
        observer: Option<Arc<dyn TopicObserver>>,
        supervisor: Recipient<ShardDown>,
    ) -> Self {
        let s = &node.settings;
        // A proxy's buffers need only prove that nothing *this process*
        // published was lost (its upstreams replay the rest), and before it
        // started it published nothing: complete from the beginning of time.
        let complete_from = if observer.is_some() { 0 } else { born };
        let buffer = RetroBuffer::new(
            s.messages_stored_per_router_shard,
            s.max_retro_bytes_per_router_shard,
            complete_from,
        );
        RouterShard {
            index,
            shards: s.num_router_shards.max(1),
            node: node.clone(),
            clock,
            topics: FastMap::default(),
            subscriptions: 0,
            buffer,
            observer,
            supervisor,
            rebuilding: None,
            delta: (0, 0),
        }
    }

    fn route(&mut self, msg: Route) {
        let fault = self.node.settings.fault_injection;
        let mut lists = Vec::with_capacity(msg.items.len());
        let retro_before = self.buffer.bytes;
        for item in &msg.items {
            self.buffer.store(&item.msg);
            for i in item.owned.iter() {
                let topic = &item.msg.topics[i as usize];
                if fault && &topic[..] == FAULT_SHARD_PANIC {
                    panic!("fault injection: router shard {} panicked", self.index);
                }
                if fault && &topic[..] == FAULT_SHARD_STALL {
                    std::thread::sleep(std::time::Duration::from_secs(1));
                }
                lists.push(self.topics.get(topic).cloned());
            }
        }
        self.retro_bytes_changed(retro_before);
        msg.reply_to.do_send(Routed {
            batch: msg.batch,
            shard: self.index,
            lists: Ok(lists),
        });
    }

    /// Keeps the node-wide `retro_bytes` counter in step with the buffer.
    fn retro_bytes_changed(&self, before: usize) {
        let now = self.buffer.bytes;
        let c = &self.node.counters.retro_bytes;
        if now > before {
            c.fetch_add((now - before) as u64, Ordering::Relaxed);
        } else if now < before {
            c.fetch_sub((before - now) as u64, Ordering::Relaxed);
        }
    }

    /// Would adding these topics pass `max_topics_per_node`? Checked
    /// before any is added, so a refused chunk applies nothing. Shards
    /// check concurrently: the node may pass the cap by what other shards
    /// add at the same moment (at most a chunk each).
    fn over_topic_cap(&self, add: &[Bytes]) -> bool {
        let cap = self.node.settings.max_topics_per_node as u64;
        let c = &self.node.counters;
        let held = c.topics.load(Ordering::Relaxed) + c.topics_reserved.load(Ordering::Relaxed);
        if held + add.len() as u64 <= cap {
            return false;
        }
        let new = add.iter().filter(|t| !self.topics.contains_key(*t)).count() as u64;
        new > 0 && held + new > cap
    }

    /// Adds `id` to `topic`; `check` guards against adding it twice (while
    /// a restart merges the queues' answers with live changes).
    fn add(&mut self, topic: Bytes, sub: &Sub, check: bool, gained: &mut Vec<Bytes>) {
        use std::collections::hash_map::Entry;
        match self.topics.entry(topic) {
            Entry::Vacant(v) => {
                if self.observer.is_some() {
                    gained.push(v.key().clone());
                }
                v.insert(SubList::One(*sub));
                self.delta.0 += 1;
            }
            Entry::Occupied(mut o) => {
                let list = o.get_mut();
                if check && list.iter().any(|s| s.id == sub.id) {
                    return;
                }
                match list {
                    SubList::One(first) => {
                        *list = SubList::Many(Arc::new(vec![*first, *sub]));
                    }
                    SubList::Many(v) => Arc::make_mut(v).push(*sub),
                }
            }
        }
        self.subscriptions += 1;
        self.delta.1 += 1;
    }

    /// Publishes this handler's changes to the node's topic and
    /// subscription counts (once per message, not per topic).
    fn flush_counts(&mut self) {
        let (t, s) = std::mem::take(&mut self.delta);
        let c = &self.node.counters;
        if t > 0 {
            c.topics.fetch_add(t as u64, Ordering::Relaxed);
        } else if t < 0 {
            c.topics.fetch_sub((-t) as u64, Ordering::Relaxed);
        }
        if s > 0 {
            c.subscriptions.fetch_add(s as u64, Ordering::Relaxed);
        } else if s < 0 {
            c.subscriptions.fetch_sub((-s) as u64, Ordering::Relaxed);
        }
    }

    fn remove(&mut self, topic: &Bytes, id: u64, lost: &mut Vec<Bytes>) {
        let Some(list) = self.topics.get_mut(topic) else {
            return;
        };
        let Some(at) = list.iter().position(|s| s.id == id) else {
            return;
        };
        let emptied = match list {
            SubList::One(_) => true,
            SubList::Many(v) => {
                let v = Arc::make_mut(v);
                v.swap_remove(at);
                if v.len() == 1 {
                    *list = SubList::One(v[0]);
                }
                false
            }
        };
        self.subscriptions -= 1;
        self.delta.1 -= 1;
        if emptied {
            self.topics.remove(topic);
            self.delta.0 -= 1;
            if self.observer.is_some() {
                lost.push(topic.clone());
            }
        }
    }

    fn subscribe(&mut self, msg: Subscribe) -> Replay {
        let fault = self.node.settings.fault_injection;
        let sub = Sub {
            id: msg.id,
            home: msg.home,
        };
        let check = self.rebuilding.is_some();
        if msg.reserved.is_none() && self.over_topic_cap(&msg.add) {
            return Replay {
                over_topic_cap: true,
                ..Replay::default()
            };
        }
        let mut gained = Vec::new();
        for topic in msg.add {
            if fault && &topic[..] == FAULT_SHARD_PANIC {
                panic!("fault injection: router shard {} panicked", self.index);
            }
            self.add(topic, &sub, check, &mut gained);
        }
        self.flush_counts();
        if let Some(obs) = self.observer.as_ref().filter(|_| !gained.is_empty()) {
            obs.gained(gained);
        }
        let Some((horizon, topics)) = msg.replay else {
            return Replay {
                complete: true,
                ..Replay::default()
            };
        };
        if !self.buffer.complete_for(horizon) {
            return Replay::default();
        }
        let wanted: FastSet<&Bytes> = topics.iter().collect();
        let messages = self
            .buffer
            .since(horizon)
            .filter(|m| m.publisher != msg.id && m.topics.iter().any(|t| wanted.contains(t)))
            .cloned()
            .collect();
        Replay {
            complete: true,
            messages,
            over_topic_cap: false,
        }
    }

    fn unsubscribe(&mut self, msg: Unsubscribe) {
        let mut lost = Vec::new();
        for topic in &msg.topics {
            self.remove(topic, msg.id, &mut lost);
        }
        self.flush_counts();
        // A table keeps its size when emptied: once it is an eighth full,
        // give the memory back (the rehash moves only the few left).
        let (len, capacity) = (self.topics.len(), self.topics.capacity());
        if capacity > SHRINK_FROM && len * 8 < capacity {
            self.topics.shrink_to(len * 2);
        }
        if let Some(obs) = self.observer.as_ref().filter(|_| !lost.is_empty()) {
            obs.lost(lost);
        }
    }

    /// Forgets everything after a failure and waits for the supervisor.
    fn reset(&mut self) {
        self.flush_counts();
        let previous: FastSet<Bytes> = self.topics.keys().cloned().collect();
        let c = &self.node.counters;
        c.topics
            .fetch_sub(self.topics.len() as u64, Ordering::Relaxed);
        c.subscriptions
            .fetch_sub(self.subscriptions as u64, Ordering::Relaxed);
        c.retro_bytes
            .fetch_sub(self.buffer.bytes as u64, Ordering::Relaxed);
        self.topics = FastMap::default();
        self.subscriptions = 0;
        let s = &self.node.settings;
        self.buffer = RetroBuffer::new(
            s.messages_stored_per_router_shard,
            s.max_retro_bytes_per_router_shard,
            self.clock.next(),
        );
        let deferred = self
            .rebuilding
            .take()
            .map(|r| r.deferred)
            .unwrap_or_default();
        self.rebuilding = Some(Box::new(Rebuilding {
            awaiting: None,
            deferred,
            previous,
            since: Instant::now(),
        }));
    }

    /// Routes again once every queue answered (or is gone).
    fn try_finish(&mut self, ctx: &mut Context<Self>) {
        let Some(r) = self.rebuilding.as_mut() else {
            return;
        };
        let Some(awaiting) = r.awaiting.as_mut() else {
            return;
        };
        awaiting.retain(|_, q| q.alive());
        if !awaiting.is_empty() && r.since.elapsed() < RESYNC_PATIENCE {
            return;
        }
        let r = self.rebuilding.take().expect("rebuilding");
        if let Some(obs) = &self.observer {
            let gained: Vec<Bytes> = self
                .topics
                .keys()
                .filter(|t| !r.previous.contains(*t))
                .cloned()
                .collect();
            let lost: Vec<Bytes> = r
                .previous
                .iter()
                .filter(|t| !self.topics.contains_key(*t))
                .cloned()
                .collect();
            if !gained.is_empty() {
                obs.gained(gained);
            }
            if !lost.is_empty() {
                obs.lost(lost);
            }
        }
        for route in r.deferred {
            self.guarded_route(route, ctx);
        }
    }

    fn guarded_route(&mut self, msg: Route, ctx: &mut Context<Self>) {
        if let Some(r) = self.rebuilding.as_mut() {
            r.deferred.push(msg);
            return;
        }
        let (reply_to, batch) = (msg.reply_to.clone(), msg.batch);
        if guard(self, ctx, |a, _| a.route(msg)).is_none() {
            reply_to.do_send(Routed {
                batch,
                shard: self.index,
                lists: Err(ShardFailed),
            });
        }
    }
}

impl Actor for RouterShard {
    type Context = Context<Self>;
}

impl Supervised for RouterShard {
    fn failed(&mut self, _ctx: &mut Context<Self>, why: Panicked) {
        warn!(self.node.log, "router shard failed; waiting for its supervisor";
            "shard" => self.index, "panic" => %why);
        self.reset();
        self.supervisor.do_send(ShardDown {
            index: self.index,
            why,
        });
    }
}

impl Handler<Route> for RouterShard {
    type Result = ();

    fn handle(&mut self, msg: Route, ctx: &mut Context<Self>) {
        self.guarded_route(msg, ctx);
    }
}

impl Handler<Subscribe> for RouterShard {
    type Result = Result<Replay, ShardFailed>;

    fn handle(&mut self, msg: Subscribe, ctx: &mut Context<Self>) -> Self::Result {
        guard(self, ctx, |a, _| a.subscribe(msg)).ok_or(ShardFailed)
    }
}

impl Handler<Unsubscribe> for RouterShard {
    type Result = ();

    fn handle(&mut self, msg: Unsubscribe, ctx: &mut Context<Self>) {
        guard(self, ctx, |a, _| a.unsubscribe(msg));
    }
}

impl Handler<Restart> for RouterShard {
    type Result = ();

    fn handle(&mut self, msg: Restart, ctx: &mut Context<Self>) {
        if self.rebuilding.is_none() {
            // Restarted without having failed (its supervisor restarted).
            self.reset();
        }
        let me = ctx.address();
        let mut awaiting = FastMap::default();
        for (id, queue) in msg.queues {
            queue.resync(Resync {
                shard: self.index,
                shards: self.shards,
                reply_to: me.clone(),
            });
            awaiting.insert(id, queue);
        }
        if let Some(r) = self.rebuilding.as_mut() {
            r.awaiting = Some(awaiting);
            r.since = Instant::now();
        }
        ctx.run_later(RESYNC_PATIENCE, |act, ctx| act.try_finish(ctx));
        self.try_finish(ctx);
    }
}

impl Handler<ResyncReply> for RouterShard {
    type Result = ();

    fn handle(&mut self, msg: ResyncReply, ctx: &mut Context<Self>) {
        let sub = Sub {
            id: msg.id,
            home: msg.home,
        };
        let mut ignored = Vec::new();
        for topic in msg.topics {
            debug_assert_eq!(shard_of(&topic, self.shards), self.index);
            self.add(topic, &sub, true, &mut ignored);
        }
        self.flush_counts();
        if let Some(awaiting) = self.rebuilding.as_mut().and_then(|r| r.awaiting.as_mut()) {
            awaiting.remove(&msg.id);
        }
        self.try_finish(ctx);
    }
}

impl Handler<Settle> for RouterShard {
    type Result = ();

    fn handle(&mut self, _: Settle, _ctx: &mut Context<Self>) {}
}

impl Handler<DumpTopics> for RouterShard {
    type Result = MessageResult<DumpTopics>;

    fn handle(&mut self, _: DumpTopics, _ctx: &mut Context<Self>) -> Self::Result {
        MessageResult(
            self.topics
                .iter()
                .map(|(t, s)| (t.clone(), s.len()))
                .collect(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(seq: u64) -> Arc<Message> {
        Arc::new(Message::new(
            seq,
            1,
            vec![Bytes::from_static(b"t")],
            Bytes::from_static(b"p"),
        ))
    }

    #[test]
    fn the_buffer_stays_sorted_and_evicts_the_oldest() {
        let mut b = RetroBuffer::new(3, usize::MAX, 0);
        for s in [10, 12, 11, 13] {
            b.store(&m(s));
        }
        let seqs: Vec<u64> = b.items.iter().map(|m| m.seq).collect();
        assert_eq!(seqs, vec![11, 12, 13]);
        assert!(!b.complete_for(10));
        assert!(b.complete_for(11));
        assert_eq!(b.since(12).map(|m| m.seq).collect::<Vec<_>>(), vec![12, 13]);
    }

    #[test]
    fn the_buffer_is_bounded_by_bytes_too() {
        let per = m(1).queued_bytes();
        let mut b = RetroBuffer::new(100, per * 2, 0);
        for s in 1..=5 {
            b.store(&m(s));
        }
        assert_eq!(b.items.len(), 2);
        assert_eq!(b.bytes, per * 2);
        assert!(b.complete_for(4) && !b.complete_for(3));
    }

    #[test]
    fn a_zero_sized_buffer_is_never_complete_after_a_message() {
        let mut b = RetroBuffer::new(0, usize::MAX, 0);
        b.store(&m(5));
        assert!(!b.complete_for(5));
        assert!(b.complete_for(6));
    }
}
