//! A stock memcached client library works as a Kraken client (`docs/PROTOCOL.md` §11):
//! the Rust `memcache` crate, ASCII protocol.
//!
//! Notes on the crate (0.21): a `Client` is an r2d2 pool (size 1 by
//! default, so subscriptions stay on one connection) that sends `version`
//! before each operation to check the connection; `NOT_FOUND` to a `set`
//! is `Err(CommandError::KeyNotFound)`; values come back without their
//! final CRLF.

mod common;

use std::time::{Duration, Instant};

use common::*;
use memcache::{CommandError, MemcacheError};

/// `get("messages")` until a value comes, bounded.
fn get_until_some(c: &memcache::Client) -> Vec<u8> {
    let deadline = Instant::now() + ASYNC_TIMEOUT;
    loop {
        if let Some(v) = c.get::<Vec<u8>>("messages").expect("get messages") {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "nothing delivered within {ASYNC_TIMEOUT:?}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn memcache_crate_subscribe_publish_and_get_a_message_without_its_final_crlf() {
    let node = Node::start(&[]);
    let sub = node.memcache_client();
    let publisher = node.memcache_client();
    sub.set("subscribe", "a b", 0).expect("subscribe");
    publisher
        .set("publish", "MESSAGE a 5\r\nhello\r\n", 0)
        .expect("publish");
    let value = get_until_some(&sub);
    assert_bytes_eq(&value, b"MESSAGE a 5\r\nhello", "value");
    // Drained.
    assert_eq!(sub.get::<Vec<u8>>("messages").expect("get"), None);
}

#[test]
fn memcache_crate_get_on_an_empty_queue_is_none() {
    let node = Node::start(&[]);
    let c = node.memcache_client();
    assert_eq!(c.get::<Vec<u8>>("messages").expect("get"), None);
    assert_eq!(c.get::<String>("messages").expect("get"), None);
}

#[test]
fn memcache_crate_reads_a_multi_topic_multi_line_message_as_a_string() {
    let node = Node::start(&[]);
    let sub = node.memcache_client();
    let publisher = node.memcache_client();
    sub.set("subscribe", "pm1 pm2", 0).expect("subscribe");
    publisher
        .set(
            "publish",
            &b"MESSAGE pm1 pm2 12\r\nhello\r\nworld\r\n"[..],
            0,
        )
        .expect("publish");
    let value = String::from_utf8(get_until_some(&sub)).unwrap();
    assert_eq!(value, "MESSAGE pm1 pm2 12\r\nhello\r\nworld");
}

#[test]
fn memcache_crate_several_queued_messages_come_back_as_one_value() {
    let node = Node::start(&[]);
    let sub = node.memcache_client();
    let publisher = node.memcache_client();
    sub.set("subscribe", "a", 0).expect("subscribe");
    publisher
        .set("publish", "MESSAGE a 2\r\nm1\r\nMESSAGE a 2\r\nm2\r\n", 0)
        .expect("publish");
    let mut got = Vec::new();
    let deadline = Instant::now() + ASYNC_TIMEOUT;
    while got.len() < b"MESSAGE a 2\r\nm1\r\nMESSAGE a 2\r\nm2\r\n".len() {
        if let Some(v) = sub.get::<Vec<u8>>("messages").expect("get") {
            got.extend(v);
            got.extend_from_slice(b"\r\n"); // parse after adding the CRLF back
        }
        assert!(Instant::now() < deadline, "got only \"{}\"", esc(&got));
    }
    assert_bytes_eq(
        &got,
        b"MESSAGE a 2\r\nm1\r\nMESSAGE a 2\r\nm2\r\n",
        "entries",
    );
}

#[test]
fn memcache_crate_version_and_stats_work() {
    let node = Node::start(&[]);
    let c = node.memcache_client();
    let versions = c.version().expect("version");
    assert_eq!(versions.len(), 1);
    assert!(!versions[0].1.is_empty(), "{versions:?}");
    // The crate's stats parser stops at the first line (a bug of the
    // crate), but the call must succeed against our reply.
    let stats = c.stats().expect("stats");
    assert_eq!(stats.len(), 1, "{stats:?}");
}

#[test]
fn memcache_crate_register_then_subscribe_replays() {
    let node = Node::start(&[]);
    let sub = node.memcache_client();
    let publisher = node.memcache_client();
    sub.set("register", "", 0).expect("register");
    publisher
        .set("publish", "MESSAGE r 4\r\nretr\r\n", 0)
        .expect("publish");
    sub.set("subscribe", "r", 0)
        .expect("subscribe after register");
    let value = get_until_some(&sub);
    assert_bytes_eq(&value, b"MESSAGE r 4\r\nretr", "replayed value");
}

#[test]
fn memcache_crate_sees_not_found_for_an_old_horizon_and_stays_subscribed() {
    let node = Node::start(&[]);
    let sub = node.memcache_client();
    let publisher = node.memcache_client();
    match sub.set("retro_subscribe", "0\r\nold", 0) {
        Err(MemcacheError::CommandError(CommandError::KeyNotFound)) => {}
        other => panic!("want NOT_FOUND (KeyNotFound), got {other:?}"),
    }
    publisher
        .set("publish", "MESSAGE old 3\r\nnew\r\n", 0)
        .expect("publish");
    let value = get_until_some(&sub);
    assert_bytes_eq(
        &value,
        b"MESSAGE old 3\r\nnew",
        "live value after NOT_FOUND",
    );
}

#[test]
fn memcache_crate_get_of_another_key_is_an_error() {
    let node = Node::start(&[]);
    let c = node.memcache_client();
    match c.get::<Vec<u8>>("foo") {
        Err(MemcacheError::CommandError(CommandError::InvalidCommand)) => {}
        other => panic!("want ERROR (InvalidCommand), got {other:?}"),
    }
}
