//! Property tests: this crate's codec against the server's
//! (`kraken-protocol`). Requests the client encodes decode on the server
//! side to the same operation; responses the server encodes decode on the
//! client side to the same reply, however the bytes are split. And on any
//! bytes at all (valid replies cut and mixed with noise) the decoder never
//! panics, stays within its limits, and decides the same however the bytes
//! arrive.

use std::borrow::Cow;

use bytes::{Bytes, BytesMut};
use kraken_client::codec::{ClientCodec, Limits as ClientLimits, Message, Reply, Request};
use kraken_protocol::{
    message_header, parse_publish_block, parse_retro_body, parse_topics, KrakenCodec, Limits,
    OutMessage, Request as ServerRequest, Response, SetKey,
};
use proptest::prelude::*;
use tokio_util::codec::{Decoder, Encoder};

fn topic() -> impl Strategy<Value = Bytes> {
    proptest::collection::vec(
        any::<u8>().prop_filter("separator", |b| !b" \r\n".contains(b)),
        1..12,
    )
    .prop_map(Bytes::from)
}

fn topics(min: usize) -> impl Strategy<Value = Vec<Bytes>> {
    proptest::collection::vec(topic(), min..5)
}

fn payload() -> impl Strategy<Value = Bytes> {
    prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..64).prop_map(Bytes::from),
        Just(Bytes::from_static(b"\r\nEND\r\nVALUE messages 0 3\r\n")),
    ]
}

fn message() -> impl Strategy<Value = Message> {
    (topics(1), payload()).prop_map(|(topics, payload)| Message { topics, payload })
}

fn request() -> impl Strategy<Value = Request> {
    prop_oneof![
        (topics(0), any::<bool>())
            .prop_map(|(topics, noreply)| Request::Subscribe { topics, noreply }),
        (topics(0), any::<bool>())
            .prop_map(|(topics, noreply)| Request::Unsubscribe { topics, noreply }),
        (proptest::collection::vec(message(), 1..4), any::<bool>())
            .prop_map(|(messages, noreply)| Request::Publish { messages, noreply }),
        any::<bool>().prop_map(|noreply| Request::Register { noreply }),
        (any::<i64>(), topics(0), any::<bool>()).prop_map(|(horizon_secs, topics, noreply)| {
            Request::RetroSubscribe {
                horizon_secs,
                topics,
                noreply,
            }
        }),
        Just(Request::GetMessages),
        Just(Request::Stats),
        Just(Request::Version),
        Just(Request::Quit),
    ]
}

/// Decodes `bytes` with the server's decoder, fed in chunks of `step`.
fn server_decode(bytes: &[u8], step: usize) -> Vec<ServerRequest> {
    let mut codec = KrakenCodec::new(Limits::default());
    let mut buf = BytesMut::new();
    let mut out = Vec::new();
    for chunk in bytes.chunks(step) {
        buf.extend_from_slice(chunk);
        while let Some(r) = codec.decode(&mut buf).unwrap() {
            out.push(r);
        }
    }
    out
}

/// Decodes `bytes` with the client's decoder, fed in chunks of `step`.
fn client_decode(bytes: &[u8], step: usize) -> Vec<Reply> {
    let mut codec = ClientCodec::default();
    let mut buf = BytesMut::new();
    let mut out = Vec::new();
    for chunk in bytes.chunks(step) {
        buf.extend_from_slice(chunk);
        while let Some(r) = codec.decode(&mut buf).unwrap() {
            out.push(r);
        }
    }
    assert!(buf.is_empty());
    out
}

/// What the server makes of one decoded request, in the client's terms.
fn as_client_request(r: ServerRequest) -> Request {
    let ServerRequest::Set { key, data, noreply } = r else {
        return match r {
            ServerRequest::GetMessages => Request::GetMessages,
            ServerRequest::Stats => Request::Stats,
            ServerRequest::Version => Request::Version,
            ServerRequest::Quit => Request::Quit,
            other => panic!("server refused: {other:?}"),
        };
    };
    match key {
        SetKey::Subscribe => Request::Subscribe {
            topics: parse_topics(&data, usize::MAX).unwrap(),
            noreply,
        },
        SetKey::Unsubscribe => Request::Unsubscribe {
            topics: parse_topics(&data, usize::MAX).unwrap(),
            noreply,
        },
        SetKey::Publish => Request::Publish {
            messages: parse_publish_block(&data, &kraken_protocol::BodyLimits::UNLIMITED)
                .unwrap()
                .into_iter()
                .map(|e| Message {
                    topics: e.topics,
                    payload: e.payload,
                })
                .collect(),
            noreply,
        },
        SetKey::Register => {
            assert!(data.is_empty());
            Request::Register { noreply }
        }
        SetKey::RetroSubscribe => {
            let body = parse_retro_body(&data, usize::MAX).unwrap();
            Request::RetroSubscribe {
                horizon_secs: body.horizon_secs,
                topics: body.topics,
                noreply,
            }
        }
    }
}

fn stat_name() -> impl Strategy<Value = String> {
    "[a-z_]{1,12}"
}

fn response() -> impl Strategy<Value = Response> {
    prop_oneof![
        Just(Response::Stored),
        Just(Response::NotFound),
        Just(Response::End),
        Just(Response::Error),
        proptest::collection::vec(message(), 0..4).prop_map(|ms| {
            Response::Messages(
                ms.into_iter()
                    .map(|m| {
                        let refs: Vec<&[u8]> = m.topics.iter().map(|t| &t[..]).collect();
                        OutMessage {
                            header: message_header(&refs, m.payload.len()),
                            payload: m.payload,
                        }
                    })
                    .collect(),
            )
        }),
        "[a-z ]{0,20}".prop_map(|s| Response::ClientError(Cow::Owned(s))),
        "[a-z ]{0,20}".prop_map(|s| Response::ServerError(Cow::Owned(s))),
        "[0-9.]{1,8}".prop_map(|s| Response::Version(Cow::Owned(s))),
        proptest::collection::vec((stat_name(), "[0-9a-z.]{0,10}"), 1..5).prop_map(|v| {
            Response::Stats(v.into_iter().map(|(n, v)| (Cow::Owned(n), v)).collect())
        }),
    ]
}

/// The reply the client should see for `r`.
fn expected_reply(r: &Response) -> Reply {
    match r {
        Response::Stored => Reply::Stored,
        Response::NotFound => Reply::NotFound,
        Response::End => Reply::End,
        Response::Error => Reply::Error,
        Response::Messages(ms) if ms.is_empty() => Reply::End,
        Response::Messages(_) => unreachable!("compared separately"),
        Response::ClientError(s) => Reply::ClientError(s.trim_start().to_string()),
        Response::ServerError(s) => Reply::ServerError(s.trim_start().to_string()),
        Response::Version(v) => Reply::Version(v.to_string()),
        Response::Stats(v) => Reply::Stats(
            v.iter()
                .map(|(n, v)| (n.to_string(), v.to_string()))
                .collect(),
        ),
    }
}

proptest! {
    #[test]
    fn requests_mean_the_same_to_the_server(
        requests in proptest::collection::vec(request(), 1..6),
        step in 1usize..40,
    ) {
        // `quit` ends what the server decodes: only the first counts.
        let until_quit: Vec<Request> = match requests.iter().position(|r| *r == Request::Quit) {
            Some(i) => requests[..=i].to_vec(),
            None => requests.clone(),
        };
        let mut wire = BytesMut::new();
        let mut codec = ClientCodec::default();
        for r in &until_quit {
            codec.encode(r, &mut wire).unwrap();
        }
        let got: Vec<Request> = server_decode(&wire, step).into_iter().map(as_client_request).collect();
        prop_assert_eq!(got, until_quit);
    }

    #[test]
    fn responses_mean_the_same_to_the_client(
        responses in proptest::collection::vec(response(), 1..6),
        step in 1usize..40,
    ) {
        let mut wire = BytesMut::new();
        let mut codec = KrakenCodec::new(Limits::default());
        for r in &responses {
            codec.encode(r.clone(), &mut wire).unwrap();
        }
        let got = client_decode(&wire, step);
        prop_assert_eq!(got.len(), responses.len());
        for (got, sent) in got.iter().zip(&responses) {
            match (got, sent) {
                (Reply::Messages(m), Response::Messages(out)) => {
                    prop_assert_eq!(m.len(), out.len());
                    for (g, o) in m.iter().zip(out) {
                        let header = message_header(
                            &g.topics.iter().map(|t| &t[..]).collect::<Vec<_>>(),
                            g.payload.len(),
                        );
                        prop_assert_eq!(&header, &o.header);
                        prop_assert_eq!(&g.payload, &o.payload);
                    }
                }
                (got, sent) => prop_assert_eq!(got, &expected_reply(sent)),
            }
        }
    }
}

/// Valid reply bytes, fragments of them and noise, concatenated.
fn hostile_stream() -> impl Strategy<Value = Vec<u8>> {
    let piece = prop_oneof![
        Just(b"STORED\r\n".to_vec()),
        Just(b"END\r\n".to_vec()),
        Just(b"VALUE messages 0 11\r\nMESSAGE a 0\r\n\r\nEND\r\n".to_vec()),
        Just(b"VALUE messages 0 ".to_vec()),
        Just(b"STAT a b\r\n".to_vec()),
        Just(b"MESSAGE t 3\r\n".to_vec()),
        Just(b"\r\n".to_vec()),
        proptest::collection::vec(any::<u8>(), 0..40),
        "[0-9]{1,3}".prop_map(String::into_bytes),
    ];
    proptest::collection::vec(piece, 0..12).prop_map(|v| v.concat())
}

/// The replies decoded from `bytes` fed in chunks of `step`, and whether
/// the decoder then refused the stream.
fn decode_all(bytes: &[u8], step: usize, limits: ClientLimits) -> (Vec<Reply>, bool) {
    let mut codec = ClientCodec::new(limits);
    let mut buf = BytesMut::new();
    let mut out = Vec::new();
    for chunk in bytes.chunks(step) {
        buf.extend_from_slice(chunk);
        loop {
            match codec.decode(&mut buf) {
                Ok(Some(r)) => out.push(r),
                Ok(None) => break,
                Err(_) => return (out, true),
            }
        }
        // Never more buffered than one line or one value (+ its trailer)
        // within the limits, plus the chunk just added.
        let bound = limits.max_line_bytes.max(limits.max_reply_bytes) + 16 + step;
        assert!(buf.len() <= bound, "{} bytes buffered", buf.len());
    }
    (out, false)
}

proptest! {
    #[test]
    fn any_bytes_decode_the_same_however_they_arrive(
        bytes in hostile_stream(),
        step in 1usize..50,
    ) {
        let limits = ClientLimits { max_line_bytes: 24, max_reply_bytes: 48 };
        let whole = decode_all(&bytes, bytes.len().max(1), limits);
        let chunked = decode_all(&bytes, step, limits);
        prop_assert_eq!(whole, chunked);
    }
}
