//! The router: the handle through which connections, client queues and
//! upstream links reach the router-shard pool, and the node-wide message
//! clock.
//!
//! A topic belongs to shard `fnv1a(topic) mod num_router_shards`. The
//! shards themselves are actors ([`crate::shard::RouterShard`]); this handle
//! holds only their addresses and the clock, and is cloned into every actor
//! that routes.
//!
//! **The clock.** Every message gets a sequence number that is also its
//! publish time: nanoseconds since the Unix epoch, strictly increasing
//! across the node ([`SeqClock::next`]). One number therefore orders
//! messages across shards, makes a `register` horizon exact (a register
//! takes a number of its own; every later message has a larger one) and
//! answers a `retro_subscribe` horizon given in seconds.

use std::sync::Arc;

use actix::Addr;

pub use crate::clock::{Horizon, SeqClock};
pub use crate::placement::{fnv1a, shard_of};
use crate::shard::RouterShard;
pub use crate::shard::{ReplayScope, TopicObserver};

/// The handle to the router-shard pool.
#[derive(Clone)]
pub struct Router {
    inner: Arc<Inner>,
}

struct Inner {
    shards: Vec<Addr<RouterShard>>,
    clock: Arc<SeqClock>,
    observer: Option<Arc<dyn TopicObserver>>,
}

impl Router {
    pub fn new(
        shards: Vec<Addr<RouterShard>>,
        clock: Arc<SeqClock>,
        observer: Option<Arc<dyn TopicObserver>>,
    ) -> Self {
        Router {
            inner: Arc::new(Inner {
                shards,
                clock,
                observer,
            }),
        }
    }

    pub fn num_shards(&self) -> usize {
        self.inner.shards.len()
    }

    pub fn shard_of(&self, topic: &[u8]) -> usize {
        shard_of(topic, self.inner.shards.len())
    }

    pub fn shard(&self, i: usize) -> &Addr<RouterShard> {
        &self.inner.shards[i]
    }

    pub fn shards(&self) -> &[Addr<RouterShard>] {
        &self.inner.shards
    }

    pub fn clock(&self) -> &SeqClock {
        &self.inner.clock
    }

    /// The proxy's ear, on a proxy node.
    pub fn observer(&self) -> Option<&Arc<dyn TopicObserver>> {
        self.inner.observer.as_ref()
    }

    pub fn is_proxy(&self) -> bool {
        self.inner.observer.is_some()
    }
}
