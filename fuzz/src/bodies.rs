//! Target `bodies`: `parse_publish_block`, `parse_topics` and
//! `parse_retro_body` on arbitrary bytes.
//!
//! Input layout: byte 0 chooses `max_topic_bytes` from [`MAX_TOPIC`] (bits
//! 0-2) and `max_topics_per_message` from [`MAX_TOPICS`] (bits 3-4); the
//! rest is the `set` data block, given to all three parsers.
//!
//! Invariants:
//! - no parser panics;
//! - each agrees exactly (value or error) with a small, independent
//!   reference model written from the doc comments in `publish.rs`;
//! - what they return is well formed (topics non-empty, without space, CR or
//!   LF, within the limit, distinct within a publish entry) and holds no
//!   more of the block than it must: topics are copies, never slices of the
//!   block, and a payload is a slice of it exactly when it is at least half
//!   of it;
//! - a successful parse, written back out canonically, parses to the same
//!   value (publish blocks also without the last entry's CRLF);
//! - a publish block accepted with a topic limit is accepted, unchanged,
//!   without one.

use bytes::Bytes;
use kraken_protocol::{
    parse_publish_block, parse_retro_body, parse_topics, BodyError, BodyLimits, PublishEntry,
    RetroBody,
};

use crate::Input;

/// The topic limits byte 0 chooses between.
const MAX_TOPIC: [usize; 8] = [0, 1, 2, 3, 8, 16, 1024, usize::MAX];
/// The distinct-topics-per-entry limits bits 3-4 of byte 0 choose between.
const MAX_TOPICS: [usize; 4] = [usize::MAX, 1, 2, 3];

pub fn check(data: &[u8]) {
    let mut input = Input::new(data);
    let header = input.byte();
    let max_topic = MAX_TOPIC[usize::from(header & 7)];
    let limits = BodyLimits {
        max_topic_bytes: max_topic,
        max_topics_per_message: MAX_TOPICS[usize::from((header >> 3) & 3)],
    };
    // A block with spare bytes on both sides, so that a slice escaping the
    // data block could not hide in the allocation's bounds.
    let mut padded = b"[pad]".to_vec();
    padded.extend_from_slice(input.rest());
    padded.extend_from_slice(b"[pad]");
    let padded = Bytes::from(padded);
    let block = padded.slice(5..padded.len() - 5);

    check_topics(&block, max_topic);
    check_publish(&block, &limits);
    check_retro(&block, max_topic);
}

fn check_topics(block: &Bytes, max_topic: usize) {
    let got = parse_topics(block, max_topic);
    assert_eq!(got, ref_topics(block, max_topic), "parse_topics vs model");
    if let Ok(topics) = got {
        for topic in &topics {
            check_topic(topic, block, max_topic);
        }
        let again = parse_topics(&Bytes::from(topics.join(&b' ')), max_topic);
        assert_eq!(again.as_ref(), Ok(&topics), "topics do not round-trip");
    }
}

fn check_publish(block: &Bytes, limits: &BodyLimits) {
    let got = parse_publish_block(block, limits);
    assert_eq!(
        got,
        ref_publish(block, limits),
        "parse_publish_block vs model"
    );
    let Ok(entries) = got else { return };
    for entry in &entries {
        assert!(!entry.topics.is_empty(), "entry without topics");
        assert!(
            entry.topics.len() <= limits.max_topics_per_message,
            "more topics than the limit"
        );
        for (i, topic) in entry.topics.iter().enumerate() {
            check_topic(topic, block, limits.max_topic_bytes);
            assert!(!entry.topics[..i].contains(topic), "topic listed twice");
        }
        let big = entry.payload.len() * 2 >= block.len();
        if !entry.payload.is_empty() {
            assert_eq!(
                within(&entry.payload, block),
                big,
                "a payload of {} bytes of a {}-byte block: slice {big} expected",
                entry.payload.len(),
                block.len()
            );
        }
    }
    assert_eq!(
        parse_publish_block(block, &BodyLimits::UNLIMITED).as_ref(),
        Ok(&entries),
        "accepted with limits but not without"
    );
    let mut canonical = write_publish(&entries);
    assert_eq!(
        parse_publish_block(&Bytes::from(canonical.clone()), limits).as_ref(),
        Ok(&entries),
        "publish block does not round-trip"
    );
    if !entries.is_empty() {
        canonical.truncate(canonical.len() - 2);
        assert_eq!(
            parse_publish_block(&Bytes::from(canonical), limits).as_ref(),
            Ok(&entries),
            "publish block without the last CRLF does not round-trip"
        );
    }
}

fn check_retro(block: &Bytes, max_topic: usize) {
    let got = parse_retro_body(block, max_topic);
    assert_eq!(
        got,
        ref_retro(block, max_topic),
        "parse_retro_body vs model"
    );
    let Ok(body) = got else { return };
    for topic in &body.topics {
        check_topic(topic, block, max_topic);
    }
    let mut canonical = format!("{}\r\n", body.horizon_secs).into_bytes();
    canonical.extend_from_slice(&body.topics.join(&b' '));
    assert_eq!(
        parse_retro_body(&Bytes::from(canonical), max_topic).as_ref(),
        Ok(&body),
        "retro body does not round-trip"
    );
}

/// A returned topic: non-empty, no separator, within the limit, a copy.
fn check_topic(topic: &Bytes, block: &Bytes, max_topic: usize) {
    assert!(!topic.is_empty(), "empty topic");
    assert!(topic.len() <= max_topic, "topic over the limit");
    assert!(
        !topic.iter().any(|b| matches!(b, b' ' | b'\r' | b'\n')),
        "topic with a separator: {topic:?}"
    );
    assert!(!within(topic, block), "topic keeps the block alive");
}

/// Whether `part` points into `whole`'s bytes.
fn within(part: &Bytes, whole: &Bytes) -> bool {
    if part.is_empty() {
        return true;
    }
    let start = whole.as_ptr() as usize;
    let p = part.as_ptr() as usize;
    p >= start && p + part.len() <= start + whole.len()
}

/// `MESSAGE t.. <len>\r\n<payload>\r\n` for every entry.
pub fn write_publish(entries: &[PublishEntry]) -> Vec<u8> {
    let mut out = Vec::new();
    for entry in entries {
        out.extend_from_slice(b"MESSAGE");
        for topic in &entry.topics {
            out.push(b' ');
            out.extend_from_slice(topic);
        }
        out.extend_from_slice(format!(" {}\r\n", entry.payload.len()).as_bytes());
        out.extend_from_slice(&entry.payload);
        out.extend_from_slice(b"\r\n");
    }
    out
}

// ---- Reference models, written from publish.rs's documentation -------------------

/// Space-separated tokens as `(start, end)` offsets into `bytes`.
fn tokens(bytes: &[u8], offset: usize) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut start = None;
    for (i, &b) in bytes.iter().enumerate() {
        match (b == b' ', start) {
            (false, None) => start = Some(i),
            (true, Some(s)) => {
                out.push((offset + s, offset + i));
                start = None;
            }
            _ => {}
        }
    }
    if let Some(s) = start {
        out.push((offset + s, offset + bytes.len()));
    }
    out
}

fn ref_topics(block: &Bytes, max_topic: usize) -> Result<Vec<Bytes>, BodyError> {
    tokens(block, 0)
        .into_iter()
        .map(|(s, e)| {
            let topic = block.slice(s..e);
            if topic.contains(&b'\r') || topic.contains(&b'\n') {
                Err(BodyError::BadTopic)
            } else if topic.len() > max_topic {
                Err(BodyError::TopicTooLong)
            } else {
                Ok(topic)
            }
        })
        .collect()
}

/// `[0-9]+` as u64 without overflow, as the wire wants it (no sign, no space).
fn ref_u64(token: &[u8]) -> Option<u64> {
    if token.is_empty() || !token.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(token).ok()?.parse().ok()
}

/// `-?[0-9]+` as i64.
fn ref_i64(token: &[u8]) -> Option<i64> {
    let digits = token.strip_prefix(b"-").unwrap_or(token);
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(token).ok()?.parse().ok()
}

fn find_crlf(bytes: &[u8], from: usize) -> Option<usize> {
    (from..bytes.len().saturating_sub(1)).find(|&i| bytes[i] == b'\r' && bytes[i + 1] == b'\n')
}

fn ref_publish(block: &Bytes, limits: &BodyLimits) -> Result<Vec<PublishEntry>, BodyError> {
    use BodyError::{BadPublishBlock as BAD, TooManyTopics, TopicTooLong};
    let bytes = &block[..];
    let mut entries = Vec::new();
    let mut pos = 0;
    while pos < bytes.len() {
        let header_end = find_crlf(bytes, pos).ok_or(BAD)?;
        let header = &bytes[pos..header_end];
        if header.contains(&b'\r') || header.contains(&b'\n') {
            return Err(BAD);
        }
        let toks = tokens(header, pos);
        let Some((&(s, e), rest)) = toks.split_first() else {
            return Err(BAD);
        };
        if &bytes[s..e] != b"MESSAGE" {
            return Err(BAD);
        }
        let Some((&(ls, le), topics)) = rest.split_last() else {
            return Err(BAD);
        };
        // Topics are checked in order, before the shape of the rest: each
        // for its length, then (if not named before) against the count.
        let mut distinct: Vec<&[u8]> = Vec::new();
        for &(s, e) in topics {
            if e - s > limits.max_topic_bytes {
                return Err(TopicTooLong);
            }
            let topic = &bytes[s..e];
            if !distinct.contains(&topic) {
                if distinct.len() == limits.max_topics_per_message {
                    return Err(TooManyTopics);
                }
                distinct.push(topic);
            }
        }
        if topics.is_empty() {
            return Err(BAD);
        }
        let len = ref_u64(&bytes[ls..le]).ok_or(BAD)?;
        let payload_start = header_end + 2;
        let available = (bytes.len() - payload_start) as u64;
        if len > available {
            return Err(BAD);
        }
        let payload_end = payload_start + len as usize;
        entries.push(PublishEntry {
            topics: distinct.into_iter().map(Bytes::copy_from_slice).collect(),
            payload: block.slice(payload_start..payload_end),
        });
        let after = &bytes[payload_end..];
        pos = if after.is_empty() {
            payload_end
        } else if after.starts_with(b"\r\n") {
            payload_end + 2
        } else {
            return Err(BAD);
        };
    }
    Ok(entries)
}

fn ref_retro(block: &Bytes, max_topic: usize) -> Result<RetroBody, BodyError> {
    let (horizon, topics) = match find_crlf(block, 0) {
        Some(i) => {
            let mut topics = block.slice(i + 2..);
            if topics.ends_with(b"\r\n") {
                topics = topics.slice(..topics.len() - 2);
            }
            (&block[..i], topics)
        }
        None => (&block[..], Bytes::new()),
    };
    let mut horizon = horizon;
    while let [b' ', rest @ ..] = horizon {
        horizon = rest;
    }
    while let [rest @ .., b' '] = horizon {
        horizon = rest;
    }
    let horizon_secs = ref_i64(horizon).ok_or(BodyError::BadHorizon)?;
    Ok(RetroBody {
        horizon_secs,
        topics: ref_topics(&topics, max_topic)?,
    })
}
