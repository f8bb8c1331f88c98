//! Proxy nodes and a sharded topic space (README, "Scaling out"): several real nodes on
//! loopback, some started with `upstreams`.
//!
//! Which upstream owns a topic is computed with the node's own rendezvous
//! hash (`kraken_actors::proxy::owner_of`), so each test picks topics that
//! land where it needs them, whatever ports the nodes got.
//!
//! Delivery through proxies is asynchronous (a proxy polls its upstreams),
//! so every expectation is a bounded wait; "nothing more arrives" is checked
//! after a positive control, as in the other suites.

mod common;

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use common::*;
use kraken_actors::proxy::owner_of;

/// Nodes in these tests are small: one worker thread each.
const WORKERS: (&str, &str) = ("worker_threads", "1");

/// How long a proxy may take to notice an upstream's return and react.
const RECOVERY_TIMEOUT: Duration = Duration::from_secs(15);

fn start_upstream() -> Node {
    Node::start(&[WORKERS])
}

/// An upstream on a given port (to restart one where it was).
fn start_upstream_on(port: u16) -> Node {
    let port = port.to_string();
    Node::start_with(NodeOptions {
        options: &[("tcp_server_port", &port), WORKERS],
        no_port_arg: true,
        ..Default::default()
    })
}

fn addr_of(node: &Node) -> String {
    format!("127.0.0.1:{}", node.port())
}

fn start_proxy(upstreams: &[String]) -> Node {
    Node::start(&[("upstreams", &upstreams.join(",")), WORKERS])
}

/// The first topic `<prefix>-<n>` that upstream `i` of `upstreams` owns.
fn topic_on(upstreams: &[String], i: usize, prefix: &str) -> String {
    (0..10_000)
        .map(|n| format!("{prefix}-{n}"))
        .find(|t| owner_of(t.as_bytes(), upstreams) == i)
        .expect("some topic lands on every upstream")
}

fn stat(node: &Node, name: &str) -> i64 {
    node.stats()
        .get(name)
        .unwrap_or_else(|| panic!("no stat {name}"))
        .parse()
        .unwrap()
}

/// Polls until messages with every one of `want` payloads have arrived
/// (more may arrive too); returns all that arrived.
#[track_caller]
fn poll_payloads(client: &mut Client, want: &[&str], timeout: Duration) -> Vec<Msg> {
    poll_until(
        client,
        |got| {
            let have: BTreeSet<String> = payloads(got).into_iter().collect();
            want.iter().all(|w| have.contains(*w))
        },
        timeout,
    )
}

/// `(topics, payload)` of each message, sorted, for order-free comparison.
fn sorted(msgs: &[Msg]) -> Vec<(Vec<String>, String)> {
    let mut v: Vec<_> = msgs
        .iter()
        .map(|m| {
            (
                m.topics.clone(),
                String::from_utf8_lossy(&m.payload).into_owned(),
            )
        })
        .collect();
    v.sort();
    v
}

fn pair(topics: &[&str], payload: &str) -> (Vec<String>, String) {
    (
        topics.iter().map(|t| t.to_string()).collect(),
        payload.to_string(),
    )
}

// ---------------------------------------------------------------------------
// 1. Two upstreams, two proxies: a publish reaches everyone, as on one node
// ---------------------------------------------------------------------------

#[test]
fn two_upstreams_two_proxies_deliver_as_one_node_publisher_excluded() {
    let u0 = start_upstream();
    let u1 = start_upstream();
    let ups = vec![addr_of(&u0), addr_of(&u1)];
    let pa = start_proxy(&ups);
    let pb = start_proxy(&ups);
    let ta = topic_on(&ups, 0, "a");
    let tb = topic_on(&ups, 1, "b");
    let (ta, tb) = (ta.as_str(), tb.as_str());

    let mut a_pub = pa.connect();
    let mut a_sub = pa.connect();
    let mut b_sub = pb.connect();
    let mut u0_sub = u0.connect();
    let mut u1_sub = u1.connect();
    a_pub.subscribe(&[ta, tb]);
    a_sub.subscribe(&[ta, tb]);
    b_sub.subscribe(&[ta, tb]);
    u0_sub.subscribe(&[ta]);
    u1_sub.subscribe(&[tb]);

    // Each upstream holds only its own topic: one subscription per proxy.
    assert_eq!(stat(&u0, "topics"), 1);
    assert_eq!(stat(&u0, "subscriptions"), 3);
    assert_eq!(stat(&u1, "topics"), 1);
    assert_eq!(stat(&u1, "subscriptions"), 3);

    // A publish on proxy A reaches A's other client, proxy B's client and
    // the owning upstream's own subscriber; never its publisher.
    a_pub.publish(&[(&[ta], b"m1"), (&[tb], b"m2")]);
    let got = poll_payloads(&mut a_sub, &["m1", "m2"], ASYNC_TIMEOUT);
    assert_eq!(sorted(&got), vec![pair(&[ta], "m1"), pair(&[tb], "m2")]);
    let got = poll_payloads(&mut b_sub, &["m1", "m2"], ASYNC_TIMEOUT);
    assert_eq!(sorted(&got), vec![pair(&[ta], "m1"), pair(&[tb], "m2")]);
    assert_eq!(poll_exactly(&mut u0_sub, 1), vec![Msg::new(&[ta], b"m1")]);
    assert_eq!(poll_exactly(&mut u1_sub, 1), vec![Msg::new(&[tb], b"m2")]);

    // A publish straight on an upstream reaches both proxies' clients,
    // including A's earlier publisher (it did not publish this one).
    let mut u0_pub = u0.connect();
    u0_pub.publish1(ta, b"m3");
    for c in [&mut a_pub, &mut a_sub, &mut b_sub] {
        let got = poll_payloads(c, &["m3"], ASYNC_TIMEOUT);
        assert_eq!(got, vec![Msg::new(&[ta], b"m3")]);
    }
    assert_eq!(poll_exactly(&mut u0_sub, 1), vec![Msg::new(&[ta], b"m3")]);

    // A message on topics of both upstreams: one entry on its own proxy;
    // each upstream gets its part; a subscriber on another proxy holding
    // both may see it as one entry per upstream (the documented limit).
    let mut b_pub = pb.connect();
    b_pub.subscribe(&[ta, tb]);
    b_pub.publish(&[(&[ta, tb], b"m4")]);
    assert_eq!(
        poll_payloads(&mut b_sub, &["m4"], ASYNC_TIMEOUT),
        vec![Msg::new(&[ta, tb], b"m4")]
    );
    assert_eq!(poll_exactly(&mut u0_sub, 1), vec![Msg::new(&[ta], b"m4")]);
    assert_eq!(poll_exactly(&mut u1_sub, 1), vec![Msg::new(&[tb], b"m4")]);
    for c in [&mut a_sub, &mut a_pub] {
        let got = poll_until(
            c,
            |got| {
                let topics: BTreeSet<&String> = got.iter().flat_map(|m| &m.topics).collect();
                topics.len() == 2
            },
            ASYNC_TIMEOUT,
        );
        assert!(
            got.len() <= 2 && got.iter().all(|m| m.payload == b"m4"),
            "{}",
            show_msgs(&got)
        );
    }

    // The publisher still got nothing of its own.
    assert_nothing_arrives(&mut a_pub);
    assert_nothing_arrives(&mut b_pub);
}

// ---------------------------------------------------------------------------
// 2. Fan-in: N clients cost the upstream one connection, one subscription
// ---------------------------------------------------------------------------

#[test]
fn many_clients_on_a_proxy_cost_the_upstream_one_connection_and_one_subscription_per_topic() {
    const N: usize = 25;
    let u = start_upstream();
    let p = start_proxy(&[addr_of(&u)]);
    let mut clients: Vec<Client> = (0..N).map(|_| p.connect()).collect();
    for c in &mut clients {
        c.subscribe(&["x", "y", "z"]);
    }
    // The stats connection itself is the upstream's second connection.
    assert_eq!(stat(&u, "curr_connections"), 2);
    assert_eq!(stat(&u, "topics"), 3);
    assert_eq!(stat(&u, "subscriptions"), 3);
    assert_eq!(stat(&p, "subscriptions"), 3 * N as i64);

    let mut publisher = u.connect();
    publisher.publish1("x", b"hello");
    for c in &mut clients {
        assert_eq!(poll_count(c, 1), vec![Msg::new(&["x"], b"hello")]);
    }
    // Upstream delivered it once, to the proxy.
    assert_eq!(stat(&u, "messages_delivered"), 1);
    assert_eq!(stat(&p, "messages_delivered"), N as i64);

    // The upstream subscription stays while one local subscriber is left,
    // and goes with the last one.
    let mut last = clients.pop().unwrap();
    for mut c in clients {
        c.send(b"quit\r\n");
        c.expect_closed();
    }
    p.wait_for_stat("subscriptions", |v| v == 3);
    assert_eq!(stat(&u, "subscriptions"), 3);
    last.unsubscribe(&["y"]);
    u.wait_for_stat("subscriptions", |v| v == 2);
    last.send(b"quit\r\n");
    last.expect_closed();
    u.wait_for_stat("subscriptions", |v| v == 0);
    // Still one connection from the proxy (plus the publisher's and ours).
    assert_eq!(stat(&u, "curr_connections"), 3);
}

// ---------------------------------------------------------------------------
// 3. Proxies stack
// ---------------------------------------------------------------------------

#[test]
fn proxies_stack_proxy_to_proxy_to_node() {
    let n = start_upstream();
    let p1 = start_proxy(&[addr_of(&n)]);
    let p2 = start_proxy(&[addr_of(&p1)]);
    let mut on_n = n.connect();
    let mut on_p1 = p1.connect();
    let mut on_p2 = p2.connect();
    let mut pub_p2 = p2.connect();
    for c in [&mut on_n, &mut on_p1, &mut on_p2, &mut pub_p2] {
        c.subscribe(&["t"]);
    }
    // on_n, p1's link and the stats connection.
    assert_eq!(stat(&n, "curr_connections"), 3);
    assert_eq!(stat(&n, "subscriptions"), 2); // on_n and p1's link
    assert_eq!(stat(&p1, "subscriptions"), 2); // on_p1 and p2's link

    pub_p2.publish1("t", b"from-p2");
    for c in [&mut on_n, &mut on_p1, &mut on_p2] {
        assert_eq!(
            poll_payloads(c, &["from-p2"], ASYNC_TIMEOUT),
            vec![Msg::new(&["t"], b"from-p2")]
        );
    }
    let mut pub_n = n.connect();
    pub_n.publish1("t", b"from-n");
    for c in [&mut on_p1, &mut on_p2, &mut pub_p2] {
        assert_eq!(
            poll_payloads(c, &["from-n"], ASYNC_TIMEOUT),
            vec![Msg::new(&["t"], b"from-n")]
        );
    }
    assert_eq!(
        poll_exactly(&mut on_n, 1),
        vec![Msg::new(&["t"], b"from-n")]
    );
    // Nothing echoed back anywhere.
    assert_nothing_arrives(&mut pub_p2);
    assert_nothing_arrives(&mut on_p2);
    assert_nothing_arrives(&mut on_p1);

    // Retro through two proxies.
    wait_for_next_second();
    let mut late = p2.connect();
    late.register();
    pub_n.publish1("t", b"after-register");
    assert_eq!(
        poll_payloads(&mut on_p2, &["after-register"], ASYNC_TIMEOUT).len(),
        1
    );
    late.subscribe(&["t"]);
    let mut got = poll_payloads(&mut late, &["after-register"], ASYNC_TIMEOUT);
    got.extend(collect_for(&mut late, QUIET_PERIOD));
    assert!(
        payloads(&got).iter().all(|p| p == "after-register"),
        "{}",
        show_msgs(&got)
    );
}

// ---------------------------------------------------------------------------
// 4. Retro through a proxy
// ---------------------------------------------------------------------------

#[test]
fn register_and_retro_subscribe_through_a_proxy_give_what_the_upstream_gives() {
    let u = start_upstream();
    let p = start_proxy(&[addr_of(&u)]);
    let p2 = start_proxy(&[addr_of(&u)]);
    let mut witness = u.connect();
    witness.subscribe(&["t"]);
    let mut on_u = u.connect();
    let mut on_p = p.connect();
    let mut on_p2 = p2.connect();

    on_u.publish1("t", b"old");
    expect_entries(&mut witness, b"MESSAGE t 3\r\nold\r\n");
    let horizon = wait_for_next_second().max(u.fresh_horizon());

    let mut registered = p.connect();
    registered.register();
    on_u.publish1("t", b"n1");
    on_p.publish1("t", b"n2");
    on_p2.publish1("t", b"n3");
    registered.publish1("t", b"own");
    poll_payloads(&mut witness, &["n1", "n2", "n3", "own"], ASYNC_TIMEOUT);

    let want: BTreeSet<String> = ["n1", "n2", "n3"].iter().map(|s| s.to_string()).collect();
    let mut direct = u.connect();
    direct.send(&retro_request(&horizon.to_string(), &["t"]));
    direct.expect(b"STORED\r\n");
    let from_upstream: BTreeSet<String> =
        payloads(&poll_count(&mut direct, 4)).into_iter().collect();
    assert_eq!(
        from_upstream,
        want.iter().cloned().chain(["own".to_string()]).collect()
    );

    // register + subscribe through the proxy: every message after the
    // register (at least once), none before it, not its own.
    registered.subscribe(&["t"]);
    let got = poll_payloads(&mut registered, &["n1", "n2", "n3"], ASYNC_TIMEOUT);
    let got: BTreeSet<String> = payloads(&got).into_iter().collect();
    assert_eq!(got, want);

    // retro_subscribe through the proxy: what the upstream gives, at least once.
    let mut retro = p.connect();
    retro.send(&retro_request(&horizon.to_string(), &["t"]));
    retro.expect(b"STORED\r\n");
    let got = poll_payloads(&mut retro, &["n1", "n2", "n3", "own"], ASYNC_TIMEOUT);
    assert!(
        !payloads(&got).contains(&"old".to_string()),
        "{}",
        show_msgs(&got)
    );

    // A horizon before the upstream started: NOT_FOUND there and here.
    direct.send(&retro_request("1", &["t"]));
    direct.expect(b"NOT_FOUND\r\n");
    let mut too_old = p.connect();
    too_old.send(&retro_request("1", &["t"]));
    too_old.expect(b"NOT_FOUND\r\n");
    // ... and the subscription took effect anyway.
    on_u.publish1("t", b"live");
    assert_eq!(
        poll_payloads(&mut too_old, &["live"], ASYNC_TIMEOUT).last(),
        Some(&Msg::new(&["t"], b"live"))
    );
}

// ---------------------------------------------------------------------------
// 5. An outage of the same upstream process: recovered, nothing lost
// ---------------------------------------------------------------------------

/// A TCP relay on loopback whose connections the test can cut, standing in
/// for a network failure between a proxy and its upstream.
struct Relay {
    addr: SocketAddr,
    open: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
    conns: Arc<Mutex<Vec<TcpStream>>>,
    accept: Option<thread::JoinHandle<()>>,
}

impl Relay {
    fn start(to: SocketAddr) -> Relay {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let open = Arc::new(AtomicBool::new(true));
        let stop = Arc::new(AtomicBool::new(false));
        let conns: Arc<Mutex<Vec<TcpStream>>> = Arc::default();
        let (o, s, c) = (open.clone(), stop.clone(), conns.clone());
        let accept = thread::spawn(move || {
            for inbound in listener.incoming() {
                if s.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(inbound) = inbound else { continue };
                if !o.load(Ordering::SeqCst) {
                    let _ = inbound.shutdown(Shutdown::Both);
                    continue;
                }
                let Ok(outbound) = TcpStream::connect(to) else {
                    continue;
                };
                let mut conns = c.lock().unwrap();
                for (from, into) in [(&inbound, &outbound), (&outbound, &inbound)] {
                    let (mut from, mut into) =
                        (from.try_clone().unwrap(), into.try_clone().unwrap());
                    thread::spawn(move || {
                        let mut buf = [0u8; 16 * 1024];
                        while let Ok(n) = from.read(&mut buf) {
                            if n == 0 || into.write_all(&buf[..n]).is_err() {
                                break;
                            }
                        }
                        let _ = into.shutdown(Shutdown::Both);
                        let _ = from.shutdown(Shutdown::Both);
                    });
                }
                conns.push(inbound);
                conns.push(outbound);
            }
        });
        Relay {
            addr,
            open,
            stop,
            conns,
            accept: Some(accept),
        }
    }

    /// Breaks every relayed connection and refuses new ones.
    fn cut(&self) {
        self.open.store(false, Ordering::SeqCst);
        for c in self.conns.lock().unwrap().drain(..) {
            let _ = c.shutdown(Shutdown::Both);
        }
    }

    fn restore(&self) {
        self.open.store(true, Ordering::SeqCst);
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        self.cut();
        let _ = TcpStream::connect(self.addr);
        if let Some(t) = self.accept.take() {
            let _ = t.join();
        }
    }
}

/// Publishes `"<i>"` for i in 0..n on `topic`, `gap` apart, calling
/// `at(i)` before each (to act mid-stream).
fn publish_stream(
    client: &mut Client,
    topic: &str,
    n: usize,
    gap: Duration,
    mut at: impl FnMut(usize),
) {
    for i in 0..n {
        at(i);
        client.publish1(topic, i.to_string().as_bytes());
        thread::sleep(gap);
    }
}

/// The received sequence numbers with repeats removed (first occurrence
/// kept), and how many repeats there were.
fn first_occurrences(msgs: &[Msg]) -> (Vec<usize>, usize) {
    let mut seen = BTreeSet::new();
    let mut order = Vec::new();
    for m in msgs {
        let i: usize = String::from_utf8_lossy(&m.payload)
            .parse()
            .expect("a sequence number");
        if seen.insert(i) {
            order.push(i);
        }
    }
    let repeats = msgs.len() - order.len();
    (order, repeats)
}

#[test]
fn an_outage_of_the_same_upstream_is_recovered_by_retro_with_nothing_lost_and_order_kept() {
    const N: usize = 240;
    let u = start_upstream();
    let relay = Relay::start(u.addr());
    // (With one upstream every topic is its, so the two proxies may name
    // it differently.)
    let pa = start_proxy(&[relay.addr.to_string()]);
    let pb = start_proxy(&[addr_of(&u)]);
    let mut sub = pa.connect();
    sub.subscribe(&["s"]);
    let mut publisher = pb.connect();
    // A recovery reaches back to the whole second of the last contact; one
    // that falls in the upstream's first second is refused (NOT_FOUND).
    u.fresh_horizon();

    // Poll the subscriber in the background while the stream runs.
    let collected = Arc::new(Mutex::new(Vec::new()));
    let done = Arc::new(AtomicBool::new(false));
    let poller = {
        let (collected, done) = (collected.clone(), done.clone());
        thread::spawn(move || {
            let deadline = Instant::now() + Duration::from_secs(30);
            while !done.load(Ordering::SeqCst) && Instant::now() < deadline {
                let got = sub.poll();
                collected.lock().unwrap().extend(got);
                thread::sleep(Duration::from_millis(5));
            }
            sub
        })
    };
    let mut cut_at = None;
    publish_stream(&mut publisher, "s", N, Duration::from_millis(4), |i| {
        if i == N / 3 {
            relay.cut();
            cut_at = Some(Instant::now());
        }
        if i == N / 2 {
            relay.restore();
        }
    });
    let deadline = Instant::now() + RECOVERY_TIMEOUT;
    loop {
        let (order, _) = first_occurrences(&collected.lock().unwrap());
        if order.len() >= N || Instant::now() >= deadline {
            break;
        }
        thread::sleep(Duration::from_millis(20));
    }
    done.store(true, Ordering::SeqCst);
    let mut sub = poller.join().unwrap();
    let msgs = collected.lock().unwrap().clone();
    let (order, repeats) = first_occurrences(&msgs);
    assert_eq!(
        order,
        (0..N).collect::<Vec<_>>(),
        "lost or reordered; {repeats} repeats"
    );
    assert!(cut_at.is_some());
    // Repeats are what the recovery replayed from the last contact's
    // second: fewer than what was published in ~2 s.
    assert!(repeats < N, "{repeats} repeats");
    assert!(pa.log_contains("upstream lost"));
    assert!(pa.log_contains("recovered what it missed"));
    assert_eq!(stat(&pa, "upstream_unrecoverable"), 0);
    // The subscriber was never closed.
    sub.expect_open_and_empty();
}

// ---------------------------------------------------------------------------
// 6. An upstream killed and restarted: its clients are closed, others not
// ---------------------------------------------------------------------------

#[test]
fn a_restarted_upstream_closes_the_clients_of_its_topics_and_only_them() {
    const N: usize = 150;
    let u0 = start_upstream();
    let u1 = start_upstream();
    let u0_port = u0.port();
    let ups = vec![addr_of(&u0), addr_of(&u1)];
    let p = start_proxy(&ups);
    let ta = topic_on(&ups, 0, "a");
    let tb = topic_on(&ups, 1, "b");
    let (ta, tb) = (ta.as_str(), tb.as_str());

    let mut on_a = p.connect();
    on_a.subscribe(&[ta]);
    let mut on_b = p.connect();
    on_b.subscribe(&[tb]);
    let mut on_u1 = u1.connect();
    on_u1.subscribe(&[tb]);
    let mut publisher = p.connect();

    // Kill u0 mid-stream of publishes to tb (owned by u1).
    let mut u0 = Some(u0);
    publish_stream(&mut publisher, tb, N, Duration::from_millis(2), |i| {
        if i == N / 3 {
            drop(u0.take());
        }
    });
    assert!(u0.is_none());
    // The other upstream's topics kept flowing, complete and in order.
    for c in [&mut on_b, &mut on_u1] {
        let got = poll_until(c, |m| m.len() >= N, ASYNC_TIMEOUT);
        let (order, repeats) = first_occurrences(&got);
        assert_eq!(order, (0..N).collect::<Vec<_>>());
        assert_eq!(repeats, 0);
    }
    // Local delivery of u0's topic does not wait for u0.
    publisher.publish1(ta, b"local");
    assert_eq!(poll_count(&mut on_a, 1), vec![Msg::new(&[ta], b"local")]);

    // u0 comes back as a new process: nothing can prove what on_a missed.
    let u0 = start_upstream_on(u0_port);
    let got = on_a.wait_closed(RECOVERY_TIMEOUT);
    assert!(
        String::from_utf8_lossy(&got).contains("SERVER_ERROR upstream lost"),
        "closed with \"{}\"",
        esc(&got)
    );
    assert!(p.log_contains("upstream restarted"));
    assert_eq!(stat(&p, "upstream_clients_closed"), 1);
    on_b.expect_open_and_empty();

    // The client reconnects and is served by the new u0.
    let mut again = p.connect();
    again.subscribe(&[ta]);
    let mut on_u0 = u0.connect();
    on_u0.publish1(ta, b"back");
    assert_eq!(
        poll_payloads(&mut again, &["back"], ASYNC_TIMEOUT),
        vec![Msg::new(&[ta], b"back")]
    );
}

// ---------------------------------------------------------------------------
// 7. A stalled upstream never stalls local delivery
// ---------------------------------------------------------------------------

/// SIGSTOPs a process; SIGCONTs it when dropped.
struct Stopped(u32);

impl Stopped {
    fn new(pid: u32) -> Stopped {
        // SAFETY: sending a signal to a child process we own.
        assert_eq!(unsafe { libc::kill(pid as libc::pid_t, libc::SIGSTOP) }, 0);
        Stopped(pid)
    }
}

impl Drop for Stopped {
    fn drop(&mut self) {
        // SAFETY: as above.
        unsafe { libc::kill(self.0 as libc::pid_t, libc::SIGCONT) };
    }
}

#[test]
fn a_stalled_upstream_does_not_stall_local_delivery_and_gets_the_backlog_later() {
    let u = start_upstream();
    let p = start_proxy(&[addr_of(&u)]);
    let mut local_sub = p.connect();
    local_sub.subscribe(&["t"]);
    let mut on_u = u.connect();
    on_u.subscribe(&["t"]);
    let mut publisher = p.connect();

    let stopped = Stopped::new(u.pid());
    let t0 = Instant::now();
    for i in 0..20 {
        publisher.publish1("t", format!("{i}").as_bytes());
    }
    let got = poll_count(&mut local_sub, 20);
    assert_eq!(got.len(), 20);
    assert!(
        t0.elapsed() < Duration::from_secs(2),
        "local delivery took {:?}",
        t0.elapsed()
    );
    assert!(stat(&p, "upstream_backlog_bytes") > 0);
    drop(stopped);

    // Once the upstream runs again the forwarded backlog reaches it, in order.
    let got = poll_until(&mut on_u, |m| m.len() >= 20, ASYNC_TIMEOUT);
    let (order, _) = first_occurrences(&got);
    assert_eq!(order, (0..20).collect::<Vec<_>>());
    p.wait_for_stat("upstream_backlog_bytes", |v| v == 0);
}

#[test]
fn a_full_upstream_backlog_refuses_publishes_instead_of_growing_or_dropping() {
    let u = start_upstream();
    // A small max_queue_bytes bounds the forward backlog too.
    let p = Node::start(&[
        ("upstreams", &addr_of(&u)),
        ("max_queue_bytes", "4096"),
        WORKERS,
    ]);
    let mut on_u = u.connect();
    on_u.subscribe(&["t"]);
    let mut publisher = p.connect();
    let payload = [b'x'; 200];

    let stopped = Stopped::new(u.pid());
    let mut accepted = 0;
    let refused = loop {
        publisher.send(&publish_request(&[(&["t"], &payload)]));
        let line = publisher.read_line();
        if line == b"STORED\r\n" {
            accepted += 1;
            assert!(accepted < 100, "never refused");
            continue;
        }
        break String::from_utf8_lossy(&line).into_owned();
    };
    assert_eq!(
        refused,
        "SERVER_ERROR upstream backlog full: publish not accepted, retry\r\n"
    );
    assert!(accepted >= 10, "refused after only {accepted}");
    assert!(stat(&p, "upstream_refused_publishes") >= 1);
    drop(stopped);

    // Everything accepted reaches the upstream; then publishes are accepted again.
    assert_eq!(
        poll_until(&mut on_u, |m| m.len() >= accepted, ASYNC_TIMEOUT).len(),
        accepted
    );
    p.wait_for_stat("upstream_backlog_bytes", |v| v == 0);
    publisher.publish1("t", b"again");
    assert_eq!(poll_payloads(&mut on_u, &["again"], ASYNC_TIMEOUT).len(), 1);
}
