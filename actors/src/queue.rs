//! The client queue actor ("waitress" in the original): owns one client's
//! subscriptions and `register` horizon, applies subscription changes through
//! the router, and removes every trace of the client when it stops, however
//! it stops (a clean close, its connection's failure, or its own panic).
//!
//! Its inbox ([`ClientShared`]) is shared with the router so that publishers
//! queue messages without a mailbox hop and a poll takes them at once.

use std::panic::{catch_unwind, AssertUnwindSafe};
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
    /// Set by `register`; used up by the next subscribe.
    horizon: Option<Horizon>,
}

/// Removes a client's state from the node when dropped.
struct Cleanup {
    node: Arc<Node>,
    client: Arc<ClientShared>,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.node
                .counters
                .client_failures
                .fetch_add(1, Ordering::Relaxed);
            slog::error!(self.node.log, "client queue failed; client removed";
                "client" => self.client.id, "peer" => %self.client.peer);
        }
        self.node.router.remove_client(&self.client);
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
        let result = catch_unwind(AssertUnwindSafe(|| {
            node.router.subscribe(client, topics, replay)
        }));
        match result {
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
            Err(_) => Response::ServerError("router shard failed; it was restarted, retry".into()),
        }
    }
}

impl Actor for ClientQueue {
    type Context = Context<Self>;
}

impl Handler<QueueRequest> for ClientQueue {
    type Result = MessageResult<QueueRequest>;

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
                let replay = self.horizon.take().map(|h| (h, ReplayScope::NewTopics));
                self.subscribe(&topics, replay)
            }
            QueueRequest::Unsubscribe(topics) => {
                let node = &self.node;
                let client = self.client();
                match catch_unwind(AssertUnwindSafe(|| {
                    node.router.unsubscribe(client, &topics)
                })) {
                    Ok(()) => Response::Stored,
                    Err(_) => {
                        Response::ServerError("router shard failed; it was restarted, retry".into())
                    }
                }
            }
            QueueRequest::Register => {
                self.horizon = Some(self.node.router.register_horizon());
                Response::Stored
            }
            QueueRequest::RetroSubscribe(body) => {
                let ns = body.horizon_secs as i128 * 1_000_000_000;
                self.subscribe(
                    &body.topics,
                    Some((Horizon::TimeNs(ns), ReplayScope::Requested)),
                )
            }
        };
        MessageResult(reply)
    }
}
