//! Supervision in the manner of OTP: what a supervisor knows about each
//! child (its restart strategy) and about itself (its restart intensity).
//!
//! - **permanent** children are always restarted (the listener, each router
//!   shard, each upstream link, the sub-supervisors);
//! - **transient** children are restarted only after a failure, not after a
//!   normal end;
//! - **temporary** children are never restarted: a failure ends them
//!   cleanly (each client's connection + queue pair: the client reconnects).
//!
//! A supervisor that sees more than `max_restarts` restarts within
//! `max_restart_seconds` gives up: it terminates and its parent hears of it.
//! The sub-supervisors are *significant* children of the root (OTP's
//! `auto_shutdown = any_significant`), so their giving up stops the node,
//! which exits with status 70 after its cleanup (pid file, control socket),
//! for the service manager to start it afresh.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use actix::Message;
use bytes::Bytes;

use crate::guard::Panicked;

/// When a child is restarted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Restart {
    /// Always.
    Permanent,
    /// Only after a failure.
    Transient,
    /// Never.
    Temporary,
}

impl Restart {
    /// Whether a child that ended (`failed` or not) is restarted.
    pub fn restarts(self, failed: bool) -> bool {
        match self {
            Restart::Permanent => true,
            Restart::Transient => failed,
            Restart::Temporary => false,
        }
    }
}

/// The exit status of a node whose supervision gave up.
pub const ESCALATION_EXIT: i32 = 70;

/// A supervisor's restart intensity: at most `max` restarts in `window`.
#[derive(Debug, Clone)]
pub struct Intensity {
    max: usize,
    window: Duration,
    recent: VecDeque<Instant>,
}

impl Intensity {
    pub fn new(max: u32, window: Duration) -> Self {
        Intensity {
            max: max as usize,
            window,
            recent: VecDeque::new(),
        }
    }

    /// Records a restart now; false if that exceeds the intensity.
    pub fn record(&mut self) -> bool {
        self.record_at(Instant::now())
    }

    fn record_at(&mut self, now: Instant) -> bool {
        self.recent.push_back(now);
        while self
            .recent
            .front()
            .is_some_and(|t| now.duration_since(*t) > self.window)
        {
            self.recent.pop_front();
        }
        self.recent.len() <= self.max
    }

    /// Restarts within the window now.
    pub fn recent(&self) -> usize {
        self.recent.len()
    }
}

// ---- What supervisors and their children tell each other ----------------

/// The root's children.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Child {
    Clients,
    ShardPool,
    Listener,
    Upstream(usize),
}

impl Child {
    pub fn restart(self) -> Restart {
        Restart::Permanent
    }

    /// Whether the node stops when this child gives up.
    pub fn significant(self) -> bool {
        matches!(self, Child::ShardPool)
    }

    pub fn name(self) -> String {
        match self {
            Child::Clients => "clients' supervisor".into(),
            Child::ShardPool => "router-shard pool".into(),
            Child::Listener => "listener".into(),
            Child::Upstream(i) => format!("upstream link {i}"),
        }
    }
}

/// A child failed (`gave_up`: a supervisor child exceeded its intensity).
#[derive(Message)]
#[rtype(result = "()")]
pub struct ChildDown {
    pub child: Child,
    pub why: Panicked,
    pub gave_up: bool,
}

/// Fault injection (tests only): make a part of the node panic.
#[derive(Message, Debug, Clone, Copy, PartialEq, Eq)]
#[rtype(result = "()")]
pub enum InjectFault {
    Listener,
    ShardPool,
    Clients,
    Upstream,
    Root,
}

impl InjectFault {
    /// The fault a subscribed topic names, if any.
    pub fn from_topic(topic: &Bytes) -> Option<InjectFault> {
        match &topic[..] {
            b"__kraken_fault_listener_panic__" => Some(InjectFault::Listener),
            b"__kraken_fault_supervisor_panic__" => Some(InjectFault::ShardPool),
            b"__kraken_fault_clients_supervisor_panic__" => Some(InjectFault::Clients),
            b"__kraken_fault_upstream_panic__" => Some(InjectFault::Upstream),
            b"__kraken_fault_root_panic__" => Some(InjectFault::Root),
            _ => None,
        }
    }
}

/// Drain and stop the node: stop accepting, close every client after its
/// pending answers are written, then stop the system.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Shutdown;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strategies() {
        assert!(Restart::Permanent.restarts(false));
        assert!(Restart::Transient.restarts(true));
        assert!(!Restart::Transient.restarts(false));
        assert!(!Restart::Temporary.restarts(true));
    }

    #[test]
    fn intensity_counts_within_the_window_only() {
        let mut i = Intensity::new(2, Duration::from_secs(10));
        let t = Instant::now();
        assert!(i.record_at(t));
        assert!(i.record_at(t + Duration::from_secs(1)));
        assert!(!i.record_at(t + Duration::from_secs(2)));
        // Eleven seconds on, the first two have left the window.
        let mut j = Intensity::new(2, Duration::from_secs(10));
        assert!(j.record_at(t));
        assert!(j.record_at(t + Duration::from_secs(1)));
        assert!(j.record_at(t + Duration::from_secs(12)));
        assert_eq!(j.recent(), 1);
    }
}
