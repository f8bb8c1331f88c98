//! The clients' supervisor: the directory of every client's connection +
//! queue pair (temporary children: a failure ends that client cleanly, it
//! reconnects), and what is done to all of them: the idle sweep, drain on
//! shutdown, the queue list a restarted router shard recovers from, the
//! dumps of the control channel, and a proxy's "close the clients of these
//! topics".

use std::fmt::Write as _;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use actix_rt::ArbiterHandle;
use bytes::Bytes;
use futures_util::future::{join_all, BoxFuture};
use slog::{debug, error};

use crate::client::{ClientInfo, FastMap, FastSet, Kick};
use crate::guard::{guard, Panicked, Supervised};
use crate::node::Node;
use crate::shard::QueueRef;
use crate::supervision::{Child, ChildDown};

/// Trim the heap once this many clients left since the last trim.
const TRIM_AFTER_CLOSES: u64 = 256;

/// Or once buffered partial requests fell by this many bytes from their
/// highest since the last trim.
const TRIM_AFTER_PENDING_FREED: u64 = 64 << 20;

/// Or, once the node stood still for a check (no client came or left, no
/// topic came or went), if this many clients came or left since the last
/// trim, or the topics moved this far from what they were then (or from
/// their highest since): the end of a wave of connects, closes or large
/// (un)subscribes. A wave of closes leaves a tail the shards free after
/// the closes are counted; a wave of connects leaves the tables it
/// outgrew.
const TRIM_AFTER_SETTLED_CLIENTS: u64 = 16;
const TRIM_AFTER_SETTLED_TOPICS: u64 = 4096;

/// How often the trim rules above are checked: a wave's leftovers go back
/// to the OS a quarter to half a second after it ended.
const TRIM_CHECK: Duration = Duration::from_millis(250);

/// What the clients' supervisor needs of a client (implemented by the
/// client queue actor's address, `crate::queue`, so that this module does
/// not depend on the queue's).
pub trait ClientHandle: Send + Sync {
    /// Tell the client's connection to close.
    fn kick(&self, why: Kick);
    /// The client's topics.
    fn topics(&self) -> BoxFuture<'static, Option<Vec<Bytes>>>;
    /// Close the client if it holds one of `topics`; whether it did.
    fn kick_if_holds(&self, topics: Arc<FastSet<Bytes>>) -> BoxFuture<'static, bool>;
}

/// One client's pair.
struct Entry {
    /// The client, as a router shard restart needs it.
    queue: QueueRef,
    /// The same queue, as this supervisor needs it.
    client: Arc<dyn ClientHandle>,
    info: Arc<ClientInfo>,
}

/// The clients' supervisor.
pub struct ClientSupervisor {
    node: Arc<Node>,
    clients: FastMap<u64, Entry>,
    parent: Recipient<ChildDown>,
    /// `closed_connections`, `total_connections` and `topics` when the
    /// heap was last trimmed.
    closed_at_last_trim: u64,
    opened_at_last_trim: u64,
    topics_at_last_trim: u64,
    /// The most partial-request bytes buffered since the last trim.
    pending_peak: u64,
    /// The most topics seen at a check since the last trim.
    topics_peak: u64,
    /// `closed_connections`, `total_connections` and `topics` at the
    /// previous check.
    last_check: (u64, u64, u64),
    /// The threads whose heaps are trimmed.
    threads: Vec<ArbiterHandle>,
}

/// A client's pair started.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Join {
    pub id: u64,
    pub queue: QueueRef,
    pub client: Arc<dyn ClientHandle>,
    pub info: Arc<ClientInfo>,
}

/// A client's pair ended.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Leave(pub u64);

/// Every client queue (for a router shard's restart).
#[derive(Message)]
#[rtype(result = "Vec<(u64, QueueRef)>")]
pub struct Queues;

/// Tell every client's connection to close.
#[derive(Message)]
#[rtype(result = "()")]
pub struct KickAll(pub Kick);

/// Close every client holding one of these topics; answers how many.
#[derive(Message)]
#[rtype(result = "u64")]
pub struct KickHolders(pub Arc<FastSet<Bytes>>);

/// `dump_queues` lines (after the header). It carries what the delivery
/// boards hold for each client (id → deliveries, bytes), not yet in the
/// client's own figures.
#[derive(Message)]
#[rtype(result = "String")]
pub struct DumpQueues(pub FastMap<u64, (usize, usize)>);

/// One client's topics (`dump_queue_topics`); `None` if no such client.
#[derive(Message)]
#[rtype(result = "Option<Vec<Bytes>>")]
pub struct QueueTopics(pub u64);

/// Fault injection: make this supervisor panic.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Panic;

impl ClientSupervisor {
    /// `threads`: the worker and router threads, whose heaps are trimmed
    /// after many clients left.
    pub fn new(node: Arc<Node>, parent: Recipient<ChildDown>, threads: Vec<ArbiterHandle>) -> Self {
        ClientSupervisor {
            node,
            threads,
            clients: FastMap::default(),
            parent,
            closed_at_last_trim: 0,
            opened_at_last_trim: 0,
            topics_at_last_trim: 0,
            pending_peak: 0,
            topics_peak: 0,
            last_check: (0, 0, 0),
        }
    }

    /// Closes idle clients.
    fn sweep(&mut self) {
        let timeout = self.node.settings.client_idle_timeout;
        for e in self.clients.values() {
            if e.info.idle_for() >= timeout {
                e.client.kick(Kick::Idle);
            }
        }
    }

    /// Gives memory back to the OS after many clients left, or after a
    /// wave of them (or of topics) ended (the allocator keeps freed memory
    /// otherwise). Checked every [`TRIM_CHECK`]: a wave has ended when a
    /// check finds nothing moved since the previous one.
    fn check_trim(&mut self) {
        let counters = &self.node.counters;
        let closed = counters.closed_connections.load(Ordering::Relaxed);
        let opened = counters.total_connections.load(Ordering::Relaxed);
        let topics = counters.topics.load(Ordering::Relaxed);
        // Large partial requests (a slow sender's, say) are freed in one
        // go when their connections close or complete: give that back too.
        let pending = counters.pending_request_bytes.load(Ordering::Relaxed);
        self.pending_peak = self.pending_peak.max(pending);
        self.topics_peak = self.topics_peak.max(topics);
        let now = (closed, opened, topics);
        let settled = std::mem::replace(&mut self.last_check, now) == now;
        let clients_moved = closed - self.closed_at_last_trim + opened - self.opened_at_last_trim;
        let topics_moved =
            (self.topics_peak - topics).max(topics.saturating_sub(self.topics_at_last_trim));
        if closed >= self.closed_at_last_trim + TRIM_AFTER_CLOSES
            || self.pending_peak - pending >= TRIM_AFTER_PENDING_FREED
            || (settled
                && (clients_moved >= TRIM_AFTER_SETTLED_CLIENTS
                    || topics_moved >= TRIM_AFTER_SETTLED_TOPICS))
        {
            self.closed_at_last_trim = closed;
            self.opened_at_last_trim = opened;
            self.topics_at_last_trim = topics;
            self.pending_peak = pending;
            self.topics_peak = topics;
            // Each thread's allocator heap is its own: trim them all.
            let trim = self.node.trim_heap;
            let timed = move |log: slog::Logger| {
                let began = std::time::Instant::now();
                trim();
                debug!(log, "heap trimmed"; "thread" => std::thread::current().name().unwrap_or("?"),
                    "us" => began.elapsed().as_micros() as u64);
            };
            timed(self.node.log.clone());
            for thread in &self.threads {
                let log = self.node.log.clone();
                thread.spawn_fn(move || timed(log));
            }
        }
    }
}

impl Actor for ClientSupervisor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        let timeout = self.node.settings.client_idle_timeout;
        let every = (timeout / 4).clamp(Duration::from_millis(100), Duration::from_secs(1));
        ctx.run_interval(every, |act, ctx| {
            guard(act, ctx, |a, _| a.sweep());
        });
        ctx.run_interval(TRIM_CHECK, |act, ctx| {
            guard(act, ctx, |a, _| a.check_trim());
        });
    }
}

impl Supervised for ClientSupervisor {
    fn failed(&mut self, _ctx: &mut Context<Self>, why: Panicked) {
        error!(self.node.log, "clients' supervisor failed"; "panic" => %why);
        self.parent.do_send(ChildDown {
            child: Child::Clients,
            why,
            gave_up: false,
        });
    }
}

impl Handler<Join> for ClientSupervisor {
    type Result = ();

    fn handle(&mut self, msg: Join, _ctx: &mut Context<Self>) {
        self.clients.insert(
            msg.id,
            Entry {
                queue: msg.queue,
                client: msg.client,
                info: msg.info,
            },
        );
    }
}

impl Handler<Leave> for ClientSupervisor {
    type Result = ();

    fn handle(&mut self, msg: Leave, _ctx: &mut Context<Self>) {
        self.clients.remove(&msg.0);
        if self.clients.is_empty() {
            self.clients.shrink_to(64);
        }
    }
}

impl Handler<Queues> for ClientSupervisor {
    type Result = MessageResult<Queues>;

    fn handle(&mut self, _: Queues, _ctx: &mut Context<Self>) -> Self::Result {
        MessageResult(
            self.clients
                .iter()
                .map(|(id, e)| (*id, e.queue.clone()))
                .collect(),
        )
    }
}

impl Handler<KickAll> for ClientSupervisor {
    type Result = ();

    fn handle(&mut self, msg: KickAll, _ctx: &mut Context<Self>) {
        for e in self.clients.values() {
            e.client.kick(msg.0);
        }
    }
}

impl Handler<KickHolders> for ClientSupervisor {
    type Result = ResponseFuture<u64>;

    fn handle(&mut self, msg: KickHolders, _ctx: &mut Context<Self>) -> Self::Result {
        let asks: Vec<_> = self
            .clients
            .values()
            .map(|e| e.client.kick_if_holds(msg.0.clone()))
            .collect();
        Box::pin(async move {
            join_all(asks)
                .await
                .into_iter()
                .filter(|held| *held)
                .count() as u64
        })
    }
}

/// The header of `dump_queues`.
pub const DUMP_QUEUES_HEADER: &str =
    "id\tpeer\tsubscriptions\tqueued\tqueued_bytes\treceived\tage_s\tsince_last_poll_s";

impl Handler<DumpQueues> for ClientSupervisor {
    type Result = String;

    fn handle(&mut self, msg: DumpQueues, _ctx: &mut Context<Self>) -> String {
        let mut entries: Vec<&Entry> = self.clients.values().collect();
        entries.sort_by_key(|e| e.info.id);
        let mut out = String::new();
        for e in entries {
            let c = &e.info;
            let (posted, posted_bytes) = msg.0.get(&c.id).copied().unwrap_or_default();
            let since_poll = c
                .since_last_poll()
                .map_or_else(|| "never".to_string(), |d| d.as_secs().to_string());
            let _ = writeln!(
                out,
                "{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}",
                c.id,
                c.peer,
                c.subscriptions.load(Ordering::Relaxed),
                c.queued.load(Ordering::Relaxed) + posted as u64,
                c.queued_bytes.load(Ordering::Relaxed) + posted_bytes as u64,
                c.received.load(Ordering::Relaxed) + posted as u64,
                c.connected_at.elapsed().as_secs(),
                since_poll,
            );
        }
        out
    }
}

impl Handler<QueueTopics> for ClientSupervisor {
    type Result = ResponseFuture<Option<Vec<Bytes>>>;

    fn handle(&mut self, msg: QueueTopics, _ctx: &mut Context<Self>) -> Self::Result {
        let asked = self.clients.get(&msg.0).map(|e| e.client.topics());
        Box::pin(async move {
            match asked {
                Some(topics) => topics.await,
                None => None,
            }
        })
    }
}

impl Handler<Panic> for ClientSupervisor {
    type Result = ();

    fn handle(&mut self, _: Panic, ctx: &mut Context<Self>) {
        guard(self, ctx, |_, _| -> () {
            panic!("fault injection: clients' supervisor panicked")
        });
    }
}
