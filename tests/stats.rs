//! Watching a node (`docs/PROTOCOL.md` §9): `stats` answers memcached-style `STAT` lines,
//! `version` answers `VERSION <v>`, both usable from stock memcached
//! tooling; and the log has one line per notable event.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::*;

#[track_caller]
fn stat(stats: &HashMap<String, String>, name: &str) -> i64 {
    stats
        .get(name)
        .unwrap_or_else(|| panic!("no STAT {name}: {stats:?}"))
        .parse()
        .unwrap_or_else(|_| panic!("STAT {name} is not a number: {stats:?}"))
}

#[test]
fn the_memcache_crate_reads_version_and_stats() {
    let node = Node::start(&[]);
    let c = node.memcache_client();
    let url = format!("memcache://127.0.0.1:{}?protocol=ascii", node.port());
    assert_eq!(
        c.version().expect("version"),
        [(url, env!("CARGO_PKG_VERSION").to_string())]
    );
    // memcache 0.21's ASCII `stats` parser stops at the first line and so
    // returns an empty map, for memcached itself too; that the call succeeds
    // is what it can show. The STAT lines are checked byte by byte below.
    let per_server = c.stats().expect("stats");
    assert_eq!(per_server.len(), 1);
    // The client (its pool replaces the connection) keeps working.
    c.set("subscribe", "t", 0).expect("subscribe");
    assert_eq!(c.get::<Vec<u8>>("messages").expect("get"), None);
    assert!(c.version().is_ok());
}

#[test]
fn version_answers_the_version_line() {
    let node = Node::start(&[]);
    let mut c = node.connect();
    c.send(b"version\r\n");
    c.expect(format!("VERSION {}\r\n", env!("CARGO_PKG_VERSION")).as_bytes());
    c.expect_open_and_empty();
}

#[test]
fn stats_counts_every_documented_counter() {
    let node = Node::start(&[("max_tcp_clients", "4"), ("max_queue_messages", "2")]);
    let mut c = node.connect();
    let s = c.stats();
    for name in [
        "pid",
        "uptime",
        "time",
        "version",
        "curr_connections",
        "total_connections",
        "refused_connections",
        "max_connections",
        "topics",
        "subscriptions",
        "messages_published",
        "messages_delivered",
        "slow_consumers_closed",
        "shard_restarts",
        "listener_restarts",
        "client_failures",
    ] {
        assert!(s.contains_key(name), "no STAT {name}: {s:?}");
    }
    assert_eq!(s["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(stat(&s, "pid"), node.pid() as i64);
    assert_eq!(stat(&s, "curr_connections"), 1);
    assert_eq!(stat(&s, "max_connections"), 4);
    assert_eq!(stat(&s, "topics"), 0);
    assert_eq!(stat(&s, "shard_restarts"), 0);
    let time = stat(&s, "time");
    assert!((time - unix_now()).abs() <= 2, "time {time}");

    let mut a = node.connect();
    a.subscribe(&["x", "y"]);
    let mut b = node.connect();
    b.subscribe(&["x"]);
    let mut slow = node.connect(); // the 4th client: the limit
    slow.subscribe(&["z"]);
    let mut refused = Client::connect(node.addr());
    refused.expect(b"SERVER_ERROR Too many clients\r\n");
    refused.expect_closed();

    let s = c.stats();
    assert_eq!(stat(&s, "curr_connections"), 4);
    assert_eq!(stat(&s, "total_connections"), 4);
    assert_eq!(stat(&s, "refused_connections"), 1);
    assert_eq!(stat(&s, "topics"), 3);
    assert_eq!(stat(&s, "subscriptions"), 4);

    // One message to two subscribers, one to one: 2 published, 3 delivered.
    c.publish1("x", b"1");
    c.publish1("y", b"2");
    // `slow` never polls: past max_queue_messages it is closed.
    for i in 0..3 {
        c.publish1("z", format!("{i}").as_bytes());
    }
    let closed = slow.wait_closed(REPLY_TIMEOUT);
    assert!(
        closed.is_empty() || closed.starts_with(b"SERVER_ERROR slow consumer"),
        "{}",
        esc(&closed)
    );
    // On this connection: a new one could be refused until `slow`'s slot is freed.
    let deadline = std::time::Instant::now() + ASYNC_TIMEOUT;
    let s = loop {
        let s = c.stats();
        // The slow consumer's subscriptions leave the shards just after
        // its connection is counted out: wait for both.
        if stat(&s, "curr_connections") == 3
            && stat(&s, "subscriptions") == 3
            && stat(&s, "topics") == 2
        {
            break s;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "slow consumer not removed: {s:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(stat(&s, "messages_published"), 5);
    assert_eq!(stat(&s, "messages_delivered"), 3 + 3);
    assert_eq!(stat(&s, "slow_consumers_closed"), 1);
    assert_eq!(stat(&s, "topics"), 2);
    assert_eq!(stat(&s, "subscriptions"), 3);
    assert!(stat(&s, "uptime") >= 0);
}

/// One line per notable event (README, "What the log says"); failures and restarts are in
/// `supervision.rs`, shutdown in `lifecycle.rs`.
#[test]
fn the_log_says_what_happened() {
    let node = Node::start(&[
        ("max_tcp_clients", "3"),
        ("max_queue_messages", "1"),
        ("router_min_fanout_to_warn", "2"),
        ("router_min_publish_to_topics_to_warn", "3"),
    ]);
    // Start-up: the effective configuration, and where each value came from.
    assert!(node.log_contains("starting kraken"));
    assert!(node.log_contains("max_tcp_clients=3 (command line)"));
    assert!(node.log_contains("num_router_shards=4 ("));
    assert!(node.log_contains("accepting connections"));
    assert!(node.log_contains("control socket ready"));

    let mut a = node.connect();
    a.subscribe(&["t", "u", "v"]);
    let mut b = node.connect();
    b.subscribe(&["t"]);
    let mut c = node.connect();
    // A refused client.
    let mut refused = Client::connect(node.addr());
    refused.expect(b"SERVER_ERROR Too many clients\r\n");
    assert!(node.log_contains("refused client: too many clients"));
    // A wide fan-out, and a message naming many topics.
    c.publish1("t", b"wide");
    assert!(node.log_contains("message fanned out widely"));
    c.publish(&[(&["t", "u", "v"], b"many")]);
    assert!(node.log_contains("message names many topics"));
    // `a` and `b` hold a message each now; one more overflows both.
    c.publish1("t", b"overflow");
    assert!(node.log_contains("slow consumer"));
    assert!(node
        .log_lines()
        .iter()
        .any(|l| l.contains("slow consumer") && l.contains("peer")));
}
