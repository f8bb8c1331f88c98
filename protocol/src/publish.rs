//! Bodies of `set` requests: topic lists, publish blocks, retro bodies.
//!
//! The decoder in [`crate::codec`] only frames a `set`; what its data block
//! means is decided here, after framing, so that a malformed body is answered
//! with `CLIENT_ERROR <why>` and the connection stays open. Every
//! parser is all-or-nothing and zero-copy: topics and payloads are
//! [`Bytes::slice`]s of the data block.

use bytes::Bytes;

use crate::num::{parse_i64, parse_usize};

/// Why a `set` body was refused; the connection stays open.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BodyError {
    /// A malformed publish block: answer `CLIENT_ERROR bad publish block`.
    BadPublishBlock,
    /// A topic longer than the limit: `CLIENT_ERROR topic too long`.
    TopicTooLong,
    /// A topic containing `\r` or `\n`: `CLIENT_ERROR bad topic`.
    BadTopic,
    /// A retro horizon that is not an integer: `CLIENT_ERROR bad horizon`.
    BadHorizon,
}

impl BodyError {
    /// The text after `CLIENT_ERROR `.
    pub fn message(&self) -> &'static str {
        match self {
            BodyError::BadPublishBlock => "bad publish block",
            BodyError::TopicTooLong => "topic too long",
            BodyError::BadTopic => "bad topic",
            BodyError::BadHorizon => "bad horizon",
        }
    }
}

/// One entry of a publish block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublishEntry {
    /// Topics in publish order (repeats kept), each a slice of the block.
    pub topics: Vec<Bytes>,
    /// The payload, a slice of the block (no copy).
    pub payload: Bytes,
}

/// The body of `set retro_subscribe`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetroBody {
    /// Unix time in whole seconds (may be negative or far in the future).
    pub horizon_secs: i64,
    /// The topics to subscribe.
    pub topics: Vec<Bytes>,
}

/// Splits a subscribe/unsubscribe body into topics.
///
/// Topics are separated by runs of the space byte (0x20) only; tabs and
/// UTF-8 are topic bytes (the original treats topics as opaque). Leading and
/// trailing spaces are ignored, so an empty or all-space body is an empty
/// list. A topic containing `\r` or `\n` is [`BodyError::BadTopic`]; one longer
/// than `max_topic_bytes` is [`BodyError::TopicTooLong`].
pub fn parse_topics(data: &Bytes, max_topic_bytes: usize) -> Result<Vec<Bytes>, BodyError> {
    let mut topics = Vec::new();
    for (start, end) in spans(data, 0, data.len()) {
        let topic = &data[start..end];
        if topic.iter().any(|&b| b == b'\r' || b == b'\n') {
            return Err(BodyError::BadTopic);
        }
        if topic.len() > max_topic_bytes {
            return Err(BodyError::TopicTooLong);
        }
        topics.push(data.slice(start..end));
    }
    Ok(topics)
}

/// Parses a whole publish block; all or nothing.
///
/// The block is zero or more entries
/// `MESSAGE <topic> [<topic> ...] <len>\r\n<len bytes>\r\n`. A header line ends
/// at its first `\r\n`; its tokens are split on runs of spaces; the first is
/// exactly `MESSAGE`, the last the decimal payload length, and at least one
/// topic lies between. The payload is taken by length, so it may hold
/// anything (`\r\n`, `END`, NULs). The last entry may stop right after its
/// payload, without its `\r\n`, as a client that sets the block as a plain
/// memcached value does (the Erlang original closed the connection here).
///
/// Any other shape is [`BodyError::BadPublishBlock`]; a topic longer than
/// `max_topic_bytes` is [`BodyError::TopicTooLong`]. On error nothing of the
/// block is returned, so nothing of it is published.
pub fn parse_publish_block(
    data: &Bytes,
    max_topic_bytes: usize,
) -> Result<Vec<PublishEntry>, BodyError> {
    const BAD: BodyError = BodyError::BadPublishBlock;
    let bytes = &data[..];
    let mut entries = Vec::new();
    let mut pos = 0;
    while pos < bytes.len() {
        let header_end = find_crlf(bytes, pos).ok_or(BAD)?;
        let header = &bytes[pos..header_end];
        // A lone CR or LF inside the header line is not a separator.
        if header.iter().any(|&b| b == b'\r' || b == b'\n') {
            return Err(BAD);
        }
        let mut tokens = spans(bytes, pos, header_end);
        match tokens.next() {
            Some((s, e)) if &bytes[s..e] == b"MESSAGE" => {}
            _ => return Err(BAD),
        }
        // Every token but the last is a topic; the last is the length.
        let mut topics = Vec::new();
        let mut last = tokens.next().ok_or(BAD)?;
        for token in tokens {
            let (s, e) = last;
            if e - s > max_topic_bytes {
                return Err(BodyError::TopicTooLong);
            }
            topics.push(data.slice(s..e));
            last = token;
        }
        if topics.is_empty() {
            return Err(BAD);
        }
        let len = parse_usize(&bytes[last.0..last.1]).ok_or(BAD)?;
        let payload_start = header_end + 2;
        let payload_end = payload_start
            .checked_add(len)
            .filter(|&end| end <= bytes.len())
            .ok_or(BAD)?;
        entries.push(PublishEntry {
            topics,
            payload: data.slice(payload_start..payload_end),
        });
        pos = match &bytes[payload_end..] {
            // The last entry, memcached-value style: no trailing CRLF.
            [] => payload_end,
            [b'\r', b'\n', ..] => payload_end + 2,
            _ => return Err(BAD),
        };
    }
    Ok(entries)
}

/// Parses `<horizon>\r\n<topics>`.
///
/// The horizon is a decimal `i64` (a leading `-` is allowed), surrounded by
/// optional spaces; anything else is [`BodyError::BadHorizon`]. The horizon
/// alone, without `\r\n`, means no topics; one `\r\n` after the topics is
/// allowed (a client that terminates every line). Topics are read as
/// [`parse_topics`] reads them.
pub fn parse_retro_body(data: &Bytes, max_topic_bytes: usize) -> Result<RetroBody, BodyError> {
    let (horizon, topics) = match find_crlf(data, 0) {
        Some(i) => {
            let mut rest = data.slice(i + 2..);
            if rest.ends_with(b"\r\n") {
                rest.truncate(rest.len() - 2);
            }
            (&data[..i], rest)
        }
        None => (&data[..], Bytes::new()),
    };
    let horizon_secs = parse_i64(trim_spaces(horizon)).ok_or(BodyError::BadHorizon)?;
    Ok(RetroBody {
        horizon_secs,
        topics: parse_topics(&topics, max_topic_bytes)?,
    })
}

/// The position of the first `\r\n` in `bytes[from..]`, as an index of `bytes`.
fn find_crlf(bytes: &[u8], from: usize) -> Option<usize> {
    bytes[from..]
        .windows(2)
        .position(|w| w == b"\r\n")
        .map(|i| from + i)
}

/// `bytes` without leading and trailing spaces.
fn trim_spaces(bytes: &[u8]) -> &[u8] {
    let start = bytes.iter().position(|&b| b != b' ').unwrap_or(bytes.len());
    let end = bytes
        .iter()
        .rposition(|&b| b != b' ')
        .map_or(start, |i| i + 1);
    &bytes[start..end]
}

/// The `(start, end)` index ranges of the space-separated tokens of
/// `bytes[from..to]`; runs of spaces are one separator and empty tokens are
/// never produced.
fn spans(bytes: &[u8], from: usize, to: usize) -> impl Iterator<Item = (usize, usize)> + '_ {
    let mut pos = from;
    std::iter::from_fn(move || {
        while pos < to && bytes[pos] == b' ' {
            pos += 1;
        }
        if pos == to {
            return None;
        }
        let start = pos;
        while pos < to && bytes[pos] != b' ' {
            pos += 1;
        }
        Some((start, pos))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tokens(bytes: &[u8], from: usize, to: usize) -> Vec<&[u8]> {
        spans(bytes, from, to).map(|(s, e)| &bytes[s..e]).collect()
    }

    #[test]
    fn spans_skip_runs_of_spaces_within_bounds() {
        assert_eq!(tokens(b"", 0, 0), Vec::<&[u8]>::new());
        assert_eq!(tokens(b"   ", 0, 3), Vec::<&[u8]>::new());
        assert_eq!(tokens(b" a  bc ", 0, 7), [&b"a"[..], b"bc"]);
        assert_eq!(tokens(b"xx a b yy", 2, 6), [&b"a"[..], b"b"]);
        assert_eq!(tokens(b"abcdef", 1, 3), [&b"bc"[..]]);
    }

    #[test]
    fn find_crlf_starts_where_told() {
        assert_eq!(find_crlf(b"a\r\nb\r\n", 0), Some(1));
        assert_eq!(find_crlf(b"a\r\nb\r\n", 2), Some(4));
        assert_eq!(find_crlf(b"a\r\nb\r\n", 6), None);
        assert_eq!(find_crlf(b"\r\r\n", 0), Some(1));
        assert_eq!(find_crlf(b"\n\r", 0), None);
    }

    #[test]
    fn trim_spaces_only_trims_spaces() {
        assert_eq!(trim_spaces(b"  5 "), b"5");
        assert_eq!(trim_spaces(b"   "), b"");
        assert_eq!(trim_spaces(b""), b"");
        assert_eq!(trim_spaces(b"\t5\t"), b"\t5\t");
    }
}
