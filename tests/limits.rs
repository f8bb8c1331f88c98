//! Bad input and limits (`docs/PROTOCOL.md` §7, §8): a clear memcached-style answer, never a
//! crash, a hang or a partial effect; other clients never notice.

mod common;

use std::time::{Duration, Instant};

use common::*;

// --- ERROR, then close -------------------------------------------------------

#[test]
fn unknown_commands_answer_error_then_close() {
    let node = Node::start(&[]);
    for request in [
        &b"hello\r\n"[..],
        b"\r\n",
        b"QUIT\r\n",
        b"GET messages\r\n",
        b"gets messages\r\n",
        b"delete messages\r\n",
        b"incr messages 1\r\n",
    ] {
        let mut c = node.connect();
        c.send(request);
        c.expect(b"ERROR\r\n");
        c.expect_closed();
    }
    // The node is unharmed.
    node.connect().expect_open_and_empty();
}

#[test]
fn get_of_a_key_other_than_messages_answers_error_then_closes() {
    let node = Node::start(&[]);
    for request in [&b"get foo\r\n"[..], b"get subscribe\r\n", b"get quit\r\n"] {
        let mut c = node.connect();
        c.send(request);
        c.expect(b"ERROR\r\n");
        c.expect_closed();
    }
}

#[test]
fn set_of_an_unknown_key_answers_error_then_closes() {
    let node = Node::start(&[]);
    for request in [
        &b"set foo 0 0 1\r\nx\r\n"[..],
        b"set messages 0 0 0\r\n\r\n",
        b"set quit 0 0 0\r\n\r\n",
    ] {
        let mut c = node.connect();
        c.send(request);
        c.expect(b"ERROR\r\n");
        c.expect_closed();
    }
}

#[test]
fn unparsable_set_command_lines_answer_error_then_close() {
    let node = Node::start(&[]);
    for request in [
        &b"set subscribe 0 0\r\n"[..],
        b"set subscribe 0 0 x\r\n",
        b"set subscribe\r\n",
    ] {
        let mut c = node.connect();
        c.send(request);
        c.expect(b"ERROR\r\n");
        c.expect_closed();
    }
}

#[test]
fn an_error_on_one_connection_does_not_disturb_another() {
    let node = Node::start(&[]);
    let mut sub = node.connect();
    let mut publisher = node.connect();
    sub.subscribe(&["a"]);
    let mut bad = node.connect();
    bad.send(b"hello\r\n");
    bad.expect(b"ERROR\r\n");
    bad.expect_closed();
    publisher.publish1("a", b"fine");
    expect_entries(&mut sub, b"MESSAGE a 4\r\nfine\r\n");
}

// --- bad data chunk -----------------------------------------------------------

#[test]
fn data_block_longer_than_announced_answers_bad_data_chunk_then_closes() {
    let node = Node::start(&[]);
    let mut c = node.connect();
    c.send(b"set subscribe 0 0 1\r\nabc\r\n");
    c.expect(b"CLIENT_ERROR bad data chunk\r\n");
    c.expect_closed();
}

#[test]
fn data_block_not_followed_by_crlf_answers_bad_data_chunk_then_closes() {
    let node = Node::start(&[]);
    let mut c = node.connect();
    c.send(b"set subscribe 0 0 3\r\nabcd\n");
    c.expect(b"CLIENT_ERROR bad data chunk\r\n");
    c.expect_closed();
}

#[test]
fn a_bad_data_chunk_subscribes_nothing() {
    let node = Node::start(&[]);
    let mut c = node.connect();
    c.send(b"set subscribe 0 0 1\r\nabc\r\n");
    c.expect(b"CLIENT_ERROR bad data chunk\r\n");
    c.expect_closed();
    node.wait_for_stat("subscriptions", |n| n == 0);
}

// --- bad publish block: nothing published, connection open ---------------------

/// Sends a publish with this data block; expects `CLIENT_ERROR bad publish
/// block`, the connection open, and nothing delivered to a subscriber of
/// `a` and `b`; then a good publish from the same publisher arrives alone.
fn assert_bad_publish_block(block: &[u8]) {
    let node = Node::start(&[]);
    let mut sub = node.connect();
    let mut publisher = node.connect();
    sub.subscribe(&["a", "b"]);
    publisher.send(&set_request("publish", block));
    publisher.expect(b"CLIENT_ERROR bad publish block\r\n");
    publisher.expect_open_and_empty();
    // Same publisher, same topics, later: if anything from the bad block
    // had been published, it would arrive before this.
    publisher.publish(&[(&["a", "b"], b"good")]);
    let got = poll_exactly(&mut sub, 1);
    assert_eq!(
        got,
        vec![Msg::new(&["a", "b"], b"good")],
        "block \"{}\" leaked",
        esc(block)
    );
}

#[test]
fn bad_publish_block_missing_topic() {
    assert_bad_publish_block(b"MESSAGE 3\r\nhey\r\n");
}

#[test]
fn bad_publish_block_non_numeric_length() {
    assert_bad_publish_block(b"MESSAGE a x\r\nhey\r\n");
}

#[test]
fn bad_publish_block_negative_length() {
    assert_bad_publish_block(b"MESSAGE a -3\r\nhey\r\n");
}

#[test]
fn bad_publish_block_length_past_the_end() {
    assert_bad_publish_block(b"MESSAGE a 10\r\nhey\r\n");
}

#[test]
fn bad_publish_block_length_shorter_than_the_payload() {
    assert_bad_publish_block(b"MESSAGE a 2\r\nhey\r\n");
}

#[test]
fn bad_publish_block_not_starting_with_message() {
    assert_bad_publish_block(b"hello\r\n");
}

#[test]
fn bad_publish_block_lowercase_message_keyword() {
    assert_bad_publish_block(b"message a 3\r\nhey\r\n");
}

#[test]
fn publish_block_whose_last_entry_lacks_its_crlf_is_accepted_memcached_value_style() {
    // `set publish 0 0 16\r\nMESSAGE a 3\r\nhey\r\n`: the count leaves out
    // the last entry's own CRLF, as a client that sets the block as a plain
    // memcached value does (symmetric with what `get messages` returns).
    // The Erlang original closed the connection silently; this node accepts
    // it (`docs/PROTOCOL.md` §3, protocol/src/publish.rs).
    let node = Node::start(&[]);
    let mut sub = node.connect();
    let mut publisher = node.connect();
    sub.subscribe(&["a"]);
    publisher.send(b"set publish 0 0 16\r\nMESSAGE a 3\r\nhey\r\n");
    publisher.expect(b"STORED\r\n");
    expect_entries(&mut sub, b"MESSAGE a 3\r\nhey\r\n");
    // Only the LAST entry may lack it.
    publisher.send(&set_request(
        "publish",
        b"MESSAGE a 1\r\nxMESSAGE a 1\r\ny\r\n",
    ));
    publisher.expect(b"CLIENT_ERROR bad publish block\r\n");
    publisher.expect_open_and_empty();
}

#[test]
fn bad_publish_block_second_entry_malformed_publishes_neither() {
    assert_bad_publish_block(b"MESSAGE a 5\r\nfirst\r\nMESSAGE b\r\nxx\r\n");
}

#[test]
fn bad_publish_block_third_entry_length_past_the_end_publishes_none() {
    assert_bad_publish_block(b"MESSAGE a 2\r\nm1\r\nMESSAGE b 2\r\nm2\r\nMESSAGE a 99\r\nm3\r\n");
}

// --- command line length ------------------------------------------------------

#[test]
fn command_line_longer_than_2048_bytes_answers_client_error_then_closes() {
    let node = Node::start(&[]);
    let mut c = node.connect();
    let mut line = b"set subscribe ".to_vec();
    line.extend(std::iter::repeat_n(b'0', 2100));
    line.extend_from_slice(b" 0 1\r\na\r\n");
    c.send(&line);
    c.expect_line_starting("CLIENT_ERROR ");
    c.expect_closed();
}

#[test]
fn endless_command_line_without_newline_is_cut_off_at_the_limit() {
    // The server must not wait for a newline that never comes.
    let node = Node::start(&[]);
    let mut c = node.connect();
    c.send(&vec![b'x'; 4096]);
    c.expect_line_starting("CLIENT_ERROR ");
    c.expect_closed();
}

#[test]
fn command_line_of_exactly_2048_bytes_is_accepted() {
    let node = Node::start(&[]);
    let mut c = node.connect();
    // `set subscribe 000…0 0 1\r\n`: 2048 bytes including the CRLF (the flags
    // are zero-padded; they are ignored anyway).
    let head = b"set subscribe ";
    let tail = b" 0 1\r\n";
    let mut line = head.to_vec();
    line.extend(std::iter::repeat_n(b'0', 2048 - head.len() - tail.len()));
    line.extend_from_slice(tail);
    assert_eq!(line.len(), 2048);
    c.send(&line);
    c.send(b"a\r\n");
    c.expect(b"STORED\r\n");
    c.expect_open_and_empty();
}

// --- data block size ----------------------------------------------------------

#[test]
fn data_block_over_max_request_bytes_answers_client_error_and_the_connection_stays_usable() {
    let node = Node::start(&[("max_request_bytes", "1000")]);
    let mut c = node.connect();
    // The oversized block is made of requests: if the server read it as
    // commands, extra replies would show.
    let mut data = b"get messages\r\n".repeat(400);
    data.truncate(5000);
    c.send(b"set subscribe 0 0 5000\r\n");
    c.send(&data);
    c.send(b"\r\n");
    c.expect_line_starting("CLIENT_ERROR ");
    c.send(b"get messages\r\n");
    c.expect(b"END\r\n");
    // Nothing else pending, and still usable.
    c.send(b"set subscribe 0 0 1\r\na\r\n");
    c.expect(b"STORED\r\n");
    node.wait_for_stat("subscriptions", |n| n == 1);
}

#[test]
fn publish_over_max_request_bytes_is_refused_and_not_delivered_and_one_at_the_limit_is_accepted() {
    let node = Node::start(&[("max_request_bytes", "1000")]);
    let mut sub = node.connect();
    let mut publisher = node.connect();
    sub.subscribe(&["a"]);
    // "MESSAGE a 985\r\n" is 15 bytes, + 985 + 2 = 1002 > 1000.
    let too_big = publish_request(&[(&["a"], &[b'z'; 985])]);
    publisher.send(&too_big);
    publisher.expect_line_starting("CLIENT_ERROR ");
    publisher.expect_open_and_empty();
    // 15 + 983 + 2 = 1000: exactly at the limit.
    let block = publish_block(&[(&["a"], &[b'y'; 983])]);
    assert_eq!(block.len(), 1000);
    publisher.send(&set_request("publish", &block));
    publisher.expect(b"STORED\r\n");
    let got = poll_exactly(&mut sub, 1);
    assert_eq!(got, vec![Msg::new(&["a"], &[b'y'; 983])]);
}

// --- topic size ---------------------------------------------------------------

#[test]
fn topic_longer_than_max_topic_bytes_answers_client_error_and_stays_open() {
    let node = Node::start(&[]);
    let mut c = node.connect();
    let long = "t".repeat(1025);
    c.send(&set_request("subscribe", long.as_bytes()));
    c.expect_line_starting("CLIENT_ERROR ");
    c.expect_open_and_empty();
    // 1024 is fine.
    let ok = "t".repeat(1024);
    c.subscribe(&[&ok]);
}

#[test]
fn publish_to_a_topic_longer_than_max_topic_bytes_answers_client_error_and_stays_open() {
    let node = Node::start(&[("max_topic_bytes", "8")]);
    let mut sub = node.connect();
    let mut publisher = node.connect();
    sub.subscribe(&["12345678"]);
    publisher.send(&publish_request(&[
        (&["12345678"], b"ok"),
        (&["123456789"], b"no"),
    ]));
    publisher.expect_line_starting("CLIENT_ERROR ");
    publisher.expect_open_and_empty();
    publisher.publish1("12345678", b"after");
    let got = poll_exactly(&mut sub, 1);
    assert_eq!(got, vec![Msg::new(&["12345678"], b"after")]);
}

#[test]
fn retro_subscribe_to_a_topic_longer_than_max_topic_bytes_answers_client_error() {
    let node = Node::start(&[("max_topic_bytes", "8")]);
    let mut c = node.connect();
    c.send(&retro_request("4102444800", &["123456789"]));
    c.expect_line_starting("CLIENT_ERROR ");
    c.expect_open_and_empty();
}

// --- max_tcp_clients ----------------------------------------------------------

#[test]
fn max_tcp_clients_refuses_the_newcomer_and_accepts_again_after_one_leaves() {
    let node = Node::start(&[("max_tcp_clients", "2")]);
    let mut first = node.connect();
    let mut second = node.connect();
    first.expect_open_and_empty();
    second.expect_open_and_empty();

    // Sent unprompted, on connect.
    let mut third = node.connect();
    third.expect(b"SERVER_ERROR Too many clients\r\n");
    third.expect_closed();

    // The two are untouched.
    first.subscribe(&["a"]);
    second.publish1("a", b"still here");
    expect_entries(&mut first, b"MESSAGE a 10\r\nstill here\r\n");

    // One leaves; a newcomer is accepted (once the node has noticed).
    first.send(b"quit\r\n");
    first.expect_closed();
    let deadline = Instant::now() + ASYNC_TIMEOUT;
    loop {
        let mut c = node.connect();
        c.send(b"get messages\r\n");
        let line = c.read_line();
        if line == b"END\r\n" {
            break;
        }
        assert_bytes_eq(&line, b"SERVER_ERROR Too many clients\r\n", "newcomer");
        assert!(Instant::now() < deadline, "a slot never came free");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(node.log_contains("too many clients"), "refusal not logged");
}

// --- client_idle_timeout ------------------------------------------------------

#[test]
fn an_idle_client_is_closed_and_its_subscriptions_removed_but_a_polling_one_is_not() {
    let node = Node::start(&[("client_idle_timeout", "1")]);
    let mut idle = node.connect();
    let mut busy = node.connect();
    idle.subscribe(&["idle-topic"]);
    busy.subscribe(&["busy-topic"]);
    let started = Instant::now();
    // `busy` polls every 200 ms while `idle` says nothing.
    let mut idle_closed_after = None;
    while started.elapsed() < Duration::from_millis(3500) {
        busy.expect_open_and_empty();
        if idle_closed_after.is_none() && idle.is_closed_within(Duration::from_millis(200)) {
            idle_closed_after = Some(started.elapsed());
        }
        if idle_closed_after.is_some() && started.elapsed() > Duration::from_millis(2500) {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let after = idle_closed_after.expect("the idle client was not closed within ~3.5 s");
    assert!(
        after >= Duration::from_millis(800),
        "closed too early: {after:?}"
    );
    busy.expect_open_and_empty();
    // Only busy's subscription is left (the stats connections subscribe
    // nothing).
    node.wait_for_stat("subscriptions", |n| n == 1);
    busy.expect_open_and_empty();
}

// --- slow consumers -----------------------------------------------------------

/// Publishes `count` messages of `payload_len` bytes to `topic` in batches
/// of `batch`, waiting after each batch until `poller` has them all (so the
/// poller's queue never holds more than one batch). Returns what the poller
/// received.
fn publish_paced(
    publisher: &mut Client,
    poller: &mut Client,
    topic: &str,
    count: usize,
    batch: usize,
    payload_len: usize,
) -> Vec<Msg> {
    let mut got = Vec::new();
    let mut sent = 0;
    while sent < count {
        let n = batch.min(count - sent);
        let mut write = Vec::new();
        for i in sent..sent + n {
            let mut payload = format!("{i:06}-").into_bytes();
            payload.resize(payload_len.max(payload.len()), b'.');
            write.extend(publish_request(&[(&[topic], &payload)]));
        }
        publisher.send(&write);
        publisher.expect(&b"STORED\r\n".repeat(n));
        sent += n;
        let have = got.len();
        got.extend(poll_until(
            poller,
            |m| have + m.len() >= sent,
            ASYNC_TIMEOUT,
        ));
    }
    got
}

/// Waits for a slow consumer's connection to close; it may say
/// `SERVER_ERROR <why>\r\n` first, nothing else.
fn assert_closed_as_slow_consumer(c: &mut Client) {
    let got = c.wait_closed(ASYNC_TIMEOUT);
    assert!(
        got.is_empty()
            || (got.starts_with(b"SERVER_ERROR ")
                && got.ends_with(b"\r\n")
                && got.iter().filter(|&&b| b == b'\n').count() == 1),
        "a slow consumer may get one SERVER_ERROR line before the close, got \"{}\"",
        esc(&got)
    );
}

#[test]
fn a_subscriber_past_max_queue_messages_is_closed_as_a_slow_consumer_and_others_get_everything() {
    let node = Node::start(&[("max_queue_messages", "100")]);
    let mut slow = node.connect();
    let mut poller = node.connect();
    let mut publisher = node.connect();
    slow.subscribe(&["q"]);
    poller.subscribe(&["q"]);
    let got = publish_paced(&mut publisher, &mut poller, "q", 200, 20, 8);
    assert_eq!(got.len(), 200);
    for (i, m) in got.iter().enumerate() {
        assert!(
            m.payload.starts_with(format!("{i:06}-").as_bytes()),
            "out of order at {i}: {m:?}"
        );
    }
    assert_closed_as_slow_consumer(&mut slow);
    assert!(
        node.log_contains("slow consumer"),
        "no slow-consumer log line"
    );
    // Its state is gone; the poller's remains.
    node.wait_for_stat("subscriptions", |n| n == 1);
    poller.expect_open_and_empty();
}

#[test]
fn a_subscriber_past_max_queue_bytes_is_closed_as_a_slow_consumer_and_others_get_everything() {
    let node = Node::start(&[("max_queue_bytes", "10000")]);
    let mut slow = node.connect();
    let mut poller = node.connect();
    let mut publisher = node.connect();
    slow.subscribe(&["q"]);
    poller.subscribe(&["q"]);
    // 30 x 1000 bytes to a client that never polls; the poller never holds
    // more than 2 x 1000.
    let got = publish_paced(&mut publisher, &mut poller, "q", 30, 2, 1000);
    assert_eq!(got.len(), 30);
    assert!(got.iter().all(|m| m.payload.len() == 1000));
    assert_closed_as_slow_consumer(&mut slow);
    assert!(
        node.log_contains("slow consumer"),
        "no slow-consumer log line"
    );
    node.wait_for_stat("subscriptions", |n| n == 1);
    poller.expect_open_and_empty();
}

#[test]
fn a_subscriber_within_the_queue_limits_is_not_closed() {
    let node = Node::start(&[("max_queue_messages", "100")]);
    let mut sub = node.connect();
    let mut witness = node.connect();
    let mut publisher = node.connect();
    sub.subscribe(&["q"]);
    witness.subscribe(&["q"]);
    let block: Vec<Vec<u8>> = (0..100).map(|i| format!("{i:03}").into_bytes()).collect();
    let entries: Vec<(&[&str], &[u8])> = block.iter().map(|p| (&["q"][..], p.as_slice())).collect();
    publisher.publish(&entries);
    poll_count(&mut witness, 100);
    let got = poll_exactly(&mut sub, 100);
    assert_eq!(payloads(&got)[99], "099");
}

// --- poll size ------------------------------------------------------------------

/// A `get messages` answer carries at most about 1 MiB (always at least one
/// message); what is left comes with the next polls, in order. This bounds
/// the write buffer a poll builds when subscribers fall behind on large
/// messages.
#[test]
fn a_poll_answer_carries_at_most_about_one_mebibyte_and_the_rest_follows_in_order() {
    let node = Node::start(&[]);
    let mut sub = node.connect();
    sub.subscribe(&["big"]);
    let mut publisher = node.connect();
    let payloads: Vec<Vec<u8>> = (0..5u64)
        .map(|i| pseudo_random_bytes(600 * 1024, i))
        .collect();
    for p in &payloads {
        publisher.publish1("big", p);
    }
    let mut got: Vec<Vec<u8>> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while got.len() < payloads.len() && Instant::now() < deadline {
        let batch = sub.poll();
        assert!(
            batch.len() <= 1,
            "a poll carried {} messages of 600 KiB (over the 1 MiB budget)",
            batch.len()
        );
        got.extend(batch.into_iter().map(|m| m.payload));
    }
    assert_eq!(got.len(), payloads.len(), "every message arrives");
    assert!(got == payloads, "in publish order, byte-exact");
    assert!(sub.poll().is_empty());
}
