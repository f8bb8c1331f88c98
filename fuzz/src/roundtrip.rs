//! Target `roundtrip`: encode a `get messages` reply built from arbitrary
//! entries and read it back.
//!
//! Input layout, repeated until the input runs out (at most 64 entries): one
//! byte `t` (topic count `t % 4 + 1`); per topic one length byte
//! (`% 16 + 1`) and that many bytes, with space, CR and LF remapped so that
//! topics are valid (a topic repeated within an entry is dropped, as a
//! node lists it once); two bytes of little-endian payload length
//! (`% 4096`) and that many raw payload bytes (fewer if the input ends).
//!
//! Invariants:
//! - no entries encode as `END\r\n`;
//! - otherwise the reply is exactly `VALUE messages 0 <k>\r\n`, `k` bytes,
//!   `\r\nEND\r\n`, where `k` is the entries' length minus 2 (the last
//!   entry's CRLF doubles as memcached's value terminator);
//! - the value, with and without that CRLF, parses as a publish block to
//!   the same entries;
//! - sent back as a `set publish` request, the decoder frames exactly that
//!   block, and it parses to the same entries: what one client receives,
//!   another can publish.

use bytes::{Bytes, BytesMut};
use kraken_protocol::{
    message_header, parse_publish_block, BodyLimits, KrakenCodec, Limits, OutMessage, PublishEntry,
    Request, Response, SetKey,
};
use tokio_util::codec::{Decoder, Encoder};

use crate::Input;

/// Most entries built from one input.
const MAX_ENTRIES: usize = 64;

/// The entries an input describes, as `(topics, payload)`.
pub fn entries(data: &[u8]) -> Vec<(Vec<Vec<u8>>, Vec<u8>)> {
    let mut input = Input::new(data);
    let mut entries = Vec::new();
    while !input.is_empty() && entries.len() < MAX_ENTRIES {
        let topic_count = usize::from(input.byte() % 4) + 1;
        let mut topics: Vec<Vec<u8>> = (0..topic_count)
            .map(|_| {
                let len = usize::from(input.byte() % 16) + 1;
                let mut topic = input.take(len).to_vec();
                topic.resize(len, b't');
                for b in &mut topic {
                    if matches!(*b, b' ' | b'\r' | b'\n') {
                        *b ^= 0x40; // '`', 'M', 'J'
                    }
                }
                topic
            })
            .collect();
        let mut seen = Vec::new();
        topics.retain(|t| {
            let new = !seen.contains(t);
            seen.push(t.clone());
            new
        });
        let len = usize::from(u16::from_le_bytes([input.byte(), input.byte()]) % 4096);
        let payload = input.take(len).to_vec();
        entries.push((topics, payload));
    }
    entries
}

pub fn check(data: &[u8]) {
    let entries = entries(data);
    let messages: Vec<OutMessage> = entries
        .iter()
        .map(|(topics, payload)| {
            let refs: Vec<&[u8]> = topics.iter().map(Vec::as_slice).collect();
            OutMessage {
                header: message_header(&refs, payload.len()),
                payload: Bytes::copy_from_slice(payload),
            }
        })
        .collect();
    let entries_len: usize = messages
        .iter()
        .map(|m| m.header.len() + m.payload.len() + 2)
        .sum();

    let mut codec = KrakenCodec::new(Limits::default());
    let mut wire = BytesMut::new();
    codec
        .encode(Response::Messages(messages), &mut wire)
        .expect("encode never errors");

    if entries.is_empty() {
        assert_eq!(&wire[..], b"END\r\n", "no messages must encode as END");
        return;
    }

    // The VALUE line, read as a memcached client reads it.
    let line_end = wire
        .windows(2)
        .position(|w| w == b"\r\n")
        .expect("VALUE line ends with CRLF");
    let line = std::str::from_utf8(&wire[..line_end]).expect("VALUE line is ASCII");
    let k: usize = line
        .strip_prefix("VALUE messages 0 ")
        .unwrap_or_else(|| panic!("bad VALUE line {line:?}"))
        .parse()
        .unwrap_or_else(|e| panic!("bad length in {line:?}: {e}"));
    assert_eq!(k + 2, entries_len, "k must be the entries' length minus 2");
    let value_start = line_end + 2;
    assert_eq!(
        wire.len(),
        value_start + k + b"\r\nEND\r\n".len(),
        "reply length"
    );
    assert_eq!(&wire[value_start + k..], b"\r\nEND\r\n", "reply trailer");
    let value = &wire[value_start..value_start + k];

    let mut block = value.to_vec();
    block.extend_from_slice(b"\r\n");
    assert_same(&block, &entries, "value + CRLF");
    assert_same(value, &entries, "value alone");

    // Published back through the decoder.
    let mut request = format!("set publish 0 0 {}\r\n", block.len()).into_bytes();
    request.extend_from_slice(&block);
    request.extend_from_slice(b"\r\n");
    let mut buf = BytesMut::from(&request[..]);
    let mut decoder = KrakenCodec::new(Limits::default());
    match decoder.decode(&mut buf) {
        Ok(Some(Request::Set {
            key: SetKey::Publish,
            data,
            noreply: false,
        })) => assert_eq!(data, block, "decoder framed a different block"),
        other => panic!("decoder did not frame the publish: {other:?}"),
    }
    assert!(buf.is_empty(), "decoder left {} bytes", buf.len());
}

fn assert_same(block: &[u8], entries: &[(Vec<Vec<u8>>, Vec<u8>)], what: &str) {
    let parsed: Vec<PublishEntry> =
        parse_publish_block(&Bytes::copy_from_slice(block), &BodyLimits::default())
            .unwrap_or_else(|e| panic!("{what} does not parse: {e:?}"));
    assert_eq!(parsed.len(), entries.len(), "{what}: entry count");
    for (i, (p, (topics, payload))) in parsed.iter().zip(entries).enumerate() {
        assert_eq!(&p.topics, topics, "{what}: topics of entry {i}");
        assert_eq!(&p.payload[..], &payload[..], "{what}: payload of entry {i}");
    }
}
