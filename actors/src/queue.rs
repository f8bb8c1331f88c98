//! The client queue actor ("waitress" in the original): one per client, on
//! its connection's arbiter. It alone owns the client's subscriptions and
//! inbox; router shards, the connection and the proxy reach them only
//! through its mailbox.
//!
//! - Subscription changes ([`Ask`]) are applied to its own set first (the
//!   source of truth a restarted shard is rebuilt from, [`Resync`]), then
//!   sent to the shards that own the topics; the answer (`STORED`,
//!   `NOT_FOUND`) waits for every shard, so once a client reads `STORED`
//!   every later publish reaches it. While it waits, the queue handles
//!   nothing else: a poll pipelined behind a subscribe sees its replay.
//! - A subscribe with a horizon (`register` then `subscribe`, or
//!   `retro_subscribe`) merges the shards' replays by sequence number:
//!   one entry per message, listing every topic of it the client holds.
//!   The replayed sequence numbers are remembered for a while so that a
//!   copy of the same message still in flight on the live path is dropped.
//! - Deliveries are posted on the delivery board of the queue's arbiter
//!   (`crate::board`), which is the front of its inbox: the queue takes
//!   them at the start of each handler, and is woken ([`Wake`]) only when
//!   they would overflow it or, in push mode, to push them. The inbox
//!   is bounded by `max_queue_messages` and `max_queue_bytes`: past either
//!   the client is a slow consumer, its inbox is emptied and its connection
//!   told to close.
//! - A poll ([`Take`]) takes up to [`POLL_BYTES`] of the inbox.
//! - In push mode ([`Watch`], for dialects that push, such as RESP) the
//!   queue sends the inbox to its connection ([`FromQueue::Pushed`]) as
//!   deliveries arrive, coalesced: at most one push is outstanding, the
//!   next (everything queued meanwhile) goes when the connection says it
//!   wrote the last one ([`PushAck`]). A connection that cannot write
//!   leaves the deliveries in the inbox, whose bounds make it a slow
//!   consumer. A replay is pushed at once, before the subscribe's answer.
//! - When the connection goes ([`Close`]) or this actor fails, the client
//!   is removed from every shard and the actor stops.
//! - Bounds: a subscribe that would take the client past
//!   `max_subscriptions_per_client` is refused whole (`CLIENT_ERROR too
//!   many subscriptions`); one whose topics new to the node would take it
//!   past `max_topics_per_node` is refused by the shards and undone
//!   (`SERVER_ERROR too many topics on this node`). Every change reaches
//!   a shard in chunks of at most [`SHARD_CHUNK`] topics.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use bytes::Bytes;
use futures_util::future::join_all;
use kraken_protocol::{Response, RetroBody};
use slog::{debug, error, info};

use crate::board::{self, Home, Wake, Wakeable};
use crate::client::{ClientInfo, FastSet, Kick, POLL_BYTES};
use crate::clients::ClientHandle;
use crate::env::Env;
use crate::guard::{guard, Panicked, Supervised};
use crate::message::{Delivery, Message};
use crate::router::{shard_of, Horizon, ReplayScope};
use crate::shard::{QueueHandle, Replay, Resync, ResyncReply, ShardFailed, Subscribe, Unsubscribe};

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
pub const SHARD_CHUNK: usize = 4096;

/// A subscription change.
#[derive(Debug)]
pub enum QueueRequest {
    Subscribe(Vec<Bytes>),
    Unsubscribe(Vec<Bytes>),
    Register,
    RetroSubscribe(RetroBody),
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
#[derive(Message)]
#[rtype(result = "()")]
pub struct PushAck;

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

/// One client's queue actor.
pub struct ClientQueue {
    env: Arc<Env>,
    /// The worker arbiter this queue (and its connection) runs on, and
    /// its slot on that arbiter's delivery board.
    home: Home,
    info: Arc<ClientInfo>,
    conn: Recipient<FromQueue>,
    subs: FastSet<Bytes>,
    items: Vec<Delivery>,
    /// Header and payload bytes in `items`.
    bytes: usize,
    received: u64,
    overflowed: bool,
    /// Set by `register`; used up by the next subscribe. Boxed: most
    /// clients never register.
    horizon: Option<Box<Registered>>,
    in_flight: Option<Box<InFlight>>,
    /// The client was removed from the shards (closing or failed).
    removed: bool,
    /// Push mode ([`Watch`]), and whether a push awaits its [`PushAck`].
    push_mode: bool,
    push_outstanding: bool,
}

impl ClientQueue {
    fn new(env: Arc<Env>, home: Home, info: Arc<ClientInfo>, conn: Recipient<FromQueue>) -> Self {
        ClientQueue {
            env,
            home,
            info,
            conn,
            subs: FastSet::default(),
            items: Vec::new(),
            bytes: 0,
            received: 0,
            overflowed: false,
            horizon: None,
            in_flight: None,
            removed: false,
            push_mode: false,
            push_outstanding: false,
        }
    }

    fn id(&self) -> u64 {
        self.info.id
    }

    /// Starts a client's queue actor on the current arbiter; returns its
    /// shared address.
    pub fn begin(
        env: Arc<Env>,
        home: usize,
        info: Arc<ClientInfo>,
        conn: Recipient<FromQueue>,
    ) -> Arc<Addr<ClientQueue>> {
        let ctx = Context::new();
        let me = Arc::new(ctx.address());
        let s = &env.node.settings;
        let room = (s.max_queue_messages, s.max_queue_bytes);
        let slot = board::open(info.id, me.clone(), room);
        let home = Home {
            arbiter: home as u32,
            slot,
        };
        ctx.run(ClientQueue::new(env, home, info, conn));
        me
    }

    /// Indices of the topics of `msg` this client holds.
    fn held(&self, msg: &Message) -> Vec<u32> {
        (0..msg.topics.len() as u32)
            .filter(|&i| self.subs.contains(&msg.topics[i as usize]))
            .collect()
    }
}

impl Wakeable for Addr<ClientQueue> {
    fn wake(&self) {
        self.do_send(Wake);
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
        self.info.received.store(self.received, Ordering::Relaxed);
    }

    /// Takes what the board holds for this queue into the inbox. Every
    /// handler that reads or changes the inbox (or the subscriptions)
    /// starts with it, so deliveries count as arrived before the request.
    fn drain(&mut self) {
        let taken = board::take(self.home.slot, self.id());
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
            self.overflowed = true;
            self.items = Vec::new();
            self.bytes = 0;
            // Nothing more is taken: free the slot and what it holds.
            board::close(self.home.slot, self.id());
            self.conn.do_send(FromQueue::Kick(Kick::SlowConsumer));
            self.publish_figures();
            return;
        }
        if let Some(r) = self.horizon.as_mut() {
            for d in &items {
                r.note(d.message().seq);
            }
        }
        self.bytes += size;
        self.received += items.len() as u64;
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
        self.conn.do_send(FromQueue::Pushed(items));
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

    /// Applies a subscribe to the set and asks the shards; answers when all did.
    fn subscribe(
        &mut self,
        ctx: &mut Context<Self>,
        ticket: u64,
        topics: Vec<Bytes>,
        replay: Option<(Horizon, ReplayScope)>,
        upstream: Upstream,
        seen: Option<Box<Registered>>,
    ) {
        let n = self.env.router.num_shards();
        let mut added: Vec<Bytes> = Vec::new();
        for t in &topics {
            if self.subs.insert(t.clone()) {
                added.push(t.clone());
            }
        }
        let cap = self.env.node.settings.max_subscriptions_per_client;
        if self.subs.len() > cap {
            // Refused whole: nothing of it is applied.
            for t in &added {
                self.subs.remove(t);
            }
            self.env
                .node
                .counters
                .refused_subscribes_client
                .fetch_add(1, Ordering::Relaxed);
            info!(self.env.node.log, "subscribe refused: too many subscriptions";
                "client" => self.id(), "held" => self.subs.len(), "asked" => added.len(),
                "max_subscriptions_per_client" => cap);
            return self.answer(
                ticket,
                Response::ClientError("too many subscriptions".into()),
            );
        }
        self.info
            .subscriptions
            .store(self.subs.len() as u64, Ordering::Relaxed);
        let mut add: Vec<Vec<Bytes>> = vec![Vec::new(); n];
        for t in &added {
            add[shard_of(t, n)].push(t.clone());
        }
        let mut replay_topics: Vec<Vec<Bytes>> = vec![Vec::new(); n];
        if let Some((_, scope)) = replay {
            // After `register`, the replay covers every topic held, not
            // only the new ones: a message since the register on a topic
            // held before may still be on its way live, and replaying a
            // later one (naming a new topic too) must not overtake it. It
            // is replayed as well and its live copy dropped on arrival
            // (`InFlight::replayed`); what was queued already is skipped.
            let of: Vec<&Bytes> = match scope {
                ReplayScope::NewTopics if added.is_empty() => Vec::new(),
                ReplayScope::NewTopics => self.subs.iter().collect(),
                ReplayScope::Requested => topics.iter().collect(),
            };
            for t in of {
                replay_topics[shard_of(t, n)].push(t.clone());
            }
        }
        let id = self.id();
        let home = self.home;
        // Per shard, the change in chunks of at most SHARD_CHUNK topics
        // (added, and to replay), sent one after another.
        let asks: Vec<_> = add
            .into_iter()
            .zip(replay_topics)
            .enumerate()
            .filter(|(_, (add, again))| !add.is_empty() || !again.is_empty())
            .map(|(s, (add, again))| {
                let count = add
                    .len()
                    .div_ceil(SHARD_CHUNK)
                    .max(again.len().div_ceil(SHARD_CHUNK));
                let (mut add, mut again) = (add.chunks(SHARD_CHUNK), again.chunks(SHARD_CHUNK));
                let chunks: Vec<Subscribe> = (0..count)
                    .map(|_| Subscribe {
                        id,
                        home,
                        add: add.next().map(<[Bytes]>::to_vec).unwrap_or_default(),
                        replay: match (replay, again.next()) {
                            (Some((h, _)), Some(topics)) => Some((h, topics.to_vec())),
                            _ => None,
                        },
                    })
                    .collect();
                let shard = self.env.router.shard(s).clone();
                async move {
                    let mut answers = Vec::with_capacity(chunks.len());
                    for chunk in chunks {
                        let answer = shard.send(chunk).await;
                        let stop = !matches!(&answer, Ok(Ok(r)) if !r.over_topic_cap);
                        answers.push(answer);
                        if stop {
                            break;
                        }
                    }
                    answers
                }
            })
            .collect();
        let upstream_topics = match (&upstream, replay.map(|r| r.1)) {
            (Upstream::None, _) => Vec::new(),
            (_, Some(ReplayScope::NewTopics)) => added.clone(),
            _ => topics,
        };
        let added: FastSet<Bytes> = added.into_iter().collect();
        let fut = async move { join_all(asks).await.into_iter().flatten().collect() }
            .into_actor(self)
            .then(move |answers, act, _ctx| {
                let local = guard(act, _ctx, |act, _| {
                    act.subscribed(answers, replay.map(|r| r.1), &added, seen.as_deref())
                })
                .unwrap_or_else(|| Response::ServerError("client queue failed".into()));
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
            })
            .map(move |response, act, _ctx| act.answer(ticket, response));
        ctx.wait(fut);
    }

    /// The shards answered a subscribe: replay what they found.
    fn subscribed(
        &mut self,
        answers: Vec<Result<Result<Replay, ShardFailed>, MailboxError>>,
        scope: Option<ReplayScope>,
        added: &FastSet<Bytes>,
        seen: Option<&Registered>,
    ) -> Response {
        let mut replays = Vec::with_capacity(answers.len());
        for a in answers {
            match a {
                Ok(Ok(r)) => replays.push(r),
                Ok(Err(failed)) => return failed.reply(),
                Err(_) => return ShardFailed.reply(),
            }
        }
        if replays.iter().any(|r| r.over_topic_cap) {
            // Undo the chunks the shards applied: nothing of it stays.
            let undo: Vec<Bytes> = added.iter().cloned().collect();
            for t in &undo {
                self.subs.remove(t);
            }
            self.info
                .subscriptions
                .store(self.subs.len() as u64, Ordering::Relaxed);
            self.send_unsubscribes(undo);
            self.in_flight_mut().unsubscribed = true;
            let node = &self.env.node;
            node.counters
                .refused_subscribes_node
                .fetch_add(1, Ordering::Relaxed);
            info!(node.log, "subscribe refused: too many topics on this node";
                "client" => self.id(), "max_topics_per_node" => node.settings.max_topics_per_node);
            return Response::ServerError("too many topics on this node".into());
        }
        let Some(scope) = scope else {
            return Response::Stored;
        };
        if !replays.iter().all(|r| r.complete) || seen.is_some_and(|r| r.lossy) {
            info!(self.env.node.log, "retro subscription incomplete: NOT_FOUND"; "client" => self.id());
            return Response::NotFound;
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
        Response::Stored
    }

    fn unsubscribe(&mut self, ticket: u64, topics: Vec<Bytes>) {
        let n = self.env.router.num_shards();
        let mut by_shard: Vec<Vec<Bytes>> = vec![Vec::new(); n];
        for t in topics {
            if self.subs.remove(&t) {
                by_shard[shard_of(&t, n)].push(t);
            }
        }
        self.info
            .subscriptions
            .store(self.subs.len() as u64, Ordering::Relaxed);
        // Answered at once: from now on this queue drops what still
        // arrives for these topics (deliveries routed before the shards
        // saw the change), so nothing published after the answer reaches
        // the client on them. The shards get the change in chunks.
        let sent = by_shard.iter().any(|topics| !topics.is_empty());
        for ask in self.unsubscribes(by_shard) {
            actix::spawn(async move {
                let _ = ask.await;
            });
        }
        if sent {
            self.in_flight_mut().unsubscribed = true;
        }
        self.answer(ticket, Response::Stored);
    }

    fn ask(&mut self, ctx: &mut Context<Self>, ticket: u64, req: QueueRequest) {
        match req {
            QueueRequest::Subscribe(topics) => {
                if self.env.node.settings.fault_injection
                    && topics.iter().any(|t| &t[..] == FAULT_QUEUE_PANIC)
                {
                    panic!("fault injection: client queue {} panicked", self.id());
                }
                let upstream = if self.env.proxy.is_some() {
                    Upstream::Settle
                } else {
                    Upstream::None
                };
                match self.horizon.take() {
                    None => self.subscribe(ctx, ticket, topics, None, upstream, None),
                    Some(r) => {
                        let upstream = match upstream {
                            Upstream::None => Upstream::None,
                            _ => Upstream::Retro(r.wall_ns as i128),
                        };
                        self.subscribe(
                            ctx,
                            ticket,
                            topics,
                            Some((r.at, ReplayScope::NewTopics)),
                            upstream,
                            Some(r),
                        )
                    }
                }
            }
            QueueRequest::Unsubscribe(topics) => self.unsubscribe(ticket, topics),
            QueueRequest::Register => {
                let clock = self.env.router.clock();
                self.horizon = Some(Box::new(Registered {
                    at: clock.next(),
                    wall_ns: clock.now_ns(),
                    received: FastSet::default(),
                    lossy: false,
                }));
                self.answer(ticket, Response::Stored);
            }
            QueueRequest::RetroSubscribe(body) => {
                let ns = (body.horizon_secs as i128 * 1_000_000_000).clamp(0, u64::MAX as i128);
                let upstream = if self.env.proxy.is_some() {
                    Upstream::Retro(ns)
                } else {
                    Upstream::None
                };
                self.subscribe(
                    ctx,
                    ticket,
                    body.topics,
                    Some((ns as u64, ReplayScope::Requested)),
                    upstream,
                    None,
                )
            }
        }
    }

    /// Removes the client from every shard (once).
    fn remove_everywhere(&mut self) {
        if self.removed {
            return;
        }
        self.removed = true;
        board::close(self.home.slot, self.id());
        self.items = Vec::new();
        self.bytes = 0;
        let topics: Vec<Bytes> = std::mem::take(&mut self.subs).into_iter().collect();
        self.send_unsubscribes(topics);
    }

    /// Removes the client from `topics` on their shards, in chunks, without
    /// waiting for the answer.
    fn send_unsubscribes(&self, topics: Vec<Bytes>) {
        let n = self.env.router.num_shards();
        let mut by_shard: Vec<Vec<Bytes>> = vec![Vec::new(); n];
        for t in topics {
            by_shard[shard_of(&t, n)].push(t);
        }
        for ask in self.unsubscribes(by_shard) {
            actix::spawn(async move {
                let _ = ask.await;
            });
        }
    }

    /// Per shard with topics, a future sending its [`Unsubscribe`]s in
    /// chunks of at most [`SHARD_CHUNK`] topics, one after another;
    /// `Err` if the shard failed.
    fn unsubscribes(
        &self,
        by_shard: Vec<Vec<Bytes>>,
    ) -> Vec<impl std::future::Future<Output = Result<(), MailboxError>> + 'static> {
        let id = self.id();
        by_shard
            .into_iter()
            .enumerate()
            .filter(|(_, ts)| !ts.is_empty())
            .map(|(s, topics)| {
                let shard = self.env.router.shard(s).clone();
                async move {
                    for chunk in topics.chunks(SHARD_CHUNK) {
                        let topics = chunk.to_vec();
                        shard.send(Unsubscribe { id, topics }).await?;
                    }
                    Ok(())
                }
            })
            .collect()
    }
}

/// What a subscribe must also do upstream, on a proxy.
enum Upstream {
    None,
    /// Answer once the upstreams hold the topics.
    Settle,
    /// Replay upstream since this wall-clock horizon (ns).
    Retro(i128),
}

impl Actor for ClientQueue {
    type Context = Context<Self>;

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
        self.publish_figures();
        self.arm();
        self.conn.do_send(FromQueue::Taken {
            ticket: msg.ticket,
            taken,
        });
    }
}

impl Handler<Wake> for ClientQueue {
    type Result = ();

    fn handle(&mut self, _: Wake, ctx: &mut Context<Self>) {
        guard(self, ctx, |a, _| {
            a.drain();
            a.offer(false);
            a.arm();
        });
    }
}

impl Handler<Watch> for ClientQueue {
    type Result = ();

    fn handle(&mut self, _: Watch, ctx: &mut Context<Self>) {
        self.push_mode = true;
        guard(self, ctx, |a, _| {
            a.drain();
            a.offer(false);
            a.arm();
        });
    }
}

impl Handler<PushAck> for ClientQueue {
    type Result = ();

    fn handle(&mut self, _: PushAck, ctx: &mut Context<Self>) {
        self.info.polled();
        self.push_outstanding = false;
        guard(self, ctx, |a, _| {
            a.drain();
            a.offer(false);
            a.arm();
        });
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
