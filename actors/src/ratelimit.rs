//! Rate limits for warnings a client can provoke at will (a refused
//! connection, a message fanned out widely, a message naming many topics):
//! at most [`RateLimit::new`]'s `max` lines per interval per kind; the
//! first line let through after a suppressed stretch carries the count of
//! lines suppressed (`suppressed`), so nothing is lost silently.
//!
//! ```
//! use std::time::Duration;
//! use kraken_actors::ratelimit::RateLimit;
//! static REFUSED: RateLimit = RateLimit::new(2, Duration::from_secs(60));
//! assert_eq!(REFUSED.allow(), Some(0));
//! assert_eq!(REFUSED.allow(), Some(0));
//! assert_eq!(REFUSED.allow(), None); // suppressed (counted)
//! ```

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// One kind of warning's limit; meant to be a `static` at its call site.
pub struct RateLimit {
    max: u32,
    interval: Duration,
    state: Mutex<Window>,
}

struct Window {
    /// Start of the current interval (`None` before the first line).
    start: Option<Instant>,
    /// Lines let through in the current interval.
    lines: u32,
    /// Lines suppressed since the last one let through.
    suppressed: u64,
}

/// The default for warnings a client can provoke: 10 lines per 10 s.
pub const WARNINGS: (u32, Duration) = (10, Duration::from_secs(10));

impl RateLimit {
    pub const fn new(max: u32, interval: Duration) -> RateLimit {
        RateLimit {
            max,
            interval,
            state: Mutex::new(Window {
                start: None,
                lines: 0,
                suppressed: 0,
            }),
        }
    }

    /// The limit for warnings a client can provoke ([`WARNINGS`]).
    pub const fn warnings() -> RateLimit {
        RateLimit::new(WARNINGS.0, WARNINGS.1)
    }

    /// `Some(suppressed)`: log this line, noting how many were suppressed
    /// before it; `None`: suppress it (it is counted).
    pub fn allow(&self) -> Option<u64> {
        self.allow_at(Instant::now())
    }

    fn allow_at(&self, now: Instant) -> Option<u64> {
        let mut w = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if w.start
            .is_none_or(|s| now.duration_since(s) >= self.interval)
        {
            w.start = Some(now);
            w.lines = 0;
        }
        if w.lines >= self.max {
            w.suppressed += 1;
            return None;
        }
        w.lines += 1;
        Some(std::mem::take(&mut w.suppressed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn at_most_max_lines_per_interval_then_the_count_of_those_suppressed() {
        let limit = RateLimit::new(3, Duration::from_secs(10));
        let t0 = Instant::now();
        let got: Vec<Option<u64>> = (0..10).map(|_| limit.allow_at(t0)).collect();
        assert_eq!(got[..3], [Some(0); 3]);
        assert!(got[3..].iter().all(Option::is_none));
        // Still the same interval.
        assert_eq!(limit.allow_at(t0 + Duration::from_secs(9)), None);
        // The next interval: its first line reports the 8 suppressed.
        let t1 = t0 + Duration::from_secs(10);
        assert_eq!(limit.allow_at(t1), Some(8));
        assert_eq!(limit.allow_at(t1), Some(0));
    }
}
