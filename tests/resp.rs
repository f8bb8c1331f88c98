//! The Redis dialect on `resp_port`, against the real binary: exact bytes
//! for every command (raw sockets), push delivery across the two dialects,
//! multi-topic messages, retroactive subscription, the slow-consumer
//! bound, `max_tcp_clients`, stats; then real clients: `redis-cli`
//! (Debian's redis-tools), redis-py (PyPI `redis`, through
//! `docs/examples/redis_py_subscriber.py`) and the Rust `redis` crate.
//! `.ci/run` installs the tools; the tests that need one fail, saying so,
//! when it is missing. Every wait is bounded.

mod common;

use std::io::Read;
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{with_free_port, Client, Node, ASYNC_TIMEOUT};
use kraken_actors::router::shard_of;

/// A node with `resp_port` on a free port, and that port's address.
fn node_with(options: &[(&str, &str)]) -> (Node, SocketAddr) {
    with_free_port(|port| {
        let port_text = port.to_string();
        let mut all: Vec<(&str, &str)> = vec![("resp_port", &port_text)];
        all.extend_from_slice(options);
        Node::try_start(&all).map(|node| (node, SocketAddr::from(([127, 0, 0, 1], port))))
    })
}

fn node() -> (Node, SocketAddr) {
    node_with(&[])
}

/// `*<n>\r\n` then each argument as a bulk string.
fn cmd(args: &[&[u8]]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for a in args {
        out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
        out.extend_from_slice(a);
        out.extend_from_slice(b"\r\n");
    }
    out
}

fn subscribed(channel: &str, n: usize) -> Vec<u8> {
    format!(
        "*3\r\n$9\r\nsubscribe\r\n${}\r\n{channel}\r\n:{n}\r\n",
        channel.len()
    )
    .into_bytes()
}

fn unsubscribed(channel: &str, n: usize) -> Vec<u8> {
    format!(
        "*3\r\n$11\r\nunsubscribe\r\n${}\r\n{channel}\r\n:{n}\r\n",
        channel.len()
    )
    .into_bytes()
}

fn message(marker: char, channel: &str, payload: &str) -> Vec<u8> {
    format!(
        "{marker}3\r\n$7\r\nmessage\r\n${}\r\n{channel}\r\n${}\r\n{payload}\r\n",
        channel.len(),
        payload.len()
    )
    .into_bytes()
}

fn retro(marker: char, horizon: i64, result: &str) -> Vec<u8> {
    let h = horizon.to_string();
    format!(
        "{marker}3\r\n$12\r\nkraken.retro\r\n${}\r\n{h}\r\n${}\r\n{result}\r\n",
        h.len(),
        result.len()
    )
    .into_bytes()
}

fn resp(addr: SocketAddr) -> Client {
    Client::connect(addr)
}

/// A RESP client subscribed to `channels` (confirmations read).
fn subscriber(addr: SocketAddr, channels: &[&str]) -> Client {
    let mut c = resp(addr);
    let args: Vec<&[u8]> = std::iter::once(&b"SUBSCRIBE"[..])
        .chain(channels.iter().map(|c| c.as_bytes()))
        .collect();
    c.send(&cmd(&args));
    for (i, ch) in channels.iter().enumerate() {
        c.expect(&subscribed(ch, i + 1));
    }
    c
}

#[test]
fn handshake_commands_answer_as_redis_does() {
    let (_node, addr) = node();
    let mut c = resp(addr);
    c.send(b"PING\r\n");
    c.expect(b"+PONG\r\n");
    c.send(&cmd(&[b"PING", b"hi"]));
    c.expect(b"$2\r\nhi\r\n");
    c.send(&cmd(&[b"CLIENT", b"SETNAME", b"me"]));
    c.expect(b"+OK\r\n");
    c.send(&cmd(&[b"CLIENT", b"GETNAME"]));
    c.expect(b"$2\r\nme\r\n");
    c.send(&cmd(&[b"CLIENT", b"ID"]));
    let id = c.expect_line_starting(":");
    c.send(&cmd(&[b"CLIENT", b"SETINFO", b"LIB-NAME", b"test"]));
    c.expect(b"+OK\r\n");
    c.send(&cmd(&[b"COMMAND", b"DOCS"]));
    c.expect(b"*0\r\n");
    c.send(&cmd(&[b"COMMAND", b"COUNT"]));
    c.expect(b":0\r\n");
    c.send(&cmd(&[b"INFO"]));
    let head = c.expect_line_starting("$");
    let len: usize = head[1..].parse().unwrap();
    let body = c.read_exact_bytes(len + 2);
    let text = String::from_utf8_lossy(&body);
    assert!(text.starts_with("# Kraken\r\n"), "{text}");
    assert!(text.contains("curr_resp_connections:1\r\n"), "{text}");
    // HELLO 3: the map, with this connection's id; then RESP3 spellings.
    c.send(&cmd(&[b"HELLO", b"3"]));
    let version = env!("CARGO_PKG_VERSION");
    let id_num = &id[1..];
    let want = format!(
        "%7\r\n$6\r\nserver\r\n$6\r\nkraken\r\n$7\r\nversion\r\n${}\r\n{version}\r\n\
         $5\r\nproto\r\n:3\r\n$2\r\nid\r\n:{id_num}\r\n$4\r\nmode\r\n$10\r\nstandalone\r\n\
         $4\r\nrole\r\n$6\r\nmaster\r\n$7\r\nmodules\r\n*0\r\n",
        version.len()
    );
    c.expect(want.as_bytes());
    c.send(&cmd(&[b"CLIENT", b"SETNAME", b""]));
    c.expect(b"+OK\r\n");
    c.send(&cmd(&[b"CLIENT", b"GETNAME"]));
    c.expect(b"_\r\n");
    c.send(&cmd(&[b"HELLO", b"2", b"AUTH", b"alice", b"pw"]));
    c.expect(b"-WRONGPASS invalid username-password pair or user is disabled.\r\n");
    c.send(&cmd(&[b"RESET"]));
    c.expect(b"+RESET\r\n");
    c.send(&cmd(&[b"CLIENT", b"GETNAME"]));
    c.expect(b"$-1\r\n");
    c.send(&cmd(&[b"QUIT"]));
    c.expect(b"+OK\r\n");
    c.expect_closed();
}

#[test]
fn errors_keep_the_connection_open_and_protocol_errors_close_it() {
    let (_node, addr) = node();
    let mut c = resp(addr);
    c.send(&cmd(&[b"GET", b"k"]));
    c.expect(b"-ERR unknown command 'GET', with args beginning with: 'k' \r\n");
    c.send(&cmd(&[b"SUBSCRIBE"]));
    c.expect(b"-ERR wrong number of arguments for 'subscribe' command\r\n");
    c.send(&cmd(&[b"PSUBSCRIBE", b"news.*"]));
    c.expect(
        b"-ERR PSUBSCRIBE is not supported: Kraken routes exact channel names only, \
          subscribe to each channel by name\r\n",
    );
    c.send(&cmd(&[b"SUBSCRIBE", b"a b"]));
    c.expect(
        b"-ERR invalid channel name: Kraken channels are non-empty and contain no space, CR or LF\r\n",
    );
    c.send(&cmd(&[b"KRAKEN.RETROSUBSCRIBE", b"soon", b"a"]));
    c.expect(b"-ERR value is not an integer or out of range\r\n");
    c.send(b"PING\r\n");
    c.expect(b"+PONG\r\n");
    c.send(b"*1\r\n$x\r\n");
    c.expect(b"-ERR Protocol error: invalid bulk length\r\n");
    c.expect_closed();
}

#[test]
fn subscribe_unsubscribe_and_the_subscribed_context() {
    let (_node, addr) = node();
    let mut c = subscriber(addr, &["a", "b"]);
    // A repeated channel is confirmed again, the count unchanged.
    c.send(&cmd(&[b"SUBSCRIBE", b"a"]));
    c.expect(&subscribed("a", 2));
    c.send(b"PING\r\n");
    c.expect(b"*2\r\n$4\r\npong\r\n$0\r\n\r\n");
    c.send(&cmd(&[b"PUBLISH", b"a", b"x"]));
    c.expect(
        b"-ERR Can't execute 'publish': only (P|S)SUBSCRIBE / (P|S)UNSUBSCRIBE / PING / QUIT / RESET are allowed in this context\r\n",
    );
    c.send(&cmd(&[b"PUNSUBSCRIBE"]));
    c.expect(b"*3\r\n$12\r\npunsubscribe\r\n$-1\r\n:2\r\n");
    c.send(&cmd(&[b"UNSUBSCRIBE", b"a", b"zz"]));
    c.expect(&unsubscribed("a", 1));
    c.expect(&unsubscribed("zz", 1));
    c.send(&cmd(&[b"UNSUBSCRIBE"]));
    c.expect(&unsubscribed("b", 0));
    c.send(&cmd(&[b"UNSUBSCRIBE"]));
    c.expect(b"*3\r\n$11\r\nunsubscribe\r\n$-1\r\n:0\r\n");
    // Not subscribed any more: PING is plain again, and a publish to `a`
    // reaches nobody.
    c.send(b"PING\r\n");
    c.expect(b"+PONG\r\n");
    c.send(&cmd(&[b"PUBLISH", b"a", b"x"]));
    c.expect(b":0\r\n");
}

#[test]
fn pushes_cross_the_two_dialects_and_publish_counts_subscribers() {
    let (node, addr) = node();
    let mut r = subscriber(addr, &["news"]);
    let mut m = node.connect();
    m.subscribe(&["news"]);
    // memcached publisher -> RESP subscriber (push) and memcached subscriber.
    let mut mp = node.connect();
    mp.publish1("news", b"from-memcached");
    r.expect(&message('*', "news", "from-memcached"));
    let got = common::poll_count(&mut m, 1);
    assert_eq!(common::payloads(&got), vec!["from-memcached"]);
    // RESP publisher -> both; PUBLISH answers 2 (the publisher excluded).
    let mut p = resp(addr);
    p.send(&cmd(&[b"PUBLISH", b"news", b"from-resp"]));
    p.expect(b":2\r\n");
    r.expect(&message('*', "news", "from-resp"));
    let got = common::poll_count(&mut m, 1);
    assert_eq!(common::payloads(&got), vec!["from-resp"]);
    // A RESP3 subscriber may publish; it does not receive its own message.
    let mut r3 = resp(addr);
    r3.send(&cmd(&[b"HELLO", b"3"]));
    let _ = r3.expect_line_starting("%7");
    // The map ends with the empty `modules` array.
    while r3.read_line() != b"*0\r\n" {}
    r3.send(&cmd(&[b"SUBSCRIBE", b"news"]));
    r3.expect(b">3\r\n$9\r\nsubscribe\r\n$4\r\nnews\r\n:1\r\n");
    r3.send(&cmd(&[b"PUBLISH", b"news", b"own"]));
    r3.expect(b":2\r\n");
    r.expect(&message('*', "news", "own"));
    p.send(&cmd(&[b"PUBLISH", b"news", b"other"]));
    p.expect(b":3\r\n");
    r3.expect(&message('>', "news", "other"));
    r.expect(&message('*', "news", "other"));
    // PUBSUB sees subscribers of both dialects.
    p.send(&cmd(&[b"PUBSUB", b"NUMSUB", b"news", b"none"]));
    p.expect(b"*4\r\n$4\r\nnews\r\n:3\r\n$4\r\nnone\r\n:0\r\n");
    p.send(&cmd(&[b"PUBSUB", b"CHANNELS", b"ne*"]));
    p.expect(b"*1\r\n$4\r\nnews\r\n");
    p.send(&cmd(&[b"PUBSUB", b"NUMPAT"]));
    p.expect(b":0\r\n");
    let pushes = node.wait_for_stat("resp_pushes", |v| v >= 5);
    assert!(pushes >= 5);
    assert_eq!(node.stats()["curr_resp_connections"], "3");
}

#[test]
fn a_message_naming_several_topics_is_one_push_per_matched_channel() {
    let (node, addr) = node();
    let mut r = subscriber(addr, &["c", "a"]);
    let mut mp = node.connect();
    mp.publish(&[(&["a", "b", "c"], b"multi")]);
    // In the order the message names them, each with the payload.
    r.expect(&message('*', "a", "multi"));
    r.expect(&message('*', "c", "multi"));
    // A burst in one publish block reaches the subscriber whole, in order.
    let payloads: Vec<String> = (0..200).map(|i| format!("m{i}")).collect();
    let entries: Vec<(&[&str], &[u8])> = payloads
        .iter()
        .map(|p| (&["a"][..], p.as_bytes()))
        .collect();
    mp.publish(&entries);
    for p in &payloads {
        r.expect(&message('*', "a", p));
    }
}

#[test]
fn retro_subscription_replays_then_reports_and_not_found_is_distinct() {
    let (node, addr) = node();
    let horizon = node.fresh_horizon();
    let mut mp = node.connect();
    mp.publish1("r", b"before");
    let mut c = resp(addr);
    c.send(&cmd(&[
        b"KRAKEN.RETROSUBSCRIBE",
        horizon.to_string().as_bytes(),
        b"r",
    ]));
    c.expect(&subscribed("r", 1));
    c.expect(&message('*', "r", "before"));
    c.expect(&retro('*', horizon, "stored"));
    mp.publish1("r", b"live");
    c.expect(&message('*', "r", "live"));
    // A horizon before the node started cannot be proven complete.
    let mut old = resp(addr);
    let day_ago = common::unix_now() - 86_400;
    old.send(&cmd(&[
        b"KRAKEN.RETROSUBSCRIBE",
        day_ago.to_string().as_bytes(),
        b"r",
    ]));
    // Nothing is replayed then: the client reloads instead.
    old.expect(&subscribed("r", 1));
    old.expect(&retro('*', day_ago, "not_found"));
    mp.publish1("r", b"after");
    old.expect(&message('*', "r", "after"));
}

#[test]
fn register_then_subscribe_replays_what_came_between() {
    let (node, addr) = node();
    let mut c = resp(addr);
    c.send(&cmd(&[b"KRAKEN.REGISTER"]));
    let first = c.read_line();
    assert_eq!(first, b"*3\r\n");
    c.expect(b"$15\r\nkraken.register\r\n");
    let len_line = c.read_line();
    let len: usize = std::str::from_utf8(&len_line[1..len_line.len() - 2])
        .unwrap()
        .parse()
        .unwrap();
    let secs = c.read_exact_bytes(len + 2);
    let horizon: i64 = std::str::from_utf8(&secs[..len]).unwrap().parse().unwrap();
    c.expect(b"$2\r\nok\r\n");
    let mut mp = node.connect();
    mp.publish1("g", b"gap");
    c.send(&cmd(&[b"SUBSCRIBE", b"g"]));
    c.expect(&subscribed("g", 1));
    c.expect(&message('*', "g", "gap"));
    c.expect(&retro('*', horizon, "stored"));
    // The horizon is used up: the next SUBSCRIBE is a plain one.
    c.send(&cmd(&[b"SUBSCRIBE", b"h"]));
    c.expect(&subscribed("h", 2));
    mp.publish1("h", b"x");
    c.expect(&message('*', "h", "x"));
}

#[test]
fn a_subscriber_that_stops_reading_is_closed_as_a_slow_consumer() {
    let (node, addr) = node_with(&[("max_queue_bytes", "65536")]);
    let r = subscriber(addr, &["flood"]);
    let mut mp = node.connect();
    let payload = vec![b'x'; 16 * 1024];
    let deadline = Instant::now() + ASYNC_TIMEOUT * 4;
    // Publish until the node gives up on the reader (socket buffers first
    // absorb a few megabytes).
    while node.stats()["slow_consumers_closed"] == "0" {
        assert!(
            Instant::now() < deadline,
            "the RESP subscriber was never closed"
        );
        let entries: Vec<(&[&str], &[u8])> =
            (0..64).map(|_| (&["flood"][..], &payload[..])).collect();
        mp.publish(&entries);
    }
    drop(r);
    node.wait_for_stat("curr_resp_connections", |v| v == 0);
    assert!(node.log_contains("slow consumer"));
}

#[test]
fn max_tcp_clients_counts_both_ports() {
    let (node, addr) = node_with(&[("max_tcp_clients", "1")]);
    let mut m = node.connect();
    m.send(b"version\r\n");
    let _ = m.read_line();
    let mut r = resp(addr);
    assert_eq!(
        r.wait_closed(Duration::from_secs(5)),
        b"-ERR max number of clients reached\r\n"
    );
}

// ---------------------------------------------------------------------------
// Real clients
// ---------------------------------------------------------------------------

fn require(tool: &str, probe: &[&str], hint: &str) {
    match Command::new(tool)
        .args(probe)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
    {
        Ok(s) if s.success() => {}
        other => panic!("{tool} is needed for this test ({hint}; .ci/run installs it): {other:?}"),
    }
}

fn redis_cli(addr: SocketAddr, args: &[&str]) -> String {
    let out = Command::new("redis-cli")
        .args(["-h", "127.0.0.1", "-p", &addr.port().to_string()])
        .args(args)
        .output()
        .expect("run redis-cli");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn redis_cli_subscribes_publishes_and_sees_errors() {
    require("redis-cli", &["--version"], "Debian's redis-tools");
    let (node, addr) = node();
    assert_eq!(redis_cli(addr, &["PING"]), "PONG\n");
    assert_eq!(redis_cli(addr, &["PUBLISH", "cli", "nobody"]), "0\n");
    assert!(redis_cli(addr, &["FLUSHALL"]).starts_with("ERR unknown command 'FLUSHALL'"));
    assert!(redis_cli(addr, &["PSUBSCRIBE", "c*"]).contains("PSUBSCRIBE is not supported"));
    let mut sub = Command::new("redis-cli")
        .args(["-h", "127.0.0.1", "-p", &addr.port().to_string()])
        .args(["SUBSCRIBE", "cli"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("run redis-cli");
    node.wait_for_stat("subscriptions", |v| v == 1);
    let mut mp = node.connect();
    mp.publish1("cli", b"from-memcached");
    assert_eq!(redis_cli(addr, &["PUBLISH", "cli", "from-cli"]), "1\n");
    let mut stdout = sub.stdout.take().unwrap();
    let want = "subscribe\ncli\n1\nmessage\ncli\nfrom-memcached\nmessage\ncli\nfrom-cli\n";
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut got = Vec::new();
        let mut buf = [0u8; 256];
        while got.len() < want.len() {
            match stdout.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
        let _ = tx.send(got);
    });
    let got = rx.recv_timeout(ASYNC_TIMEOUT);
    let _ = sub.kill();
    let _ = sub.wait();
    let got = got.expect("redis-cli printed the messages in time");
    assert_eq!(
        String::from_utf8_lossy(&got),
        "subscribe\ncli\n1\nmessage\ncli\nfrom-memcached\nmessage\ncli\nfrom-cli\n"
    );
}

const REDIS_PY_SCRIPT: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/docs/examples/redis_py_subscriber.py"
);

#[test]
fn the_documented_redis_py_subscriber_works_in_both_protocols() {
    require("python3", &["-c", "import redis"], "PyPI's redis");
    for protocol in ["2", "3"] {
        let (node, addr) = node();
        let child = Command::new("python3")
            .arg(REDIS_PY_SCRIPT)
            .args([
                "127.0.0.1",
                &addr.port().to_string(),
                &node.port().to_string(),
                protocol,
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run python3");
        let out = wait_output(child, Duration::from_secs(60));
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "the redis-py example failed (RESP{protocol}):\n{text}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(text.contains("ALL OK"), "{text}");
    }
}

fn wait_output(mut child: std::process::Child, timeout: Duration) -> std::process::Output {
    let deadline = Instant::now() + timeout;
    while child.try_wait().unwrap().is_none() {
        if Instant::now() >= deadline {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!(
                "still running after {timeout:?}: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

#[test]
fn the_rust_redis_crate_subscribes_and_publishes() {
    let (node, addr) = node();
    let url = format!("redis://127.0.0.1:{}/", addr.port());
    let client = redis::Client::open(url).unwrap();
    let mut publisher = client.get_connection().unwrap();
    let mut con = client.get_connection().unwrap();
    let mut pubsub = con.as_pubsub();
    pubsub.set_read_timeout(Some(ASYNC_TIMEOUT)).unwrap();
    pubsub.subscribe("rust").unwrap();
    node.wait_for_stat("subscriptions", |v| v == 1);
    let mut mp = node.connect();
    mp.publish1("rust", b"from-memcached");
    let n: i64 = redis::cmd("PUBLISH")
        .arg("rust")
        .arg("from-redis-rs")
        .query(&mut publisher)
        .unwrap();
    assert_eq!(n, 1);
    for want in ["from-memcached", "from-redis-rs"] {
        let msg = pubsub.get_message().unwrap();
        assert_eq!(msg.get_channel_name(), "rust");
        assert_eq!(msg.get_payload::<String>().unwrap(), want);
    }
    pubsub.unsubscribe("rust").unwrap();
    node.wait_for_stat("subscriptions", |v| v == 0);
    let err = redis::cmd("GET")
        .arg("k")
        .query::<String>(&mut publisher)
        .unwrap_err();
    assert!(err.to_string().contains("unknown command"), "{err}");
    let pong: String = redis::cmd("PING").query(&mut publisher).unwrap();
    assert_eq!(pong, "PONG");
    drop(pubsub);
    // Retro: register at a horizon, then the crate's own subscribe().
    let horizon = node.fresh_horizon();
    mp.publish1("late", b"while-away");
    let mut late = client.get_connection().unwrap();
    let reg: Vec<String> = redis::cmd("KRAKEN.REGISTER")
        .arg(horizon)
        .query(&mut late)
        .unwrap();
    assert_eq!(
        reg,
        vec![
            "kraken.register".to_string(),
            horizon.to_string(),
            "ok".into()
        ]
    );
    let mut late = late.as_pubsub();
    late.set_read_timeout(Some(ASYNC_TIMEOUT)).unwrap();
    late.subscribe("late").unwrap();
    let msg = late.get_message().unwrap();
    assert_eq!(msg.get_channel_name(), "late");
    assert_eq!(msg.get_payload::<String>().unwrap(), "while-away");
    mp.publish1("late", b"live");
    let msg = late.get_message().unwrap();
    assert_eq!(msg.get_payload::<String>().unwrap(), "live");
}

#[test]
fn a_burst_to_200_subscribers_goes_out_in_few_writes() {
    const SUBSCRIBERS: usize = 200;
    const MESSAGES: usize = 50;
    let (node, addr) = node();
    let mut subs: Vec<Client> = (0..SUBSCRIBERS)
        .map(|_| subscriber(addr, &["burst"]))
        .collect();
    node.wait_for_stat("subscriptions", |v| v == SUBSCRIBERS as i64);
    // 50 separate publish requests, pipelined in one write.
    let mut pipeline = Vec::new();
    for i in 0..MESSAGES {
        pipeline.extend(common::publish_request(&[(
            &["burst"],
            format!("b{i}").as_bytes(),
        )]));
    }
    let mut mp = node.connect();
    mp.send(&pipeline);
    for _ in 0..MESSAGES {
        mp.expect(b"STORED\r\n");
    }
    for s in &mut subs {
        for i in 0..MESSAGES {
            s.expect(&message('*', "burst", &format!("b{i}")));
        }
    }
    let total = (SUBSCRIBERS * MESSAGES) as i64;
    node.wait_for_stat("resp_pushes", |v| v == total);
    let batches = node.wait_for_stat("resp_push_batches", |v| v >= SUBSCRIBERS as i64);
    // Coalesced: nowhere near one write per push.
    assert!(
        batches <= total / 10,
        "{batches} batches for {total} pushes"
    );
}

/// A channel whose shard (of 4) runs on another of `threads` router
/// threads than `topic`'s (shard i runs on thread i % threads; with 4
/// threads, simply another shard).
fn channel_apart_from(topic: &str, threads: usize) -> String {
    let thread = |t: &str| shard_of(t.as_bytes(), 4) % threads;
    (0..)
        .map(|n| format!("calm{n}"))
        .find(|t| thread(t) != thread(topic))
        .unwrap()
}

/// A publish is answered once its pushes to the subscribers on the
/// publisher's worker are written, as Redis writes a publisher's answer
/// after the pushes of its turn: when the publisher has its answers, the
/// pushes are already in the subscribers' sockets (checked without waiting;
/// a push the kernel delivers a moment late is allowed in a few, an answer
/// written before its pushes would fail nearly every check). The shards
/// run on a router thread of their own, as by default.
#[test]
fn a_publish_is_answered_after_its_pushes_are_written() {
    const SUBSCRIBERS: usize = 20;
    const ROUNDS: usize = 10;
    let (node, addr) = node_with(&[("worker_threads", "1"), ("router_threads", "1")]);
    let mut subs: Vec<Client> = (0..SUBSCRIBERS)
        .map(|_| subscriber(addr, &["first"]))
        .collect();
    node.wait_for_stat("subscriptions", |v| v == SUBSCRIBERS as i64);
    let mut publisher = resp(addr);
    let mut late = 0;
    for round in 0..ROUNDS {
        let payloads: Vec<String> = (0..16).map(|i| format!("r{round}m{i}")).collect();
        let mut pipeline = Vec::new();
        for p in &payloads {
            pipeline.extend(cmd(&[b"PUBLISH", b"first", p.as_bytes()]));
        }
        publisher.send(&pipeline);
        for _ in &payloads {
            publisher.expect(format!(":{SUBSCRIBERS}\r\n").as_bytes());
        }
        let want: Vec<u8> = payloads
            .iter()
            .flat_map(|p| message('*', "first", p))
            .collect();
        for s in &mut subs {
            if !s.has_now(&want) {
                late += 1;
                s.expect(&want);
            }
        }
    }
    let checks = SUBSCRIBERS * ROUNDS;
    assert!(
        late * 10 <= checks,
        "{late} of {checks} subscribers did not have their pushes when the publisher had its answers"
    );
}

/// A ring of push wakes waits for the publish batches its worker has in
/// flight to the shards; a batch whose shard panics on it is answered with
/// an error and no longer held, so the pushes of the batches around it
/// still go out, and their publishes are answered.
#[test]
fn a_shard_panic_does_not_hold_the_pushes_of_other_publishes() {
    let (node, addr) = node_with(&[
        ("fault_injection", "true"),
        ("worker_threads", "1"),
        ("router_threads", "1"),
        ("num_router_shards", "4"),
    ]);
    let panic_topic = "__kraken_fault_shard_panic__";
    let calm = channel_apart_from(panic_topic, 4);
    let mut sub = subscriber(addr, &[&calm]);
    node.wait_for_stat("subscriptions", |v| v == 1);
    let mut other = node.connect();
    let mut publisher = resp(addr);
    for i in 0..3 {
        let mut pipeline = cmd(&[b"PUBLISH", calm.as_bytes(), format!("before{i}").as_bytes()]);
        pipeline.extend(cmd(&[b"PUBLISH", panic_topic.as_bytes(), b"boom"]));
        publisher.send(&pipeline);
        // A memcached-dialect publisher's batch in flight at the same time.
        other.send(&common::publish_request(&[(
            &[&calm],
            format!("other{i}").as_bytes(),
        )]));
        publisher.expect(b":1\r\n");
        publisher.expect_line_starting("-ERR ");
        other.expect(b"STORED\r\n");
        publisher.send(&cmd(&[
            b"PUBLISH",
            calm.as_bytes(),
            format!("after{i}").as_bytes(),
        ]));
        publisher.expect(b":1\r\n");
        let mut got = Vec::new();
        for _ in 0..3 {
            let head = format!("*3\r\n$7\r\nmessage\r\n${}\r\n{calm}\r\n", calm.len());
            sub.expect(head.as_bytes());
            let len: usize = sub.expect_line_starting("$")[1..].parse().unwrap();
            let payload = sub.read_exact_bytes(len + 2);
            got.push(String::from_utf8_lossy(&payload[..len]).into_owned());
        }
        got.sort();
        let mut want = vec![
            format!("after{i}"),
            format!("before{i}"),
            format!("other{i}"),
        ];
        want.sort();
        assert_eq!(got, want);
    }
    node.wait_for_stat("shard_restarts", |v| v == 3);
}

/// A ring waits for its worker's batches in flight only a moment: a shard
/// stalled on another publisher's message does not hold back the pushes
/// of messages whose shards answered (nor their publishers' answers).
#[test]
fn a_stalled_shard_holds_back_only_its_own_messages() {
    // One worker and two router threads: shard i runs on router thread
    // i % 2, so `calm` and the stall topic are on different threads.
    let (node, addr) = node_with(&[
        ("fault_injection", "true"),
        ("worker_threads", "3"),
        ("router_threads", "2"),
        ("num_router_shards", "4"),
    ]);
    let stall = "__kraken_fault_shard_stall__";
    let calm = channel_apart_from(stall, 2);
    let mut sub = subscriber(addr, &[&calm]);
    node.wait_for_stat("subscriptions", |v| v == 1);
    let mut slow = resp(addr);
    let mut publisher = resp(addr);
    slow.send(&cmd(&[b"PUBLISH", stall.as_bytes(), b"slow"]));
    // Its batch is in flight (its shard's thread asleep for a second).
    std::thread::sleep(Duration::from_millis(100));
    let sent = Instant::now();
    publisher.send(&cmd(&[b"PUBLISH", calm.as_bytes(), b"quick"]));
    sub.expect(&message('*', &calm, "quick"));
    publisher.expect(b":1\r\n");
    let took = sent.elapsed();
    assert!(
        took < Duration::from_millis(500),
        "the push waited {took:?} for the stalled shard"
    );
    slow.expect(b":0\r\n");
}

/// A push subscriber's queue fails while its neighbours on the same worker
/// are pushed to: that client alone is told and closed; the others' pushes
/// (rung together by the worker's ringer, handed from queue to connection
/// within one task) go on, before and after the failure.
#[test]
fn a_push_subscribers_queue_panic_ends_that_client_only() {
    let (node, addr) = node_with(&[("fault_injection", "true"), ("worker_threads", "1")]);
    let mut victim = subscriber(addr, &["shared"]);
    let mut bystanders: Vec<Client> = (0..20).map(|_| subscriber(addr, &["shared"])).collect();
    node.wait_for_stat("subscriptions", |v| v == 21);
    let mut publisher = node.connect();
    publisher.publish1("shared", b"before");
    victim.expect(&message('*', "shared", "before"));
    for b in &mut bystanders {
        b.expect(&message('*', "shared", "before"));
    }

    victim.send(&cmd(&[b"SUBSCRIBE", b"__kraken_fault_queue_panic__"]));
    let said = String::from_utf8_lossy(&victim.wait_closed(ASYNC_TIMEOUT)).into_owned();
    assert!(said.contains("queue failed"), "{said:?}");
    node.wait_for_stat("client_failures", |n| n == 1);
    node.wait_for_stat("subscriptions", |v| v == 20);

    for i in 0..5 {
        publisher.publish1("shared", format!("after{i}").as_bytes());
    }
    for b in &mut bystanders {
        for i in 0..5 {
            b.expect(&message('*', "shared", &format!("after{i}")));
        }
    }
    let mut newcomer = subscriber(addr, &["shared"]);
    publisher.publish1("shared", b"late");
    newcomer.expect(&message('*', "shared", "late"));
    bystanders[0].expect(&message('*', "shared", "late"));
}
