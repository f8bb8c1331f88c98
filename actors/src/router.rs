//! The router-shard pool: topic → subscribers tables and the retro buffers.
//!
//! Topics are spread over `num_router_shards` shards by a stable hash. Each
//! shard is a table behind its own lock, and the hot paths run *in the
//! calling connection's thread* under the locks of exactly the shards a
//! request touches, always taken in ascending shard order. That is what buys
//! the SPEC's **[beyond]** guarantees without a coordination protocol:
//!
//! - a message naming topics on several shards is routed while all of them
//!   are held, so each subscriber gets **one** entry listing every topic of
//!   it that it holds;
//! - a (retro) subscription adds the subscriber and reads the retro buffers
//!   while the same locks are held, so every message is either in the replay
//!   or delivered live, never both and never neither;
//! - a node-wide sequence number taken under the locks orders messages and
//!   makes `register` horizons exact.
//!
//! A panic while a shard is held poisons its lock; the next user of the shard
//! rebuilds it from the clients' subscription sets (the clients are the
//! source of truth), clears the retro buffer and marks it complete only from
//! now on, and tells the supervisor (which counts restarts and escalates).

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;

use crate::client::{lock, ClientShared, FastMap, FastSet, Pushed};
use crate::message::{Delivery, Message};

/// Where a replay starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Horizon {
    /// `register`: exactly the messages with a sequence number at or after this.
    Seq(u64),
    /// `retro_subscribe`: messages published at or after this many
    /// nanoseconds since the Unix epoch (may be negative).
    TimeNs(i128),
}

/// Which topics a replay covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplayScope {
    /// After `register`: only the topics this subscribe adds, and never a
    /// message that matched a topic already held (it was delivered live).
    NewTopics,
    /// `retro_subscribe`: every requested topic (at-least-once).
    Requested,
}

/// What a subscribe answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Subscribed {
    /// Subscribed, and the replay (if any) is complete.
    Complete { replayed: usize },
    /// Subscribed, but the node cannot prove nothing was lost since the
    /// horizon: `NOT_FOUND`, nothing replayed.
    Incomplete,
}

/// What one publish did.
#[derive(Debug, Clone, Copy, Default)]
pub struct Published {
    /// Subscribers the message was queued for.
    pub recipients: usize,
    /// Subscribers whose inbox overflowed on this message.
    pub overflowed: usize,
}

/// Wall-clock nanoseconds that never go backwards within this process.
#[derive(Debug)]
pub struct Clock {
    wall_at_start_ns: u64,
    start: Instant,
}

impl Clock {
    pub fn new() -> Self {
        let wall = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        Clock {
            wall_at_start_ns: wall,
            start: Instant::now(),
        }
    }

    /// Nanoseconds since the Unix epoch.
    pub fn now_ns(&self) -> u64 {
        self.wall_at_start_ns + self.start.elapsed().as_nanos() as u64
    }
}

impl Default for Clock {
    fn default() -> Self {
        Self::new()
    }
}

/// The clients the node holds, by id: what a restarted shard is rebuilt from.
#[derive(Default)]
pub struct Registry {
    clients: Mutex<FastMap<u64, Arc<ClientShared>>>,
}

impl Registry {
    pub fn insert(&self, client: Arc<ClientShared>) {
        lock(&self.clients).insert(client.id, client);
    }

    pub fn remove(&self, id: u64) -> Option<Arc<ClientShared>> {
        lock(&self.clients).remove(&id)
    }

    pub fn get(&self, id: u64) -> Option<Arc<ClientShared>> {
        lock(&self.clients).get(&id).cloned()
    }

    pub fn len(&self) -> usize {
        lock(&self.clients).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Calls `f` on every client (under the registry lock: keep `f` short).
    pub fn for_each(&self, mut f: impl FnMut(&Arc<ClientShared>)) {
        for c in lock(&self.clients).values() {
            f(c);
        }
    }

    /// A snapshot of every client, by ascending id.
    pub fn all(&self) -> Vec<Arc<ClientShared>> {
        let mut v: Vec<_> = lock(&self.clients).values().cloned().collect();
        v.sort_by_key(|c| c.id);
        v
    }
}

/// One shard's table.
struct ShardState {
    /// Topic → its subscribers, in subscription order.
    topics: FastMap<Bytes, Vec<Arc<ClientShared>>>,
    /// The retro buffer: the newest messages that named a topic of this
    /// shard, oldest first (ascending `seq`).
    buffer: VecDeque<Arc<Message>>,
    /// The buffer is complete for `register` horizons at or after this seq.
    complete_from_seq: u64,
    /// ... and for `retro_subscribe` horizons at or after this time.
    complete_from_ns: u64,
}

impl ShardState {
    fn new(seq: u64, now_ns: u64) -> Self {
        ShardState {
            topics: FastMap::default(),
            buffer: VecDeque::new(),
            complete_from_seq: seq,
            complete_from_ns: now_ns,
        }
    }

    fn store(&mut self, msg: &Arc<Message>, capacity: usize) {
        self.buffer.push_back(msg.clone());
        while self.buffer.len() > capacity {
            if let Some(old) = self.buffer.pop_front() {
                self.complete_from_seq = self.complete_from_seq.max(old.seq + 1);
                self.complete_from_ns = self.complete_from_ns.max(old.time_ns + 1);
            }
        }
    }

    fn complete_for(&self, h: Horizon) -> bool {
        match h {
            Horizon::Seq(s) => s >= self.complete_from_seq,
            Horizon::TimeNs(t) => t >= self.complete_from_ns as i128,
        }
    }
}

fn after(msg: &Message, h: Horizon) -> bool {
    match h {
        Horizon::Seq(s) => msg.seq >= s,
        Horizon::TimeNs(t) => msg.time_ns as i128 >= t,
    }
}

/// A routing operation panicked; the shards it held were rebuilt.
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

/// Called with a shard's index each time it is rebuilt after a failure.
pub type RestartHook = Box<dyn Fn(usize) + Send + Sync>;

/// What a proxy node (`crate::proxy`) must hear from the router to mirror
/// its clients' topics upstream and to forward their publishes. Set once,
/// before clients connect, with [`Router::set_observer`]; a plain node has
/// none and pays one branch per publish for the possibility.
///
/// Every method is called **while the shard locks of the topics concerned
/// are held**, so for any one topic the calls come in the order in which
/// the changes happened. Implementations must therefore be quick and must
/// not block or call back into the router: a non-blocking `do_send` is the
/// intended body.
pub trait TopicObserver: Send + Sync {
    /// These topics just gained their first local subscriber.
    fn gained(&self, topics: Vec<Bytes>);
    /// These topics just lost their last local subscriber.
    fn lost(&self, topics: Vec<Bytes>);
    /// A local client published `msg`. Not called for messages relayed
    /// from upstream ([`Router::publish_relayed`]).
    fn published(&self, msg: &Arc<Message>);
}

/// The router-shard pool.
pub struct Router {
    shards: Vec<Mutex<ShardState>>,
    /// The next message's sequence number.
    seq: AtomicU64,
    /// Messages each shard's retro buffer keeps.
    buffer_capacity: usize,
    /// Publish timestamps.
    pub clock: Clock,
    /// The clients, for rebuilding a shard.
    pub registry: Arc<Registry>,
    /// When the pool started (nanoseconds since the epoch).
    pub started_ns: u64,
    restarts: AtomicU64,
    on_restart: OnceLock<RestartHook>,
    /// The proxy's ear, if this node is a proxy (see [`TopicObserver`]).
    observer: OnceLock<Arc<dyn TopicObserver>>,
}

/// FNV-1a, 64 bits: stable across processes and runs (topic placement on
/// shards and, on proxies, on upstreams must not change with a restart).
pub fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= b as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// Stable, cheap topic → shard hash.
pub fn shard_of(topic: &[u8], shards: usize) -> usize {
    (fnv1a(topic) % shards as u64) as usize
}

impl Router {
    pub fn new(shards: usize, buffer_capacity: usize, registry: Arc<Registry>) -> Self {
        let clock = Clock::new();
        let now = clock.now_ns();
        Router {
            shards: (0..shards.max(1))
                .map(|_| Mutex::new(ShardState::new(0, now)))
                .collect(),
            seq: AtomicU64::new(0),
            buffer_capacity,
            clock,
            registry,
            started_ns: now,
            restarts: AtomicU64::new(0),
            on_restart: OnceLock::new(),
            observer: OnceLock::new(),
        }
    }

    /// Makes this router a proxy's: `observer` hears of topics gained and
    /// lost and of local publishes (see [`TopicObserver`]). Call once,
    /// before any client connects.
    ///
    /// A proxy's retro buffers only have to prove that no message *this
    /// process* published was lost (its upstream replays the rest, see
    /// `crate::proxy`), and before it started it published nothing: so its
    /// buffers count as complete from the beginning of time, until they
    /// evict a message or a shard is rebuilt.
    pub fn set_observer(&self, observer: Arc<dyn TopicObserver>) {
        if self.observer.set(observer).is_ok() {
            for i in 0..self.shards.len() {
                let mut g = self.lock_shard(i);
                if g.buffer.is_empty() && self.restarts() == 0 {
                    g.complete_from_seq = 0;
                    g.complete_from_ns = 0;
                }
            }
        }
    }

    /// Whether this router is a proxy's.
    pub fn is_proxy(&self) -> bool {
        self.observer.get().is_some()
    }

    /// Sets what to call after a shard was rebuilt (the supervisor's ear).
    pub fn set_restart_hook(&self, hook: RestartHook) {
        let _ = self.on_restart.set(hook);
    }

    pub fn num_shards(&self) -> usize {
        self.shards.len()
    }

    pub fn shard_of(&self, topic: &[u8]) -> usize {
        shard_of(topic, self.shards.len())
    }

    /// Shard rebuilds so far.
    pub fn restarts(&self) -> u64 {
        self.restarts.load(Ordering::Relaxed)
    }

    /// The horizon a `register` now stands for.
    pub fn register_horizon(&self) -> Horizon {
        Horizon::Seq(self.seq.load(Ordering::SeqCst))
    }

    /// Locks shard `i`, rebuilding it first if a panic poisoned it.
    fn lock_shard(&self, i: usize) -> MutexGuard<'_, ShardState> {
        match self.shards[i].lock() {
            Ok(guard) => guard,
            Err(poisoned) => {
                let mut guard = poisoned.into_inner();
                self.rebuild(i, &mut guard);
                self.shards[i].clear_poison();
                self.restarts.fetch_add(1, Ordering::Relaxed);
                if let Some(hook) = self.on_restart.get() {
                    hook(i);
                }
                guard
            }
        }
    }

    /// Runs a routing operation as a supervised unit: a panic inside it
    /// (a router shard failing) is caught, the poisoned shards are rebuilt
    /// at once ([`Router::heal`]), and the caller gets [`ShardFailed`] to
    /// answer with instead of losing its connection.
    pub fn supervised<T>(&self, op: impl FnOnce() -> T) -> Result<T, ShardFailed> {
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(op)).map_err(|_| {
            self.heal();
            ShardFailed
        })
    }

    /// Rebuilds now every shard a panic poisoned, rather than at its next
    /// use: called where a panic in routing code is caught, so the restart
    /// (and its count towards escalation) happens when the failure does.
    pub fn heal(&self) {
        for i in 0..self.shards.len() {
            if self.shards[i].is_poisoned() {
                drop(self.lock_shard(i));
            }
        }
    }

    /// Restores shard `i`'s table from the clients' subscriptions; its retro
    /// buffer starts empty and complete only from now.
    fn rebuild(&self, i: usize, state: &mut ShardState) {
        let n = self.shards.len();
        let mut fresh = ShardState::new(self.seq.load(Ordering::SeqCst), self.clock.now_ns());
        for client in self.registry.all() {
            if client.is_closed() {
                continue;
            }
            let subs = lock(&client.subscriptions);
            for topic in subs.iter().filter(|t| shard_of(t, n) == i) {
                fresh
                    .topics
                    .entry(topic.clone())
                    .or_default()
                    .push(client.clone());
            }
        }
        if let Some(obs) = self.observer.get() {
            // The failed operation may have changed a client's topics
            // without telling the observer: tell it the difference now.
            let gained: Vec<Bytes> = fresh
                .topics
                .keys()
                .filter(|t| !state.topics.contains_key(*t))
                .cloned()
                .collect();
            let lost: Vec<Bytes> = state
                .topics
                .keys()
                .filter(|t| !fresh.topics.contains_key(*t))
                .cloned()
                .collect();
            if !gained.is_empty() {
                obs.gained(gained);
            }
            if !lost.is_empty() {
                obs.lost(lost);
            }
        }
        *state = fresh;
    }

    /// Locks the shards of `topics`, ascending; returns the guards and, per
    /// topic, the index of its guard.
    fn lock_for(&self, topics: &[Bytes]) -> (Vec<MutexGuard<'_, ShardState>>, Vec<usize>) {
        let n = self.shards.len();
        if topics.len() == 1 {
            // The common case, without the sorting below.
            return (vec![self.lock_shard(shard_of(&topics[0], n))], vec![0]);
        }
        let of: Vec<usize> = topics.iter().map(|t| shard_of(t, n)).collect();
        let mut ids = of.clone();
        ids.sort_unstable();
        ids.dedup();
        let guards = ids.iter().map(|&i| self.lock_shard(i)).collect();
        let slot = of
            .iter()
            .map(|s| ids.binary_search(s).unwrap_or(0))
            .collect();
        (guards, slot)
    }

    /// Publishes one message from client `publisher`: stores it in the retro
    /// buffer of each shard it touches and queues it for every subscriber but
    /// the publisher, one entry per subscriber. On a proxy, the observer
    /// forwards it upstream.
    pub fn publish(&self, publisher: u64, topics: Vec<Bytes>, payload: Bytes) -> Published {
        self.route(publisher, topics, payload, true)
    }

    /// Publishes a message that a proxy's upstream link received (`via` is
    /// the link's id, which no local client has, so every local subscriber
    /// gets it). Unlike [`Router::publish`] it is not forwarded upstream
    /// again.
    pub fn publish_relayed(&self, via: u64, topics: Vec<Bytes>, payload: Bytes) -> Published {
        self.route(via, topics, payload, false)
    }

    fn route(&self, publisher: u64, topics: Vec<Bytes>, payload: Bytes, local: bool) -> Published {
        let mut out = Published::default();
        if topics.is_empty() {
            return out;
        }
        // Requests are zero-copy slices of a connection's read buffer; keep
        // small parts in allocations of their own so that a queued or
        // buffered message does not pin the whole read buffer.
        let topics: Vec<Bytes> = topics.iter().map(detach).collect();
        let payload = if payload.len() < DETACH_BELOW {
            detach(&payload)
        } else {
            payload
        };
        let (mut guards, slot) = self.lock_for(&topics);
        let seq = self.seq.fetch_add(1, Ordering::SeqCst);
        let msg = Arc::new(Message::new(
            seq,
            self.clock.now_ns(),
            publisher,
            topics,
            payload,
        ));
        for g in guards.iter_mut() {
            g.store(&msg, self.buffer_capacity);
        }
        if local {
            if let Some(obs) = self.observer.get() {
                obs.published(&msg);
            }
        }
        let mut count = |pushed: Pushed| {
            out.recipients += 1;
            if pushed == Pushed::Overflowed {
                out.overflowed += 1;
            }
        };
        if msg.topics.len() == 1 {
            if let Some(subs) = guards[0].topics.get(&msg.topics[0]) {
                for c in subs.iter().filter(|c| c.id != publisher) {
                    count(c.push(Delivery::All(msg.clone())));
                }
            }
            return out;
        }
        // Several topics: one entry per subscriber listing the topics it holds.
        if msg.topics.len() <= 64 {
            // The held topics as a bit set; the header is written at poll
            // time from it.
            for (c, mask) in recipients(&msg, &guards, &slot, publisher, |m: &mut u64, i| {
                *m |= 1 << i
            }) {
                count(c.push(Message::delivery_for_mask(&msg, mask)));
            }
        } else {
            for (c, held) in recipients(&msg, &guards, &slot, publisher, |v: &mut Vec<u32>, i| {
                v.push(i as u32)
            }) {
                count(c.push(Message::delivery(&msg, &held)));
            }
        }
        out
    }

    /// Subscribes `client` to `topics`; with a horizon, also replays what the
    /// retro buffers hold since it (see [`ReplayScope`]).
    pub fn subscribe(
        &self,
        client: &Arc<ClientShared>,
        topics: &[Bytes],
        replay: Option<(Horizon, ReplayScope)>,
    ) -> Subscribed {
        let (mut guards, slot) = self.lock_for(topics);
        let mut subs = lock(&client.subscriptions);
        let mut added: FastSet<Bytes> = FastSet::default();
        let observer = self.observer.get();
        let mut gained = Vec::new();
        for (i, topic) in topics.iter().enumerate() {
            if subs.insert(topic.clone()) {
                let topic = topic.clone();
                if replay.is_some() {
                    added.insert(topic.clone());
                }
                // Most topics have one subscriber: don't reserve for four.
                let holders = guards[slot[i]]
                    .topics
                    .entry(topic.clone())
                    .or_insert_with(|| Vec::with_capacity(1));
                if observer.is_some() && holders.is_empty() {
                    gained.push(topic);
                }
                holders.push(client.clone());
            }
        }
        if let Some(obs) = observer.filter(|_| !gained.is_empty()) {
            obs.gained(gained);
        }
        let Some((horizon, scope)) = replay else {
            return Subscribed::Complete { replayed: 0 };
        };
        if !guards.iter().all(|g| g.complete_for(horizon)) {
            return Subscribed::Incomplete;
        }
        let wanted: FastSet<&Bytes> = match scope {
            ReplayScope::NewTopics => added.iter().collect(),
            ReplayScope::Requested => topics.iter().collect(),
        };
        if wanted.is_empty() {
            return Subscribed::Complete { replayed: 0 };
        }
        let mut found: BTreeMap<u64, Arc<Message>> = BTreeMap::new();
        for g in &guards {
            for msg in g.buffer.iter().rev().take_while(|m| after(m, horizon)) {
                if msg.publisher == client.id || found.contains_key(&msg.seq) {
                    continue;
                }
                if !msg.topics.iter().any(|t| wanted.contains(t)) {
                    continue;
                }
                let seen_live = scope == ReplayScope::NewTopics
                    && msg
                        .topics
                        .iter()
                        .any(|t| subs.contains(t) && !added.contains(t));
                if !seen_live {
                    found.insert(msg.seq, msg.clone());
                }
            }
        }
        let replayed = found.len();
        let deliveries = found.values().map(|msg| {
            let matched: Vec<u32> = (0..msg.topics.len() as u32)
                .filter(|&i| subs.contains(&msg.topics[i as usize]))
                .collect();
            Message::delivery(msg, &matched)
        });
        client.push_many(deliveries);
        drop(subs);
        drop(guards);
        Subscribed::Complete { replayed }
    }

    /// Removes `topics` from `client`'s subscriptions; unknown ones are ignored.
    pub fn unsubscribe(&self, client: &Arc<ClientShared>, topics: &[Bytes]) {
        let (mut guards, slot) = self.lock_for(topics);
        let mut subs = lock(&client.subscriptions);
        let observer = self.observer.get();
        let mut lost = Vec::new();
        for (i, topic) in topics.iter().enumerate() {
            if subs.remove(topic)
                && remove_subscriber(&mut guards[slot[i]], topic, client.id)
                && observer.is_some()
            {
                lost.push(topic.clone());
            }
        }
        if let Some(obs) = observer.filter(|_| !lost.is_empty()) {
            obs.lost(lost);
        }
    }

    /// Removes every trace of a client (its connection is gone).
    pub fn remove_client(&self, client: &Arc<ClientShared>) {
        client.close();
        let topics: Vec<Bytes> = lock(&client.subscriptions).drain().collect();
        let n = self.shards.len();
        let mut by_shard: Vec<Vec<&Bytes>> = vec![Vec::new(); n];
        for t in &topics {
            by_shard[shard_of(t, n)].push(t);
        }
        for (i, ts) in by_shard.iter().enumerate().filter(|(_, ts)| !ts.is_empty()) {
            let mut g = self.lock_shard(i);
            let observer = self.observer.get();
            let mut lost = Vec::new();
            for t in ts {
                if remove_subscriber(&mut g, t, client.id) && observer.is_some() {
                    lost.push((*t).clone());
                }
            }
            if let Some(obs) = observer.filter(|_| !lost.is_empty()) {
                obs.lost(lost);
            }
        }
        self.registry.remove(client.id);
    }

    /// (topics, subscriptions) over all shards.
    pub fn counts(&self) -> (usize, usize) {
        let mut topics = 0;
        let mut subs = 0;
        for i in 0..self.shards.len() {
            let g = self.lock_shard(i);
            topics += g.topics.len();
            subs += g.topics.values().map(Vec::len).sum::<usize>();
        }
        (topics, subs)
    }

    /// Every topic with its subscriber count, most subscribers first.
    pub fn topic_counts(&self) -> Vec<(Bytes, usize)> {
        let mut all = Vec::new();
        for i in 0..self.shards.len() {
            let g = self.lock_shard(i);
            all.extend(g.topics.iter().map(|(t, s)| (t.clone(), s.len())));
        }
        all.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        all
    }

    /// Fault injection: panics while holding shard `i`, as a bug in routing
    /// code would. The shard is rebuilt by its next user.
    pub fn inject_shard_panic(&self, i: usize) {
        let _guard = self.lock_shard(i % self.shards.len());
        panic!("fault injection: router shard {i} panicked");
    }
}

/// Payloads shorter than this are copied out of the request buffer.
const DETACH_BELOW: usize = 16 * 1024;

/// A copy of `b` in an allocation of its own.
fn detach(b: &Bytes) -> Bytes {
    Bytes::copy_from_slice(b)
}

/// Removes subscriber `id` of `topic`; true if that left the topic with none.
/// The subscribers (but the publisher) of any topic of a multi-topic
/// message, each once, in first-seen order, with `mark` applied for each
/// index into `msg.topics` that it holds.
fn recipients<'g, T: Default>(
    msg: &Message,
    guards: &'g [MutexGuard<'_, ShardState>],
    slot: &[usize],
    publisher: u64,
    mark: impl Fn(&mut T, usize),
) -> Vec<(&'g Arc<ClientShared>, T)> {
    // Sized once for the most recipients there can be: growing these maps
    // showed in profiles of wide multi-topic fan-out.
    let most: usize = msg
        .topics
        .iter()
        .enumerate()
        .map(|(i, t)| guards[slot[i]].topics.get(t).map_or(0, Vec::len))
        .sum();
    let mut order: Vec<(&Arc<ClientShared>, T)> = Vec::with_capacity(most);
    let mut index: FastMap<u64, usize> =
        FastMap::with_capacity_and_hasher(most, Default::default());
    for (i, topic) in msg.topics.iter().enumerate() {
        let Some(subs) = guards[slot[i]].topics.get(topic) else {
            continue;
        };
        for c in subs.iter().filter(|c| c.id != publisher) {
            let at = *index.entry(c.id).or_insert_with(|| {
                order.push((c, T::default()));
                order.len() - 1
            });
            mark(&mut order[at].1, i);
        }
    }
    order
}

fn remove_subscriber(state: &mut ShardState, topic: &Bytes, id: u64) -> bool {
    if let Some(subs) = state.topics.get_mut(topic) {
        if let Some(at) = subs.iter().position(|c| c.id == id) {
            subs.swap_remove(at);
        }
        if subs.is_empty() {
            state.topics.remove(topic);
            return true;
        }
    }
    false
}
