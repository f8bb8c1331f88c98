//! Bodies of `set` requests: topic lists, publish blocks, retro bodies.
//!
//! The decoder in [`crate::codec`] only frames a `set`; what its data block
//! means is decided here, after framing, so that a malformed body is answered
//! with `CLIENT_ERROR <why>` and the connection stays open. Every
//! parser is all-or-nothing.
//!
//! # Hostile bodies
//! - Scanning runs near memory speed whatever the block holds: line ends are
//!   found with `memchr`, runs of spaces are skipped 32 bytes at a time, and
//!   no byte is looked at more than a fixed number of times.
//! - What a parse returns holds about as much memory as it is accounted for,
//!   not the whole block: the topics of one list or one entry are copied
//!   into one compact allocation, and a payload is a slice of the block only
//!   when it is at least half of it (else it is copied). A subscribe of one
//!   short topic padded with 16 MiB of spaces keeps a few bytes, not 16 MiB.
//! - A topic named twice in one publish entry counts once: the entry lists
//!   each distinct topic once, in the order of its first naming, and an
//!   entry naming more distinct topics than
//!   [`BodyLimits::max_topics_per_message`] is refused
//!   ([`BodyError::TooManyTopics`]).

use std::collections::HashSet;

use bytes::{BufMut, Bytes, BytesMut};
use memchr::{memchr, memchr2};

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
    /// A publish entry naming more distinct topics than
    /// [`BodyLimits::max_topics_per_message`]:
    /// `CLIENT_ERROR too many topics in one message`.
    TooManyTopics,
}

impl BodyError {
    /// The text after `CLIENT_ERROR `.
    pub fn message(&self) -> &'static str {
        match self {
            BodyError::BadPublishBlock => "bad publish block",
            BodyError::TopicTooLong => "topic too long",
            BodyError::BadTopic => "bad topic",
            BodyError::BadHorizon => "bad horizon",
            BodyError::TooManyTopics => "too many topics in one message",
        }
    }
}

/// Limits on what one publish block may hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BodyLimits {
    /// Longest topic (`max_topic_bytes`, default 1024).
    pub max_topic_bytes: usize,
    /// Most distinct topics one entry may name (`max_topics_per_message`,
    /// default 10000). The router sizes a message's recipients from its
    /// topics, so this bounds what one entry can make it allocate.
    pub max_topics_per_message: usize,
}

impl BodyLimits {
    /// No limit: for blocks from a trusted peer (an upstream node, which
    /// already held its clients to its own limits).
    pub const UNLIMITED: BodyLimits = BodyLimits {
        max_topic_bytes: usize::MAX,
        max_topics_per_message: usize::MAX,
    };
}

impl Default for BodyLimits {
    fn default() -> Self {
        BodyLimits {
            max_topic_bytes: 1024,
            max_topics_per_message: 10_000,
        }
    }
}

/// One entry of a publish block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublishEntry {
    /// The distinct topics, in the order they are first named; slices of
    /// one allocation that holds just them.
    pub topics: Vec<Bytes>,
    /// The payload: a slice of the block when it is at least half of it,
    /// else a copy.
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
/// than `max_topic_bytes` is [`BodyError::TopicTooLong`] (the first bad topic
/// decides). The topics are returned in order, repeats kept, as slices of one
/// allocation holding just them. [`TopicList`] reads a body the same way a
/// slice at a time.
pub fn parse_topics(data: &Bytes, max_topic_bytes: usize) -> Result<Vec<Bytes>, BodyError> {
    let mut list = TopicList::new(data.clone(), max_topic_bytes);
    match list.check(usize::MAX) {
        Some(Err(e)) => Err(e),
        _ => Ok(list.split(usize::MAX)),
    }
}

/// A subscribe/unsubscribe body read a slice at a time, by the rules of
/// [`parse_topics`]: for a caller that must not spend at once what half a
/// million topics (a 16 MiB body) take to check and split, some 40 ms.
///
/// First [`TopicList::check`] the whole body, a few topics per call, which
/// finds the error `parse_topics` would answer, if any; then
/// [`TopicList::split`] it, a few topics per call, each batch copied into
/// one compact allocation of its own. Each call costs about its topics'
/// bytes plus one run of spaces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicList {
    data: Bytes,
    max_topic_bytes: usize,
    /// Where the next call goes on: checking, then (from 0) splitting.
    pos: usize,
    checked: bool,
}

impl TopicList {
    pub fn new(data: Bytes, max_topic_bytes: usize) -> Self {
        TopicList {
            data,
            max_topic_bytes,
            pos: 0,
            checked: false,
        }
    }

    /// Checks at most `most` more topics: `None` while some are left,
    /// `Some(Err)` at the first bad topic, `Some(Ok(()))` once the whole
    /// body is good (and again on every later call).
    pub fn check(&mut self, most: usize) -> Option<Result<(), BodyError>> {
        if self.checked {
            return Some(Ok(()));
        }
        for (seen, (start, end)) in spans(&self.data, self.pos, self.data.len()).enumerate() {
            if seen == most {
                return None;
            }
            // Topics before the first CR or LF hold none: the first topic
            // holding one is the topic holding the first.
            if memchr2(b'\r', b'\n', &self.data[start..end]).is_some() {
                return Some(Err(BodyError::BadTopic));
            }
            if end - start > self.max_topic_bytes {
                return Some(Err(BodyError::TopicTooLong));
            }
            self.pos = end;
        }
        self.checked = true;
        self.pos = 0;
        Some(Ok(()))
    }

    /// The next at most `most` topics, in order, repeats kept, as slices of
    /// one allocation holding just them; empty once all were taken. Only
    /// for a body [`TopicList::check`] found good (else empty).
    pub fn split(&mut self, most: usize) -> Vec<Bytes> {
        if !self.checked {
            return Vec::new();
        }
        let found: Vec<(usize, usize)> = spans(&self.data, self.pos, self.data.len())
            .take(most)
            .collect();
        if let Some(&(_, end)) = found.last() {
            self.pos = end;
        }
        compact(&self.data, &found)
    }

    /// The body's length in bytes.
    pub fn len(&self) -> usize {
        self.data.len()
    }

    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// The whole body at once, as [`parse_topics`] reads it.
    pub fn parse_all(&self) -> Result<Vec<Bytes>, BodyError> {
        parse_topics(&self.data, self.max_topic_bytes)
    }
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
/// Any other shape is [`BodyError::BadPublishBlock`]. The topics of a header
/// are checked in order: the first longer than `max_topic_bytes` is
/// [`BodyError::TopicTooLong`], and the first new one past
/// `max_topics_per_message` distinct topics is [`BodyError::TooManyTopics`];
/// both before the shape of the rest of the entry. A topic named again in
/// the same entry is dropped. On error nothing of the block is returned, so
/// nothing of it is published.
pub fn parse_publish_block(
    data: &Bytes,
    limits: &BodyLimits,
) -> Result<Vec<PublishEntry>, BodyError> {
    const BAD: BodyError = BodyError::BadPublishBlock;
    let bytes = &data[..];
    let mut entries = Vec::new();
    let mut pos = 0;
    while pos < bytes.len() {
        // The header ends at the first LF, which must follow a CR; any other
        // CR before it is a lone CR inside the header, not a separator.
        let lf = memchr(b'\n', &bytes[pos..]).ok_or(BAD)? + pos;
        if lf == pos || bytes[lf - 1] != b'\r' {
            return Err(BAD);
        }
        let header_end = lf - 1;
        if memchr(b'\r', &bytes[pos..header_end]).is_some() {
            return Err(BAD);
        }
        let mut tokens = spans(bytes, pos, header_end);
        match tokens.next() {
            Some((s, e)) if &bytes[s..e] == b"MESSAGE" => {}
            _ => return Err(BAD),
        }
        // Every token but the last is a topic; the last is the length.
        let mut topics = DistinctTopics::new(bytes);
        let mut last = tokens.next().ok_or(BAD)?;
        for token in tokens {
            let (s, e) = last;
            if e - s > limits.max_topic_bytes {
                return Err(BodyError::TopicTooLong);
            }
            topics.add(s, e, limits.max_topics_per_message)?;
            last = token;
        }
        if topics.spans.is_empty() {
            return Err(BAD);
        }
        let len = parse_usize(&bytes[last.0..last.1]).ok_or(BAD)?;
        let payload_start = header_end + 2;
        let payload_end = payload_start
            .checked_add(len)
            .filter(|&end| end <= bytes.len())
            .ok_or(BAD)?;
        entries.push((topics.spans, payload_start, payload_end));
        pos = match &bytes[payload_end..] {
            // The last entry, memcached-value style: no trailing CRLF.
            [] => payload_end,
            [b'\r', b'\n', ..] => payload_end + 2,
            _ => return Err(BAD),
        };
    }
    // Copies are made only once the whole block is known to be good.
    Ok(entries
        .into_iter()
        .map(|(topics, start, end)| PublishEntry {
            topics: compact(data, &topics),
            payload: held_part(data, start, end),
        })
        .collect())
}

/// Parses `<horizon>\r\n<topics>`.
///
/// The horizon is a decimal `i64` (a leading `-` is allowed), surrounded by
/// optional spaces; anything else is [`BodyError::BadHorizon`]. The horizon
/// alone, without `\r\n`, means no topics; one `\r\n` after the topics is
/// allowed (a client that terminates every line). Topics are read as
/// [`parse_topics`] reads them.
pub fn parse_retro_body(data: &Bytes, max_topic_bytes: usize) -> Result<RetroBody, BodyError> {
    let (horizon_secs, topics) = parse_retro_head(data)?;
    Ok(RetroBody {
        horizon_secs,
        topics: parse_topics(&topics, max_topic_bytes)?,
    })
}

/// The horizon of a retro body (as [`parse_retro_body`] reads it) and the
/// part holding its topics, still to be read (with [`parse_topics`] or a
/// [`TopicList`]).
pub fn parse_retro_head(data: &Bytes) -> Result<(i64, Bytes), BodyError> {
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
    Ok((horizon_secs, topics))
}

/// The distinct topics of one header, as index ranges of the block, in the
/// order they are first named.
struct DistinctTopics<'a> {
    bytes: &'a [u8],
    spans: Vec<(usize, usize)>,
    /// The topics seen, once there are more than a linear scan handles well.
    seen: Option<HashSet<&'a [u8]>>,
}

impl<'a> DistinctTopics<'a> {
    /// Up to this many distinct topics, a repeat is found by comparing with
    /// each; past it, by hashing.
    const LINEAR: usize = 8;

    fn new(bytes: &'a [u8]) -> Self {
        DistinctTopics {
            bytes,
            spans: Vec::new(),
            seen: None,
        }
    }

    /// Adds `bytes[start..end]` unless already named; refuses a topic that
    /// would make more than `max` distinct ones.
    fn add(&mut self, start: usize, end: usize, max: usize) -> Result<(), BodyError> {
        let bytes = self.bytes;
        let topic = &bytes[start..end];
        let new = match &mut self.seen {
            Some(seen) => seen.insert(topic),
            None => !self.spans.iter().any(|&(s, e)| &bytes[s..e] == topic),
        };
        if !new {
            return Ok(());
        }
        if self.spans.len() >= max {
            return Err(BodyError::TooManyTopics);
        }
        self.spans.push((start, end));
        if self.seen.is_none() && self.spans.len() > Self::LINEAR {
            self.seen = Some(self.spans.iter().map(|&(s, e)| &bytes[s..e]).collect());
        }
        Ok(())
    }
}

/// `data[s..e]` for every span, copied into one allocation of just their
/// bytes, so that they do not keep the block alive.
fn compact(data: &Bytes, spans: &[(usize, usize)]) -> Vec<Bytes> {
    let total = spans.iter().map(|&(s, e)| e - s).sum();
    let mut arena = BytesMut::with_capacity(total);
    for &(s, e) in spans {
        arena.put_slice(&data[s..e]);
    }
    let arena = arena.freeze();
    let mut at = 0;
    spans
        .iter()
        .map(|&(s, e)| {
            at += e - s;
            arena.slice(at - (e - s)..at)
        })
        .collect()
}

/// `data[start..end]` as a value to keep: a slice of `data` when it is at
/// least half of it (keeping the block costs at most twice the part), else
/// a copy.
fn held_part(data: &Bytes, start: usize, end: usize) -> Bytes {
    if (end - start) * 2 >= data.len() {
        data.slice(start..end)
    } else {
        Bytes::copy_from_slice(&data[start..end])
    }
}

/// The position of the first `\r\n` in `bytes[from..]`, as an index of `bytes`.
fn find_crlf(bytes: &[u8], from: usize) -> Option<usize> {
    let mut at = from;
    loop {
        let lf = memchr(b'\n', &bytes[at..])? + at;
        if lf > from && bytes[lf - 1] == b'\r' {
            return Some(lf - 1);
        }
        at = lf + 1;
    }
}

/// `bytes` without leading and trailing spaces.
fn trim_spaces(bytes: &[u8]) -> &[u8] {
    let start = skip_spaces(bytes, 0, bytes.len());
    let mut end = bytes.len();
    while end >= start + 32 && bytes[end - 32..end] == [b' '; 32] {
        end -= 32;
    }
    while end > start && bytes[end - 1] == b' ' {
        end -= 1;
    }
    &bytes[start..end]
}

/// The first index in `pos..to` not holding a space (or `to`). Short runs
/// (the usual one space) are stepped over byte by byte, long ones a 32-byte
/// chunk at a time (the comparison vectorises).
fn skip_spaces(bytes: &[u8], mut pos: usize, to: usize) -> usize {
    const CHUNK: usize = 32;
    for _ in 0..CHUNK {
        if pos == to || bytes[pos] != b' ' {
            return pos;
        }
        pos += 1;
    }
    while pos + CHUNK <= to && bytes[pos..pos + CHUNK] == [b' '; CHUNK] {
        pos += CHUNK;
    }
    while pos < to && bytes[pos] == b' ' {
        pos += 1;
    }
    pos
}

/// The first index in `pos..to` holding a space (or `to`): short tokens
/// byte by byte, long ones with `memchr`.
fn token_end(bytes: &[u8], mut pos: usize, to: usize) -> usize {
    for _ in 0..16 {
        if pos == to || bytes[pos] == b' ' {
            return pos;
        }
        pos += 1;
    }
    memchr(b' ', &bytes[pos..to]).map_or(to, |i| pos + i)
}

/// The `(start, end)` index ranges of the space-separated tokens of
/// `bytes[from..to]`; runs of spaces are one separator and empty tokens are
/// never produced. Linear in `to - from`.
fn spans(bytes: &[u8], from: usize, to: usize) -> impl Iterator<Item = (usize, usize)> + '_ {
    let mut pos = from;
    std::iter::from_fn(move || {
        pos = skip_spaces(bytes, pos, to);
        if pos == to {
            return None;
        }
        let start = pos;
        pos = token_end(bytes, pos, to);
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

#[cfg(test)]
mod held_memory {
    //! What the parsers return keeps about as much memory as it is
    //! accounted for, however the block was padded.

    use super::*;

    const MIB: usize = 1024 * 1024;

    /// Whether `part`'s bytes lie inside `whole`'s.
    fn inside(part: &Bytes, whole: &Bytes) -> bool {
        let (w, p) = (whole.as_ptr() as usize, part.as_ptr() as usize);
        p >= w && p + part.len() <= w + whole.len()
    }

    /// Whether the parts are laid end to end in one allocation.
    fn one_compact_allocation(parts: &[Bytes]) -> bool {
        parts
            .windows(2)
            .all(|w| w[0].as_ptr() as usize + w[0].len() == w[1].as_ptr() as usize)
    }

    #[test]
    fn a_short_topic_padded_with_megabytes_of_spaces_does_not_keep_the_block() {
        let data = Bytes::from(format!("a{}bc", " ".repeat(16 * MIB)));
        let topics = parse_topics(&data, 1024).unwrap();
        assert_eq!(topics, [&b"a"[..], b"bc"]);
        assert!(topics.iter().all(|t| !inside(t, &data)));
        assert!(one_compact_allocation(&topics));
    }

    #[test]
    fn retro_topics_are_copied_out_too() {
        let data = Bytes::from(format!("5\r\nx{}y", " ".repeat(MIB)));
        let body = parse_retro_body(&data, 1024).unwrap();
        assert_eq!(body.topics, [&b"x"[..], b"y"]);
        assert!(body.topics.iter().all(|t| !inside(t, &data)));
    }

    #[test]
    fn publish_topics_are_copied_and_small_payloads_too() {
        let data = Bytes::from(format!(
            "MESSAGE a{}b 3\r\nhey\r\nMESSAGE c 2\r\nho",
            " ".repeat(MIB)
        ));
        let entries = parse_publish_block(&data, &BodyLimits::default()).unwrap();
        assert_eq!(entries.len(), 2);
        for entry in &entries {
            assert!(entry.topics.iter().all(|t| !inside(t, &data)));
            assert!(!inside(&entry.payload, &data));
            assert!(one_compact_allocation(&entry.topics));
        }
        assert_eq!(&entries[0].payload[..], b"hey");
    }

    #[test]
    fn a_payload_that_is_most_of_the_block_stays_a_slice_of_it() {
        let payload = vec![b'p'; MIB];
        let mut block = format!("MESSAGE a {}\r\n", payload.len()).into_bytes();
        block.extend_from_slice(&payload);
        let data = Bytes::from(block);
        let entries = parse_publish_block(&data, &BodyLimits::default()).unwrap();
        assert!(inside(&entries[0].payload, &data));
        assert_eq!(entries[0].payload.len(), MIB);
    }

    #[test]
    fn a_topic_named_many_times_is_listed_once_in_first_naming_order() {
        let data = Bytes::from(format!("MESSAGE b {}a b 1\r\nx", "a b ".repeat(100_000)));
        let entries = parse_publish_block(&data, &BodyLimits::default()).unwrap();
        assert_eq!(entries[0].topics, [&b"b"[..], b"a"]);
    }

    #[test]
    fn repeats_are_found_past_the_linear_scan() {
        let names: Vec<String> = (0..50).map(|i| format!("t{i}")).collect();
        let line = names.join(" ");
        let data = Bytes::from(format!("MESSAGE {line} {line} {line} 0\r\n"));
        let entries = parse_publish_block(&data, &BodyLimits::default()).unwrap();
        let got: Vec<&[u8]> = entries[0].topics.iter().map(|t| &t[..]).collect();
        let want: Vec<&[u8]> = names.iter().map(|n| n.as_bytes()).collect();
        assert_eq!(got, want);
    }

    #[test]
    fn distinct_topics_are_capped_and_repeats_do_not_count() {
        let limits = BodyLimits {
            max_topic_bytes: 1024,
            max_topics_per_message: 3,
        };
        let ok = Bytes::from_static(b"MESSAGE a b c a b c c 1\r\nx");
        assert_eq!(
            parse_publish_block(&ok, &limits).unwrap()[0].topics.len(),
            3
        );
        let over = Bytes::from_static(b"MESSAGE a b c a d 1\r\nx");
        assert_eq!(
            parse_publish_block(&over, &limits),
            Err(BodyError::TooManyTopics)
        );
        // Nothing of the block is returned when a later entry is refused.
        let later = Bytes::from_static(b"MESSAGE a 1\r\nx\r\nMESSAGE a b c d 1\r\ny");
        assert_eq!(
            parse_publish_block(&later, &limits),
            Err(BodyError::TooManyTopics)
        );
        assert_eq!(
            BodyError::TooManyTopics.message(),
            "too many topics in one message"
        );
    }
}
