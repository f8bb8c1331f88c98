//! The node-wide budget of buffered partial requests
//! (`max_pending_request_bytes`).
//!
//! A connection's read buffer holds the part of a request received so far;
//! a client that sends most of a 16 MiB data block and then goes silent
//! holds that memory for as long as it stays connected, and many such
//! clients add up. Each connection accounts the bytes its buffer holds for
//! an incomplete request in one node-wide [`Budget`] (through its
//! [`Held`]), after each read:
//!
//! - A partial request below [`ACCOUNT_FROM`] bytes (every command line,
//!   every small block) is not accounted: it takes no lock and is never
//!   refused.
//! - When a connection's partial request grows and the sum would pass the
//!   budget, the connection holding the largest partial request (the
//!   oldest holder on ties, the growing one counting as the newest) is
//!   answered `SERVER_ERROR pending request budget exceeded` and closed,
//!   and its bytes are released at once; again until the growth fits. So a
//!   crowd of clients each parked on most of a maximal block is closed
//!   largest first, and an honest publisher's smaller block gets through;
//!   a connection that is itself the largest is the one refused.
//! - The bytes are released when the request completes (the buffer holds
//!   less than [`ACCOUNT_FROM`] again) and when the connection stops.

use std::cmp::Reverse;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use actix::prelude::*;

use crate::node::Node;

/// Partial requests smaller than this are not accounted.
pub const ACCOUNT_FROM: usize = 64 * 1024;

/// What the refused connection is answered.
pub const REFUSAL: &str = "pending request budget exceeded";

/// Tells a connection that it was chosen to give its bytes back: answer
/// [`REFUSAL`] and close.
#[derive(Message)]
#[rtype(result = "()")]
pub struct OverBudget;

/// The holders of the node's budget.
#[derive(Default)]
pub struct Budget {
    holders: Mutex<Holders>,
}

#[derive(Default)]
struct Holders {
    by_id: HashMap<u64, Holder>,
    /// Sum of the holders' bytes.
    sum: u64,
    /// Order of arrival (ties go to the oldest holder).
    next_since: u64,
}

struct Holder {
    bytes: u64,
    since: u64,
    evicted: Arc<AtomicBool>,
    tell: Recipient<OverBudget>,
}

/// One connection's share of the budget: 16 bytes, and nothing else until
/// the connection first holds [`ACCOUNT_FROM`] bytes of a partial request.
/// The connection calls [`Held::release`] when it stops.
#[derive(Default)]
pub struct Held {
    /// Bytes this connection holds in the budget.
    bytes: u64,
    /// Set when another connection's growth chose this one to close
    /// (allocated when the connection first holds bytes).
    evicted: Option<Arc<AtomicBool>>,
}

impl Budget {
    fn lock(&self) -> std::sync::MutexGuard<'_, Holders> {
        self.holders.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn publish(node: &Node, sum: u64) {
    node.counters
        .pending_request_bytes
        .store(sum, Ordering::Relaxed);
}

impl Held {
    /// Connection `id`'s buffer now holds `buffered` bytes of an incomplete
    /// request (0: none); `tell` reaches it if another's growth chooses it.
    /// `false`: this connection must be refused and closed (it is the
    /// largest holder, or another's growth chose it).
    pub fn update(
        &mut self,
        node: &Node,
        budget: &Budget,
        id: u64,
        tell: impl FnOnce() -> Recipient<OverBudget>,
        buffered: usize,
    ) -> bool {
        if self
            .evicted
            .as_ref()
            .is_some_and(|e| e.load(Ordering::Relaxed))
        {
            return false;
        }
        let now = if buffered < ACCOUNT_FROM {
            0
        } else {
            buffered as u64
        };
        if now == self.bytes {
            return true;
        }
        let limit = node.settings.max_pending_request_bytes as u64;
        let mut h = budget.lock();
        if now < self.bytes {
            h.sum -= self.bytes - now;
            if now == 0 {
                h.by_id.remove(&id);
            } else if let Some(me) = h.by_id.get_mut(&id) {
                me.bytes = now;
            }
            self.bytes = now;
            let sum = h.sum;
            drop(h);
            publish(node, sum);
            return true;
        }
        let grow = now - self.bytes;
        let my_since = match h.by_id.get(&id) {
            Some(me) => me.since,
            None => h.next_since,
        };
        let mut refused = false;
        while h.sum + grow > limit {
            let victim = h
                .by_id
                .iter()
                .filter(|(k, _)| **k != id)
                .max_by_key(|(_, v)| (v.bytes, Reverse(v.since)))
                .map(|(k, v)| (*k, (v.bytes, Reverse(v.since))));
            match victim {
                Some((victim, rank)) if rank > (now, Reverse(my_since)) => {
                    let v = h.by_id.remove(&victim).expect("holder");
                    h.sum -= v.bytes;
                    v.evicted.store(true, Ordering::Relaxed);
                    v.tell.do_send(OverBudget);
                }
                _ => {
                    refused = true;
                    break;
                }
            }
        }
        if refused {
            if h.by_id.remove(&id).is_some() {
                h.sum -= self.bytes;
            }
            self.bytes = 0;
            let sum = h.sum;
            drop(h);
            publish(node, sum);
            return false;
        }
        h.sum += grow;
        if let Some(me) = h.by_id.get_mut(&id) {
            me.bytes = now;
        } else {
            h.next_since += 1;
            let evicted = self
                .evicted
                .get_or_insert_with(|| Arc::new(AtomicBool::new(false)))
                .clone();
            h.by_id.insert(
                id,
                Holder {
                    bytes: now,
                    since: my_since,
                    evicted,
                    tell: tell(),
                },
            );
        }
        self.bytes = now;
        let sum = h.sum;
        drop(h);
        publish(node, sum);
        true
    }

    /// Gives connection `id`'s whole share back.
    pub fn release(&mut self, node: &Node, budget: &Budget, id: u64) {
        if self.bytes == 0 {
            return;
        }
        let mut h = budget.lock();
        if h.by_id.remove(&id).is_some() {
            h.sum -= self.bytes;
        }
        self.bytes = 0;
        let sum = h.sum;
        drop(h);
        publish(node, sum);
    }
}
