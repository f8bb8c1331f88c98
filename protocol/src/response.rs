//! Responses as the encoder writes them, and [`message_header`], the one
//! place that spells a `MESSAGE <topics> <len>\r\n` line for delivery.
//!
//! The bytes each variant becomes are written by the encoder in
//! [`crate::codec`]; the docs on each variant show them.

use std::borrow::Cow;

use bytes::{BufMut, Bytes, BytesMut};

use crate::num::format_usize;

/// One queued message as `get messages` writes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutMessage {
    /// `MESSAGE <topics> <len>\r\n`, shared between all subscribers that
    /// receive the same topic list.
    pub header: Bytes,
    /// The payload, shared (never copied per subscriber before the socket).
    pub payload: Bytes,
}

/// One answer to one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Response {
    /// `STORED\r\n`
    Stored,
    /// `NOT_FOUND\r\n`
    NotFound,
    /// `END\r\n` (an empty `get messages`).
    End,
    /// `VALUE messages 0 <k>\r\n<entries>END\r\n` with k = len(entries) - 2;
    /// an empty vector encodes as `END\r\n`.
    Messages(Vec<OutMessage>),
    /// `ERROR\r\n`
    Error,
    /// `CLIENT_ERROR <why>\r\n`
    ClientError(Cow<'static, str>),
    /// `SERVER_ERROR <why>\r\n`
    ServerError(Cow<'static, str>),
    /// `VERSION <v>\r\n`
    Version(Cow<'static, str>),
    /// `STAT <name> <value>\r\n`... then `END\r\n`.
    Stats(Vec<(Cow<'static, str>, String)>),
}

/// Builds the header line of one delivered entry: `MESSAGE t1 t2 <len>\r\n`.
///
/// The node builds it once per distinct topic list and shares it (as
/// [`OutMessage::header`]) between every subscriber that receives that list.
/// Topics are written as given, one space apart; callers pass topics that
/// came out of [`crate::publish`] (non-empty, no space, `\r` or `\n`). With no
/// topics the result is `MESSAGE <len>\r\n`, which no client can parse as an
/// entry: do not deliver that.
pub fn message_header(topics: &[&[u8]], payload_len: usize) -> Bytes {
    let mut digits = [0u8; 20];
    let len = format_usize(payload_len, &mut digits);
    let size =
        b"MESSAGE".len() + topics.iter().map(|t| 1 + t.len()).sum::<usize>() + 1 + len.len() + 2;
    let mut out = BytesMut::with_capacity(size);
    out.put_slice(b"MESSAGE");
    for topic in topics {
        out.put_u8(b' ');
        out.put_slice(topic);
    }
    out.put_u8(b' ');
    out.put_slice(len);
    out.put_slice(b"\r\n");
    debug_assert_eq!(out.len(), size);
    out.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_lists_topics_in_order_then_length() {
        assert_eq!(&message_header(&[b"a"], 3)[..], b"MESSAGE a 3\r\n");
        assert_eq!(&message_header(&[b"b", b"c"], 2)[..], b"MESSAGE b c 2\r\n");
        assert_eq!(&message_header(&[b"b", b"b"], 0)[..], b"MESSAGE b b 0\r\n");
        assert_eq!(
            &message_header(&[b"t\xc3\xa9\tx"], 1_048_576)[..],
            b"MESSAGE t\xc3\xa9\tx 1048576\r\n"
        );
        assert_eq!(&message_header(&[], 5)[..], b"MESSAGE 5\r\n");
    }
}
