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
//! - **Cost.** A delivery is a pointer push into a run: the messages of a
//!   batch for one set of subscribers on one arbiter (consecutive messages
//!   on the same topic share the run and the first one's lookups). Each
//!   other arbiter gets one message for the whole batch, and the runs are
//!   posted on the subscribers' delivery board (`crate::board`), not sent
//!   to their mailboxes. Batches are what arrived in one turn of the
//!   publisher's event loop, so they grow with the load.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use actix::prelude::*;
use bytes::Bytes;
use slog::warn;

use crate::board::{self, Run, Target};
use crate::client::FastMap;
use crate::courier::Parcel;
use crate::env::Env;
use crate::message::{Delivery, Message};
use crate::shard::{Owned, Route, RouteItem, Routed, ShardFailed, Sub, SubList};

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
    /// A delivery since the last [`Publisher::take_rang`] left queues of
    /// this thread due to be rung.
    rang: bool,
}

struct Batch {
    id: u64,
    msgs: Vec<Arc<Message>>,
    /// (ticket, messages submitted up to and including its last one).
    tickets: Vec<(u64, usize)>,
    /// Per shard: its answer once it came.
    answers: Vec<Option<Result<Vec<Option<SubList>>, ShardFailed>>>,
    awaiting: usize,
    /// Holds this thread's push ring until the batch is delivered.
    _ring: board::RouteInFlight,
}

/// The runs a message opened: (arbiter, index of the run there).
type Opened = Vec<(usize, usize)>;

/// Deliveries being gathered for one batch: per worker arbiter, its runs
/// (`crate::board::Run`), in publish order.
struct Plan {
    runs: Vec<Vec<Run>>,
}

impl Plan {
    /// Opens a run on each arbiter that `subs` (the publisher `me`
    /// excluded) live on; returns (arbiter, run) per arbiter and how many
    /// subscribers they target.
    fn open<'a>(&mut self, subs: impl Iterator<Item = &'a Sub>, me: u64) -> (Opened, usize) {
        let mut opened: Opened = Vec::new();
        let mut count = 0;
        for sub in subs.filter(|s| s.id != me) {
            let a = sub.home.arbiter as usize;
            let Some(runs) = self.runs.get_mut(a) else {
                continue;
            };
            let r = match opened.iter().find(|(x, _)| *x == a) {
                Some(&(_, r)) => r,
                None => {
                    runs.push(Run::default());
                    opened.push((a, runs.len() - 1));
                    runs.len() - 1
                }
            };
            runs[r].to.push(Target {
                id: sub.id,
                slot: sub.home.slot,
            });
            count += 1;
        }
        (opened, count)
    }

    /// Plans a message of several topics (`lists`: each topic's index and
    /// subscribers); returns how many subscribers it reaches.
    fn several(&mut self, msg: &Arc<Message>, lists: &[(u32, Option<SubList>)], me: u64) -> usize {
        if msg.topics.len() > 64 {
            return self.many(msg, lists, me);
        }
        // Per subscriber: the bit set of the topics it holds.
        let held = merge(lists, me, |mask: &mut u64, i| *mask |= 1 << i);
        // Subscribers on one arbiter holding the same topics share a run.
        let mut groups: FastMap<(usize, u64), usize> = FastMap::default();
        let mut count = 0;
        for (target, a, mask) in held {
            let Some(runs) = self.runs.get_mut(a) else {
                continue;
            };
            count += 1;
            let r = *groups.entry((a, mask)).or_insert_with(|| {
                let mut run = Run::default();
                run.push(Message::delivery_for_mask(msg, mask));
                runs.push(run);
                runs.len() - 1
            });
            runs[r].to.push(target);
        }
        count
    }

    /// [`Plan::several`] for a message of more than 64 topics (no bit set
    /// for them): a run per subscriber, its header built now.
    fn many(&mut self, msg: &Arc<Message>, lists: &[(u32, Option<SubList>)], me: u64) -> usize {
        let held = merge(lists, me, |idx: &mut Vec<u32>, i| idx.push(i));
        let mut count = 0;
        for (target, a, idx) in held {
            let Some(runs) = self.runs.get_mut(a) else {
                continue;
            };
            count += 1;
            let mut run = Run::default();
            run.to.push(target);
            run.push(Message::delivery(msg, &idx));
            runs.push(run);
        }
        count
    }
}

/// The subscribers of a message of several topics (`lists`: each topic's
/// index and subscribers; the publisher `me` excluded), each once, first
/// seen first: its target, its arbiter, and what `note` made of the
/// indices of the topics it holds.
fn merge<T: Default>(
    lists: &[(u32, Option<SubList>)],
    me: u64,
    mut note: impl FnMut(&mut T, u32),
) -> Vec<(Target, usize, T)> {
    let total: usize = lists.iter().flat_map(|(_, l)| l).map(SubList::len).sum();
    let mut index: FastMap<u64, usize> =
        FastMap::with_capacity_and_hasher(total, Default::default());
    let mut held: Vec<(Target, usize, T)> = Vec::with_capacity(total);
    for (i, list) in lists {
        let Some(list) = list else { continue };
        for sub in list.iter().filter(|s| s.id != me) {
            let e = *index.entry(sub.id).or_insert_with(|| {
                let t = Target {
                    id: sub.id,
                    slot: sub.home.slot,
                };
                held.push((t, sub.home.arbiter as usize, T::default()));
                held.len() - 1
            });
            note(&mut held[e].2, *i);
        }
    }
    held
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
            rang: false,
        }
    }

    /// Whether deliveries since the last call left queues of this thread
    /// due to be rung (its answers then wait for their pushes,
    /// [`board::answer_after_ring`]).
    pub fn take_rang(&mut self) -> bool {
        std::mem::take(&mut self.rang)
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
            _ring: board::RouteInFlight::sent(),
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
            runs: (0..self.env.couriers.len()).map(|_| Vec::new()).collect(),
        };
        let mut failed_msgs = vec![false; b.msgs.len()];
        let mut reached = vec![0usize; b.msgs.len()];
        let mut delivered = 0u64;
        // The previous message's subscriber list, if it had one topic, with
        // the runs it opened: the next message on the same list joins them.
        // Any other run opened in between ends this (order per subscriber).
        let mut last: Option<(usize, Opened, usize)> = None;
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
                    if last.as_ref().is_none_or(|(p, _, _)| *p != ptr) {
                        let (opened, count) = plan.open(list.iter(), self.id);
                        last = Some((ptr, opened, count));
                    }
                    let (_, opened, count) = last.as_ref().expect("just set");
                    for &(a, r) in opened {
                        plan.runs[a][r].push(Delivery::all(msg));
                    }
                    recipients = *count;
                }
            } else {
                // Several topics: one entry per subscriber, listing the
                // topics it holds; subscribers holding the same ones share
                // a run.
                last = None;
                recipients = plan.several(msg, &lists, self.id);
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
        for (home, runs) in plan.runs.into_iter().enumerate() {
            if runs.is_empty() {
                continue;
            }
            if home == self.home {
                board::post(runs);
                self.rang |= board::ring_due();
            } else {
                self.env.couriers[home].do_send(Parcel(runs));
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
