//! `register` and `retro_subscribe` (`docs/PROTOCOL.md` §6). Horizons are whole unix seconds on this machine's clock.
//!
//! Each scenario first makes sure the messages it counts as "published" have
//! been routed (a witness subscriber has received them), because `STORED`
//! to a publish may precede its fan-out.

mod common;

use std::collections::HashMap;
use std::sync::mpsc;
use std::time::Duration;

use common::*;

#[test]
fn beyond_register_then_publish_in_the_same_second_then_subscribe_replays_the_message() {
    let node = Node::start(&[]);
    let mut witness = node.connect();
    witness.subscribe(&["b"]);
    let mut publisher = node.connect();
    // Up to three tries to fit register + publish into one second (each try
    // starts at the beginning of a second, so the first one all but always
    // fits).
    for attempt in 0.. {
        let mut sub = node.connect();
        let second = wait_for_next_second();
        sub.register();
        publisher.publish1("b", b"same-second");
        let same = unix_now() == second;
        expect_entries(&mut witness, b"MESSAGE b 11\r\nsame-second\r\n");
        if !same && attempt < 2 {
            continue;
        }
        assert!(same, "could not register and publish within one second");
        sub.subscribe(&["b"]);
        let got = poll_exactly(&mut sub, 1);
        assert_eq!(got, vec![Msg::new(&["b"], b"same-second")]);
        break;
    }
}

#[test]
fn register_is_exact_messages_before_it_are_not_replayed_messages_after_it_are() {
    let node = Node::start(&[]);
    let mut witness = node.connect();
    let mut sub = node.connect();
    let mut publisher = node.connect();
    witness.subscribe(&["b"]);
    publisher.publish1("b", b"before");
    expect_entries(&mut witness, b"MESSAGE b 6\r\nbefore\r\n");
    sub.register();
    publisher.publish1("b", b"after");
    expect_entries(&mut witness, b"MESSAGE b 5\r\nafter\r\n");
    sub.subscribe(&["b"]);
    let got = poll_exactly(&mut sub, 1);
    assert_eq!(got, vec![Msg::new(&["b"], b"after")]);
}

#[test]
fn replay_uses_the_same_message_framing_as_live_delivery() {
    let node = Node::start(&[]);
    let mut witness = node.connect();
    let mut sub = node.connect();
    let mut publisher = node.connect();
    witness.subscribe(&["b"]);
    sub.register();
    publisher.publish1("b", b"x\r\ny");
    expect_entries(&mut witness, b"MESSAGE b 4\r\nx\r\ny\r\n");
    sub.subscribe(&["b"]);
    let reply = first_nonempty_reply(&mut sub);
    assert_bytes_eq(
        &reply,
        b"VALUE messages 0 17\r\nMESSAGE b 4\r\nx\r\ny\r\nEND\r\n",
        "replayed get",
    );
}

#[test]
fn only_the_first_subscribe_after_register_replays() {
    let node = Node::start(&[]);
    let mut witness = node.connect();
    let mut sub = node.connect();
    let mut publisher = node.connect();
    witness.subscribe(&["b", "c"]);
    sub.register();
    publisher.publish1("b", b"mb");
    publisher.publish1("c", b"mc");
    poll_count(&mut witness, 2);
    sub.subscribe(&["b"]);
    expect_entries(&mut sub, b"MESSAGE b 2\r\nmb\r\n");
    // The horizon is used up: subscribing to c replays nothing ...
    sub.subscribe(&["c"]);
    assert_nothing_arrives(&mut sub);
    // ... but c is subscribed live.
    publisher.publish1("c", b"mc2");
    expect_entries(&mut sub, b"MESSAGE c 3\r\nmc2\r\n");
    assert_nothing_arrives(&mut sub);
}

#[test]
fn a_second_register_replaces_the_first() {
    let node = Node::start(&[]);
    let mut witness = node.connect();
    let mut sub = node.connect();
    let mut publisher = node.connect();
    witness.subscribe(&["b"]);
    sub.register();
    publisher.publish1("b", b"m1");
    expect_entries(&mut witness, b"MESSAGE b 2\r\nm1\r\n");
    sub.register();
    publisher.publish1("b", b"m2");
    expect_entries(&mut witness, b"MESSAGE b 2\r\nm2\r\n");
    sub.subscribe(&["b"]);
    let got = poll_exactly(&mut sub, 1);
    assert_eq!(got, vec![Msg::new(&["b"], b"m2")]);
}

#[test]
fn retro_subscribe_at_the_current_second_replays_that_second_once_per_message_across_shards() {
    let node = Node::start(&[("num_router_shards", "4")]);
    let mut witness = node.connect();
    let mut sub = node.connect();
    let mut publisher = node.connect();
    let pairs: Vec<(String, String)> = (0..20)
        .map(|i| (format!("rx{i}"), format!("ry{i}")))
        .collect();
    let all: Vec<&str> = pairs
        .iter()
        .flat_map(|(x, y)| [x.as_str(), y.as_str()])
        .collect();
    witness.subscribe(&all);

    // A message in an earlier second than the horizon: not replayed.
    publisher.publish(&[(&["rx0"], b"old")]);
    expect_entries(&mut witness, b"MESSAGE rx0 3\r\nold\r\n");
    let horizon = wait_for_next_second();

    let mut want = Vec::new();
    for (i, (x, y)) in pairs.iter().enumerate() {
        let topics: Vec<&str> = if i % 2 == 0 { vec![x, y] } else { vec![y, x] };
        let payload = format!("r{i:02}");
        publisher.publish(&[(&topics, payload.as_bytes())]);
        want.push(Msg::new(&topics, payload.as_bytes()));
    }
    poll_count(&mut witness, 20);

    sub.send(&retro_request(&horizon.to_string(), &all));
    sub.expect(b"STORED\r\n");
    let mut got = poll_exactly(&mut sub, 20);
    got.sort();
    want.sort();
    assert_eq!(
        got, want,
        "one entry per message listing both held topics in publish order"
    );
}

#[test]
fn retro_subscribe_replays_only_the_topics_asked_for() {
    let node = Node::start(&[]);
    let mut witness = node.connect();
    let mut sub = node.connect();
    let mut publisher = node.connect();
    witness.subscribe(&["a", "b", "c"]);
    let horizon = node.fresh_horizon();
    publisher.publish(&[(&["a"], b"1"), (&["b"], b"2"), (&["c", "a"], b"3")]);
    poll_count(&mut witness, 3);
    sub.send(&retro_request(&horizon.to_string(), &["a"]));
    sub.expect(b"STORED\r\n");
    let got = poll_exactly(&mut sub, 2);
    assert_eq!(got, vec![Msg::new(&["a"], b"1"), Msg::new(&["a"], b"3")]);
}

#[test]
fn a_publishers_own_messages_are_never_replayed_after_register() {
    let node = Node::start(&[]);
    let mut witness = node.connect();
    let mut me = node.connect();
    let mut other = node.connect();
    witness.subscribe(&["a"]);
    me.register();
    me.publish1("a", b"mine");
    other.publish1("a", b"theirs");
    poll_count(&mut witness, 2);
    me.subscribe(&["a"]);
    let got = poll_exactly(&mut me, 1);
    assert_eq!(got, vec![Msg::new(&["a"], b"theirs")]);
}

#[test]
fn a_publishers_own_messages_are_never_replayed_by_retro_subscribe() {
    let node = Node::start(&[]);
    let mut witness = node.connect();
    let mut me = node.connect();
    let mut other = node.connect();
    witness.subscribe(&["a"]);
    let horizon = node.fresh_horizon();
    me.publish1("a", b"mine");
    other.publish1("a", b"theirs");
    poll_count(&mut witness, 2);
    me.send(&retro_request(&horizon.to_string(), &["a"]));
    me.expect(b"STORED\r\n");
    let got = poll_exactly(&mut me, 1);
    assert_eq!(got, vec![Msg::new(&["a"], b"theirs")]);
}

#[test]
fn horizon_before_the_node_started_answers_not_found_but_subscribes() {
    let node = Node::start(&[]);
    let mut publisher = node.connect();
    for horizon in ["0", "1", "-5"] {
        let mut sub = node.connect();
        sub.send(&retro_request(horizon, &["b"]));
        sub.expect(b"NOT_FOUND\r\n");
        sub.expect_open_and_empty();
        let payload = format!("live-after-{horizon}");
        publisher.publish1("b", payload.as_bytes());
        let got = poll_exactly(&mut sub, 1);
        assert_eq!(
            got,
            vec![Msg::new(&["b"], payload.as_bytes())],
            "horizon {horizon}"
        );
    }
}

#[test]
fn horizon_far_in_the_future_answers_stored_and_replays_nothing() {
    let node = Node::start(&[]);
    let mut witness = node.connect();
    let mut sub = node.connect();
    let mut publisher = node.connect();
    witness.subscribe(&["b"]);
    publisher.publish1("b", b"now");
    expect_entries(&mut witness, b"MESSAGE b 3\r\nnow\r\n");
    sub.send(&retro_request("4102444800", &["b"])); // 2100-01-01
    sub.expect(b"STORED\r\n");
    assert_nothing_arrives(&mut sub);
    publisher.publish1("b", b"live");
    expect_entries(&mut sub, b"MESSAGE b 4\r\nlive\r\n");
}

#[test]
fn retention_overflow_answers_not_found_but_subscribes_and_within_retention_replays_all() {
    let node = Node::start(&[("messages_stored_per_router_shard", "5")]);
    let mut witness = node.connect();
    let mut publisher = node.connect();
    witness.subscribe(&["b"]);
    let horizon = node.fresh_horizon().to_string();

    // 3 messages after the horizon fit in the buffer of 5: all replayed.
    for i in 0..3 {
        publisher.publish1("b", format!("k{i}").as_bytes());
    }
    poll_count(&mut witness, 3);
    let mut within = node.connect();
    within.send(&retro_request(&horizon, &["b"]));
    within.expect(b"STORED\r\n");
    let got = poll_exactly(&mut within, 3);
    assert_eq!(payloads(&got), vec!["k0", "k1", "k2"]);

    // A client registered now, before the overflow.
    let mut registered = node.connect();
    registered.register();

    // 10 more to the same topic (the same shard): messages after the
    // horizon have been evicted.
    for i in 3..13 {
        publisher.publish1("b", format!("k{i}").as_bytes());
    }
    poll_count(&mut witness, 10);

    let mut late = node.connect();
    late.send(&retro_request(&horizon, &["b"]));
    late.expect(b"NOT_FOUND\r\n");
    registered.send(b"set subscribe 0 0 1\r\nb\r\n");
    registered.expect(b"NOT_FOUND\r\n");

    // Both are subscribed all the same.
    publisher.publish1("b", b"live");
    for c in [&mut late, &mut registered] {
        let got = poll_until(c, |m| m.iter().any(|m| m.payload == b"live"), ASYNC_TIMEOUT);
        assert_eq!(got.last().unwrap(), &Msg::new(&["b"], b"live"));
    }
}

/// `NOT_FOUND` only when a message the replay needs was evicted: a full
/// buffer whose evicted messages all predate the horizon still answers
/// `STORED` and replays everything since. (The Erlang original compared
/// the horizon with the oldest message kept, and said `NOT_FOUND` here.)
#[test]
fn evicting_only_messages_older_than_the_horizon_still_answers_stored() {
    let node = Node::start(&[
        ("messages_stored_per_router_shard", "5"),
        ("num_router_shards", "1"),
    ]);
    let mut publisher = node.connect();
    node.fresh_horizon();
    for i in 0..5 {
        publisher.publish1("b", format!("old{i}").as_bytes());
    }
    // Every old message is of an earlier second than the horizon.
    let horizon = wait_for_next_second().to_string();
    // Five more, to another topic of the same (only) shard: the old ones
    // are all evicted.
    for i in 0..5 {
        publisher.publish1("c", format!("new{i}").as_bytes());
    }
    let mut sub = node.connect();
    sub.send(&retro_request(&horizon, &["c"]));
    sub.expect(b"STORED\r\n");
    let got = poll_exactly(&mut sub, 5);
    assert_eq!(payloads(&got), ["new0", "new1", "new2", "new3", "new4"]);

    // One more evicts `new0`, published after the horizon: now NOT_FOUND.
    publisher.publish1("c", b"new5");
    let mut late = node.connect();
    late.send(&retro_request(&horizon, &["c"]));
    late.expect(b"NOT_FOUND\r\n");
}

#[test]
fn non_numeric_horizon_answers_client_error_and_the_connection_stays_open() {
    let node = Node::start(&[]);
    let mut c = node.connect();
    c.send(b"set retro_subscribe 0 0 6\r\nabc\r\nx\r\n");
    c.expect_line_starting("CLIENT_ERROR ");
    c.expect_open_and_empty();
    // Still fully usable.
    c.send(b"set subscribe 0 0 1\r\nx\r\n");
    c.expect(b"STORED\r\n");
}

#[test]
fn no_gap_every_message_after_register_arrives_exactly_once_replayed_or_live() {
    const N: usize = 200; // published between register and subscribe
    const M: usize = 200; // published while and after subscribing
    let node = Node::start(&[("num_router_shards", "4")]);
    let topics = ["g0", "g1", "g2", "g3", "g4", "g5", "g6", "g7"];
    let mut witness = node.connect();
    let mut sub = node.connect();
    let mut publisher = node.connect();
    witness.subscribe(&topics);

    // Before the register: routed for sure (the witness has them all).
    for i in 0..20 {
        publisher.publish1(topics[i % topics.len()], format!("pre-{i}").as_bytes());
    }
    poll_count(&mut witness, 20);

    sub.register();

    let (tx, rx) = mpsc::channel();
    let publishing = std::thread::spawn(move || {
        let send_range = |publisher: &mut Client, range: std::ops::Range<usize>| {
            let mut write = Vec::new();
            for i in range.clone() {
                let payload = format!("seq-{i:04}");
                write.extend(publish_request(&[(
                    &[topics[i % topics.len()]],
                    payload.as_bytes(),
                )]));
            }
            publisher.send(&write);
            publisher.expect(&b"STORED\r\n".repeat(range.len()));
        };
        send_range(&mut publisher, 0..N);
        tx.send(()).unwrap();
        // Keep publishing, in small batches, while the subscribe happens.
        for start in (N..N + M).step_by(10) {
            send_range(&mut publisher, start..start + 10);
        }
        publisher
    });
    // Subscribe while the first N may still be fanning out and the next M
    // are being published.
    rx.recv_timeout(ASYNC_TIMEOUT).expect("publisher thread");
    sub.subscribe(&topics);
    let _publisher = publishing.join().expect("publisher thread");

    let got = poll_until(&mut sub, |m| m.len() >= N + M, Duration::from_secs(10));
    let got_more = collect_for(&mut sub, QUIET_PERIOD);
    let mut count: HashMap<String, usize> = HashMap::new();
    for m in got.iter().chain(got_more.iter()) {
        *count
            .entry(String::from_utf8_lossy(&m.payload).into_owned())
            .or_default() += 1;
    }
    let pre: Vec<&String> = count.keys().filter(|k| k.starts_with("pre-")).collect();
    assert!(
        pre.is_empty(),
        "messages from before the register were replayed: {pre:?}"
    );
    let dups: Vec<(&String, &usize)> = count.iter().filter(|(_, &n)| n > 1).collect();
    assert!(
        dups.is_empty(),
        "messages delivered more than once: {dups:?}"
    );
    let missing: Vec<String> = (0..N + M)
        .map(|i| format!("seq-{i:04}"))
        .filter(|p| !count.contains_key(p))
        .collect();
    assert!(missing.is_empty(), "messages lost in the gap: {missing:?}");
    assert_eq!(count.len(), N + M);
    // Per topic, publish order holds across the replay/live seam.
    for t in topics {
        let seq: Vec<&Msg> = got.iter().filter(|m| m.topics == [t]).collect();
        let mut sorted = seq.clone();
        sorted.sort_by(|a, b| a.payload.cmp(&b.payload));
        assert_eq!(seq, sorted, "topic {t} out of order");
    }
}
