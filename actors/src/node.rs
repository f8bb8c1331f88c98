//! What every actor of a node is started with: [`Node`] (settings, log,
//! counters, metrics), fixed before any actor starts. The handles built
//! once the actors exist are in [`crate::env::Env`].

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use slog::Logger;

use crate::loglevel::RuntimeLevel;
use crate::metrics::Metrics;
use crate::settings::Settings;

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
    /// Connections of the Redis dialect (`resp_port`) open now (also
    /// counted in `current_connections`).
    pub resp_connections: AtomicU64,
    /// `message` pushes written to Redis-dialect subscribers.
    pub resp_pushes: AtomicU64,
    /// Pushed batches written and acknowledged (coalescing: many pushes per
    /// batch under load).
    pub resp_push_batches: AtomicU64,
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
    /// Topics that subscribes sent without awaiting their answer may still
    /// add (`crate::shard::Reservation`), counted against
    /// `max_topics_per_node` until their shard applied them.
    pub topics_reserved: AtomicU64,
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
    /// Gives the calling thread's freed heap memory back to the system;
    /// run on every worker and router thread after many clients left
    /// (`crate::clients`). The system allocator's [`trim_system_heap`]
    /// unless the binary brings its own ([`Node::with_heap_trim`]).
    pub trim_heap: fn(),
    next_client_id: AtomicU64,
}

/// `malloc_trim`: glibc keeps freed memory in its arenas otherwise.
pub fn trim_system_heap() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only walks the allocator's own free lists.
    unsafe {
        libc::malloc_trim(0);
    }
}

impl Node {
    pub fn new(settings: Settings, log: Logger, level: Arc<RuntimeLevel>) -> Arc<Node> {
        Node::with_heap_trim(settings, log, level, trim_system_heap)
    }

    /// [`Node::new`] for a binary whose global allocator is not the
    /// system's: `trim_heap` gives a thread's freed memory back.
    pub fn with_heap_trim(
        settings: Settings,
        log: Logger,
        level: Arc<RuntimeLevel>,
        trim_heap: fn(),
    ) -> Arc<Node> {
        let metrics = Metrics::new(settings.metrics_listen.is_some());
        Arc::new(Node {
            metrics,
            settings,
            log,
            counters: Counters::default(),
            level,
            started: Instant::now(),
            trim_heap,
            next_client_id: AtomicU64::new(1),
        })
    }

    /// A fresh id, never reused in this node's lifetime (clients and
    /// upstream links share the sequence).
    pub fn next_client_id(&self) -> u64 {
        self.next_client_id.fetch_add(1, Ordering::Relaxed)
    }
}
