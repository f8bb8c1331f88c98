//! A load figure for a proxy topology (docs/PERFORMANCE.md, "Proxy
//! topology"). Ignored by default: it takes about half a minute and is only
//! meaningful in release mode on a quiet machine.
//!
//! ```text
//! cargo test --release --test proxy_load -- --ignored --nocapture
//! ```
//!
//! Topology: two upstream nodes, two proxies that both list them. Publishers
//! on proxy A publish to topics spread over both upstreams; subscribers on
//! proxy B (remote: through an upstream) and on proxy A (local) poll. The
//! same load is then run against one plain node for comparison. Every
//! delivery is checked: nothing lost, no duplicate, order per publisher and
//! topic kept. Bounded: each phase lasts `SECONDS`, the drain at most 5 s.

mod common;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use common::*;
use kraken_actors::proxy::owner_of;

const SECONDS: u64 = 8;
const TOPICS: usize = 8;
const SUBS_PER_NODE: usize = 16;
const PUBLISHERS: usize = 2;
/// Entries per publish request.
const BATCH: usize = 10;
/// Publish requests per second per publisher (paced); `PROXY_LOAD_RATE`
/// in the environment overrides it.
const REQUESTS_PER_S: u64 = 200;

fn requests_per_s() -> u64 {
    std::env::var("PROXY_LOAD_RATE")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(REQUESTS_PER_S)
}

#[derive(Default)]
struct Tally {
    deliveries: u64,
    duplicates: u64,
    out_of_order: u64,
    latencies_us: Vec<u64>,
}

fn origin() -> &'static Instant {
    static ORIGIN: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    ORIGIN.get_or_init(Instant::now)
}

/// Polls until `stop`, then drains; tallies what arrived.
fn subscriber(mut c: Client, stop: Arc<AtomicBool>, tally: Arc<Mutex<Tally>>) {
    let mut seen: HashMap<(u64, String), u64> = HashMap::new();
    let mut ids: HashSet<(u64, u64)> = HashSet::new();
    let mut local = Tally::default();
    let mut empty_after_stop = 0;
    let mut drain_deadline: Option<Instant> = None;
    loop {
        let got = c.poll();
        let now = origin().elapsed().as_micros() as u64;
        if stop.load(Ordering::SeqCst) {
            // Drain: until 20 empty polls in a row, at most 5 s.
            let deadline =
                *drain_deadline.get_or_insert_with(|| Instant::now() + Duration::from_secs(5));
            if Instant::now() > deadline {
                break;
            }
            if got.is_empty() {
                empty_after_stop += 1;
                if empty_after_stop >= 20 {
                    break;
                }
            }
        }
        if got.is_empty() {
            thread::sleep(Duration::from_millis(1));
            continue;
        }
        empty_after_stop = 0;
        for m in got {
            let text = String::from_utf8_lossy(&m.payload).into_owned();
            let mut parts = text.split('-');
            let p: u64 = parts.next().unwrap().parse().unwrap();
            let seq: u64 = parts.next().unwrap().parse().unwrap();
            let sent_us: u64 = parts.next().unwrap().parse().unwrap();
            local.deliveries += 1;
            if !ids.insert((p, seq)) {
                local.duplicates += 1;
                continue;
            }
            local.latencies_us.push(now.saturating_sub(sent_us));
            for t in m.topics {
                let last = seen.entry((p, t)).or_insert(0);
                if seq < *last {
                    local.out_of_order += 1;
                }
                *last = (*last).max(seq);
            }
        }
    }
    let mut t = tally.lock().unwrap();
    t.deliveries += local.deliveries;
    t.duplicates += local.duplicates;
    t.out_of_order += local.out_of_order;
    t.latencies_us.extend(local.latencies_us);
}

struct Figures {
    published: u64,
    expected: u64,
    tally: Tally,
    seconds: f64,
}

/// Runs the load: publishers on `pub_node`, subscribers on each of `sub_nodes`.
/// `during` runs once the publishers are done, before the subscribers leave.
fn run(pub_node: &Node, sub_nodes: &[&Node], topics: &[String], during: impl Fn()) -> Figures {
    let stop = Arc::new(AtomicBool::new(false));
    let tally = Arc::new(Mutex::new(Tally::default()));
    let mut subs = Vec::new();
    let mut holders = vec![0u64; topics.len()];
    for node in sub_nodes {
        for i in 0..SUBS_PER_NODE {
            let mut c = node.connect();
            c.subscribe(&[&topics[i % topics.len()]]);
            holders[i % topics.len()] += 1;
            let (stop, tally) = (stop.clone(), tally.clone());
            subs.push(thread::spawn(move || subscriber(c, stop, tally)));
        }
    }
    let published = Arc::new(AtomicU64::new(0));
    let expected = Arc::new(AtomicU64::new(0));
    let holders = Arc::new(holders);
    let start = Instant::now();
    let pubs: Vec<_> = (0..PUBLISHERS)
        .map(|p| {
            let mut c = pub_node.connect();
            let topics = topics.to_vec();
            let (published, expected, holders) =
                (published.clone(), expected.clone(), holders.clone());
            thread::spawn(move || {
                let mut seq = 0u64;
                let every = Duration::from_nanos(1_000_000_000 / requests_per_s());
                let mut next = Instant::now();
                while start.elapsed() < Duration::from_secs(SECONDS) {
                    let now_us = origin().elapsed().as_micros() as u64;
                    let mut block = Vec::new();
                    for _ in 0..BATCH {
                        seq += 1;
                        let t = (seq as usize + p) % topics.len();
                        let payload = format!("{p}-{seq}-{now_us}");
                        block.extend(entry(&[&topics[t]], payload.as_bytes()));
                        expected.fetch_add(holders[t], Ordering::Relaxed);
                    }
                    c.send(&set_request("publish", &block));
                    c.expect(b"STORED\r\n");
                    published.fetch_add(BATCH as u64, Ordering::Relaxed);
                    next += every;
                    if let Some(wait) = next.checked_duration_since(Instant::now()) {
                        thread::sleep(wait);
                    }
                }
            })
        })
        .collect();
    for p in pubs {
        p.join().unwrap();
    }
    let seconds = start.elapsed().as_secs_f64();
    during();
    stop.store(true, Ordering::SeqCst);
    for s in subs {
        s.join().unwrap();
    }
    let tally = std::mem::take(&mut *tally.lock().unwrap());
    Figures {
        published: published.load(Ordering::Relaxed),
        expected: expected.load(Ordering::Relaxed),
        tally,
        seconds,
    }
}

fn report(what: &str, f: &mut Figures) {
    f.tally.latencies_us.sort_unstable();
    let l = &f.tally.latencies_us;
    let pct = |q: f64| {
        l.get(((l.len() as f64 * q) as usize).min(l.len().saturating_sub(1)))
            .copied()
            .unwrap_or(0)
    };
    let unique = f.tally.deliveries - f.tally.duplicates;
    println!(
        "{what}: published {} msgs in {:.1} s ({:.0}/s); deliveries {} ({:.0}/s), expected {}, lost {}, duplicates {}, out of order {}; latency p50 {} us, p99 {} us, p99.9 {} us, max {} us",
        f.published,
        f.seconds,
        f.published as f64 / f.seconds,
        f.tally.deliveries,
        f.tally.deliveries as f64 / f.seconds,
        f.expected,
        f.expected.saturating_sub(unique),
        f.tally.duplicates,
        f.tally.out_of_order,
        pct(0.5),
        pct(0.99),
        pct(0.999),
        l.last().copied().unwrap_or(0),
    );
}

#[test]
#[ignore = "load figure: run in release with --ignored --nocapture"]
fn proxy_topology_load_figure() {
    origin();
    let u0 = Node::start(&[]);
    let u1 = Node::start(&[]);
    let ups = vec![
        format!("127.0.0.1:{}", u0.port()),
        format!("127.0.0.1:{}", u1.port()),
    ];
    let pa = Node::start(&[("upstreams", &ups.join(","))]);
    let pb = Node::start(&[("upstreams", &ups.join(","))]);
    let topics: Vec<String> = (0..TOPICS).map(|i| format!("load-{i}")).collect();
    let on_u0 = topics
        .iter()
        .filter(|t| owner_of(t.as_bytes(), &ups) == 0)
        .count();
    println!(
        "topology: 2 upstreams, 2 proxies; {TOPICS} topics ({on_u0} on upstream 0); {PUBLISHERS} publishers on proxy A, \
         {BATCH} entries per request, {} requests/s each; {SUBS_PER_NODE} subscribers on each proxy",
        requests_per_s()
    );
    let mut f = run(&pa, &[&pa, &pb], &topics, || {
        for (i, u) in [&u0, &u1].iter().enumerate() {
            let s = u.stats();
            println!(
                "upstream {i}: curr_connections {} (2 proxies + this stats connection), topics {}, subscriptions {}, messages_delivered {}",
                s["curr_connections"], s["topics"], s["subscriptions"], s["messages_delivered"]
            );
        }
    });
    report("proxies", &mut f);
    assert_eq!(f.tally.duplicates, 0);
    assert_eq!(f.tally.out_of_order, 0);
    assert_eq!(f.expected, f.tally.deliveries);

    let plain = Node::start(&[]);
    let mut f = run(&plain, &[&plain, &plain], &topics, || {});
    report("one plain node", &mut f);
    assert_eq!(f.expected, f.tally.deliveries);
}
