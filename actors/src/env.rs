//! What a client's actors, the upstream links and the control channel are
//! started with, besides [`Node`]: the handles that exist once the root
//! supervisor has started the shards and the clients' supervisor. Nothing
//! here is filled in later: an actor receives it when it is started.

use std::borrow::Cow;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use actix::{Addr, Recipient};
use bytes::Bytes;
use futures_util::future::BoxFuture;
use kraken_protocol::PublishEntry;

use crate::clients::ClientSupervisor;
use crate::courier::Courier;
use crate::node::{Node, VERSION};
use crate::router::Router;
use crate::supervision::InjectFault;

/// What a proxy node (`crate::proxy`) offers the client actors. A trait,
/// so that the actors do not depend on the proxy's module.
pub trait ProxyHooks: Send + Sync {
    /// Whether the upstreams of these entries accept more forwarded
    /// publishes (their backlog is below `max_queue_bytes`).
    fn admit(&self, entries: &[PublishEntry]) -> bool;
    /// Resolves once the upstreams hold these topics.
    fn settle(&self, topics: Vec<Bytes>) -> BoxFuture<'static, ()>;
    /// Replays these topics upstream since `horizon_ns`; false if an
    /// upstream cannot prove nothing was lost.
    fn retro(&self, topics: Vec<Bytes>, horizon_ns: i128) -> BoxFuture<'static, bool>;
    /// The proxy's `stats` lines.
    fn stats(&self) -> Vec<(Cow<'static, str>, String)>;
}

/// The handles a client's actors (and the control channel) need.
pub struct Env {
    pub node: Arc<Node>,
    pub router: Router,
    pub clients: Addr<ClientSupervisor>,
    /// One courier per worker arbiter (index = the arbiter's).
    pub couriers: Vec<Addr<Courier>>,
    pub proxy: Option<Arc<dyn ProxyHooks>>,
    /// The root supervisor's ear for fault injection (tests only).
    pub faults: Recipient<InjectFault>,
    /// The address clients connect to.
    pub local_addr: SocketAddr,
    /// Who holds the budget of partial requests (`max_pending_request_bytes`).
    pub budget: crate::budget::Budget,
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
            ("curr_resp_connections".into(), get(&c.resp_connections)),
            ("resp_pushes".into(), get(&c.resp_pushes)),
            ("resp_push_batches".into(), get(&c.resp_push_batches)),
        ];
        if let Some(proxy) = &self.proxy {
            stats.push(("upstream_restarts".into(), get(&c.upstream_restarts)));
            stats.extend(proxy.stats());
        }
        stats
    }
}
