//! The client queue actor ("waitress" in the original): one per client, on
//! its connection's arbiter. It alone owns the client's subscriptions and
//! inbox; router shards, the connection and the proxy reach them only
//! through its mailbox.
//!
//! - Subscription changes ([`Ask`]) are applied to its own set first (the
//!   source of truth a restarted shard is rebuilt from, [`Resync`]), then
//!   sent to the shards that own the topics. Once a client reads `STORED`
//!   every later publish reaches it: a plain subscribe (no replay, no
//!   upstream, small) is answered as soon as its parts are in the shards'
//!   mailboxes, which apply them before any later publish, its new topics
//!   reserved under `max_topics_per_node` first
//!   ([`crate::shard::Reservation`]); any other change's answer
//!   (`STORED`, `NOT_FOUND`) waits for every shard. While it waits, the
//!   queue handles nothing else: a poll pipelined behind a subscribe sees
//!   its replay.
//! - A subscribe with a horizon (`register` then `subscribe`, or
//!   `retro_subscribe`) merges the shards' replays by sequence number:
//!   one entry per message, listing every topic of it the client holds.
//!   The replayed sequence numbers are remembered for a while so that a
//!   copy of the same message still in flight on the live path is dropped.
//! - Deliveries are posted on the delivery board of the queue's arbiter
//!   (`crate::board`), which is the front of its inbox: the queue takes
//!   them at the start of each handler, and is woken ([`Bell`]) only when
//!   they would overflow it or, in push mode, to push them. The inbox
//!   is bounded by `max_queue_messages` and `max_queue_bytes`: past either
//!   the client is a slow consumer, its inbox is emptied and its connection
//!   told to close.
//! - A poll ([`Take`]) takes up to [`POLL_BYTES`] of the inbox. One that
//!   finds less than [`GATHER_BELOW`] there (nothing, only if the last
//!   answer carried something) waits `poll_gather_ms` (1 ms by default)
//!   for more first, unless the connection asks something else of the
//!   queue meanwhile.
//! - In push mode ([`Watch`], for dialects that push, such as RESP) the
//!   queue sends the inbox to its connection ([`FromQueue::Pushed`]) as
//!   deliveries arrive, coalesced: at most one push is outstanding, the
//!   next (everything queued meanwhile) goes when the connection says it
//!   wrote the last one ([`PushAck`]). Run inside its connection's task
//!   ([`run_in_task`]), the queue hands a push over instead of mailing
//!   it, and the connection writes it in the same turn. A connection that
//!   cannot write leaves the deliveries in the inbox, whose bounds make it
//!   a slow consumer. A replay is pushed at once, before the subscribe's
//!   answer (by mail, behind what the connection was sent before).
//! - When the connection goes ([`Close`]) or this actor fails, the client
//!   is removed from every shard and the actor stops.
//! - Bounds: a subscribe that would take the client past
//!   `max_subscriptions_per_client` is refused whole (`CLIENT_ERROR too
//!   many subscriptions`); one whose topics new to the node would take it
//!   past `max_topics_per_node` is refused by the shards and undone
//!   (`SERVER_ERROR too many topics on this node`). Every change reaches
//!   a shard in chunks of at most [`SHARD_CHUNK`] topics.
//! - Slices: no turn of this actor does more than [`SLICE`] topics' worth
//!   of work on its own set, so that a client naming half a million topics
//!   does not hold the worker (and every other client on it) for the few
//!   hundred milliseconds that takes at once. A memcached body is checked
//!   and split here ([`Named::Body`]), then inserted or removed, a slice
//!   per turn ([`Sliced`], which yields the thread in between); the set
//!   grows a 64th at a time ([`TopicSet`]); after a `register`, the topics
//!   held are walked for the replay a slice at a time; a leaving client's
//!   set is grouped for the shards by a task of its own, a slice per turn;
//!   large leftovers are dropped the same way ([`discard`]). All of a change
//!   runs in one `ctx.wait`, so none of it is seen half done.

use std::cell::Cell;
use std::collections::BTreeMap;
use std::future::Future;
use std::hash::BuildHasher;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::Poll;
use std::time::{Duration, Instant};

use actix::fut::LocalBoxActorFuture;
use actix::prelude::*;
use bytes::Bytes;
use futures_util::future::join_all;
use hashbrown::hash_table::{self, HashTable};
use kraken_protocol::{BodyError, Response, TopicList};
use slog::{debug, error, info};

use crate::board::{self, Home};
use crate::client::{ClientInfo, FastSet, Kick, POLL_BYTES};
use crate::clients::ClientHandle;
use crate::env::Env;
use crate::guard::{guard, Panicked, Supervised};
use crate::lane::{self, Lane, Permit};
use crate::message::{Delivery, Message};
use crate::router::{shard_of, Horizon, ReplayScope, Router};
use crate::shard::{
    QueueHandle, Replay, Reservation, Resync, ResyncReply, ShardFailed, Subscribe, Unsubscribe,
};

/// Topic that makes a queue actor panic when `fault_injection` is on.
pub const FAULT_QUEUE_PANIC: &[u8] = b"__kraken_fault_queue_panic__";

/// How long replayed sequence numbers (and recent unsubscriptions) are
/// remembered to filter copies still in flight on the live path. A copy
/// is in flight for as long as its publisher takes to gather the shards'
/// answers: microseconds, far below this.
const IN_FLIGHT_WINDOW: Duration = Duration::from_secs(30);

/// Most topics one message to a router shard carries. A larger subscribe,
/// unsubscribe or removal goes to each shard as several messages, each sent
/// once the previous one is handled, so publishes and other clients'
/// changes get their turn in between: no shard is held long by one client.
/// 1024 topics take a shard 0.5-1 ms on a 2-core VM (a table growth aside);
/// 4096 gave an honest client's p99 a tenth more under a big-subscribe
/// attack, two thirds more with the shards on the connection thread.
pub const SHARD_CHUNK: usize = 1024;

/// Most topics a client queue takes from or adds to its own set (or walks)
/// in one turn of a large change; 4096 take about 0.2 ms. A 500,000-topic
/// subscribe is so spread over some 120 turns, between which the worker
/// runs its other actors and polls its sockets.
const SLICE: usize = 4096;

/// A subscription change.
#[derive(Debug)]
pub enum QueueRequest {
    Subscribe(Named),
    Unsubscribe(Named),
    Register,
    /// `retro_subscribe`: the horizon in Unix seconds.
    RetroSubscribe {
        horizon_secs: i64,
        topics: Named,
    },
}

/// The topics a subscription change names.
#[derive(Debug)]
pub enum Named {
    /// Already split (RESP arguments).
    List(Vec<Bytes>),
    /// A memcached body, not yet read: the queue checks it and splits it
    /// [`SLICE`] topics per turn, so that a 16 MiB body (half a million
    /// topics, some 40 ms to split at once) does not hold the worker. A bad
    /// body is refused whole (`CLIENT_ERROR <why>`), nothing of it applied.
    Body(TopicList),
}

impl From<Vec<Bytes>> for Named {
    fn from(topics: Vec<Bytes>) -> Self {
        Named::List(topics)
    }
}

impl Named {
    /// The bytes they take: the body's, or the topics' of a list.
    pub fn bytes(&self) -> usize {
        match self {
            Named::List(topics) => topics.iter().map(Bytes::len).sum(),
            Named::Body(body) => body.len(),
        }
    }

    /// All the topics at once (none for a bad body): for `fault_injection`,
    /// a test setting.
    pub fn all(&self) -> Vec<Bytes> {
        match self {
            Named::List(topics) => topics.clone(),
            Named::Body(body) => body.parse_all().unwrap_or_default(),
        }
    }
}

/// A subscription change from the connection, answered with
/// [`FromQueue::Answer`] carrying the same ticket.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Ask {
    pub ticket: u64,
    pub req: QueueRequest,
}

/// A poll, answered with [`FromQueue::Taken`].
#[derive(Message)]
#[rtype(result = "()")]
pub struct Take {
    pub ticket: u64,
}

/// Switches the queue to push mode (see the module doc).
#[derive(Message)]
#[rtype(result = "()")]
pub struct Watch;

/// The connection wrote the last [`FromQueue::Pushed`]: send what came since.
/// It gives back that batch's vector, emptied, for the board slot to fill
/// next (a push subscriber's batches then allocate nothing).
#[derive(Message)]
#[rtype(result = "()")]
pub struct PushAck(pub Vec<Delivery>);

/// The connection is gone: remove the client everywhere and stop.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Close;

/// Tell this client's connection to close (from the clients' supervisor).
#[derive(Message)]
#[rtype(result = "()")]
pub struct KickClient(pub Kick);

/// This client's topics (`dump_queue_topics`).
#[derive(Message)]
#[rtype(result = "Vec<Bytes>")]
pub struct Topics;

/// A proxy lost these topics irrecoverably: close the client if it holds one.
#[derive(Message)]
#[rtype(result = "bool")]
pub struct KickIfHolds(pub Arc<FastSet<Bytes>>);

/// What the queue tells its connection.
#[derive(Message)]
#[rtype(result = "()")]
pub enum FromQueue {
    Answer {
        ticket: u64,
        response: Response,
    },
    Taken {
        ticket: u64,
        taken: Taken,
    },
    /// Push mode: deliveries to write now (acknowledge with [`PushAck`]).
    Pushed(Vec<Delivery>),
    Kick(Kick),
}

/// A poll's result.
#[derive(Debug)]
pub enum Taken {
    Items(Vec<Delivery>),
    /// The client overflowed its queue: it is a slow consumer.
    Overflowed,
}

/// Most messages a registered client remembers having been queued before
/// its first subscribe; past it, that subscribe answers `NOT_FOUND` (the
/// client reloads) rather than risk replaying one of them again.
const MAX_RECEIVED_WHILE_REGISTERED: usize = 65_536;

/// What `register` remembers.
#[derive(Debug)]
struct Registered {
    /// The exact horizon for this node's own retro buffers.
    at: Horizon,
    /// The wall clock then (ns): on a proxy, the horizon sent upstream.
    wall_ns: u64,
    /// Sequence numbers of the messages queued since (live or replayed):
    /// the replay skips them, whatever topics the client holds by then.
    received: FastSet<u64>,
    /// More than [`MAX_RECEIVED_WHILE_REGISTERED`] were.
    lossy: bool,
}

impl Registered {
    fn note(&mut self, seq: u64) {
        if self.lossy {
            return;
        }
        self.received.insert(seq);
        if self.received.len() > MAX_RECEIVED_WHILE_REGISTERED {
            self.lossy = true;
            self.received = FastSet::default();
        }
    }
}

/// Live copies to drop for a while: replayed messages, and deliveries
/// for topics unsubscribed a moment ago.
#[derive(Default)]
struct InFlight {
    replayed: FastSet<u64>,
    unsubscribed: bool,
    until: Option<Instant>,
}

/// A queue actor's running form: polled, it handles the queue's mailbox
/// and futures, and it resolves once the queue stopped. Dropped before
/// then, it stops the queue (which then leaves everything it joined).
pub type QueueRun = actix::dev::ContextFut<ClientQueue, Context<ClientQueue>>;

thread_local! {
    /// The client whose queue runs now inside its connection's task
    /// ([`run_in_task`]), and the push it handed over (a push is one
    /// batch at most: the next waits for its acknowledgement).
    static IN_TASK: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
    static HANDED: std::cell::RefCell<Option<Vec<Delivery>>> = const { std::cell::RefCell::new(None) };
}

/// Hands `items` to the connection whose task runs this queue now, if it
/// does and holds nothing handed over yet; gives them back otherwise.
fn hand_over(id: u64, items: Vec<Delivery>) -> Option<Vec<Delivery>> {
    if IN_TASK.get() != id {
        return Some(items);
    }
    HANDED.with_borrow_mut(|h| match h {
        None => {
            *h = Some(items);
            None
        }
        Some(_) => Some(items),
    })
}

/// Polls client `id`'s queue inside its connection's task; returns the
/// poll and the push the queue handed over meanwhile.
pub fn run_in_task(
    id: u64,
    run: &mut QueueRun,
    task: &mut std::task::Context<'_>,
) -> (std::task::Poll<()>, Option<Vec<Delivery>>) {
    /// Clears the mark however the poll ends (a panic that escaped it
    /// leaves nothing for the next client: its handover is dropped below).
    struct Mark;
    impl Drop for Mark {
        fn drop(&mut self) {
            IN_TASK.set(0);
        }
    }
    drop(HANDED.take());
    IN_TASK.set(id);
    let mark = Mark;
    let poll = std::future::Future::poll(Pin::new(run), task);
    drop(mark);
    (poll, HANDED.take())
}

/// One client's queue actor.
pub struct ClientQueue {
    env: Arc<Env>,
    /// The worker arbiter this queue (and its connection) runs on, and
    /// its slot on that arbiter's delivery board.
    home: Home,
    info: Arc<ClientInfo>,
    conn: Recipient<FromQueue>,
    subs: TopicSet,
    items: Vec<Delivery>,
    /// Header and payload bytes in `items`.
    bytes: usize,
    overflowed: bool,
    /// Set by `register`; used up by the next subscribe. Boxed: most
    /// clients never register.
    horizon: Option<Box<Registered>>,
    in_flight: Option<Box<InFlight>>,
    /// The client was removed from the shards (closing or failed).
    removed: bool,
    /// Unsubscribes still sending their chunks to the shards (made at the
    /// first that has more than one): a later subscribe waits for them,
    /// so that none of their chunks reaches a shard after it.
    unsubscribing: Option<Rc<Cell<usize>>>,
    /// Push mode ([`Watch`]), and whether a push awaits its [`PushAck`].
    push_mode: bool,
    push_outstanding: bool,
    /// The ticket of a poll held back to gather deliveries
    /// (`poll_gather_ms`), or [`NO_POLL`]. Not an `Option`: its tag would
    /// take the queue's task cell into the next size class.
    held_poll: u64,
    /// The last poll's answer carried something: the client is being fed,
    /// so its next poll gathers even if it finds nothing.
    fed: bool,
    /// A gathering timer is running. There is at most one per queue: a
    /// poll held while the timer of one answered early is answered when
    /// that timer fires, so a client pipelining polls starts no more.
    gathering: bool,
}

impl ClientQueue {
    fn new(env: Arc<Env>, home: Home, info: Arc<ClientInfo>, conn: Recipient<FromQueue>) -> Self {
        ClientQueue {
            env,
            home,
            info,
            conn,
            subs: TopicSet::default(),
            items: Vec::new(),
            bytes: 0,
            overflowed: false,
            horizon: None,
            in_flight: None,
            removed: false,
            unsubscribing: None,
            push_mode: false,
            push_outstanding: false,
            held_poll: NO_POLL,
            fed: false,
            gathering: false,
        }
    }

    fn id(&self) -> u64 {
        self.info.id
    }

    /// Starts a client's queue actor on the current arbiter, in a task of
    /// its own; returns its shared address.
    pub fn begin(
        env: Arc<Env>,
        home: usize,
        info: Arc<ClientInfo>,
        conn: Recipient<FromQueue>,
    ) -> Arc<Addr<ClientQueue>> {
        let (me, run) = Self::prepare(env, home, info, conn);
        actix::spawn(run);
        me
    }

    /// Makes a client's queue actor without starting it: its shared
    /// address, and the future that runs it (its context, mailbox and
    /// state), for the client's connection to drive in its own task
    /// ([`QueueRun`]).
    pub fn prepare(
        env: Arc<Env>,
        home: usize,
        info: Arc<ClientInfo>,
        conn: Recipient<FromQueue>,
    ) -> (Arc<Addr<ClientQueue>>, QueueRun) {
        let ctx = Context::new();
        let me = Arc::new(ctx.address());
        let s = &env.node.settings;
        let room = (s.max_queue_messages, s.max_queue_bytes);
        let slot = board::open(info.id, room);
        let home = Home {
            arbiter: home as u32,
            slot,
        };
        let run = ctx.into_future(ClientQueue::new(env, home, info, conn));
        (me, run)
    }

    /// Indices of the topics of `msg` this client holds.
    fn held(&self, msg: &Message) -> Vec<u32> {
        (0..msg.topics.len() as u32)
            .filter(|&i| self.subs.contains(&msg.topics[i as usize]))
            .collect()
    }
}

impl QueueHandle for Addr<ClientQueue> {
    fn resync(&self, msg: Resync) {
        self.do_send(msg);
    }

    fn alive(&self) -> bool {
        self.connected()
    }
}

impl ClientHandle for Addr<ClientQueue> {
    fn kick(&self, why: Kick) {
        self.do_send(KickClient(why));
    }

    fn topics(&self) -> futures_util::future::BoxFuture<'static, Option<Vec<Bytes>>> {
        let ask = self.send(Topics);
        Box::pin(async move { ask.await.ok() })
    }

    fn kick_if_holds(
        &self,
        topics: Arc<FastSet<Bytes>>,
    ) -> futures_util::future::BoxFuture<'static, bool> {
        let ask = self.send(KickIfHolds(topics));
        Box::pin(async move { ask.await.unwrap_or(false) })
    }
}

impl ClientQueue {
    fn answer(&self, ticket: u64, response: Response) {
        self.conn.do_send(FromQueue::Answer { ticket, response });
    }

    fn publish_figures(&self) {
        self.info
            .queued
            .store(self.items.len() as u64, Ordering::Relaxed);
        self.info
            .queued_bytes
            .store(self.bytes as u64, Ordering::Relaxed);
    }

    /// Takes what the board holds for this queue into the inbox. Every
    /// handler that reads or changes the inbox (or the subscriptions)
    /// starts with it, so deliveries count as arrived before the request.
    fn drain(&mut self) {
        self.drain_into(Vec::new());
    }

    /// [`Self::drain`], leaving `spare` (empty) in the slot to fill next.
    fn drain_into(&mut self, spare: Vec<Delivery>) {
        let taken = board::take(self.home.slot, self.id(), spare);
        if taken.over {
            return self.overflow();
        }
        if taken.items.is_empty() {
            return;
        }
        let before = taken.items.len();
        let items = self.filter(taken.items);
        let bytes = if items.len() == before {
            taken.bytes
        } else {
            items.iter().map(|d| d.message().queued_bytes()).sum()
        };
        self.push(items, bytes);
    }

    /// Takes the board's deliveries, pushes them if in push mode, and
    /// re-arms the board: the whole of a [`Bell`] ring, and of [`Watch`] and
    /// [`PushAck`] once their state is set.
    fn take_and_push(&mut self, ctx: &mut Context<Self>, spare: Vec<Delivery>) {
        guard(self, ctx, |a, _| {
            a.drain_into(spare);
            a.offer(false);
            a.arm();
        });
    }

    /// Tells the board what this queue can still take before it
    /// overflows, and whether it wants a wake at each arrival (push mode,
    /// no push outstanding). Every handler that drained ends with it.
    fn arm(&self) {
        if self.overflowed || self.removed {
            return;
        }
        let s = &self.env.node.settings;
        let room = (
            s.max_queue_messages.saturating_sub(self.items.len()),
            s.max_queue_bytes.saturating_sub(self.bytes),
        );
        let eager = self.push_mode && !self.push_outstanding;
        board::arm(self.home.slot, self.id(), room, eager);
    }

    /// The client passed a queue limit: it is a slow consumer. Empties the
    /// inbox and tells the connection.
    fn overflow(&mut self) {
        if self.overflowed || self.removed {
            return;
        }
        self.overflowed = true;
        self.items = Vec::new();
        self.bytes = 0;
        // Nothing more is taken: free the slot and what it holds.
        board::close(self.home.slot, self.id());
        self.conn.do_send(FromQueue::Kick(Kick::SlowConsumer));
        self.publish_figures();
    }

    /// Queues deliveries (`size`: their queued bytes); past a limit,
    /// empties the inbox, marks the client a slow consumer and tells the
    /// connection.
    fn push(&mut self, items: Vec<Delivery>, size: usize) {
        if self.overflowed || self.removed || items.is_empty() {
            return;
        }
        let s = &self.env.node.settings;
        let (max_messages, max_bytes) = (s.max_queue_messages, s.max_queue_bytes);
        if self.items.len() + items.len() > max_messages || self.bytes + size > max_bytes {
            return self.overflow();
        }
        if let Some(r) = self.horizon.as_mut() {
            for d in &items {
                r.note(d.message().seq);
            }
        }
        self.bytes += size;
        // Only this queue writes it: a load and a store, no locked add.
        let received = &self.info.received;
        received.store(
            received.load(Ordering::Relaxed) + items.len() as u64,
            Ordering::Relaxed,
        );
        if self.items.is_empty() {
            // The common case under load: the batch becomes the inbox, no copy.
            self.items = items;
        } else {
            self.items.extend(items);
        }
        self.publish_figures();
    }

    /// Push mode: sends the inbox to the connection unless a push is
    /// outstanding (or regardless, with `force`).
    fn offer(&mut self, force: bool) {
        if !self.push_mode || self.items.is_empty() || (self.push_outstanding && !force) {
            return;
        }
        self.push_outstanding = true;
        self.bytes = 0;
        let items = std::mem::take(&mut self.items);
        self.publish_figures();
        // Inside the connection's task, handed over to be written in this
        // turn; a replay (`force`) goes behind what the mailbox holds.
        let items = if force {
            Some(items)
        } else {
            hand_over(self.id(), items)
        };
        if let Some(items) = items {
            self.conn.do_send(FromQueue::Pushed(items));
        }
        // The inbox is empty: the board's room with it (a slot past its
        // room drops what it holds, so the room must never be too small).
        self.arm();
    }

    fn in_flight_mut(&mut self) -> &mut InFlight {
        let f = self.in_flight.get_or_insert_with(Default::default);
        f.until = Some(Instant::now() + IN_FLIGHT_WINDOW);
        f
    }

    /// Filters a live batch against recent replays and unsubscriptions.
    fn filter(&mut self, items: Vec<Delivery>) -> Vec<Delivery> {
        let Some(f) = self.in_flight.as_ref() else {
            return items;
        };
        if f.until.is_some_and(|t| Instant::now() > t) {
            self.in_flight = None;
            return items;
        }
        let mut kept = Vec::with_capacity(items.len());
        for d in items {
            let msg = d.message();
            if f.replayed.contains(&msg.seq) {
                continue;
            }
            if !f.unsubscribed {
                kept.push(d);
                continue;
            }
            let held = self.held(msg);
            if !held.is_empty() {
                kept.push(Message::delivery(msg, &held));
            }
        }
        kept
    }

    /// Applies a subscribe to the set, then asks the shards; resolves to
    /// the answer once all did. The set takes [`SLICE`] topics per turn,
    /// the shards [`SHARD_CHUNK`] per message.
    fn subscribe(
        &mut self,
        topics: TopicIter,
        replay: Option<(Horizon, ReplayScope)>,
        upstream: Upstream,
        seen: Option<Box<Registered>>,
    ) -> LocalBoxActorFuture<Self, Response> {
        let n = self.env.router.num_shards();
        let cap = self.env.node.settings.max_subscriptions_per_client;
        let scope = replay.map(|r| r.1);
        // On a proxy the upstreams are asked for what was named, or after
        // a register for the new topics only (their replay since then).
        let (upstream_named, upstream_new) = match (&upstream, scope) {
            (Upstream::None, _) => (false, false),
            (_, Some(ReplayScope::NewTopics)) => (false, true),
            _ => (true, false),
        };
        let mut applied = Applied::new(n);
        let mut rest = topics;
        let insert = sliced(move |act: &mut Self| {
            // A slice is SLICE topics' worth of work, a growth of the set
            // counting the topics it moves.
            let mut work = 0;
            let mut done = false;
            while work < SLICE {
                let Some(t) = rest.next() else {
                    done = true;
                    break;
                };
                work += 1;
                let s = shard_of(&t, n);
                if scope == Some(ReplayScope::Requested) {
                    applied.again[s].push(t.clone());
                }
                let new = act.subs.insert(t.clone(), &mut work);
                if upstream_named || (new && upstream_new) {
                    applied.upstream.push(t.clone());
                }
                if new {
                    applied.add[s].push(t);
                }
            }
            if act.subs.len() > cap {
                // Past the cap now, past it at the end: refused whole,
                // without inserting the rest.
                let rest = std::mem::take(&mut rest);
                return Some(Inserted::OverCap(std::mem::take(&mut applied), rest));
            }
            done.then(|| Inserted::All(std::mem::take(&mut applied)))
        });
        insert
            .then(move |inserted, act, _ctx| match inserted {
                None => failed().boxed_local(),
                Some(Inserted::OverCap(applied, rest)) => {
                    // Nothing of it is applied.
                    discard(rest.held(), rest);
                    let add = applied.discard_named();
                    act.remove_sliced(add.into_iter().flatten())
                        .map(move |removed, act, _ctx| {
                            if let Some(removed) = removed {
                                discard(
                                    removed.iter().map(Vec::len).sum(),
                                    removed.into_iter().flatten(),
                                );
                            }
                            act.env
                                .node
                                .counters
                                .refused_subscribes_client
                                .fetch_add(1, Ordering::Relaxed);
                            info!(act.env.node.log, "subscribe refused: too many subscriptions";
                                "client" => act.id(), "held" => act.subs.len(),
                                "max_subscriptions_per_client" => cap);
                            Response::ClientError("too many subscriptions".into())
                        })
                        .boxed_local()
                }
                Some(Inserted::All(applied)) => {
                    let plain = replay.is_none() && matches!(upstream, Upstream::None);
                    match act.tell_shards(applied, plain) {
                        Ok(stored) => fut::ready(stored).boxed_local(),
                        Err(applied) => act.ask_shards(applied, replay, upstream, seen),
                    }
                }
            })
            .boxed_local()
    }

    /// The second half of a plain subscribe (`plain`: no replay, no
    /// upstream) whose chunks are small, with no unsubscribe of this
    /// client's still in flight: its new topics are reserved under
    /// `max_topics_per_node`, each shard is sent its part without waiting
    /// for an answer, and the client is answered at once. A shard's mailbox
    /// is one queue, so the shard applies the part before any publish
    /// sent after the answer: nothing published after `STORED` is missed.
    /// Gives `applied` back when any of that does not hold (the answers
    /// are then awaited, [`Self::ask_shards`]).
    fn tell_shards(&mut self, applied: Applied, plain: bool) -> Result<Response, Applied> {
        let unsubscribing = self.unsubscribing.as_ref().is_some_and(|n| n.get() > 0);
        if !plain || unsubscribing || applied.add.iter().any(|a| a.len() > SHARD_CHUNK) {
            return Err(applied);
        }
        let new: usize = applied.add.iter().map(Vec::len).sum();
        let mut reserved = match new {
            0 => None,
            n => match Reservation::take(&self.env.node, n as u64) {
                Some(r) => Some(r),
                None => return Err(applied),
            },
        };
        self.info
            .subscriptions
            .store(self.subs.len() as u64, Ordering::Relaxed);
        let (id, home) = (self.id(), self.home);
        for (s, add) in applied.add.into_iter().enumerate() {
            if add.is_empty() {
                continue;
            }
            let part = reserved.as_mut().map(|r| r.part(add.len() as u64));
            self.env.router.shard(s).do_send(Subscribe {
                id,
                home,
                add,
                replay: None,
                reserved: part,
            });
        }
        Ok(Response::Stored)
    }

    /// The second half of a subscribe applied to the set: the topics to
    /// replay after a register (every topic held, walked a slice per turn),
    /// then the shards' chunks, then their answers.
    fn ask_shards(
        &mut self,
        applied: Applied,
        replay: Option<(Horizon, ReplayScope)>,
        upstream: Upstream,
        seen: Option<Box<Registered>>,
    ) -> LocalBoxActorFuture<Self, Response> {
        self.info
            .subscriptions
            .store(self.subs.len() as u64, Ordering::Relaxed);
        let Applied {
            add,
            again,
            upstream: upstream_topics,
        } = applied;
        let scope = replay.map(|r| r.1);
        // After `register`, the replay covers every topic held, not only
        // the new ones: a message since the register on a topic held
        // before may still be on its way live, and replaying a later one
        // (naming a new topic too) must not overtake it. It is replayed as
        // well and its live copy dropped on arrival (`InFlight::replayed`);
        // what was queued already is skipped.
        let again = if scope == Some(ReplayScope::NewTopics) && add.iter().any(|a| !a.is_empty()) {
            self.held_by_shard().boxed_local()
        } else {
            fut::ready(Some(again)).boxed_local()
        };
        again
            .then(move |again, act, _ctx| {
                let Some(again) = again else {
                    return failed().boxed_local();
                };
                let asks = act.subscribes(add, again, replay.map(|r| r.0));
                async move { join_all(asks).await.into_iter().unzip() }
                    .into_actor(act)
                    .then(move |(answers, add): (Vec<Vec<_>>, Vec<Vec<Bytes>>), act, ctx| {
                        let answers = answers.into_iter().flatten().collect();
                        let subscribed = guard(act, ctx, |act, _| {
                            act.subscribed(answers, scope, seen.as_deref())
                        });
                        let local = match subscribed {
                            Some(Subscribed::OverTopicCap) => return act.undo(add),
                            Some(Subscribed::Answer(local)) => local,
                            None => Response::ServerError("client queue failed".into()),
                        };
                        discard(add.iter().map(Vec::len).sum(), add.into_iter().flatten());
                        let id = act.id();
                        let log = act.env.node.log.clone();
                        let proxy = act.env.proxy.clone();
                        async move {
                            let Some(proxy) = proxy.filter(|_| local == Response::Stored) else {
                                return local;
                            };
                            match upstream {
                                Upstream::None => local,
                                Upstream::Settle => {
                                    proxy.settle(upstream_topics).await;
                                    local
                                }
                                Upstream::Retro(horizon_ns) => {
                                    if proxy.retro(upstream_topics, horizon_ns).await {
                                        local
                                    } else {
                                        info!(log, "retro subscription incomplete upstream: NOT_FOUND"; "client" => id);
                                        Response::NotFound
                                    }
                                }
                            }
                        }
                        .into_actor(act)
                        .boxed_local()
                    })
                    .boxed_local()
            })
            .boxed_local()
    }

    /// Per shard with topics to add or replay, a future sending its
    /// [`Subscribe`]s in chunks of at most [`SHARD_CHUNK`] topics, one
    /// after another (a chunk is made when the previous one is answered);
    /// it stops at the first refusal or failure and gives back its shard's
    /// answers and added topics (for an undo).
    fn subscribes(
        &self,
        add: Vec<Vec<Bytes>>,
        again: Vec<Vec<Bytes>>,
        horizon: Option<Horizon>,
    ) -> Vec<impl std::future::Future<Output = (Vec<SubscribeAnswer>, Vec<Bytes>)> + 'static> {
        let id = self.id();
        let home = self.home;
        let unsubscribing = self.unsubscribing.clone();
        add.into_iter()
            .zip(again)
            .enumerate()
            .filter(|(_, (add, again))| !add.is_empty() || !again.is_empty())
            .map(|(s, (add, again))| {
                let shard = self.env.router.shard(s).clone();
                let unsubscribing = unsubscribing.clone();
                async move {
                    // An earlier unsubscribe's chunks first (each is
                    // answered in about a millisecond).
                    while unsubscribing.as_ref().is_some_and(|n| n.get() > 0) {
                        tokio::time::sleep(Duration::from_millis(1)).await;
                    }
                    let count = add
                        .len()
                        .div_ceil(SHARD_CHUNK)
                        .max(again.len().div_ceil(SHARD_CHUNK));
                    let mut answers = Vec::with_capacity(count);
                    let mut again = again.into_iter();
                    for k in 0..count {
                        // A change of several chunks takes the thread's
                        // lane to this shard for each (`crate::lane`).
                        let _turn = match count {
                            1 => None,
                            _ => Some(lane::turn(Lane::Shard(s)).await),
                        };
                        let from = (k * SHARD_CHUNK).min(add.len());
                        let to = (from + SHARD_CHUNK).min(add.len());
                        let chunk = Subscribe {
                            id,
                            home,
                            add: add[from..to].to_vec(),
                            reserved: None,
                            replay: match horizon {
                                Some(h) if again.len() > 0 => {
                                    Some((h, again.by_ref().take(SHARD_CHUNK).collect()))
                                }
                                _ => None,
                            },
                        };
                        let answer = shard.send(chunk).await;
                        let stop = !matches!(&answer, Ok(Ok(r)) if !r.over_topic_cap);
                        answers.push(answer);
                        if stop {
                            break;
                        }
                    }
                    discard(again.len(), again);
                    (answers, add)
                }
            })
            .collect()
    }

    /// Every topic held, grouped by shard, a slice of the set's slots per
    /// turn. The set does not change in between: this runs inside a
    /// subscribe's `ctx.wait`, after its inserts.
    fn held_by_shard(&self) -> Sliced<impl FnMut(&mut Self) -> Option<Vec<Vec<Bytes>>>> {
        let n = self.env.router.num_shards();
        let mut by_shard: Vec<Vec<Bytes>> = vec![Vec::new(); n];
        let mut at = 0;
        sliced(move |act: &mut Self| {
            let done = act.subs.walk(&mut at, SLICE, |t| {
                by_shard[shard_of(t, n)].push(t.clone());
            });
            done.then(|| std::mem::take(&mut by_shard))
        })
    }

    /// A shard refused a subscribe (the node would pass
    /// `max_topics_per_node`): undoes the chunks the shards applied, so
    /// that nothing of it stays.
    fn undo(&mut self, add: Vec<Vec<Bytes>>) -> LocalBoxActorFuture<Self, Response> {
        self.remove_sliced(add.into_iter().flatten())
            .map(|removed, act, _ctx| {
                let Some(removed) = removed else {
                    return Response::ServerError("client queue failed".into());
                };
                act.info
                    .subscriptions
                    .store(act.subs.len() as u64, Ordering::Relaxed);
                act.send_unsubscribes(removed);
                act.in_flight_mut().unsubscribed = true;
                let node = &act.env.node;
                node.counters
                    .refused_subscribes_node
                    .fetch_add(1, Ordering::Relaxed);
                info!(node.log, "subscribe refused: too many topics on this node";
                    "client" => act.id(), "max_topics_per_node" => node.settings.max_topics_per_node);
                Response::ServerError("too many topics on this node".into())
            })
            .boxed_local()
    }

    /// The shards answered a subscribe: replay what they found.
    fn subscribed(
        &mut self,
        answers: Vec<SubscribeAnswer>,
        scope: Option<ReplayScope>,
        seen: Option<&Registered>,
    ) -> Subscribed {
        let mut replays = Vec::with_capacity(answers.len());
        for a in answers {
            match a {
                Ok(Ok(r)) => replays.push(r),
                Ok(Err(failed)) => return Subscribed::Answer(failed.reply()),
                Err(_) => return Subscribed::Answer(ShardFailed.reply()),
            }
        }
        if replays.iter().any(|r| r.over_topic_cap) {
            return Subscribed::OverTopicCap;
        }
        let Some(scope) = scope else {
            return Subscribed::Answer(Response::Stored);
        };
        if !replays.iter().all(|r| r.complete) || seen.is_some_and(|r| r.lossy) {
            info!(self.env.node.log, "retro subscription incomplete: NOT_FOUND"; "client" => self.id());
            return Subscribed::Answer(Response::NotFound);
        }
        let mut found: BTreeMap<u64, Arc<Message>> = BTreeMap::new();
        for r in replays {
            for m in r.messages {
                found.entry(m.seq).or_insert(m);
            }
        }
        let deliveries: Vec<Delivery> = found
            .into_values()
            .filter(|m| {
                // After `register`, skip what was queued since (live, or by
                // a retro_subscribe). Not "what names a topic held before":
                // that topic may have been dropped after the delivery (the
                // message would come twice) or added by a retro_subscribe
                // after the message (it would be lost).
                scope == ReplayScope::Requested
                    || !seen.is_some_and(|r| r.received.contains(&m.seq))
            })
            .map(|m| Message::delivery(&m, &self.held(&m)))
            .collect();
        if !deliveries.is_empty() {
            let f = self.in_flight_mut();
            f.replayed
                .extend(deliveries.iter().map(|d| d.message().seq));
            self.env
                .node
                .counters
                .delivered
                .fetch_add(deliveries.len() as u64, Ordering::Relaxed);
            let size = deliveries.iter().map(|d| d.message().queued_bytes()).sum();
            self.push(deliveries, size);
            // Before the answer, so the connection writes the replay first.
            self.offer(true);
        }
        Subscribed::Answer(Response::Stored)
    }

    /// Removes `topics` from the set a slice per turn, then answers at once:
    /// from then on this queue drops what still arrives for them
    /// (deliveries routed before the shards saw the change), so nothing
    /// published after the answer reaches the client on them. The shards
    /// get the change in chunks.
    fn unsubscribe(&mut self, topics: TopicIter) -> LocalBoxActorFuture<Self, Response> {
        self.remove_sliced(topics)
            .map(move |removed, act, _ctx| {
                let Some(by_shard) = removed else {
                    return Response::ServerError("client queue failed".into());
                };
                act.info
                    .subscriptions
                    .store(act.subs.len() as u64, Ordering::Relaxed);
                let sent = by_shard.iter().any(|topics| !topics.is_empty());
                act.send_unsubscribes(by_shard);
                if sent {
                    act.in_flight_mut().unsubscribed = true;
                }
                Response::Stored
            })
            .boxed_local()
    }

    /// Removes `topics` from the set, [`SLICE`] per turn; resolves to those
    /// the client held, grouped by shard (`None` if the queue failed).
    fn remove_sliced<I>(
        &self,
        topics: I,
    ) -> Sliced<impl FnMut(&mut Self) -> Option<Vec<Vec<Bytes>>>>
    where
        I: Iterator<Item = Bytes> + Unpin + 'static,
    {
        let n = self.env.router.num_shards();
        let mut by_shard: Vec<Vec<Bytes>> = vec![Vec::new(); n];
        let mut rest = topics;
        sliced(move |act: &mut Self| {
            let mut seen = 0;
            for t in rest.by_ref().take(SLICE) {
                seen += 1;
                if act.subs.remove(&t) {
                    by_shard[shard_of(&t, n)].push(t);
                }
            }
            (seen < SLICE).then(|| std::mem::take(&mut by_shard))
        })
    }

    /// A subscription change: its topics are checked first (a body a slice
    /// per turn, see [`Named`]), and a bad body is refused whole before
    /// anything is used, a pending `register` included; then the change is
    /// applied. All of it runs in one `ctx.wait`: the queue handles nothing
    /// else for the client meanwhile, so a poll pipelined behind a
    /// subscribe sees its replay.
    fn ask(&mut self, ctx: &mut Context<Self>, ticket: u64, req: QueueRequest) {
        let (topics, change) = match req {
            QueueRequest::Subscribe(topics) => {
                if self.env.node.settings.fault_injection
                    && topics.all().iter().any(|t| &t[..] == FAULT_QUEUE_PANIC)
                {
                    panic!("fault injection: client queue {} panicked", self.id());
                }
                (topics, Change::Subscribe)
            }
            QueueRequest::Unsubscribe(topics) => (topics, Change::Unsubscribe),
            QueueRequest::RetroSubscribe {
                horizon_secs,
                topics,
            } => (topics, Change::Retro(horizon_secs)),
            QueueRequest::Register => {
                let clock = self.env.router.clock();
                self.horizon = Some(Box::new(Registered {
                    at: clock.next(),
                    wall_ns: clock.now_ns(),
                    received: FastSet::default(),
                    lossy: false,
                }));
                return self.answer(ticket, Response::Stored);
            }
        };
        let fut = checked(topics)
            .then(move |checked, act, ctx| {
                let topics = match checked {
                    None => return failed().boxed_local(),
                    Some(Err(bad)) => {
                        return fut::ready(Response::ClientError(bad.message().into()))
                            .boxed_local()
                    }
                    Some(Ok(topics)) => topics,
                };
                guard(act, ctx, |act, _| act.apply(topics, change))
                    .unwrap_or_else(|| failed().boxed_local())
            })
            .map(move |response, act, _ctx| {
                act.answer(ticket, response);
                // The replay changed the inbox: the board's bound with it.
                act.arm();
            });
        ctx.wait(fut);
    }

    /// Applies a checked change; resolves to its answer.
    fn apply(&mut self, topics: TopicIter, change: Change) -> LocalBoxActorFuture<Self, Response> {
        let proxy = self.env.proxy.is_some();
        match change {
            Change::Unsubscribe => self.unsubscribe(topics),
            Change::Subscribe => match self.horizon.take() {
                None => {
                    let upstream = if proxy {
                        Upstream::Settle
                    } else {
                        Upstream::None
                    };
                    self.subscribe(topics, None, upstream, None)
                }
                Some(r) => {
                    let upstream = if proxy {
                        Upstream::Retro(r.wall_ns as i128)
                    } else {
                        Upstream::None
                    };
                    let replay = Some((r.at, ReplayScope::NewTopics));
                    self.subscribe(topics, replay, upstream, Some(r))
                }
            },
            Change::Retro(horizon_secs) => {
                let ns = (horizon_secs as i128 * 1_000_000_000).clamp(0, u64::MAX as i128);
                let upstream = if proxy {
                    Upstream::Retro(ns)
                } else {
                    Upstream::None
                };
                let replay = Some((ns as u64, ReplayScope::Requested));
                self.subscribe(topics, replay, upstream, None)
            }
        }
    }

    /// Removes the client from every shard (once). The set is handed to a
    /// task of its own on this worker, which groups it by shard a slice
    /// per turn of the thread's local lane and then sends each shard its
    /// chunks (through the thread's lane to that shard): this runs as the
    /// actor stops (or fails), when it can no longer wait, and a leaving
    /// client's half million topics must not hold the worker.
    fn remove_everywhere(&mut self) {
        if self.removed {
            return;
        }
        self.removed = true;
        board::close(self.home.slot, self.id());
        self.items = Vec::new();
        self.bytes = 0;
        let subs = std::mem::take(&mut self.subs);
        if subs.is_empty() {
            return;
        }
        let (router, id) = (self.env.router.clone(), self.id());
        actix::spawn(async move {
            let n = router.num_shards();
            let mut by_shard: Vec<Vec<Bytes>> = vec![Vec::new(); n];
            let mut rest = subs.into_topics();
            loop {
                let _turn = lane::turn(Lane::Local).await;
                let mut seen = 0;
                for t in rest.by_ref().take(SLICE) {
                    seen += 1;
                    by_shard[shard_of(&t, n)].push(t);
                }
                if seen < SLICE {
                    break;
                }
            }
            drop(rest);
            join_all(unsubscribes(&router, id, by_shard)).await;
        });
    }

    /// Removes the client from these topics (grouped by shard) on their
    /// shards, in chunks, without waiting for the answer.
    fn send_unsubscribes(&mut self, mut by_shard: Vec<Vec<Bytes>>) {
        // A shard's change of one chunk goes now, straight into its
        // mailbox: no task, no answer to wait for, and ahead of anything
        // this queue sends that shard later (a subscribe again, say).
        let id = self.id();
        for (s, topics) in by_shard.iter_mut().enumerate() {
            if !topics.is_empty() && topics.len() <= SHARD_CHUNK {
                let topics = std::mem::take(topics);
                self.env.router.shard(s).do_send(Unsubscribe { id, topics });
            }
        }
        let asks = unsubscribes(&self.env.router, id, by_shard);
        if asks.is_empty() {
            return;
        }
        let pending = self.unsubscribing.get_or_insert_with(Default::default);
        for ask in asks {
            let pending = pending.clone();
            pending.set(pending.get() + 1);
            actix::spawn(async move {
                let _ = ask.await;
                pending.set(pending.get() - 1);
            });
        }
    }
}

/// Per shard with topics, a future sending client `id`'s [`Unsubscribe`]s
/// in chunks of at most [`SHARD_CHUNK`] topics, one after another (the
/// topics move into the chunks, none is copied); `Err` if the shard failed.
fn unsubscribes(
    router: &Router,
    id: u64,
    by_shard: Vec<Vec<Bytes>>,
) -> Vec<impl std::future::Future<Output = Result<(), MailboxError>> + 'static> {
    by_shard
        .into_iter()
        .enumerate()
        .filter(|(_, ts)| !ts.is_empty())
        .map(|(s, topics)| {
            let shard = router.shard(s).clone();
            let several = topics.len() > SHARD_CHUNK;
            async move {
                let mut rest = topics.into_iter();
                loop {
                    let topics: Vec<Bytes> = rest.by_ref().take(SHARD_CHUNK).collect();
                    if topics.is_empty() {
                        return Ok(());
                    }
                    // A change of several chunks takes the thread's lane
                    // to this shard for each (`crate::lane`).
                    let _turn = match several {
                        true => Some(lane::turn(Lane::Shard(s)).await),
                        false => None,
                    };
                    shard.send(Unsubscribe { id, topics }).await?;
                }
            }
        })
        .collect()
}

/// A shard's answer to one [`Subscribe`] chunk.
type SubscribeAnswer = Result<Result<Replay, ShardFailed>, MailboxError>;

/// What the shards' answers to a subscribe call for.
enum Subscribed {
    /// Answer this (after the upstreams, on a proxy, if it is `STORED`).
    Answer(Response),
    /// A shard refused (the node would pass `max_topics_per_node`): undo.
    OverTopicCap,
}

/// A subscribe applied to the client's set, per shard.
#[derive(Default)]
struct Applied {
    /// The topics new to the client.
    add: Vec<Vec<Bytes>>,
    /// The topics to replay (a `retro_subscribe`: those named).
    again: Vec<Vec<Bytes>>,
    /// What a proxy asks its upstreams for.
    upstream: Vec<Bytes>,
}

impl Applied {
    fn new(shards: usize) -> Self {
        Applied {
            add: vec![Vec::new(); shards],
            again: vec![Vec::new(); shards],
            upstream: Vec::new(),
        }
    }

    /// Drops the lists of topics named again (to replay, for the
    /// upstreams); returns the added ones.
    fn discard_named(self) -> Vec<Vec<Bytes>> {
        let again = self.again;
        discard(
            again.iter().map(Vec::len).sum(),
            again.into_iter().flatten(),
        );
        discard(self.upstream.len(), self.upstream);
        self.add
    }
}

/// A subscribe's topics put into the set.
enum Inserted {
    All(Applied),
    /// Those so far took the client past `max_subscriptions_per_client`;
    /// the rest were not taken.
    OverCap(Applied, TopicIter),
}

/// What a checked change does with its topics.
#[derive(Clone, Copy)]
enum Change {
    Subscribe,
    Unsubscribe,
    /// `retro_subscribe` since this horizon (Unix seconds).
    Retro(i64),
}

/// The answer of a queue that failed (a caught panic) during a change.
fn failed() -> fut::Ready<Response> {
    fut::ready(Response::ServerError("client queue failed".into()))
}

/// Resolves to the topics of a change once they are known good: a body is
/// checked [`SLICE`] topics per turn, and its first bad topic refuses it
/// (`None` if the queue failed).
fn checked(
    topics: Named,
) -> LocalBoxActorFuture<ClientQueue, Option<Result<TopicIter, BodyError>>> {
    match topics {
        Named::List(topics) => {
            fut::ready(Some(Ok(TopicIter::List(topics.into_iter())))).boxed_local()
        }
        Named::Body(body) => {
            let mut body = Some(body);
            sliced(move |_: &mut ClientQueue| {
                let good = body.as_mut()?.check(SLICE)?;
                Some(good.map(|()| {
                    TopicIter::Body {
                        body: body
                            .take()
                            .unwrap_or_else(|| TopicList::new(Bytes::new(), 0)),
                        batch: Vec::new().into_iter(),
                    }
                }))
            })
            .boxed_local()
        }
    }
}

/// A checked change's topics as the queue takes them: a body is split
/// [`SLICE`] at a time as it goes.
enum TopicIter {
    List(std::vec::IntoIter<Bytes>),
    Body {
        body: TopicList,
        batch: std::vec::IntoIter<Bytes>,
    },
}

impl Default for TopicIter {
    fn default() -> Self {
        TopicIter::List(Vec::new().into_iter())
    }
}

impl TopicIter {
    /// The topics it holds split, which dropping it frees one by one (the
    /// rest of a body is one buffer).
    fn held(&self) -> usize {
        match self {
            TopicIter::List(topics) => topics.len(),
            TopicIter::Body { batch, .. } => batch.len(),
        }
    }
}

impl Iterator for TopicIter {
    type Item = Bytes;

    fn next(&mut self) -> Option<Bytes> {
        match self {
            TopicIter::List(topics) => topics.next(),
            TopicIter::Body { body, batch } => {
                if let Some(t) = batch.next() {
                    return Some(t);
                }
                *batch = body.split(SLICE).into_iter();
                batch.next()
            }
        }
    }
}

/// A client's topics. Most clients hold a few: up to [`SMALL`] are kept in
/// a vector just their size and searched in order (an idle client's set
/// costs its topics' handles and nothing more). Past that, a hash set (on
/// the same tables as `std`'s) that never holds the worker long, for two
/// reasons.
///
/// - A table grows by rehashing everything it holds at once: some 40 ms at
///   half a million topics. Past [`SPLIT_AT`] topics the set is split into
///   [`PARTS`] tables by hash, each growing on its own, so a growth moves
///   about a 64th of the set. The parts fill evenly, so they grow at about
///   the same time: [`TopicSet::insert`] tells what a growth moved, and a
///   slice counts it as work, which spreads the growths over turns.
/// - Its slots can be read by position ([`TopicSet::walk`]), so that a walk
///   over all the topics can stop after a slice and go on in a later turn
///   (a `HashSet` iterator borrows the set and cannot be kept until then).
#[derive(Default)]
struct TopicSet {
    /// The topics while there are at most [`SMALL`] and no tables.
    small: Vec<Bytes>,
    tables: Option<Box<Tables>>,
}

/// Topics a [`TopicSet`] holds in its vector before it takes tables.
const SMALL: usize = 8;

#[derive(Default)]
struct Tables {
    /// The only table until the set is split; empty after.
    first: HashTable<Bytes>,
    /// The [`PARTS`] tables of a split set.
    parts: Vec<HashTable<Bytes>>,
    len: usize,
    hasher: foldhash::fast::RandomState,
}

/// Topics past which a [`TopicSet`] is split.
const SPLIT_AT: usize = 8192;

/// Tables of a split [`TopicSet`].
const PARTS: usize = 64;

impl TopicSet {
    /// Adds `topic`; false if it was held already. Adds to `moved` the
    /// topics a growth (or a change of form) moved.
    fn insert(&mut self, topic: Bytes, moved: &mut usize) -> bool {
        if let Some(tables) = &mut self.tables {
            return tables.insert(topic, moved);
        }
        if self.small.iter().any(|t| t[..] == topic[..]) {
            return false;
        }
        if self.small.len() < SMALL {
            self.small.reserve_exact(1);
            self.small.push(topic);
            return true;
        }
        let mut tables = Box::<Tables>::default();
        *moved += self.small.len();
        for t in std::mem::take(&mut self.small) {
            tables.insert(t, &mut 0);
        }
        let new = tables.insert(topic, moved);
        self.tables = Some(tables);
        new
    }

    /// Removes `topic`; false if it was not held. A set emptied of its
    /// tables lets them go.
    fn remove(&mut self, topic: &[u8]) -> bool {
        if let Some(tables) = &mut self.tables {
            let held = tables.remove(topic);
            if tables.len == 0 {
                self.tables = None;
            }
            return held;
        }
        match self.small.iter().position(|t| t[..] == *topic) {
            Some(at) => {
                self.small.swap_remove(at);
                true
            }
            None => false,
        }
    }

    fn contains(&self, topic: &[u8]) -> bool {
        match &self.tables {
            Some(tables) => tables.contains(topic),
            None => self.small.iter().any(|t| t[..] == *topic),
        }
    }

    fn len(&self) -> usize {
        match &self.tables {
            Some(tables) => tables.len,
            None => self.small.len(),
        }
    }

    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn iter(&self) -> impl Iterator<Item = &Bytes> {
        let tables = self.tables.iter().flat_map(|t| t.iter());
        self.small.iter().chain(tables)
    }

    /// Calls `f` on the topics of at most `most` slots, from slot `*at` on
    /// (0 to begin), and moves `*at` past them; true once every slot was
    /// walked. A position stays valid while the set does not change.
    fn walk(&self, at: &mut usize, most: usize, f: impl FnMut(&Bytes)) -> bool {
        if let Some(tables) = &self.tables {
            return tables.walk(at, most, f);
        }
        let from = (*at).min(self.small.len());
        let end = self.small.len().min(from + most);
        self.small[from..end].iter().for_each(f);
        *at = end;
        end == self.small.len()
    }

    /// Every topic, by value.
    fn into_topics(self) -> impl Iterator<Item = Bytes> {
        let tables = self.tables.into_iter().flat_map(|t| t.into_topics());
        self.small.into_iter().chain(tables)
    }
}

impl Tables {
    fn hash(&self, topic: &[u8]) -> u64 {
        self.hasher.hash_one(topic)
    }

    /// The part of a hash: bits the tables use for neither the slot (the
    /// low ones) nor the tag (the top seven).
    fn part(hash: u64) -> usize {
        (hash >> 40) as usize % PARTS
    }

    fn table(&self, hash: u64) -> &HashTable<Bytes> {
        if self.parts.is_empty() {
            &self.first
        } else {
            &self.parts[Self::part(hash)]
        }
    }

    fn table_mut(&mut self, hash: u64) -> &mut HashTable<Bytes> {
        if self.parts.is_empty() {
            &mut self.first
        } else {
            &mut self.parts[Self::part(hash)]
        }
    }

    fn insert(&mut self, topic: Bytes, moved: &mut usize) -> bool {
        if self.parts.is_empty() && self.first.len() >= SPLIT_AT {
            *moved += self.first.len();
            self.split();
        }
        let hash = self.hash(&topic);
        let hasher = self.hasher.clone();
        let table = self.table_mut(hash);
        // Full: a new topic makes it grow.
        let full = table.len() == table.capacity();
        let held = table.len();
        match table.entry(hash, |t| t[..] == topic[..], |t| hasher.hash_one(&t[..])) {
            hash_table::Entry::Occupied(_) => false,
            hash_table::Entry::Vacant(slot) => {
                if full {
                    *moved += held;
                }
                slot.insert(topic);
                self.len += 1;
                true
            }
        }
    }

    /// Moves the topics of the first table into the parts (each sized for
    /// its share, so that together they take about what the table did).
    fn split(&mut self) {
        let room = SPLIT_AT / PARTS;
        self.parts = (0..PARTS).map(|_| HashTable::with_capacity(room)).collect();
        for topic in std::mem::take(&mut self.first) {
            let hash = self.hash(&topic);
            let hasher = &self.hasher;
            self.parts[Self::part(hash)].insert_unique(hash, topic, |t| hasher.hash_one(&t[..]));
        }
    }

    fn remove(&mut self, topic: &[u8]) -> bool {
        let hash = self.hash(topic);
        match self.table_mut(hash).find_entry(hash, |t| t[..] == *topic) {
            Ok(held) => {
                held.remove();
                self.len -= 1;
                true
            }
            Err(_) => false,
        }
    }

    fn contains(&self, topic: &[u8]) -> bool {
        let hash = self.hash(topic);
        self.table(hash).find(hash, |t| t[..] == *topic).is_some()
    }

    fn iter(&self) -> impl Iterator<Item = &Bytes> {
        self.first.iter().chain(self.parts.iter().flatten())
    }

    fn walk(&self, at: &mut usize, most: usize, mut f: impl FnMut(&Bytes)) -> bool {
        let mut skip = *at;
        let mut left = most;
        for table in std::iter::once(&self.first).chain(&self.parts) {
            let slots = table.num_buckets();
            if skip >= slots {
                skip -= slots;
                continue;
            }
            let end = slots.min(skip + left);
            for i in skip..end {
                if let Some(t) = table.get_bucket(i) {
                    f(t);
                }
            }
            *at += end - skip;
            left -= end - skip;
            skip = 0;
            if left == 0 {
                return false;
            }
        }
        true
    }

    fn into_topics(self) -> impl Iterator<Item = Bytes> {
        self.first
            .into_iter()
            .chain(self.parts.into_iter().flatten())
    }
}

/// An actor future doing a large change [`SLICE`] topics at a time: it
/// calls its step once per poll until the step returns `Some`. Its first
/// step runs at once; each later one waits for its turn in the thread's
/// local lane ([`lane`]: the thread's other ready tasks run and its
/// sockets are polled before it, and no other client's slice runs in the
/// same turn). Inside a `ctx.wait` the queue handles no message
/// meanwhile, so each step finds the state the previous one left. A step
/// runs under [`guard`]: a panic fails the queue, and the future resolves
/// to `None`.
struct Sliced<F> {
    step: F,
    /// The wait for the next slice's turn, while it is pending.
    pause: Option<Pin<Box<dyn Future<Output = Permit>>>>,
}

fn sliced<T, F>(step: F) -> Sliced<F>
where
    F: FnMut(&mut ClientQueue) -> Option<T> + Unpin,
{
    Sliced { step, pause: None }
}

impl<T, F> ActorFuture<ClientQueue> for Sliced<F>
where
    F: FnMut(&mut ClientQueue) -> Option<T> + Unpin,
{
    type Output = Option<T>;

    fn poll(
        self: Pin<&mut Self>,
        act: &mut ClientQueue,
        ctx: &mut Context<ClientQueue>,
        task: &mut std::task::Context<'_>,
    ) -> Poll<Option<T>> {
        let this = self.get_mut();
        // Held while the step runs.
        let mut _turn = None;
        if let Some(pause) = this.pause.as_mut() {
            match pause.as_mut().poll(task) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(permit) => _turn = Some(permit),
            }
            this.pause = None;
        }
        match guard(act, ctx, |act, _| (this.step)(act)) {
            None => Poll::Ready(None),
            Some(Some(done)) => Poll::Ready(Some(done)),
            Some(None) => {
                // Its first poll takes a place in the lane (and asks to
                // be woken when the turn comes).
                let mut pause: Pin<Box<dyn Future<Output = Permit>>> =
                    Box::pin(lane::turn(Lane::Local));
                match pause.as_mut().poll(task) {
                    Poll::Pending => this.pause = Some(pause),
                    // (A turn yields first: not seen.) The next slice
                    // then runs on the next poll.
                    Poll::Ready(_) => task.waker().wake_by_ref(),
                }
                Poll::Pending
            }
        }
    }
}

/// Drops `count` topics, [`SLICE`] per turn of the thread's local lane in
/// a task of its own on this worker when there are more: freeing half a
/// million at once takes milliseconds.
fn discard<I>(count: usize, topics: I)
where
    I: IntoIterator<Item = Bytes>,
    I::IntoIter: 'static,
{
    let mut rest = topics.into_iter();
    if count <= SLICE {
        return;
    }
    actix::spawn(async move {
        loop {
            let _turn = lane::turn(Lane::Local).await;
            if rest.by_ref().take(SLICE).count() < SLICE {
                break;
            }
        }
    });
}

/// What a subscribe must also do upstream, on a proxy.
enum Upstream {
    None,
    /// Answer once the upstreams hold the topics.
    Settle,
    /// Replay upstream since this wall-clock horizon (ns).
    Retro(i128),
}

/// The queue's ear on its board slot: the board wakes the queue's task
/// (no message) when its deliveries must be taken now (they would
/// overflow it, or in push mode it can push), and this future, polled
/// then, takes them.
struct Bell;

impl ActorFuture<ClientQueue> for Bell {
    type Output = ();

    fn poll(
        self: Pin<&mut Self>,
        act: &mut ClientQueue,
        ctx: &mut Context<ClientQueue>,
        task: &mut std::task::Context<'_>,
    ) -> Poll<()> {
        if board::listen(act.home.slot, act.id(), task.waker()) {
            act.take_and_push(ctx, Vec::new());
        }
        Poll::Pending
    }
}

impl Actor for ClientQueue {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.spawn(Bell);
    }

    fn stopped(&mut self, _ctx: &mut Context<Self>) {
        self.remove_everywhere();
        let node = &self.env.node;
        node.counters
            .closed_connections
            .fetch_add(1, Ordering::Relaxed);
        node.counters
            .current_connections
            .fetch_sub(1, Ordering::Relaxed);
        self.env
            .clients
            .do_send(crate::clients::Leave(self.info.id));
        debug!(node.log, "client gone"; "client" => self.info.id);
    }
}

impl Supervised for ClientQueue {
    /// Temporary child: a failure ends the client cleanly.
    fn failed(&mut self, ctx: &mut Context<Self>, why: Panicked) {
        let node = &self.env.node;
        node.counters
            .client_failures
            .fetch_add(1, Ordering::Relaxed);
        error!(node.log, "client queue failed; client removed";
            "client" => self.info.id, "peer" => %self.info.peer, "panic" => %why);
        self.remove_everywhere();
        self.conn.do_send(FromQueue::Kick(Kick::QueueFailed));
        ctx.stop();
    }
}

impl Handler<Ask> for ClientQueue {
    type Result = ();

    fn handle(&mut self, msg: Ask, ctx: &mut Context<Self>) {
        let ticket = msg.ticket;
        let done = guard(self, ctx, |a, ctx| {
            a.drain();
            a.release_held();
            a.ask(ctx, ticket, msg.req);
            a.arm();
        });
        if done.is_none() {
            self.answer(ticket, Response::ServerError("client queue failed".into()));
        }
    }
}

impl Handler<Take> for ClientQueue {
    type Result = ();

    fn handle(&mut self, msg: Take, ctx: &mut Context<Self>) {
        self.info.polled();
        if guard(self, ctx, |a, _| a.drain()).is_none() {
            return;
        }
        let gather = self.env.node.settings.poll_gather_ms;
        if self.held_poll != NO_POLL {
            // A poll pipelined behind a held one: both are answered now.
            self.release_held();
        } else if gather > 0
            && !self.overflowed
            && self.bytes < GATHER_BELOW
            && (self.fed || !self.items.is_empty())
        {
            self.held_poll = msg.ticket;
            if !self.gathering {
                self.gathering = true;
                ctx.run_later(Duration::from_millis(gather.into()), |a, ctx| {
                    a.gathering = false;
                    if a.held_poll != NO_POLL && guard(a, ctx, |a, _| a.drain()).is_some() {
                        a.release_held();
                    }
                });
            }
            return;
        }
        self.answer_take(msg.ticket);
    }
}

/// A poll that finds less than this in the inbox is held for
/// `poll_gather_ms` to gather more (see [`ClientQueue::release_held`]).
pub const GATHER_BELOW: usize = 16 << 10;

/// No poll is held (tickets count up from 0 and never reach it).
const NO_POLL: u64 = u64::MAX;

impl ClientQueue {
    /// Answers the poll held back to gather deliveries, if there is one.
    /// A poll that finds less than [`GATHER_BELOW`] bytes queued waits
    /// `poll_gather_ms` before it takes them, so that a client polling
    /// in a tight loop gets more deliveries per answer (one read and one
    /// write for more of them) instead of as many as arrived during its
    /// last round trip. A poll that finds nothing waits only if the last
    /// answer carried something: an idle client's polls are answered at
    /// once. Anything else the connection asks of the queue
    /// first answers the held poll, so that the poll sees the inbox as it
    /// stood before the request behind it.
    fn release_held(&mut self) {
        let ticket = std::mem::replace(&mut self.held_poll, NO_POLL);
        if ticket != NO_POLL {
            self.answer_take(ticket);
        }
    }

    fn answer_take(&mut self, ticket: u64) {
        let taken = if self.overflowed {
            Taken::Overflowed
        } else if self.bytes <= POLL_BYTES {
            self.bytes = 0;
            Taken::Items(std::mem::take(&mut self.items))
        } else {
            let mut taken_bytes = 0;
            let mut n = 0;
            for d in &self.items {
                let size = d.message().queued_bytes();
                if n > 0 && taken_bytes + size > POLL_BYTES {
                    break;
                }
                taken_bytes += size;
                n += 1;
            }
            self.bytes -= taken_bytes;
            Taken::Items(self.items.drain(..n).collect())
        };
        self.fed = matches!(&taken, Taken::Items(items) if !items.is_empty());
        self.publish_figures();
        self.arm();
        self.conn.do_send(FromQueue::Taken { ticket, taken });
    }
}

impl Handler<Watch> for ClientQueue {
    type Result = ();

    fn handle(&mut self, _: Watch, ctx: &mut Context<Self>) {
        self.release_held();
        self.push_mode = true;
        self.take_and_push(ctx, Vec::new());
    }
}

impl Handler<PushAck> for ClientQueue {
    type Result = ();

    fn handle(&mut self, ack: PushAck, ctx: &mut Context<Self>) {
        self.info.polled();
        self.push_outstanding = false;
        self.take_and_push(ctx, ack.0);
    }
}

impl Handler<Resync> for ClientQueue {
    type Result = ();

    fn handle(&mut self, msg: Resync, _ctx: &mut Context<Self>) {
        if self.removed {
            return;
        }
        let topics = self
            .subs
            .iter()
            .filter(|t| shard_of(t, msg.shards) == msg.shard)
            .cloned()
            .collect();
        msg.reply_to.do_send(ResyncReply {
            id: self.info.id,
            home: self.home,
            topics,
        });
    }
}

impl Handler<Close> for ClientQueue {
    type Result = ();

    fn handle(&mut self, _: Close, ctx: &mut Context<Self>) {
        self.remove_everywhere();
        ctx.stop();
    }
}

impl Handler<KickClient> for ClientQueue {
    type Result = ();

    fn handle(&mut self, msg: KickClient, _ctx: &mut Context<Self>) {
        self.conn.do_send(FromQueue::Kick(msg.0));
    }
}

impl Handler<Topics> for ClientQueue {
    type Result = MessageResult<Topics>;

    fn handle(&mut self, _: Topics, _ctx: &mut Context<Self>) -> Self::Result {
        MessageResult(self.subs.iter().cloned().collect())
    }
}

impl Handler<KickIfHolds> for ClientQueue {
    type Result = bool;

    fn handle(&mut self, msg: KickIfHolds, _ctx: &mut Context<Self>) -> bool {
        let holds = self.subs.iter().any(|t| msg.0.contains(t));
        if holds {
            self.conn.do_send(FromQueue::Kick(Kick::UpstreamLost));
        }
        holds
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An idle client is mostly its queue's and connection's task cell:
    /// 16 bytes more here took it into the next size class of the
    /// allocator, 270-290 bytes more per connection (`kraken-bench idle`).
    #[test]
    fn the_queue_state_keeps_its_size() {
        assert!(std::mem::size_of::<ClientQueue>() <= 144);
    }

    fn topic(i: usize) -> Bytes {
        Bytes::from(format!("topic{i}"))
    }

    #[test]
    fn a_topic_set_holds_what_a_hash_set_holds_across_its_split() {
        let mut set = TopicSet::default();
        let mut model = std::collections::HashSet::new();
        let mut moved = 0;
        for i in 0..3 * SPLIT_AT {
            let t = topic(i % (2 * SPLIT_AT));
            assert_eq!(set.insert(t.clone(), &mut moved), model.insert(t));
            if i % 3 == 0 {
                assert_eq!(set.remove(&topic(i / 2)), model.remove(&topic(i / 2)));
            }
            assert_eq!(set.len(), model.len());
        }
        assert!(
            set.tables.as_ref().is_some_and(|t| !t.parts.is_empty()),
            "split"
        );
        // The split and the growths are counted: a few moves per topic.
        assert!(moved >= SPLIT_AT && moved < 8 * set.len(), "{moved}");
        for i in 0..2 * SPLIT_AT {
            assert_eq!(set.contains(&topic(i)), model.contains(&topic(i)));
        }
        let listed: std::collections::HashSet<Bytes> = set.iter().cloned().collect();
        assert_eq!(listed, model);
        assert_eq!(set.iter().count(), model.len());
        let taken: std::collections::HashSet<Bytes> = set.into_topics().collect();
        assert_eq!(taken, model);
    }

    #[test]
    fn a_topic_set_takes_tables_past_a_few_topics_and_lets_them_go_empty() {
        let mut set = TopicSet::default();
        for round in 0..2 {
            for i in 0..=SMALL {
                assert!(set.insert(topic(i), &mut 0), "round {round}");
                assert!(!set.insert(topic(i), &mut 0));
                assert_eq!(set.tables.is_some(), i == SMALL);
            }
            assert_eq!(set.len(), SMALL + 1);
            assert!((0..=SMALL).all(|i| set.contains(&topic(i))));
            assert!(!set.contains(&topic(SMALL + 1)));
            for i in 0..=SMALL {
                assert!(set.remove(&topic(i)));
                assert!(!set.remove(&topic(i)));
            }
            assert!(set.is_empty() && set.tables.is_none() && set.small.is_empty());
        }
        // Held in a vector just its size.
        set.insert(topic(1), &mut 0);
        set.insert(topic(2), &mut 0);
        assert_eq!(set.small.capacity(), 2);
    }

    #[test]
    fn a_walk_in_slices_meets_every_topic_once() {
        for n in [0, 5, SMALL, SMALL + 1, SPLIT_AT, 3 * SPLIT_AT + 7] {
            let mut set = TopicSet::default();
            for i in 0..n {
                set.insert(topic(i), &mut 0);
            }
            let mut met = Vec::new();
            let mut at = 0;
            let mut walks = 0;
            let slice = if n <= SMALL { 3 } else { 1000 };
            while !set.walk(&mut at, slice, |t| met.push(t.clone())) {
                walks += 1;
                assert!(walks < 1000, "the walk never ends");
            }
            assert_eq!(met.len(), n);
            let met: std::collections::HashSet<Bytes> = met.into_iter().collect();
            assert_eq!(met.len(), n);
        }
    }
}
