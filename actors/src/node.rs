//! What every actor of a node is started with: [`Node`] (settings, log,
//! counters: fixed before any actor starts) and [`Env`] (the handles a
//! client's actors need: the router, the clients' supervisor, the proxy),
//! built by the root supervisor once those exist. Nothing here is filled in
//! later: an actor receives the handles it needs when it is started.

use std::borrow::Cow;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use actix::{Addr, Recipient};
use slog::Logger;

use crate::clients::ClientSupervisor;
use crate::courier::Courier;
use crate::loglevel::RuntimeLevel;
use crate::metrics::Metrics;
use crate::proxy::Proxy;
use crate::router::Router;
use crate::settings::Settings;
use crate::supervisor::InjectFault;

/// The version `version` and `stats` report.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Counters behind `stats`, kept as things change (`stats` walks nothing).
#[derive(Debug, Default)]
pub struct Counters {
    /// Connections open now (accepted, not yet cleaned up).
    pub current_connections: AtomicU64,
    /// Connections accepted since start.
    pub total_connections: AtomicU64,
    /// Connections closed and cleaned up since start.
    pub closed_connections: AtomicU64,
    /// Connections refused (`max_tcp_clients`).
    pub refused_connections: AtomicU64,
    /// Messages published (one per entry).
    pub published: AtomicU64,
    /// Messages queued for subscribers (one per subscriber per message, replays included).
    pub delivered: AtomicU64,
    /// Clients closed as slow consumers.
    pub slow_consumers: AtomicU64,
    /// Clients closed for being idle.
    pub idle_closed: AtomicU64,
    /// Clients ended by a failure of their connection or queue actor.
    pub client_failures: AtomicU64,
    /// Distinct topics held, over all shards.
    pub topics: AtomicU64,
    /// (client, topic) pairs, over all shards.
    pub subscriptions: AtomicU64,
    /// Router shard restarts.
    pub shard_restarts: AtomicU64,
    /// Listener restarts.
    pub listener_restarts: AtomicU64,
    /// Upstream link restarts (proxy nodes).
    pub upstream_restarts: AtomicU64,
    /// Sub-supervisor restarts.
    pub supervisor_restarts: AtomicU64,
    /// Subscribes refused: the client would pass `max_subscriptions_per_client`.
    pub refused_subscribes_client: AtomicU64,
    /// Subscribes refused: the node would pass `max_topics_per_node`.
    pub refused_subscribes_node: AtomicU64,
    /// Publish blocks refused: an entry names over `max_topics_per_message` topics.
    pub refused_publishes_topics: AtomicU64,
    /// Publish blocks refused: over `max_request_bytes`.
    pub refused_publishes_size: AtomicU64,
    /// Publish blocks refused: malformed.
    pub refused_publishes_bad: AtomicU64,
    /// Publish blocks refused: a proxy's upstream backlog is full.
    pub refused_publishes_backlog: AtomicU64,
    /// Connections closed for passing `max_pending_request_bytes`.
    pub refused_pending: AtomicU64,
    /// Bytes of partial requests buffered now (`crate::budget`).
    pub pending_request_bytes: AtomicU64,
    /// Bytes held by the retro buffers now, over all shards.
    pub retro_bytes: AtomicU64,
}

/// A node's fixed context.
pub struct Node {
    pub settings: Settings,
    pub log: Logger,
    pub counters: Counters,
    /// Histograms and readiness for the HTTP metrics listener.
    pub metrics: Metrics,
    /// The log level in force, changed by `change_log_level`.
    pub level: Arc<RuntimeLevel>,
    pub started: Instant,
    /// Who holds the budget of partial requests (`max_pending_request_bytes`).
    pub budget: crate::budget::Budget,
    next_client_id: AtomicU64,
}

impl Node {
    pub fn new(settings: Settings, log: Logger, level: Arc<RuntimeLevel>) -> Arc<Node> {
        let metrics = Metrics::new(settings.metrics_listen.is_some());
        Arc::new(Node {
            metrics,
            settings,
            log,
            counters: Counters::default(),
            level,
            started: Instant::now(),
            budget: Default::default(),
            next_client_id: AtomicU64::new(1),
        })
    }

    /// A fresh id, never reused in this node's lifetime (clients and
    /// upstream links share the sequence).
    pub fn next_client_id(&self) -> u64 {
        self.next_client_id.fetch_add(1, Ordering::Relaxed)
    }
}

/// The handles a client's actors (and the control channel) need.
pub struct Env {
    pub node: Arc<Node>,
    pub router: Router,
    pub clients: Addr<ClientSupervisor>,
    /// One courier per worker arbiter (index = the arbiter's).
    pub couriers: Vec<Addr<Courier>>,
    pub proxy: Option<Arc<Proxy>>,
    /// The root supervisor's ear for fault injection (tests only).
    pub faults: Recipient<InjectFault>,
    /// The address clients connect to.
    pub local_addr: SocketAddr,
}

impl Env {
    /// The `stats` answer: counters only, nothing is walked.
    pub fn stats(&self) -> Vec<(Cow<'static, str>, String)> {
        let node = &self.node;
        let c = &node.counters;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed).to_string();
        let mut stats = vec![
            ("pid".into(), std::process::id().to_string()),
            (
                "uptime".into(),
                node.started.elapsed().as_secs().to_string(),
            ),
            (
                "time".into(),
                (self.router.clock().now_ns() / 1_000_000_000).to_string(),
            ),
            ("version".into(), VERSION.to_string()),
            ("curr_connections".into(), get(&c.current_connections)),
            ("total_connections".into(), get(&c.total_connections)),
            ("refused_connections".into(), get(&c.refused_connections)),
            (
                "max_connections".into(),
                node.settings.max_tcp_clients.to_string(),
            ),
            ("topics".into(), get(&c.topics)),
            ("subscriptions".into(), get(&c.subscriptions)),
            ("messages_published".into(), get(&c.published)),
            ("messages_delivered".into(), get(&c.delivered)),
            ("slow_consumers_closed".into(), get(&c.slow_consumers)),
            ("idle_clients_closed".into(), get(&c.idle_closed)),
            ("client_failures".into(), get(&c.client_failures)),
            ("router_shards".into(), self.router.num_shards().to_string()),
            ("shard_restarts".into(), get(&c.shard_restarts)),
            ("listener_restarts".into(), get(&c.listener_restarts)),
            ("supervisor_restarts".into(), get(&c.supervisor_restarts)),
            (
                "refused_subscribes_client".into(),
                get(&c.refused_subscribes_client),
            ),
            (
                "refused_subscribes_node".into(),
                get(&c.refused_subscribes_node),
            ),
            (
                "refused_publishes_topics".into(),
                get(&c.refused_publishes_topics),
            ),
            (
                "refused_publishes_size".into(),
                get(&c.refused_publishes_size),
            ),
            (
                "refused_publishes_bad".into(),
                get(&c.refused_publishes_bad),
            ),
            (
                "refused_publishes_backlog".into(),
                get(&c.refused_publishes_backlog),
            ),
            ("refused_pending".into(), get(&c.refused_pending)),
            (
                "pending_request_bytes".into(),
                get(&c.pending_request_bytes),
            ),
            (
                "pending_request_budget".into(),
                node.settings.max_pending_request_bytes.to_string(),
            ),
            ("retro_bytes".into(), get(&c.retro_bytes)),
            (
                "retro_bytes_budget".into(),
                (node.settings.max_retro_bytes_per_router_shard as u64
                    * self.router.num_shards() as u64)
                    .to_string(),
            ),
        ];
        if let Some(proxy) = &self.proxy {
            stats.push(("upstream_restarts".into(), get(&c.upstream_restarts)));
            stats.extend(proxy.stats());
        }
        stats
    }
}
