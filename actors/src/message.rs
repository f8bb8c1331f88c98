//! A published message as the node holds it: once, shared by every shard's
//! retro buffer and every subscriber queue that receives it; and a
//! [`Delivery`], what a subscriber's inbox holds of it.

use std::sync::Arc;

use bytes::{BufMut, Bytes, BytesMut};
use kraken_protocol::response::message_header;

/// One published message.
#[derive(Debug)]
pub struct Message {
    /// Node-wide publish sequence number, which is also the publish time in
    /// nanoseconds since the Unix epoch (`crate::router::SeqClock`): it
    /// orders messages across shards, makes `register` horizons exact and
    /// answers `retro_subscribe` horizons.
    pub seq: u64,
    /// The publishing client, never a recipient of its own message.
    pub publisher: u64,
    /// Every topic the message names, in publish order (repeats kept).
    pub topics: Vec<Bytes>,
    /// The payload, shared and never copied per subscriber.
    pub payload: Bytes,
    /// `MESSAGE <all topics> <len>\r\n`, built once: the header of every
    /// delivery to a subscriber that holds all of the message's topics.
    pub full_header: Bytes,
    /// A one-topic message's RESP2 `message` push, made by the first
    /// Redis-dialect connection that writes it and copied by the others.
    pub resp_push: std::sync::OnceLock<Bytes>,
}

/// A reference to a message for the deliveries of one publish to one
/// worker's queues: they share it, so that their reference counting stays
/// on a cache line of that worker's, not on the message's own count, which
/// every worker's deliveries would otherwise increment at the same time.
#[derive(Debug, Clone)]
#[allow(clippy::redundant_allocation)] // the second count is the point
pub struct Held(Arc<Arc<Message>>);

impl Held {
    pub fn new(msg: &Arc<Message>) -> Self {
        Held(Arc::new(msg.clone()))
    }
}

impl std::ops::Deref for Held {
    type Target = Arc<Message>;

    fn deref(&self) -> &Arc<Message> {
        &self.0
    }
}

/// A message queued for one subscriber: the message and which of its
/// topics the subscriber holds. One reference count, no allocation, in the
/// common cases (cloning a delivery to more subscribers).
#[derive(Debug, Clone)]
pub enum Delivery {
    /// The subscriber holds every topic of the message.
    All(Held),
    /// It holds the topics whose bits are set (bit i = `topics[i]`; for
    /// messages of at most 64 topics).
    Some(Held, u64),
    /// Otherwise: the header built at publish time.
    Built(Held, Box<Bytes>),
}

impl Message {
    pub fn new(seq: u64, publisher: u64, topics: Vec<Bytes>, payload: Bytes) -> Self {
        let refs: Vec<&[u8]> = topics.iter().map(|t| &t[..]).collect();
        let full_header = message_header(&refs, payload.len());
        Message {
            seq,
            publisher,
            topics,
            payload,
            full_header,
            resp_push: std::sync::OnceLock::new(),
        }
    }

    /// The delivery of `msg` to a subscriber holding the topics at `matched`
    /// (indices into `topics`, ascending, repeats removed).
    pub fn delivery(msg: &Arc<Message>, matched: &[u32]) -> Delivery {
        if matched.len() == msg.topics.len() {
            Delivery::all(msg)
        } else if msg.topics.len() <= 64 {
            Delivery::Some(Held::new(msg), matched.iter().fold(0, |m, &i| m | 1 << i))
        } else {
            let refs: Vec<&[u8]> = matched
                .iter()
                .map(|&i| &msg.topics[i as usize][..])
                .collect();
            Delivery::Built(
                Held::new(msg),
                Box::new(message_header(&refs, msg.payload.len())),
            )
        }
    }

    /// The delivery of `msg` for a bit set of held topics (at most 64 topics).
    pub fn delivery_for_mask(msg: &Arc<Message>, mask: u64) -> Delivery {
        let all = if msg.topics.len() >= 64 {
            u64::MAX
        } else {
            (1u64 << msg.topics.len()) - 1
        };
        if mask == all {
            Delivery::all(msg)
        } else {
            Delivery::Some(Held::new(msg), mask)
        }
    }

    /// Bytes this message costs a subscriber queue (its limit's unit).
    pub fn queued_bytes(&self) -> usize {
        self.payload.len() + self.full_header.len()
    }
}

impl Delivery {
    /// The delivery of every topic of `msg`.
    pub fn all(msg: &Arc<Message>) -> Delivery {
        Delivery::All(Held::new(msg))
    }

    pub fn message(&self) -> &Arc<Message> {
        match self {
            Delivery::All(m) | Delivery::Some(m, _) | Delivery::Built(m, _) => m,
        }
    }

    /// Length of this entry's `MESSAGE <topics> <len>\r\n` line.
    fn header_len(&self) -> usize {
        match self {
            Delivery::All(m) => m.full_header.len(),
            Delivery::Built(_, h) => h.len(),
            Delivery::Some(m, mask) => {
                let (n, bytes) = held(m, *mask).fold((0, 0), |(n, b), t| (n + 1, b + t.len()));
                // "MESSAGE " + topics + a space each + digits + "\r\n"
                8 + bytes + n + digits(m.payload.len()) + 2
            }
        }
    }

    fn put_header(&self, out: &mut BytesMut) {
        match self {
            Delivery::All(m) => out.put_slice(&m.full_header),
            Delivery::Built(_, h) => out.put_slice(h),
            Delivery::Some(m, mask) => {
                out.put_slice(b"MESSAGE ");
                for t in held(m, *mask) {
                    out.put_slice(t);
                    out.put_u8(b' ');
                }
                put_usize(out, m.payload.len());
                out.put_slice(b"\r\n");
            }
        }
    }
}

fn held(m: &Message, mask: u64) -> impl Iterator<Item = &Bytes> {
    m.topics
        .iter()
        .enumerate()
        .filter(move |(i, _)| mask & (1 << i) != 0)
        .map(|(_, t)| t)
}

fn digits(mut n: usize) -> usize {
    let mut d = 1;
    while n >= 10 {
        n /= 10;
        d += 1;
    }
    d
}

fn put_usize(out: &mut BytesMut, mut n: usize) {
    let mut buf = [0u8; 20];
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.put_slice(&buf[i..]);
}

/// Writes the answer to `get messages` for `items` straight into the
/// connection's write buffer: `END\r\n` when empty, else
/// `VALUE messages 0 <k>\r\n<entries>END\r\n` with k = len(entries) - 2
/// (`docs/PROTOCOL.md`: the last entry's CRLF is the memcached value terminator). The
/// same bytes as the codec's `Response::Messages`, without building a
/// header per entry (tested against it below).
pub fn encode_poll(items: &[Delivery], out: &mut BytesMut) {
    if items.is_empty() {
        out.put_slice(b"END\r\n");
        return;
    }
    let total: usize = items
        .iter()
        .map(|d| d.header_len() + d.message().payload.len() + 2)
        .sum();
    let k = total - 2;
    out.reserve(16 + 20 + 2 + total + 5);
    out.put_slice(b"VALUE messages 0 ");
    put_usize(out, k);
    out.put_slice(b"\r\n");
    for d in items {
        d.put_header(out);
        out.put_slice(&d.message().payload);
        out.put_slice(b"\r\n");
    }
    out.put_slice(b"END\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;
    use kraken_protocol::{KrakenCodec, Limits, OutMessage, Response};
    use tokio_util::codec::Encoder;

    fn msg(topics: &[&str], payload: &[u8]) -> Arc<Message> {
        Arc::new(Message::new(
            1,
            0,
            topics.iter().map(|t| Bytes::from(t.to_string())).collect(),
            Bytes::copy_from_slice(payload),
        ))
    }

    fn via_codec(items: &[Delivery]) -> BytesMut {
        let out: Vec<OutMessage> = items
            .iter()
            .map(|d| {
                let m = d.message();
                let held: Vec<&[u8]> = match d {
                    Delivery::All(_) => m.topics.iter().map(|t| &t[..]).collect(),
                    Delivery::Some(_, mask) => held(m, *mask).map(|t| &t[..]).collect(),
                    Delivery::Built(..) => unreachable!(),
                };
                OutMessage {
                    header: message_header(&held, m.payload.len()),
                    payload: m.payload.clone(),
                }
            })
            .collect();
        let mut dst = BytesMut::new();
        KrakenCodec::new(Limits::default())
            .encode(Response::Messages(out), &mut dst)
            .unwrap();
        dst
    }

    #[test]
    fn an_empty_poll_is_end() {
        let mut out = BytesMut::new();
        encode_poll(&[], &mut out);
        assert_eq!(&out[..], b"END\r\n");
    }

    #[test]
    fn one_entry_matches_the_spec_framing() {
        let mut out = BytesMut::new();
        encode_poll(&[Delivery::all(&msg(&["a"], b"hey"))], &mut out);
        assert_eq!(
            &out[..],
            b"VALUE messages 0 16\r\nMESSAGE a 3\r\nhey\r\nEND\r\n"
        );
    }

    #[test]
    fn partial_and_full_entries_encode_as_the_codec_does() {
        let m = msg(&["c", "b", "y"], b"cby\r\nx");
        let big = msg(&["t1"], &[7u8; 1234]);
        let items = vec![
            Delivery::all(&m),
            Message::delivery(&m, &[0, 1]),
            Message::delivery(&m, &[2]),
            Message::delivery_for_mask(&m, 0b111),
            Delivery::all(&big),
        ];
        let mut out = BytesMut::new();
        encode_poll(&items, &mut out);
        assert_eq!(out, via_codec(&items));
        assert!(out.starts_with(b"VALUE messages 0 "));
    }

    #[test]
    fn a_repeated_topic_is_listed_twice() {
        let m = msg(&["b", "b"], b"bb");
        let mut out = BytesMut::new();
        encode_poll(&[Message::delivery_for_mask(&m, 0b11)], &mut out);
        assert_eq!(
            &out[..],
            b"VALUE messages 0 17\r\nMESSAGE b b 2\r\nbb\r\nEND\r\n"
        );
    }
}
