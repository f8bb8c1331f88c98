//! The request decoder against exact bytes: the byte sequences the Erlang
//! original was seen to accept, where this node agrees, the rules of
//! `docs/PROTOCOL.md` where it differs (`docs/SPEC-DEVIATIONS.md`), and every
//! limit at its boundary. Every vector is also fed in
//! 1-, 2- and 3-byte pieces, which must not change the result.

mod common;

use common::*;
use kraken_protocol::{Limits, Request, SetKey};

fn d(input: &[u8]) -> Vec<Request> {
    decode_every_way(input, Limits::default())
}

// ---- Normal commands --------------------------------------------------------

#[test]
fn subscribe_with_two_topics() {
    assert_eq!(
        d(b"set subscribe 0 0 3\r\na b\r\n"),
        [set(SetKey::Subscribe, b"a b")]
    );
}

#[test]
fn unsubscribe_one_topic() {
    assert_eq!(
        d(b"set unsubscribe 0 0 1\r\nb\r\n"),
        [set(SetKey::Unsubscribe, b"b")]
    );
}

#[test]
fn publish_counts_the_last_entrys_crlf() {
    assert_eq!(
        d(b"set publish 0 0 18\r\nMESSAGE a 3\r\nhey\r\n\r\n"),
        [set(SetKey::Publish, b"MESSAGE a 3\r\nhey\r\n")]
    );
}

#[test]
fn publish_three_entries() {
    let block = b"MESSAGE a 2\r\nm1\r\nMESSAGE zz 2\r\nm2\r\nMESSAGE a 2\r\nm3\r\n";
    assert_eq!(block.len(), 52);
    let mut input = b"set publish 0 0 52\r\n".to_vec();
    input.extend_from_slice(block);
    input.extend_from_slice(b"\r\n");
    assert_eq!(d(&input), [set(SetKey::Publish, block)]);
}

#[test]
fn empty_publish() {
    assert_eq!(d(b"set publish 0 0 0\r\n\r\n"), [set(SetKey::Publish, b"")]);
}

#[test]
fn get_messages_line() {
    assert_eq!(d(b"get messages\r\n"), [Request::GetMessages]);
}

#[test]
fn payload_with_line_ends_is_framed_by_length() {
    assert_eq!(
        d(b"set publish 0 0 21\r\nMESSAGE a 6\r\nx\r\ny\nz\r\n\r\n"),
        [set(SetKey::Publish, b"MESSAGE a 6\r\nx\r\ny\nz\r\n")]
    );
}

#[test]
fn publish_with_an_empty_payload() {
    assert_eq!(
        d(b"set publish 0 0 15\r\nMESSAGE a 0\r\n\r\n\r\n"),
        [set(SetKey::Publish, b"MESSAGE a 0\r\n\r\n")]
    );
}

#[test]
fn binary_payload_with_end_inside() {
    let payload = b"\x00\xff\r\nEND\r\n\nVALUE x";
    let mut block = format!("MESSAGE a {}\r\n", payload.len()).into_bytes();
    block.extend_from_slice(payload);
    block.extend_from_slice(b"\r\n");
    let mut input = format!("set publish 0 0 {}\r\n", block.len()).into_bytes();
    input.extend_from_slice(&block);
    input.extend_from_slice(b"\r\nget messages\r\n");
    assert_eq!(
        d(&input),
        [set(SetKey::Publish, &block), Request::GetMessages]
    );
}

#[test]
fn one_mib_block() {
    // Deterministic "random" bytes, including CR, LF and NUL.
    let mut x: u32 = 0x9e37_79b9;
    let payload: Vec<u8> = (0..1 << 20)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect();
    let mut input = format!("set publish 0 0 {}\r\n", payload.len()).into_bytes();
    input.extend_from_slice(&payload);
    input.extend_from_slice(b"\r\nget messages\r\n");
    let expected = [set(SetKey::Publish, &payload), Request::GetMessages];
    assert_eq!(decode(&input), expected);
    assert_eq!(
        decode_chunked(&input, Limits::default(), &[1, 4096, 65536, 13]),
        expected
    );
}

#[test]
fn register_data_is_framed_like_any_other() {
    assert_eq!(
        d(b"set register 0 0 0\r\n\r\nset register 0 0 3\r\nabc\r\n"),
        [set(SetKey::Register, b""), set(SetKey::Register, b"abc")]
    );
}

#[test]
fn flags_and_exptime_are_ignored() {
    assert_eq!(
        d(b"set subscribe 123 456 1\r\na\r\n"),
        [set(SetKey::Subscribe, b"a")]
    );
    assert_eq!(
        d(b"set subscribe 4294967295 -1 1\r\na\r\n"),
        [set(SetKey::Subscribe, b"a")]
    );
    assert_eq!(
        d(b"set subscribe 0 9223372036854775807 1\r\na\r\n"),
        [set(SetKey::Subscribe, b"a")]
    );
}

#[test]
fn quit_line() {
    assert_eq!(d(b"quit\r\n"), [Request::Quit]);
}

#[test]
fn large_data_block_with_a_short_command_line() {
    let topics: Vec<String> = (0..20_000).map(|i| format!("topic{i}")).collect();
    let data = topics.join(" ");
    assert!(data.len() > 100_000);
    let mut input = format!("set subscribe 0 0 {}\r\n", data.len()).into_bytes();
    input.extend_from_slice(data.as_bytes());
    input.extend_from_slice(b"\r\n");
    assert_eq!(decode(&input), [set(SetKey::Subscribe, data.as_bytes())]);
    assert_eq!(
        decode_chunked(&input, Limits::default(), &[1, 1000]),
        [set(SetKey::Subscribe, data.as_bytes())]
    );
}

#[test]
fn trailing_and_repeated_spaces_are_dropped() {
    assert_eq!(d(b"get messages \r\n"), [Request::GetMessages]);
    assert_eq!(d(b"  get   messages  \r\n"), [Request::GetMessages]);
    assert_eq!(
        d(b"set subscribe 0 0 1 \r\na\r\n"),
        [set(SetKey::Subscribe, b"a")]
    );
    // The original closed here; tokens are split on runs of spaces.
    assert_eq!(
        d(b"set  subscribe  0  0  1\r\na\r\n"),
        [set(SetKey::Subscribe, b"a")]
    );
}

// ---- Commands beyond the original --------------------------------------------

#[test]
fn noreply_is_memcacheds_flag() {
    assert_eq!(
        d(b"set subscribe 0 0 1 noreply\r\na\r\n"),
        [Request::Set {
            key: SetKey::Subscribe,
            data: bytes::Bytes::from_static(b"a"),
            noreply: true,
        }]
    );
}

#[test]
fn every_set_key() {
    for (key, name) in [
        (SetKey::Subscribe, "subscribe"),
        (SetKey::Unsubscribe, "unsubscribe"),
        (SetKey::Publish, "publish"),
        (SetKey::Register, "register"),
        (SetKey::RetroSubscribe, "retro_subscribe"),
    ] {
        assert_eq!(key.as_str(), name);
        let input = format!("set {name} 0 0 2\r\nxy\r\n");
        assert_eq!(d(input.as_bytes()), [set(key, b"xy")]);
    }
}

#[test]
fn retro_subscribe_body_is_taken_whole() {
    assert_eq!(
        d(b"set retro_subscribe 0 0 13\r\n1700000000\r\nx\r\n"),
        [set(SetKey::RetroSubscribe, b"1700000000\r\nx")]
    );
}

#[test]
fn stats_and_version() {
    assert_eq!(d(b"stats\r\n"), [Request::Stats]);
    assert_eq!(d(b"stats items\r\n"), [Request::Stats]);
    assert_eq!(d(b"stats slabs 1\r\n"), [Request::Stats]);
    assert_eq!(d(b"version\r\n"), [Request::Version]);
}

#[test]
fn bare_lf_is_accepted() {
    // `get messages\n`, `quit\n`: the original answered ERROR or closed silently.
    assert_eq!(d(b"get messages\n"), [Request::GetMessages]);
    assert_eq!(d(b"quit\n"), [Request::Quit]);
    // A bare LF after the command line (the original closed silently).
    assert_eq!(
        d(b"set subscribe 0 0 1\na\r\nstats\n"),
        [set(SetKey::Subscribe, b"a"), Request::Stats]
    );
}

// ---- Errors: ERROR, then close ---------------------------------------------

#[test]
fn unknown_commands_are_error_then_close() {
    for line in [
        &b"hello\r\n"[..],
        b"\r\n",
        b"\n",
        b"   \r\n",
        b"QUIT\r\n",
        b"GET messages\r\n",
        b"Get messages\r\n",
        b"get MESSAGES\r\n",
        b"gets messages\r\n",
        b"SET subscribe 0 0 1\r\n",
        b"delete messages\r\n",
        b"VERSION\r\n",
        b"quit now\r\n",
        b"version 1\r\n",
        b"\tget messages\r\n",
        b"get\tmessages\r\n",
        b"get messages\r\r\n",
        b"get mess\rages\r\n",
    ] {
        assert_eq!(
            d(line),
            [error_close()],
            "{:?}",
            String::from_utf8_lossy(line)
        );
    }
}

#[test]
fn get_of_anything_but_messages_is_error_then_close() {
    for line in [
        &b"get foo\r\n"[..],
        b"get messages messages\r\n",
        b"get \r\n",
        b"get\r\n",
        b"get register\r\n", // The original registered the client (an accident).
        b"get quit\r\n",
        b"get subscribe\r\n",
    ] {
        assert_eq!(
            d(line),
            [error_close()],
            "{:?}",
            String::from_utf8_lossy(line)
        );
    }
}

#[test]
fn set_of_unknown_key_is_error_then_close_without_reading_the_block() {
    for line in [
        &b"set foo 0 0 1\r\nx\r\n"[..],
        b"set messages 0 0 0\r\n\r\n",
        b"set quit 0 0 0\r\n\r\n",
        b"set Subscribe 0 0 1\r\na\r\n",
        b"set foo 0 0 99999999999\r\n",
    ] {
        assert_eq!(
            d(line),
            [error_close()],
            "{:?}",
            String::from_utf8_lossy(line)
        );
    }
}

#[test]
fn malformed_set_lines_are_error_then_close() {
    for line in [
        &b"set\r\n"[..],
        b"set subscribe\r\n",
        b"set subscribe 0\r\n",
        b"set subscribe 0 0\r\n",
        b"set subscribe 0 0 x\r\n",
        b"set subscribe 0 0 -1\r\n", // The original waited for more bytes.
        b"set subscribe 0 0 +1\r\n",
        b"set subscribe 0 0 1x\r\n",
        b"set subscribe 0 0 0x1\r\n",
        b"set subscribe 0 0 99999999999999999999999\r\n",
        b"set subscribe x 0 1\r\n",
        b"set subscribe -1 0 1\r\n",
        b"set subscribe 4294967296 0 1\r\n",
        b"set subscribe 0 x 1\r\n",
        b"set subscribe 0 9223372036854775808 1\r\n",
        b"set subscribe 0 0 1 noreplY\r\n",
        b"set subscribe 0 0 1 extra\r\n",
        b"set subscribe 0 0 1 noreply extra\r\n",
        b"set subscribe 0 0 1 noreply noreply\r\n",
    ] {
        assert_eq!(
            d(line),
            [error_close()],
            "{:?}",
            String::from_utf8_lossy(line)
        );
    }
}

// ---- Data blocks: bad data chunk, then close --------------------------------

#[test]
fn block_longer_than_announced_is_bad_data_chunk() {
    // The original answered ERROR.
    assert_eq!(
        d(b"set subscribe 0 0 1\r\nabc\r\n"),
        [client_error("bad data chunk", true)]
    );
}

#[test]
fn block_shorter_than_announced_swallows_the_next_request() {
    // Waits; the `get` line becomes data and overflows.
    assert_eq!(d(b"set subscribe 0 0 10\r\nabc\r\n"), []);
    assert_eq!(
        d(b"set subscribe 0 0 10\r\nabc\r\nget messages\r\n"),
        [client_error("bad data chunk", true)]
    );
}

#[test]
fn block_framing_is_by_length_only() {
    // The next line is taken as part of the block.
    assert_eq!(
        d(b"set subscribe 0 0 7\r\nabc\r\nzz\r\n"),
        [set(SetKey::Subscribe, b"abc\r\nzz")]
    );
}

#[test]
fn block_must_end_with_crlf() {
    // The original dropped the last two bytes unchecked.
    for input in [
        &b"set subscribe 0 0 3\r\nabcd\n"[..],
        b"set subscribe 0 0 3\r\nabc\n\n",
        b"set subscribe 0 0 3\r\nabc\r\r",
        b"set subscribe 0 0 3\r\nabc\n\r",
        b"set subscribe 0 0 3\r\nabcxx",
        b"set subscribe 0 0 0\r\nxx",
    ] {
        assert_eq!(
            d(input),
            [client_error("bad data chunk", true)],
            "{:?}",
            String::from_utf8_lossy(input)
        );
    }
}

// ---- After a closing rejection, nothing more ------------------------------

#[test]
fn nothing_is_decoded_after_a_closing_rejection() {
    assert_eq!(
        d(b"get messages\r\nhello\r\nget messages\r\nquit\r\n"),
        [Request::GetMessages, error_close()]
    );
    assert_eq!(
        d(b"set subscribe 0 0 1\r\nabc\r\nget messages\r\n"),
        [client_error("bad data chunk", true)]
    );
}

#[test]
fn nothing_is_decoded_after_quit() {
    // Pipelining table: `set ... quit` answers STORED, then closes.
    assert_eq!(
        d(b"set subscribe 0 0 1\r\na\r\nquit\r\nget messages\r\n"),
        [set(SetKey::Subscribe, b"a"), Request::Quit]
    );
}

#[test]
fn the_decoder_stays_closed_and_drops_what_arrives() {
    use bytes::BytesMut;
    use kraken_protocol::KrakenCodec;
    use tokio_util::codec::Decoder;

    let mut codec = KrakenCodec::new(Limits::default());
    let mut buf = BytesMut::from(&b"nope\r\n"[..]);
    assert_eq!(codec.decode(&mut buf).unwrap(), Some(error_close()));
    for _ in 0..3 {
        buf.extend_from_slice(b"get messages\r\n");
        assert_eq!(codec.decode(&mut buf).unwrap(), None);
        assert!(buf.is_empty());
    }
    buf.extend_from_slice(b"get messages\r\n");
    assert_eq!(codec.decode_eof(&mut buf).unwrap(), None);
}

// ---- Pipelining ------------------------------------------------------------

#[test]
fn pipelined_requests_in_one_write() {
    assert_eq!(
        d(b"set subscribe 0 0 2\r\npp\r\nget messages\r\nset publish 0 0 18\r\nMESSAGE pp 2\r\nhi\r\n\r\nset unsubscribe 0 0 2\r\npp\r\nget messages\r\n"),
        [
            set(SetKey::Subscribe, b"pp"),
            Request::GetMessages,
            set(SetKey::Publish, b"MESSAGE pp 2\r\nhi\r\n"),
            set(SetKey::Unsubscribe, b"pp"),
            Request::GetMessages,
        ]
    );
}

#[test]
fn two_publishes_in_one_write() {
    assert_eq!(
        d(b"set publish 0 0 18\r\nMESSAGE a 3\r\none\r\n\r\nset publish 0 0 18\r\nMESSAGE a 3\r\ntwo\r\n\r\n"),
        [
            set(SetKey::Publish, b"MESSAGE a 3\r\none\r\n"),
            set(SetKey::Publish, b"MESSAGE a 3\r\ntwo\r\n"),
        ]
    );
}

#[test]
fn split_between_cr_and_lf() {
    let input = b"get messages\r\nset subscribe 0 0 1\r\na\r\n";
    for cut in 1..input.len() {
        assert_eq!(
            decode_chunked(input, Limits::default(), &[cut, input.len()]),
            [Request::GetMessages, set(SetKey::Subscribe, b"a")],
            "cut at {cut}"
        );
    }
    assert_eq!(
        decode_bytewise(input),
        [Request::GetMessages, set(SetKey::Subscribe, b"a")]
    );
}

// ---- End of stream ---------------------------------------------------------

#[test]
fn a_request_cut_short_by_eof_is_dropped_quietly() {
    for input in [
        &b"get messages"[..],
        b"get messages\r",
        b"set subscribe 0 0 3\r\nab",
        b"set subscribe 0 0 3\r\nabc\r",
        b"set subscribe 0 0 3",
    ] {
        assert_eq!(d(input), [], "{:?}", String::from_utf8_lossy(input));
    }
    assert_eq!(d(b"get messages\r\nget mess"), [Request::GetMessages]);
}

// ---- Limits at their boundaries --------------------------------------------

const SMALL: Limits = Limits {
    max_line_bytes: 32,
    max_request_bytes: 100,
};

/// A command line of exactly `len` bytes that parses as `get messages`.
fn get_line_of(len: usize) -> Vec<u8> {
    let mut line = b"get messages".to_vec();
    line.resize(len, b' ');
    line
}

#[test]
fn line_of_exactly_max_bytes_is_accepted() {
    for end in [&b"\r\n"[..], b"\n"] {
        let mut input = get_line_of(SMALL.max_line_bytes);
        input.extend_from_slice(end);
        input.extend_from_slice(b"quit\r\n");
        assert_eq!(
            decode_every_way(&input, SMALL),
            [Request::GetMessages, Request::Quit]
        );
    }
}

#[test]
fn line_of_max_plus_one_bytes_is_too_long() {
    for end in [&b"\r\n"[..], b"\n", b""] {
        let mut input = get_line_of(SMALL.max_line_bytes + 1);
        input.extend_from_slice(end);
        assert_eq!(
            decode_every_way(&input, SMALL),
            [client_error("line too long", true)]
        );
    }
}

#[test]
fn line_too_long_is_detected_before_any_lf_arrives() {
    use bytes::BytesMut;
    use kraken_protocol::KrakenCodec;
    use tokio_util::codec::Decoder;

    let mut codec = KrakenCodec::new(SMALL);
    let mut buf = BytesMut::new();
    for _ in 0..SMALL.max_line_bytes {
        buf.extend_from_slice(b"x");
        assert_eq!(codec.decode(&mut buf).unwrap(), None);
    }
    // max bytes then CR: still possibly a line of exactly max bytes.
    buf.extend_from_slice(b"\r");
    assert_eq!(codec.decode(&mut buf).unwrap(), None);
    buf.extend_from_slice(b"x");
    assert_eq!(
        codec.decode(&mut buf).unwrap(),
        Some(client_error("line too long", true))
    );
    assert!(buf.is_empty());

    let mut codec = KrakenCodec::new(SMALL);
    let mut buf = BytesMut::from(&vec![b'y'; SMALL.max_line_bytes + 1][..]);
    assert_eq!(
        codec.decode(&mut buf).unwrap(),
        Some(client_error("line too long", true))
    );
}

#[test]
fn line_limit_does_not_count_the_data_block() {
    let data = vec![b'a'; SMALL.max_request_bytes];
    let mut input = format!("set subscribe 0 0 {}\r\n", data.len()).into_bytes();
    input.extend_from_slice(&data);
    input.extend_from_slice(b"\r\n");
    assert_eq!(
        decode_every_way(&input, SMALL),
        [set(SetKey::Subscribe, &data)]
    );
}

#[test]
fn block_of_exactly_max_request_bytes_is_accepted() {
    let data = vec![b'\n'; SMALL.max_request_bytes];
    let mut input = format!("set publish 0 0 {}\r\n", data.len()).into_bytes();
    input.extend_from_slice(&data);
    input.extend_from_slice(b"\r\nget messages\r\n");
    assert_eq!(
        decode_every_way(&input, SMALL),
        [set(SetKey::Publish, &data), Request::GetMessages]
    );
}

#[test]
fn block_over_max_request_bytes_is_refused_skipped_and_the_stream_goes_on() {
    let data = vec![b'\n'; SMALL.max_request_bytes + 1];
    let mut input = format!("set publish 0 0 {}\r\n", data.len()).into_bytes();
    input.extend_from_slice(&data);
    input.extend_from_slice(b"\r\nget messages\r\nset subscribe 0 0 1\r\na\r\n");
    assert_eq!(
        decode_every_way(&input, SMALL),
        [
            client_error("data block too large", false),
            Request::GetMessages,
            set(SetKey::Subscribe, b"a"),
        ]
    );
}

#[test]
fn oversized_block_is_refused_as_soon_as_the_line_arrives() {
    use bytes::BytesMut;
    use kraken_protocol::KrakenCodec;
    use tokio_util::codec::Decoder;

    // `<n>` says 4 GB: refuse at once, allocate nothing, skip as it comes.
    let mut codec = KrakenCodec::new(Limits::default());
    let mut buf = BytesMut::from(&b"set publish 0 0 4294967296\r\n"[..]);
    assert_eq!(
        codec.decode(&mut buf).unwrap(),
        Some(client_error("data block too large", false))
    );
    let chunk = vec![0u8; 1 << 16];
    for _ in 0..16 {
        buf.extend_from_slice(&chunk);
        assert_eq!(codec.decode(&mut buf).unwrap(), None);
        assert!(buf.is_empty());
    }
    assert!(buf.capacity() <= 2 << 16, "capacity {}", buf.capacity());
}

#[test]
fn oversized_block_with_noreply_is_still_refused_aloud() {
    let mut input = b"set subscribe 0 0 101 noreply\r\n".to_vec();
    input.extend_from_slice(&[b'a'; 101]);
    input.extend_from_slice(b"\r\nversion\r\n");
    assert_eq!(
        decode_every_way(&input, SMALL),
        [
            client_error("data block too large", false),
            Request::Version
        ]
    );
}

#[test]
fn waiting_for_a_block_reserves_no_more_than_arrived() {
    use bytes::BytesMut;
    use kraken_protocol::KrakenCodec;
    use tokio_util::codec::Decoder;

    let mut codec = KrakenCodec::new(Limits::default());
    let mut buf = BytesMut::new();
    buf.extend_from_slice(b"set publish 0 0 16000000\r\n");
    assert_eq!(codec.decode(&mut buf).unwrap(), None);
    assert!(buf.capacity() < 1024, "capacity {}", buf.capacity());
    buf.extend_from_slice(&[b'x'; 1000]);
    assert_eq!(codec.decode(&mut buf).unwrap(), None);
    assert!(buf.capacity() <= 4096, "capacity {}", buf.capacity());
}

// ---- Hostile streams --------------------------------------------------------

/// `set publish` announcing one byte over `SMALL`'s limit, with its block.
fn oversized() -> Vec<u8> {
    let n = SMALL.max_request_bytes + 1;
    let mut input = format!("set publish 0 0 {n}\r\n").into_bytes();
    input.resize(input.len() + n, b'x');
    input.extend_from_slice(b"\r\n");
    input
}

#[test]
fn refusals_in_a_row_close_the_connection_at_the_limit() {
    use kraken_protocol::MAX_CONSECUTIVE_REFUSALS;
    let n = MAX_CONSECUTIVE_REFUSALS as usize;
    let mut input = oversized().repeat(n);
    input.extend_from_slice(b"version\r\n");
    let mut expected = vec![client_error("data block too large", false); n - 1];
    expected.push(client_error("data block too large", true));
    assert_eq!(decode_every_way(&input, SMALL), expected);
}

#[test]
fn an_accepted_request_ends_a_streak_of_refusals() {
    use kraken_protocol::MAX_CONSECUTIVE_REFUSALS;
    let n = MAX_CONSECUTIVE_REFUSALS as usize - 1;
    let streak = oversized().repeat(n);
    let mut input = streak.clone();
    input.extend_from_slice(b"version\r\n");
    input.extend_from_slice(&streak);
    input.extend_from_slice(b"version\r\n");
    let refused = vec![client_error("data block too large", false); n];
    let mut expected = refused.clone();
    expected.push(Request::Version);
    expected.extend(refused);
    expected.push(Request::Version);
    assert_eq!(decode_every_way(&input, SMALL), expected);
}

#[test]
fn a_skip_asks_for_large_reads_and_gives_the_room_back_when_done() {
    use bytes::BytesMut;
    use kraken_protocol::{KrakenCodec, DISCARD_READ_BYTES};
    use tokio_util::codec::Decoder;

    let mut codec = KrakenCodec::new(Limits::default());
    let n = 1 << 20;
    let mut buf = BytesMut::with_capacity(64);
    buf.extend_from_slice(format!("set publish 0 0 {}\r\n", 17 << 20).as_bytes());
    assert_eq!(
        codec.decode(&mut buf).unwrap(),
        Some(client_error("data block too large", false))
    );
    assert_eq!(codec.decode(&mut buf).unwrap(), None);
    // The reader may now read this much at once, not 64 bytes per read.
    assert!(buf.capacity() >= DISCARD_READ_BYTES, "{}", buf.capacity());
    let chunk = vec![b'x'; n];
    for _ in 0..17 {
        buf.extend_from_slice(&chunk);
        assert_eq!(codec.decode(&mut buf).unwrap(), None);
        assert!(buf.is_empty());
    }
    buf.extend_from_slice(b"\r\nversion\r\n");
    assert_eq!(codec.decode(&mut buf).unwrap(), Some(Request::Version));
    assert!(buf.capacity() <= 4096, "capacity {}", buf.capacity());
}

#[test]
fn a_small_block_from_a_large_buffer_is_copied_out_of_it() {
    use bytes::BytesMut;
    use kraken_protocol::KrakenCodec;
    use tokio_util::codec::Decoder;

    let mut codec = KrakenCodec::new(Limits::default());
    let mut buf = BytesMut::with_capacity(1 << 20);
    buf.extend_from_slice(b"set publish 0 0 3\r\nhey\r\n");
    let range = buf.as_ptr_range();
    let start = range.start as usize;
    let end = start + buf.capacity();
    let Some(Request::Set { data, .. }) = codec.decode(&mut buf).unwrap() else {
        panic!("expected a set");
    };
    assert_eq!(&data[..], b"hey");
    let p = data.as_ptr() as usize;
    assert!(
        p < start || p >= end,
        "the 3-byte block keeps the 1 MiB buffer"
    );

    // A block that is most of its buffer is not copied.
    let mut codec = KrakenCodec::new(Limits::default());
    let mut buf = BytesMut::with_capacity(1024);
    buf.extend_from_slice(b"set publish 0 0 1000\r\n");
    buf.extend_from_slice(&[b'x'; 1000]);
    buf.extend_from_slice(b"\r\n");
    let start = buf.as_ptr() as usize;
    let Some(Request::Set { data, .. }) = codec.decode(&mut buf).unwrap() else {
        panic!("expected a set");
    };
    assert_eq!(
        data.as_ptr() as usize,
        start + b"set publish 0 0 1000\r\n".len()
    );
}

#[test]
fn after_a_large_block_the_connection_reads_on_into_a_small_buffer() {
    use bytes::BytesMut;
    use kraken_protocol::KrakenCodec;
    use tokio_util::codec::Decoder;

    let mut codec = KrakenCodec::new(Limits::default());
    let n = 1 << 20;
    let mut buf = BytesMut::with_capacity(2 * n);
    buf.extend_from_slice(format!("set publish 0 0 {n}\r\n").as_bytes());
    buf.resize(buf.len() + n, b'x');
    buf.extend_from_slice(b"\r\nvers");
    let Some(Request::Set { data, .. }) = codec.decode(&mut buf).unwrap() else {
        panic!("expected a set");
    };
    assert_eq!(data.len(), n);
    // What follows the block was moved out of the big buffer, so dropping
    // the block frees it.
    assert_eq!(&buf[..], b"vers");
    assert!(buf.capacity() <= 4096, "capacity {}", buf.capacity());
    buf.extend_from_slice(b"ion\r\n");
    assert_eq!(codec.decode(&mut buf).unwrap(), Some(Request::Version));
}
