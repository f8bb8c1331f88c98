//! Supervision (SPEC §5), each failure injected into the real binary
//! (`-kraken fault_injection true`, off by default) and its outcome observed
//! over TCP:
//!
//! - a router shard's panic restarts that shard with its routing table
//!   rebuilt from the client queues: every client keeps every subscription
//!   and keeps receiving; only that shard's retro buffer is lost;
//! - a connection's or a client queue's panic ends that client cleanly and
//!   touches no other;
//! - a listener's panic restarts the listener;
//! - more than `max_restarts` restarts in `max_restart_seconds` escalate:
//!   the node logs why and exits non-zero for its service manager.

mod common;

use std::time::Duration;

use common::*;
use kraken_actors::router::shard_of;

const SHARD_PANIC: &str = "__kraken_fault_shard_panic__";
const CONNECTION_PANIC: &str = "__kraken_fault_connection_panic__";
const QUEUE_PANIC: &str = "__kraken_fault_queue_panic__";
const LISTENER_PANIC: &str = "__kraken_fault_listener_panic__";
const SHARDS: usize = 4;

fn faulty_node(extra: &[(&str, &str)]) -> Node {
    let mut options = vec![("fault_injection", "true"), ("num_router_shards", "4")];
    options.extend_from_slice(extra);
    Node::start(&options)
}

/// One topic per shard, `topics[i]` on shard `i`.
fn topic_per_shard() -> Vec<String> {
    (0..SHARDS)
        .map(|shard| {
            (0..)
                .map(|n| format!("topic{n}"))
                .find(|t| shard_of(t.as_bytes(), SHARDS) == shard)
                .unwrap()
        })
        .collect()
}

/// Publishes the fault topic; the publish answers SERVER_ERROR.
#[track_caller]
fn inject_shard_panic(publisher: &mut Client) {
    publisher.send(&publish_request(&[(&[SHARD_PANIC], b"boom")]));
    publisher.expect_line_starting("SERVER_ERROR ");
}

#[track_caller]
fn dump_topics(node: &Node) -> String {
    let out = node.ctl(&["dump_topics"]);
    assert_eq!(out.code, Some(0), "{}", out.text());
    out.stdout
}

/// Waits (bounded) until `cond` holds.
#[track_caller]
fn wait_until(what: &str, cond: impl Fn() -> bool) {
    let deadline = std::time::Instant::now() + ASYNC_TIMEOUT;
    while !cond() {
        assert!(
            std::time::Instant::now() < deadline,
            "{what}: not within {ASYNC_TIMEOUT:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_router_shard_panic_restarts_that_shard_and_every_client_keeps_every_subscription() {
    let node = faulty_node(&[]);
    let topics = topic_per_shard();
    let t: Vec<&str> = topics.iter().map(String::as_str).collect();
    let faulty = shard_of(SHARD_PANIC.as_bytes(), SHARDS);
    let horizon = node.fresh_horizon();

    // `all` holds a topic on every shard; `one` only the faulty shard's.
    let mut all = node.connect();
    all.subscribe(&t);
    let mut one = node.connect();
    one.subscribe(&[t[faulty]]);
    let mut publisher = node.connect();
    for topic in &t {
        publisher.publish1(topic, format!("before {topic}").as_bytes());
    }
    assert_eq!(poll_exactly(&mut all, SHARDS).len(), SHARDS);
    assert_eq!(
        payloads(&poll_exactly(&mut one, 1)),
        [format!("before {}", t[faulty])]
    );
    let topics_before = dump_topics(&node);

    inject_shard_panic(&mut publisher);

    assert_eq!(node.wait_for_stat("shard_restarts", |n| n >= 1), 1);
    assert!(node.log_contains("router shard failed and was restarted"));
    // The routing table is back as it was.
    assert_eq!(dump_topics(&node), topics_before);
    // Everyone keeps receiving on every shard, the publisher's connection included.
    for topic in &t {
        publisher.publish1(topic, format!("after {topic}").as_bytes());
    }
    let mut got = payloads(&poll_exactly(&mut all, SHARDS));
    got.sort();
    let mut want: Vec<String> = t.iter().map(|topic| format!("after {topic}")).collect();
    want.sort();
    assert_eq!(got, want);
    assert_eq!(
        payloads(&poll_exactly(&mut one, 1)),
        [format!("after {}", t[faulty])]
    );

    // Only the faulty shard's retro buffer is gone: a retro request that
    // needs it answers NOT_FOUND (and still subscribes); another shard's
    // replays as before.
    let other = (faulty + 1) % SHARDS;
    let mut late = node.connect();
    late.send(&retro_request(&horizon.to_string(), &[t[faulty]]));
    late.expect(b"NOT_FOUND\r\n");
    publisher.publish1(t[faulty], b"live");
    assert_eq!(payloads(&poll_exactly(&mut late, 1)), ["live"]);
    let mut fine = node.connect();
    fine.send(&retro_request(&horizon.to_string(), &[t[other]]));
    fine.expect(b"STORED\r\n");
    let replayed = payloads(&poll_exactly(&mut fine, 2));
    assert_eq!(
        replayed,
        [
            format!("before {}", t[other]),
            format!("after {}", t[other])
        ]
    );

    assert_eq!(node.stats()["shard_restarts"], "1");
}

#[test]
fn a_connection_panic_ends_that_client_cleanly_and_touches_no_other() {
    let node = faulty_node(&[]);
    let mut victim = node.connect();
    victim.subscribe(&["victim-only", "shared"]);
    let mut bystander = node.connect();
    bystander.subscribe(&["shared", "mine"]);
    let mut publisher = node.connect();

    victim.send(&set_request("subscribe", CONNECTION_PANIC.as_bytes()));
    assert!(
        victim.is_closed_within(REPLY_TIMEOUT),
        "the failed connection stays open"
    );

    // Its state is gone everywhere...
    wait_until("victim's subscriptions removed", || {
        dump_topics(&node) == "mine\t1\nshared\t1\n"
    });
    node.wait_for_stat("client_failures", |n| n == 1);
    assert!(node.log_contains("connection failed; client removed"));
    let queues = node.ctl(&["dump_queues"]).stdout;
    assert!(
        !queues.contains(&victim.local_addr().to_string()),
        "{queues}"
    );
    // ... and nobody else noticed.
    publisher.publish1("shared", b"s");
    publisher.publish1("mine", b"m");
    assert_eq!(payloads(&poll_exactly(&mut bystander, 2)), ["s", "m"]);
    let mut newcomer = node.connect();
    newcomer.subscribe(&["victim-only"]);
    publisher.publish1("victim-only", b"v");
    assert_eq!(payloads(&poll_exactly(&mut newcomer, 1)), ["v"]);
}

#[test]
fn a_client_queue_panic_ends_that_client_cleanly_and_touches_no_other() {
    let node = faulty_node(&[]);
    let mut victim = node.connect();
    victim.subscribe(&["victim-only", "shared"]);
    let mut bystander = node.connect();
    bystander.subscribe(&["shared"]);
    let mut publisher = node.connect();

    victim.send(&set_request("subscribe", QUEUE_PANIC.as_bytes()));
    victim.expect(b"SERVER_ERROR client queue failed\r\n");
    victim.expect_closed();

    wait_until("victim's subscriptions removed", || {
        dump_topics(&node) == "shared\t1\n"
    });
    node.wait_for_stat("client_failures", |n| n == 1);
    assert!(node.log_contains("client queue failed; client removed"));
    publisher.publish1("shared", b"s");
    assert_eq!(payloads(&poll_exactly(&mut bystander, 1)), ["s"]);
    bystander.subscribe(&["later"]);
    publisher.publish1("later", b"l");
    assert_eq!(payloads(&poll_exactly(&mut bystander, 1)), ["l"]);
}

#[test]
fn a_listener_panic_restarts_the_listener_and_touches_no_client() {
    let node = faulty_node(&[]);
    let mut existing = node.connect();
    existing.subscribe(&["t"]);
    let mut trigger = node.connect();
    // The subscription itself goes through; the listener dies meanwhile.
    trigger.subscribe(&[LISTENER_PANIC]);
    assert_eq!(node.wait_for_stat("listener_restarts", |n| n >= 1), 1);
    assert!(node.log_contains("listener failed and was restarted"));

    // New connections are accepted and served...
    let mut newcomer = node.connect();
    newcomer.subscribe(&["t"]);
    let mut publisher = node.connect();
    publisher.publish1("t", b"after");
    // ... and the clients from before keep theirs.
    assert_eq!(payloads(&poll_exactly(&mut existing, 1)), ["after"]);
    assert_eq!(payloads(&poll_exactly(&mut newcomer, 1)), ["after"]);
    trigger.expect_open_and_empty();
    assert_eq!(node.stats()["listener_restarts"], "1");
}

#[test]
fn more_than_max_restarts_in_the_window_escalates_the_node_exits_non_zero_saying_why() {
    let mut node = faulty_node(&[("max_restarts", "2"), ("max_restart_seconds", "60")]);
    let mut publisher = node.connect();
    inject_shard_panic(&mut publisher);
    inject_shard_panic(&mut publisher);
    assert_eq!(node.wait_for_stat("shard_restarts", |n| n >= 2), 2);
    assert!(
        node.wait_exit(QUIET_PERIOD).is_none(),
        "two restarts are within the budget"
    );

    // The third: past the budget. Its reply may or may not make it out.
    publisher.send(&publish_request(&[(&[SHARD_PANIC], b"boom")]));
    let status = node
        .wait_exit(Duration::from_secs(10))
        .expect("the node exits after too many restarts");
    assert!(!status.success(), "exit status {status}");
    assert!(
        node.log_contains("too many restarts"),
        "no reason logged:\n{}",
        node.log_lines().join("\n")
    );
}

#[test]
fn fault_injection_is_off_by_default() {
    let node = Node::start(&[]);
    let mut c = node.connect();
    c.publish1(SHARD_PANIC, b"harmless");
    c.subscribe(&[CONNECTION_PANIC, QUEUE_PANIC, LISTENER_PANIC]);
    c.expect_open_and_empty();
    let stats = node.stats();
    for counter in ["shard_restarts", "listener_restarts", "client_failures"] {
        assert_eq!(stats[counter], "0", "{counter}: {stats:?}");
    }
}
