//! The client queue actor ("waitress" in the original): owns one client's
//! subscriptions and `register` horizon, applies subscription changes through
//! the router, and removes every trace of the client when it stops, however
//! it stops (a clean close, its connection's failure, or its own panic).
//!
//! Its inbox ([`ClientShared`]) is shared with the router so that publishers
//! queue messages without a mailbox hop and a poll takes them at once.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use actix::prelude::*;
use bytes::Bytes;
use kraken_protocol::{Response, RetroBody};
use slog::{debug, info};

use crate::client::ClientShared;
use crate::node::Node;
use crate::router::{Horizon, ReplayScope, Subscribed};

/// Topic that makes a queue actor panic when `fault_injection` is on.
pub const FAULT_QUEUE_PANIC: &[u8] = b"__kraken_fault_queue_panic__";

/// A subscription change, answered with the reply to send.
#[derive(Debug)]
pub enum QueueRequest {
    Subscribe(Vec<Bytes>),
    Unsubscribe(Vec<Bytes>),
    Register,
    RetroSubscribe(RetroBody),
}

impl Message for QueueRequest {
    type Result = Response;
}

/// One client's queue actor.
pub struct ClientQueue {
    node: Arc<Node>,
    /// Removes the client everywhere when this actor goes, even by panic.
    cleanup: Cleanup,
    /// Set by `register`; used up by the next subscribe. Boxed: most
    /// clients never register, and this actor exists once per connection.
    horizon: Option<Box<Registered>>,
}

/// What `register` remembers.
#[derive(Debug, Clone, Copy)]
struct Registered {
    /// The exact horizon for this node's own retro buffers.
    at: Horizon,
    /// The wall clock then (ns): on a proxy, the horizon sent upstream.
    wall_ns: u64,
}

/// Removes a client's state from the node when dropped.
struct Cleanup {
    node: Arc<Node>,
    client: Arc<ClientShared>,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.client.kick(crate::client::Kick::QueueFailed);
            self.node
                .counters
                .client_failures
                .fetch_add(1, Ordering::Relaxed);
            slog::error!(self.node.log, "client queue failed; client removed";
                "client" => self.client.id, "peer" => %self.client.peer);
        }
        self.node.router.remove_client(&self.client);
        self.node
            .counters
            .closed_connections
            .fetch_add(1, Ordering::Relaxed);
        self.node
            .current_connections
            .fetch_sub(1, Ordering::Relaxed);
        debug!(self.node.log, "client gone"; "client" => self.client.id);
    }
}

impl ClientQueue {
    pub fn new(node: Arc<Node>, client: Arc<ClientShared>) -> Self {
        ClientQueue {
            cleanup: Cleanup {
                node: node.clone(),
                client,
            },
            node,
            horizon: None,
        }
    }

    fn client(&self) -> &Arc<ClientShared> {
        &self.cleanup.client
    }

    fn subscribe(&mut self, topics: &[Bytes], replay: Option<(Horizon, ReplayScope)>) -> Response {
        let node = &self.node;
        let client = self.client();
        match node
            .router
            .supervised(|| node.router.subscribe(client, topics, replay))
        {
            Ok(Subscribed::Complete { replayed }) => {
                if replayed > 0 {
                    node.counters
                        .delivered
                        .fetch_add(replayed as u64, Ordering::Relaxed);
                }
                Response::Stored
            }
            Ok(Subscribed::Incomplete) => {
                info!(node.log, "retro subscription incomplete: NOT_FOUND";
                    "client" => client.id);
                Response::NotFound
            }
            Err(failed) => failed.reply(),
        }
    }
}

impl Actor for ClientQueue {
    type Context = Context<Self>;
}

/// On a proxy, completes a retroactive subscription upstream once it has
/// succeeded locally: the answer is `NOT_FOUND` if an upstream cannot prove
/// that nothing was lost since `horizon_ns` (see `crate::proxy`).
fn retro_upstream(
    node: &Arc<Node>,
    client: u64,
    local: Response,
    topics: Vec<Bytes>,
    horizon_ns: i128,
) -> actix::Response<Response> {
    let Some(proxy) = node.proxy().filter(|_| local == Response::Stored) else {
        return actix::Response::reply(local);
    };
    let upstream = proxy.retro(topics, horizon_ns);
    let log = node.log.clone();
    actix::Response::fut(async move {
        if upstream.await {
            Response::Stored
        } else {
            info!(log, "retro subscription incomplete upstream: NOT_FOUND"; "client" => client);
            Response::NotFound
        }
    })
}

impl Handler<QueueRequest> for ClientQueue {
    type Result = actix::Response<Response>;

    fn handle(&mut self, req: QueueRequest, _ctx: &mut Context<Self>) -> Self::Result {
        let reply = match req {
            QueueRequest::Subscribe(topics) => {
                if self.node.settings.fault_injection
                    && topics.iter().any(|t| &t[..] == FAULT_QUEUE_PANIC)
                {
                    panic!(
                        "fault injection: client queue {} panicked",
                        self.client().id
                    );
                }
                let Some(registered) = self.horizon.take() else {
                    let local = self.subscribe(&topics, None);
                    // On a proxy, answer once the upstreams hold the topics.
                    return match self.node.proxy().filter(|_| local == Response::Stored) {
                        Some(proxy) => {
                            let settled = proxy.settle(topics);
                            actix::Response::fut(async move {
                                settled.await;
                                local
                            })
                        }
                        None => actix::Response::reply(local),
                    };
                };
                // On a proxy, the topics this subscribe adds are replayed
                // upstream too.
                let added: Vec<Bytes> = match self.node.proxy() {
                    Some(_) => {
                        let held = crate::client::lock(&self.client().subscriptions);
                        let mut added: Vec<Bytes> = topics
                            .iter()
                            .filter(|t| !held.contains(*t))
                            .cloned()
                            .collect();
                        added.sort_unstable();
                        added.dedup();
                        added
                    }
                    None => Vec::new(),
                };
                let local = self.subscribe(&topics, Some((registered.at, ReplayScope::NewTopics)));
                let id = self.client().id;
                return retro_upstream(&self.node, id, local, added, registered.wall_ns as i128);
            }
            QueueRequest::Unsubscribe(topics) => {
                let node = &self.node;
                let client = self.client();
                match node
                    .router
                    .supervised(|| node.router.unsubscribe(client, &topics))
                {
                    Ok(()) => Response::Stored,
                    Err(failed) => failed.reply(),
                }
            }
            QueueRequest::Register => {
                let wall_ns = self.node.router.clock.now_ns();
                self.horizon = Some(Box::new(Registered {
                    at: self.node.router.register_horizon(),
                    wall_ns,
                }));
                Response::Stored
            }
            QueueRequest::RetroSubscribe(body) => {
                let ns = body.horizon_secs as i128 * 1_000_000_000;
                let local = self.subscribe(
                    &body.topics,
                    Some((Horizon::TimeNs(ns), ReplayScope::Requested)),
                );
                let id = self.client().id;
                return retro_upstream(&self.node, id, local, body.topics, ns);
            }
        };
        actix::Response::reply(reply)
    }
}
