//! Kraken's actor system, on actix.
//!
//! # Supervision tree
//!
//! ```text
//!                      Supervisor  (system arbiter)
//!                     /     |      \
//!        router-shard pool  |   worker arbiters (one per core)
//!        (Router: N shard   |        |
//!         tables + retro    |        +-- Connection actor --- ClientQueue actor
//!         buffers)       Listener    +-- Connection actor --- ClientQueue actor
//!                                    +-- ...
//!
//!   on a proxy node (`upstreams` set), also:
//!        UpstreamLink actor per upstream (own arbiter) --TCP--> upstream node
//! ```
//!
//! - [`supervisor::Supervisor`] binds the socket, starts the worker arbiters
//!   and the [`listener::Listener`], restarts the listener if it dies, hears
//!   of router-shard rebuilds, and escalates (exits non-zero) past
//!   `max_restarts` in `max_restart_seconds`, as OTP does. It drains the node
//!   on shutdown.
//! - [`router::Router`] is the router-shard pool: a topic belongs to shard
//!   `hash(topic) mod num_router_shards`; each shard holds its topic table and
//!   its bounded retro buffer behind its own lock. A shard poisoned by a panic
//!   is rebuilt from the clients' subscriptions by its next user.
//! - [`listener::Listener`] accepts, refuses past `max_tcp_clients`, and
//!   starts each connection on the next worker arbiter.
//! - [`connection::Connection`] (one per client) decodes pipelined requests,
//!   answers in order, routes publishes and polls.
//! - [`queue::ClientQueue`] (one per client, same arbiter: the original's
//!   "waitress") owns the client's subscriptions and horizon and removes the
//!   client everywhere when it stops, whether cleanly or by panic.
//! - [`client::ClientShared`] is what the router and the two actors share
//!   about one client: its inbox (bounded: slow consumers are closed) and
//!   subscription set.
//! - [`control`] serves the control socket (a Unix socket, owner-only) on
//!   which `bin/kraken status|stop|change_log_level|dump_*` reach the node.
//! - [`proxy`] (only when `upstreams` is set) makes the node a proxy: one
//!   [`proxy::upstream::UpstreamLink`] per upstream node mirrors the local
//!   clients' topics there (a topic belongs to one upstream by rendezvous
//!   hashing), forwards local publishes, and relays what arrives into the
//!   local router; the router reports to it through
//!   [`router::TopicObserver`].
//!
//! `docs/DESIGN.md` explains why routing runs under shard locks in the
//! publisher's thread rather than through shard mailboxes.

pub mod client;
pub mod connection;
pub mod control;
pub mod http;
pub mod listener;
pub mod loglevel;
pub mod message;
pub mod metrics;
pub mod node;
pub mod proxy;
pub mod queue;
pub mod router;
pub mod settings;
pub mod supervisor;

pub use node::Node;
pub use settings::{LogLevel, Settings};
pub use supervisor::Supervisor;
