//! Micro-benchmarks of the routing hot path: the router-shard pool and the
//! client inboxes, without sockets or actors (those are `kraken-bench`'s).
//!
//! Run: `cargo bench -p kraken-actors` (about 25 s). Criterion keeps the
//! last run in `target/criterion` and prints the change against it, so run
//! it once on the base commit and once on yours to spot a regression. The
//! defaults are short (see [`config`]); for steadier figures pass e.g.
//! `-- --measurement-time 10 --sample-size 50`. `cargo test --benches` runs
//! every benchmark once, untimed, as a smoke test.
//!
//! Every router has the node's defaults: 4 shards, 10,000 retro messages per
//! shard. Payloads are 64 bytes.
//!
//! What is measured:
//! - `publish/subscribers/{1,200,10000}`: one message to one topic with that
//!   many subscribers (throughput = deliveries). Inboxes are emptied with
//!   `take()` every [`DRAIN_EVERY`] publishes, outside the timed part, as
//!   polling clients empty them.
//! - `publish/3_shards_x200`: one message naming 3 topics on 3 different
//!   shards, each with 200 subscribers of its own (600 deliveries).
//! - `churn/subscribe_unsubscribe_100`: one client subscribes to 100 topics
//!   nobody holds and unsubscribes from them (one request each), while
//!   another client holds 10,000 other topics.
//! - `poll/take_encode_16`: a `get messages` finding 16 queued messages
//!   (queued by publishes, untimed): `take()` and writing the answer into
//!   the connection's reused output buffer, as the connection does
//!   (`message::encode_poll`).

use std::hint::black_box;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use criterion::{criterion_group, criterion_main, Bencher, BenchmarkId, Criterion, Throughput};
use kraken_actors::client::ClientShared;
use kraken_actors::message::encode_poll;
use kraken_actors::router::{Registry, Router};

/// The node's default `num_router_shards`.
const SHARDS: usize = 4;
/// The node's default `messages_stored_per_router_shard`.
const RETRO: usize = 10_000;
/// Publishes between two emptyings of the inboxes (untimed).
const DRAIN_EVERY: u64 = 16;
/// Messages a benchmarked poll finds.
const POLLED: usize = 16;
/// Clients polled per timed batch in `poll`.
const POLLERS: usize = 64;
/// The publisher's id; no subscriber has it.
const PUBLISHER: u64 = 0;

/// Short runs, so that the whole `cargo bench` of both crates takes about a
/// minute; command-line options override these. Runs this short differ by
/// 5-15% (up to 25%) from one to the next on the 2-core development VM, so
/// changes under 5% are reported as noise rather than as a regression.
fn config() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .sample_size(20)
        .noise_threshold(0.05)
}

fn peer() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 40_000))
}

/// A client registered with `router` whose inbox never overflows here.
fn client(router: &Router, id: u64) -> Arc<ClientShared> {
    let c = Arc::new(ClientShared::new(id, peer(), usize::MAX, usize::MAX));
    router.registry.insert(c.clone());
    c
}

fn router() -> Router {
    Router::new(SHARDS, RETRO, Arc::new(Registry::default()))
}

fn payload() -> Bytes {
    Bytes::from(vec![b'x'; 64])
}

/// A topic shaped like the ones Asana's clients use.
fn topic(i: usize) -> Bytes {
    Bytes::from(format!("ws:1234567890:proj:{i:010}"))
}

/// Times `iters` publishes of `topics`, emptying every client's inbox every
/// [`DRAIN_EVERY`] publishes outside the timed part.
fn bench_publish(
    b: &mut Bencher,
    router: &Router,
    topics: &[Bytes],
    clients: &[Arc<ClientShared>],
) {
    let payload = payload();
    let expected = clients.len();
    b.iter_custom(|iters| {
        let mut timed = Duration::ZERO;
        let mut left = iters;
        while left > 0 {
            let batch = left.min(DRAIN_EVERY);
            let start = Instant::now();
            for _ in 0..batch {
                let published = router.publish(PUBLISHER, topics.to_vec(), payload.clone());
                black_box(published);
            }
            timed += start.elapsed();
            left -= batch;
            for c in clients {
                let taken = c.take().expect("an inbox never overflows here");
                debug_assert_eq!(taken.len(), batch as usize);
                black_box(taken);
            }
        }
        debug_assert_eq!(
            router
                .publish(PUBLISHER, topics.to_vec(), payload.clone())
                .recipients,
            expected
        );
        clients.iter().for_each(|c| drop(c.take()));
        timed
    });
}

fn publish(c: &mut Criterion) {
    let mut group = c.benchmark_group("publish");
    for subscribers in [1usize, 200, 10_000] {
        let router = router();
        let topics = [topic(0)];
        let clients: Vec<_> = (1..=subscribers as u64)
            .map(|id| {
                let c = client(&router, id);
                router.subscribe(&c, &topics, None);
                c
            })
            .collect();
        let check = router.publish(PUBLISHER, topics.to_vec(), payload());
        assert_eq!(check.recipients, subscribers);
        assert_eq!(check.overflowed, 0);
        clients.iter().for_each(|c| drop(c.take()));
        group.throughput(Throughput::Elements(subscribers as u64));
        group.bench_function(BenchmarkId::new("subscribers", subscribers), |b| {
            bench_publish(b, &router, &topics, &clients)
        });
    }

    // Three topics on three different shards, 200 subscribers each.
    let router = router();
    let mut topics: Vec<Bytes> = Vec::new();
    for t in (0..).map(topic) {
        if topics
            .iter()
            .all(|u| router.shard_of(u) != router.shard_of(&t))
        {
            topics.push(t);
            if topics.len() == 3 {
                break;
            }
        }
    }
    let mut clients = Vec::new();
    for (i, t) in topics.iter().enumerate() {
        for k in 0..200u64 {
            let c = client(&router, 1 + i as u64 * 200 + k);
            router.subscribe(&c, std::slice::from_ref(t), None);
            clients.push(c);
        }
    }
    let check = router.publish(PUBLISHER, topics.clone(), payload());
    assert_eq!(check.recipients, 600);
    clients.iter().for_each(|c| drop(c.take()));
    group.throughput(Throughput::Elements(600));
    group.bench_function("3_shards_x200", |b| {
        bench_publish(b, &router, &topics, &clients)
    });
    group.finish();
}

fn churn(c: &mut Criterion) {
    let mut group = c.benchmark_group("churn");
    let router = router();
    let background = client(&router, 1);
    let held: Vec<Bytes> = (0..10_000).map(|i| topic(1_000_000 + i)).collect();
    router.subscribe(&background, &held, None);
    let churner = client(&router, 2);
    let fresh: Vec<Bytes> = (0..100).map(topic).collect();
    let before = router.counts();
    router.subscribe(&churner, &fresh, None);
    assert_eq!(router.counts().0, before.0 + 100);
    router.unsubscribe(&churner, &fresh);
    assert_eq!(router.counts(), before);
    group.throughput(Throughput::Elements(fresh.len() as u64));
    group.bench_function("subscribe_unsubscribe_100", |b| {
        b.iter(|| {
            black_box(router.subscribe(&churner, &fresh, None));
            router.unsubscribe(&churner, &fresh);
        })
    });
    group.finish();
}

fn poll(c: &mut Criterion) {
    let mut group = c.benchmark_group("poll");
    let router = router();
    let topics = [topic(0)];
    let clients: Vec<_> = (1..=POLLERS as u64)
        .map(|id| {
            let c = client(&router, id);
            router.subscribe(&c, &topics, None);
            c
        })
        .collect();
    let payload = payload();
    // Queues `POLLED` messages for every poller (untimed).
    let fill = || {
        for _ in 0..POLLED {
            router.publish(PUBLISHER, topics.to_vec(), payload.clone());
        }
    };
    // The connection's output buffer is reused from poll to poll.
    let mut out = BytesMut::with_capacity(64 * 1024);
    // What the connection does for `get messages`.
    let get_messages = |c: &ClientShared, out: &mut BytesMut| {
        let items = c.take().expect("an inbox never overflows here");
        encode_poll(&items, out);
        black_box(&*out);
        out.clear();
        items.len()
    };
    fill();
    let entry = format!(
        "MESSAGE {} 64\r\n",
        std::str::from_utf8(&topics[0]).unwrap()
    );
    let items = clients[0].take().expect("an inbox never overflows here");
    encode_poll(&items, &mut out);
    assert_eq!(items.len(), POLLED);
    assert_eq!(
        out.windows(entry.len())
            .filter(|w| *w == entry.as_bytes())
            .count(),
        POLLED
    );
    assert!(out.starts_with(b"VALUE messages 0 ") && out.ends_with(b"END\r\n"));
    out.clear();
    clients.iter().for_each(|c| drop(c.take()));
    group.throughput(Throughput::Elements(POLLED as u64));
    group.bench_function(format!("take_encode_{POLLED}"), |b| {
        b.iter_custom(|iters| {
            let mut timed = Duration::ZERO;
            let mut left = iters;
            while left > 0 {
                let batch = &clients[..left.min(POLLERS as u64) as usize];
                fill();
                let start = Instant::now();
                for c in batch {
                    black_box(get_messages(c, &mut out));
                }
                timed += start.elapsed();
                left -= batch.len() as u64;
                // Pollers outside the batch got the messages too.
                clients[batch.len()..].iter().for_each(|c| drop(c.take()));
            }
            timed
        })
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = config();
    targets = publish, churn, poll
}
criterion_main!(benches);
