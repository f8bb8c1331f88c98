//! Property tests of routing at the actor level: random sequences of
//! subscribe, unsubscribe, register, retro_subscribe, publish (multi-topic
//! messages, several per request) and shard failures, across random topics
//! on 1 to 8 router shards, run one step at a time against a model of the
//! guarantees. After every step each client's polled entries must equal the
//! model's exactly, which covers:
//!
//! - one entry per message per subscriber, listing exactly the topics of it
//!   the subscriber held, in publish order, however the topics fall on
//!   shards; never to its publisher;
//! - per-publisher, per-topic order and no duplicate;
//! - `register` then `subscribe`: exactly the messages published after the
//!   register on the newly subscribed topics (not those delivered live
//!   already), `NOT_FOUND` if a shard of those topics restarted since;
//! - `retro_subscribe`: every buffered message at or after the horizon on
//!   the requested topics (the horizon's own second included), `NOT_FOUND`
//!   when a shard of them started or restarted after the horizon;
//! - a shard failure loses no subscription.
//!
//! An observer client holding every topic of the case learns each message's
//! sequence number (its publish time), which places retro horizons.

mod kit;

use std::collections::{BTreeSet, HashMap};
use std::sync::Mutex;
use std::time::Duration;

use bytes::Bytes;
use kit::{Client, Entry, TestNode};
use kraken_actors::router::shard_of;
use kraken_actors::shard::FAULT_SHARD_PANIC;
use kraken_protocol::Response;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};

const TOPICS: usize = 6;
const CLIENTS: usize = 4;

#[derive(Debug, Clone, Copy)]
enum Hz {
    /// Long before the node started: `NOT_FOUND`.
    Old,
    /// The current second: replays this second's messages.
    Now,
    /// Later than now: nothing to replay.
    Future,
}

#[derive(Debug, Clone)]
enum Op {
    Sub(usize, Vec<usize>),
    Unsub(usize, Vec<usize>),
    Register(usize),
    Retro(usize, Vec<usize>, Hz),
    /// One request of several messages, each naming several topics.
    Publish(usize, Vec<Vec<usize>>),
    /// Publish to the fault topic: its shard fails and is restarted.
    Fault(usize),
}

fn topic_set() -> impl Strategy<Value = Vec<usize>> {
    prop::collection::btree_set(0..TOPICS, 1..=3).prop_map(|s| s.into_iter().collect())
}

fn message_topics() -> impl Strategy<Value = Vec<usize>> {
    prop::sample::subsequence((0..TOPICS).collect::<Vec<_>>(), 1..=4).prop_shuffle()
}

fn op() -> impl Strategy<Value = Op> {
    let c = 0..CLIENTS;
    prop_oneof![
        4 => (c.clone(), topic_set()).prop_map(|(c, t)| Op::Sub(c, t)),
        2 => (c.clone(), topic_set()).prop_map(|(c, t)| Op::Unsub(c, t)),
        2 => c.clone().prop_map(Op::Register),
        2 => (c.clone(), topic_set(), prop_oneof![Just(Hz::Old), Just(Hz::Now), Just(Hz::Now), Just(Hz::Future)])
            .prop_map(|(c, t, h)| Op::Retro(c, t, h)),
        6 => (c.clone(), prop::collection::vec(message_topics(), 1..=3))
            .prop_map(|(c, m)| Op::Publish(c, m)),
        1 => c.prop_map(Op::Fault),
    ]
}

/// When a shard's retro buffer became complete: between these clock
/// readings (its start or its last restart).
#[derive(Debug, Clone, Copy)]
struct Reset {
    lo: u64,
    hi: u64,
}

struct Msg {
    payload: Bytes,
    topics: Vec<usize>,
    publisher: usize,
    seq: u64,
}

#[derive(Default)]
struct Model {
    subs: BTreeSet<usize>,
    /// `register`: (index of the next message, clock window of the register).
    horizon: Option<(usize, Reset)>,
    /// Messages this client has an entry of.
    got: BTreeSet<usize>,
    expected: Vec<(Bytes, Vec<Bytes>)>,
    actual: Vec<Entry>,
}

struct World<'a> {
    node: &'a TestNode,
    shards: usize,
    resets: &'a Mutex<Vec<Reset>>,
    names: Vec<Bytes>,
    clients: Vec<Client>,
    observer: Client,
    seen: Vec<Entry>,
    models: Vec<Model>,
    msgs: Vec<Msg>,
}

impl World<'_> {
    fn names(&self, ts: &[usize]) -> Vec<Bytes> {
        ts.iter().map(|&t| self.names[t].clone()).collect()
    }

    fn shards_of(&self, ts: impl IntoIterator<Item = usize>) -> BTreeSet<usize> {
        ts.into_iter()
            .map(|t| shard_of(&self.names[t], self.shards))
            .collect()
    }

    /// Polls every client until it has what the model expects (then a
    /// little longer when `quiet`).
    async fn settle(&mut self, quiet: Duration) {
        let n = self.msgs.len();
        let seen = &mut self.seen;
        self.observer
            .poll_until(seen, Duration::from_secs(1), quiet, |s| s.len() >= n)
            .await;
        for (c, m) in self.clients.iter().zip(self.models.iter_mut()) {
            let want = m.expected.len();
            c.poll_until(&mut m.actual, Duration::from_secs(1), quiet, |a| {
                a.len() >= want
            })
            .await;
        }
    }

    fn check(&self, step: usize, op: &Op) -> Result<(), TestCaseError> {
        let everything: Vec<(Bytes, Vec<Bytes>)> = self
            .msgs
            .iter()
            .map(|m| (m.payload.clone(), self.names(&m.topics)))
            .collect();
        let seen: Vec<(Bytes, Vec<Bytes>)> = self
            .seen
            .iter()
            .map(|e| (e.payload.clone(), e.topics.clone()))
            .collect();
        prop_assert_eq!(seen, everything, "observer after step {} ({:?})", step, op);
        for (i, m) in self.models.iter().enumerate() {
            let actual: Vec<(Bytes, Vec<Bytes>)> = m
                .actual
                .iter()
                .map(|e| (e.payload.clone(), e.topics.clone()))
                .collect();
            prop_assert_eq!(
                &actual,
                &m.expected,
                "client {} after step {} ({:?})",
                i,
                step,
                op
            );
            for e in &m.actual {
                prop_assert_ne!(e.publisher, self.clients[i].id, "own message");
            }
        }
        Ok(())
    }

    /// Whether shard `s`'s buffer is complete for horizon `h` (`None`: the
    /// restart and the horizon were too close to tell).
    fn complete(&self, s: usize, h: u64) -> Option<bool> {
        let r = self.resets.lock().unwrap()[s];
        if h >= r.hi {
            Some(true)
        } else if h < r.lo {
            Some(false)
        } else {
            None
        }
    }

    async fn step(&mut self, op: &Op) -> Result<(), TestCaseError> {
        match op {
            Op::Sub(c, ts) => {
                let r = self.clients[*c].subscribe(self.names(ts)).await;
                let m = &mut self.models[*c];
                let added: Vec<usize> =
                    ts.iter().copied().filter(|t| !m.subs.contains(t)).collect();
                m.subs.extend(ts.iter().copied());
                let Some((from, reg)) = m.horizon.take() else {
                    prop_assert_eq!(r, Response::Stored);
                    return Ok(());
                };
                if added.is_empty() {
                    prop_assert_eq!(r, Response::Stored);
                    return Ok(());
                }
                // The replay covers every topic held (a message on an old
                // topic may still be in flight live).
                let held: Vec<usize> = m.subs.iter().copied().collect();
                let lost = {
                    let resets = self.resets.lock().unwrap();
                    self.shards_of(held)
                        .into_iter()
                        .any(|s| resets[s].lo > reg.hi)
                };
                if lost {
                    prop_assert_eq!(r, Response::NotFound, "a shard restarted after register");
                    return Ok(());
                }
                prop_assert_eq!(r, Response::Stored);
                let m = &mut self.models[*c];
                for (i, msg) in self.msgs.iter().enumerate().skip(from) {
                    if msg.publisher != *c
                        && !m.got.contains(&i)
                        && msg.topics.iter().any(|t| m.subs.contains(t))
                    {
                        let held: Vec<Bytes> = msg
                            .topics
                            .iter()
                            .filter(|t| m.subs.contains(t))
                            .map(|&t| self.names[t].clone())
                            .collect();
                        m.expected.push((msg.payload.clone(), held));
                        m.got.insert(i);
                    }
                }
            }
            Op::Unsub(c, ts) => {
                let r = self.clients[*c].unsubscribe(self.names(ts)).await;
                prop_assert_eq!(r, Response::Stored);
                let m = &mut self.models[*c];
                for t in ts {
                    m.subs.remove(t);
                }
            }
            Op::Register(c) => {
                let lo = self.node.now();
                let r = self.clients[*c].register().await;
                let hi = self.node.now();
                prop_assert_eq!(r, Response::Stored);
                self.models[*c].horizon = Some((self.msgs.len(), Reset { lo, hi }));
            }
            Op::Retro(c, ts, hz) => {
                let now_s = (self.node.now() / 1_000_000_000) as i64;
                let secs = match hz {
                    Hz::Old => 1_000,
                    Hz::Now => now_s,
                    Hz::Future => now_s + 5,
                };
                let h = secs as u64 * 1_000_000_000;
                let r = self.clients[*c].retro(self.names(ts), secs).await;
                self.models[*c].subs.extend(ts.iter().copied());
                let verdicts: Vec<Option<bool>> = self
                    .shards_of(ts.iter().copied())
                    .into_iter()
                    .map(|s| self.complete(s, h))
                    .collect();
                let stored = if verdicts.contains(&Some(false)) {
                    false
                } else if verdicts.iter().all(|v| *v == Some(true)) {
                    true
                } else {
                    r == Response::Stored
                };
                if !stored {
                    prop_assert_eq!(r, Response::NotFound, "horizon before a shard's start");
                    return Ok(());
                }
                prop_assert_eq!(r, Response::Stored);
                let m = &mut self.models[*c];
                for (i, msg) in self.msgs.iter().enumerate() {
                    if msg.publisher != *c
                        && msg.seq >= h
                        && msg.topics.iter().any(|t| ts.contains(t))
                    {
                        let held: Vec<Bytes> = msg
                            .topics
                            .iter()
                            .filter(|t| m.subs.contains(t))
                            .map(|&t| self.names[t].clone())
                            .collect();
                        m.expected.push((msg.payload.clone(), held));
                        m.got.insert(i);
                    }
                }
            }
            Op::Publish(c, msgs) => {
                let batch: Vec<(Vec<Bytes>, Bytes)> = msgs
                    .iter()
                    .enumerate()
                    .map(|(k, ts)| {
                        let payload = Bytes::from(format!("m{}.{}", self.msgs.len(), k));
                        (self.names(ts), payload)
                    })
                    .collect();
                let r = self.clients[*c].publish(batch.clone()).await;
                prop_assert_eq!(r, Ok(()));
                let first = self.msgs.len();
                for (ts, (_, payload)) in msgs.iter().zip(batch) {
                    let i = self.msgs.len();
                    for (j, m) in self.models.iter_mut().enumerate() {
                        if j == *c {
                            continue;
                        }
                        let held: Vec<Bytes> = ts
                            .iter()
                            .filter(|t| m.subs.contains(t))
                            .map(|&t| self.names[t].clone())
                            .collect();
                        if !held.is_empty() {
                            m.expected.push((payload.clone(), held));
                            m.got.insert(i);
                        }
                    }
                    self.msgs.push(Msg {
                        payload,
                        topics: ts.clone(),
                        publisher: *c,
                        seq: 0,
                    });
                }
                // The observer holds every topic: it tells the sequence numbers.
                let n = self.msgs.len();
                let seen = &mut self.seen;
                self.observer
                    .poll_until(seen, Duration::from_secs(1), Duration::ZERO, |s| {
                        s.len() >= n
                    })
                    .await;
                let seqs: HashMap<Bytes, u64> = self
                    .seen
                    .iter()
                    .map(|e| (e.payload.clone(), e.seq))
                    .collect();
                for m in &mut self.msgs[first..] {
                    m.seq = *seqs.get(&m.payload).ok_or_else(|| {
                        TestCaseError::fail(format!("observer missed {:?}", m.payload))
                    })?;
                }
            }
            Op::Fault(c) => {
                let lo = self.node.now();
                let r = self.clients[*c]
                    .publish(vec![(
                        vec![Bytes::from_static(FAULT_SHARD_PANIC)],
                        "x".into(),
                    )])
                    .await;
                let hi = self.node.now();
                prop_assert!(r.is_err(), "the failed shard's batch fails");
                let s = shard_of(FAULT_SHARD_PANIC, self.shards);
                self.resets.lock().unwrap()[s] = Reset { lo, hi };
            }
        }
        Ok(())
    }
}

async fn run_case(
    node: &TestNode,
    resets: &Mutex<Vec<Reset>>,
    case: u64,
    ops: &[Op],
) -> Result<(), TestCaseError> {
    let shards = node.env.router.num_shards();
    let names: Vec<Bytes> = (0..TOPICS)
        .map(|t| Bytes::from(format!("c{case}.t{t}")))
        .collect();
    let observer = node.client().await;
    prop_assert_eq!(observer.subscribe(names.clone()).await, Response::Stored);
    let mut clients = Vec::new();
    for _ in 0..CLIENTS {
        clients.push(node.client().await);
    }
    let mut w = World {
        node,
        shards,
        resets,
        names,
        clients,
        observer,
        seen: Vec::new(),
        models: (0..CLIENTS).map(|_| Model::default()).collect(),
        msgs: Vec::new(),
    };
    let mut result = Ok(());
    for (i, op) in ops.iter().enumerate() {
        let r = async {
            w.step(op).await?;
            w.settle(Duration::ZERO).await;
            w.check(i, op)
        }
        .await;
        if r.is_err() {
            result = r;
            break;
        }
    }
    if result.is_ok() {
        w.settle(Duration::from_millis(20)).await;
        result = w.check(ops.len(), &Op::Register(0));
    }
    for c in w.clients.iter().chain(std::iter::once(&w.observer)) {
        c.close();
    }
    result
}

#[test]
fn routing_keeps_every_guarantee_of_the_model() {
    let sys = actix::System::new();
    let nodes: Vec<(TestNode, Mutex<Vec<Reset>>)> = sys.block_on(async {
        // The shards take their start time on their own threads: bound it.
        let lo = kraken_actors::router::SeqClock::new().now_ns() - 1_000_000;
        let mut nodes: Vec<TestNode> = Vec::new();
        for shards in 1..=8 {
            let mut s = kit::settings(shards);
            s.messages_stored_per_router_shard = 1_000_000;
            nodes.push(TestNode::started(s, 2, 2).await);
        }
        nodes
            .into_iter()
            .map(|node| {
                let (hi, n) = (node.now(), node.env.router.num_shards());
                (node, Mutex::new(vec![Reset { lo, hi }; n]))
            })
            .collect()
    });
    let case = std::sync::atomic::AtomicU64::new(0);
    let mut runner = TestRunner::new(Config {
        // PROPTEST_CASES=n runs more.
        cases: std::env::var("PROPTEST_CASES")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(64),
        max_shrink_iters: 100,
        failure_persistence: None,
        ..Config::default()
    });
    let strategy = (0..8usize, prop::collection::vec(op(), 1..30));
    let result = runner.run(&strategy, |(n, ops)| {
        let (node, resets) = &nodes[n];
        let case = case.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        sys.block_on(run_case(node, resets, case, &ops))
    });
    if let Err(e) = result {
        panic!("{e}");
    }
}

/// Found by the property test above: after `register`, a message delivered
/// on a topic the client then dropped was replayed again by the first
/// subscribe (two entries of one message).
#[actix_rt::test]
async fn register_never_replays_a_message_the_client_already_got() {
    let node = TestNode::started(kit::settings(4), 2, 2).await;
    let c = node.client().await;
    let p = node.client().await;
    let (x, y) = (Bytes::from_static(b"reg-x"), Bytes::from_static(b"reg-y"));
    assert_eq!(c.subscribe(vec![x.clone()]).await, Response::Stored);
    assert_eq!(c.register().await, Response::Stored);
    let m = vec![x.clone(), y.clone()];
    assert_eq!(p.publish(vec![(m, "m".into())]).await, Ok(()));
    let mut got = Vec::new();
    c.poll_until(&mut got, Duration::from_secs(2), Duration::ZERO, |g| {
        !g.is_empty()
    })
    .await;
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].topics, vec![x.clone()]);
    assert_eq!(c.unsubscribe(vec![x]).await, Response::Stored);
    assert_eq!(c.subscribe(vec![y.clone()]).await, Response::Stored);
    let mut more = Vec::new();
    c.poll_until(&mut more, Duration::ZERO, Duration::from_millis(30), |_| {
        false
    })
    .await;
    assert_eq!(more, Vec::new(), "the message came twice");
    // A message published after the register and not delivered is replayed.
    assert_eq!(c.register().await, Response::Stored);
    let z = Bytes::from_static(b"reg-z");
    assert_eq!(
        p.publish(vec![(vec![z.clone(), y.clone()], "n".into())])
            .await,
        Ok(())
    );
    assert_eq!(c.unsubscribe(vec![y.clone()]).await, Response::Stored);
    assert_eq!(c.subscribe(vec![z.clone()]).await, Response::Stored);
    // (It was delivered live on y already: not again.)
    let mut last = Vec::new();
    c.poll_until(
        &mut last,
        Duration::from_secs(2),
        Duration::from_millis(30),
        |g| !g.is_empty(),
    )
    .await;
    assert_eq!(last.len(), 1, "{last:?}");
    assert_eq!(last[0].topics, vec![y]);
}

/// Found by the property test above: a topic added by a retro_subscribe
/// between `register` and the first subscribe made that subscribe skip the
/// messages naming it, taking them for live deliveries: they were lost.
#[actix_rt::test]
async fn register_replays_a_message_whose_other_topic_came_by_retro_subscribe() {
    let node = TestNode::started(kit::settings(4), 2, 2).await;
    let c = node.client().await;
    let p = node.client().await;
    let (a, b) = (Bytes::from_static(b"rr-a"), Bytes::from_static(b"rr-b"));
    assert_eq!(c.register().await, Response::Stored);
    let m = vec![a.clone(), b.clone()];
    assert_eq!(p.publish(vec![(m.clone(), "m".into())]).await, Ok(()));
    let future = (node.now() / 1_000_000_000) as i64 + 5;
    assert_eq!(c.retro(vec![a.clone()], future).await, Response::Stored);
    assert_eq!(c.subscribe(vec![b]).await, Response::Stored);
    let mut got = Vec::new();
    c.poll_until(
        &mut got,
        Duration::from_secs(2),
        Duration::from_millis(30),
        |g| !g.is_empty(),
    )
    .await;
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0].topics, m);
}

/// Each shard is made on its own thread, later than the pool: a client
/// that registered before then found the shards' buffers incomplete for
/// its horizon (their start was taken when they were made) and got
/// NOT_FOUND for a replay that was whole.
#[actix_rt::test]
async fn a_register_made_before_the_shards_ran_replays_in_full() {
    let (node, hold) = TestNode::start_holding_shards(kit::settings(4), 2, 2);
    let c = node.client().await;
    let p = node.client().await;
    assert_eq!(c.register().await, Response::Stored);
    drop(hold);
    let t = Bytes::from_static(b"early");
    assert_eq!(p.publish(vec![(vec![t.clone()], "m".into())]).await, Ok(()));
    assert_eq!(c.subscribe(vec![t.clone()]).await, Response::Stored);
    let got = c.poll().await.expect("polled");
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0].topics, vec![t]);
}

/// A registered client remembers what it was sent before its first
/// subscribe, within a bound; past it, the subscribe answers NOT_FOUND
/// (the client reloads) and still subscribes.
#[actix_rt::test]
async fn register_past_its_memory_bound_answers_not_found_and_subscribes() {
    let node = TestNode::started(kit::settings(2), 2, 2).await;
    let c = node.client().await;
    let p = node.client().await;
    let (x, y) = (Bytes::from_static(b"big-x"), Bytes::from_static(b"big-y"));
    assert_eq!(c.subscribe(vec![x.clone()]).await, Response::Stored);
    assert_eq!(c.register().await, Response::Stored);
    let mut n = 0;
    for _ in 0..14 {
        let batch = (0..5_000)
            .map(|_| {
                n += 1;
                (vec![x.clone()], Bytes::from(n.to_string()))
            })
            .collect();
        assert_eq!(p.publish(batch).await, Ok(()));
        let mut got = Vec::new();
        c.poll_until(&mut got, Duration::from_secs(5), Duration::ZERO, |g| {
            g.len() >= 5_000
        })
        .await;
        assert_eq!(got.len(), 5_000);
    }
    assert_eq!(c.subscribe(vec![y.clone()]).await, Response::NotFound);
    assert_eq!(p.publish(vec![(vec![y.clone()], "y".into())]).await, Ok(()));
    let mut got = Vec::new();
    c.poll_until(&mut got, Duration::from_secs(2), Duration::ZERO, |g| {
        !g.is_empty()
    })
    .await;
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].topics, vec![y]);
}
