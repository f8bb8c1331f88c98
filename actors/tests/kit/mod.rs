//! An in-process node for actor-level tests, without sockets: the
//! clients' supervisor, the router-shard pool over its own arbiters, the
//! couriers and an [`Env`], wired as `Supervisor::start` wires them, with a
//! stand-in root ([`Root`]) that restarts the pool when it fails. A
//! [`Client`] plays a connection: its [`Probe`] actor owns a real
//! `ClientQueue` (asks and polls go through it, answers come back as
//! `FromQueue`) and a real `Publisher` (publishes scatter to the shards and
//! gather their answers exactly as a connection's do).

#![allow(dead_code)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix::prelude::*;
use actix_rt::Arbiter;
use bytes::Bytes;
use kraken_actors::client::{ClientInfo, Kick};
use kraken_actors::clients::{ClientSupervisor, Join};
use kraken_actors::courier::Courier;
use kraken_actors::loglevel::RuntimeLevel;
use kraken_actors::message::Delivery;
use kraken_actors::publish::{Outcome, Publisher};
use kraken_actors::queue::{Ask, ClientQueue, Close, FromQueue, QueueRequest, Take, Taken};
use kraken_actors::router::SeqClock;
use kraken_actors::shard::{DumpTopics, Routed, ShardFailed};
use kraken_actors::shard_pool::{RestartPool, ShardPool};
use kraken_actors::supervisor::{Child, ChildDown, InjectFault};
use kraken_actors::{Env, LogLevel, Node, Settings};
use kraken_protocol::Response;
use tokio::sync::oneshot;

/// What the stand-in root saw.
#[derive(Debug, Default)]
pub struct RootLog {
    pub child_downs: AtomicU64,
    pub gave_up: AtomicU64,
}

/// The stand-in root supervisor: restarts the pool when it fails, counts.
pub struct Root {
    pool: Option<Addr<ShardPool>>,
    log: Arc<RootLog>,
}

impl Actor for Root {
    type Context = Context<Self>;
}

#[derive(Message)]
#[rtype(result = "()")]
struct SetPool(Addr<ShardPool>);

impl Handler<SetPool> for Root {
    type Result = ();
    fn handle(&mut self, msg: SetPool, _: &mut Context<Self>) {
        self.pool = Some(msg.0);
    }
}

impl Handler<ChildDown> for Root {
    type Result = ();
    fn handle(&mut self, msg: ChildDown, _: &mut Context<Self>) {
        self.log.child_downs.fetch_add(1, Ordering::SeqCst);
        if msg.gave_up {
            self.log.gave_up.fetch_add(1, Ordering::SeqCst);
        } else if msg.child == Child::ShardPool {
            if let Some(p) = &self.pool {
                p.do_send(RestartPool);
            }
        }
    }
}

impl Handler<InjectFault> for Root {
    type Result = ();
    fn handle(&mut self, _: InjectFault, _: &mut Context<Self>) {}
}

/// A node without sockets. Must be built and used inside an actix `System`.
pub struct TestNode {
    pub env: Arc<Env>,
    pub pool: Addr<ShardPool>,
    pub root_log: Arc<RootLog>,
    workers: Vec<Arbiter>,
    _shard_threads: Vec<Arbiter>,
    next_home: AtomicU64,
}

/// Settings for tests: `shards` router shards, fault injection on, roomy
/// queues and buffers, many restarts allowed.
pub fn settings(shards: usize) -> Settings {
    Settings {
        num_router_shards: shards,
        fault_injection: true,
        max_restarts: 1000,
        ..Settings::default()
    }
}

/// Keeps the injected faults' panic messages out of the test output.
fn quiet_injected_panics() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let msg = info
                .payload()
                .downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| info.payload().downcast_ref::<&str>().copied())
                .unwrap_or("");
            if !msg.starts_with("fault injection:") {
                default(info);
            }
        }));
    });
}

impl TestNode {
    pub fn start(settings: Settings, workers: usize, shard_threads: usize) -> TestNode {
        Self::start_holding_shards(settings, workers, shard_threads).0
    }

    /// [`TestNode::start`], with each shard thread kept busy until the
    /// returned hold is dropped: the shards are made on their threads only
    /// then, however late.
    pub fn start_holding_shards(
        settings: Settings,
        workers: usize,
        shard_threads: usize,
    ) -> (TestNode, Vec<std::sync::mpsc::Sender<()>>) {
        quiet_injected_panics();
        let log = slog::Logger::root(slog::Discard, slog::o!());
        let node = Node::new(settings, log, RuntimeLevel::new(LogLevel::Error));
        let workers: Vec<Arbiter> = (0..workers).map(|_| Arbiter::new()).collect();
        let shard_threads: Vec<Arbiter> = (0..shard_threads).map(|_| Arbiter::new()).collect();
        let hold = shard_threads
            .iter()
            .map(|a| {
                let (tx, rx) = std::sync::mpsc::channel::<()>();
                a.spawn_fn(move || {
                    let _ = rx.recv();
                });
                tx
            })
            .collect();
        let root_log = Arc::new(RootLog::default());
        let root = Root {
            pool: None,
            log: root_log.clone(),
        }
        .start();
        let clients =
            ClientSupervisor::new(node.clone(), root.clone().recipient(), Vec::new()).start();
        let (pool, router) = ShardPool::start(
            node.clone(),
            Arc::new(SeqClock::new()),
            None,
            clients.clone(),
            root.clone().recipient(),
            &shard_threads.iter().map(|a| a.handle()).collect::<Vec<_>>(),
        );
        root.do_send(SetPool(pool.clone()));
        let couriers = workers
            .iter()
            .map(|a| Courier::start_in_arbiter(&a.handle(), |_| Courier))
            .collect();
        let env = Arc::new(Env {
            node,
            router,
            clients,
            couriers,
            proxy: None,
            faults: root.recipient(),
            local_addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            budget: Default::default(),
        });
        let node = TestNode {
            env,
            pool,
            root_log,
            workers,
            _shard_threads: shard_threads,
            next_home: AtomicU64::new(0),
        };
        (node, hold)
    }

    /// Starts a node and waits until every shard runs.
    pub async fn started(settings: Settings, workers: usize, shard_threads: usize) -> TestNode {
        let node = TestNode::start(settings, workers, shard_threads);
        for shard in node.env.router.shards() {
            shard.send(DumpTopics).await.expect("shard running");
        }
        node
    }

    /// The node's clock now (ns): every message submitted later has a
    /// larger sequence number.
    pub fn now(&self) -> u64 {
        self.env.router.clock().now_ns()
    }

    /// A new client on the next worker arbiter.
    pub async fn client(&self) -> Client {
        let home = (self.next_home.fetch_add(1, Ordering::Relaxed) as usize) % self.workers.len();
        let env = self.env.clone();
        let id = env.node.next_client_id();
        let kicks = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = oneshot::channel();
        let k = kicks.clone();
        Probe::start_in_arbiter(
            &self.workers[home].handle(),
            move |ctx: &mut Context<Probe>| {
                let me = ctx.address();
                let info = Arc::new(ClientInfo::new(id, SocketAddr::from(([127, 0, 0, 1], 1))));
                env.node
                    .counters
                    .current_connections
                    .fetch_add(1, Ordering::SeqCst);
                let queue =
                    ClientQueue::begin(env.clone(), home, info.clone(), me.clone().recipient());
                env.clients.do_send(Join {
                    id,
                    queue: queue.clone(),
                    client: queue.clone(),
                    info,
                });
                let _ = tx.send((me.clone(), queue.clone()));
                Probe {
                    publisher: Publisher::new(id, home, true, env.clone(), me.recipient()),
                    queue,
                    next_ticket: 0,
                    answers: HashMap::new(),
                    polls: HashMap::new(),
                    published: HashMap::new(),
                    kicks: k,
                }
            },
        );
        let (probe, queue) = rx.await.expect("probe started");
        Client {
            id,
            probe,
            queue,
            kicks,
        }
    }
}

/// Plays a client's connection.
pub struct Probe {
    publisher: Publisher,
    queue: Arc<Addr<ClientQueue>>,
    next_ticket: u64,
    answers: HashMap<u64, oneshot::Sender<Response>>,
    polls: HashMap<u64, oneshot::Sender<Taken>>,
    published: HashMap<u64, oneshot::Sender<Outcome>>,
    kicks: Arc<Mutex<Vec<Kick>>>,
}

impl Actor for Probe {
    type Context = Context<Self>;
}

impl Probe {
    fn ticket(&mut self) -> u64 {
        self.next_ticket += 1;
        self.next_ticket
    }

    fn resolve_published(&mut self, done: Vec<(u64, Outcome)>) {
        for (t, outcome) in done {
            if let Some(tx) = self.published.remove(&t) {
                let _ = tx.send(outcome);
            }
        }
    }
}

#[derive(Message)]
#[rtype(result = "Response")]
struct DoAsk(QueueRequest);

#[derive(Message)]
#[rtype(result = "Option<Vec<Delivery>>")]
struct DoPoll;

/// Publish these messages (topics, payload) as one request, in one batch.
#[derive(Message)]
#[rtype(result = "Outcome")]
struct DoPublish(Vec<(Vec<Bytes>, Bytes)>);

impl Handler<DoAsk> for Probe {
    type Result = ResponseFuture<Response>;
    fn handle(&mut self, msg: DoAsk, _: &mut Context<Self>) -> Self::Result {
        let ticket = self.ticket();
        let (tx, rx) = oneshot::channel();
        self.answers.insert(ticket, tx);
        self.queue.do_send(Ask { ticket, req: msg.0 });
        Box::pin(async move {
            rx.await
                .unwrap_or(Response::ServerError("queue gone".into()))
        })
    }
}

impl Handler<DoPoll> for Probe {
    type Result = ResponseFuture<Option<Vec<Delivery>>>;
    fn handle(&mut self, _: DoPoll, _: &mut Context<Self>) -> Self::Result {
        let ticket = self.ticket();
        let (tx, rx) = oneshot::channel();
        self.polls.insert(ticket, tx);
        self.queue.do_send(Take { ticket });
        Box::pin(async move {
            match rx.await {
                Ok(Taken::Items(items)) => Some(items),
                _ => None,
            }
        })
    }
}

impl Handler<DoPublish> for Probe {
    type Result = ResponseFuture<Outcome>;
    fn handle(&mut self, msg: DoPublish, _: &mut Context<Self>) -> Self::Result {
        let ticket = self.ticket();
        let (tx, rx) = oneshot::channel();
        self.published.insert(ticket, tx);
        for (topics, payload) in msg.0 {
            self.publisher.submit(topics, payload);
        }
        self.publisher.ticket(ticket);
        let done = self.publisher.flush();
        self.resolve_published(done);
        Box::pin(async move { rx.await.unwrap_or(Err(ShardFailed)) })
    }
}

impl Handler<Routed> for Probe {
    type Result = ();
    fn handle(&mut self, msg: Routed, _: &mut Context<Self>) {
        let done = self.publisher.routed(msg);
        self.resolve_published(done);
    }
}

impl Handler<FromQueue> for Probe {
    type Result = ();
    fn handle(&mut self, msg: FromQueue, _: &mut Context<Self>) {
        match msg {
            FromQueue::Answer { ticket, response } => {
                if let Some(tx) = self.answers.remove(&ticket) {
                    let _ = tx.send(response);
                }
            }
            FromQueue::Taken { ticket, taken } => {
                if let Some(tx) = self.polls.remove(&ticket) {
                    let _ = tx.send(taken);
                }
            }
            FromQueue::Kick(k) => self.kicks.lock().unwrap().push(k),
            // A probe polls; its queue is never in push mode.
            FromQueue::Pushed(_) => {}
        }
    }
}

/// One entry a client polled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub seq: u64,
    pub publisher: u64,
    /// The topics the entry lists (those the client holds), in publish order.
    pub topics: Vec<Bytes>,
    pub payload: Bytes,
}

impl Entry {
    pub fn of(d: &Delivery) -> Entry {
        let m = d.message();
        let topics = match d {
            Delivery::All(_) => m.topics.clone(),
            Delivery::Some(_, mask) => m
                .topics
                .iter()
                .enumerate()
                .filter(|(i, _)| mask & (1 << i) != 0)
                .map(|(_, t)| t.clone())
                .collect(),
            Delivery::Built(_, header) => {
                let line = &header[..header.len() - 2];
                let words: Vec<&[u8]> = line.split(|&b| b == b' ').collect();
                words[1..words.len() - 1]
                    .iter()
                    .map(|w| Bytes::copy_from_slice(w))
                    .collect()
            }
        };
        Entry {
            seq: m.seq,
            publisher: m.publisher,
            topics,
            payload: m.payload.clone(),
        }
    }
}

/// A test client: a queue and its stand-in connection.
pub struct Client {
    pub id: u64,
    probe: Addr<Probe>,
    pub queue: Arc<Addr<ClientQueue>>,
    pub kicks: Arc<Mutex<Vec<Kick>>>,
}

pub fn topics(ts: &[&str]) -> Vec<Bytes> {
    ts.iter().map(|t| Bytes::from(t.to_string())).collect()
}

impl Client {
    pub async fn ask(&self, req: QueueRequest) -> Response {
        self.probe
            .send(DoAsk(req))
            .await
            .unwrap_or(Response::ServerError("probe gone".into()))
    }

    pub async fn subscribe(&self, ts: Vec<Bytes>) -> Response {
        self.ask(QueueRequest::Subscribe(ts.into())).await
    }

    pub async fn unsubscribe(&self, ts: Vec<Bytes>) -> Response {
        self.ask(QueueRequest::Unsubscribe(ts.into())).await
    }

    pub async fn register(&self) -> Response {
        self.ask(QueueRequest::Register).await
    }

    pub async fn retro(&self, ts: Vec<Bytes>, horizon_secs: i64) -> Response {
        self.ask(QueueRequest::RetroSubscribe {
            horizon_secs,
            topics: ts.into(),
        })
        .await
    }

    /// Publishes messages as one request; resolves once delivered.
    pub async fn publish(&self, msgs: Vec<(Vec<Bytes>, Bytes)>) -> Result<(), ShardFailed> {
        self.probe
            .send(DoPublish(msgs))
            .await
            .unwrap_or(Err(ShardFailed))
            .map(|_reached| ())
    }

    /// One poll (`None`: the queue overflowed or is gone).
    pub async fn poll(&self) -> Option<Vec<Entry>> {
        let items = self.probe.send(DoPoll).await.ok().flatten()?;
        Some(items.iter().map(Entry::of).collect())
    }

    /// Polls into `into` until `done(into)` or the deadline; then waits
    /// `quiet` and polls once more, so extra entries show up too.
    pub async fn poll_until(
        &self,
        into: &mut Vec<Entry>,
        deadline: Duration,
        quiet: Duration,
        done: impl Fn(&[Entry]) -> bool,
    ) {
        let end = tokio::time::Instant::now() + deadline;
        while !done(into) && tokio::time::Instant::now() < end {
            into.extend(self.poll().await.unwrap_or_default());
            if !done(into) {
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        }
        tokio::time::sleep(quiet).await;
        into.extend(self.poll().await.unwrap_or_default());
    }

    /// Closes the client as its connection going away would.
    pub fn close(&self) {
        self.queue.do_send(Close);
    }
}
