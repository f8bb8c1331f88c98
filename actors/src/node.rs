//! The node's shared state: settings, the router-shard pool, the client
//! registry, counters for `stats`, the logger. Every actor holds an `Arc<Node>`.

use std::borrow::Cow;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

use actix::Addr;
use std::time::Instant;

use slog::Logger;

use crate::loglevel::RuntimeLevel;
use crate::metrics::Metrics;
use crate::proxy::Proxy;
use crate::router::{Registry, Router};
use crate::settings::Settings;
use crate::supervisor::Supervisor;

/// The version `version` and `stats` report.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Counters behind `stats` (SPEC §7).
#[derive(Debug, Default)]
pub struct Counters {
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
    /// Listener restarts.
    pub listener_restarts: AtomicU64,
}

/// Shared state of a running node.
pub struct Node {
    pub settings: Settings,
    pub log: Logger,
    pub router: Router,
    pub counters: Counters,
    /// Histograms and readiness for `/metrics` and `/readyz` (`crate::http`).
    pub metrics: Metrics,
    /// Connections open now (accepted, not yet cleaned up).
    pub current_connections: AtomicUsize,
    /// The log level in force, changed by `change_log_level`.
    pub level: Arc<RuntimeLevel>,
    pub started: Instant,
    next_client_id: AtomicU64,
    /// The supervisor, once started (fault injection and failure reports).
    supervisor: OnceLock<Addr<Supervisor>>,
    /// The address the listening socket is bound to (`status` reports it).
    local_addr: OnceLock<SocketAddr>,
    /// The upstream links, if this node is a proxy (`upstreams` set).
    proxy: OnceLock<Arc<Proxy>>,
}

impl Node {
    pub fn new(settings: Settings, log: Logger, level: Arc<RuntimeLevel>) -> Arc<Node> {
        let metrics = Metrics::new(settings.metrics_listen.is_some());
        let router = Router::new(
            settings.num_router_shards,
            settings.messages_stored_per_router_shard,
            Arc::new(Registry::default()),
        );
        Arc::new(Node {
            settings,
            log,
            router,
            counters: Counters::default(),
            metrics,
            current_connections: AtomicUsize::new(0),
            level,
            started: Instant::now(),
            next_client_id: AtomicU64::new(1),
            supervisor: OnceLock::new(),
            local_addr: OnceLock::new(),
            proxy: OnceLock::new(),
        })
    }

    /// Makes this node a proxy (see `crate::proxy::start`).
    pub fn set_proxy(&self, proxy: Arc<Proxy>) {
        let _ = self.proxy.set(proxy);
    }

    /// The upstream links, if this node is a proxy.
    pub fn proxy(&self) -> Option<&Arc<Proxy>> {
        self.proxy.get()
    }

    pub fn set_supervisor(&self, addr: Addr<Supervisor>) {
        let _ = self.supervisor.set(addr);
    }

    pub fn supervisor(&self) -> Option<&Addr<Supervisor>> {
        self.supervisor.get()
    }

    pub fn set_local_addr(&self, addr: SocketAddr) {
        let _ = self.local_addr.set(addr);
    }

    /// The address clients connect to, once bound.
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.local_addr.get().copied()
    }

    pub fn next_client_id(&self) -> u64 {
        self.next_client_id.fetch_add(1, Ordering::Relaxed)
    }

    /// The `stats` answer.
    pub fn stats(&self) -> Vec<(Cow<'static, str>, String)> {
        let c = &self.counters;
        let (topics, subscriptions) = self.router.counts();
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed).to_string();
        let mut stats = vec![
            ("pid".into(), std::process::id().to_string()),
            (
                "uptime".into(),
                self.started.elapsed().as_secs().to_string(),
            ),
            (
                "time".into(),
                (self.router.clock.now_ns() / 1_000_000_000).to_string(),
            ),
            ("version".into(), VERSION.to_string()),
            (
                "curr_connections".into(),
                self.current_connections.load(Ordering::Relaxed).to_string(),
            ),
            ("total_connections".into(), get(&c.total_connections)),
            ("refused_connections".into(), get(&c.refused_connections)),
            (
                "max_connections".into(),
                self.settings.max_tcp_clients.to_string(),
            ),
            ("topics".into(), topics.to_string()),
            ("subscriptions".into(), subscriptions.to_string()),
            ("messages_published".into(), get(&c.published)),
            ("messages_delivered".into(), get(&c.delivered)),
            ("slow_consumers_closed".into(), get(&c.slow_consumers)),
            ("idle_clients_closed".into(), get(&c.idle_closed)),
            ("client_failures".into(), get(&c.client_failures)),
            ("router_shards".into(), self.router.num_shards().to_string()),
            ("shard_restarts".into(), self.router.restarts().to_string()),
            ("listener_restarts".into(), get(&c.listener_restarts)),
        ];
        if let Some(proxy) = self.proxy() {
            stats.extend(proxy.stats());
        }
        stats
    }
}
