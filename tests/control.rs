//! The control commands (README, "Inspect a running node": `change_log_level`, `dump_queues`,
//! `dump_queue_topics ID`, `dump_topics`) against a running node, over its
//! control socket, which pubsub clients cannot reach.

mod common;

use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::net::UnixListener;
use std::time::Duration;

use common::*;

/// `dump_queues` as rows of columns (the header checked and dropped).
fn dump_queues(node: &Node) -> Vec<Vec<String>> {
    let out = node.ctl(&["dump_queues"]);
    assert_eq!(out.code, Some(0), "{}", out.text());
    let mut lines = out.stdout.lines();
    assert_eq!(
        lines.next(),
        Some("id\tpeer\tsubscriptions\tqueued\tqueued_bytes\treceived\tage_s\tsince_last_poll_s"),
        "{}",
        out.text()
    );
    lines
        .map(|l| l.split('\t').map(String::from).collect())
        .collect()
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

/// The `dump_queues` row of the client at `peer`.
#[track_caller]
fn row_of(rows: &[Vec<String>], client: &Client) -> Vec<String> {
    let peer = client.local_addr().to_string();
    rows.iter()
        .find(|r| r[1] == peer)
        .unwrap_or_else(|| panic!("no queue for {peer} in {rows:?}"))
        .clone()
}

#[test]
fn dump_queues_lists_every_client_queue_with_its_figures() {
    let node = Node::start(&[]);
    let mut a = node.connect();
    a.subscribe(&["x", "y", "z"]);
    let mut b = node.connect();
    b.subscribe(&["x"]);
    b.expect_open_and_empty();
    let mut publisher = node.connect();
    publisher.publish1("x", b"12345");
    publisher.publish1("y", b"67");

    let rows = dump_queues(&node);
    assert_eq!(rows.len(), 3, "{rows:?}");
    assert!(rows.iter().all(|r| r.len() == 8), "{rows:?}");
    // id, peer, subscriptions, queued, queued_bytes, received, age_s, since_last_poll_s
    let ra = row_of(&rows, &a);
    assert_eq!(&ra[2..6], ["3", "2", &ra[4], "2"], "{ra:?}");
    assert!(ra[4].parse::<u64>().unwrap() >= 7, "{ra:?}");
    assert_eq!(ra[7], "never", "{ra:?}");
    let rb = row_of(&rows, &b);
    assert_eq!(&rb[2..6], ["1", "1", &rb[4], "1"], "{rb:?}");
    assert_eq!(rb[7], "0", "{rb:?}");
    let rp = row_of(&rows, &publisher);
    assert_eq!(&rp[2..4], ["0", "0"], "{rp:?}");
    // Ids are distinct numbers.
    let mut ids: Vec<u64> = rows.iter().map(|r| r[0].parse().unwrap()).collect();
    ids.dedup();
    assert_eq!(ids.len(), 3);

    // A poll empties the queue; a closed client disappears.
    assert_eq!(a.poll().len(), 2);
    drop(b);
    let rows = dump_queues(&node);
    assert_eq!(&row_of(&rows, &a)[3..5], ["0", "0"]);
    wait_until("b's queue removed", || dump_queues(&node).len() == 2);
}

#[test]
fn dump_queue_topics_lists_one_clients_topics() {
    let node = Node::start(&[]);
    let mut a = node.connect();
    a.subscribe(&["b-topic", "a-topic", "c-topic"]);
    a.unsubscribe(&["c-topic"]);
    let mut other = node.connect();
    other.subscribe(&["not-mine"]);
    let rows = dump_queues(&node);
    let id = row_of(&rows, &a)[0].clone();
    let out = node.ctl(&["dump_queue_topics", &id]);
    assert_eq!(out.code, Some(0), "{}", out.text());
    assert_eq!(out.stdout, "a-topic\nb-topic\n");

    let out = node.ctl(&["dump_queue_topics", "999999"]);
    assert_eq!(out.code, Some(1), "{}", out.text());
    assert!(
        out.stderr.contains("no client queue with id 999999"),
        "{}",
        out.text()
    );
}

#[test]
fn dump_topics_lists_topics_with_subscriber_counts_most_first() {
    let node = Node::start(&[]);
    let mut clients: Vec<Client> = (0..3).map(|_| node.connect()).collect();
    clients[0].subscribe(&["one", "two", "three"]);
    clients[1].subscribe(&["two", "three"]);
    clients[2].subscribe(&["three"]);
    let out = node.ctl(&["dump_topics"]);
    assert_eq!(out.code, Some(0), "{}", out.text());
    assert_eq!(out.stdout, "three\t3\ntwo\t2\none\t1\n");
    clients.truncate(1);
    // Ties in name order.
    wait_until("closed clients' topics gone", || {
        node.ctl(&["dump_topics"]).stdout == "one\t1\nthree\t1\ntwo\t1\n"
    });
}

#[test]
fn change_log_level_takes_effect_without_a_restart() {
    let node = Node::start(&[("log_level", "info")]);
    // "client gone" is a debug line: not logged at info.
    drop(node.connect());
    wait_until("client removed", || dump_queues(&node).is_empty());
    assert!(node.log_contains("accepting connections"));
    assert!(!node.log_lines().iter().any(|l| l.contains("client gone")));

    let out = node.ctl(&["change_log_level", "debug"]);
    assert_eq!(out.code, Some(0), "{}", out.text());
    assert!(out.stdout.contains("from info to debug"), "{}", out.text());
    let status = node.ctl(&["status"]);
    assert!(
        status.stdout.contains("log level debug"),
        "{}",
        status.text()
    );
    drop(node.connect());
    assert!(
        node.log_contains("client gone"),
        "debug lines are not logged after change_log_level debug"
    );

    // At error, nothing below error is logged.
    let out = node.ctl(&["change_log_level", "error"]);
    assert_eq!(out.code, Some(0), "{}", out.text());
    let before = node.log_lines().len();
    drop(node.connect());
    wait_until("client removed", || dump_queues(&node).is_empty());
    std::thread::sleep(QUIET_PERIOD);
    let after: Vec<String> = node.log_lines()[before..].to_vec();
    assert!(after.is_empty(), "logged at level error: {after:?}");

    let out = node.ctl(&["change_log_level", "loud"]);
    assert_eq!(out.code, Some(2), "{}", out.text());
    assert!(
        out.stderr.contains("unknown log level 'loud'"),
        "{}",
        out.text()
    );
}

#[test]
fn the_control_socket_is_owner_only_and_pubsub_clients_cannot_issue_control_commands() {
    let node = Node::start(&[]);
    let meta = std::fs::metadata(node.control_socket()).unwrap();
    assert!(meta.file_type().is_socket());
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);

    let mut watcher = node.connect();
    watcher.subscribe(&["kept"]);
    // The control commands, sent on the pubsub port, are unknown commands
    // there: ERROR and close, no effect.
    for cmd in [
        "stop",
        "status",
        "change_log_level debug",
        "dump_queues",
        "dump_queue_topics 1",
        "dump_topics",
    ] {
        let mut c = node.connect();
        c.send(format!("{cmd}\r\n").as_bytes());
        c.expect(b"ERROR\r\n");
        c.expect_closed();
    }
    watcher.expect_open_and_empty();
    let status = node.ctl(&["status"]);
    assert_eq!(status.code, Some(0), "{}", status.text());
    assert!(
        status.stdout.contains("log level info"),
        "{}",
        status.text()
    );
    assert_eq!(node.ctl(&["dump_topics"]).stdout, "kept\t1\n");
}

#[test]
fn a_stale_control_socket_is_replaced_and_a_live_one_stops_start_up() {
    let dir = TempDir::new("ctl-stale");
    let path = dir.join("ctl.sock");
    // A socket file nobody listens on, as a killed node leaves it.
    drop(UnixListener::bind(&path).unwrap());
    assert!(path.exists());
    let node = Node::start(&[("control_socket", path.to_str().unwrap())]);
    let out = kraken(&[
        "status",
        "-kraken",
        "control_socket",
        path.to_str().unwrap(),
    ]);
    assert_eq!(out.code, Some(0), "{}", out.text());
    assert!(
        out.stdout.contains(&format!("pid {}", node.pid())),
        "{}",
        out.text()
    );

    // A second node on the same (live) control socket refuses to start.
    let out = kraken(
        &[
            &["run"][..],
            &loopback_args("0"),
            &["-kraken", "control_socket", path.to_str().unwrap()],
        ]
        .concat(),
    );
    assert_eq!(out.code, Some(1), "{}", out.text());
    assert!(
        out.stderr.contains("in use by another running node"),
        "{}",
        out.text()
    );
    // ... and leaves the first one's socket in place.
    let out = kraken(&[
        "status",
        "-kraken",
        "control_socket",
        path.to_str().unwrap(),
    ]);
    assert_eq!(out.code, Some(0), "{}", out.text());
}

#[test]
fn a_raw_control_request_gets_a_framed_reply() {
    use std::io::{Read, Write};
    let node = Node::start(&[]);
    let ask = |line: &str| -> String {
        let mut s = std::os::unix::net::UnixStream::connect(node.control_socket()).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s.write_all(line.as_bytes()).unwrap();
        s.shutdown(std::net::Shutdown::Write).unwrap();
        let mut reply = String::new();
        s.read_to_string(&mut reply).unwrap();
        reply
    };
    let status = ask("status\n");
    assert!(status.starts_with("OK\n"), "{status:?}");
    assert!(
        status.contains(&format!("\npid {}\n", node.pid())),
        "{status:?}"
    );
    assert!(
        status.contains(&format!("\naddr {}\n", node.addr())),
        "{status:?}"
    );
    assert!(status.ends_with("\nEND\n"), "{status:?}");
    assert_eq!(ask("dump_topics\n"), "OK\nEND\n");
    assert!(ask("frobnicate\n").starts_with("ERROR unknown request 'frobnicate'"));
    assert!(ask("status").starts_with("ERROR expected one request line"));
}
