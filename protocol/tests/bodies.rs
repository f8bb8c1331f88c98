//! `set` bodies against exact bytes: topic lists, publish blocks, retro
//! bodies (`docs/PROTOCOL.md` §3), including the shapes the Erlang original
//! accepted or refused differently (`docs/SPEC-DEVIATIONS.md`).

use bytes::Bytes;
use kraken_protocol::{
    parse_publish_block, parse_retro_body, parse_topics, BodyError, BodyLimits, PublishEntry,
    RetroBody,
};

const MAX: usize = 1024;

/// The limits publish blocks are parsed with: `MAX`-byte topics, the
/// default topic count.
const LIMITS: BodyLimits = BodyLimits {
    max_topic_bytes: MAX,
    max_topics_per_message: 10_000,
};

fn b(bytes: &[u8]) -> Bytes {
    Bytes::copy_from_slice(bytes)
}

fn topics(data: &[u8]) -> Result<Vec<Bytes>, BodyError> {
    parse_topics(&b(data), MAX)
}

fn block(data: &[u8]) -> Result<Vec<PublishEntry>, BodyError> {
    parse_publish_block(&b(data), &LIMITS)
}

fn retro(data: &[u8]) -> Result<RetroBody, BodyError> {
    parse_retro_body(&b(data), MAX)
}

fn entry(topics: &[&[u8]], payload: &[u8]) -> PublishEntry {
    PublishEntry {
        topics: topics.iter().map(|t| b(t)).collect(),
        payload: b(payload),
    }
}

/// Is `part` a view into `whole`'s memory (no copy)?
fn is_slice_of(part: &Bytes, whole: &Bytes) -> bool {
    let range = whole.as_ptr_range();
    part.is_empty() || (range.start <= part.as_ptr() && part.as_ptr_range().end <= range.end)
}

// ---- Topic lists -------------------------------------------------------------

#[test]
fn topics_split_on_spaces() {
    assert_eq!(topics(b"a b").unwrap(), [&b"a"[..], b"b"]);
    assert_eq!(topics(b"a").unwrap(), [&b"a"[..]]);
    assert_eq!(topics(b"a b a").unwrap(), [&b"a"[..], b"b", b"a"]);
}

#[test]
fn runs_of_spaces_are_one_separator() {
    // The original subscribed the empty topic here (an accident).
    assert_eq!(topics(b"a  b").unwrap(), [&b"a"[..], b"b"]);
    assert_eq!(topics(b"   a   b   ").unwrap(), [&b"a"[..], b"b"]);
}

#[test]
fn empty_or_blank_body_is_no_topics() {
    assert_eq!(topics(b"").unwrap(), Vec::<Bytes>::new());
    assert_eq!(topics(b" ").unwrap(), Vec::<Bytes>::new());
    assert_eq!(topics(b"     ").unwrap(), Vec::<Bytes>::new());
}

#[test]
fn only_the_space_byte_separates() {
    // Tabs and UTF-8 are topic bytes.
    assert_eq!(
        topics("a\tb caf\u{e9} \u{1f419}".as_bytes()).unwrap(),
        [&b"a\tb"[..], "caf\u{e9}".as_bytes(), "\u{1f419}".as_bytes()]
    );
    assert_eq!(
        topics(b"\x00\xff \x0b").unwrap(),
        [&b"\x00\xff"[..], b"\x0b"]
    );
}

#[test]
fn topics_with_line_ends_are_bad() {
    for data in [
        &b"a\r\nb"[..],
        b"a\nb",
        b"a\rb",
        b"a b\r\n",
        b"\n",
        b"ok bad\r",
    ] {
        assert_eq!(topics(data), Err(BodyError::BadTopic), "{data:?}");
    }
}

#[test]
fn topic_length_limit_at_its_boundary() {
    let at = vec![b't'; MAX];
    let over = vec![b't'; MAX + 1];
    assert_eq!(topics(&at).unwrap(), [&at[..]]);
    assert_eq!(topics(&over), Err(BodyError::TopicTooLong));
    let mut two = at.clone();
    two.push(b' ');
    two.extend_from_slice(&over);
    assert_eq!(topics(&two), Err(BodyError::TopicTooLong));
}

#[test]
fn topics_are_copied_out_of_the_body_into_one_allocation() {
    // So that a few short topics padded with spaces do not keep the body.
    let data = b(b"alpha  beta gamma");
    let parsed = parse_topics(&data, MAX).unwrap();
    assert_eq!(parsed.len(), 3);
    assert!(parsed.iter().all(|t| !is_slice_of(t, &data)));
    assert_eq!(parsed[0].as_ptr_range().end, parsed[1].as_ptr());
    assert_eq!(parsed[1].as_ptr_range().end, parsed[2].as_ptr());
}

// ---- Publish blocks -------------------------------------------------------------

#[test]
fn one_entry() {
    assert_eq!(
        block(b"MESSAGE a 3\r\nhey\r\n").unwrap(),
        [entry(&[b"a"], b"hey")]
    );
}

#[test]
fn three_entries_in_order() {
    assert_eq!(
        block(b"MESSAGE a 2\r\nm1\r\nMESSAGE zz 2\r\nm2\r\nMESSAGE a 2\r\nm3\r\n").unwrap(),
        [
            entry(&[b"a"], b"m1"),
            entry(&[b"zz"], b"m2"),
            entry(&[b"a"], b"m3")
        ]
    );
}

#[test]
fn empty_block_is_no_entries() {
    assert_eq!(block(b"").unwrap(), []);
}

#[test]
fn several_topics_in_publish_order_and_a_repeated_topic_once() {
    // The original listed a repeated topic twice; here a topic
    // named twice in one entry counts once.
    assert_eq!(
        block(b"MESSAGE c b y 3\r\ncby\r\nMESSAGE b b 2\r\nbb\r\nMESSAGE y x y x z 1\r\n!")
            .unwrap(),
        [
            entry(&[b"c", b"b", b"y"], b"cby"),
            entry(&[b"b"], b"bb"),
            entry(&[b"y", b"x", b"z"], b"!"),
        ]
    );
}

#[test]
fn an_entry_with_too_many_distinct_topics_refuses_the_whole_block() {
    let limits = BodyLimits {
        max_topic_bytes: MAX,
        max_topics_per_message: 2,
    };
    let parse = |data: &[u8]| parse_publish_block(&b(data), &limits);
    assert_eq!(parse(b"MESSAGE a b a b a 1\r\n!").unwrap().len(), 1);
    assert_eq!(
        parse(b"MESSAGE a 1\r\n!\r\nMESSAGE a b c 1\r\n!"),
        Err(BodyError::TooManyTopics)
    );
    // The first bad topic decides: too long before too many, and the other
    // way round.
    let long = format!("MESSAGE a b c {} 1\r\n!", "t".repeat(MAX + 1));
    assert_eq!(parse(long.as_bytes()), Err(BodyError::TooManyTopics));
    // One topic both too long and one too many: its length is checked first.
    let long = format!("MESSAGE a b {} 1\r\n!", "t".repeat(MAX + 1));
    assert_eq!(parse(long.as_bytes()), Err(BodyError::TopicTooLong));
    let long = format!("MESSAGE a {} b c 1\r\n!", "t".repeat(MAX + 1));
    assert_eq!(parse(long.as_bytes()), Err(BodyError::TopicTooLong));
    // Counted before the shape of the rest of the entry.
    assert_eq!(
        parse(b"MESSAGE a b c x\r\n!"),
        Err(BodyError::TooManyTopics)
    );
}

#[test]
fn header_tokens_split_on_runs_of_spaces() {
    assert_eq!(
        block(b"MESSAGE  a   b  3 \r\nhey\r\n").unwrap(),
        [entry(&[b"a", b"b"], b"hey")]
    );
    assert_eq!(
        block(b" MESSAGE a 3\r\nhey\r\n").unwrap(),
        [entry(&[b"a"], b"hey")]
    );
}

#[test]
fn payload_may_hold_line_ends() {
    assert_eq!(
        block(b"MESSAGE a 6\r\nx\r\ny\nz\r\n").unwrap(),
        [entry(&[b"a"], b"x\r\ny\nz")]
    );
}

#[test]
fn empty_payload() {
    assert_eq!(
        block(b"MESSAGE a 0\r\n\r\n").unwrap(),
        [entry(&[b"a"], b"")]
    );
    assert_eq!(block(b"MESSAGE a 0\r\n").unwrap(), [entry(&[b"a"], b"")]);
}

#[test]
fn binary_payload_with_end_and_message_inside() {
    let payload = b"\x00\xff\r\nEND\r\n\nVALUE x\r\nMESSAGE b 1\r\nz\r\n";
    let mut data = format!("MESSAGE a {}\r\n", payload.len()).into_bytes();
    data.extend_from_slice(payload);
    data.extend_from_slice(b"\r\nMESSAGE c 1\r\n!\r\n");
    assert_eq!(
        block(&data).unwrap(),
        [entry(&[b"a"], payload), entry(&[b"c"], b"!")]
    );
}

#[test]
fn one_mib_payload() {
    let payload: Vec<u8> = (0..1u32 << 20).map(|i| (i * 7 % 256) as u8).collect();
    let mut data = format!("MESSAGE big {}\r\n", payload.len()).into_bytes();
    data.extend_from_slice(&payload);
    data.extend_from_slice(b"\r\n");
    let data = b(&data);
    let entries = parse_publish_block(&data, &LIMITS).unwrap();
    assert_eq!(entries, [entry(&[b"big"], &payload)]);
    // Most of the block: kept as a slice of it, not copied.
    assert!(is_slice_of(&entries[0].payload, &data));
}

#[test]
fn last_entry_may_omit_its_crlf() {
    // memcached-value style: the count stops at the last payload byte. The
    // original closed the connection silently.
    assert_eq!(
        block(b"MESSAGE a 3\r\nhey").unwrap(),
        [entry(&[b"a"], b"hey")]
    );
    assert_eq!(
        block(b"MESSAGE a 2\r\nm1\r\nMESSAGE b 2\r\nm2").unwrap(),
        [entry(&[b"a"], b"m1"), entry(&[b"b"], b"m2")]
    );
}

#[test]
fn malformed_blocks_are_refused() {
    for data in [
        // Not starting with MESSAGE.
        &b"hello"[..],
        b"message a 3\r\nhey\r\n",
        b"MESSAGES a 3\r\nhey\r\n",
        b"MESSAGEa 3\r\nhey\r\n",
        b"\r\n",
        b"\r\nMESSAGE a 3\r\nhey\r\n",
        // No topic (the original said STORED and dropped it).
        b"MESSAGE 3\r\nhey\r\n",
        b"MESSAGE\r\n",
        b"MESSAGE a\r\n",
        // Bad lengths.
        b"MESSAGE a x\r\nhey\r\n",
        b"MESSAGE a -3\r\nhey\r\n",
        b"MESSAGE a +3\r\nhey\r\n",
        b"MESSAGE a 3x\r\nhey\r\n",
        b"MESSAGE a 99999999999999999999999\r\nhey\r\n",
        b"MESSAGE a 18446744073709551615\r\nhey\r\n",
        // Length past the end.
        b"MESSAGE a 4\r\nhey",
        b"MESSAGE a 6\r\nhey\r\n",
        b"MESSAGE a 3\r\nhe",
        // Length that does not match: junk after the payload.
        b"MESSAGE a 2\r\nhey\r\n",
        b"MESSAGE a 3\r\nhey\n",
        b"MESSAGE a 3\r\nhey\r",
        b"MESSAGE a 3\r\nheyMESSAGE a 3\r\nhey\r\n",
        b"MESSAGE a 3\r\nhey\r\n\r\n",
        b"MESSAGE a 3\r\nhey\r\njunk",
        // Header without its CRLF.
        b"MESSAGE a 3",
        b"MESSAGE a 3\nhey\r\n",
        // Lone CR or LF inside the header line.
        b"MESSAGE a\nb 3\r\nhey\r\n",
        b"MESSAGE a\rb 3\r\nhey\r\n",
        b"MESSAGE a 3\r\r\nhey\r\n",
    ] {
        assert_eq!(
            block(data),
            Err(BodyError::BadPublishBlock),
            "{:?}",
            String::from_utf8_lossy(data)
        );
    }
}

#[test]
fn one_bad_entry_refuses_the_whole_block() {
    assert_eq!(
        block(b"MESSAGE a 2\r\nm1\r\nMESSAGE b\r\nm2\r\n"),
        Err(BodyError::BadPublishBlock)
    );
    assert_eq!(
        block(b"MESSAGE a 2\r\nm1\r\nMESSAGE b 9\r\nm2\r\n"),
        Err(BodyError::BadPublishBlock)
    );
}

#[test]
fn publish_topic_length_limit_at_its_boundary() {
    let at = "t".repeat(MAX);
    let over = "t".repeat(MAX + 1);
    let ok = format!("MESSAGE x {at} 1\r\n!\r\n");
    assert_eq!(
        block(ok.as_bytes()).unwrap(),
        [entry(&[b"x", at.as_bytes()], b"!")]
    );
    let bad = format!("MESSAGE a 1\r\n!\r\nMESSAGE x {over} 1\r\n!\r\n");
    assert_eq!(block(bad.as_bytes()), Err(BodyError::TopicTooLong));
    // The length token is not a topic: a long one is just a bad length.
    let long_len = format!("MESSAGE a {}1\r\n!\r\n", "0".repeat(MAX + 10));
    assert_eq!(block(long_len.as_bytes()).unwrap(), [entry(&[b"a"], b"!")]);
}

#[test]
fn publish_topics_are_opaque_bytes() {
    assert_eq!(
        block("MESSAGE a\tb caf\u{e9} 1\r\n!\r\n".as_bytes()).unwrap(),
        [entry(&[b"a\tb", "caf\u{e9}".as_bytes()], b"!")]
    );
}

#[test]
fn small_parts_of_a_publish_block_are_copied_out_of_it() {
    // Topics always; payloads under half of the block.
    let data = b(b"MESSAGE a b 3\r\nhey\r\nMESSAGE c 2\r\nyo\r\n");
    let entries = parse_publish_block(&data, &LIMITS).unwrap();
    for e in &entries {
        assert!(!is_slice_of(&e.payload, &data));
        assert!(e.topics.iter().all(|t| !is_slice_of(t, &data)));
    }
}

// ---- Retro bodies ----------------------------------------------------------------

fn rb(horizon_secs: i64, topics: &[&[u8]]) -> RetroBody {
    RetroBody {
        horizon_secs,
        topics: topics.iter().map(|t| b(t)).collect(),
    }
}

#[test]
fn horizon_then_topics() {
    assert_eq!(
        retro(b"1700000000\r\nx").unwrap(),
        rb(1_700_000_000, &[b"x"])
    );
    assert_eq!(
        retro(b"1700000000\r\nb c  a").unwrap(),
        rb(1_700_000_000, &[b"b", b"c", b"a"])
    );
}

#[test]
fn horizon_may_be_zero_or_negative() {
    assert_eq!(retro(b"1\r\na").unwrap(), rb(1, &[b"a"]));
    assert_eq!(retro(b"0\r\na").unwrap(), rb(0, &[b"a"]));
    assert_eq!(retro(b"-5\r\na").unwrap(), rb(-5, &[b"a"]));
    assert_eq!(
        retro(b"-9223372036854775808\r\na").unwrap(),
        rb(i64::MIN, &[b"a"])
    );
    assert_eq!(
        retro(b"9223372036854775807\r\na").unwrap(),
        rb(i64::MAX, &[b"a"])
    );
}

#[test]
fn empty_or_missing_topics() {
    assert_eq!(retro(b"1700000000\r\n").unwrap(), rb(1_700_000_000, &[]));
    // The original closed silently here.
    assert_eq!(retro(b"1700000000").unwrap(), rb(1_700_000_000, &[]));
    assert_eq!(retro(b"1700000000\r\n   ").unwrap(), rb(1_700_000_000, &[]));
}

#[test]
fn a_trailing_crlf_after_the_topics_is_allowed() {
    assert_eq!(retro(b"5\r\na b\r\n").unwrap(), rb(5, &[b"a", b"b"]));
    assert_eq!(retro(b"5\r\n\r\n").unwrap(), rb(5, &[]));
}

#[test]
fn more_lines_are_bad_topics() {
    assert_eq!(retro(b"5\r\nt\r\nu"), Err(BodyError::BadTopic));
    assert_eq!(retro(b"5\r\nt\r\n\r\n"), Err(BodyError::BadTopic));
    assert_eq!(retro(b"5\r\nt\nu"), Err(BodyError::BadTopic));
}

#[test]
fn horizon_is_trimmed_of_spaces() {
    // The original closed silently on a space-padded horizon.
    assert_eq!(retro(b"  42  \r\na").unwrap(), rb(42, &[b"a"]));
    assert_eq!(retro(b" -42\r\na").unwrap(), rb(-42, &[b"a"]));
}

#[test]
fn non_numeric_horizon_is_bad() {
    for data in [
        &b""[..],
        b"\r\na",
        b"   \r\na",
        b"abc\r\na",
        b"12a\r\na",
        b"1 2\r\na",
        b"+5\r\na",
        b"- 5\r\na",
        b"--5\r\na",
        b"1.5\r\na",
        b"9223372036854775808\r\na",
        b"\t5\r\na",
        b"5\na",
        b"5\r",
    ] {
        assert_eq!(
            retro(data),
            Err(BodyError::BadHorizon),
            "{:?}",
            String::from_utf8_lossy(data)
        );
    }
}

#[test]
fn retro_topic_length_limit() {
    let at = format!("7\r\n{}", "t".repeat(MAX));
    let over = format!("7\r\n{}", "t".repeat(MAX + 1));
    assert_eq!(retro(at.as_bytes()).unwrap().topics.len(), 1);
    assert_eq!(retro(over.as_bytes()), Err(BodyError::TopicTooLong));
}

#[test]
fn error_messages() {
    assert_eq!(BodyError::BadPublishBlock.message(), "bad publish block");
    assert_eq!(BodyError::TopicTooLong.message(), "topic too long");
    assert_eq!(BodyError::BadTopic.message(), "bad topic");
    assert_eq!(BodyError::BadHorizon.message(), "bad horizon");
}
