//! The response encoder against exact bytes, including the `get messages`
//! framing where the value length `k` leaves out the last entry's CRLF
//! (`docs/PROTOCOL.md` §4), byte for byte as the Erlang original framed it.

mod common;

use std::borrow::Cow;

use bytes::{Bytes, BytesMut};
use common::encode;
use kraken_protocol::{
    message_header, parse_publish_block, BodyLimits, KrakenCodec, Limits, OutMessage, Response,
};
use tokio_util::codec::Encoder;

fn out(topics: &[&[u8]], payload: &[u8]) -> OutMessage {
    OutMessage {
        header: message_header(topics, payload.len()),
        payload: Bytes::copy_from_slice(payload),
    }
}

#[test]
fn simple_replies() {
    assert_eq!(encode(Response::Stored), b"STORED\r\n");
    assert_eq!(encode(Response::NotFound), b"NOT_FOUND\r\n");
    assert_eq!(encode(Response::End), b"END\r\n");
    assert_eq!(encode(Response::Error), b"ERROR\r\n");
    assert_eq!(
        encode(Response::ClientError("bad data chunk".into())),
        b"CLIENT_ERROR bad data chunk\r\n"
    );
    assert_eq!(
        encode(Response::ClientError(Cow::Owned(
            "line too long".to_owned()
        ))),
        b"CLIENT_ERROR line too long\r\n"
    );
    // Sent unprompted to a client over `max_tcp_clients`.
    assert_eq!(
        encode(Response::ServerError("Too many clients".into())),
        b"SERVER_ERROR Too many clients\r\n"
    );
    assert_eq!(
        encode(Response::Version("0.1.0".into())),
        b"VERSION 0.1.0\r\n"
    );
}

#[test]
fn stats() {
    assert_eq!(encode(Response::Stats(vec![])), b"END\r\n");
    assert_eq!(
        encode(Response::Stats(vec![
            ("uptime".into(), "12".to_owned()),
            ("version".into(), "0.1.0".to_owned()),
            ("curr_connections".into(), "3".to_owned()),
        ])),
        b"STAT uptime 12\r\nSTAT version 0.1.0\r\nSTAT curr_connections 3\r\nEND\r\n"
    );
}

#[test]
fn no_messages_is_end() {
    assert_eq!(encode(Response::Messages(vec![])), b"END\r\n");
}

#[test]
fn one_message() {
    assert_eq!(
        encode(Response::Messages(vec![out(&[b"a"], b"hey")])),
        b"VALUE messages 0 16\r\nMESSAGE a 3\r\nhey\r\nEND\r\n"
    );
}

#[test]
fn two_messages_in_order() {
    assert_eq!(
        encode(Response::Messages(vec![
            out(&[b"a"], b"m1"),
            out(&[b"a"], b"m3")
        ])),
        b"VALUE messages 0 32\r\nMESSAGE a 2\r\nm1\r\nMESSAGE a 2\r\nm3\r\nEND\r\n"
    );
}

#[test]
fn payload_with_line_ends() {
    assert_eq!(
        encode(Response::Messages(vec![out(&[b"a"], b"x\r\ny\nz")])),
        b"VALUE messages 0 19\r\nMESSAGE a 6\r\nx\r\ny\nz\r\nEND\r\n"
    );
}

#[test]
fn empty_payload() {
    assert_eq!(
        encode(Response::Messages(vec![out(&[b"a"], b"")])),
        b"VALUE messages 0 13\r\nMESSAGE a 0\r\n\r\nEND\r\n"
    );
}

#[test]
fn several_topics_in_one_entry() {
    assert_eq!(
        encode(Response::Messages(vec![out(&[b"b", b"c"], b"bc")])),
        b"VALUE messages 0 17\r\nMESSAGE b c 2\r\nbc\r\nEND\r\n"
    );
}

#[test]
fn binary_payload_is_length_framed() {
    let payload = b"\x00\xff\r\nEND\r\n\nVALUE x";
    let mut expected = b"VALUE messages 0 31\r\nMESSAGE a 17\r\n".to_vec();
    expected.extend_from_slice(payload);
    expected.extend_from_slice(b"\r\nEND\r\n");
    assert_eq!(
        encode(Response::Messages(vec![out(&[b"a"], payload)])),
        expected
    );
}

#[test]
fn one_mib_payload() {
    let payload: Vec<u8> = (0..1u32 << 20).map(|i| (i * 31 % 251) as u8).collect();
    let bytes = encode(Response::Messages(vec![out(&[b"big"], &payload)]));
    let header = b"MESSAGE big 1048576\r\n";
    let k = header.len() + payload.len();
    let prefix = format!("VALUE messages 0 {k}\r\n");
    assert!(bytes.starts_with(prefix.as_bytes()));
    let value = &bytes[prefix.len()..prefix.len() + k];
    assert_eq!(&value[..header.len()], header);
    assert_eq!(&value[header.len()..], &payload[..]);
    assert_eq!(&bytes[prefix.len() + k..], b"\r\nEND\r\n");
}

#[test]
fn messages_reserve_exactly_once() {
    let messages = vec![
        out(&[b"a"], b"one"),
        out(&[b"b", b"c"], &[7u8; 5000]),
        out(&[b"d"], b""),
    ];
    let mut codec = KrakenCodec::new(Limits::default());
    let mut dst = BytesMut::new();
    codec
        .encode(Response::Messages(messages), &mut dst)
        .unwrap();
    assert_eq!(dst.capacity(), dst.len());
}

#[test]
fn responses_append_to_what_is_buffered() {
    let mut codec = KrakenCodec::new(Limits::default());
    let mut dst = BytesMut::new();
    codec.encode(Response::Stored, &mut dst).unwrap();
    codec
        .encode(Response::Messages(vec![out(&[b"pp"], b"hi")]), &mut dst)
        .unwrap();
    codec.encode(Response::End, &mut dst).unwrap();
    assert_eq!(
        &dst[..],
        b"STORED\r\nVALUE messages 0 16\r\nMESSAGE pp 2\r\nhi\r\nEND\r\nEND\r\n"
    );
}

/// What a stock memcached client returns for the value (k bytes), plus the
/// CRLF pymemcache users add back, parses as the publish block it was.
#[test]
fn a_delivered_value_parses_back_as_a_publish_block() {
    let messages = vec![out(&[b"a"], b"hey"), out(&[b"b", b"c"], b"x\r\nEND\r\n")];
    let bytes = encode(Response::Messages(messages));
    let value = b"MESSAGE a 3\r\nhey\r\nMESSAGE b c 8\r\nx\r\nEND\r\n";
    let k = value.len();
    let mut expected = format!("VALUE messages 0 {k}\r\n").into_bytes();
    expected.extend_from_slice(value);
    expected.extend_from_slice(b"\r\nEND\r\n");
    assert_eq!(bytes, expected);
    // Without the final CRLF too: the last entry may end at the block's end.
    for block in [&value[..], &[&value[..], b"\r\n"].concat()[..]] {
        let entries =
            parse_publish_block(&Bytes::copy_from_slice(block), &BodyLimits::default()).unwrap();
        assert_eq!(entries.len(), 2);
        assert_eq!(entries[1].topics, [&b"b"[..], b"c"]);
        assert_eq!(&entries[1].payload[..], b"x\r\nEND\r\n");
    }
}
