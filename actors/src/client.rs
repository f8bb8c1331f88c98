//! What the node shares about one connected client: its inbox (filled by
//! publishers' threads under the router shards' locks, emptied by polls), its
//! subscriptions (the source of truth a restarted shard is rebuilt from) and
//! the figures `dump_queues` shows.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use crate::message::Delivery;
use bytes::Bytes;

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

/// Tells a client's connection to close (set by the connection actor).
pub type KickHook = Box<dyn Fn(Kick) + Send + Sync>;

/// One client's shared state.
pub struct ClientShared {
    /// Node-unique id (never reused in a node's lifetime); `dump_queue_topics` takes it.
    pub id: u64,
    /// The peer address, for dumps and logs.
    pub peer: SocketAddr,
    /// When the connection was accepted.
    pub connected_at: Instant,
    /// Messages waiting for the next `get messages`.
    inbox: Mutex<Inbox>,
    /// The topics this client holds. Written by its queue actor under the
    /// locks of the shards concerned, so a shard restart reads a consistent set.
    pub subscriptions: Mutex<FastSet<Bytes>>,
    /// Milliseconds since `connected_at` of the last poll (0 = never).
    last_poll_ms: AtomicU64,
    /// Milliseconds since `connected_at` of the last request: the idle
    /// clock, read by the supervisor's sweep (no timer per connection).
    last_request_ms: AtomicU64,
    /// Tells the connection to close (inbox overflow, node shutdown).
    kick_hook: Mutex<Option<KickHook>>,
    max_messages: usize,
    max_bytes: usize,
}

/// Everything a publish touches, under one lock and in few cache lines:
/// with many subscribers per message the push is the hot path.
#[derive(Default)]
struct Inbox {
    items: Vec<Delivery>,
    /// Header and payload bytes in `items`.
    bytes: usize,
    /// Messages ever queued for this client.
    received: u64,
    /// The client overflowed its limits (a slow consumer).
    overflowed: bool,
    /// The connection is going away: nothing more is queued.
    closed: bool,
}

/// What a push into an inbox did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pushed {
    Queued,
    /// This push overflowed the inbox: the client is a slow consumer now.
    Overflowed,
    /// Dropped: the client is closing or already overflowed.
    Dropped,
}

impl ClientShared {
    pub fn new(id: u64, peer: SocketAddr, max_messages: usize, max_bytes: usize) -> Self {
        ClientShared {
            id,
            peer,
            connected_at: Instant::now(),
            inbox: Mutex::new(Inbox::default()),
            subscriptions: Mutex::new(FastSet::default()),
            last_poll_ms: AtomicU64::new(0),
            last_request_ms: AtomicU64::new(0),
            kick_hook: Mutex::new(None),
            max_messages,
            max_bytes,
        }
    }

    /// Sets how to tell the connection to close.
    pub fn set_kick_hook(&self, hook: KickHook) {
        *lock(&self.kick_hook) = Some(hook);
    }

    /// Tells the connection to close.
    pub fn kick(&self, why: Kick) {
        if let Some(hook) = lock(&self.kick_hook).as_ref() {
            hook(why);
        }
    }

    /// Queues deliveries; past a limit, empties the inbox, marks the client a
    /// slow consumer and calls the overflow hook once.
    pub fn push_many(&self, items: impl IntoIterator<Item = Delivery>) -> Pushed {
        let mut inbox = lock(&self.inbox);
        if inbox.overflowed || inbox.closed {
            return Pushed::Dropped;
        }
        for item in items {
            let size = item.message().queued_bytes();
            if inbox.items.len() >= self.max_messages || inbox.bytes + size > self.max_bytes {
                inbox.overflowed = true;
                inbox.items = Vec::new();
                inbox.bytes = 0;
                drop(inbox);
                self.kick(Kick::SlowConsumer);
                return Pushed::Overflowed;
            }
            inbox.bytes += size;
            inbox.received += 1;
            inbox.items.push(item);
        }
        Pushed::Queued
    }

    /// Queues one delivery.
    pub fn push(&self, item: Delivery) -> Pushed {
        self.push_many(std::iter::once(item))
    }

    /// Takes what is queued (a poll), oldest first, up to [`POLL_BYTES`] of
    /// payload and headers (always at least one message); the rest waits
    /// for the next poll. `None` once the client overflowed or was closed.
    ///
    /// The budget bounds the write buffer a poll builds: the payloads are
    /// shared while queued but copied into the answer, so without it 200
    /// subscribers of 64 KiB messages could each build a 64 MiB answer.
    pub fn take(&self) -> Option<Vec<Delivery>> {
        self.last_poll_ms.store(
            self.connected_at.elapsed().as_millis() as u64 + 1,
            Ordering::Relaxed,
        );
        let mut inbox = lock(&self.inbox);
        if inbox.overflowed || inbox.closed {
            return None;
        }
        if inbox.bytes <= POLL_BYTES {
            inbox.bytes = 0;
            return Some(std::mem::take(&mut inbox.items));
        }
        let mut taken_bytes = 0;
        let mut n = 0;
        for d in &inbox.items {
            let size = d.message().queued_bytes();
            if n > 0 && taken_bytes + size > POLL_BYTES {
                break;
            }
            taken_bytes += size;
            n += 1;
        }
        inbox.bytes -= taken_bytes;
        Some(inbox.items.drain(..n).collect())
    }

    /// Messages and bytes waiting now.
    pub fn queued(&self) -> (usize, usize) {
        let inbox = lock(&self.inbox);
        (inbox.items.len(), inbox.bytes)
    }

    /// Whether the client overflowed its inbox.
    pub fn overflowed(&self) -> bool {
        lock(&self.inbox).overflowed
    }

    /// Time since the last poll, if it ever polled.
    pub fn since_last_poll(&self) -> Option<std::time::Duration> {
        match self.last_poll_ms.load(Ordering::Relaxed) {
            0 => None,
            ms => Some(
                self.connected_at
                    .elapsed()
                    .saturating_sub(std::time::Duration::from_millis(ms - 1)),
            ),
        }
    }

    /// Notes that a request arrived (the idle clock).
    pub fn touch(&self) {
        self.last_request_ms.store(
            self.connected_at.elapsed().as_millis() as u64,
            Ordering::Relaxed,
        );
    }

    /// Time since the last request (or the connection, if none).
    pub fn idle_for(&self) -> std::time::Duration {
        let last = std::time::Duration::from_millis(self.last_request_ms.load(Ordering::Relaxed));
        self.connected_at.elapsed().saturating_sub(last)
    }

    /// Marks the client closing: nothing more is queued for it.
    pub fn close(&self) {
        let mut inbox = lock(&self.inbox);
        inbox.closed = true;
        inbox.items = Vec::new();
        inbox.bytes = 0;
    }

    pub fn is_closed(&self) -> bool {
        lock(&self.inbox).closed
    }

    /// Messages ever queued for this client.
    pub fn received(&self) -> u64 {
        lock(&self.inbox).received
    }

    /// A snapshot of the topics held.
    pub fn topics(&self) -> Vec<Bytes> {
        lock(&self.subscriptions).iter().cloned().collect()
    }
}

/// Locks a mutex whose data stays consistent even if a holder panicked
/// (every critical section on these leaves them valid).
pub fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}
