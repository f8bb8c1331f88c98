//! Target `decoder`: [`KrakenCodec`] on arbitrary bytes in arbitrary chunks.
//!
//! Input layout: byte 0 is a header; its low 3 bits give `k`, the number of
//! chunk-size bytes that follow (chunk size = byte + 1, cycled over the
//! stream; `k = 0` means one byte at a time), and bits 3–4 choose a second
//! set of limits to run besides [`SMALL`]. Everything after the `k` size
//! bytes is the request stream.
//!
//! Invariants checked for every limits set:
//! - `decode`/`decode_eof` never panic and never return `Err`;
//! - after every `decode` that returns `None`, the decoder's buffer holds at
//!   most `max(max_line_bytes, max_request_bytes) + 2` bytes (the bound
//!   codec.rs documents, tighter than `max_line + max_request + const`);
//! - once a closing rejection or `quit` has been yielded, nothing more is,
//!   whatever bytes follow, and the buffer is emptied;
//! - every yielded `set` block respects `max_request_bytes`, every rejection
//!   is one of the four the codec knows, and only "data block too large"
//!   keeps the connection open (but not when it is the
//!   `MAX_CONSECUTIVE_REFUSALS`th in a row);
//! - the requests do not depend on the chunking: one chunk, the chunking
//!   from the header, and (for short inputs) one byte at a time agree;
//! - with [`SMALL`] limits, writing the decoded requests back out in a
//!   canonical spelling and decoding that gives the same requests again.

use std::borrow::Cow;

use bytes::BytesMut;
use kraken_protocol::{KrakenCodec, Limits, Rejection, Request, Response};
use tokio_util::codec::Decoder;

use crate::Input;

/// The small limits every input is decoded with.
pub const SMALL: Limits = Limits {
    max_line_bytes: 64,
    max_request_bytes: 256,
};

/// The second limits set, chosen by bits 3–4 of the header byte.
const OTHER: [Limits; 4] = [
    Limits {
        max_line_bytes: 2048,
        max_request_bytes: 16 * 1024 * 1024,
    },
    Limits {
        max_line_bytes: 0,
        max_request_bytes: 0,
    },
    Limits {
        max_line_bytes: 7,
        max_request_bytes: 3,
    },
    Limits {
        max_line_bytes: 24,
        max_request_bytes: usize::MAX,
    },
];

/// Inputs up to this length are also decoded one byte at a time.
const BYTEWISE_MAX: usize = 4096;

/// An input taken apart: chunk sizes, the second limits set, the stream.
#[derive(Debug)]
pub struct Case<'a> {
    /// Chunk sizes, cycled; `[1]` when the header asks for none.
    pub sizes: Vec<usize>,
    /// Whether the header gave chunk sizes (else the stream goes bytewise).
    pub chunked: bool,
    /// The limits run besides [`SMALL`].
    pub other: Limits,
    /// The request stream.
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
        let pieces = decode(stream, limits, &sizes);
        assert_eq!(
            whole, pieces,
            "one chunk and chunks of {sizes:?} disagree with {limits:?}"
        );
        if chunked && stream.len() <= BYTEWISE_MAX {
            assert_eq!(
                whole,
                decode(stream, limits, &[1]),
                "one chunk and one byte at a time disagree with {limits:?}"
            );
        }
        if limits == SMALL {
            let again = decode(&canonical(&whole, limits), limits, &sizes);
            assert_eq!(whole, again, "canonical respelling decodes differently");
        }
    }
}

/// Whether the decoder must go quiet after `request`.
fn is_closing(request: &Request) -> bool {
    matches!(
        request,
        Request::Quit | Request::Invalid(Rejection { close: true, .. })
    )
}

/// What the codec may say about a request it refuses.
fn check_rejection(rejection: &Rejection) {
    match (&rejection.reply, rejection.close) {
        (Response::Error, true) => {}
        (Response::ClientError(why), close) => match (why.as_ref(), close) {
            ("line too long", true) | ("bad data chunk", true) => {}
            ("data block too large", _) => {}
            other => panic!("unexpected client error {other:?}"),
        },
        other => panic!("unexpected rejection {other:?}"),
    }
}

/// Feeds `stream` to a fresh decoder in chunks of `sizes` (cycled), draining
/// it after each chunk, checking the invariants as it goes.
pub fn decode(stream: &[u8], limits: Limits, sizes: &[usize]) -> Vec<Request> {
    let bound = limits
        .max_line_bytes
        .max(limits.max_request_bytes)
        .saturating_add(2);
    let mut codec = KrakenCodec::new(limits);
    let mut buf = BytesMut::new();
    let mut out: Vec<Request> = Vec::new();
    let mut closed = false;
    let mut rest = stream;
    let mut sizes = sizes.iter().copied().cycle();

    let take = |request: Request, out: &mut Vec<Request>, closed: &mut bool| {
        assert!(
            !*closed,
            "decoder yielded {request:?} after the closing {:?}",
            out.last()
        );
        match &request {
            Request::Set { data, .. } => assert!(
                data.len() <= limits.max_request_bytes,
                "set block of {} bytes over the limit {}",
                data.len(),
                limits.max_request_bytes
            ),
            Request::Invalid(rejection) => check_rejection(rejection),
            _ => {}
        }
        *closed = is_closing(&request);
        out.push(request);
    };

    while !rest.is_empty() {
        let n = sizes.next().unwrap_or(usize::MAX).clamp(1, rest.len());
        buf.extend_from_slice(&rest[..n]);
        rest = &rest[n..];
        loop {
            match codec.decode(&mut buf) {
                Ok(Some(request)) => take(request, &mut out, &mut closed),
                Ok(None) => break,
                Err(e) => panic!("decode returned an error: {e}"),
            }
        }
        assert!(
            buf.len() <= bound,
            "decoder holds {} bytes, bound {bound} for {limits:?}",
            buf.len()
        );
        if closed {
            assert!(buf.is_empty(), "closed decoder kept {} bytes", buf.len());
        }
    }
    loop {
        match codec.decode_eof(&mut buf) {
            Ok(Some(request)) => take(request, &mut out, &mut closed),
            Ok(None) => break,
            Err(e) => panic!("decode_eof returned an error: {e}"),
        }
    }
    assert!(buf.is_empty(), "decode_eof left {} bytes", buf.len());
    assert!(
        matches!(codec.decode_eof(&mut buf), Ok(None)),
        "decode_eof yielded again after None"
    );
    out
}

/// A canonical byte stream that decodes (with `limits`) to `requests`,
/// which must be what a decoder with `limits` yielded.
fn canonical(requests: &[Request], limits: Limits) -> Vec<u8> {
    let mut out = Vec::new();
    for request in requests {
        match request {
            Request::Set { key, data, noreply } => {
                let noreply = if *noreply { " noreply" } else { "" };
                let line = format!("set {} 0 0 {}{noreply}\r\n", key.as_str(), data.len());
                out.extend_from_slice(line.as_bytes());
                out.extend_from_slice(data);
                out.extend_from_slice(b"\r\n");
            }
            Request::GetMessages => out.extend_from_slice(b"get messages\r\n"),
            Request::Quit => out.extend_from_slice(b"quit\r\n"),
            Request::Stats => out.extend_from_slice(b"stats\r\n"),
            Request::Version => out.extend_from_slice(b"version\r\n"),
            Request::Invalid(Rejection { reply, .. }) => match reply {
                Response::Error => out.extend_from_slice(b"\r\n"),
                Response::ClientError(Cow::Borrowed("line too long")) => {
                    out.resize(out.len() + limits.max_line_bytes + 1, b'x');
                    out.extend_from_slice(b"\r\n");
                }
                Response::ClientError(Cow::Borrowed("bad data chunk")) => {
                    out.extend_from_slice(b"set register 0 0 0\r\nxx");
                }
                Response::ClientError(Cow::Borrowed("data block too large")) => {
                    let n = limits.max_request_bytes + 1;
                    out.extend_from_slice(format!("set publish 0 0 {n}\r\n").as_bytes());
                    out.resize(out.len() + n, b'x');
                    out.extend_from_slice(b"\r\n");
                }
                other => unreachable!("rejection already checked: {other:?}"),
            },
        }
    }
    out
}
