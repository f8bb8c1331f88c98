//! The publish path, shared by every actor that publishes (a client's
//! connection, a proxy's upstream link): scatter a batch of messages to the
//! shards that own their topics, gather the shards' subscriber lists, and
//! only then deliver, one entry per subscriber per message, in batches.
//!
//! Why this shape keeps the guarantees:
//!
//! - **One entry per message per subscriber.** A message whose topics fall
//!   on several shards is delivered only after every one of those shards
//!   answered; the subscriber lists are merged, so a subscriber holding
//!   topics on two shards gets one entry listing both.
//! - **Order per publisher and topic.** A publisher's batches complete in
//!   the order they were sent (a later batch waits for an earlier one), and
//!   its deliveries to one queue travel in one mailbox, in order.
//! - **No gap with (retro) subscriptions.** Each shard stores a message in
//!   its retro buffer and reads the topic's subscribers in one handler; a
//!   subscribe on that shard is either before (the subscriber is in the
//!   list: live) or after (the message is in the buffer: replayed).
//! - **Cost.** A delivery is a pointer push into a per-subscriber batch;
//!   each subscriber gets one mailbox message per batch, however many
//!   messages the batch holds, and consecutive messages on the same topic
//!   reuse the first one's lookups. Batches are what arrived in one turn of
//!   the publisher's event loop, so they grow with the load.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use actix::prelude::*;
use bytes::Bytes;
use slog::warn;

use crate::client::FastMap;
use crate::courier::Parcel;
use crate::env::Env;
use crate::message::{Delivery, Message};
use crate::shard::{Owned, QueueRef, Route, RouteItem, Routed, ShardFailed, Sub, SubList};

/// Payloads shorter than this are copied out of the request buffer, so a
/// queued or buffered message does not pin the whole read buffer.
const DETACH_BELOW: usize = 16 * 1024;

/// What a finished publish request got: the subscribers its messages were
/// queued for (one per subscriber per message; the publisher excluded).
pub type Outcome = Result<usize, ShardFailed>;

/// One actor's publish pipeline.
pub struct Publisher {
    /// The publisher's id: it never receives its own messages.
    id: u64,
    /// The worker arbiter it runs on: queues there get their batches
    /// directly, others through their arbiter's courier.
    home: usize,
    /// Messages relayed from upstream are not reported to the proxy again.
    local: bool,
    env: Arc<Env>,
    me: Recipient<Routed>,
    next_batch: u64,
    /// Messages submitted since the last flush, with their request tickets.
    open: Vec<Arc<Message>>,
    open_tickets: Vec<(u64, usize)>,
    /// Sent batches, oldest first.
    in_flight: VecDeque<Batch>,
}

struct Batch {
    id: u64,
    msgs: Vec<Arc<Message>>,
    /// (ticket, messages submitted up to and including its last one).
    tickets: Vec<(u64, usize)>,
    /// Per shard: its answer once it came.
    answers: Vec<Option<Result<Vec<Option<SubList>>, ShardFailed>>>,
    awaiting: usize,
}

/// Deliveries being gathered for one batch, per subscriber.
#[derive(Default)]
struct Plan {
    index: FastMap<u64, usize>,
    targets: Vec<(usize, QueueRef, Vec<Delivery>)>,
    /// Room for this many deliveries per subscriber (the batch's size).
    room: usize,
}

impl Plan {
    fn slot(&mut self, sub: &Sub) -> usize {
        let (targets, room) = (&mut self.targets, self.room);
        *self.index.entry(sub.id).or_insert_with(|| {
            targets.push((sub.home, sub.queue.clone(), Vec::with_capacity(room)));
            targets.len() - 1
        })
    }
}

impl Publisher {
    pub fn new(id: u64, home: usize, local: bool, env: Arc<Env>, me: Recipient<Routed>) -> Self {
        Publisher {
            id,
            home,
            local,
            env,
            me,
            next_batch: 0,
            open: Vec::new(),
            open_tickets: Vec::new(),
            in_flight: VecDeque::new(),
        }
    }

    /// Batches sent and not yet delivered.
    pub fn in_flight(&self) -> usize {
        self.in_flight.len()
    }

    /// Adds one message to the open batch.
    pub fn submit(&mut self, topics: Vec<Bytes>, payload: Bytes) {
        if topics.is_empty() {
            return;
        }
        let topics: Vec<Bytes> = topics.iter().map(|t| Bytes::copy_from_slice(t)).collect();
        let payload = if payload.len() < DETACH_BELOW {
            Bytes::copy_from_slice(&payload)
        } else {
            payload
        };
        let msg = Arc::new(Message::new(
            self.env.router.clock().next(),
            self.id,
            topics,
            payload,
        ));
        if self.local {
            if let Some(obs) = self.env.router.observer() {
                obs.published(&msg);
            }
        }
        self.open.push(msg);
    }

    /// Ends a request: `ticket` completes when the messages submitted so
    /// far are delivered.
    pub fn ticket(&mut self, ticket: u64) {
        self.open_tickets.push((ticket, self.open.len()));
    }

    /// Sends the open batch to its shards. Returns tickets that complete at
    /// once (requests with no message left in flight ahead of them).
    pub fn flush(&mut self) -> Vec<(u64, Outcome)> {
        if self.open.is_empty() {
            if self.open_tickets.is_empty() {
                return Vec::new();
            }
            if self.in_flight.is_empty() {
                return self
                    .open_tickets
                    .drain(..)
                    .map(|(t, _)| (t, Ok(0)))
                    .collect();
            }
            // Complete with the last batch in flight (keeps answers in order).
            let tickets = std::mem::take(&mut self.open_tickets);
            let last = self.in_flight.back_mut().expect("in flight");
            let n = last.msgs.len();
            last.tickets
                .extend(tickets.into_iter().map(|(t, _)| (t, n)));
            return Vec::new();
        }
        let router = &self.env.router;
        let n = router.num_shards();
        let msgs = std::mem::take(&mut self.open);
        let mut items: Vec<Vec<RouteItem>> = (0..n).map(|_| Vec::new()).collect();
        for msg in &msgs {
            if msg.topics.len() == 1 {
                items[router.shard_of(&msg.topics[0])].push(RouteItem {
                    msg: msg.clone(),
                    owned: Owned::One(0),
                });
                continue;
            }
            let mut per: Vec<(usize, Vec<u32>)> = Vec::new();
            for (i, t) in msg.topics.iter().enumerate() {
                let s = router.shard_of(t);
                match per.iter_mut().find(|(x, _)| *x == s) {
                    Some((_, v)) => v.push(i as u32),
                    None => per.push((s, vec![i as u32])),
                }
            }
            for (s, idx) in per {
                let owned = if idx.len() == 1 {
                    Owned::One(idx[0])
                } else {
                    Owned::Many(idx)
                };
                items[s].push(RouteItem {
                    msg: msg.clone(),
                    owned,
                });
            }
        }
        self.next_batch += 1;
        let id = self.next_batch;
        let mut awaiting = 0;
        for (s, its) in items.into_iter().enumerate() {
            if its.is_empty() {
                continue;
            }
            awaiting += 1;
            router.shard(s).do_send(Route {
                batch: id,
                items: its,
                reply_to: self.me.clone(),
            });
        }
        self.in_flight.push_back(Batch {
            id,
            msgs,
            tickets: std::mem::take(&mut self.open_tickets),
            answers: (0..n).map(|_| None).collect(),
            awaiting,
        });
        Vec::new()
    }

    /// A shard answered; delivers every batch now complete, in order, and
    /// returns the tickets that completed.
    pub fn routed(&mut self, msg: Routed) -> Vec<(u64, Outcome)> {
        if let Some(b) = self.in_flight.iter_mut().find(|b| b.id == msg.batch) {
            if b.answers[msg.shard].is_none() {
                b.answers[msg.shard] = Some(msg.lists);
                b.awaiting -= 1;
            }
        }
        let mut done = Vec::new();
        while self.in_flight.front().is_some_and(|b| b.awaiting == 0) {
            let b = self.in_flight.pop_front().expect("front");
            self.deliver(b, &mut done);
        }
        done
    }

    /// Fails every batch in flight (the shards' answers will not come).
    pub fn abandon(&mut self) -> Vec<(u64, Outcome)> {
        let mut done = Vec::new();
        for b in self.in_flight.drain(..) {
            done.extend(b.tickets.into_iter().map(|(t, _)| (t, Err(ShardFailed))));
        }
        done
    }

    fn deliver(&mut self, b: Batch, done: &mut Vec<(u64, Outcome)>) {
        let router = &self.env.router;
        let settings = &self.env.node.settings;
        let mut cursor = vec![0usize; router.num_shards()];
        let mut plan = Plan {
            room: b.msgs.len().min(64),
            ..Plan::default()
        };
        let mut failed_msgs = vec![false; b.msgs.len()];
        let mut reached = vec![0usize; b.msgs.len()];
        let mut delivered = 0u64;
        // The last single-topic list seen and its subscribers' plan slots.
        let mut last: Option<(*const (), Vec<usize>)> = None;
        for (k, msg) in b.msgs.iter().enumerate() {
            let mut lists: Vec<(u32, Option<SubList>)> = Vec::with_capacity(msg.topics.len());
            let mut failed = false;
            for (i, t) in msg.topics.iter().enumerate() {
                let s = router.shard_of(t);
                match &b.answers[s] {
                    Some(Ok(answer)) => {
                        let list = answer.get(cursor[s]).cloned().flatten();
                        cursor[s] += 1;
                        lists.push((i as u32, list));
                    }
                    _ => failed = true,
                }
            }
            if failed {
                failed_msgs[k] = true;
                continue;
            }
            let mut recipients = 0usize;
            if lists.len() == 1 {
                if let Some(list) = lists.pop().and_then(|(_, l)| l) {
                    let ptr = list.key();
                    if last.as_ref().is_none_or(|(p, _)| *p != ptr) {
                        let slots: Vec<usize> = list
                            .iter()
                            .filter(|s| s.id != self.id)
                            .map(|s| plan.slot(s))
                            .collect();
                        last = Some((ptr, slots));
                    }
                    let slots = &last.as_ref().expect("just set").1;
                    for &slot in slots {
                        plan.targets[slot].2.push(Delivery::All(msg.clone()));
                    }
                    recipients = slots.len();
                }
            } else {
                // Several topics: one entry per subscriber, listing the
                // topics it holds.
                let mut held: FastMap<usize, Vec<u32>> = FastMap::default();
                let mut order: Vec<usize> = Vec::new();
                for (i, list) in &lists {
                    let Some(list) = list else { continue };
                    for sub in list.iter().filter(|s| s.id != self.id) {
                        let slot = plan.slot(sub);
                        held.entry(slot)
                            .or_insert_with(|| {
                                order.push(slot);
                                Vec::new()
                            })
                            .push(*i);
                    }
                }
                for slot in order {
                    let idx = held.remove(&slot).unwrap_or_default();
                    plan.targets[slot].2.push(Message::delivery(msg, &idx));
                    recipients += 1;
                }
            }
            delivered += recipients as u64;
            reached[k] = recipients;
            let metrics = &self.env.node.metrics;
            metrics.observe_fanout(recipients);
            metrics.observe_publish_to_queue(std::time::Duration::from_nanos(
                router.clock().now_ns().saturating_sub(msg.seq),
            ));
            if recipients >= settings.router_min_fanout_to_warn {
                static WIDE: crate::ratelimit::RateLimit = crate::ratelimit::RateLimit::warnings();
                if let Some(suppressed) = WIDE.allow() {
                    warn!(self.env.node.log, "message fanned out widely";
                        "subscribers" => recipients, "client" => self.id,
                        "suppressed" => suppressed);
                }
            }
        }
        let mut parcels: Vec<Vec<(QueueRef, Vec<Delivery>)>> =
            (0..self.env.couriers.len()).map(|_| Vec::new()).collect();
        for (home, queue, items) in plan.targets {
            if items.is_empty() {
                continue;
            }
            if home == self.home {
                queue.deliver(items);
            } else if let Some(parcel) = parcels.get_mut(home) {
                parcel.push((queue, items));
            }
        }
        for (home, parcel) in parcels.into_iter().enumerate() {
            if !parcel.is_empty() {
                self.env.couriers[home].do_send(Parcel(parcel));
            }
        }
        let c = &self.env.node.counters;
        c.delivered.fetch_add(delivered, Ordering::Relaxed);
        if self.local {
            c.published
                .fetch_add(b.msgs.len() as u64, Ordering::Relaxed);
        }
        let mut start = 0;
        for (ticket, upto) in b.tickets {
            let range = start.min(upto)..upto;
            let failed = failed_msgs[range.clone()].iter().any(|&f| f);
            let n = reached[range].iter().sum();
            done.push((ticket, if failed { Err(ShardFailed) } else { Ok(n) }));
            start = upto;
        }
    }
}
