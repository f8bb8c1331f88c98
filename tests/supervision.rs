//! Supervision, each failure injected into the real binary
//! (`-kraken fault_injection true`, off by default) and its outcome observed
//! over TCP:
//!
//! - a router shard's panic restarts that shard with its routing table
//!   rebuilt from the client queues: every client keeps every subscription
//!   and keeps receiving; only that shard's retro buffer is lost;
//! - a connection's or a client queue's panic ends that client cleanly and
//!   touches no other;
//! - a listener's panic restarts the listener;
//! - the router-shard pool supervisor's panic restarts every shard (their
//!   retro buffers are lost, their tables recovered); the clients'
//!   supervisor's keeps every client; an upstream link's, on a proxy,
//!   restarts the link, which mirrors its topics again;
//! - a retro request reaching back before a shard's restart answers
//!   `NOT_FOUND`, one after it `STORED`;
//! - the root supervisor's panic stops the node with exit status 70 after
//!   removing its pid file and control socket;
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
    shard_panic_is_survived(&[]);
}

/// The same with the shards on the one connection thread (no router
/// thread): the node runs on one thread, the failed shard on it too.
#[test]
fn a_router_shard_on_the_connection_thread_is_restarted_the_same() {
    let node = shard_panic_is_survived(&[("worker_threads", "1"), ("router_threads", "0")]);
    assert!(
        node.log_contains("router_threads: 0"),
        "{:?}",
        node.log_lines()
    );
}

fn shard_panic_is_survived(options: &[(&str, &str)]) -> Node {
    let node = faulty_node(options);
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
    node
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

// ---------------------------------------------------------------------------
// Supervisors, the upstream link and the root, each failing in turn
// ---------------------------------------------------------------------------

const POOL_PANIC: &str = "__kraken_fault_supervisor_panic__";
const CLIENTS_PANIC: &str = "__kraken_fault_clients_supervisor_panic__";
const UPSTREAM_PANIC: &str = "__kraken_fault_upstream_panic__";
const ROOT_PANIC: &str = "__kraken_fault_root_panic__";

/// Asks for a fault by subscribing to its topic; the answer is not read
/// (the failing part may be on its path).
fn trigger(node: &Node, topic: &str) -> Client {
    let mut c = node.connect();
    c.send(&set_request("subscribe", topic.as_bytes()));
    c
}

/// The retro answer (`STORED` or `NOT_FOUND`) of a fresh client.
fn retro_answer(node: &Node, horizon: i64, topic: &str) -> Vec<u8> {
    let mut c = node.connect();
    c.send(&retro_request(&horizon.to_string(), &[topic]));
    c.read_line()
}

fn stat(node: &Node, name: &str) -> i64 {
    node.stats()
        .get(name)
        .unwrap_or_else(|| panic!("no stat {name}"))
        .parse()
        .unwrap()
}

#[test]
fn a_router_shard_restart_answers_not_found_before_it_and_stored_after_it() {
    let node = faulty_node(&[]);
    let topics = topic_per_shard();
    let faulty = &topics[shard_of(SHARD_PANIC.as_bytes(), SHARDS)];
    let before = node.fresh_horizon();
    let mut publisher = node.connect();
    publisher.publish1(faulty, b"lost with the buffer");
    inject_shard_panic(&mut publisher);
    node.wait_for_stat("shard_restarts", |n| n >= 1);

    // The next second starts after the restart: the new buffer covers it.
    let after = wait_for_next_second();
    publisher.publish1(faulty, b"kept");
    let mut early = node.connect();
    early.send(&retro_request(&before.to_string(), &[faulty]));
    early.expect(b"NOT_FOUND\r\n");
    let mut late = node.connect();
    late.send(&retro_request(&after.to_string(), &[faulty]));
    late.expect(b"STORED\r\n");
    assert_eq!(payloads(&poll_exactly(&mut late, 1)), ["kept"]);
    // NOT_FOUND still subscribed.
    publisher.publish1(faulty, b"live");
    assert_eq!(payloads(&poll_exactly(&mut early, 1)), ["live"]);
    assert_eq!(payloads(&poll_exactly(&mut late, 1)), ["live"]);
}

#[test]
fn a_shard_pool_supervisor_panic_restarts_every_shard_and_every_client_keeps_every_subscription() {
    let node = faulty_node(&[]);
    let topics = topic_per_shard();
    let t: Vec<&str> = topics.iter().map(String::as_str).collect();
    let horizon = node.fresh_horizon();
    let mut all = node.connect();
    all.subscribe(&t);
    let mut publisher = node.connect();
    for topic in &t {
        publisher.publish1(topic, b"before");
    }
    assert_eq!(poll_exactly(&mut all, SHARDS).len(), SHARDS);
    let topics_before = dump_topics(&node);

    let _trigger = trigger(&node, POOL_PANIC);
    assert_eq!(node.wait_for_stat("supervisor_restarts", |n| n >= 1), 1);
    assert!(node.log_contains("router-shard pool supervisor failed and was restarted"));
    // Every shard restarted: each one's retro buffer is gone...
    for topic in &t {
        wait_until("the shard's buffer reset", || {
            retro_answer(&node, horizon, topic) == b"NOT_FOUND\r\n"
        });
    }
    // ... and each got its table back from the client queues.
    wait_until("routing table restored", || {
        let now = dump_topics(&node);
        topics_before.lines().all(|l| now.lines().any(|n| n == l))
    });
    for topic in &t {
        publisher.publish1(topic, format!("after {topic}").as_bytes());
    }
    let mut got = payloads(&poll_exactly(&mut all, SHARDS));
    got.sort();
    let mut want: Vec<String> = t.iter().map(|topic| format!("after {topic}")).collect();
    want.sort();
    assert_eq!(got, want);
    let stats = node.stats();
    assert_eq!(stats["supervisor_restarts"], "1");
    assert_eq!(stats["client_failures"], "0");
    // The pool can still restart a shard.
    inject_shard_panic(&mut publisher);
    node.wait_for_stat("shard_restarts", |n| n >= 1);
    publisher.publish1(t[0], b"still");
    assert_eq!(payloads(&poll_exactly(&mut all, 1)), ["still"]);
}

#[test]
fn a_clients_supervisor_panic_restarts_it_and_keeps_every_client() {
    let node = faulty_node(&[]);
    let topics = topic_per_shard();
    let faulty = topics[shard_of(SHARD_PANIC.as_bytes(), SHARDS)].as_str();
    let mut old = node.connect();
    old.subscribe(&["t", faulty]);
    let mut publisher = node.connect();

    let _trigger = trigger(&node, CLIENTS_PANIC);
    assert_eq!(node.wait_for_stat("supervisor_restarts", |n| n >= 1), 1);
    assert!(node.log_contains("clients' supervisor failed and was restarted"));

    publisher.publish1("t", b"after");
    assert_eq!(payloads(&poll_exactly(&mut old, 1)), ["after"]);
    let mut newcomer = node.connect();
    newcomer.subscribe(&["t"]);
    publisher.publish1("t", b"new");
    assert_eq!(payloads(&poll_exactly(&mut old, 1)), ["new"]);
    assert_eq!(payloads(&poll_exactly(&mut newcomer, 1)), ["new"]);
    // Its directory survived: dumps list the clients, and a restarted shard
    // recovers every client's subscriptions from it.
    let queues = node.ctl(&["dump_queues"]).stdout;
    assert!(queues.contains(&old.local_addr().to_string()), "{queues}");
    inject_shard_panic(&mut publisher);
    node.wait_for_stat("shard_restarts", |n| n >= 1);
    publisher.publish1(faulty, b"recovered");
    assert_eq!(payloads(&poll_exactly(&mut old, 1)), ["recovered"]);
    assert_eq!(node.stats()["client_failures"], "0");
}

#[test]
fn an_upstream_link_panic_on_a_proxy_restarts_the_link_which_mirrors_its_topics_again() {
    let upstream = Node::start(&[("worker_threads", "1")]);
    let ups = format!("127.0.0.1:{}", upstream.port());
    let proxy = Node::start(&[
        ("upstreams", &ups),
        ("fault_injection", "true"),
        ("worker_threads", "1"),
    ]);
    let mut sub = proxy.connect();
    sub.subscribe(&["up-t"]);
    let mut up_pub = upstream.connect();
    // Mirrored: the upstream's publishes reach the proxy's client.
    wait_until("the proxy mirrors up-t", || {
        dump_topics(&upstream).contains("up-t\t")
    });
    // The restarted link recovers with a retro_subscribe from its last
    // contact; that must be after the upstream's start (else the upstream
    // answers NOT_FOUND and the proxy, unable to prove nothing was missed,
    // closes its clients).
    upstream.fresh_horizon();
    up_pub.publish1("up-t", b"before");
    assert_eq!(
        payloads(&poll_until(&mut sub, |m| !m.is_empty(), ASYNC_TIMEOUT)),
        ["before"]
    );

    let _trigger = trigger(&proxy, UPSTREAM_PANIC);
    wait_until("upstream_restarts", || {
        stat(&proxy, "upstream_restarts") >= 1
    });
    assert!(proxy.log_contains("upstream link failed and was restarted"));
    // The new link mirrors the topics again and clients keep receiving.
    wait_until("the restarted link mirrors up-t", || {
        dump_topics(&upstream).contains("up-t\t")
    });
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    let mut n = 0;
    let got = loop {
        n += 1;
        up_pub.publish1("up-t", format!("after {n}").as_bytes());
        let got = collect_for(&mut sub, Duration::from_millis(200));
        if payloads(&got).iter().any(|p| p.starts_with("after ")) {
            break got;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "nothing from upstream after the link restarted"
        );
    };
    // The recovery replays from the last contact: "before" may come again
    // (at least once), nothing else does.
    assert!(
        payloads(&got)
            .iter()
            .all(|p| p == "before" || p.starts_with("after ")),
        "{got:?}"
    );
    // New subscriptions are mirrored through the new link too.
    sub.subscribe(&["up-new"]);
    wait_until("up-new mirrored", || {
        dump_topics(&upstream).contains("up-new\t")
    });
    up_pub.publish1("up-new", b"fresh");
    let got = poll_until(
        &mut sub,
        |m| payloads(m).iter().any(|p| p == "fresh"),
        ASYNC_TIMEOUT,
    );
    assert!(payloads(&got).contains(&"fresh".to_string()), "{got:?}");
    assert_eq!(stat(&proxy, "client_failures"), 0);
    assert_eq!(stat(&proxy, "upstream_restarts"), 1);
    assert!(!proxy.log_contains("closing the clients of its topics"));
}

#[test]
fn a_root_supervisor_panic_stops_the_node_with_status_70_after_removing_its_files() {
    let dir = std::env::temp_dir().join(format!("kraken-root-panic-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let pid_file = dir.join("kraken.pid");
    let socket = dir.join("control.sock");
    let mut node = Node::start(&[
        ("fault_injection", "true"),
        ("pid_file", pid_file.to_str().unwrap()),
        ("control_socket", socket.to_str().unwrap()),
    ]);
    assert_eq!(
        std::fs::read_to_string(&pid_file).unwrap().trim(),
        node.pid().to_string()
    );
    wait_until("control socket", || socket.exists());
    let mut bystander = node.connect();
    bystander.subscribe(&["t"]);

    let _trigger = trigger(&node, ROOT_PANIC);
    let status = node
        .wait_exit(Duration::from_secs(10))
        .expect("the node stops when its root fails");
    assert_eq!(status.code(), Some(70), "exit status {status}");
    assert!(node.log_contains("root supervisor failed"));
    assert!(!pid_file.exists(), "pid file left behind");
    assert!(!socket.exists(), "control socket left behind");
    bystander.expect_closed();
    let _ = std::fs::remove_dir_all(&dir);
}
