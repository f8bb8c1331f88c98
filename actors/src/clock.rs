//! The node-wide message clock: every message gets a number that is both
//! its sequence and its publish time (nanoseconds since the Unix epoch),
//! strictly increasing across the node. One number orders messages across
//! shards, makes `register` horizons exact and answers `retro_subscribe`
//! horizons given in seconds.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// Where a replay starts: messages whose sequence number (= publish time
/// in ns) is at or after this.
pub type Horizon = u64;

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
