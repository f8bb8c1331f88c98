//! The node-wide budget of buffered partial requests
//! (`max_pending_request_bytes`).
//!
//! A connection's read buffer holds the part of a request received so far;
//! a client that sends most of a 16 MiB data block and then goes silent
//! holds that memory for as long as it stays connected, and many such
//! clients add up. Each connection accounts the bytes its buffer holds for
//! an incomplete request in one node-wide sum ([`Held`]), updated after
//! each decode turn:
//!
//! - A partial request below [`ACCOUNT_FROM`] bytes (every command line,
//!   every small block) is not accounted: it costs no atomic operation and
//!   is never refused. The per-connection bound for those is
//!   `max_line_bytes` / small blocks, times `max_tcp_clients`.
//! - When a connection's partial request grows and the sum would pass the
//!   budget, that connection (the one whose growth passes it) is answered
//!   `SERVER_ERROR pending request budget exceeded` and closed; its bytes
//!   are released at once. Connections already holding their share keep
//!   it: their requests complete, or they are closed by
//!   `client_idle_timeout`.
//! - The bytes are released when the request completes (the buffer holds
//!   less than [`ACCOUNT_FROM`] again) and when the connection ends
//!   (`Drop`).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crate::node::Node;

/// Partial requests smaller than this are not accounted.
pub const ACCOUNT_FROM: usize = 64 * 1024;

/// What the refused connection is answered.
pub const REFUSAL: &str = "pending request budget exceeded";

/// One connection's share of the budget.
pub struct Held {
    node: Arc<Node>,
    bytes: u64,
}

impl Held {
    pub fn new(node: Arc<Node>) -> Held {
        Held { node, bytes: 0 }
    }

    fn sum(&self) -> &AtomicU64 {
        &self.node.counters.pending_request_bytes
    }

    /// The connection's buffer now holds `buffered` bytes of an incomplete
    /// request (0: none). `false`: this growth would pass the budget; the
    /// connection must be refused and closed (its share is released).
    pub fn update(&mut self, buffered: usize) -> bool {
        let now = if buffered < ACCOUNT_FROM {
            0
        } else {
            buffered as u64
        };
        if now == self.bytes {
            return true;
        }
        if now < self.bytes {
            self.sum().fetch_sub(self.bytes - now, Ordering::Relaxed);
            self.bytes = now;
            return true;
        }
        let grow = now - self.bytes;
        let budget = self.node.settings.max_pending_request_bytes as u64;
        let before = self.sum().fetch_add(grow, Ordering::Relaxed);
        if before + grow > budget {
            self.sum().fetch_sub(grow, Ordering::Relaxed);
            self.release();
            self.node
                .counters
                .refused_pending
                .fetch_add(1, Ordering::Relaxed);
            return false;
        }
        self.bytes = now;
        true
    }

    /// Gives the whole share back.
    pub fn release(&mut self) {
        if self.bytes > 0 {
            self.sum().fetch_sub(self.bytes, Ordering::Relaxed);
            self.bytes = 0;
        }
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        self.release();
    }
}
