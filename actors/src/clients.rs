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
use bytes::Bytes;
use futures_util::future::join_all;
use slog::error;

use crate::client::{ClientInfo, FastMap, FastSet, Kick};
use crate::connection::KickConnection;
use crate::guard::{guard, Panicked, Supervised};
use crate::node::Node;
use crate::queue::{ClientQueue, KickIfHolds, Topics};
use crate::supervisor::{Child, ChildDown};

/// Trim the heap once this many clients left since the last trim.
const TRIM_AFTER_CLOSES: u64 = 256;

/// One client's pair.
struct Entry {
    conn: Recipient<KickConnection>,
    queue: Addr<ClientQueue>,
    info: Arc<ClientInfo>,
}

/// The clients' supervisor.
pub struct ClientSupervisor {
    node: Arc<Node>,
    clients: FastMap<u64, Entry>,
    parent: Recipient<ChildDown>,
    /// `closed_connections` when the heap was last trimmed.
    closed_at_last_trim: u64,
}

/// A client's pair started.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Join {
    pub id: u64,
    /// The client's connection (a recipient, so tests can stand in for it).
    pub conn: Recipient<KickConnection>,
    pub queue: Addr<ClientQueue>,
    pub info: Arc<ClientInfo>,
}

/// A client's pair ended.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Leave(pub u64);

/// Every client queue (for a router shard's restart).
#[derive(Message)]
#[rtype(result = "Vec<(u64, Addr<ClientQueue>)>")]
pub struct Queues;

/// Tell every client's connection to close.
#[derive(Message)]
#[rtype(result = "()")]
pub struct KickAll(pub Kick);

/// Close every client holding one of these topics; answers how many.
#[derive(Message)]
#[rtype(result = "u64")]
pub struct KickHolders(pub Arc<FastSet<Bytes>>);

/// `dump_queues` lines (after the header).
#[derive(Message)]
#[rtype(result = "String")]
pub struct DumpQueues;

/// One client's topics (`dump_queue_topics`); `None` if no such client.
#[derive(Message)]
#[rtype(result = "Option<Vec<Bytes>>")]
pub struct QueueTopics(pub u64);

/// Fault injection: make this supervisor panic.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Panic;

impl ClientSupervisor {
    pub fn new(node: Arc<Node>, parent: Recipient<ChildDown>) -> Self {
        ClientSupervisor {
            node,
            clients: FastMap::default(),
            parent,
            closed_at_last_trim: 0,
        }
    }

    /// Closes idle clients, and gives memory back to the OS after many
    /// clients left (the allocator keeps freed memory otherwise).
    fn sweep(&mut self) {
        let timeout = self.node.settings.client_idle_timeout;
        for e in self.clients.values() {
            if e.info.idle_for() >= timeout {
                e.conn.do_send(KickConnection(Kick::Idle));
            }
        }
        let closed = self
            .node
            .counters
            .closed_connections
            .load(Ordering::Relaxed);
        if closed >= self.closed_at_last_trim + TRIM_AFTER_CLOSES {
            self.closed_at_last_trim = closed;
            trim_heap();
        }
    }
}

/// Returns free heap memory to the OS (glibc keeps it in its arenas).
fn trim_heap() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only walks the allocator's own free lists.
    unsafe {
        libc::malloc_trim(0);
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
                conn: msg.conn,
                queue: msg.queue,
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
            e.conn.do_send(KickConnection(msg.0));
        }
    }
}

impl Handler<KickHolders> for ClientSupervisor {
    type Result = ResponseFuture<u64>;

    fn handle(&mut self, msg: KickHolders, _ctx: &mut Context<Self>) -> Self::Result {
        let asks: Vec<_> = self
            .clients
            .values()
            .map(|e| e.queue.send(KickIfHolds(msg.0.clone())))
            .collect();
        Box::pin(async move {
            join_all(asks)
                .await
                .into_iter()
                .filter(|r| matches!(r, Ok(true)))
                .count() as u64
        })
    }
}

/// The header of `dump_queues`.
pub const DUMP_QUEUES_HEADER: &str =
    "id\tpeer\tsubscriptions\tqueued\tqueued_bytes\treceived\tage_s\tsince_last_poll_s";

impl Handler<DumpQueues> for ClientSupervisor {
    type Result = String;

    fn handle(&mut self, _: DumpQueues, _ctx: &mut Context<Self>) -> String {
        let mut entries: Vec<&Entry> = self.clients.values().collect();
        entries.sort_by_key(|e| e.info.id);
        let mut out = String::new();
        for e in entries {
            let c = &e.info;
            let since_poll = c
                .since_last_poll()
                .map_or_else(|| "never".to_string(), |d| d.as_secs().to_string());
            let _ = writeln!(
                out,
                "{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}",
                c.id,
                c.peer,
                c.subscriptions.load(Ordering::Relaxed),
                c.queued.load(Ordering::Relaxed),
                c.queued_bytes.load(Ordering::Relaxed),
                c.received.load(Ordering::Relaxed),
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
        let queue = self.clients.get(&msg.0).map(|e| e.queue.clone());
        Box::pin(async move {
            match queue {
                Some(q) => q.send(Topics).await.ok(),
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
