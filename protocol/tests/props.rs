//! Property tests: the decoder against random bytes and random chunkings,
//! round trips of valid request streams, and the body parsers against random
//! input and generated well-formed bodies.

mod common;

use bytes::{Bytes, BytesMut};
use common::{buffer_bound, decode_chunked, encode};
use kraken_protocol::{
    message_header, parse_publish_block, parse_retro_body, parse_topics, BodyLimits, KrakenCodec,
    Limits, OutMessage, Request, Response, SetKey, TopicList,
};
use proptest::prelude::*;
use proptest::sample::select;
use tokio_util::codec::Decoder;

/// Publish blocks are parsed with topics of at most `max_topic_bytes`.
fn body_limits(max_topic_bytes: usize) -> BodyLimits {
    BodyLimits {
        max_topic_bytes,
        ..BodyLimits::default()
    }
}

const SMALL: Limits = Limits {
    max_line_bytes: 40,
    max_request_bytes: 64,
};

/// Bytes that look like requests often enough to reach every decoder state:
/// fragments of real commands, numbers around the limits, line ends, noise.
fn plausible_stream() -> impl Strategy<Value = Vec<u8>> {
    let fragment = prop_oneof![
        select(vec![
            &b"get messages\r\n"[..],
            b"get ",
            b"messages",
            b"set ",
            b"subscribe ",
            b"publish ",
            b"retro_subscribe ",
            b"0 0 ",
            b"1",
            b"3",
            b"10",
            b"63",
            b"64",
            b"65",
            b"4294967296",
            b" noreply",
            b"\r\n",
            b"\r",
            b"\n",
            b" ",
            b"  ",
            b"stats\r\n",
            b"version\r\n",
            b"quit\r\n",
            b"MESSAGE a 3\r\nhey\r\n",
        ])
        .prop_map(|f| f.to_vec()),
        proptest::collection::vec(any::<u8>(), 0..80),
    ];
    proptest::collection::vec(fragment, 0..40).prop_map(|parts| parts.concat())
}

fn chunk_sizes() -> impl Strategy<Value = Vec<usize>> {
    proptest::collection::vec(1usize..100, 1..20)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// (a) Random bytes in random chunkings: no panic, no error, the buffer
    /// stays bounded (checked inside `decode_chunked` after every step), and
    /// the result does not depend on how the bytes were split.
    #[test]
    fn random_bytes_never_panic_and_stay_bounded(
        input in proptest::collection::vec(any::<u8>(), 0..600),
        sizes in chunk_sizes(),
    ) {
        let whole = decode_chunked(&input, SMALL, &[usize::MAX]);
        prop_assert_eq!(decode_chunked(&input, SMALL, &sizes), whole);
        decode_chunked(&input, Limits::default(), &sizes);
    }

    #[test]
    fn plausible_streams_never_panic_and_stay_bounded(
        input in plausible_stream(),
        sizes in chunk_sizes(),
    ) {
        let whole = decode_chunked(&input, SMALL, &[usize::MAX]);
        prop_assert_eq!(&decode_chunked(&input, SMALL, &sizes), &whole);
        prop_assert_eq!(&decode_chunked(&input, SMALL, &[1]), &whole);
        // Nothing follows a closing rejection or quit.
        if let Some(i) = whole.iter().position(|r| match r {
            Request::Invalid(rejection) => rejection.close,
            Request::Quit => true,
            _ => false,
        }) {
            prop_assert_eq!(i, whole.len() - 1);
        }
        // A yielded block respects the limit.
        for request in &whole {
            if let Request::Set { data, .. } = request {
                prop_assert!(data.len() <= SMALL.max_request_bytes);
            }
        }
    }

    /// Huge announced lengths arriving piecemeal never make the decoder
    /// reserve more than twice what it holds (plus the line it read).
    #[test]
    fn announced_lengths_are_not_reserved(
        n in 0usize..(1 << 40),
        body in proptest::collection::vec(any::<u8>(), 0..2000),
        sizes in chunk_sizes(),
    ) {
        let mut codec = KrakenCodec::new(Limits {
            max_line_bytes: 2048,
            max_request_bytes: usize::MAX,
        });
        let mut buf = BytesMut::new();
        let mut input = format!("set publish 0 0 {n}\r\n").into_bytes();
        input.extend_from_slice(&body);
        let mut rest = &input[..];
        let mut sizes = sizes.into_iter().cycle();
        while !rest.is_empty() {
            let k = sizes.next().unwrap().min(rest.len());
            buf.extend_from_slice(&rest[..k]);
            rest = &rest[k..];
            while codec.decode(&mut buf).unwrap().is_some() {}
            prop_assert!(
                buf.capacity() <= 2 * input.len() + 64,
                "capacity {} for {} bytes", buf.capacity(), input.len()
            );
        }
    }
}

// ---- (b) Valid request streams round-trip ------------------------------------------

/// How one request is spelled on the wire; every spelling means the same.
#[derive(Debug, Clone)]
struct Spelling {
    /// Extra spaces before, between and after tokens.
    pad: [usize; 3],
    /// `\n` instead of `\r\n` after the command line.
    bare_lf: bool,
    flags: u32,
    exptime: i64,
    /// Arguments after `stats`, which are ignored.
    stats_arg: bool,
}

fn spelling() -> impl Strategy<Value = Spelling> {
    (
        [0usize..3, 0usize..3, 0usize..3],
        any::<bool>(),
        any::<u32>(),
        any::<i64>(),
        any::<bool>(),
    )
        .prop_map(|(pad, bare_lf, flags, exptime, stats_arg)| Spelling {
            pad,
            bare_lf,
            flags,
            exptime,
            stats_arg,
        })
}

fn set_key() -> impl Strategy<Value = SetKey> {
    select(vec![
        SetKey::Subscribe,
        SetKey::Unsubscribe,
        SetKey::Publish,
        SetKey::Register,
        SetKey::RetroSubscribe,
    ])
}

fn valid_request() -> impl Strategy<Value = Request> {
    prop_oneof![
        Just(Request::GetMessages),
        Just(Request::Stats),
        Just(Request::Version),
        (
            set_key(),
            proptest::collection::vec(any::<u8>(), 0..300),
            any::<bool>()
        )
            .prop_map(|(key, data, noreply)| Request::Set {
                key,
                data: Bytes::from(data),
                noreply,
            }),
    ]
}

/// Writes `request` as a client would.
fn write_request(request: &Request, s: &Spelling, out: &mut Vec<u8>) {
    let sp = |n: usize| " ".repeat(n);
    let [a, b, c] = s.pad;
    let line = match request {
        Request::GetMessages => format!("{}get {}messages{}", sp(a), sp(b), sp(c)),
        Request::Stats if s.stats_arg => format!("stats{} items{}", sp(b), sp(c)),
        Request::Stats => format!("{}stats{}", sp(a), sp(c)),
        Request::Version => format!("version{}", sp(c)),
        Request::Quit => format!("{}quit", sp(a)),
        Request::Set { key, data, noreply } => {
            format!(
                "{}set {}{} {} {}{} {}{}",
                sp(a),
                sp(b),
                key.as_str(),
                s.flags,
                s.exptime,
                sp(b),
                data.len(),
                if *noreply { " noreply" } else { "" },
            ) + &sp(c)
        }
        Request::Invalid(_) => unreachable!("not generated"),
    };
    out.extend_from_slice(line.as_bytes());
    out.extend_from_slice(if s.bare_lf { b"\n" } else { b"\r\n" });
    if let Request::Set { data, .. } = request {
        out.extend_from_slice(data);
        out.extend_from_slice(b"\r\n");
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// (b) Any sequence of valid requests, written then split at random
    /// points, decodes back to the same sequence.
    #[test]
    fn valid_requests_round_trip(
        requests in proptest::collection::vec((valid_request(), spelling()), 0..12),
        quit in proptest::option::of(spelling()),
        sizes in chunk_sizes(),
    ) {
        let mut wire = Vec::new();
        let mut expected: Vec<Request> = Vec::new();
        for (request, s) in &requests {
            write_request(request, s, &mut wire);
            expected.push(request.clone());
        }
        if let Some(s) = &quit {
            write_request(&Request::Quit, s, &mut wire);
            expected.push(Request::Quit);
        }
        let limits = Limits { max_line_bytes: 128, max_request_bytes: 300 };
        prop_assert!(buffer_bound(limits) > 0);
        prop_assert_eq!(&decode_chunked(&wire, limits, &sizes), &expected);
        prop_assert_eq!(&decode_chunked(&wire, limits, &[1]), &expected);
    }
}

// ---- (c) Bodies ------------------------------------------------------------------------

fn topic() -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec(
        any::<u8>().prop_filter("no separators", |b| !matches!(b, b' ' | b'\r' | b'\n')),
        1..12,
    )
}

fn entries() -> impl Strategy<Value = Vec<(Vec<Vec<u8>>, Vec<u8>)>> {
    proptest::collection::vec(
        (
            // Distinct topics: a topic named twice in one entry counts once.
            proptest::collection::vec(topic(), 1..5).prop_map(|mut topics| {
                let mut seen = std::collections::HashSet::new();
                topics.retain(|t| seen.insert(t.clone()));
                topics
            }),
            proptest::collection::vec(
                prop_oneof![any::<u8>(), select(vec![b'\r', b'\n', b' '])],
                0..60,
            ),
        ),
        0..8,
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn body_parsers_never_panic(data in proptest::collection::vec(any::<u8>(), 0..300)) {
        let data = Bytes::from(data);
        let _ = parse_publish_block(&data, &body_limits(8));
        let _ = parse_topics(&data, 8);
        let _ = parse_retro_body(&data, 8);
    }

    #[test]
    fn publish_parser_never_panics_on_near_misses(
        parts in proptest::collection::vec(
            prop_oneof![
                select(vec![
                    &b"MESSAGE "[..], b"MESSAGE", b"a ", b"b", b" ", b"0", b"3", b"\r\n",
                    b"\r", b"\n", b"hey", b"99999999999999999999999",
                ]).prop_map(|p| p.to_vec()),
                proptest::collection::vec(any::<u8>(), 0..8),
            ],
            0..30,
        ),
    ) {
        let data = Bytes::from(parts.concat());
        if let Ok(entries) = parse_publish_block(&data, &body_limits(8)) {
            for e in entries {
                prop_assert!(!e.topics.is_empty());
                prop_assert!(e.topics.iter().all(|t| !t.is_empty() && t.len() <= 8));
            }
        }
    }

    /// Generated blocks parse back to their entries, with or without the
    /// last entry's CRLF, whatever runs of spaces separate the tokens.
    #[test]
    fn publish_blocks_round_trip(
        entries in entries(),
        omit_last_crlf in any::<bool>(),
        pad in 1usize..4,
    ) {
        let sep = " ".repeat(pad);
        let mut block = Vec::new();
        for (topics, payload) in &entries {
            block.extend_from_slice(b"MESSAGE");
            for t in topics {
                block.extend_from_slice(sep.as_bytes());
                block.extend_from_slice(t);
            }
            block.extend_from_slice(format!("{sep}{}\r\n", payload.len()).as_bytes());
            block.extend_from_slice(payload);
            block.extend_from_slice(b"\r\n");
        }
        if omit_last_crlf && !entries.is_empty() {
            block.truncate(block.len() - 2);
        }
        let parsed = parse_publish_block(&Bytes::from(block), &body_limits(12)).unwrap();
        prop_assert_eq!(parsed.len(), entries.len());
        for (p, (topics, payload)) in parsed.iter().zip(&entries) {
            prop_assert_eq!(&p.topics, topics);
            prop_assert_eq!(&p.payload[..], &payload[..]);
        }
    }

    /// A `get messages` reply read as a memcached client reads it (k bytes
    /// after the VALUE line) is itself a valid publish block of the same
    /// entries: the framing `docs/PROTOCOL.md` §4 describes.
    #[test]
    fn delivered_values_parse_as_publish_blocks(entries in entries()) {
        let messages: Vec<OutMessage> = entries
            .iter()
            .map(|(topics, payload)| {
                let refs: Vec<&[u8]> = topics.iter().map(|t| &t[..]).collect();
                OutMessage {
                    header: message_header(&refs, payload.len()),
                    payload: Bytes::copy_from_slice(payload),
                }
            })
            .collect();
        let wire = encode(Response::Messages(messages));
        if entries.is_empty() {
            prop_assert_eq!(&wire[..], b"END\r\n");
            return Ok(());
        }
        let line_end = wire.windows(2).position(|w| w == b"\r\n").unwrap();
        let line = std::str::from_utf8(&wire[..line_end]).unwrap();
        let k: usize = line.strip_prefix("VALUE messages 0 ").unwrap().parse().unwrap();
        let value = &wire[line_end + 2..line_end + 2 + k];
        prop_assert_eq!(&wire[line_end + 2 + k..], b"\r\nEND\r\n");
        let parsed = parse_publish_block(&Bytes::copy_from_slice(value), &body_limits(12)).unwrap();
        prop_assert_eq!(parsed.len(), entries.len());
        for (p, (topics, payload)) in parsed.iter().zip(&entries) {
            prop_assert_eq!(&p.topics, topics);
            prop_assert_eq!(&p.payload[..], &payload[..]);
        }
    }

    #[test]
    fn topic_lists_round_trip(
        topics in proptest::collection::vec(topic(), 0..10),
        pads in proptest::collection::vec(1usize..4, 11),
        lead in 0usize..3,
    ) {
        let mut data = " ".repeat(lead).into_bytes();
        for (t, pad) in topics.iter().zip(&pads) {
            data.extend_from_slice(t);
            data.extend_from_slice(" ".repeat(*pad).as_bytes());
        }
        prop_assert_eq!(parse_topics(&Bytes::from(data), 12).unwrap(), topics);
    }

    #[test]
    fn topic_lists_read_a_slice_at_a_time_as_parse_topics_reads_them(
        data in proptest::collection::vec(
            prop_oneof![Just(b' '), Just(b'\r'), Just(b'\n'), Just(b'a'), Just(b'b'), any::<u8>()],
            0..200,
        ),
        max_topic in 1usize..8,
        check_most in 1usize..5,
        split_most in 1usize..5,
    ) {
        let data = Bytes::from(data);
        let whole = parse_topics(&data, max_topic);
        let mut list = TopicList::new(data.clone(), max_topic);
        let mut calls = 0;
        let checked = loop {
            calls += 1;
            prop_assert!(calls <= data.len() + 1, "check never ends");
            if let Some(r) = list.check(check_most) {
                break r;
            }
        };
        match whole {
            Err(e) => prop_assert_eq!(checked, Err(e)),
            Ok(topics) => {
                prop_assert_eq!(checked, Ok(()));
                let mut got = Vec::new();
                loop {
                    let batch = list.split(split_most);
                    prop_assert!(batch.len() <= split_most);
                    if batch.is_empty() {
                        break;
                    }
                    got.extend(batch);
                }
                prop_assert_eq!(got, topics);
            }
        }
    }

    #[test]
    fn retro_bodies_round_trip(
        horizon in any::<i64>(),
        topics in proptest::collection::vec(topic(), 0..6),
        trailing_crlf in any::<bool>(),
    ) {
        let mut data = format!("{horizon}\r\n").into_bytes();
        let joined: Vec<u8> = topics.join(&b' ');
        data.extend_from_slice(&joined);
        if trailing_crlf {
            data.extend_from_slice(b"\r\n");
        }
        let body = parse_retro_body(&Bytes::from(data), 12).unwrap();
        prop_assert_eq!(body.horizon_secs, horizon);
        prop_assert_eq!(body.topics, topics);
    }
}
