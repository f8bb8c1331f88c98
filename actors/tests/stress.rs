//! Multi-threaded stress of routing at the actor level: publishers on
//! different worker arbiters publish multi-topic messages (topics spanning
//! 8 shards on 3 threads) while other clients subscribe, register and
//! subscribe, unsubscribe and retro-subscribe, and router shards are made
//! to fail (the fault topic, and once the whole pool's supervisor). Then:
//!
//! - every publish of a real publisher succeeds (a restarting shard holds
//!   routes back, it does not fail them);
//! - no gap: a client that read `STORED` for a topic receives every message
//!   on it published after that (until it unsubscribes); after `register`,
//!   every one published after the register; after a `retro_subscribe`,
//!   every one at or after the horizon, and none before it;
//! - one entry per message per client, listing exactly the topics it held
//!   throughout (for clients whose topics do not change), a subset of the
//!   message's topics in publish order always; never its own messages;
//! - per-publisher, per-topic order (not checked for the clients that
//!   register: a register's replay can still overtake a message published
//!   just before the register whose live delivery is still on its way).
//!
//! Each client records the clock just after it read `STORED`; each publish
//! the clock before it was sent and after it was answered: a message
//! published after a `STORED` has a larger reading, so "after" is exact.

mod kit;

use std::cell::{Cell, RefCell};
use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use bytes::Bytes;
use kit::{Client, Entry, TestNode};
use kraken_actors::shard::FAULT_SHARD_PANIC;
use kraken_actors::shard_pool;
use kraken_protocol::Response;

const TOPICS: usize = 16;

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    /// 1..=max distinct topic indices, in random order.
    fn topics(&mut self, max: usize) -> Vec<usize> {
        let n = 1 + self.below(max);
        let mut v: Vec<usize> = Vec::new();
        while v.len() < n {
            let t = self.below(TOPICS);
            if !v.contains(&t) {
                v.push(t);
            }
        }
        v
    }
}

fn name(t: usize) -> Bytes {
    Bytes::from(format!("s{t}"))
}

fn names(ts: &[usize]) -> Vec<Bytes> {
    ts.iter().map(|&t| name(t)).collect()
}

/// One published message.
struct Sent {
    publisher: u64,
    topics: Vec<Bytes>,
    /// Clock before the request was sent, and after it was answered.
    t0: u64,
    t1: u64,
}

/// What the test's tasks share (all run on the test's thread).
struct Shared {
    stop: Cell<bool>,
    faults_stop: Cell<bool>,
    faults_done: Cell<bool>,
    /// The retro horizon (unix seconds), once the faults are over.
    horizon: Cell<Option<i64>>,
    sent: RefCell<HashMap<Bytes, Sent>>,
    faults: Cell<u64>,
}

async fn sleep(ms: u64) {
    tokio::time::sleep(Duration::from_millis(ms)).await;
}

async fn publisher(node: &TestNode, c: Client, seed: u64, sh: &Shared) {
    let mut rng = Rng(seed);
    let mut k = 0;
    while !sh.stop.get() {
        let batch: Vec<(Vec<Bytes>, Bytes)> = (0..1 + rng.below(3))
            .map(|j| {
                k += 1;
                (
                    names(&rng.topics(4)),
                    Bytes::from(format!("{}:{k}:{j}", c.id)),
                )
            })
            .collect();
        let t0 = node.now();
        let r = c.publish(batch.clone()).await;
        let t1 = node.now();
        assert_eq!(r, Ok(()), "a publish failed");
        sh.sent
            .borrow_mut()
            .extend(batch.into_iter().map(|(topics, payload)| {
                let s = Sent {
                    publisher: c.id,
                    topics,
                    t0,
                    t1,
                };
                (payload, s)
            }));
        if k % 16 == 0 {
            sleep(1).await;
        }
    }
}

async fn faulter(node: &TestNode, c: Client, sh: &Shared) {
    sleep(100).await;
    let mut n = 0;
    while !sh.faults_stop.get() {
        n += 1;
        if n == 5 {
            // Once: the pool's supervisor fails; every shard restarts.
            node.pool.do_send(shard_pool::Panic);
        } else {
            let r = c
                .publish(vec![(
                    vec![Bytes::from_static(FAULT_SHARD_PANIC)],
                    "f".into(),
                )])
                .await;
            assert!(r.is_err(), "the failing shard's batch fails");
            sh.faults.set(sh.faults.get() + 1);
        }
        sleep(80).await;
    }
    sh.faults_done.set(true);
}

/// Polls until the end, then until nothing more comes.
async fn drain(c: &Client, sh: &Shared, got: &mut Vec<Entry>) {
    while !sh.stop.get() {
        got.extend(c.poll().await.expect("not a slow consumer"));
        sleep(3).await;
    }
    let mut quiet = 0;
    while quiet < 5 {
        let more = c.poll().await.expect("not a slow consumer");
        quiet = if more.is_empty() { quiet + 1 } else { 0 };
        got.extend(more);
        sleep(20).await;
    }
}

/// What a client must have received: (payload, a topic it must list).
type Must = Vec<(Bytes, Option<Bytes>)>;

struct Outcome {
    id: u64,
    got: Vec<Entry>,
    must: Must,
    /// Messages it must not have.
    must_not: Vec<Bytes>,
    /// Topics it held at some point.
    ever: BTreeSet<Bytes>,
    /// It held exactly these from this time on: entries of messages
    /// published later list exactly them.
    fixed: Option<(BTreeSet<Bytes>, u64)>,
    /// Its entries keep per-publisher, per-topic order.
    ordered: bool,
}

/// Subscribes once, a little after the start, and keeps its topics.
async fn steady(node: &TestNode, c: Client, delay: u64, ts: Vec<usize>, sh: &Shared) -> Outcome {
    sleep(delay).await;
    assert_eq!(c.subscribe(names(&ts)).await, Response::Stored);
    let stored = node.now();
    let mut got = Vec::new();
    drain(&c, sh, &mut got).await;
    let set: BTreeSet<Bytes> = names(&ts).into_iter().collect();
    let mut must = Vec::new();
    for (p, s) in sh.sent.borrow().iter() {
        if s.t0 > stored {
            for t in s.topics.iter().filter(|t| set.contains(*t)) {
                must.push((p.clone(), Some(t.clone())));
            }
        }
    }
    Outcome {
        id: c.id,
        got,
        must,
        must_not: Vec::new(),
        ever: set.clone(),
        fixed: Some((set, stored)),
        ordered: true,
    }
}

/// Retro-subscribes once the faults are over, from the next second on.
async fn retro(c: Client, ts: Vec<usize>, sh: &Shared) -> Outcome {
    let h = loop {
        if let Some(h) = sh.horizon.get() {
            break h;
        }
        sleep(5).await;
    };
    assert_eq!(
        c.retro(names(&ts), h).await,
        Response::Stored,
        "no shard restarted after the horizon"
    );
    let mut got = Vec::new();
    drain(&c, sh, &mut got).await;
    let h = h as u64 * 1_000_000_000;
    let set: BTreeSet<Bytes> = names(&ts).into_iter().collect();
    let (mut must, mut must_not) = (Vec::new(), Vec::new());
    for (p, s) in sh.sent.borrow().iter() {
        if s.publisher == c.id || !s.topics.iter().any(|t| set.contains(t)) {
            continue;
        }
        if s.t0 >= h {
            for t in s.topics.iter().filter(|t| set.contains(*t)) {
                must.push((p.clone(), Some(t.clone())));
            }
        } else if s.t1 < h {
            must_not.push(p.clone());
        }
    }
    Outcome {
        id: c.id,
        got,
        must,
        must_not,
        ever: set.clone(),
        fixed: Some((set, h)),
        ordered: true,
    }
}

/// Changes its topics all the time: (register and) subscribe, unsubscribe.
async fn churn(node: &TestNode, c: Client, seed: u64, registers: bool, sh: &Shared) -> Outcome {
    let mut rng = Rng(seed);
    let mut got = Vec::new();
    // Topic -> (messages since then must come, and list it from then on).
    let mut held: HashMap<usize, (u64, u64)> = HashMap::new();
    let mut ever = BTreeSet::new();
    while !sh.stop.get() {
        let registered = if registers && rng.below(2) == 0 {
            assert_eq!(c.register().await, Response::Stored);
            Some(node.now())
        } else {
            None
        };
        got.extend(c.poll().await.expect("not a slow consumer"));
        let ts = rng.topics(4);
        let r = c.subscribe(names(&ts)).await;
        let stored = node.now();
        for &t in &ts {
            ever.insert(name(t));
            if held.contains_key(&t) {
                continue;
            }
            // After register (answered STORED), every message since the
            // register on a newly subscribed topic is replayed.
            let from = match (registered, &r) {
                (Some(reg), Response::Stored) => reg,
                (None, Response::Stored) => stored,
                _ => {
                    // NOT_FOUND (a shard restarted since the register):
                    // subscribed, from now on.
                    assert_eq!(r, Response::NotFound);
                    stored
                }
            };
            held.insert(t, (from, stored));
        }
        for _ in 0..3 {
            got.extend(c.poll().await.expect("not a slow consumer"));
            sleep(5).await;
        }
        let drop: Vec<usize> = held.keys().copied().filter(|_| rng.below(2) == 0).collect();
        // Deliveries in flight when an unsubscribe lands may be trimmed:
        // what a dropped topic must have had is not checked, only what the
        // topics still held at the end must have.
        if !drop.is_empty() {
            for t in &drop {
                held.remove(t);
            }
            assert_eq!(c.unsubscribe(names(&drop)).await, Response::Stored);
        }
    }
    drain(&c, sh, &mut got).await;
    let mut must = Vec::new();
    for (p, s) in sh.sent.borrow().iter() {
        if s.publisher == c.id {
            continue;
        }
        for (&t, &(from, listed_from)) in &held {
            let t = name(t);
            if s.t0 > from && s.topics.contains(&t) {
                // Replayed after register, it may have come before on
                // another topic, listing only what was held then.
                must.push((p.clone(), (s.t0 > listed_from).then_some(t)));
            }
        }
    }
    Outcome {
        id: c.id,
        got,
        must,
        must_not: Vec::new(),
        ever,
        fixed: None,
        ordered: !registers,
    }
}

fn check(what: &str, o: &Outcome, sh: &Shared) {
    let sent = sh.sent.borrow();
    let mut by_payload: HashMap<&Bytes, &Entry> = HashMap::new();
    let mut last: HashMap<(u64, Bytes), (u64, usize)> = HashMap::new();
    for (i, e) in o.got.iter().enumerate() {
        assert!(
            by_payload.insert(&e.payload, e).is_none(),
            "{what}: two entries of {:?}",
            e.payload
        );
        assert_ne!(e.publisher, o.id, "{what}: its own message");
        let s = sent
            .get(&e.payload)
            .unwrap_or_else(|| panic!("{what}: unknown message {:?}", e.payload));
        assert!(!e.topics.is_empty(), "{what}: an entry without topics");
        // A subsequence of the message's topics, all held at some point.
        let mut at = s.topics.iter();
        for t in &e.topics {
            assert!(at.any(|x| x == t), "{what}: {:?} lists {t:?}", e.payload);
            assert!(
                o.ever.contains(t),
                "{what}: {:?} lists unheld {t:?}",
                e.payload
            );
        }
        if let Some((fixed, _)) = o.fixed.as_ref().filter(|(_, from)| s.t0 > *from) {
            let want: Vec<&Bytes> = s.topics.iter().filter(|t| fixed.contains(*t)).collect();
            let listed: Vec<&Bytes> = e.topics.iter().collect();
            assert_eq!(listed, want, "{what}: topics of {:?}", e.payload);
        }
        for t in &e.topics {
            let prev = last.insert((e.publisher, t.clone()), (e.seq, i));
            if let Some((prev, j)) = prev.filter(|_| o.ordered) {
                assert!(
                    prev < e.seq,
                    "{what}: out of order on {t:?}: entry {i} {:?} after entry {j} {:?}",
                    e,
                    o.got[j]
                );
            }
        }
    }
    for (p, t) in &o.must {
        let e = by_payload
            .get(p)
            .unwrap_or_else(|| panic!("{what}: gap: {p:?} on {t:?} never came"));
        if let Some(t) = t {
            assert!(e.topics.contains(t), "{what}: {p:?} does not list {t:?}");
        }
    }
    for p in &o.must_not {
        assert!(
            !by_payload.contains_key(p),
            "{what}: {p:?} predates the horizon"
        );
    }
}

#[actix_rt::test]
async fn routing_holds_under_concurrent_publishers_subscribers_and_shard_restarts() {
    let mut settings = kit::settings(8);
    settings.messages_stored_per_router_shard = 1_000_000;
    let node = TestNode::started(settings, 4, 3).await;
    let sh = Shared {
        stop: Cell::new(false),
        faults_stop: Cell::new(false),
        faults_done: Cell::new(false),
        horizon: Cell::new(None),
        sent: RefCell::new(HashMap::new()),
        faults: Cell::new(0),
    };
    let mut pubs = Vec::new();
    for i in 0..4 {
        pubs.push(publisher(&node, node.client().await, 0x9e37_79b9 + i, &sh));
    }
    let fault = faulter(&node, node.client().await, &sh);
    let mut steadies = Vec::new();
    let mut rng = Rng(77);
    for i in 0..3 {
        steadies.push(steady(
            &node,
            node.client().await,
            50 + 250 * i,
            rng.topics(5),
            &sh,
        ));
    }
    let mut retros = Vec::new();
    for _ in 0..3 {
        retros.push(retro(node.client().await, rng.topics(5), &sh));
    }
    let mut churners = Vec::new();
    for i in 0..4 {
        churners.push(churn(&node, node.client().await, 1234 + i, i % 2 == 0, &sh));
    }
    let conductor = async {
        sleep(1200).await;
        sh.faults_stop.set(true);
        while !sh.faults_done.get() {
            sleep(5).await;
        }
        // (The pool's restart went long before.)
        sleep(50).await;
        // The next second: every restart was before it.
        let now = node.now() / 1_000_000_000;
        while node.now() / 1_000_000_000 == now {
            sleep(5).await;
        }
        sh.horizon.set(Some((now + 1) as i64));
        sleep(800).await;
        sh.stop.set(true);
    };
    let (_, _, _, steady, retro, churn) = tokio::join!(
        conductor,
        futures_util::future::join_all(pubs),
        fault,
        futures_util::future::join_all(steadies),
        futures_util::future::join_all(retros),
        futures_util::future::join_all(churners),
    );
    let sent = sh.sent.borrow().len();
    assert!(sent > 200, "only {sent} messages");
    assert!(
        sh.faults.get() >= 5,
        "only {} shard faults",
        sh.faults.get()
    );
    let c = &node.env.node.counters;
    assert!(c.shard_restarts.load(std::sync::atomic::Ordering::SeqCst) >= sh.faults.get());
    assert_eq!(
        node.root_log
            .child_downs
            .load(std::sync::atomic::Ordering::SeqCst),
        1
    );
    for (i, o) in steady.iter().enumerate() {
        assert!(!o.must.is_empty());
        check(&format!("steady {i}"), o, &sh);
    }
    for (i, o) in retro.iter().enumerate() {
        assert!(!o.must.is_empty());
        check(&format!("retro {i}"), o, &sh);
    }
    for (i, o) in churn.iter().enumerate() {
        check(&format!("churn {i}"), o, &sh);
    }
}
