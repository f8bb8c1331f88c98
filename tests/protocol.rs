//! The wire protocol, byte for byte (`docs/PROTOCOL.md` §2-§4): normal
//! commands and pipelining, with the byte sequences the Erlang original used.

mod common;

use common::*;

// --- Normal commands ------------------------------------------------------

#[test]
fn subscribe_two_topics_answers_stored_and_stays_open() {
    let node = Node::start(&[]);
    let mut c = node.connect();
    c.send(b"set subscribe 0 0 3\r\na b\r\n");
    c.expect(b"STORED\r\n");
    c.expect_open_and_empty();
}

#[test]
fn unsubscribe_answers_stored_also_for_a_topic_never_subscribed() {
    let node = Node::start(&[]);
    let mut c = node.connect();
    c.send(b"set subscribe 0 0 3\r\na b\r\n");
    c.expect(b"STORED\r\n");
    c.send(b"set unsubscribe 0 0 1\r\nb\r\n");
    c.expect(b"STORED\r\n");
    c.send(b"set unsubscribe 0 0 5\r\nnever\r\n");
    c.expect(b"STORED\r\n");
    c.expect_open_and_empty();
}

#[test]
fn publish_one_entry_answers_stored() {
    let node = Node::start(&[]);
    let mut c = node.connect();
    c.send(b"set publish 0 0 18\r\nMESSAGE a 3\r\nhey\r\n\r\n");
    c.expect(b"STORED\r\n");
    c.expect_open_and_empty();
}

#[test]
fn publish_three_entries_answers_stored() {
    let node = Node::start(&[]);
    let mut c = node.connect();
    c.send(b"set publish 0 0 52\r\nMESSAGE a 2\r\nm1\r\nMESSAGE zz 2\r\nm2\r\nMESSAGE a 2\r\nm3\r\n\r\n");
    c.expect(b"STORED\r\n");
    c.expect_open_and_empty();
}

#[test]
fn publish_with_no_entries_answers_stored() {
    let node = Node::start(&[]);
    let mut c = node.connect();
    c.send(b"set publish 0 0 0\r\n\r\n");
    c.expect(b"STORED\r\n");
    c.expect_open_and_empty();
}

#[test]
fn get_messages_on_an_empty_queue_answers_end() {
    let node = Node::start(&[]);
    let mut c = node.connect();
    c.send(b"get messages\r\n");
    c.expect(b"END\r\n");
    c.send(b"get messages\r\n");
    c.expect(b"END\r\n");
}

#[test]
fn get_returns_the_message_framed_then_the_queue_is_drained() {
    let node = Node::start(&[]);
    let mut sub = node.connect();
    let mut publisher = node.connect();
    sub.send(b"set subscribe 0 0 1\r\na\r\n");
    sub.expect(b"STORED\r\n");
    publisher.send(b"set publish 0 0 18\r\nMESSAGE a 3\r\nhey\r\n\r\n");
    publisher.expect(b"STORED\r\n");

    // 16 = len("MESSAGE a 3\r\nhey"): the last CRLF is the value terminator.
    let reply = first_nonempty_reply(&mut sub);
    assert_bytes_eq(
        &reply,
        b"VALUE messages 0 16\r\nMESSAGE a 3\r\nhey\r\nEND\r\n",
        "get messages",
    );
    sub.send(b"get messages\r\n");
    sub.expect(b"END\r\n");
}

#[test]
fn entries_of_one_block_arrive_in_order_and_unsubscribed_topics_are_skipped() {
    let node = Node::start(&[]);
    let mut sub = node.connect();
    let mut publisher = node.connect();
    sub.subscribe(&["a"]);
    publisher.send(b"set publish 0 0 52\r\nMESSAGE a 2\r\nm1\r\nMESSAGE zz 2\r\nm2\r\nMESSAGE a 2\r\nm3\r\n\r\n");
    publisher.expect(b"STORED\r\n");
    expect_entries(&mut sub, b"MESSAGE a 2\r\nm1\r\nMESSAGE a 2\r\nm3\r\n");
    assert_nothing_arrives(&mut sub);
}

#[test]
fn both_entries_queued_come_back_in_one_value_of_32_bytes() {
    // Publish before the subscriber polls, and wait until a witness has
    // both, so that both are queued when the subscriber first asks.
    let node = Node::start(&[]);
    let mut sub = node.connect();
    let mut witness = node.connect();
    let mut publisher = node.connect();
    sub.subscribe(&["a"]);
    witness.subscribe(&["a"]);
    publisher.send(b"set publish 0 0 52\r\nMESSAGE a 2\r\nm1\r\nMESSAGE zz 2\r\nm2\r\nMESSAGE a 2\r\nm3\r\n\r\n");
    publisher.expect(b"STORED\r\n");
    poll_count(&mut witness, 2);
    let reply = first_nonempty_reply(&mut sub);
    if reply != b"VALUE messages 0 32\r\nMESSAGE a 2\r\nm1\r\nMESSAGE a 2\r\nm3\r\nEND\r\n" {
        // The second entry may still have been on its way; then it must
        // follow on its own.
        assert_bytes_eq(
            &reply,
            b"VALUE messages 0 15\r\nMESSAGE a 2\r\nm1\r\nEND\r\n",
            "first get",
        );
        let reply = first_nonempty_reply(&mut sub);
        assert_bytes_eq(
            &reply,
            b"VALUE messages 0 15\r\nMESSAGE a 2\r\nm3\r\nEND\r\n",
            "second get",
        );
    }
}

#[test]
fn payload_containing_crlf_and_lf_is_length_framed() {
    let node = Node::start(&[]);
    let mut sub = node.connect();
    let mut publisher = node.connect();
    sub.subscribe(&["a"]);
    publisher.send(b"set publish 0 0 21\r\nMESSAGE a 6\r\nx\r\ny\nz\r\n\r\n");
    publisher.expect(b"STORED\r\n");
    let reply = first_nonempty_reply(&mut sub);
    assert_bytes_eq(
        &reply,
        b"VALUE messages 0 19\r\nMESSAGE a 6\r\nx\r\ny\nz\r\nEND\r\n",
        "get messages",
    );
}

#[test]
fn empty_payload_is_delivered() {
    let node = Node::start(&[]);
    let mut sub = node.connect();
    let mut publisher = node.connect();
    sub.subscribe(&["a"]);
    publisher.send(b"set publish 0 0 15\r\nMESSAGE a 0\r\n\r\n\r\n");
    publisher.expect(b"STORED\r\n");
    let reply = first_nonempty_reply(&mut sub);
    assert_bytes_eq(
        &reply,
        b"VALUE messages 0 13\r\nMESSAGE a 0\r\n\r\nEND\r\n",
        "get messages",
    );
}

#[test]
fn binary_payload_with_nul_and_end_marker_is_delivered_byte_exact() {
    let node = Node::start(&[]);
    let mut sub = node.connect();
    let mut publisher = node.connect();
    sub.subscribe(&["a"]);
    let payload: &[u8] = b"\x00\xff\r\nEND\r\n\nVALUE x";
    publisher.publish(&[(&["a"], payload)]);
    let reply = first_nonempty_reply(&mut sub);
    assert_bytes_eq(
        &reply,
        &messages_reply(&entry(&["a"], payload)),
        "get messages",
    );
    sub.expect_open_and_empty();
}

#[test]
fn one_mebibyte_random_payload_round_trips_byte_exact() {
    let node = Node::start(&[]);
    let mut sub = node.connect();
    let mut publisher = node.connect();
    sub.subscribe(&["big"]);
    let mut payload = pseudo_random_bytes(1 << 20, 0x5eed);
    // Make sure the payload holds the protocol's own markers too.
    payload[1000..1007].copy_from_slice(b"\r\nEND\r\n");
    publisher.publish(&[(&["big"], &payload)]);
    let reply = first_nonempty_reply(&mut sub);
    assert_bytes_eq(
        &reply,
        &messages_reply(&entry(&["big"], &payload)),
        "1 MiB get",
    );
    sub.expect_open_and_empty();
}

#[test]
fn register_answers_stored_and_its_data_is_ignored() {
    let node = Node::start(&[]);
    let mut c = node.connect();
    c.send(b"set register 0 0 0\r\n\r\n");
    c.expect(b"STORED\r\n");
    c.send(b"set register 0 0 3\r\nabc\r\n");
    c.expect(b"STORED\r\n");
    c.expect_open_and_empty();
}

#[test]
fn flags_and_exptime_are_accepted_and_ignored() {
    let node = Node::start(&[]);
    let mut sub = node.connect();
    let mut publisher = node.connect();
    sub.send(b"set subscribe 123 456 1\r\na\r\n");
    sub.expect(b"STORED\r\n");
    publisher.send(b"set publish 7 99 18\r\nMESSAGE a 3\r\nhey\r\n\r\n");
    publisher.expect(b"STORED\r\n");
    expect_entries(&mut sub, b"MESSAGE a 3\r\nhey\r\n");
}

#[test]
fn quit_closes_the_connection_without_a_reply() {
    let node = Node::start(&[]);
    let mut c = node.connect();
    c.send(b"quit\r\n");
    c.expect_closed();
}

#[test]
fn subscribe_to_twenty_thousand_topics_in_one_140kb_block() {
    let node = Node::start(&[]);
    let mut sub = node.connect();
    let mut publisher = node.connect();
    let topics: Vec<String> = (0..20_000).map(|i| format!("t{i:05}")).collect();
    let data = topics.join(" ");
    assert!(data.len() > 139_000);
    sub.send(&set_request("subscribe", data.as_bytes()));
    sub.expect(b"STORED\r\n");
    publisher.publish1("t19999", b"last");
    publisher.publish1("t00000", b"first");
    let got = poll_exactly(&mut sub, 2);
    let mut got = payloads(&got);
    got.sort();
    assert_eq!(got, vec!["first", "last"]);
}

#[test]
fn trailing_space_on_a_command_line_is_ignored() {
    let node = Node::start(&[]);
    let mut c = node.connect();
    c.send(b"get messages \r\n");
    c.expect(b"END\r\n");
    c.send(b"set subscribe 0 0 1 \r\na\r\n");
    c.expect(b"STORED\r\n");
    let mut publisher = node.connect();
    publisher.publish1("a", b"hey");
    expect_entries(&mut c, b"MESSAGE a 3\r\nhey\r\n");
}

// --- Pipelining -------------------------------------------------------------

#[test]
fn pipelined_requests_in_one_write_are_answered_in_order() {
    let node = Node::start(&[]);
    let mut c = node.connect();
    c.send(
        b"set subscribe 0 0 2\r\npp\r\n\
          get messages\r\n\
          set publish 0 0 18\r\nMESSAGE pp 2\r\nhi\r\n\r\n\
          set unsubscribe 0 0 2\r\npp\r\n\
          get messages\r\n",
    );
    // The publisher's own message is not delivered to it.
    c.expect(b"STORED\r\nEND\r\nSTORED\r\nSTORED\r\nEND\r\n");
    c.expect_open_and_empty();
}

#[test]
fn two_publishes_in_one_write_answer_stored_twice_and_arrive_in_order() {
    let node = Node::start(&[]);
    let mut sub = node.connect();
    let mut publisher = node.connect();
    sub.subscribe(&["a"]);
    let mut write = publish_request(&[(&["a"], b"one")]);
    write.extend(publish_request(&[(&["a"], b"two")]));
    publisher.send(&write);
    publisher.expect(b"STORED\r\nSTORED\r\n");
    expect_entries(&mut sub, b"MESSAGE a 3\r\none\r\nMESSAGE a 3\r\ntwo\r\n");
}

#[test]
fn subscribe_then_quit_in_one_write_answers_stored_then_closes() {
    let node = Node::start(&[]);
    let mut c = node.connect();
    c.send(b"set subscribe 0 0 3\r\na b\r\nquit\r\n");
    c.expect(b"STORED\r\n");
    c.expect_closed();
}

#[test]
fn a_long_pipeline_of_mixed_requests_is_answered_in_order() {
    let node = Node::start(&[]);
    let mut c = node.connect();
    let mut write = Vec::new();
    let mut want = Vec::new();
    for i in 0..200 {
        match i % 4 {
            0 => {
                write.extend(set_request("subscribe", format!("t{i}").as_bytes()));
                want.extend_from_slice(b"STORED\r\n");
            }
            1 => {
                write.extend_from_slice(b"get messages\r\n");
                want.extend_from_slice(b"END\r\n");
            }
            2 => {
                write.extend(publish_request(&[(
                    &["nobody"],
                    format!("m{i}").as_bytes(),
                )]));
                want.extend_from_slice(b"STORED\r\n");
            }
            _ => {
                write.extend(set_request("unsubscribe", format!("t{}", i - 3).as_bytes()));
                want.extend_from_slice(b"STORED\r\n");
            }
        }
    }
    c.send(&write);
    c.expect(&want);
    c.expect_open_and_empty();
}

#[test]
fn requests_split_into_one_byte_writes_are_handled_normally() {
    let node = Node::start(&[]);
    let mut sub = node.connect();
    let mut publisher = node.connect();
    // Every byte its own segment, including between CR and LF.
    sub.send_bytewise(b"set subscribe 0 0 3\r\na b\r\n");
    sub.expect(b"STORED\r\n");
    publisher.send_bytewise(b"set publish 0 0 21\r\nMESSAGE a 6\r\nx\r\ny\nz\r\n\r\n");
    publisher.expect(b"STORED\r\n");
    let deadline = std::time::Instant::now() + ASYNC_TIMEOUT;
    loop {
        sub.send_bytewise(b"get messages\r\n");
        let reply = sub.read_messages_reply();
        if reply != b"END\r\n" {
            assert_bytes_eq(
                &reply,
                b"VALUE messages 0 19\r\nMESSAGE a 6\r\nx\r\ny\nz\r\nEND\r\n",
                "get messages",
            );
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "message never arrived"
        );
    }
}

#[test]
fn requests_split_at_every_boundary_in_small_chunks_are_handled_normally() {
    let node = Node::start(&[]);
    let mut c = node.connect();
    let write: &[u8] = b"set subscribe 0 0 1\r\na\r\nget messages\r\nset publish 0 0 18\r\nMESSAGE b 3\r\nhey\r\n\r\nget messages\r\n";
    for chunk in write.chunks(3) {
        c.send(chunk);
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    c.expect(b"STORED\r\nEND\r\nSTORED\r\nEND\r\n");
}

// --- Operating it: version, stats, noreply ----------------------------------

#[test]
fn version_answers_version_line() {
    let node = Node::start(&[]);
    let mut c = node.connect();
    c.send(b"version\r\n");
    let line = c.expect_line_starting("VERSION ");
    assert!(line.len() > "VERSION ".len(), "empty version: {line:?}");
    assert!(!line.contains('\r') && !line.contains('\n'));
    c.expect_open_and_empty();
}

#[test]
fn stats_answers_stat_lines_then_end_with_the_memcached_basics() {
    let node = Node::start(&[]);
    let mut c = node.connect();
    let stats = c.stats();
    for name in ["uptime", "version", "curr_connections", "total_connections"] {
        assert!(stats.contains_key(name), "stats lacks `{name}`: {stats:?}");
    }
    let numeric = |name: &str| -> i64 {
        stats[name]
            .parse()
            .unwrap_or_else(|_| panic!("stat `{name}` not a number: {:?}", stats[name]))
    };
    assert!(numeric("uptime") >= 0);
    assert!(numeric("curr_connections") >= 1, "{stats:?}");
    assert!(numeric("total_connections") >= 1, "{stats:?}");
    c.expect_open_and_empty();
}

#[test]
fn stats_counts_current_and_total_connections() {
    let node = Node::start(&[]);
    let mut a = node.connect();
    let before = a.stats();
    let mut b = node.connect();
    b.expect_open_and_empty();
    let during = a.stats();
    let n =
        |s: &std::collections::HashMap<String, String>, k: &str| -> i64 { s[k].parse().unwrap() };
    assert_eq!(
        n(&during, "curr_connections"),
        n(&before, "curr_connections") + 1,
        "before {before:?} during {during:?}"
    );
    assert_eq!(
        n(&during, "total_connections"),
        n(&before, "total_connections") + 1,
        "before {before:?} during {during:?}"
    );
}

#[test]
fn noreply_subscribe_sends_nothing_and_still_subscribes() {
    let node = Node::start(&[]);
    let mut sub = node.connect();
    let mut publisher = node.connect();
    // If STORED were sent, the first bytes would not be END.
    sub.send(b"set subscribe 0 0 1 noreply\r\na\r\nget messages\r\n");
    sub.expect(b"END\r\n");
    publisher.publish1("a", b"hey");
    expect_entries(&mut sub, b"MESSAGE a 3\r\nhey\r\n");
}

#[test]
fn noreply_publish_sends_nothing_and_still_publishes() {
    let node = Node::start(&[]);
    let mut sub = node.connect();
    let mut publisher = node.connect();
    sub.subscribe(&["a"]);
    publisher.send(b"set publish 0 0 18 noreply\r\nMESSAGE a 3\r\nhey\r\n\r\nget messages\r\n");
    publisher.expect(b"END\r\n");
    expect_entries(&mut sub, b"MESSAGE a 3\r\nhey\r\n");
}

#[test]
fn noreply_unsubscribe_and_register_send_nothing() {
    let node = Node::start(&[]);
    let mut c = node.connect();
    c.send(b"set subscribe 0 0 1\r\na\r\nset unsubscribe 0 0 1 noreply\r\na\r\nset register 0 0 0 noreply\r\n\r\nget messages\r\n");
    c.expect(b"STORED\r\nEND\r\n");
}
