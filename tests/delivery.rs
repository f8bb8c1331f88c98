//! Who gets which message, how often, in what order (`docs/PROTOCOL.md`
//! §5), including where the Erlang original differed.

mod common;

use std::collections::{BTreeMap, HashMap};

use common::*;

#[test]
fn a_publisher_never_receives_its_own_message_even_when_subscribed() {
    let node = Node::start(&[]);
    let mut publisher = node.connect();
    let mut other = node.connect();
    publisher.subscribe(&["a"]);
    other.subscribe(&["a"]);
    publisher.publish1("a", b"mine");
    // The other subscriber gets it: the fan-out has happened.
    expect_entries(&mut other, b"MESSAGE a 4\r\nmine\r\n");
    assert_nothing_arrives(&mut publisher);
}

#[test]
fn a_message_to_two_held_topics_is_one_entry_listing_both_in_publish_order() {
    let node = Node::start(&[]);
    let mut sub = node.connect();
    let mut publisher = node.connect();
    sub.subscribe(&["c", "b"]);
    publisher.publish(&[(&["b", "c"], b"bc")]);
    expect_entries(&mut sub, b"MESSAGE b c 2\r\nbc\r\n");
    assert_nothing_arrives(&mut sub);
}

#[test]
fn only_the_topics_the_subscriber_holds_are_listed() {
    let node = Node::start(&[]);
    let mut sub = node.connect();
    let mut publisher = node.connect();
    sub.subscribe(&["b", "c"]);
    publisher.publish(&[(&["c", "b", "y"], b"cby")]);
    expect_entries(&mut sub, b"MESSAGE c b 3\r\ncby\r\n");
    assert_nothing_arrives(&mut sub);
}

#[test]
fn a_repeated_topic_is_listed_once_and_delivered_once() {
    // The original listed it twice (`MESSAGE b b 2`); a topic named twice in
    // one message counts once here.
    let node = Node::start(&[]);
    let mut sub = node.connect();
    let mut publisher = node.connect();
    sub.subscribe(&["b"]);
    publisher.publish(&[(&["b", "b"], b"bb")]);
    expect_entries(&mut sub, b"MESSAGE b 2\r\nbb\r\n");
    assert_nothing_arrives(&mut sub);
}

#[test]
fn subscribing_twice_to_a_topic_delivers_once() {
    let node = Node::start(&[]);
    let mut sub = node.connect();
    let mut publisher = node.connect();
    sub.subscribe(&["b"]);
    sub.subscribe(&["b"]);
    sub.subscribe(&["b", "b"]);
    publisher.publish1("b", b"once");
    expect_entries(&mut sub, b"MESSAGE b 4\r\nonce\r\n");
    assert_nothing_arrives(&mut sub);
}

#[test]
fn a_message_published_before_subscribe_is_not_delivered() {
    let node = Node::start(&[]);
    let mut witness = node.connect();
    let mut sub = node.connect();
    let mut publisher = node.connect();
    witness.subscribe(&["b"]);
    publisher.publish1("b", b"early");
    // Routed: the witness has it.
    expect_entries(&mut witness, b"MESSAGE b 5\r\nearly\r\n");
    sub.subscribe(&["b"]);
    publisher.publish1("b", b"late");
    // Same publisher, same topic: "late" comes after "early" would have.
    expect_entries(&mut sub, b"MESSAGE b 4\r\nlate\r\n");
    assert_nothing_arrives(&mut sub);
}

#[test]
fn three_hundred_messages_from_one_publisher_arrive_all_and_in_order() {
    let node = Node::start(&[]);
    let mut sub = node.connect();
    let mut publisher = node.connect();
    sub.subscribe(&["seq"]);
    // 200 entries in one set ...
    let payloads: Vec<Vec<u8>> = (0..300).map(|i| format!("m{i:03}").into_bytes()).collect();
    let first: Vec<(&[&str], &[u8])> = payloads[..200]
        .iter()
        .map(|p| (&["seq"][..], p.as_slice()))
        .collect();
    publisher.publish(&first);
    // ... then 100 pipelined sets in one write.
    let mut write = Vec::new();
    for p in &payloads[200..] {
        write.extend(publish_request(&[(&["seq"], p)]));
    }
    publisher.send(&write);
    publisher.expect(&b"STORED\r\n".repeat(100));

    let got = poll_exactly(&mut sub, 300);
    let want: Vec<Msg> = payloads.iter().map(|p| Msg::new(&["seq"], p)).collect();
    assert_eq!(got, want, "300 messages in publish order");
}

#[test]
fn topics_are_opaque_bytes_split_only_at_spaces() {
    let node = Node::start(&[]);
    let mut sub = node.connect();
    let mut publisher = node.connect();
    let tab = "t\tab";
    let utf8 = "m\u{fc}nchen-\u{1f419}";
    sub.subscribe(&[tab, utf8]);
    publisher.publish(&[(&[tab], b"1"), (&[utf8], b"2"), (&[utf8, tab], b"3")]);
    let mut want = Vec::new();
    want.extend(entry(&[tab], b"1"));
    want.extend(entry(&[utf8], b"2"));
    want.extend(entry(&[utf8, tab], b"3"));
    let got = poll_exactly(&mut sub, 3);
    let mut got_sorted = got.clone();
    got_sorted.sort_by(|a, b| a.payload.cmp(&b.payload));
    assert_eq!(got_sorted, parse_entries(&want));
}

#[test]
fn tab_topic_entry_bytes_are_exact() {
    let node = Node::start(&[]);
    let mut sub = node.connect();
    let mut publisher = node.connect();
    sub.subscribe(&["x\ty"]);
    publisher.send(b"set publish 0 0 18\r\nMESSAGE x\ty 1\r\n!\r\n\r\n");
    publisher.expect(b"STORED\r\n");
    expect_entries(&mut sub, b"MESSAGE x\ty 1\r\n!\r\n");
}

#[test]
fn beyond_a_message_whose_topics_span_shards_is_one_entry_listing_all_held_topics() {
    // With 4 shards and 50 topic pairs, some pairs hash to different
    // shards whatever the hash is.
    let node = Node::start(&[("num_router_shards", "4")]);
    let mut sub = node.connect();
    let mut publisher = node.connect();
    let pairs: Vec<(String, String)> = (0..50)
        .map(|i| (format!("x{i}"), format!("y{i}")))
        .collect();
    let all: Vec<&str> = pairs
        .iter()
        .flat_map(|(x, y)| [x.as_str(), y.as_str()])
        .collect();
    sub.subscribe(&all);

    let mut want = Vec::new();
    for (i, (x, y)) in pairs.iter().enumerate() {
        // Alternate the order so "publish order" is not "subscribe order".
        let topics: Vec<&str> = if i % 2 == 0 { vec![x, y] } else { vec![y, x] };
        let payload = format!("pair{i}");
        publisher.publish(&[(&topics, payload.as_bytes())]);
        want.push(Msg::new(&topics, payload.as_bytes()));
    }
    let mut got = poll_exactly(&mut sub, 50);
    got.sort_by(|a, b| a.payload.cmp(&b.payload));
    want.sort_by(|a, b| a.payload.cmp(&b.payload));
    assert_eq!(got, want, "one entry per message, topics in publish order");
}

#[test]
fn beyond_cross_shard_message_lists_only_held_topics_in_publish_order() {
    let node = Node::start(&[("num_router_shards", "4")]);
    let mut sub = node.connect();
    let mut publisher = node.connect();
    // The subscriber holds some topics of each message, not all.
    let held: Vec<String> = (0..20).map(|i| format!("h{i}")).collect();
    let held_refs: Vec<&str> = held.iter().map(|s| s.as_str()).collect();
    sub.subscribe(&held_refs);
    let mut want = Vec::new();
    for i in 0..10 {
        let (a, b) = (held[2 * i].as_str(), held[2 * i + 1].as_str());
        let n1 = format!("n{i}a");
        let n2 = format!("n{i}b");
        let topics = [n1.as_str(), b, n2.as_str(), a];
        let payload = format!("p{i}");
        publisher.publish(&[(&topics, payload.as_bytes())]);
        want.push(Msg::new(&[b, a], payload.as_bytes()));
    }
    let mut got = poll_exactly(&mut sub, 10);
    got.sort();
    want.sort();
    assert_eq!(got, want);
}

#[test]
fn unsubscribe_stops_delivery_of_that_topic_only() {
    let node = Node::start(&[]);
    let mut sub = node.connect();
    let mut witness = node.connect();
    let mut publisher = node.connect();
    sub.subscribe(&["a", "b"]);
    witness.subscribe(&["b"]);
    sub.unsubscribe(&["b"]);
    publisher.publish(&[(&["b"], b"nb")]);
    publisher.publish(&[(&["a"], b"na")]);
    publisher.publish(&[(&["a", "b"], b"nab")]);
    // The witness proves the b-messages were routed.
    expect_entries(&mut witness, b"MESSAGE b 2\r\nnb\r\nMESSAGE b 3\r\nnab\r\n");
    let got = poll_exactly(&mut sub, 2);
    assert_eq!(got, vec![Msg::new(&["a"], b"na"), Msg::new(&["a"], b"nab")]);
}

#[test]
fn unsubscribe_of_every_topic_stops_all_delivery() {
    let node = Node::start(&[]);
    let mut sub = node.connect();
    let mut witness = node.connect();
    let mut publisher = node.connect();
    sub.subscribe(&["a", "b", "c"]);
    witness.subscribe(&["a", "b", "c"]);
    sub.unsubscribe(&["c", "a", "b"]);
    publisher.publish(&[(&["a"], b"1"), (&["b"], b"2"), (&["c"], b"3")]);
    poll_count(&mut witness, 3);
    assert_nothing_arrives(&mut sub);
}

#[test]
fn a_closed_subscribers_state_is_removed_and_the_topic_keeps_working() {
    let node = Node::start(&[]);
    let mut publisher = node.connect();
    let base = node.wait_for_stat("subscriptions", |_| true);
    {
        let mut gone = node.connect();
        gone.subscribe(&["t", "u"]);
        node.wait_for_stat("subscriptions", |n| n == base + 2);
        gone.send(b"quit\r\n");
        gone.expect_closed();
    }
    // Its subscriptions are gone from the routing state.
    node.wait_for_stat("subscriptions", |n| n == base);
    node.wait_for_stat("topics", |n| n == 0);
    // Publishing to its topics still works ...
    for i in 0..20 {
        publisher.publish1("t", format!("x{i}").as_bytes());
    }
    // ... and a new subscriber receives what comes after it subscribed.
    let mut fresh = node.connect();
    fresh.subscribe(&["t"]);
    publisher.publish1("t", b"after");
    expect_entries(&mut fresh, b"MESSAGE t 5\r\nafter\r\n");
    assert_nothing_arrives(&mut fresh);
}

#[test]
fn a_subscriber_that_drops_the_connection_without_quit_is_cleaned_up() {
    let node = Node::start(&[]);
    let mut other = node.connect();
    other.subscribe(&["t"]);
    let base = node.wait_for_stat("subscriptions", |n| n == 1);
    {
        let mut gone = node.connect();
        gone.subscribe(&["t", "v"]);
        node.wait_for_stat("subscriptions", |n| n == base + 2);
        // Dropped here: the socket closes without `quit`.
    }
    node.wait_for_stat("subscriptions", |n| n == base);
    node.wait_for_stat("curr_connections", |n| n == 2); // `other` + the stats connection
    let mut publisher = node.connect();
    publisher.publish1("t", b"still");
    expect_entries(&mut other, b"MESSAGE t 5\r\nstill\r\n");
}

#[test]
fn messages_from_each_publisher_on_each_topic_arrive_in_publish_order() {
    let node = Node::start(&[("num_router_shards", "4")]);
    let mut sub = node.connect();
    let topics = ["o0", "o1", "o2", "o3", "o4", "o5"];
    sub.subscribe(&topics);
    let mut publishers: Vec<Client> = (0..3).map(|_| node.connect()).collect();
    const PER_PUBLISHER: usize = 120;
    // Interleave: each round, each publisher sends one message to a topic
    // that rotates, pipelined without waiting for STORED.
    for i in 0..PER_PUBLISHER {
        for (p, publisher) in publishers.iter_mut().enumerate() {
            let topic = topics[(i + p) % topics.len()];
            let payload = format!("p{p}-{i:04}");
            publisher.send(&publish_request(&[(&[topic], payload.as_bytes())]));
        }
    }
    for publisher in publishers.iter_mut() {
        publisher.expect(&b"STORED\r\n".repeat(PER_PUBLISHER));
    }
    let got = poll_exactly(&mut sub, 3 * PER_PUBLISHER);
    let mut seen: BTreeMap<(String, String), Vec<usize>> = BTreeMap::new();
    let mut count: HashMap<String, usize> = HashMap::new();
    for m in &got {
        assert_eq!(m.topics.len(), 1, "{m:?}");
        let text = String::from_utf8(m.payload.clone()).unwrap();
        let (p, i) = text.split_once('-').unwrap();
        *count.entry(text.clone()).or_default() += 1;
        seen.entry((p.to_string(), m.topics[0].clone()))
            .or_default()
            .push(i.parse().unwrap());
    }
    assert!(count.values().all(|&n| n == 1), "duplicates: {count:?}");
    for ((p, t), seq) in &seen {
        let mut sorted = seq.clone();
        sorted.sort();
        assert_eq!(seq, &sorted, "publisher {p} topic {t} out of order");
    }
}

#[test]
fn fifty_subscribers_all_receive_every_message_in_order() {
    let node = Node::start(&[]);
    let mut subs: Vec<Client> = (0..50).map(|_| node.connect()).collect();
    for s in subs.iter_mut() {
        s.subscribe(&["fan"]);
    }
    let mut publisher = node.connect();
    let want: Vec<Msg> = (0..10)
        .map(|i| Msg::new(&["fan"], format!("f{i}").as_bytes()))
        .collect();
    for m in &want {
        publisher.publish1("fan", &m.payload);
    }
    for (i, s) in subs.iter_mut().enumerate() {
        let got = poll_count(s, 10);
        assert_eq!(got, want, "subscriber {i}");
    }
    for s in subs.iter_mut() {
        s.expect_open_and_empty();
    }
}

#[test]
fn subscribers_of_different_topics_each_get_only_their_own() {
    let node = Node::start(&[]);
    let mut sa = node.connect();
    let mut sb = node.connect();
    let mut publisher = node.connect();
    sa.subscribe(&["a"]);
    sb.subscribe(&["b"]);
    publisher.publish(&[(&["a"], b"for-a"), (&["b"], b"for-b")]);
    expect_entries(&mut sa, b"MESSAGE a 5\r\nfor-a\r\n");
    expect_entries(&mut sb, b"MESSAGE b 5\r\nfor-b\r\n");
    assert_nothing_arrives(&mut sa);
    assert_nothing_arrives(&mut sb);
}

/// With several worker threads, clients land on different workers: a
/// publisher's deliveries to another worker's clients travel through that
/// worker's courier and delivery board. Every subscriber gets every message
/// once, in order, single- and multi-topic alike, and `dump_queues` counts
/// what waits on the boards before anyone polls.
#[test]
fn a_publish_sent_right_after_stored_reaches_the_subscriber_across_threads() {
    // A plain subscribe is answered before its shards apply it; a publish
    // made after the answer, from a connection on another worker thread,
    // must still find it (8 threads: 6 workers and 2 router threads, so
    // the shards and the clients are on different threads).
    let node = Node::start(&[("worker_threads", "8")]);
    let mut subscriber = node.connect();
    let mut publisher = node.connect();
    for i in 0..200 {
        let topics: Vec<String> = (0..3).map(|k| format!("fresh{i}-{k}")).collect();
        let refs: Vec<&str> = topics.iter().map(|t| t.as_str()).collect();
        subscriber.subscribe(&refs);
        let payload = format!("m{i}");
        publisher.publish1(&topics[i % 3], payload.as_bytes());
        let got = poll_count(&mut subscriber, 1);
        assert_eq!(payloads(&got), [payload.as_str()], "round {i}");
    }
    assert_nothing_arrives(&mut subscriber);
}

#[test]
fn across_worker_threads_every_subscriber_gets_every_message_once_in_order() {
    // 5 threads: 4 workers and a router thread.
    let node = Node::start(&[("worker_threads", "5")]);
    let mut subs: Vec<Client> = (0..8).map(|_| node.connect()).collect();
    for (i, s) in subs.iter_mut().enumerate() {
        if i % 2 == 0 {
            s.subscribe(&["even", "all"]);
        } else {
            s.subscribe(&["all"]);
        }
    }
    let mut publishers: Vec<Client> = (0..3).map(|_| node.connect()).collect();
    let mut want_even = Vec::new();
    let mut want_odd = Vec::new();
    for round in 0..40 {
        for (p, publisher) in publishers.iter_mut().enumerate() {
            let payload = format!("p{p}r{round:02}").into_bytes();
            if round % 3 == 0 {
                publisher.publish(&[(&["even", "all"], &payload)]);
                want_even.push(Msg::new(&["even", "all"], &payload));
                want_odd.push(Msg::new(&["all"], &payload));
            } else {
                publisher.publish1("all", &payload);
                want_even.push(Msg::new(&["all"], &payload));
                want_odd.push(Msg::new(&["all"], &payload));
            }
        }
    }
    // Before any poll, what waits for each subscriber (on its worker's
    // board) shows in `dump_queues`: 120 messages each.
    let out = node.ctl(&["dump_queues"]);
    assert_eq!(out.code, Some(0), "{}", out.text());
    for s in &subs {
        let peer = s.local_addr().to_string();
        let row: Vec<&str> = out
            .stdout
            .lines()
            .map(|l| l.split('\t').collect::<Vec<_>>())
            .find(|r| r.get(1) == Some(&peer.as_str()))
            .unwrap_or_else(|| panic!("no queue for {peer}: {}", out.stdout));
        assert_eq!(
            (row[3], row[5]),
            ("120", "120"),
            "queued, received: {row:?}"
        );
    }
    for (i, s) in subs.iter_mut().enumerate() {
        let got = poll_exactly(s, 120);
        // Per publisher, in its publish order.
        let mut by_publisher: BTreeMap<String, Vec<Msg>> = BTreeMap::new();
        for m in got {
            let key = String::from_utf8_lossy(&m.payload[..2]).into_owned();
            by_publisher.entry(key).or_default().push(m);
        }
        let want = if i % 2 == 0 { &want_even } else { &want_odd };
        let mut want_by: BTreeMap<String, Vec<Msg>> = BTreeMap::new();
        for m in want {
            let key = String::from_utf8_lossy(&m.payload[..2]).into_owned();
            want_by.entry(key).or_default().push(m.clone());
        }
        assert_eq!(by_publisher, want_by, "subscriber {i}");
        s.expect_open_and_empty();
    }
}

/// An unsubscribe of more topics than a shard takes in one message is
/// answered at once and reaches each shard in chunks; a subscribe sent
/// right after it must not be undone by a later chunk of it.
#[test]
fn a_topic_subscribed_again_right_after_a_huge_unsubscribe_stays_subscribed() {
    let node = Node::start(&[]);
    let mut sub = node.connect();
    let mut publisher = node.connect();
    for round in 0..3 {
        let topics: Vec<String> = (0..40_000).map(|i| format!("r{round}t{i}")).collect();
        let refs: Vec<&str> = topics.iter().map(String::as_str).collect();
        sub.subscribe(&refs);
        // Unsubscribe all, then at once (pipelined) subscribe the last
        // ones again: they fall in the unsubscribe's last chunks.
        let again: Vec<&str> = refs[39_990..].to_vec();
        let mut write = set_request("unsubscribe", refs.join(" ").as_bytes());
        write.extend(set_request("subscribe", again.join(" ").as_bytes()));
        sub.send(&write);
        sub.expect(b"STORED\r\nSTORED\r\n");
        // Let every chunk reach its shard.
        std::thread::sleep(std::time::Duration::from_millis(300));
        for t in &again {
            publisher.publish1(t, b"x");
        }
        let got = poll_exactly(&mut sub, again.len());
        assert_eq!(got.len(), again.len(), "round {round}");
    }
}
