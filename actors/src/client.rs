//! What the node knows about one connected client outside its two actors:
//! its identity and the figures that `dump_queues`, the idle sweep and
//! `stats` read. Each figure is written only by the actor that owns what it
//! counts (the connection its clocks, the client queue its queue figures)
//! and read by anyone; the subscriptions and the inbox themselves belong to
//! the client queue actor alone (`crate::queue`).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Most header and payload bytes one `get messages` answer carries (a
/// single larger message still goes out whole).
pub const POLL_BYTES: usize = 1 << 20;

/// Hash set with the node's fast, randomly seeded hasher.
pub type FastSet<T> = std::collections::HashSet<T, foldhash::fast::RandomState>;
/// Hash map with the node's fast, randomly seeded hasher.
pub type FastMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;

/// Why the node tells a client's connection to close.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kick {
    /// Its inbox overflowed: it is a slow consumer.
    SlowConsumer,
    /// The node is stopping.
    Shutdown,
    /// It sent nothing for `client_idle_timeout`.
    Idle,
    /// Its queue actor failed; the client's state is already gone.
    QueueFailed,
    /// A proxy lost the upstream of one of the client's topics and cannot
    /// prove that nothing was missed meanwhile: the client must reconnect,
    /// re-register and reload (see `crate::proxy`).
    UpstreamLost,
}

/// One client's identity and figures.
#[derive(Debug)]
pub struct ClientInfo {
    /// Node-unique id (never reused in a node's lifetime); `dump_queue_topics` takes it.
    pub id: u64,
    /// The peer address, for dumps and logs.
    pub peer: SocketAddr,
    /// When the connection was accepted.
    pub connected_at: Instant,
    /// Milliseconds since `connected_at` of the last poll + 1 (0 = never).
    last_poll_ms: AtomicU64,
    /// Milliseconds since `connected_at` of the last request: the idle
    /// clock, read by the clients' supervisor's sweep (no timer per connection).
    last_request_ms: AtomicU64,
    /// Topics held (written by the queue).
    pub subscriptions: AtomicU64,
    /// Messages and bytes waiting for the next poll (written by the queue).
    pub queued: AtomicU64,
    pub queued_bytes: AtomicU64,
    /// Messages ever queued (written by the queue).
    pub received: AtomicU64,
}

impl ClientInfo {
    pub fn new(id: u64, peer: SocketAddr) -> Self {
        ClientInfo {
            id,
            peer,
            connected_at: Instant::now(),
            last_poll_ms: AtomicU64::new(0),
            last_request_ms: AtomicU64::new(0),
            subscriptions: AtomicU64::new(0),
            queued: AtomicU64::new(0),
            queued_bytes: AtomicU64::new(0),
            received: AtomicU64::new(0),
        }
    }

    fn now_ms(&self) -> u64 {
        self.connected_at.elapsed().as_millis() as u64
    }

    /// Notes that a request arrived (the idle clock).
    pub fn touch(&self) {
        self.last_request_ms.store(self.now_ms(), Ordering::Relaxed);
    }

    /// Notes a poll.
    pub fn polled(&self) {
        self.last_poll_ms
            .store(self.now_ms() + 1, Ordering::Relaxed);
    }

    /// Time since the last request (or the connection, if none).
    pub fn idle_for(&self) -> Duration {
        let last = Duration::from_millis(self.last_request_ms.load(Ordering::Relaxed));
        self.connected_at.elapsed().saturating_sub(last)
    }

    /// Time since the last poll, if it ever polled.
    pub fn since_last_poll(&self) -> Option<Duration> {
        match self.last_poll_ms.load(Ordering::Relaxed) {
            0 => None,
            ms => Some(
                self.connected_at
                    .elapsed()
                    .saturating_sub(Duration::from_millis(ms - 1)),
            ),
        }
    }
}
