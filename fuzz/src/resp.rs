//! Target `resp`: [`RespCodec`] (the Redis dialect's decoder) on arbitrary
//! bytes in arbitrary chunks, against a reference framer.
//!
//! Input layout: byte 0 is a header; its low 3 bits give `k`, the number of
//! chunk-size bytes that follow (chunk size = byte + 1, cycled over the
//! stream; `k = 0` means one byte at a time), and bits 3–4 choose a second
//! set of limits to run besides [`SMALL`]. Everything after the `k` size
//! bytes is the command stream.
//!
//! Invariants checked for every limits set:
//! - `decode`/`decode_eof` never panic and never return `Err`;
//! - after every `decode` that returns `None`, the buffer holds at most
//!   [`RespLimits::buffer_bound`] bytes;
//! - once a protocol error or `QUIT` has been yielded, nothing more is, and
//!   the buffer is emptied;
//! - the commands are exactly what a small, independent, whole-stream
//!   reference framer written from `resp/codec.rs`'s documentation makes of
//!   the stream (argument lists given to `RespCommand::parse`, or the
//!   protocol error with its reason);
//! - decoded commands respect the limits (channel names valid and within
//!   `max_channel_bytes`, a message within `max_bulk_bytes`, or within
//!   `max_inline_bytes` when it came in an inline line);
//! - the commands do not depend on the chunking: one chunk, the chunking
//!   from the header and (for short inputs) one byte at a time agree;
//! - every argument list the reference framed that an array within the
//!   limits can carry, written back as a canonical array, decodes to the
//!   same command.

use bytes::{Bytes, BytesMut};
use kraken_protocol::resp::{
    check_channel, parse_redis_i64, split_inline, ChannelRules, Reply, RespCodec, RespCommand,
    RespLimits,
};
use tokio_util::codec::Decoder;

use crate::Input;

/// The small limits every input is decoded with.
pub const SMALL: RespLimits = RespLimits {
    max_inline_bytes: 64,
    max_bulk_bytes: 48,
    max_args: 8,
    max_command_bytes: 8 * 40,
    max_channel_bytes: 8,
};

/// The second limits set, chosen by bits 3–4 of the header byte.
const OTHER: [RespLimits; 4] = [
    RespLimits {
        max_inline_bytes: 64 * 1024,
        max_bulk_bytes: 16 * 1024 * 1024,
        max_args: 1024 * 1024,
        max_command_bytes: 32 * 1024 * 1024,
        max_channel_bytes: 1024,
    },
    RespLimits {
        max_inline_bytes: 0,
        max_bulk_bytes: 0,
        max_args: 0,
        max_command_bytes: 0,
        max_channel_bytes: 0,
    },
    RespLimits {
        max_inline_bytes: 7,
        max_bulk_bytes: 3,
        max_args: 2,
        max_command_bytes: 70,
        max_channel_bytes: 1,
    },
    RespLimits {
        max_inline_bytes: 24,
        max_bulk_bytes: usize::MAX,
        max_args: usize::MAX,
        max_command_bytes: usize::MAX,
        max_channel_bytes: usize::MAX,
    },
];

/// Inputs up to this length are also decoded one byte at a time.
const BYTEWISE_MAX: usize = 4096;

/// An input taken apart: chunk sizes, the second limits set, the stream.
#[derive(Debug)]
pub struct Case<'a> {
    pub sizes: Vec<usize>,
    pub chunked: bool,
    pub other: RespLimits,
    pub stream: &'a [u8],
}

impl<'a> Case<'a> {
    pub fn new(data: &'a [u8]) -> Self {
        let mut input = Input::new(data);
        let header = input.byte();
        let k = usize::from(header & 7);
        let sizes: Vec<usize> = if k == 0 {
            vec![1]
        } else {
            input.take(k).iter().map(|&b| usize::from(b) + 1).collect()
        };
        Case {
            sizes,
            chunked: k != 0,
            other: OTHER[usize::from((header >> 3) & 3)],
            stream: input.rest(),
        }
    }
}

pub fn check(data: &[u8]) {
    let Case {
        sizes,
        chunked,
        other,
        stream,
    } = Case::new(data);
    for limits in [SMALL, other] {
        let whole = decode(stream, limits, &[usize::MAX]);
        let framed = reference(stream, limits);
        let expected: Vec<RespCommand> = framed
            .iter()
            .map(|frame| match frame {
                Ok(args) => RespCommand::parse(args.clone(), rules(limits)),
                Err(why) => protocol_error(why),
            })
            .collect();
        assert_eq!(
            whole, expected,
            "decoder vs reference framer with {limits:?}"
        );
        assert_eq!(
            whole,
            decode(stream, limits, &sizes),
            "one chunk and chunks of {sizes:?} disagree with {limits:?}"
        );
        if chunked && stream.len() <= BYTEWISE_MAX {
            assert_eq!(
                whole,
                decode(stream, limits, &[1]),
                "one chunk and one byte at a time disagree with {limits:?}"
            );
        }
        // Inline arguments are bounded by the line, not by the array limits:
        // respell only what an array may carry.
        let fits = |frame: &&Vec<Bytes>| {
            frame.len() <= limits.max_args
                && frame.iter().all(|a| a.len() <= limits.max_bulk_bytes)
                && frame.iter().map(|a| a.len() as u128 + 32).sum::<u128>()
                    <= limits.max_command_bytes as u128
        };
        for frame in framed.iter().flatten().filter(fits) {
            let mut canonical = Vec::new();
            write_array(frame, &mut canonical);
            let again = decode(&canonical, limits, &sizes);
            assert_eq!(
                again,
                [RespCommand::parse(frame.clone(), rules(limits))],
                "canonical array of {frame:?} decodes differently"
            );
        }
    }
}

fn rules(limits: RespLimits) -> ChannelRules {
    ChannelRules {
        max_channel_bytes: limits.max_channel_bytes,
    }
}

fn protocol_error(why: &[u8]) -> RespCommand {
    let mut text = b"ERR Protocol error: ".to_vec();
    text.extend_from_slice(why);
    RespCommand::ProtocolError(Reply::error(text))
}

/// `*<n>\r\n` then each argument as a bulk string.
pub fn write_array(args: &[Bytes], out: &mut Vec<u8>) {
    out.extend_from_slice(format!("*{}\r\n", args.len()).as_bytes());
    for arg in args {
        out.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
        out.extend_from_slice(arg);
        out.extend_from_slice(b"\r\n");
    }
}

/// What a decoded command must respect.
fn check_command(command: &RespCommand, limits: RespLimits) {
    let rules = rules(limits);
    let valid = |channel: &Bytes| {
        assert!(
            check_channel(channel, rules).is_ok(),
            "invalid channel {channel:?} accepted with {limits:?}"
        )
    };
    match command {
        RespCommand::Subscribe(channels) | RespCommand::KrakenRetroSubscribe { channels, .. } => {
            assert!(!channels.is_empty());
            channels.iter().for_each(valid);
        }
        RespCommand::Publish { channel, message } => {
            valid(channel);
            // An inline message is bounded by the line, an array's by the
            // bulk limit.
            assert!(message.len() <= limits.max_bulk_bytes.max(limits.max_inline_bytes));
        }
        RespCommand::ProtocolError(Reply::Error(text))
        | RespCommand::Refused(Reply::Error(text))
        | RespCommand::Unknown {
            reply: Reply::Error(text),
            ..
        } => assert!(
            !text.iter().any(|&b| b == b'\r' || b == b'\n'),
            "error text breaks the framing: {text:?}"
        ),
        RespCommand::ProtocolError(other)
        | RespCommand::Refused(other)
        | RespCommand::Unknown { reply: other, .. } => panic!("not an error reply: {other:?}"),
        _ => {}
    }
}

/// Feeds `stream` to a fresh decoder in chunks of `sizes` (cycled),
/// draining it after each chunk, checking the invariants as it goes.
pub fn decode(stream: &[u8], limits: RespLimits, sizes: &[usize]) -> Vec<RespCommand> {
    let bound = limits.buffer_bound();
    let mut codec = RespCodec::new(limits);
    let mut buf = BytesMut::new();
    let mut out: Vec<RespCommand> = Vec::new();
    let mut closed = false;
    let mut rest = stream;
    let mut sizes = sizes.iter().copied().cycle();

    let mut take = |command: RespCommand, out: &mut Vec<RespCommand>| {
        assert!(
            !closed,
            "decoder yielded {command:?} after {:?}",
            out.last()
        );
        check_command(&command, limits);
        closed = matches!(command, RespCommand::Quit | RespCommand::ProtocolError(_));
        out.push(command);
        closed
    };

    while !rest.is_empty() {
        let n = sizes.next().unwrap_or(usize::MAX).clamp(1, rest.len());
        buf.extend_from_slice(&rest[..n]);
        rest = &rest[n..];
        let mut now_closed = false;
        loop {
            match codec.decode(&mut buf) {
                Ok(Some(command)) => now_closed = take(command, &mut out),
                Ok(None) => break,
                Err(e) => panic!("decode returned an error: {e}"),
            }
        }
        assert!(
            buf.len() <= bound,
            "decoder holds {} bytes, bound {bound} for {limits:?}",
            buf.len()
        );
        if now_closed || out.last().is_some_and(is_closing) {
            assert!(buf.is_empty(), "closed decoder kept {} bytes", buf.len());
        }
    }
    loop {
        match codec.decode_eof(&mut buf) {
            Ok(Some(command)) => {
                take(command, &mut out);
            }
            Ok(None) => break,
            Err(e) => panic!("decode_eof returned an error: {e}"),
        }
    }
    assert!(buf.is_empty(), "decode_eof left {} bytes", buf.len());
    out
}

fn is_closing(command: &RespCommand) -> bool {
    matches!(command, RespCommand::Quit | RespCommand::ProtocolError(_))
}

// ---- Reference framer, written from codec.rs's documentation ------------------------

/// One framed command: its arguments, or the protocol error's reason.
type Frame = Result<Vec<Bytes>, Vec<u8>>;

/// Frames the whole `stream` at once (a command cut short by the end of the
/// stream is dropped). Stops after a protocol error or `QUIT`.
pub fn reference(stream: &[u8], limits: RespLimits) -> Vec<Frame> {
    let mut frames = Vec::new();
    let mut pos = 0;
    while pos < stream.len() {
        let step = if stream[pos] == b'*' {
            ref_array(stream, &mut pos, limits)
        } else {
            ref_inline(stream, &mut pos, limits)
        };
        match step {
            Step::Partial => break,
            Step::Skip => {}
            Step::Frame(Err(why)) => {
                frames.push(Err(why));
                break;
            }
            Step::Frame(Ok(args)) => {
                let quit = RespCommand::parse(args.clone(), rules(limits)) == RespCommand::Quit;
                frames.push(Ok(args));
                if quit {
                    break;
                }
            }
        }
    }
    frames
}

enum Step {
    /// The stream ends inside this command.
    Partial,
    /// A command without arguments: no answer.
    Skip,
    Frame(Frame),
}

/// A `*`/`$` header at `pos`: its number and the index after its CR LF.
fn ref_header(
    s: &[u8],
    pos: usize,
    too_big: &str,
    invalid: &str,
) -> Result<Option<(i64, usize)>, Vec<u8>> {
    // The marker, at most 20 characters, then CR.
    let window_end = s.len().min(pos + 22);
    let Some(cr) = (pos..window_end).find(|&i| s[i] == b'\r') else {
        return if s.len() - pos > 21 {
            Err(too_big.into())
        } else {
            Ok(None)
        };
    };
    if cr + 1 >= s.len() {
        return Ok(None);
    }
    if s[cr + 1] != b'\n' {
        return Err(invalid.into());
    }
    match parse_redis_i64(&s[pos + 1..cr]) {
        Some(n) => Ok(Some((n, cr + 2))),
        None => Err(invalid.into()),
    }
}

fn ref_array(s: &[u8], pos: &mut usize, limits: RespLimits) -> Step {
    const MB: &str = "invalid multibulk length";
    const B: &str = "invalid bulk length";
    let (n, mut p) = match ref_header(s, *pos, "too big mbulk count string", MB) {
        Err(why) => return Step::Frame(Err(why)),
        Ok(None) => return Step::Partial,
        Ok(Some(h)) => h,
    };
    if n <= 0 {
        *pos = p;
        return Step::Skip;
    }
    if n as u64 > limits.max_args as u64 || n > i64::from(i32::MAX) {
        return Step::Frame(Err(MB.into()));
    }
    let mut args = Vec::new();
    let mut charged: u128 = 0;
    for _ in 0..n {
        let Some(&marker) = s.get(p) else {
            return Step::Partial;
        };
        if marker != b'$' {
            let mut why = b"expected '$', got '".to_vec();
            why.push(marker);
            why.push(b'\'');
            return Step::Frame(Err(why));
        }
        let (len, q) = match ref_header(s, p, "too big bulk count string", B) {
            Err(why) => return Step::Frame(Err(why)),
            Ok(None) => return Step::Partial,
            Ok(Some(h)) => h,
        };
        if len < 0 || len as u64 > limits.max_bulk_bytes as u64 {
            return Step::Frame(Err(B.into()));
        }
        let len = len as usize;
        charged += len as u128 + 32;
        if charged > limits.max_command_bytes as u128 {
            return Step::Frame(Err("too big command".into()));
        }
        if s.len() - q < len + 2 {
            return Step::Partial;
        }
        if &s[q + len..q + len + 2] != b"\r\n" {
            return Step::Frame(Err("expected CRLF after bulk string".into()));
        }
        args.push(Bytes::copy_from_slice(&s[q..q + len]));
        p = q + len + 2;
    }
    *pos = p;
    Step::Frame(Ok(args))
}

fn ref_inline(s: &[u8], pos: &mut usize, limits: RespLimits) -> Step {
    let max = limits.max_inline_bytes;
    let rest = &s[*pos..];
    let Some(lf) = rest.iter().position(|&b| b == b'\n') else {
        let waiting_for_lf_after_cr =
            rest.len() == max.saturating_add(1) && rest.last() == Some(&b'\r');
        return if rest.len() > max && !waiting_for_lf_after_cr {
            Step::Frame(Err("too big inline request".into()))
        } else {
            Step::Partial
        };
    };
    let line = match rest[..lf].strip_suffix(b"\r") {
        Some(line) => line,
        None => &rest[..lf],
    };
    if line.len() > max {
        return Step::Frame(Err("too big inline request".into()));
    }
    *pos += lf + 1;
    match split_inline(line) {
        Err(_) => Step::Frame(Err("unbalanced quotes in request".into())),
        Ok(args) if args.is_empty() => Step::Skip,
        Ok(args) => Step::Frame(Ok(args)),
    }
}
