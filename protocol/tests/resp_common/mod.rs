//! Helpers shared by the RESP tests: feed bytes to a [`RespCodec`] the way a
//! socket would, in chunks, and collect what it yields.

#![allow(dead_code)] // Each test binary uses a different subset.

use bytes::{Bytes, BytesMut};
use kraken_protocol::resp::{Protocol, Reply, RespCodec, RespCommand, RespLimits};
use tokio_util::codec::Decoder;

/// Feeds `input` to a fresh decoder in pieces of the given sizes (cycled),
/// draining it after each piece, then signals end of stream. Checks after
/// every step that the buffer stays within the documented bound, and that
/// nothing follows a protocol error or QUIT.
pub fn decode_chunked(input: &[u8], limits: RespLimits, sizes: &[usize]) -> Vec<RespCommand> {
    let mut codec = RespCodec::new(limits);
    let mut buf = BytesMut::new();
    let mut out = Vec::new();
    let mut rest = input;
    let mut sizes = sizes.iter().copied().filter(|&s| s > 0).cycle();
    let bound = limits.buffer_bound();
    while !rest.is_empty() {
        let n = sizes.next().unwrap_or(rest.len()).min(rest.len());
        buf.extend_from_slice(&rest[..n]);
        rest = &rest[n..];
        while let Some(command) = codec.decode(&mut buf).expect("decode never errors") {
            out.push(command);
        }
        assert!(
            buf.len() <= bound,
            "decoder holds {} bytes (bound {bound})",
            buf.len()
        );
    }
    while let Some(command) = codec.decode_eof(&mut buf).expect("decode_eof never errors") {
        out.push(command);
    }
    assert!(buf.is_empty(), "decode_eof left {} bytes", buf.len());
    if let Some(i) = out.iter().position(is_closing) {
        assert_eq!(i, out.len() - 1, "commands after a closing one: {out:?}");
    }
    out
}

/// Whether the decoder goes quiet after `command`.
pub fn is_closing(command: &RespCommand) -> bool {
    matches!(command, RespCommand::Quit | RespCommand::ProtocolError(_))
}

/// Decodes `input` whole and in 1-, 2-, 3- and mixed-byte pieces, checks
/// that all agree, and returns the result.
pub fn decode_every_way(input: &[u8], limits: RespLimits) -> Vec<RespCommand> {
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

/// Decodes with the default limits, every way.
pub fn d(input: &[u8]) -> Vec<RespCommand> {
    decode_every_way(input, RespLimits::default())
}

pub fn b(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}

pub fn bs(items: &[&str]) -> Vec<Bytes> {
    items.iter().map(|s| b(s)).collect()
}

/// The bytes of `reply` in `protocol`.
pub fn wire(reply: &Reply, protocol: Protocol) -> Vec<u8> {
    reply.to_bytes(protocol).to_vec()
}

/// The reply a refusal, an unknown command or a protocol error carries.
pub fn carried(command: &RespCommand) -> &Reply {
    match command {
        RespCommand::Refused(reply)
        | RespCommand::ProtocolError(reply)
        | RespCommand::Unknown { reply, .. } => reply,
        other => panic!("{other:?} carries no reply"),
    }
}
