//! Helpers shared by the integration tests: feed bytes to a decoder the way a
//! socket would, in chunks, and collect what it yields.

#![allow(dead_code)] // Each test binary uses a different subset.

use std::borrow::Cow;

use bytes::{Bytes, BytesMut};
use kraken_protocol::{KrakenCodec, Limits, Rejection, Request, Response, SetKey};
use tokio_util::codec::{Decoder, Encoder};

/// Feeds `input` to a fresh decoder in pieces of the given sizes (cycled),
/// draining the decoder after each piece, then signals end of stream.
/// Also checks after every step that the decoder holds no more than `bound`
/// bytes.
pub fn decode_chunked(input: &[u8], limits: Limits, sizes: &[usize]) -> Vec<Request> {
    let mut codec = KrakenCodec::new(limits);
    let mut buf = BytesMut::new();
    let mut out = Vec::new();
    let mut rest = input;
    let mut sizes = sizes.iter().copied().filter(|&s| s > 0).cycle();
    let bound = buffer_bound(limits);
    while !rest.is_empty() {
        let n = sizes.next().unwrap_or(rest.len()).min(rest.len());
        buf.extend_from_slice(&rest[..n]);
        rest = &rest[n..];
        while let Some(request) = codec.decode(&mut buf).expect("decode never errors") {
            out.push(request);
        }
        assert!(
            buf.len() <= bound,
            "decoder holds {} bytes (bound {bound})",
            buf.len()
        );
    }
    while let Some(request) = codec.decode_eof(&mut buf).expect("decode_eof never errors") {
        out.push(request);
    }
    out
}

/// The most a decoder with `limits` may hold between calls.
pub fn buffer_bound(limits: Limits) -> usize {
    limits.max_line_bytes.max(limits.max_request_bytes) + 2
}

/// Decodes `input` delivered in one piece.
pub fn decode(input: &[u8]) -> Vec<Request> {
    decode_chunked(input, Limits::default(), &[usize::MAX])
}

/// Decodes `input` delivered one byte at a time.
pub fn decode_bytewise(input: &[u8]) -> Vec<Request> {
    decode_chunked(input, Limits::default(), &[1])
}

/// Decodes `input` whole, byte by byte, and in 2- and 3-byte pieces, checks
/// that all agree, and returns the result.
pub fn decode_every_way(input: &[u8], limits: Limits) -> Vec<Request> {
    let whole = decode_chunked(input, limits, &[usize::MAX]);
    for sizes in [&[1][..], &[2], &[3], &[1, 2, 3], &[7, 1]] {
        assert_eq!(
            decode_chunked(input, limits, sizes),
            whole,
            "chunked {sizes:?}: {:?}",
            String::from_utf8_lossy(input)
        );
    }
    whole
}

/// A well-formed `set`.
pub fn set(key: SetKey, data: &[u8]) -> Request {
    Request::Set {
        key,
        data: Bytes::copy_from_slice(data),
        noreply: false,
    }
}

/// `ERROR`, then close.
pub fn error_close() -> Request {
    Request::Invalid(Rejection {
        reply: Response::Error,
        close: true,
    })
}

/// `CLIENT_ERROR <why>`, closing or not.
pub fn client_error(why: &'static str, close: bool) -> Request {
    Request::Invalid(Rejection {
        reply: Response::ClientError(Cow::Borrowed(why)),
        close,
    })
}

/// The bytes the encoder writes for `response`.
pub fn encode(response: Response) -> Vec<u8> {
    let mut codec = KrakenCodec::new(Limits::default());
    let mut dst = BytesMut::new();
    codec
        .encode(response, &mut dst)
        .expect("encode never errors");
    dst.to_vec()
}
