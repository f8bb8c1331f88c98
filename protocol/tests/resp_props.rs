//! Property tests of the RESP decoder: random bytes in random chunkings
//! never panic and stay within the documented buffer bound; announced
//! lengths are never reserved; commands written as arrays or as quoted
//! inline lines decode back to what their arguments parse to; the limits
//! hold at their boundaries.

mod resp_common;

use bytes::{Bytes, BytesMut};
use kraken_protocol::resp::{ChannelRules, Reply, RespCodec, RespCommand, RespLimits};
use proptest::prelude::*;
use proptest::sample::select;
use resp_common::*;
use tokio_util::codec::Decoder;

const SMALL: RespLimits = RespLimits {
    max_inline_bytes: 40,
    max_bulk_bytes: 32,
    max_args: 6,
    max_command_bytes: 6 * 32 + 64,
    max_channel_bytes: 8,
};

fn chunk_sizes() -> impl Strategy<Value = Vec<usize>> {
    proptest::collection::vec(1usize..100, 1..20)
}

/// Fragments of real commands, numbers around the limits, line ends, noise.
fn plausible_stream() -> impl Strategy<Value = Vec<u8>> {
    let fragment = prop_oneof![
        select(vec![
            &b"*"[..],
            b"$",
            b"*1\r\n$4\r\nPING\r\n",
            b"*3\r\n$7\r\nPUBLISH\r\n$1\r\na\r\n$2\r\nhi\r\n",
            b"SUBSCRIBE a b\r\n",
            b"UNSUBSCRIBE\r\n",
            b"PUBLISH ",
            b"HELLO 3\r\n",
            b"QUIT\r\n",
            b"KRAKEN.RETROSUBSCRIBE ",
            b"\"",
            b"'",
            b"\\x4",
            b"\\",
            b"0",
            b"1",
            b"2",
            b"-1",
            b"6",
            b"7",
            b"32",
            b"33",
            b"4294967296",
            b"99999999999999999999999",
            b"\r\n",
            b"\r",
            b"\n",
            b" ",
            b"\x00",
        ])
        .prop_map(|f| f.to_vec()),
        proptest::collection::vec(any::<u8>(), 0..50),
    ];
    proptest::collection::vec(fragment, 0..40).prop_map(|parts| parts.concat())
}

/// Arguments of one command: a name often known, then random arguments.
fn command_args() -> impl Strategy<Value = Vec<Vec<u8>>> {
    let name = prop_oneof![
        select(vec![
            "SUBSCRIBE",
            "unsubscribe",
            "PUBLISH",
            "ping",
            "HELLO",
            "client",
            "PUBSUB",
            "KRAKEN.RETROSUBSCRIBE",
            "kraken.register",
            "PSUBSCRIBE",
            "INFO",
            "COMMAND",
            "RESET",
            "FOO",
        ])
        .prop_map(|n| n.as_bytes().to_vec()),
        proptest::collection::vec(any::<u8>(), 0..6),
    ];
    let arg = prop_oneof![
        select(vec![
            "a", "b", "3", "2", "SETNAME", "AUTH", "CHANNELS", "ID", "x y", ""
        ])
        .prop_map(|a| a.as_bytes().to_vec()),
        proptest::collection::vec(any::<u8>(), 0..20),
    ];
    (name, proptest::collection::vec(arg, 0..5)).prop_map(|(name, mut args)| {
        args.insert(0, name);
        args
    })
}

/// `*<n>\r\n$<len>\r\n<arg>\r\n...`
fn write_array(args: &[Vec<u8>], out: &mut Vec<u8>) {
    out.extend_from_slice(format!("*{}\r\n", args.len()).as_bytes());
    for arg in args {
        out.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
        out.extend_from_slice(arg);
        out.extend_from_slice(b"\r\n");
    }
}

/// An inline line with every argument double-quoted, every byte that is not
/// printable ASCII (and `"`, `\`) written as `\xHH`.
fn write_inline(args: &[Vec<u8>], out: &mut Vec<u8>) {
    for (i, arg) in args.iter().enumerate() {
        if i > 0 {
            out.push(b' ');
        }
        out.push(b'"');
        for &b in arg {
            if (b.is_ascii_graphic() && b != b'"' && b != b'\\') || b == b' ' {
                out.push(b);
            } else {
                out.extend_from_slice(format!("\\x{b:02x}").as_bytes());
            }
        }
        out.push(b'"');
    }
    out.extend_from_slice(b"\r\n");
}

fn parse(args: &[Vec<u8>], limits: RespLimits) -> RespCommand {
    RespCommand::parse(
        args.iter().map(|a| Bytes::copy_from_slice(a)).collect(),
        ChannelRules {
            max_channel_bytes: limits.max_channel_bytes,
        },
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Random bytes in random chunkings: no panic, no error, bounded
    /// (checked in `decode_chunked` after every step), the same result
    /// whatever the chunking, nothing after a closing command.
    #[test]
    fn random_bytes_never_panic_and_stay_bounded(
        input in proptest::collection::vec(any::<u8>(), 0..600),
        sizes in chunk_sizes(),
    ) {
        let whole = decode_chunked(&input, SMALL, &[usize::MAX]);
        prop_assert_eq!(decode_chunked(&input, SMALL, &sizes), whole);
        decode_chunked(&input, RespLimits::default(), &sizes);
    }

    #[test]
    fn plausible_streams_never_panic_and_stay_bounded(
        input in plausible_stream(),
        sizes in chunk_sizes(),
    ) {
        let whole = decode_chunked(&input, SMALL, &[usize::MAX]);
        prop_assert_eq!(&decode_chunked(&input, SMALL, &sizes), &whole);
        prop_assert_eq!(&decode_chunked(&input, SMALL, &[1]), &whole);
        for command in &whole {
            match command {
                RespCommand::Publish { channel, message } => {
                    prop_assert!(channel.len() <= SMALL.max_channel_bytes);
                    // Inline arguments are bounded by the line.
                    prop_assert!(
                        message.len() <= SMALL.max_bulk_bytes.max(SMALL.max_inline_bytes)
                    );
                }
                RespCommand::ProtocolError(Reply::Error(text)) => {
                    prop_assert!(text.starts_with(b"ERR Protocol error: "));
                }
                RespCommand::ProtocolError(other) => prop_assert!(false, "{other:?}"),
                _ => {}
            }
        }
    }

    /// Huge announced counts and lengths arriving piecemeal never make the
    /// decoder reserve more than about twice what it was sent.
    #[test]
    fn announced_lengths_are_not_reserved(
        count in 1i64..(1 << 30),
        len in 0usize..(1 << 40),
        body in proptest::collection::vec(any::<u8>(), 0..2000),
        sizes in chunk_sizes(),
    ) {
        let mut codec = RespCodec::new(RespLimits {
            max_bulk_bytes: usize::MAX,
            max_args: usize::MAX,
            max_command_bytes: usize::MAX,
            ..RespLimits::default()
        });
        let mut buf = BytesMut::new();
        let mut input = format!("*{count}\r\n${len}\r\n").into_bytes();
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

    /// Commands written as arrays, then split at random points, decode to
    /// what their arguments parse to; the same commands written as quoted
    /// inline lines decode the same.
    #[test]
    fn commands_round_trip(
        commands in proptest::collection::vec(command_args(), 0..10),
        sizes in chunk_sizes(),
    ) {
        let limits = RespLimits { max_channel_bytes: 8, ..RespLimits::default() };
        let mut array = Vec::new();
        let mut inline = Vec::new();
        let mut expected = Vec::new();
        for args in &commands {
            let command = parse(args, limits);
            let quit = command == RespCommand::Quit;
            write_array(args, &mut array);
            write_inline(args, &mut inline);
            expected.push(command);
            if quit {
                break;
            }
        }
        prop_assert_eq!(&decode_chunked(&array, limits, &sizes), &expected);
        prop_assert_eq!(&decode_chunked(&array, limits, &[1]), &expected);
        prop_assert_eq!(&decode_chunked(&inline, limits, &sizes), &expected);
    }
}

// ---- Limits at their boundaries ---------------------------------------------------

fn protocol_error(why: &str) -> RespCommand {
    RespCommand::ProtocolError(Reply::error(format!("ERR Protocol error: {why}")))
}

fn ping_array(message: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    write_array(&[b"PING".to_vec(), message.to_vec()], &mut out);
    out
}

#[test]
fn bulk_at_the_limit_is_accepted_one_more_is_refused() {
    let limits = RespLimits {
        max_bulk_bytes: 10,
        ..RespLimits::default()
    };
    let at = [b'x'; 10];
    assert_eq!(
        decode_every_way(&ping_array(&at), limits),
        [RespCommand::Ping(Some(Bytes::copy_from_slice(&at)))]
    );
    assert_eq!(
        decode_every_way(&ping_array(&[b'x'; 11]), limits),
        [protocol_error("invalid bulk length")]
    );
}

#[test]
fn arrays_at_the_limit_are_accepted_one_more_is_refused() {
    let limits = RespLimits {
        max_args: 3,
        ..RespLimits::default()
    };
    let mut at = Vec::new();
    write_array(
        &[b"SUBSCRIBE".to_vec(), b"a".to_vec(), b"b".to_vec()],
        &mut at,
    );
    assert_eq!(
        decode_every_way(&at, limits),
        [RespCommand::Subscribe(bs(&["a", "b"]))]
    );
    assert_eq!(
        decode_every_way(b"*4\r\n", limits),
        [protocol_error("invalid multibulk length")]
    );
}

#[test]
fn a_command_over_its_byte_budget_is_refused() {
    // PING (4 + 32) and a 10-byte message (10 + 32): 78 bytes.
    let at = RespLimits {
        max_command_bytes: 78,
        ..RespLimits::default()
    };
    let over = RespLimits {
        max_command_bytes: 77,
        ..RespLimits::default()
    };
    let wire = ping_array(&[b'm'; 10]);
    assert!(matches!(
        &decode_every_way(&wire, at)[..],
        [RespCommand::Ping(Some(_))]
    ));
    assert_eq!(
        decode_every_way(&wire, over),
        [protocol_error("too big command")]
    );
}

#[test]
fn inline_line_at_the_limit_even_with_its_cr_apart() {
    let limits = RespLimits {
        max_inline_bytes: 10,
        ..RespLimits::default()
    };
    // "PING hello" is exactly 10 bytes.
    assert_eq!(
        decode_every_way(b"PING hello\r\nPING\r\n", limits),
        [RespCommand::Ping(Some(b("hello"))), RespCommand::Ping(None)]
    );
    assert_eq!(
        decode_chunked(b"PING hello\r\nPING\r\n", limits, &[11, 1]),
        [RespCommand::Ping(Some(b("hello"))), RespCommand::Ping(None)]
    );
    assert_eq!(
        decode_every_way(b"PING hello!\r\n", limits),
        [protocol_error("too big inline request")]
    );
    assert_eq!(
        decode_every_way(b"PING hello!", limits),
        [protocol_error("too big inline request")]
    );
}

#[test]
fn bulk_not_followed_by_crlf_closes() {
    assert_eq!(
        d(b"*1\r\n$3\r\nPINGxx"),
        [protocol_error("expected CRLF after bulk string")]
    );
}

#[test]
fn nothing_is_decoded_after_quit_or_a_protocol_error() {
    assert_eq!(d(b"QUIT\r\nPING\r\n"), [RespCommand::Quit]);
    assert_eq!(
        d(b"PING\r\n*x\r\nPING\r\n"),
        [
            RespCommand::Ping(None),
            protocol_error("invalid multibulk length")
        ]
    );
}

#[test]
fn a_command_cut_short_at_end_of_stream_is_dropped() {
    assert_eq!(d(b"PING"), []);
    assert_eq!(d(b"*2\r\n$4\r\nPING\r\n$2\r\nh"), []);
}

/// Small arguments are copied out of the read buffer, so that what is kept
/// of them (a subscribed channel's name) does not keep the buffer alive and
/// the next read reuses it in place; a large one is taken out of it
/// without a copy.
#[test]
fn small_arguments_leave_the_read_buffer_reusable() {
    let mut codec = RespCodec::new(RespLimits::default());
    let mut buf = BytesMut::with_capacity(4096);
    let start = buf.as_ptr() as usize;
    let within = |p: *const u8| (start..start + 4096).contains(&(p as usize));
    let payload = [b'x'; 64];
    for _ in 0..16 {
        buf.extend_from_slice(b"*3\r\n$7\r\nPUBLISH\r\n$4\r\nnews\r\n$64\r\n");
        buf.extend_from_slice(&payload);
        buf.extend_from_slice(b"\r\n");
    }
    // The channel name ends the buffer, where a slice would be most of
    // what is left of it.
    buf.extend_from_slice(b"*2\r\n$9\r\nSUBSCRIBE\r\n$4\r\nlast\r\n");
    let mut held = Vec::new();
    while let Some(command) = codec.decode(&mut buf).unwrap() {
        held.push(command);
    }
    assert_eq!((held.len(), buf.len()), (17, 0));
    for command in &held {
        match command {
            RespCommand::Publish { channel, message } => {
                assert_eq!((&channel[..], &message[..]), (&b"news"[..], &payload[..]));
                assert!(!within(channel.as_ptr()) && !within(message.as_ptr()));
            }
            RespCommand::Subscribe(channels) => {
                assert_eq!(channels, &[Bytes::from_static(b"last")]);
                assert!(!within(channels[0].as_ptr()));
            }
            other => panic!("decoded {other:?}"),
        }
    }
    // With the commands still held, the whole allocation comes back for
    // the next read without a new one.
    buf.reserve(4000);
    assert_eq!(buf.as_ptr() as usize, start, "the read buffer was shared");

    let mut buf = BytesMut::with_capacity(4096);
    let start = buf.as_ptr() as usize;
    let big = vec![b'y'; 3000];
    buf.extend_from_slice(b"*3\r\n$7\r\nPUBLISH\r\n$4\r\nnews\r\n$3000\r\n");
    buf.extend_from_slice(&big);
    buf.extend_from_slice(b"\r\n");
    let Some(RespCommand::Publish { message, .. }) = codec.decode(&mut buf).unwrap() else {
        panic!("no publish");
    };
    assert_eq!(&message[..], &big[..]);
    let at = message.as_ptr() as usize;
    assert!(
        (start..start + 4096).contains(&at),
        "a large argument was copied"
    );
}
