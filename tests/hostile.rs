//! Hostile clients against the real binary: inputs built to crash, bloat or
//! stall the node (docs/HARDENING.md lists them and what each costs now).
//!
//! - A `MESSAGE` line naming one topic millions of times is one topic.
//! - An entry naming more distinct topics than `max_topics_per_message` is
//!   refused whole; the connection stays open.
//! - An oversized data block is skipped for about the CPU of reading it
//!   (measured from `/proc/<pid>/stat`), and a connection that keeps
//!   sending them is closed.
//! - `MESSAGE` lines and subscribe bodies padded with megabytes of spaces
//!   parse quickly and mean what they say.
//! - Caps at their boundary: `max_subscriptions_per_client`,
//!   `max_topics_per_node` (refused whole, nothing applied), the
//!   pending-request budget (the connection passing it is refused and
//!   closed, the others complete); a huge subscribe and its cleanup leave
//!   an honest pair whole, a retro subscribe sliced into chunks replays
//!   everything once; a huge subscribe, taken by its queue a slice at a
//!   time, is whole before what is pipelined behind it, leaves nothing
//!   when its client goes in the middle, and is refused whole when its
//!   body is bad or it passes the cap part-way.
//! - A pipeliner that never reads is not read from, then dropped (and its
//!   disconnect noticed at once); accepted sockets have TCP keepalive; a
//!   refused-connection flood logs a bounded number of warnings.
//! - Every attack at once (slowloris, a never-reading pipeliner, oversized
//!   blocks, padded and repeated-topic publishes, huge subscribes): an
//!   honest pair loses nothing, and everything is given back after.
//! - Local users: the runtime directory must be the node's own, the console
//!   log is never written through a planted symlink, and the control client
//!   refuses a socket served by another user (`SO_PEERCRED`). The cases that
//!   need a second user run as root (as CI does) with `setpriv`.

mod common;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

const MIB: usize = 1024 * 1024;

/// The node's CPU time so far (user + system), from `/proc/<pid>/stat`.
fn cpu_time(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("read /proc/pid/stat");
    // Fields after the command name (which may hold spaces): state is
    // field 3, utime 14 and stime 15.
    let rest = stat.rsplit_once(')').expect("a stat line").1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    // SAFETY: sysconf has no preconditions.
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as u64;
    Duration::from_millis(ticks * 1000 / per_second)
}

/// Sends `header`, then `n` bytes of `fill`, then `trailer`, in 1 MiB writes.
fn send_padded(client: &mut Client, header: &[u8], n: usize, fill: u8, trailer: &[u8]) {
    client.send(header);
    let chunk = vec![fill; MIB];
    let mut left = n;
    while left > 0 {
        let k = left.min(MIB);
        client.send(&chunk[..k]);
        left -= k;
    }
    client.send(trailer);
}

fn expect_version(client: &mut Client) {
    client.send(b"version\r\n");
    client.expect_line_starting("VERSION ");
}

// ---- Topics per message ------------------------------------------------------

#[test]
fn a_topic_named_millions_of_times_reaches_each_of_100_subscribers_once_listing_it_once() {
    let node = Node::start(&[]);
    let mut subscribers: Vec<Client> = (0..100)
        .map(|_| {
            let mut c = node.connect();
            c.subscribe(&["t"]);
            c
        })
        .collect();
    let mut publisher = node.connect();
    // 2 million namings of `t`: a 4 MiB header line.
    let names = 2_000_000;
    let block_len = b"MESSAGE ".len() + 2 * names + b"1\r\nx".len();
    let header = format!("set publish 0 0 {block_len}\r\nMESSAGE ");
    let started = Instant::now();
    send_padded(
        &mut publisher,
        header.as_bytes(),
        0,
        b' ',
        &[&b"t ".repeat(names)[..], b"1\r\nx\r\n"].concat(),
    );
    publisher.expect(b"STORED\r\n");
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "took {:?}",
        started.elapsed()
    );
    for sub in &mut subscribers {
        expect_entries(sub, b"MESSAGE t 1\r\nx\r\n");
    }
    expect_version(&mut publisher);
}

#[test]
fn an_entry_naming_too_many_topics_is_refused_whole_and_the_connection_stays_open() {
    let node = Node::start(&[("max_topics_per_message", "3")]);
    let mut sub = node.connect();
    sub.subscribe(&["a", "d"]);
    let mut publisher = node.connect();
    let block = publish_block(&[(&["a"], b"first"), (&["a", "b", "c", "d"], b"second")]);
    publisher.send(&set_request("publish", &block));
    publisher.expect(b"CLIENT_ERROR too many topics in one message\r\n");
    // Nothing of the block was published.
    assert_nothing_arrives(&mut sub);
    // Repeats do not count: three distinct topics named six times is fine.
    publisher.publish(&[(&["a", "b", "c", "a", "b", "c"], b"ok")]);
    expect_entries(&mut sub, b"MESSAGE a 2\r\nok\r\n");
    expect_version(&mut publisher);
    let s = node.stats();
    assert_eq!(s["refused_publishes_topics"], "1", "{s:?}");
    assert_eq!(s["refused_publishes_bad"], "0", "{s:?}");
    // The retro buffers hold the published message, within their budget.
    let held: u64 = s["retro_bytes"].parse().unwrap();
    let budget: u64 = s["retro_bytes_budget"].parse().unwrap();
    assert!(held > 0 && held <= budget, "{s:?}");
}

#[test]
fn the_default_topic_limit_is_ten_thousand() {
    let node = Node::start(&[]);
    let mut publisher = node.connect();
    let topics: Vec<String> = (0..10_001).map(|i| format!("t{i}")).collect();
    let refs: Vec<&str> = topics.iter().map(String::as_str).collect();
    publisher.send(&publish_request(&[(&refs, b"x")]));
    publisher.expect(b"CLIENT_ERROR too many topics in one message\r\n");
    publisher.publish(&[(&refs[..10_000], b"x")]);
}

// ---- Oversized blocks ----------------------------------------------------------

#[test]
fn an_oversized_block_is_skipped_for_about_the_cost_of_reading_it() {
    let node = Node::start(&[]);
    let mut client = node.connect();
    expect_version(&mut client);
    // 512 MiB, over the default 16 MiB limit. The node used to spend about
    // 14 s of CPU per GiB skipping (one 64-byte read at a time): about 7 s
    // here. Reading it from the socket in large reads costs well under 1 s.
    let n = 512 * MIB;
    let before = cpu_time(node.pid());
    let started = Instant::now();
    send_padded(
        &mut client,
        format!("set publish 0 0 {n}\r\n").as_bytes(),
        n,
        b'x',
        b"\r\n",
    );
    client.expect(b"CLIENT_ERROR data block too large\r\n");
    expect_version(&mut client);
    let used = cpu_time(node.pid()) - before;
    eprintln!(
        "skipping {} MiB took {:?} of node CPU, {:?} of wall time",
        n / MIB,
        used,
        started.elapsed()
    );
    assert!(
        used < Duration::from_secs(2),
        "skipping {} MiB cost the node {used:?} of CPU",
        n / MIB
    );
}

#[test]
fn a_connection_that_keeps_sending_oversized_blocks_is_closed() {
    let node = Node::start(&[("max_request_bytes", "1000")]);
    let oversized = set_request("publish", &[b'x'; 1001]);
    // Seven in a row, then an accepted request: the streak starts again.
    let mut client = node.connect();
    for _ in 0..7 {
        client.send(&oversized);
        client.expect(b"CLIENT_ERROR data block too large\r\n");
    }
    expect_version(&mut client);
    // Eight in a row: the eighth is answered, then the connection closes.
    for _ in 0..8 {
        client.send(&oversized);
        client.expect(b"CLIENT_ERROR data block too large\r\n");
    }
    client.expect_closed();
    expect_version(&mut node.connect());
    assert_eq!(stat(&node, "refused_publishes_size"), 15);
}

// ---- Padding ---------------------------------------------------------------

#[test]
fn message_lines_and_subscribe_bodies_padded_with_megabytes_of_spaces_parse_quickly() {
    let node = Node::start(&[]);
    let pad = 15 * MIB;
    let before = cpu_time(node.pid());
    // A subscribe of two topics with 15 MiB of spaces between them.
    let mut sub = node.connect();
    let body_len = 1 + pad + 1;
    send_padded(
        &mut sub,
        format!("set subscribe 0 0 {body_len}\r\na").as_bytes(),
        pad,
        b' ',
        b"b\r\n",
    );
    sub.expect(b"STORED\r\n");
    // A publish whose MESSAGE line is mostly spaces.
    let mut publisher = node.connect();
    let block_len = b"MESSAGE b".len() + pad + b" c 1\r\nx".len();
    send_padded(
        &mut publisher,
        format!("set publish 0 0 {block_len}\r\nMESSAGE b").as_bytes(),
        pad,
        b' ',
        b" c 1\r\nx\r\n",
    );
    publisher.expect(b"STORED\r\n");
    expect_entries(&mut sub, b"MESSAGE b 1\r\nx\r\n");
    let used = cpu_time(node.pid()) - before;
    eprintln!("two 15 MiB padded requests took {used:?} of node CPU");
    assert!(used < Duration::from_secs(2), "{used:?} of CPU");
    expect_version(&mut publisher);
}

// ---- Subscription caps and sliced work ----------------------------------------

fn stat(node: &Node, name: &str) -> i64 {
    let s = node.stats();
    s.get(name)
        .unwrap_or_else(|| panic!("stats has no `{name}`: {s:?}"))
        .parse()
        .unwrap()
}

#[test]
fn a_subscribe_past_max_subscriptions_per_client_is_refused_whole() {
    let node = Node::start(&[("max_subscriptions_per_client", "5")]);
    let mut client = node.connect();
    client.subscribe(&["a", "b", "c", "d"]);
    // One new topic and one held: 5, at the limit.
    client.subscribe(&["a", "e"]);
    // Two more would be 7: refused, neither applied.
    client.send(&set_request("subscribe", b"f g"));
    client.expect(b"CLIENT_ERROR too many subscriptions\r\n");
    // Holding again what it holds is no change.
    client.subscribe(&["a", "b"]);
    let mut publisher = node.connect();
    publisher.publish(&[(&["f"], b"no"), (&["g"], b"no"), (&["e"], b"yes")]);
    expect_entries(&mut client, b"MESSAGE e 3\r\nyes\r\n");
    assert_nothing_arrives(&mut client);
    assert_eq!(stat(&node, "refused_subscribes_client"), 1);
    assert_eq!(stat(&node, "subscriptions"), 5);
    // Room made, room used.
    client.unsubscribe(&["a"]);
    client.subscribe(&["f"]);
    expect_version(&mut client);
}

#[test]
fn a_subscribe_adding_topics_past_max_topics_per_node_is_refused_and_undone() {
    let node = Node::start(&[("max_topics_per_node", "4")]);
    let mut first = node.connect();
    first.subscribe(&["t1", "t2", "t3"]);
    // Topics the node holds already are not new: no limit applies.
    let mut second = node.connect();
    second.subscribe(&["t1", "t2", "t3", "t4"]);
    assert_eq!(stat(&node, "topics"), 4);
    // Two new topics (beside held ones): refused, nothing of it applied.
    second.send(&set_request("subscribe", b"t1 t5 t6"));
    second.expect(b"SERVER_ERROR too many topics on this node\r\n");
    node.wait_for_stat("subscriptions", |v| v == 7);
    assert_eq!(stat(&node, "topics"), 4);
    assert_eq!(stat(&node, "refused_subscribes_node"), 1);
    let mut publisher = node.connect();
    publisher.publish(&[(&["t5"], b"no"), (&["t1"], b"yes")]);
    expect_entries(&mut first, b"MESSAGE t1 3\r\nyes\r\n");
    expect_entries(&mut second, b"MESSAGE t1 3\r\nyes\r\n");
    assert_nothing_arrives(&mut second);
    // A topic given up frees a place.
    first.unsubscribe(&["t3"]);
    second.unsubscribe(&["t3"]);
    node.wait_for_stat("topics", |v| v == 3);
    second.subscribe(&["t5"]);
    expect_version(&mut second);
}

#[test]
fn clients_racing_to_add_topics_never_pass_max_topics_per_node() {
    // Small subscribes are answered before their shards apply them (their
    // new topics reserved under the cap first): racing clients must still
    // never take the node past the cap, and every STORED must hold.
    let node = Node::start(&[("max_topics_per_node", "1000")]);
    let mut clients: Vec<Client> = (0..8).map(|_| node.connect()).collect();
    for (c, client) in clients.iter_mut().enumerate() {
        let burst: Vec<u8> = (0..40)
            .flat_map(|r| set_request("subscribe", &many_topics(&format!("c{c}r{r}t"), 5)))
            .collect();
        client.send(&burst);
    }
    let mut stored = 0;
    for client in &mut clients {
        for _ in 0..40 {
            match &client.read_line()[..] {
                b"STORED\r\n" => stored += 5,
                b"SERVER_ERROR too many topics on this node\r\n" => {}
                other => panic!("unexpected answer {:?}", String::from_utf8_lossy(other)),
            }
        }
    }
    assert!(
        stored <= 1000,
        "{stored} topics answered STORED past the cap of 1000"
    );
    assert!(
        stored >= 900,
        "only {stored} topics taken: refused too early"
    );
    // `stats` counts what was answered (its shards settled first).
    assert_eq!(stat(&node, "topics"), stored);
    assert_eq!(stat(&node, "subscriptions"), stored);
}

/// `n` topics `<prefix>0` .. `<prefix>{n-1}`, space-separated.
fn many_topics(prefix: &str, n: usize) -> Vec<u8> {
    let names: Vec<String> = (0..n).map(|i| format!("{prefix}{i}")).collect();
    names.join(" ").into_bytes()
}

#[test]
fn a_retro_subscribe_of_many_topics_replays_what_every_chunk_found_once() {
    let node = Node::start(&[]);
    let mut publisher = node.connect();
    let horizon = node.fresh_horizon();
    // Far apart in a 20000-topic subscribe: in different chunks (of 1024).
    publisher.publish(&[(&["m0"], b"first"), (&["m9000", "m19999"], b"second")]);
    let mut client = node.connect();
    let body = [
        format!("{horizon}\r\n").into_bytes(),
        many_topics("m", 20_000),
    ]
    .concat();
    client.send(&set_request("retro_subscribe", &body));
    client.expect(b"STORED\r\n");
    let got = poll_exactly(&mut client, 2);
    assert_eq!(payloads(&got), ["first", "second"]);
    assert_eq!(got[1].topics.len(), 2, "{}", show_msgs(&got));
    publisher.publish1("m12345", b"live");
    expect_entries(&mut client, b"MESSAGE m12345 4\r\nlive\r\n");
}

/// An honest publisher on its own thread: `n` messages ("0", "1", ...)
/// to topic `honest`, 5 ms apart.
fn honest_publisher(addr: std::net::SocketAddr, n: usize) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let mut p = Client::connect(addr);
        for i in 0..n {
            p.publish1("honest", format!("{i}").as_bytes());
            std::thread::sleep(Duration::from_millis(5));
        }
    })
}

/// The honest subscriber got all `n` messages, in order; then the node
/// holds its one topic and nothing else.
#[track_caller]
fn expect_honest_whole(node: &Node, honest_sub: &mut Client, n: usize) {
    let got = poll_until(honest_sub, |m| m.len() >= n, Duration::from_secs(20));
    let want: Vec<String> = (0..n).map(|i| i.to_string()).collect();
    assert_eq!(
        payloads(&got),
        want,
        "the honest pair lost or reordered messages"
    );
    node.wait_for_stat("topics", |v| v == 1);
    node.wait_for_stat("subscriptions", |v| v == 1);
}

#[test]
fn a_huge_subscribe_and_its_cleanup_leave_an_honest_pair_whole() {
    let node = Node::start(&[]);
    let mut honest_sub = node.connect();
    honest_sub.subscribe(&["honest"]);
    // The honest publisher publishes 300 messages while the attack runs.
    let publisher = honest_publisher(node.addr(), 300);
    // 100000 topics in one subscribe (25 chunks), twice, then gone.
    let body = many_topics("big", 100_000);
    for _ in 0..2 {
        let mut attacker = node.connect();
        attacker.send(&set_request("subscribe", &body));
        attacker.expect(b"STORED\r\n");
        attacker.send(b"quit\r\n");
        attacker.expect_closed();
    }
    publisher.join().unwrap();
    // The attacker's topics are all given back.
    expect_honest_whole(&node, &mut honest_sub, 300);
}

/// Huge subscribes of several clients at once take turns in their thread's
/// bulk lanes: on one thread (shards included), six clients subscribing
/// 30,000 topics each, three of them leaving before the answer, all end
/// whole: those who stayed hold every topic, those who left hold none, and
/// once all have gone the node holds only the honest pair's topic, which
/// lost nothing meanwhile.
#[test]
fn huge_subscribes_of_many_clients_at_once_take_turns_and_all_end_whole() {
    let node = Node::start(&[("worker_threads", "1"), ("router_threads", "0")]);
    let mut honest_sub = node.connect();
    honest_sub.subscribe(&["honest"]);
    let publisher = honest_publisher(node.addr(), 200);
    const EACH: usize = 30_000;
    let mut stayed = Vec::new();
    let attackers: Vec<_> = (0..6)
        .map(|k| {
            let mut c = node.connect();
            c.send(&set_request(
                "subscribe",
                &many_topics(&format!("b{k}."), EACH),
            ));
            c
        })
        .collect();
    for (k, mut c) in attackers.into_iter().enumerate() {
        if k % 2 == 0 {
            c.expect(b"STORED\r\n");
            stayed.push(c);
        } // else: gone before its answer, mid-change.
    }
    node.wait_for_stat("topics", |v| v == 1 + 3 * EACH as i64);
    node.wait_for_stat("subscriptions", |v| v == 1 + 3 * EACH as i64);
    drop(stayed);
    publisher.join().unwrap();
    expect_honest_whole(&node, &mut honest_sub, 200);
}

/// The entries of a `get messages` reply read raw (not `END`).
#[track_caller]
fn entries_of(raw: &[u8]) -> Vec<Msg> {
    assert_ne!(raw, b"END\r\n", "want messages, got none");
    let start = raw.iter().position(|&b| b == b'\n').unwrap() + 1;
    parse_entries(&raw[start..raw.len() - 5])
}

#[test]
fn a_huge_subscribe_is_whole_before_what_is_pipelined_behind_it() {
    // The queue takes a 100000-topic body a slice at a time, letting its
    // worker run in between, but handles nothing else of the client
    // meanwhile: the poll behind the subscribe sees all of its replay,
    // the unsubscribe behind that poll removes all of it.
    let node = Node::start(&[]);
    let mut publisher = node.connect();
    let mut client = node.connect();
    client.register();
    // Far apart in the body: in different slices (of 4096).
    publisher.publish(&[(&["p7"], b"first"), (&["p54321", "p99999"], b"second")]);
    let body = many_topics("p", 100_000);
    let mut pipelined = set_request("subscribe", &body);
    pipelined.extend_from_slice(b"get messages\r\n");
    pipelined.extend_from_slice(&set_request("unsubscribe", &body));
    pipelined.extend_from_slice(b"get messages\r\n");
    client.send(&pipelined);
    client.expect(b"STORED\r\n");
    let got = entries_of(&client.read_messages_reply());
    assert_eq!(payloads(&got), ["first", "second"], "{}", show_msgs(&got));
    assert_eq!(got[1].topics, ["p54321", "p99999"]);
    client.expect(b"STORED\r\n");
    client.expect(b"END\r\n");
    publisher.publish1("p500", b"late");
    assert_nothing_arrives(&mut client);
    node.wait_for_stat("topics", |v| v == 0);
    // A client gone in the middle of its huge subscribe leaves nothing.
    let mut leaver = node.connect();
    leaver.send(&set_request("subscribe", &body));
    drop(leaver);
    // Its queue stops (and counts the connection closed) once the
    // subscribe is done and its cleanup under way: the publisher, the
    // client and the stats connection are left.
    node.wait_for_stat("curr_connections", |v| v == 3);
    node.wait_for_stat("topics", |v| v == 0);
    node.wait_for_stat("subscriptions", |v| v == 0);
}

#[test]
fn a_huge_bad_or_oversized_subscribe_is_refused_whole() {
    let node = Node::start(&[("max_subscriptions_per_client", "50000")]);
    let mut publisher = node.connect();
    let mut client = node.connect();
    client.register();
    publisher.publish1("q3", b"kept");
    // A bad topic at the very end of a long body: refused before anything
    // of it is applied (the register is still there for the next one).
    let mut bad = many_topics("q", 100_000);
    bad.extend_from_slice(b" bad\rtopic");
    client.send(&set_request("subscribe", &bad));
    client.expect(b"CLIENT_ERROR bad topic\r\n");
    client.send(&set_request("unsubscribe", &bad));
    client.expect(b"CLIENT_ERROR bad topic\r\n");
    assert_eq!(stat(&node, "topics"), 0);
    client.send(&set_request("subscribe", &many_topics("q", 40_000)));
    client.expect(b"STORED\r\n");
    expect_entries(&mut client, b"MESSAGE q3 4\r\nkept\r\n");
    // 20000 more would pass the cap part-way through: nothing of it stays.
    client.send(&set_request("subscribe", &many_topics("r", 20_000)));
    client.expect(b"CLIENT_ERROR too many subscriptions\r\n");
    assert_eq!(stat(&node, "refused_subscribes_client"), 1);
    node.wait_for_stat("subscriptions", |v| v == 40_000);
    assert_eq!(stat(&node, "topics"), 40_000);
    publisher.publish(&[(&["r5"], b"no"), (&["q39999"], b"yes")]);
    expect_entries(&mut client, b"MESSAGE q39999 3\r\nyes\r\n");
    assert_nothing_arrives(&mut client);
    // Room is what the refusal left: 10000 more fit.
    client.send(&set_request("subscribe", &many_topics("r", 10_000)));
    client.expect(b"STORED\r\n");
    expect_version(&mut client);
}

// ---- Clients that do not read, slowloris --------------------------------------

#[test]
fn a_pipeliner_that_never_reads_is_dropped_and_its_memory_returns() {
    let node = Node::start(&[
        ("client_idle_timeout", "2"),
        ("close_write_timeout_seconds", "1"),
    ]);
    let baseline = stat(&node, "curr_connections");
    // Pipelines `stats` (a large answer) and never reads, until the node
    // stops reading it and the socket's buffers are full.
    let mut attacker = std::net::TcpStream::connect(node.addr()).unwrap();
    attacker
        .set_write_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let burst = b"stats\r\n".repeat(1000);
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut sent = 0usize;
    loop {
        use std::io::Write;
        match attacker.write(&burst) {
            Ok(n) => sent += n,
            Err(_) => break,
        }
        assert!(
            Instant::now() < deadline,
            "the node read {sent} bytes of requests from a client that reads nothing"
        );
    }
    eprintln!("the node stopped reading after about {sent} bytes of requests");
    assert_eq!(stat(&node, "curr_connections"), baseline + 1);
    // An honest pair is served meanwhile.
    {
        let mut honest = node.connect();
        honest.subscribe(&["honest"]);
        node.connect().publish1("honest", b"x");
        expect_entries(&mut honest, b"MESSAGE honest 1\r\nx\r\n");
    }
    // Idle (it sends nothing the node reads), then its answers are not
    // taken: dropped, and its connection's memory with it.
    node.wait_for_stat("idle_clients_closed", |v| v >= 1);
    node.wait_for_stat("curr_connections", |v| v == baseline);
    // Its socket is closed (reset or EOF after whatever it had not read).
    attacker
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut sink = vec![0u8; 1 << 20];
    let closed_by = Instant::now() + Duration::from_secs(10);
    loop {
        use std::io::Read;
        match attacker.read(&mut sink) {
            Ok(0) | Err(_) => break,
            Ok(_) => assert!(Instant::now() < closed_by, "still open"),
        }
    }
    expect_version(&mut node.connect());
}

/// Sends `set publish` announcing an entry of topic `a` whose payload makes
/// the block `block` bytes long, and the first `first` bytes of the block.
/// Returns the rest of the request.
fn start_publish(client: &mut Client, block: usize, first: usize) -> Vec<u8> {
    // The payload's length, whose own digits are part of the block.
    let mut payload_len = block;
    loop {
        let h = format!("MESSAGE a {payload_len}\r\n");
        if h.len() + payload_len == block {
            break;
        }
        payload_len = block - h.len();
    }
    let mut data = format!("MESSAGE a {payload_len}\r\n").into_bytes();
    data.resize(block, b'p');
    client.send(format!("set publish 0 0 {block}\r\n").as_bytes());
    client.send(&data[..first]);
    let mut rest = data[first..].to_vec();
    rest.extend_from_slice(b"\r\n");
    rest
}

#[test]
fn partial_requests_are_bounded_by_the_pending_request_budget_largest_first() {
    const KIB: usize = 1024;
    let node = Node::start(&[("max_pending_request_bytes", &(1024 * KIB).to_string())]);
    let mut honest_sub = node.connect();
    honest_sub.subscribe(&["a", "honest"]);
    assert_eq!(stat(&node, "pending_request_budget"), 1024 * KIB as i64);
    // A slowloris holds 700 KiB of a 2 MiB block, and goes silent.
    let mut loris = node.connect();
    let _ = start_publish(&mut loris, 2048 * KIB, 700 * KIB);
    node.wait_for_stat("pending_request_bytes", |v| v >= 700 * KIB as i64);
    // Small requests are never counted: the honest pair is served.
    let mut honest_pub = node.connect();
    honest_pub.publish1("honest", b"1");
    expect_entries(&mut honest_sub, b"MESSAGE honest 1\r\n1\r\n");
    // An honest 600 KiB publish would pass the budget: the largest holder,
    // the slowloris, is refused and closed, and the publish goes through.
    let mut big = node.connect();
    let rest = start_publish(&mut big, 600 * KIB, 500 * KIB);
    big.send(&rest);
    big.expect(b"STORED\r\n");
    loris.expect(b"SERVER_ERROR pending request budget exceeded\r\n");
    loris.expect_closed();
    assert_eq!(stat(&node, "refused_pending"), 1);
    let got = poll_count(&mut honest_sub, 1);
    // The header `MESSAGE a 614382\r\n` is 18 bytes.
    assert_eq!(got[0].payload.len(), 600 * KIB - 18);
    node.wait_for_stat("pending_request_bytes", |v| v == 0);
    // A connection that is itself the largest holder is the one refused:
    // 300 KiB held, then one growing to 750 KiB.
    let mut small = node.connect();
    let small_rest = start_publish(&mut small, 400 * KIB, 300 * KIB);
    node.wait_for_stat("pending_request_bytes", |v| v >= 300 * KIB as i64);
    let mut greedy = node.connect();
    let _ = start_publish(&mut greedy, 2048 * KIB, 700 * KIB);
    node.wait_for_stat("pending_request_bytes", |v| v >= 1000 * KIB as i64);
    greedy.send(&[b'p'; 50 * KIB]);
    greedy.expect(b"SERVER_ERROR pending request budget exceeded\r\n");
    greedy.expect_closed();
    assert_eq!(stat(&node, "refused_pending"), 2);
    small.send(&small_rest);
    small.expect(b"STORED\r\n");
    poll_count(&mut honest_sub, 1);
    node.wait_for_stat("pending_request_bytes", |v| v == 0);
    // And a connection that leaves mid-request gives its share back.
    let mut leaver = node.connect();
    let _ = start_publish(&mut leaver, 1024 * KIB, 500 * KIB);
    node.wait_for_stat("pending_request_bytes", |v| v >= 500 * KIB as i64);
    drop(leaver);
    node.wait_for_stat("pending_request_bytes", |v| v == 0);
    honest_pub.publish1("honest", b"2");
    expect_entries(&mut honest_sub, b"MESSAGE honest 1\r\n2\r\n");
}

// ---- Every attack at once, beside an honest pair ----------------------------------

/// The node's resident memory (KiB), from `/proc/<pid>/status`.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

#[test]
fn the_memory_of_clients_that_left_goes_back_to_the_system() {
    // Every worker and router thread's heap is trimmed after 256 clients
    // left, and again once the wave of closes has settled (the shards free
    // the last clients' topics after their closes are counted): the
    // allocator keeps an idle thread's freed pages otherwise.
    let node = Node::start(&[]);
    let rss_before = rss_kib(node.pid());
    let mut clients: Vec<Client> = (0..600).map(|_| node.connect()).collect();
    for (c, client) in clients.iter_mut().enumerate() {
        let body = many_topics(
            &format!("a-rather-long-topic-name-of-client-{c}-number-"),
            200,
        );
        client.send(&set_request("subscribe", &body));
        client.expect(b"STORED\r\n");
    }
    let rss_full = rss_kib(node.pid());
    let grown = rss_full.saturating_sub(rss_before);
    assert!(
        grown > 20_000,
        "600 clients x 200 topics took only {grown} KiB"
    );
    drop(clients);
    // (The stats connection itself is one.)
    node.wait_for_stat("curr_connections", |v| v <= 1);
    node.wait_for_stat("topics", |v| v == 0);
    // Untrimmed, the node keeps over half; trimmed, 14% on a quiet
    // machine and up to a quarter beside this file's other tests.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let kept = rss_kib(node.pid()).saturating_sub(rss_before);
        if kept * 3 < grown {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the node keeps {kept} of the {grown} KiB its 600 clients took"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn an_honest_pair_loses_nothing_while_every_attack_runs_and_the_node_recovers_after() {
    use std::io::Write;
    let node = Node::start(&[
        ("max_pending_request_bytes", &(32 * MIB).to_string()),
        ("max_subscriptions_per_client", "50000"),
    ]);
    let mut honest_sub = node.connect();
    honest_sub.subscribe(&["honest"]);
    let mut honest_pub = node.connect();
    let baseline = stat(&node, "curr_connections");
    let rss_before = rss_kib(node.pid());
    let addr = node.addr();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let running = |stop: &std::sync::Arc<std::sync::atomic::AtomicBool>| {
        !stop.load(std::sync::atomic::Ordering::Relaxed)
    };
    let mut attackers = Vec::new();
    // Slowloris: 4 connections each holding 15 MiB of a 16 MiB block (the
    // budget of 32 MiB holds two; the largest and oldest are closed).
    let mut lorises: Vec<std::net::TcpStream> = (0..4)
        .map(|_| std::net::TcpStream::connect(addr).unwrap())
        .collect();
    for l in &mut lorises {
        let _ = l.write_all(format!("set publish 0 0 {}\r\n", 16 * MIB).as_bytes());
        let chunk = vec![b'x'; MIB];
        for _ in 0..15 {
            if l.write_all(&chunk).is_err() {
                break;
            }
        }
    }
    // A pipeliner that never reads.
    let mut never_reads = std::net::TcpStream::connect(addr).unwrap();
    never_reads
        .set_write_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let burst = b"stats\r\n".repeat(1000);
    while never_reads.write_all(&burst).is_ok() {}
    // An oversized-block stream, a padded MESSAGE line and a repeated topic
    // over and over, and a big subscriber coming and going.
    {
        let stop = stop.clone();
        attackers.push(std::thread::spawn(move || {
            let mut c = Client::connect(addr);
            let chunk = vec![b'x'; MIB];
            while running(&stop) {
                c.send(format!("set publish 0 0 {}\r\n", 32 * MIB).as_bytes());
                for _ in 0..32 {
                    c.send(&chunk);
                }
                c.send(b"\r\n");
                c.expect(b"CLIENT_ERROR data block too large\r\n");
                expect_version(&mut c);
            }
        }));
    }
    {
        let stop = stop.clone();
        attackers.push(std::thread::spawn(move || {
            let mut c = Client::connect(addr);
            let pad = 4 * MIB;
            while running(&stop) {
                let block_len = b"MESSAGE p".len() + pad + b" q 1\r\nx".len();
                send_padded(
                    &mut c,
                    format!("set publish 0 0 {block_len}\r\nMESSAGE p").as_bytes(),
                    pad,
                    b' ',
                    b" q 1\r\nx\r\n",
                );
                c.expect(b"STORED\r\n");
                let names = 500_000;
                let block_len = b"MESSAGE ".len() + 2 * names + b"1\r\nx".len();
                c.send(format!("set publish 0 0 {block_len}\r\nMESSAGE ").as_bytes());
                c.send(&[&b"r ".repeat(names)[..], b"1\r\nx\r\n"].concat());
                c.expect(b"STORED\r\n");
            }
        }));
    }
    {
        let stop = stop.clone();
        let body = many_topics("big", 40_000);
        attackers.push(std::thread::spawn(move || {
            while running(&stop) {
                let mut c = Client::connect(addr);
                c.send(&set_request("subscribe", &body));
                c.expect(b"STORED\r\n");
                c.send(&set_request("subscribe", &many_topics("more", 20_000)));
                c.expect(b"CLIENT_ERROR too many subscriptions\r\n");
                c.send(b"quit\r\n");
                c.expect_closed();
            }
        }));
    }
    // The honest pair: 400 messages, every one delivered, in order.
    let mut got = Vec::new();
    for i in 0..400 {
        honest_pub.publish1("honest", format!("{i}").as_bytes());
        if i % 20 == 0 {
            got.extend(honest_sub.poll());
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let rss_during = rss_kib(node.pid());
    got.extend(poll_until(
        &mut honest_sub,
        |m| m.len() + got.len() >= 400,
        Duration::from_secs(20),
    ));
    let want: Vec<String> = (0..400).map(|i| i.to_string()).collect();
    assert_eq!(
        payloads(&got),
        want,
        "the honest pair lost or reordered messages"
    );
    // The budget held: the lorises were closed largest first (as the
    // others' requests grew), the honest big publishes went through.
    assert!(
        stat(&node, "pending_request_bytes") <= 32 * MIB as i64,
        "over the budget"
    );
    assert!(stat(&node, "refused_pending") >= 2);
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for a in attackers {
        a.join().unwrap();
    }
    drop(lorises);
    drop(never_reads);
    // Everything the attackers held is given back.
    node.wait_for_stat("curr_connections", |v| v == baseline);
    node.wait_for_stat("pending_request_bytes", |v| v == 0);
    node.wait_for_stat("topics", |v| v == 1);
    node.wait_for_stat("subscriptions", |v| v == 1);
    std::thread::sleep(Duration::from_secs(2));
    eprintln!(
        "node RSS: {rss_before} KiB before, {rss_during} KiB during, {} KiB after the attacks",
        rss_kib(node.pid())
    );
    honest_pub.publish1("honest", b"after");
    expect_entries(&mut honest_sub, b"MESSAGE honest 5\r\nafter\r\n");
}

// ---- Keepalive and log floods ----------------------------------------------------

/// The `ss -tno` line of the node's end of a connection to `node_port`
/// from `peer_port` (`ss` shows its keepalive timer, if any).
fn node_socket_line(node_port: u16, peer_port: u16) -> String {
    let out = Command::new("ss")
        .args(["-tno", "state", "established"])
        .output()
        .expect("`ss` (iproute2) is needed for this test: apt-get install iproute2");
    let text = String::from_utf8_lossy(&out.stdout);
    let local = format!("127.0.0.1:{node_port}");
    let peer = format!("127.0.0.1:{peer_port}");
    text.lines()
        .find(|l| {
            let cols: Vec<&str> = l.split_whitespace().collect();
            cols.len() >= 4 && cols[2] == local && cols[3] == peer
        })
        .unwrap_or_else(|| panic!("no socket {local} -> {peer} in:\n{text}"))
        .to_string()
}

/// A raw connection that has had its `version` answered.
fn answered_connection(node: &Node) -> std::net::TcpStream {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(node.addr()).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(b"version\r\n").unwrap();
    let mut buf = [0u8; 64];
    let n = s.read(&mut buf).unwrap();
    assert!(buf[..n].starts_with(b"VERSION "), "{:?}", &buf[..n]);
    s
}

#[test]
fn accepted_sockets_have_tcp_keepalive_unless_it_is_off() {
    let node = Node::start(&[("tcp_keepalive_seconds", "45")]);
    let conn = answered_connection(&node);
    let line = node_socket_line(node.port(), conn.local_addr().unwrap().port());
    assert!(line.contains("keepalive"), "no keepalive timer: {line}");
    let off = Node::start(&[("tcp_keepalive_seconds", "0")]);
    let conn = answered_connection(&off);
    let line = node_socket_line(off.port(), conn.local_addr().unwrap().port());
    assert!(!line.contains("keepalive"), "keepalive though off: {line}");
}

#[test]
fn a_refused_connection_flood_logs_a_bounded_number_of_warnings() {
    let node = Node::start(&[("max_tcp_clients", "1")]);
    let mut held = node.connect();
    expect_version(&mut held);
    for _ in 0..60 {
        let mut c = node.connect();
        c.expect(b"SERVER_ERROR Too many clients\r\n");
    }
    assert_eq!(held.stats()["refused_connections"], "60");
    let warnings = node
        .log_lines()
        .iter()
        .filter(|l| l.contains("refused client"))
        .count();
    assert!(
        (1..=10).contains(&warnings),
        "{warnings} warnings for 60 refusals"
    );
}

// ---- Local users -------------------------------------------------------------

/// `uid` of the user `nobody`.
const NOBODY: u32 = 65534;

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// A fresh directory with `mode`.
fn dir_with_mode(tmp: &TempDir, name: &str, mode: u32) -> PathBuf {
    let dir = tmp.join(name);
    std::fs::create_dir(&dir).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(mode)).unwrap();
    dir
}

/// `kraken run` with this runtime directory and no `control_socket`: it
/// must refuse to start; returns what it said.
fn run_refused(runtime_dir: &Path) -> String {
    let out = kraken(
        &[
            &["run"][..],
            &loopback_args("0"),
            &["-kraken", "runtime_dir", runtime_dir.to_str().unwrap()],
        ]
        .concat(),
    );
    assert_ne!(out.code, Some(0), "{}", out.text());
    out.stderr
}

#[test]
fn a_runtime_dir_others_can_write_to_or_a_symlink_is_refused() {
    let tmp = TempDir::new("hostile-rtdir");
    let open = dir_with_mode(&tmp, "open", 0o777);
    let said = run_refused(&open);
    assert!(said.contains("writable by others"), "{said}");
    assert!(!open.join("kraken-0.sock").exists());

    let group = dir_with_mode(&tmp, "group", 0o770);
    let said = run_refused(&group);
    assert!(said.contains("writable by others"), "{said}");

    let real = dir_with_mode(&tmp, "real", 0o700);
    let link = tmp.join("link");
    std::os::unix::fs::symlink(&real, &link).unwrap();
    let said = run_refused(&link);
    assert!(said.contains("is a symlink"), "{said}");
}

#[test]
fn a_runtime_dir_owned_by_another_user_is_refused() {
    if !is_root() {
        eprintln!("skipped: chown to another user needs root (CI runs as root)");
        return;
    }
    let tmp = TempDir::new("hostile-owner");
    let theirs = dir_with_mode(&tmp, "theirs", 0o700);
    std::os::unix::fs::chown(&theirs, Some(NOBODY), Some(NOBODY)).unwrap();
    let said = run_refused(&theirs);
    assert!(said.contains(&format!("belongs to uid {NOBODY}")), "{said}");
}

#[test]
fn the_default_runtime_dir_is_created_private_and_holds_the_socket_and_console_log() {
    let tmp = TempDir::new("hostile-xdg");
    let xdg = dir_with_mode(&tmp, "xdg", 0o700);
    let env = [("XDG_RUNTIME_DIR", xdg.to_str().unwrap())];
    let port = free_port().to_string();
    let opts = loopback_args(&port);
    let start = kraken_with_env(&[&["start"][..], &opts].concat(), &env);
    assert_eq!(start.code, Some(0), "{}", start.text());
    let dir = xdg.join("kraken");
    let meta = std::fs::symlink_metadata(&dir).unwrap();
    assert!(meta.is_dir());
    assert_eq!(meta.mode() & 0o777, 0o700);
    assert!(dir.join(format!("kraken-{port}.sock")).exists());
    let console = std::fs::metadata(dir.join(format!("kraken-{port}.log"))).unwrap();
    assert_eq!(console.mode() & 0o777, 0o600);
    let status = kraken_with_env(&[&["status"][..], &opts].concat(), &env);
    assert_eq!(status.code, Some(0), "{}", status.text());
    let stop = kraken_with_env(&[&["stop"][..], &opts].concat(), &env);
    assert_eq!(stop.code, Some(0), "{}", stop.text());
}

#[test]
fn the_console_log_and_log_file_are_not_written_through_a_planted_symlink() {
    let tmp = TempDir::new("hostile-symlink");
    let runtime = dir_with_mode(&tmp, "run", 0o700);
    let victim = tmp.join("victim");
    std::fs::write(&victim, b"precious\n").unwrap();
    let port = "40999";
    std::os::unix::fs::symlink(&victim, runtime.join(format!("kraken-{port}.log"))).unwrap();
    let start = kraken(
        &[
            &["start"][..],
            &loopback_args(port),
            &["-kraken", "runtime_dir", runtime.to_str().unwrap()],
        ]
        .concat(),
    );
    assert_ne!(start.code, Some(0), "{}", start.text());
    assert!(start.stderr.contains("symlink"), "{}", start.text());
    assert_eq!(std::fs::read(&victim).unwrap(), b"precious\n");

    // log_file, for `run`, likewise.
    let link = tmp.join("log-link");
    std::os::unix::fs::symlink(&victim, &link).unwrap();
    let run = kraken(
        &[
            &["run"][..],
            &loopback_args("0"),
            &[
                "-kraken",
                "control_socket",
                tmp.join("ctl.sock").to_str().unwrap(),
                "-kraken",
                "log_file",
                link.to_str().unwrap(),
            ],
        ]
        .concat(),
    );
    assert_ne!(run.code, Some(0), "{}", run.text());
    assert!(run.stderr.contains("symlink"), "{}", run.text());
    assert_eq!(std::fs::read(&victim).unwrap(), b"precious\n");
}

#[test]
fn the_control_client_refuses_a_socket_served_by_another_user() {
    if !is_root() {
        eprintln!("skipped: running a node as another user needs root (CI runs as root)");
        return;
    }
    let setpriv = Path::new("/usr/bin/setpriv");
    assert!(
        setpriv.exists(),
        "this test needs setpriv (util-linux) to run a node as nobody"
    );
    let tmp = TempDir::new("hostile-peer");
    let theirs = dir_with_mode(&tmp, "theirs", 0o700);
    std::os::unix::fs::chown(&theirs, Some(NOBODY), Some(NOBODY)).unwrap();
    let socket = theirs.join("ctl.sock");
    // Another user's node (standing in for anyone who took the name first).
    let mut impostor = Command::new(setpriv)
        .args([
            &format!("--reuid={NOBODY}"),
            &format!("--regid={NOBODY}"),
            "--clear-groups",
        ])
        .arg(env!("CARGO_BIN_EXE_kraken"))
        .arg("run")
        .args(loopback_args("0"))
        .args(["-kraken", "control_socket", socket.to_str().unwrap()])
        .env("KRAKEN_HOME", env!("CARGO_MANIFEST_DIR"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start a node as nobody");
    let deadline = Instant::now() + Duration::from_secs(20);
    while !socket.exists() {
        assert!(
            impostor.try_wait().unwrap().is_none(),
            "the node as nobody exited"
        );
        assert!(Instant::now() < deadline, "no control socket appeared");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(std::fs::metadata(&socket).unwrap().uid(), NOBODY);
    let status = kraken(&[
        "status",
        "-kraken",
        "control_socket",
        socket.to_str().unwrap(),
    ]);
    let _ = impostor.kill();
    let _ = impostor.wait();
    assert_eq!(status.code, Some(1), "{}", status.text());
    assert!(
        status.stderr.contains(&format!("uid {NOBODY}"))
            && status.stderr.contains("refusing to talk to it"),
        "{}",
        status.text()
    );
}

#[test]
fn a_pipeliner_that_never_reads_and_disconnects_is_cleaned_up_at_once() {
    use std::io::Write;
    // The default idle timeout (an hour): only noticing the disconnect ends it.
    let node = Node::start(&[]);
    let baseline = stat(&node, "curr_connections");
    let mut never_reads = std::net::TcpStream::connect(node.addr()).unwrap();
    never_reads
        .set_write_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    // `version` and `stats` are answered by the connection itself: no
    // other actor's answer wakes it while it waits to write.
    let burst = [b"stats\r\n".repeat(600), b"version\r\n".repeat(600)].concat();
    while never_reads.write_all(&burst).is_ok() {}
    assert_eq!(stat(&node, "curr_connections"), baseline + 1);
    drop(never_reads);
    node.wait_for_stat("curr_connections", |v| v == baseline);
}
