//! Kraken's actor system, on actix.
//!
//! # Supervision tree
//!
//! ```text
//!                         Supervisor (root, system arbiter)
//!          ____________________|____________________________________
//!         |                    |                  |                 |
//!  ClientSupervisor        ShardPool           Listener       UpstreamLink x M
//!  (system arbiter)        (system arbiter)    (permanent)    (proxies only; permanent,
//!         |                    |                               own arbiters)
//!  client pairs            RouterShard x N
//!  (temporary; on a        (permanent; spread over
//!   worker arbiter,         the router arbiters)
//!   one task each):
//!  Connection + ClientQueue
//! ```
//!
//! Layout, one job per module:
//!
//! - [`supervisor`] — the root: binds the socket, starts the worker
//!   arbiters and its children, restarts what fails, stops the node (exit
//!   70) when supervision gives up, drains on shutdown.
//! - [`supervision`] — restart strategies and restart intensity;
//!   [`guard`] — the one panic guard every handler runs through.
//! - [`shard_pool`] — supervises the router shards; [`shard`] — one router
//!   shard actor, owning its topic table and retro buffer.
//! - [`router`] — the handle to the shards (their addresses);
//!   [`clock`] — the node-wide message clock; [`placement`] — the stable
//!   topic hash; [`publish`] — the scatter/gather publish path used by
//!   connections and upstream links; [`courier`] — posts a publisher's
//!   batch on one worker arbiter's [`board`], the front of the inboxes
//!   of the queues there.
//! - [`clients`] — supervises the client pairs: directory, idle sweep,
//!   drain, dumps. [`listener`] accepts, refuses past `max_tcp_clients`,
//!   starts each client pair on the next worker arbiter.
//! - [`connection`] — one per client: socket, decoding, answers in order,
//!   publishing; generic over its [`dialect`] (memcached on the main
//!   port, Redis's RESP on `resp_port`). [`queue`] — one per client (the
//!   original's "waitress"): owns the client's subscriptions and inbox,
//!   polled or (push mode) pushing.
//! - [`message`] — a published message and what an inbox holds of it;
//!   [`client`] — a client's identity and figures.
//! - [`metrics`] and [`http`] — the optional Prometheus `/metrics` and
//!   `/healthz`, `/readyz` listener (`metrics_listen`).
//! - [`control`] — the control socket; [`proxy`] — proxy nodes' upstream
//!   links; [`node`] and [`env`] — what actors are started with (no
//!   setters: every handle exists before the actor that needs it);
//!   [`settings`], [`loglevel`].
//!
//! Dependencies between these modules flow one way (no cycles): the
//! shards know client queues only as [`shard::QueueHandle`], the clients'
//! supervisor knows them as [`clients::ClientHandle`], and the client
//! actors know a proxy only as [`env::ProxyHooks`].
//! - [`budget`] — the node-wide budget of buffered partial requests;
//!   [`ratelimit`] — rate limits for warnings clients can provoke;
//!   [`lane`] — a thread's bulk lanes, where the large subscription
//!   changes of all its clients take turns.
//!
//! `docs/DESIGN.md` explains the message flow and why it keeps each
//! guarantee.

pub mod board;
pub mod budget;
pub mod client;
pub mod clients;
pub mod clock;
pub mod connection;
pub mod control;
pub mod courier;
pub mod dialect;
pub mod env;
pub mod guard;
pub mod http;
pub mod lane;
pub mod listener;
pub mod loglevel;
pub mod message;
pub mod metrics;
pub mod node;
pub mod placement;
pub mod proxy;
pub mod publish;
pub mod queue;
pub mod ratelimit;
pub mod router;
pub mod settings;
pub mod shard;
pub mod shard_pool;
pub mod supervision;
pub mod supervisor;

pub use env::Env;
pub use node::Node;
pub use settings::{LogLevel, Settings};
pub use supervisor::Supervisor;
