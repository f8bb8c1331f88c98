//! One upstream link of a proxy node: an actor holding one TCP connection to
//! one upstream node, which sees it as an ordinary client.
//!
//! # What it keeps
//! - `wanted`: the topics of this upstream that have local subscribers (the
//!   router tells the proxy, under its shard locks, of every first
//!   subscriber and every last unsubscribe, so changes arrive here in order).
//! - `held`: what the current connection holds upstream and since when the
//!   upstream has confirmed it. Changes to `wanted` are sent as their net
//!   effect per topic, batched (`set subscribe`/`set unsubscribe`).
//! - The outbox of local publishes to forward; they go as `set publish`
//!   blocks of many entries, and a block is kept until `STORED` so that it
//!   can be sent again after a reconnection (at least once).
//! - `contact_ns`: when the last successful `get messages` was sent. Every
//!   message the upstream published before then has been received.
//!
//! # Polling
//! `get messages` goes out again at once while messages come, then backs
//! off to [`POLL_MAX`] (or [`IDLE_POLL`] when no topic is held; the poll is
//! also the upstream's heartbeat). What arrives is re-published into the
//! local router under the link's own id, which no local client has, and is
//! never forwarded upstream again.
//!
//! # Failure
//! A closed or failed connection, an unparsable reply, or a request left
//! unanswered for [`REPLY_TIMEOUT`] loses the link: pending retro requests
//! answer `NOT_FOUND`, unacknowledged publish blocks go back to the outbox,
//! and the link reconnects with exponential backoff ([`BACKOFF_MIN`] to
//! [`BACKOFF_MAX`]). On every connection it first asks `stats`; if the
//! upstream's pid and boot time are those seen before, it re-subscribes all
//! `wanted` topics with `retro_subscribe <contact second>`, so the upstream
//! replays what was missed (at least once). If the upstream restarted, or
//! answers `NOT_FOUND`, nothing can prove that no message was lost: the
//! clients holding those topics are closed ([`Kick::UpstreamLost`]) so that
//! they reconnect, re-register and reload, and the reason is logged.
//!
//! Local delivery never waits for a link: the router only `do_send`s to it,
//! and a link whose forward backlog is full makes the proxy refuse new
//! publishes to its topics rather than grow without bound.

use std::collections::{HashMap, HashSet, VecDeque};
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Poll, Waker};
use std::time::{Duration, Instant};

use actix::prelude::*;
use bytes::{Buf, Bytes, BytesMut};
use futures_util::stream::{self, StreamExt};
use kraken_protocol::{message_header, parse_publish_block, BodyLimits};
use slog::{debug, error, info, warn};
use tokio::io::AsyncWrite;
use tokio::net::tcp::OwnedWriteHalf;
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio_util::codec::FramedRead;

use super::reply::{Reply, ReplyCodec, ReplyError};
use super::{LinkShared, ProxyCounters, Ring};
use crate::client::FastSet;
use crate::clients::KickHolders;
use crate::env::Env;
use crate::guard::{guard, Panicked, Supervised};
use crate::message::Message;
use crate::node::Node;
use crate::publish::Publisher;
use crate::shard::{DumpTopics, Routed};
use crate::supervision::{Child, ChildDown};

/// A request left unanswered this long loses the link.
pub const REPLY_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a connection attempt may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// First reconnection delay; it doubles per failed attempt.
pub const BACKOFF_MIN: Duration = Duration::from_millis(50);
/// Longest reconnection delay.
pub const BACKOFF_MAX: Duration = Duration::from_secs(2);
/// Longest pause between polls while topics are held.
pub const POLL_MAX: Duration = Duration::from_millis(5);
/// Pause between polls while no topic is held (a heartbeat).
pub const IDLE_POLL: Duration = Duration::from_millis(250);
/// Largest data block the link sends in one request (an upstream refuses
/// blocks past its `max_request_bytes`, 16 MiB by default).
pub const BATCH_BYTES: usize = 1 << 20;

/// Topics gained (`on`) or lost by the local router.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Hold {
    pub topics: Vec<Bytes>,
    pub on: bool,
}

/// A local publish to forward: one entry of a publish block.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Forward {
    /// `MESSAGE <this upstream's topics of it> <len>\r\n`
    header: Bytes,
    payload: Bytes,
}

impl Forward {
    /// The entry for `msg` with all its topics, or those at `matched`.
    pub fn new(msg: Arc<Message>, matched: Option<Vec<u32>>) -> Forward {
        let header = match matched {
            None => msg.full_header.clone(),
            Some(m) => {
                let refs: Vec<&[u8]> = m.iter().map(|&i| &msg.topics[i as usize][..]).collect();
                message_header(&refs, msg.payload.len())
            }
        };
        Forward {
            header,
            payload: msg.payload.clone(),
        }
    }

    /// Bytes this entry adds to a publish block (the backlog's unit).
    pub fn bytes(&self) -> usize {
        self.header.len() + self.payload.len() + 2
    }
}

/// A client's `register`/`retro_subscribe` reaching back to `horizon_ns`:
/// answers whether the upstream proves nothing on `topics` was lost since.
#[derive(Message)]
#[rtype(result = "bool")]
pub struct Retro {
    pub topics: Vec<Bytes>,
    pub horizon_ns: i128,
}

/// A local subscribe on `topics` waits for this before it answers: resolves
/// once the upstream holds every one of them that this link holds (or is
/// about to hold), so that a message published anywhere after the client's
/// `STORED` reaches it. A link that is not connected resolves at once: its
/// reconnection recovers from before the subscribe (or closes the client).
#[derive(Message)]
#[rtype(result = "()")]
pub struct Settle {
    pub topics: Vec<Bytes>,
}

/// The upstream process, as `stats` shows it: a restart changes it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Identity {
    pid: String,
    /// `time - uptime`, whole seconds (so ±1 between two readings).
    boot_s: i64,
}

impl Identity {
    fn from_stats(stats: &[(String, String)]) -> Option<Identity> {
        let get = |name: &str| {
            stats
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v.as_str())
        };
        let time: i64 = get("time")?.parse().ok()?;
        let uptime: i64 = get("uptime")?.parse().ok()?;
        Some(Identity {
            pid: get("pid")?.to_string(),
            boot_s: time - uptime,
        })
    }

    fn same_process(&self, other: &Identity) -> bool {
        self.pid == other.pid && (self.boot_s - other.boot_s).abs() <= 2
    }
}

/// A topic held by the current connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Held {
    /// Subscribed by request number `n`, not yet confirmed.
    Sent(u64),
    /// Confirmed; the upstream has delivered it to us since this time (ns).
    Since(u64),
}

/// A request waiting for its reply.
enum Pending {
    Stats,
    Subscribe {
        req: u64,
        topics: Vec<Bytes>,
    },
    Unsubscribe,
    /// `retro_subscribe` of every wanted topic after a reconnection.
    Recover {
        req: u64,
        topics: Vec<Bytes>,
    },
    /// `retro_subscribe` on behalf of local clients.
    Retro {
        req: u64,
        topics: Vec<Bytes>,
        answer: oneshot::Sender<bool>,
    },
    Publish {
        block: Bytes,
        bytes: usize,
    },
    Poll {
        sent_ns: u64,
    },
}

impl Pending {
    fn name(&self) -> &'static str {
        match self {
            Pending::Stats => "stats",
            Pending::Subscribe { .. } => "subscribe",
            Pending::Unsubscribe => "unsubscribe",
            Pending::Recover { .. } => "retro_subscribe (recovery)",
            Pending::Retro { .. } => "retro_subscribe",
            Pending::Publish { .. } => "publish",
            Pending::Poll { .. } => "get messages",
        }
    }
}

/// One live connection.
struct Conn {
    /// Which connection of this link (stale stream items are ignored).
    gen: u64,
    writer: OwnedWriteHalf,
    /// Encoded requests not yet written.
    out: BytesMut,
    /// Wakes the [`Flusher`] when `out` or the outbox gain bytes.
    waker: Option<Waker>,
    reader: SpawnHandle,
    flusher: SpawnHandle,
    /// Requests sent, oldest first, with when.
    pending: VecDeque<(Pending, Instant)>,
    /// `stats` answered and `wanted` re-subscribed: normal service.
    ready: bool,
    /// A `get messages` is in flight.
    polling: bool,
    /// The next poll, if scheduled: its timer and when it fires.
    poll_timer: Option<(SpawnHandle, Instant)>,
    /// Empty polls in a row (the backoff's exponent).
    idle_polls: u32,
    /// Requests written, and replies read, on this connection.
    written: u64,
    replied: u64,
    /// [`Settle`]s waiting for the reply to request number `n`.
    barriers: VecDeque<(u64, oneshot::Sender<()>)>,
}

/// One upstream link.
pub struct UpstreamLink {
    node: Arc<Node>,
    env: Arc<Env>,
    /// This link's place in the ring (its upstream's index).
    index: usize,
    /// Which upstream owns which topic.
    ring: Arc<Ring>,
    /// Relays what arrives from upstream into the local router.
    publisher: Publisher,
    /// The root supervisor, told when this link fails.
    supervisor: Recipient<ChildDown>,
    /// `host:port`, as configured.
    name: String,
    shared: Arc<LinkShared>,
    counters: Arc<ProxyCounters>,
    /// Topics of this upstream with local subscribers.
    wanted: HashSet<Bytes>,
    /// Topics whose `wanted` state changed since the last batch was sent.
    dirty: HashSet<Bytes>,
    /// Topics the current connection holds upstream.
    held: HashMap<Bytes, Held>,
    /// Local publishes not yet sent, oldest first.
    outbox: VecDeque<Forward>,
    /// Publish blocks of a lost connection that were never acknowledged,
    /// sent first on the next one.
    resend: VecDeque<(Bytes, usize)>,
    /// Client retro requests that arrived while connecting.
    waiting: Vec<(Retro, oneshot::Sender<bool>)>,
    /// [`Settle`]s that arrived while connecting.
    settling: Vec<oneshot::Sender<()>>,
    /// Some local client may have been promised a topic (its subscribe
    /// answered) that the upstream did not hold: the next connection must
    /// recover from `contact_ns` rather than merely subscribe. True from the
    /// first connection on, and whenever a subscribe is answered while the
    /// link is down.
    owes_recovery: bool,
    conn: Option<Conn>,
    connecting: bool,
    gen: u64,
    next_req: u64,
    /// The upstream process last seen.
    identity: Option<Identity>,
    /// Every message the upstream published before this time (ns) has been
    /// received: the horizon of a recovery.
    contact_ns: u64,
    backoff: Duration,
    /// The current outage has been logged.
    outage_logged: bool,
}

impl UpstreamLink {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        env: Arc<Env>,
        ring: Arc<Ring>,
        index: usize,
        name: String,
        id: u64,
        shared: Arc<LinkShared>,
        counters: Arc<ProxyCounters>,
        supervisor: Recipient<ChildDown>,
        me: Recipient<Routed>,
    ) -> Self {
        let contact_ns = env.router.clock().now_ns();
        UpstreamLink {
            node: env.node.clone(),
            publisher: Publisher::new(id, usize::MAX, false, env.clone(), me),
            env,
            ring,
            index,
            supervisor,
            name,
            shared,
            counters,
            wanted: HashSet::new(),
            dirty: HashSet::new(),
            held: HashMap::new(),
            outbox: VecDeque::new(),
            resend: VecDeque::new(),
            waiting: Vec::new(),
            settling: Vec::new(),
            owes_recovery: false,
            conn: None,
            connecting: false,
            gen: 0,
            next_req: 0,
            identity: None,
            contact_ns,
            backoff: BACKOFF_MIN,
            outage_logged: false,
        }
    }

    fn now_ns(&self) -> u64 {
        self.env.router.clock().now_ns()
    }

    fn wake(&mut self) {
        if let Some(w) = self.conn.as_mut().and_then(|c| c.waker.take()) {
            w.wake();
        }
    }

    // --- connecting -------------------------------------------------------

    fn connect(&mut self, ctx: &mut Context<Self>) {
        self.connecting = true;
        let name = self.name.clone();
        let attempt = async move {
            match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(name)).await {
                Ok(result) => result,
                Err(_) => Err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "connect timed out",
                )),
            }
        };
        ctx.spawn(
            attempt
                .into_actor(self)
                .map(|result, act, ctx| act.on_connect(result, ctx)),
        );
    }

    fn on_connect(&mut self, result: std::io::Result<TcpStream>, ctx: &mut Context<Self>) {
        self.connecting = false;
        let stream = match result {
            Ok(stream) => stream,
            Err(e) => {
                if !self.outage_logged {
                    warn!(self.node.log, "upstream unreachable; retrying with backoff";
                        "upstream" => &self.name, "error" => %e);
                    self.outage_logged = true;
                } else {
                    debug!(self.node.log, "upstream still unreachable";
                        "upstream" => &self.name, "error" => %e);
                }
                self.fail_waiting();
                self.schedule_reconnect(ctx);
                return;
            }
        };
        let _ = stream.set_nodelay(true);
        let (read, writer) = stream.into_split();
        self.gen += 1;
        let gen = self.gen;
        let replies = FramedRead::new(read, ReplyCodec::default())
            .map(move |r| (gen, Some(r)))
            .chain(stream::once(async move { (gen, None) }));
        let reader = ctx.add_stream(replies);
        let flusher = ctx.spawn(Flusher { gen });
        self.conn = Some(Conn {
            gen,
            writer,
            out: BytesMut::new(),
            waker: None,
            reader,
            flusher,
            pending: VecDeque::new(),
            ready: false,
            polling: false,
            poll_timer: None,
            idle_polls: 0,
            written: 0,
            replied: 0,
            barriers: VecDeque::new(),
        });
        self.counters.connects.fetch_add(1, Ordering::Relaxed);
        self.write_raw(b"stats\r\n", Pending::Stats);
    }

    fn schedule_reconnect(&mut self, ctx: &mut Context<Self>) {
        let delay = self.backoff;
        self.backoff = (self.backoff * 2).min(BACKOFF_MAX);
        ctx.run_later(delay, |act, ctx| {
            if act.conn.is_none() && !act.connecting {
                act.connect(ctx);
            }
        });
    }

    /// Answers `NOT_FOUND` to client retro requests waiting for a
    /// connection, and lets waiting subscribes answer (the next connection
    /// then recovers from before them).
    fn fail_waiting(&mut self) {
        for (_, answer) in self.waiting.drain(..) {
            let _ = answer.send(false);
        }
        if !self.settling.is_empty() {
            self.settling.clear();
            self.owes_recovery = true;
        }
    }

    /// The connection is gone: keep what must be sent again, answer what
    /// waited, and reconnect.
    fn lost(&mut self, ctx: &mut Context<Self>, why: &str) {
        let Some(conn) = self.conn.take() else {
            return;
        };
        ctx.cancel_future(conn.reader);
        ctx.cancel_future(conn.flusher);
        if let Some((timer, _)) = conn.poll_timer {
            ctx.cancel_future(timer);
        }
        self.shared.connected.store(false, Ordering::Relaxed);
        self.counters.lost.fetch_add(1, Ordering::Relaxed);
        // Settles resolve as their senders drop with `conn`: the
        // reconnection recovers from before them.
        let mut unacked = VecDeque::new();
        for (what, _) in conn.pending {
            match what {
                Pending::Retro { answer, .. } => {
                    let _ = answer.send(false);
                }
                Pending::Publish { block, bytes } => unacked.push_back((block, bytes)),
                _ => {}
            }
        }
        unacked.append(&mut self.resend);
        self.resend = unacked;
        self.held.clear();
        self.fail_waiting();
        warn!(self.node.log, "upstream lost; reconnecting";
            "upstream" => &self.name, "reason" => why,
            "topics" => self.wanted.len(), "unacknowledged_publish_blocks" => self.resend.len());
        self.outage_logged = true;
        self.schedule_reconnect(ctx);
    }

    /// `stats` answered: re-subscribe, recovering what was missed if the
    /// upstream is the process we knew, and start serving.
    fn handshake(&mut self, identity: Option<Identity>, ctx: &mut Context<Self>) {
        let restarted = match (&self.identity, &identity) {
            (Some(old), Some(new)) => !old.same_process(new),
            _ => false,
        };
        if identity.is_some() {
            self.identity = identity;
        }
        self.backoff = BACKOFF_MIN;
        self.outage_logged = false;
        self.held.clear();
        self.dirty.clear();
        let mut topics: Vec<Bytes> = self.wanted.iter().cloned().collect();
        topics.sort_unstable();
        info!(self.node.log, "upstream connected";
            "upstream" => &self.name, "topics" => topics.len(), "restarted" => restarted);
        // Nothing to recover on a first connection before which no client
        // was promised anything.
        let recover = self.owes_recovery && !restarted;
        self.owes_recovery = true;
        if !topics.is_empty() {
            let key = if recover {
                "retro_subscribe"
            } else {
                "subscribe"
            };
            let horizon = (self.contact_ns / 1_000_000_000).to_string();
            for chunk in chunks(&topics, BATCH_BYTES) {
                let req = self.next_req();
                for t in chunk {
                    self.held.insert(t.clone(), Held::Sent(req));
                }
                let topics = chunk.to_vec();
                let (data, what) = if !recover {
                    (join(chunk), Pending::Subscribe { req, topics })
                } else {
                    let mut data = format!("{horizon}\r\n").into_bytes();
                    data.extend_from_slice(&join(chunk));
                    (data, Pending::Recover { req, topics })
                };
                self.write_set(key, &data, what);
            }
            if restarted {
                self.unrecoverable(&topics, "upstream restarted (its pid or boot time changed)");
            }
        }
        while let Some((block, bytes)) = self.resend.pop_front() {
            self.write_set("publish", &block.clone(), Pending::Publish { block, bytes });
        }
        if let Some(conn) = self.conn.as_mut() {
            conn.ready = true;
        }
        self.shared.connected.store(true, Ordering::Relaxed);
        for (retro, answer) in std::mem::take(&mut self.waiting) {
            self.send_retro(retro, answer);
        }
        if let Some(conn) = self.conn.as_mut() {
            let n = conn.written;
            conn.barriers
                .extend(self.settling.drain(..).map(|tx| (n, tx)));
        }
        self.poll_now(ctx);
        self.wake();
    }

    /// Closes the clients holding any of `topics`, which may have missed
    /// messages that nothing can replay.
    fn unrecoverable(&mut self, topics: &[Bytes], why: &str) {
        self.counters.unrecoverable.fetch_add(1, Ordering::Relaxed);
        let set: Arc<FastSet<Bytes>> = Arc::new(topics.iter().cloned().collect());
        let n = topics.len();
        let why = why.to_string();
        let ask = self.env.clients.send(KickHolders(set));
        let (counters, log, name) = (
            self.counters.clone(),
            self.node.log.clone(),
            self.name.clone(),
        );
        actix::spawn(async move {
            let closed = ask.await.unwrap_or(0);
            counters.clients_closed.fetch_add(closed, Ordering::Relaxed);
            warn!(log, "cannot prove no message was missed while the upstream was away; closing the clients of its topics so they reconnect and reload";
                "upstream" => &name, "reason" => &why,
                "topics" => n, "clients_closed" => closed);
        });
    }

    /// Restarted by its supervisor: forget the connection and the backlog,
    /// and mirror again what the local clients hold of this upstream.
    fn restart(&mut self, ctx: &mut Context<Self>) {
        self.gen += 1;
        self.conn = None;
        self.outbox.clear();
        self.resend.clear();
        self.shared.backlog.store(0, Ordering::Relaxed);
        self.shared.connected.store(false, Ordering::Relaxed);
        for (_, tx) in self.waiting.drain(..) {
            let _ = tx.send(false);
        }
        self.settling.clear();
        self.held.clear();
        self.owes_recovery = true;
        for _ in self.publisher.abandon() {}
        let ring = self.ring.clone();
        let asks: Vec<_> = self
            .env
            .router
            .shards()
            .iter()
            .map(|s| s.send(DumpTopics))
            .collect();
        let index = self.index;
        let fut = async move { futures_util::future::join_all(asks).await }
            .into_actor(self)
            .map(move |answers, act, ctx| {
                act.wanted.clear();
                for topics in answers.into_iter().flatten() {
                    for (t, _) in topics {
                        if ring.owner(&t) == index {
                            act.wanted.insert(t.clone());
                            act.dirty.insert(t);
                        }
                    }
                }
                if !act.connecting {
                    act.connect(ctx);
                }
            });
        ctx.wait(fut);
    }

    // --- requests ---------------------------------------------------------

    fn next_req(&mut self) -> u64 {
        self.next_req += 1;
        self.next_req
    }

    fn write_raw(&mut self, line: &[u8], what: Pending) {
        if let Some(conn) = self.conn.as_mut() {
            conn.out.extend_from_slice(line);
            conn.pending.push_back((what, Instant::now()));
            conn.written += 1;
        }
        self.wake();
    }

    /// `set <key> 0 0 <n>\r\n<data>\r\n`
    fn write_set(&mut self, key: &str, data: &[u8], what: Pending) {
        if let Some(conn) = self.conn.as_mut() {
            conn.out
                .extend_from_slice(format!("set {key} 0 0 {}\r\n", data.len()).as_bytes());
            conn.out.extend_from_slice(data);
            conn.out.extend_from_slice(b"\r\n");
            conn.pending.push_back((what, Instant::now()));
            conn.written += 1;
        }
        self.wake();
    }

    /// Sends what accumulated: the net subscription changes and the outbox
    /// as publish blocks. Runs in the flusher, so every change and publish
    /// handled since the last write goes out in one batch.
    fn prepare(&mut self, ctx: &mut Context<Self>) {
        if !self.conn.as_ref().is_some_and(|c| c.ready) {
            return;
        }
        if !self.dirty.is_empty() {
            let mut subs = Vec::new();
            let mut unsubs = Vec::new();
            for t in std::mem::take(&mut self.dirty) {
                match (self.wanted.contains(&t), self.held.contains_key(&t)) {
                    (true, false) => subs.push(t),
                    (false, true) => {
                        self.held.remove(&t);
                        unsubs.push(t);
                    }
                    _ => {}
                }
            }
            for chunk in chunks(&unsubs, BATCH_BYTES) {
                self.write_set("unsubscribe", &join(chunk), Pending::Unsubscribe);
            }
            for chunk in chunks(&subs, BATCH_BYTES) {
                let req = self.next_req();
                for t in chunk {
                    self.held.insert(t.clone(), Held::Sent(req));
                }
                let topics = chunk.to_vec();
                self.write_set(
                    "subscribe",
                    &join(chunk),
                    Pending::Subscribe { req, topics },
                );
            }
            if !subs.is_empty() {
                self.poll_soon(ctx);
            }
        }
        while !self.outbox.is_empty() {
            let mut block = BytesMut::new();
            let mut bytes = 0;
            while let Some(f) = self.outbox.front() {
                if bytes > 0 && bytes + f.bytes() > BATCH_BYTES {
                    break;
                }
                let Some(f) = self.outbox.pop_front() else {
                    break;
                };
                bytes += f.bytes();
                block.extend_from_slice(&f.header);
                block.extend_from_slice(&f.payload);
                block.extend_from_slice(b"\r\n");
            }
            let block = block.freeze();
            self.write_set("publish", &block.clone(), Pending::Publish { block, bytes });
        }
    }

    /// Sends a client retro request: `retro_subscribe` of the topics whose
    /// messages since the horizon this proxy cannot already replay itself.
    fn send_retro(&mut self, retro: Retro, answer: oneshot::Sender<bool>) {
        let h = retro.horizon_ns;
        // A topic held (and confirmed) since before the horizon has had
        // every message since then relayed into the local retro buffers,
        // which the client's local replay already covered.
        let mut topics: Vec<Bytes> = retro
            .topics
            .into_iter()
            .filter(|t| self.wanted.contains(t))
            .filter(|t| !matches!(self.held.get(t), Some(Held::Since(s)) if (*s as i128) <= h))
            .collect();
        topics.sort_unstable();
        topics.dedup();
        if topics.is_empty() {
            let _ = answer.send(true);
            return;
        }
        let req = self.next_req();
        for t in &topics {
            // The retro_subscribe subscribes it too.
            self.held.entry(t.clone()).or_insert(Held::Sent(req));
            self.dirty.remove(t);
        }
        let mut data = format!("{}\r\n", h.div_euclid(1_000_000_000)).into_bytes();
        data.extend_from_slice(&join(&topics));
        self.write_set(
            "retro_subscribe",
            &data,
            Pending::Retro {
                req,
                topics,
                answer,
            },
        );
    }

    // --- polling ----------------------------------------------------------

    fn poll_now(&mut self, _ctx: &mut Context<Self>) {
        let now = self.now_ns();
        let Some(conn) = self.conn.as_mut().filter(|c| c.ready && !c.polling) else {
            return;
        };
        conn.polling = true;
        self.write_raw(b"get messages\r\n", Pending::Poll { sent_ns: now });
    }

    fn schedule_poll(&mut self, delay: Duration, ctx: &mut Context<Self>) {
        let Some(conn) = self.conn.as_mut() else {
            return;
        };
        if let Some((timer, _)) = conn.poll_timer.take() {
            ctx.cancel_future(timer);
        }
        let gen = conn.gen;
        let timer = ctx.run_later(delay, move |act, ctx| {
            if let Some(conn) = act.conn.as_mut().filter(|c| c.gen == gen) {
                conn.poll_timer = None;
                act.poll_now(ctx);
            }
        });
        if let Some(conn) = self.conn.as_mut() {
            conn.poll_timer = Some((timer, Instant::now() + delay));
        }
    }

    /// Polls within a millisecond if the next poll is further away.
    fn poll_soon(&mut self, ctx: &mut Context<Self>) {
        let Some(conn) = self.conn.as_mut() else {
            return;
        };
        conn.idle_polls = 0;
        let late = conn
            .poll_timer
            .as_ref()
            .is_some_and(|(_, due)| *due > Instant::now() + Duration::from_millis(1));
        if late {
            self.schedule_poll(Duration::from_millis(1), ctx);
        }
    }

    fn polled(&mut self, sent_ns: u64, messages: Option<Bytes>, ctx: &mut Context<Self>) {
        if let Some(block) = &messages {
            if let Err(why) = self.relay(block) {
                return self.lost(ctx, &why);
            }
        }
        self.contact_ns = self.contact_ns.max(sent_ns);
        let idle = self.wanted.is_empty();
        let Some(conn) = self.conn.as_mut() else {
            return;
        };
        conn.polling = false;
        if messages.is_some() {
            conn.idle_polls = 0;
            return self.poll_now(ctx);
        }
        conn.idle_polls = conn.idle_polls.saturating_add(1);
        let delay = if idle {
            IDLE_POLL
        } else {
            let ms = 1u64 << conn.idle_polls.min(8).saturating_sub(1);
            Duration::from_millis(ms).min(POLL_MAX)
        };
        self.schedule_poll(delay, ctx);
    }

    /// Re-publishes a `get messages` value into the local router.
    fn relay(&mut self, block: &Bytes) -> Result<(), String> {
        let entries = parse_publish_block(block, &BodyLimits::UNLIMITED)
            .map_err(|e| format!("unparsable messages from upstream: {}", e.message()))?;
        let n = entries.len() as u64;
        for e in entries {
            self.publisher.submit(e.topics, e.payload);
        }
        let _ = self.publisher.flush();
        self.counters.relayed.fetch_add(n, Ordering::Relaxed);
        Ok(())
    }

    // --- replies ----------------------------------------------------------

    /// The upstream confirmed subscription request `req` on `topics`.
    fn confirm(&mut self, req: u64, topics: &[Bytes]) {
        let now = self.now_ns();
        for t in topics {
            if let Some(h) = self.held.get_mut(t) {
                if *h == Held::Sent(req) {
                    *h = Held::Since(now);
                }
            }
        }
    }

    fn on_reply(&mut self, reply: Reply, ctx: &mut Context<Self>) {
        let Some(what) = self.conn.as_mut().and_then(|c| c.pending.pop_front()) else {
            return self.lost(ctx, "reply to no request");
        };
        if let Some(conn) = self.conn.as_mut() {
            conn.replied += 1;
            while conn
                .barriers
                .front()
                .is_some_and(|(n, _)| *n <= conn.replied)
            {
                if let Some((_, tx)) = conn.barriers.pop_front() {
                    let _ = tx.send(());
                }
            }
        }
        let (what, _) = what;
        let client_error = matches!(&reply, Reply::Failed(l) if l.starts_with("CLIENT_ERROR"));
        match (what, reply) {
            (Pending::Stats, Reply::Stats(stats)) => {
                let identity = Identity::from_stats(&stats);
                self.handshake(identity, ctx);
            }
            (Pending::Stats, Reply::Failed(line)) => {
                warn!(self.node.log, "upstream does not answer stats; restarts cannot be told from outages";
                    "upstream" => &self.name, "reply" => line);
                self.handshake(None, ctx);
            }
            (Pending::Subscribe { req, topics }, Reply::Stored) => self.confirm(req, &topics),
            (Pending::Unsubscribe, Reply::Stored) => {}
            (Pending::Recover { req, topics }, Reply::Stored) => {
                self.confirm(req, &topics);
                self.counters.recovered.fetch_add(1, Ordering::Relaxed);
                info!(self.node.log, "upstream link recovered what it missed";
                    "upstream" => &self.name, "topics" => topics.len());
            }
            (Pending::Recover { req, topics }, Reply::NotFound) => {
                self.confirm(req, &topics);
                self.unrecoverable(&topics, "upstream answered NOT_FOUND to retro_subscribe");
            }
            (
                Pending::Retro {
                    req,
                    topics,
                    answer,
                },
                Reply::Stored,
            ) => {
                self.confirm(req, &topics);
                let _ = answer.send(true);
            }
            (
                Pending::Retro {
                    req,
                    topics,
                    answer,
                },
                Reply::NotFound,
            ) => {
                self.confirm(req, &topics);
                let _ = answer.send(false);
            }
            (Pending::Publish { bytes, .. }, Reply::Stored) => {
                self.shared.backlog.fetch_sub(bytes, Ordering::Relaxed);
            }
            (Pending::Poll { sent_ns }, Reply::End) => self.polled(sent_ns, None, ctx),
            (Pending::Poll { sent_ns }, Reply::Messages(block)) => {
                self.polled(sent_ns, Some(block), ctx)
            }
            // A request the upstream refuses as malformed (its limits are
            // smaller than ours): sending it again would not help.
            (Pending::Publish { bytes, .. }, Reply::Failed(line)) if client_error => {
                self.shared.backlog.fetch_sub(bytes, Ordering::Relaxed);
                error!(self.node.log, "upstream refused forwarded publishes; its subscribers miss them (are its limits smaller than this node's?)";
                    "upstream" => &self.name, "reply" => line);
            }
            (Pending::Subscribe { topics, .. }, Reply::Failed(line))
            | (Pending::Recover { topics, .. }, Reply::Failed(line))
                if client_error =>
            {
                for t in &topics {
                    self.held.remove(t);
                }
                error!(self.node.log, "upstream refused a subscription (are its limits smaller than this node's?)";
                    "upstream" => &self.name, "reply" => line);
                self.unrecoverable(&topics, "upstream refused the subscription");
            }
            (Pending::Retro { answer, .. }, Reply::Failed(line)) if client_error => {
                warn!(self.node.log, "upstream refused a retro_subscribe";
                    "upstream" => &self.name, "reply" => line);
                let _ = answer.send(false);
            }
            (what, reply) => {
                let why = format!("unexpected reply {reply:?} to {}", what.name());
                // Put it back so that `lost` sees it (a publish block is sent again).
                if let Some(conn) = self.conn.as_mut() {
                    conn.pending.push_front((what, Instant::now()));
                }
                self.lost(ctx, &why);
            }
        }
    }

    fn check_timeouts(&mut self, ctx: &mut Context<Self>) {
        let late = self.conn.as_ref().is_some_and(|c| {
            c.pending
                .front()
                .is_some_and(|(_, sent)| sent.elapsed() >= REPLY_TIMEOUT)
        });
        if late {
            self.lost(ctx, "no reply in time: upstream too slow or hung");
        }
    }
}

/// `topics` in runs whose space-joined length stays within `max` bytes
/// (a longer topic makes a run of its own).
fn chunks(topics: &[Bytes], max: usize) -> Vec<&[Bytes]> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut len = 0;
    for (i, t) in topics.iter().enumerate() {
        if i > start && len + 1 + t.len() > max {
            out.push(&topics[start..i]);
            start = i;
            len = 0;
        }
        len += t.len() + 1;
    }
    if start < topics.len() {
        out.push(&topics[start..]);
    }
    out
}

/// Topics joined by single spaces.
fn join(topics: &[Bytes]) -> Vec<u8> {
    let mut out = Vec::with_capacity(topics.iter().map(|t| t.len() + 1).sum());
    for (i, t) in topics.iter().enumerate() {
        if i > 0 {
            out.push(b' ');
        }
        out.extend_from_slice(t);
    }
    out
}

impl Actor for UpstreamLink {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        self.connect(ctx);
        ctx.run_interval(Duration::from_millis(200), |act, ctx| {
            act.check_timeouts(ctx)
        });
    }
}

type Item = (u64, Option<Result<Reply, ReplyError>>);

impl Supervised for UpstreamLink {
    /// Permanent child: its supervisor restarts it ([`RestartLink`]).
    fn failed(&mut self, _ctx: &mut Context<Self>, why: Panicked) {
        error!(self.node.log, "upstream link failed"; "upstream" => &self.name, "panic" => %why);
        self.gen += 1;
        self.conn = None;
        self.connecting = false;
        self.supervisor.do_send(ChildDown {
            child: Child::Upstream(self.index),
            why,
            gave_up: false,
        });
    }
}

/// From the supervisor: restart this link (see `UpstreamLink::restart`).
#[derive(Message)]
#[rtype(result = "()")]
pub struct RestartLink;

/// Fault injection: make this link panic.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Panic;

impl Handler<RestartLink> for UpstreamLink {
    type Result = ();

    fn handle(&mut self, _: RestartLink, ctx: &mut Context<Self>) {
        guard(self, ctx, |a, ctx| a.restart(ctx));
    }
}

impl Handler<Panic> for UpstreamLink {
    type Result = ();

    fn handle(&mut self, _: Panic, ctx: &mut Context<Self>) {
        guard(self, ctx, |a, _| -> () {
            panic!("fault injection: upstream link {} panicked", a.name)
        });
    }
}

impl Handler<Routed> for UpstreamLink {
    type Result = ();

    fn handle(&mut self, msg: Routed, ctx: &mut Context<Self>) {
        guard(self, ctx, |a, _| {
            let _ = a.publisher.routed(msg);
        });
    }
}

impl StreamHandler<Item> for UpstreamLink {
    fn handle(&mut self, (gen, item): Item, ctx: &mut Context<Self>) {
        if self.conn.as_ref().map(|c| c.gen) != Some(gen) {
            return;
        }
        guard(self, ctx, |a, ctx| match item {
            Some(Ok(reply)) => a.on_reply(reply, ctx),
            Some(Err(e)) => a.lost(ctx, &e.to_string()),
            None => a.lost(ctx, "upstream closed the connection"),
        });
    }

    fn finished(&mut self, _ctx: &mut Context<Self>) {
        // The end of a connection's replies was handled as its last item.
    }
}

impl Handler<Hold> for UpstreamLink {
    type Result = ();

    fn handle(&mut self, msg: Hold, ctx: &mut Context<Self>) {
        guard(self, ctx, |a, _| a.hold(msg));
    }
}

impl UpstreamLink {
    fn hold(&mut self, msg: Hold) {
        for t in msg.topics {
            if msg.on {
                self.wanted.insert(t.clone());
            } else {
                self.wanted.remove(&t);
            }
            self.dirty.insert(t);
        }
        self.wake();
    }
}

impl Handler<Forward> for UpstreamLink {
    type Result = ();

    fn handle(&mut self, msg: Forward, ctx: &mut Context<Self>) {
        guard(self, ctx, |a, _| {
            a.outbox.push_back(msg);
            a.wake();
        });
    }
}

impl Handler<Retro> for UpstreamLink {
    type Result = ResponseFuture<bool>;

    fn handle(&mut self, msg: Retro, ctx: &mut Context<Self>) -> Self::Result {
        guard(self, ctx, |a, ctx| a.retro(msg, ctx)).unwrap_or_else(|| Box::pin(async { false }))
    }
}

impl UpstreamLink {
    fn retro(&mut self, msg: Retro, ctx: &mut Context<Self>) -> ResponseFuture<bool> {
        let (answer, rx) = oneshot::channel();
        match &self.conn {
            Some(c) if c.ready => {
                self.send_retro(msg, answer);
                self.poll_soon(ctx);
            }
            Some(_) => self.waiting.push((msg, answer)),
            None if self.connecting => self.waiting.push((msg, answer)),
            // Down, between attempts: nothing can be proved now. The
            // client reloads; its live subscription is recovered with the
            // link, or the client is closed if that fails.
            None => return Box::pin(async { false }),
        }
        Box::pin(async move { rx.await.unwrap_or(false) })
    }
}

impl Handler<Settle> for UpstreamLink {
    type Result = ResponseFuture<()>;

    fn handle(&mut self, msg: Settle, ctx: &mut Context<Self>) -> Self::Result {
        guard(self, ctx, |a, ctx| a.settle(msg, ctx)).unwrap_or_else(|| Box::pin(async {}))
    }
}

impl UpstreamLink {
    fn settle(&mut self, msg: Settle, ctx: &mut Context<Self>) -> ResponseFuture<()> {
        if !self.conn.as_ref().is_some_and(|c| c.ready) {
            if self.conn.is_some() || self.connecting {
                // Wait for the connection's (re)subscription.
                let (tx, rx) = oneshot::channel();
                self.settling.push(tx);
                return Box::pin(async move {
                    let _ = rx.await;
                });
            }
            // Down: answer now; the reconnection recovers from before this.
            self.owes_recovery = true;
            return Box::pin(async {});
        }
        // Send the pending subscription changes now, then wait for the
        // reply to the last request written: replies come in order.
        self.prepare(ctx);
        let unconfirmed = msg
            .topics
            .iter()
            .any(|t| matches!(self.held.get(t), Some(Held::Sent(_))));
        let Some(conn) = self.conn.as_mut().filter(|_| unconfirmed) else {
            return Box::pin(async {});
        };
        let (tx, rx) = oneshot::channel();
        conn.barriers.push_back((conn.written, tx));
        Box::pin(async move {
            let _ = rx.await;
        })
    }
}

/// Writes a connection's `out` to its socket; ends with the connection.
struct Flusher {
    gen: u64,
}

impl ActorFuture<UpstreamLink> for Flusher {
    type Output = ();

    fn poll(
        self: Pin<&mut Self>,
        act: &mut UpstreamLink,
        ctx: &mut Context<UpstreamLink>,
        task: &mut std::task::Context<'_>,
    ) -> Poll<()> {
        if act.conn.as_ref().map(|c| c.gen) != Some(self.gen) {
            return Poll::Ready(());
        }
        act.prepare(ctx);
        let Some(conn) = act.conn.as_mut() else {
            return Poll::Ready(());
        };
        while !conn.out.is_empty() {
            match Pin::new(&mut conn.writer).poll_write(task, &conn.out) {
                Poll::Ready(Ok(0)) | Poll::Ready(Err(_)) => {
                    act.lost(ctx, "write to upstream failed");
                    return Poll::Ready(());
                }
                Poll::Ready(Ok(n)) => conn.out.advance(n),
                Poll::Pending => {
                    conn.waker = Some(task.waker().clone());
                    return Poll::Pending;
                }
            }
        }
        if conn.out.capacity() > 1 << 20 {
            conn.out = BytesMut::new();
        }
        conn.waker = Some(task.waker().clone());
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(s: &str) -> Bytes {
        Bytes::copy_from_slice(s.as_bytes())
    }

    #[test]
    fn chunks_stay_within_the_limit() {
        let topics: Vec<Bytes> = ["aa", "bb", "cc", "dddddddd", "e"]
            .iter()
            .map(|t| b(t))
            .collect();
        let got: Vec<Vec<u8>> = chunks(&topics, 6).into_iter().map(join).collect();
        assert_eq!(
            got,
            vec![
                b"aa bb".to_vec(),
                b"cc".to_vec(),
                b"dddddddd".to_vec(),
                b"e".to_vec()
            ]
        );
        assert!(chunks(&[], 6).is_empty());
    }

    #[test]
    fn identity_tolerates_second_rounding_but_not_a_new_process() {
        let stats = |pid: &str, time: i64, up: i64| {
            vec![
                ("pid".to_string(), pid.to_string()),
                ("uptime".to_string(), up.to_string()),
                ("time".to_string(), time.to_string()),
            ]
        };
        let a = Identity::from_stats(&stats("7", 1000, 100)).unwrap();
        let same = Identity::from_stats(&stats("7", 1050, 149)).unwrap();
        let restarted = Identity::from_stats(&stats("7", 1050, 3)).unwrap();
        let other = Identity::from_stats(&stats("8", 1050, 150)).unwrap();
        assert!(a.same_process(&same));
        assert!(!a.same_process(&restarted));
        assert!(!a.same_process(&other));
        assert!(Identity::from_stats(&stats("7", 1, 1)[..2]).is_none());
    }
}
