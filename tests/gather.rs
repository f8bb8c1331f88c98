//! A poll that finds little queued waits `poll_gather_ms` for more before
//! it is answered, so that a client polling in a tight loop gets more per
//! answer; one that finds nothing waits only if the client's last answer
//! carried something. These tests show the wait, its bound, the option
//! that turns it off, that an idle client is answered at once, and that
//! nothing behind a held poll waits for it or changes what it answers.

mod common;

use std::time::{Duration, Instant};

use common::*;

/// Subscribes `c` to `t` and feeds it ([`feed`]).
fn fed(c: &mut Client, publisher: &mut Client) {
    c.subscribe(&["t"]);
    feed(c, publisher);
}

/// Feeds `c`, subscribed to `t`, one message through `publisher`, polled:
/// its next poll finding nothing is then held.
fn feed(c: &mut Client, publisher: &mut Client) {
    publisher.publish1("t", b"first");
    assert_eq!(c.poll(), vec![Msg::new(&["t"], b"first")]);
}

/// A node gathering for `ms`, a subscriber to `t`, and a publisher.
fn subscribed_on(ms: &str) -> (Node, Client, Client) {
    let node = Node::start(&[("poll_gather_ms", ms)]);
    let mut sub = node.connect();
    sub.subscribe(&["t"]);
    let publisher = node.connect();
    (node, sub, publisher)
}

/// [`subscribed_on`], the subscriber fed ([`feed`]) by the publisher.
fn fed_on(ms: &str) -> (Node, Client, Client) {
    let (node, mut sub, mut publisher) = subscribed_on(ms);
    feed(&mut sub, &mut publisher);
    (node, sub, publisher)
}

/// Reads the answer to a poll already sent: it must carry messages.
fn read_answer(c: &mut Client) -> Vec<Msg> {
    let entries = c.read_entries_raw();
    assert!(!entries.is_empty(), "the poll was answered `END`");
    parse_entries(&entries)
}

/// A held poll's answer carries what was published during the wait, and
/// the wait lasts about `poll_gather_ms`, not longer.
#[test]
fn a_fed_clients_poll_that_finds_nothing_waits_poll_gather_ms_and_carries_what_arrived_meanwhile() {
    let (_node, mut sub, mut publisher) = fed_on("600");
    let start = Instant::now();
    sub.send(b"get messages\r\n");
    std::thread::sleep(Duration::from_millis(100));
    publisher.publish1("t", b"late");
    let got = read_answer(&mut sub);
    let waited = start.elapsed();
    assert_eq!(got, vec![Msg::new(&["t"], b"late")]);
    assert!(
        waited >= Duration::from_millis(550),
        "answered after {waited:?}"
    );
    assert!(waited < Duration::from_secs(3), "answered after {waited:?}");
}

/// `poll_gather_ms 0` answers a fed client's empty poll at once, as the
/// original did; the same poll on a node gathering for a second waits
/// that second.
#[test]
fn poll_gather_ms_0_answers_at_once_and_1000_waits_a_second() {
    let (_at_once, mut c, _publisher) = fed_on("0");
    let start = Instant::now();
    assert_eq!(c.get_raw(), b"END\r\n");
    let immediate = start.elapsed();

    let (_gathering, mut c, _publisher) = fed_on("1000");
    let start = Instant::now();
    assert_eq!(c.get_raw(), b"END\r\n");
    let held = start.elapsed();

    assert!(held >= Duration::from_millis(950), "held {held:?}");
    assert!(held < Duration::from_secs(4), "held {held:?}");
    assert!(
        immediate < Duration::from_millis(500),
        "at once took {immediate:?}"
    );
}

/// A request pipelined behind a held poll answers the poll first, with
/// the inbox as it stood before the request: an unsubscribe behind the
/// poll neither waits for it nor takes away what the poll would have
/// found.
#[test]
fn a_request_behind_a_held_poll_answers_it_first_and_loses_nothing() {
    let (_node, mut sub, mut publisher) = subscribed_on("1000");
    publisher.publish1("t", b"queued");
    let start = Instant::now();
    let mut pipelined = b"get messages\r\n".to_vec();
    pipelined.extend_from_slice(&set_request("unsubscribe", b"t"));
    sub.send(&pipelined);
    let got = read_answer(&mut sub);
    sub.expect(b"STORED\r\n");
    let took = start.elapsed();
    assert_eq!(got, vec![Msg::new(&["t"], b"queued")]);
    assert!(took < Duration::from_millis(700), "took {took:?}");
    // Unsubscribed: a later publish does not reach it.
    publisher.publish1("t", b"after");
    assert_eq!(sub.get_raw(), b"END\r\n");
}

/// A poll pipelined behind a held poll answers both at once.
#[test]
fn a_poll_behind_a_held_poll_answers_both_at_once() {
    let (_node, mut sub, _publisher) = fed_on("1000");
    let start = Instant::now();
    sub.send(b"get messages\r\nget messages\r\n");
    sub.expect(b"END\r\nEND\r\n");
    let took = start.elapsed();
    assert!(took < Duration::from_millis(700), "took {took:?}");
}

/// A poll that finds 16 KiB or more queued is answered at once.
#[test]
fn a_poll_that_finds_16_kib_queued_is_answered_at_once() {
    let (_node, mut sub, mut publisher) = subscribed_on("1000");
    let big = pseudo_random_bytes(16 << 10, 7);
    publisher.publish1("t", &big);
    let start = Instant::now();
    assert_eq!(sub.poll(), vec![Msg::new(&["t"], &big)]);
    let took = start.elapsed();
    assert!(took < Duration::from_millis(700), "took {took:?}");
    // Just under the bound, the same poll waits.
    publisher.publish1("t", b"small");
    let start = Instant::now();
    assert_eq!(sub.poll(), vec![Msg::new(&["t"], b"small")]);
    assert!(start.elapsed() >= Duration::from_millis(950));
}

/// A client that hangs up while its poll is held costs nothing: the node
/// removes it and serves the next client as before.
#[test]
fn a_client_gone_while_its_poll_is_held_is_removed() {
    let node = Node::start(&[("poll_gather_ms", "1000")]);
    let mut publisher = node.connect();
    {
        let mut gone = node.connect();
        fed(&mut gone, &mut publisher);
        gone.send(b"get messages\r\n");
    }
    // `publisher` and the stats connection.
    node.wait_for_stat("curr_connections", |n| n == 2);
    let mut sub = node.connect();
    sub.subscribe(&["t"]);
    publisher.publish1("t", b"x");
    assert_eq!(sub.poll(), vec![Msg::new(&["t"], b"x")]);
}

/// An idle client, whose last answer was empty, gets its next empty poll
/// answered at once, however long the node gathers.
#[test]
fn an_idle_clients_empty_poll_is_answered_at_once() {
    let (_node, mut sub, _publisher) = subscribed_on("1000");
    for _ in 0..3 {
        let start = Instant::now();
        assert_eq!(sub.get_raw(), b"END\r\n");
        let took = start.elapsed();
        assert!(took < Duration::from_millis(700), "took {took:?}");
    }
}

/// A queue runs one gathering timer at most: a poll held while the timer
/// of an earlier, early-answered poll still runs is answered when that
/// timer fires, so a client pipelining polls cannot make the node hold a
/// timer for each.
#[test]
fn a_poll_held_while_an_earlier_timer_runs_is_answered_when_it_fires() {
    let (_node, mut sub, mut publisher) = fed_on("1000");
    let start = Instant::now();
    // The first poll is held and starts the timer; the second answers it.
    sub.send(b"get messages\r\nget messages\r\n");
    sub.expect(b"END\r\nEND\r\n");
    std::thread::sleep(Duration::from_millis(400));
    publisher.publish1("t", b"x");
    let third = Instant::now();
    assert_eq!(sub.poll(), vec![Msg::new(&["t"], b"x")]);
    let fired = start.elapsed();
    let waited = third.elapsed();
    assert!(waited < Duration::from_millis(900), "waited {waited:?}");
    assert!(fired >= Duration::from_millis(950), "answered at {fired:?}");
}
