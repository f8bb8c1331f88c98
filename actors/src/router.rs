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

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use actix::Addr;
use bytes::Bytes;

use crate::message::Message;
use crate::shard::RouterShard;

/// Where a replay starts: messages whose sequence number (= publish time
/// in ns) is at or after this.
pub type Horizon = u64;

/// Which topics a replay covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplayScope {
    /// After `register`, a subscribe that adds topics: every topic then
    /// held, skipping the messages already queued for the client since the
    /// register (those on topics held before are replayed only when still
    /// in flight, so that nothing overtakes them).
    NewTopics,
    /// `retro_subscribe`: every requested topic (at-least-once).
    Requested,
}

/// Wall-clock nanoseconds that never go backwards within this process, and
/// the node-wide message sequence built on them.
#[derive(Debug)]
pub struct SeqClock {
    wall_at_start_ns: u64,
    start: Instant,
    last: AtomicU64,
}

impl SeqClock {
    pub fn new() -> Self {
        let wall = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        SeqClock {
            wall_at_start_ns: wall,
            start: Instant::now(),
            last: AtomicU64::new(0),
        }
    }

    /// Nanoseconds since the Unix epoch.
    pub fn now_ns(&self) -> u64 {
        self.wall_at_start_ns + self.start.elapsed().as_nanos() as u64
    }

    /// The next sequence number: the current time in ns, or one more than
    /// the last number handed out if that is later. Unique and increasing.
    pub fn next(&self) -> u64 {
        let now = self.now_ns();
        let mut cur = self.last.load(Ordering::Relaxed);
        loop {
            let next = now.max(cur + 1);
            match self
                .last
                .compare_exchange_weak(cur, next, Ordering::AcqRel, Ordering::Relaxed)
            {
                Ok(_) => return next,
                Err(seen) => cur = seen,
            }
        }
    }
}

impl Default for SeqClock {
    fn default() -> Self {
        Self::new()
    }
}

/// FNV-1a, 64 bits: stable across processes and runs (topic placement on
/// shards and, on proxies, on upstreams must not change with a restart).
pub fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= b as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// Stable, cheap topic → shard hash.
pub fn shard_of(topic: &[u8], shards: usize) -> usize {
    (fnv1a(topic) % shards as u64) as usize
}

/// What a proxy node (`crate::proxy`) must hear from the router to mirror
/// its clients' topics upstream and to forward their publishes. Given to
/// the shards when they start; a plain node has none.
///
/// `gained`/`lost` are called by the shard actor that owns the topics, in
/// the order the changes happen there; `published` by the publisher, in
/// its publish order. Implementations must be quick and must not block: a
/// non-blocking `do_send` is the intended body.
pub trait TopicObserver: Send + Sync {
    /// These topics just gained their first local subscriber.
    fn gained(&self, topics: Vec<Bytes>);
    /// These topics just lost their last local subscriber.
    fn lost(&self, topics: Vec<Bytes>);
    /// A local client published `msg`. Not called for messages relayed
    /// from upstream.
    fn published(&self, msg: &Arc<Message>);
}

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
