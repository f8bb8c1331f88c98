//! The client side of Kraken's memcached text dialect, as a pure
//! `tokio_util` codec: [`ClientCodec`] encodes [`Request`]s and decodes
//! [`Reply`]s. No sockets, no timers: anything that moves bytes can use it
//! (the async [`Client`](crate::Client), a proxy's upstream link, a load
//! generator, a test harness).
//!
//! # Requests
//! [`Request`] covers everything a client sends: `set subscribe`,
//! `unsubscribe`, `publish`, `register`, `retro_subscribe` (each with an
//! optional `noreply`), `get messages`, `stats`, `version` and `quit`. The
//! encoder refuses a topic that would break the framing (empty, or holding a
//! space, `\r` or `\n`) with [`CodecError::BadRequest`]. The `put_*`
//! functions write the same bytes into any [`BufMut`] without those checks,
//! for callers that build requests by hand (or want to send bad ones).
//!
//! # Replies
//! The decoder frames `STORED`, `NOT_FOUND`, `END`, `VALUE messages 0 <k>`
//! with its entries and `END` (entries parsed into [`Message`]s, topics and
//! payloads zero-copy slices of the read buffer), `STAT` lines up to `END`,
//! `VERSION`, `ERROR`, `CLIENT_ERROR` and `SERVER_ERROR`. Anything else is a
//! [`CodecError::Protocol`]: the stream cannot be read on.
//!
//! It is bounded: a reply line longer than [`Limits::max_line_bytes`], a
//! value or a `stats` reply larger than [`Limits::max_reply_bytes`] is an
//! error, and it never reserves buffer space on the strength of a length
//! the peer sent; the buffer grows only as bytes arrive.

use std::fmt;
use std::io;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use tokio_util::codec::{Decoder, Encoder};

/// Size limits of the reply decoder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Longest reply line (`STAT ...`, `VALUE ...`, an error line), without
    /// its line end. Default 64 KiB.
    pub max_line_bytes: usize,
    /// Largest `get messages` value `<k>`, and largest `stats` reply.
    /// Default 1 GiB (a node's queue is bounded by its `max_queue_bytes`,
    /// 64 MiB by default).
    pub max_reply_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_line_bytes: 64 * 1024,
            max_reply_bytes: 1 << 30,
        }
    }
}

/// One message: the topics it was published to (or, when delivered, the
/// subscribed topics it matched), and its payload.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Message {
    pub topics: Vec<Bytes>,
    pub payload: Bytes,
}

impl Message {
    /// A message on `topics` (copied) with `payload` (copied).
    pub fn new<I, T>(topics: I, payload: impl AsRef<[u8]>) -> Message
    where
        I: IntoIterator<Item = T>,
        T: AsRef<[u8]>,
    {
        Message {
            topics: topics_of(topics),
            payload: Bytes::copy_from_slice(payload.as_ref()),
        }
    }
}

/// Copies topic names into [`Bytes`].
pub fn topics_of<I, T>(topics: I) -> Vec<Bytes>
where
    I: IntoIterator<Item = T>,
    T: AsRef<[u8]>,
{
    topics
        .into_iter()
        .map(|t| Bytes::copy_from_slice(t.as_ref()))
        .collect()
}

/// The entries of one `get messages` value, checked: each is
/// `MESSAGE <topics> <len>\r\n<payload>\r\n`. [`Messages::iter`] reads them
/// as [`Message`]s whose topics and payload share the value's buffer.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Messages {
    /// The entries as they came, concatenated (the `<k> + 2` bytes of the
    /// value).
    raw: Bytes,
}

impl Messages {
    /// Checks a value's entries (`raw` must include the last entry's CRLF).
    pub fn parse(raw: Bytes) -> Result<Messages, String> {
        for entry in entries(&raw) {
            entry?;
        }
        Ok(Messages { raw })
    }

    /// The raw entries, as the node sent them.
    pub fn raw(&self) -> &Bytes {
        &self.raw
    }

    /// The raw entries, as the node sent them.
    pub fn into_raw(self) -> Bytes {
        self.raw
    }

    /// The entries without copying: topics and payload borrowed.
    pub fn entries(&self) -> impl Iterator<Item = RawEntry<'_>> {
        entries(&self.raw).map_while(Result::ok)
    }

    /// The messages; topics and payloads are slices of [`Messages::raw`].
    pub fn iter(&self) -> impl Iterator<Item = Message> + '_ {
        self.entries().map(|e| e.to_message(&self.raw))
    }

    /// How many entries there are.
    pub fn len(&self) -> usize {
        self.entries().count()
    }

    pub fn is_empty(&self) -> bool {
        self.raw.is_empty()
    }

    pub fn into_vec(self) -> Vec<Message> {
        self.iter().collect()
    }
}

/// One reply of a node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// `STORED`
    Stored,
    /// `NOT_FOUND`: to `register`/`retro_subscribe`/`subscribe`, the node
    /// cannot prove nothing was lost since the horizon; reload everything.
    NotFound,
    /// `END` on its own: a `get messages` with nothing queued.
    End,
    /// `VALUE messages 0 <k>` + entries + `END`: a non-empty `get messages`.
    Messages(Messages),
    /// `STAT <name> <value>` lines, then `END`.
    Stats(Vec<(String, String)>),
    /// `VERSION <v>`
    Version(String),
    /// `ERROR`: an unknown command (the node closes the connection).
    Error,
    /// `CLIENT_ERROR <why>`
    ClientError(String),
    /// `SERVER_ERROR <why>`
    ServerError(String),
}

impl Reply {
    /// `ERROR`, `CLIENT_ERROR ...` or `SERVER_ERROR ...`.
    pub fn is_error(&self) -> bool {
        matches!(
            self,
            Reply::Error | Reply::ClientError(_) | Reply::ServerError(_)
        )
    }
}

impl fmt::Display for Reply {
    /// The reply's first line (a value is summarised by its size).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reply::Stored => f.write_str("STORED"),
            Reply::NotFound => f.write_str("NOT_FOUND"),
            Reply::End => f.write_str("END"),
            Reply::Messages(m) => write!(
                f,
                "VALUE messages 0 {} ({} entries)",
                m.raw.len().saturating_sub(2),
                m.len()
            ),
            Reply::Stats(s) => write!(f, "{} STAT lines", s.len()),
            Reply::Version(v) => write!(f, "VERSION {v}"),
            Reply::Error => f.write_str("ERROR"),
            Reply::ClientError(why) => write!(f, "CLIENT_ERROR {why}"),
            Reply::ServerError(why) => write!(f, "SERVER_ERROR {why}"),
        }
    }
}

/// One request of a client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// `set subscribe 0 0 <n> [noreply]`: topics, space separated.
    Subscribe { topics: Vec<Bytes>, noreply: bool },
    /// `set unsubscribe 0 0 <n> [noreply]`
    Unsubscribe { topics: Vec<Bytes>, noreply: bool },
    /// `set publish 0 0 <n> [noreply]`: one `MESSAGE` entry per message.
    Publish {
        messages: Vec<Message>,
        noreply: bool,
    },
    /// `set register 0 0 0 [noreply]`
    Register { noreply: bool },
    /// `set retro_subscribe 0 0 <n> [noreply]`: `<horizon>\r\n<topics>`.
    RetroSubscribe {
        horizon_secs: i64,
        topics: Vec<Bytes>,
        noreply: bool,
    },
    /// `get messages`
    GetMessages,
    /// `stats`
    Stats,
    /// `version`
    Version,
    /// `quit` (the node answers nothing and closes).
    Quit,
}

impl Request {
    /// Whether the node answers this request (`noreply` and `quit` do not).
    pub fn expects_reply(&self) -> bool {
        match self {
            Request::Subscribe { noreply, .. }
            | Request::Unsubscribe { noreply, .. }
            | Request::Publish { noreply, .. }
            | Request::Register { noreply }
            | Request::RetroSubscribe { noreply, .. } => !noreply,
            Request::Quit => false,
            Request::GetMessages | Request::Stats | Request::Version => true,
        }
    }
}

/// Why the codec cannot go on.
#[derive(Debug)]
pub enum CodecError {
    /// The reply stream is not Kraken's (or breaks a [`Limits`] bound).
    Protocol(String),
    /// A request that cannot be framed (a bad topic); nothing was written.
    BadRequest(String),
    Io(io::Error),
}

impl From<io::Error> for CodecError {
    fn from(e: io::Error) -> Self {
        CodecError::Io(e)
    }
}

impl fmt::Display for CodecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CodecError::Protocol(why) => write!(f, "bad reply: {why}"),
            CodecError::BadRequest(why) => write!(f, "bad request: {why}"),
            CodecError::Io(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for CodecError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            CodecError::Io(e) => Some(e),
            _ => None,
        }
    }
}

// ---------------------------------------------------------------------------
// Encoding
// ---------------------------------------------------------------------------

/// `get messages\r\n`
pub const GET_MESSAGES: &[u8] = b"get messages\r\n";
/// `stats\r\n`
pub const STATS: &[u8] = b"stats\r\n";
/// `version\r\n`
pub const VERSION: &[u8] = b"version\r\n";
/// `quit\r\n`
pub const QUIT: &[u8] = b"quit\r\n";

/// Writes `n` in decimal.
pub fn put_num(dst: &mut impl BufMut, mut n: u64) {
    let mut tmp = [0u8; 20];
    let mut i = tmp.len();
    loop {
        i -= 1;
        tmp[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    dst.put_slice(&tmp[i..]);
}

/// How many decimal digits `n` has.
fn digits(mut n: u64) -> usize {
    let mut d = 1;
    while n >= 10 {
        n /= 10;
        d += 1;
    }
    d
}

/// Writes `set <key> 0 0 <len>[ noreply]\r\n`: a data block of `len` bytes
/// and `\r\n` must follow.
pub fn put_set_line(dst: &mut impl BufMut, key: &str, len: usize, noreply: bool) {
    dst.put_slice(b"set ");
    dst.put_slice(key.as_bytes());
    dst.put_slice(b" 0 0 ");
    put_num(dst, len as u64);
    if noreply {
        dst.put_slice(b" noreply");
    }
    dst.put_slice(b"\r\n");
}

/// Writes a whole `set <key> 0 0 <n>[ noreply]\r\n<data>\r\n`.
pub fn put_set(dst: &mut impl BufMut, key: &str, data: &[u8], noreply: bool) {
    put_set_line(dst, key, data.len(), noreply);
    dst.put_slice(data);
    dst.put_slice(b"\r\n");
}

/// The length of `topics` joined by single spaces.
pub fn topic_list_len<T: AsRef<[u8]>>(topics: &[T]) -> usize {
    topics.iter().map(|t| t.as_ref().len()).sum::<usize>() + topics.len().saturating_sub(1)
}

/// Writes `topics` joined by single spaces.
pub fn put_topic_list<T: AsRef<[u8]>>(dst: &mut impl BufMut, topics: &[T]) {
    for (i, t) in topics.iter().enumerate() {
        if i > 0 {
            dst.put_u8(b' ');
        }
        dst.put_slice(t.as_ref());
    }
}

/// Writes a whole `set <key>` (`subscribe` or `unsubscribe`) of `topics`.
pub fn put_topics<T: AsRef<[u8]>>(dst: &mut impl BufMut, key: &str, topics: &[T], noreply: bool) {
    put_set_line(dst, key, topic_list_len(topics), noreply);
    put_topic_list(dst, topics);
    dst.put_slice(b"\r\n");
}

/// The length of one publish entry (`MESSAGE <topics> <len>\r\n<payload>\r\n`).
pub fn entry_len<T: AsRef<[u8]>>(topics: &[T], payload_len: usize) -> usize {
    b"MESSAGE".len()
        + topics.iter().map(|t| 1 + t.as_ref().len()).sum::<usize>()
        + 1
        + digits(payload_len as u64)
        + 2
        + payload_len
        + 2
}

/// Writes one publish entry `MESSAGE <topics> <len>\r\n<payload>\r\n` (the
/// same bytes a node delivers it as).
pub fn put_entry<I, T>(dst: &mut impl BufMut, topics: I, payload: &[u8])
where
    I: IntoIterator<Item = T>,
    T: AsRef<[u8]>,
{
    dst.put_slice(b"MESSAGE");
    for t in topics {
        dst.put_u8(b' ');
        dst.put_slice(t.as_ref());
    }
    dst.put_u8(b' ');
    put_num(dst, payload.len() as u64);
    dst.put_slice(b"\r\n");
    dst.put_slice(payload);
    dst.put_slice(b"\r\n");
}

/// Writes a whole `set publish` of `messages`.
pub fn put_publish(dst: &mut impl BufMut, messages: &[Message], noreply: bool) {
    let len = messages
        .iter()
        .map(|m| entry_len(&m.topics, m.payload.len()))
        .sum();
    put_set_line(dst, "publish", len, noreply);
    for m in messages {
        put_entry(dst, &m.topics, &m.payload);
    }
    dst.put_slice(b"\r\n");
}

/// Writes a whole `set retro_subscribe` (`<horizon>\r\n<topics>`).
pub fn put_retro_subscribe<T: AsRef<[u8]>>(
    dst: &mut impl BufMut,
    horizon_secs: i64,
    topics: &[T],
    noreply: bool,
) {
    let horizon = horizon_secs.to_string();
    let len = horizon.len() + 2 + topic_list_len(topics);
    put_set_line(dst, "retro_subscribe", len, noreply);
    dst.put_slice(horizon.as_bytes());
    dst.put_slice(b"\r\n");
    put_topic_list(dst, topics);
    dst.put_slice(b"\r\n");
}

/// Refuses a topic the framing cannot carry: empty, or holding a space,
/// `\r` or `\n`.
pub fn check_topic(topic: &[u8]) -> Result<(), CodecError> {
    if topic.is_empty() {
        return Err(CodecError::BadRequest("empty topic".into()));
    }
    if topic.iter().any(|&b| b == b' ' || b == b'\r' || b == b'\n') {
        return Err(CodecError::BadRequest(format!(
            "topic {:?} holds a space, CR or LF",
            String::from_utf8_lossy(topic)
        )));
    }
    Ok(())
}

fn check_topics(topics: &[Bytes]) -> Result<(), CodecError> {
    topics.iter().try_for_each(|t| check_topic(t))
}

/// Writes `request` after checking its topics.
pub fn encode_request(request: &Request, dst: &mut BytesMut) -> Result<(), CodecError> {
    match request {
        Request::Subscribe { topics, noreply } => {
            check_topics(topics)?;
            put_topics(dst, "subscribe", topics, *noreply);
        }
        Request::Unsubscribe { topics, noreply } => {
            check_topics(topics)?;
            put_topics(dst, "unsubscribe", topics, *noreply);
        }
        Request::Publish { messages, noreply } => {
            if messages.is_empty() {
                return Err(CodecError::BadRequest("a publish of no message".into()));
            }
            for m in messages {
                if m.topics.is_empty() {
                    return Err(CodecError::BadRequest("a message without topics".into()));
                }
                check_topics(&m.topics)?;
            }
            put_publish(dst, messages, *noreply);
        }
        Request::Register { noreply } => put_set(dst, "register", b"", *noreply),
        Request::RetroSubscribe {
            horizon_secs,
            topics,
            noreply,
        } => {
            check_topics(topics)?;
            put_retro_subscribe(dst, *horizon_secs, topics, *noreply);
        }
        Request::GetMessages => dst.put_slice(GET_MESSAGES),
        Request::Stats => dst.put_slice(STATS),
        Request::Version => dst.put_slice(VERSION),
        Request::Quit => dst.put_slice(QUIT),
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Decoding
// ---------------------------------------------------------------------------

/// Encodes [`Request`]s and decodes [`Reply`]s; one per connection.
#[derive(Debug, Default)]
pub struct ClientCodec {
    limits: Limits,
    state: State,
}

/// Where the decoder is in the reply stream.
#[derive(Debug, Default)]
enum State {
    /// Reading a reply line.
    #[default]
    Line,
    /// Read `VALUE messages 0 <k>`; waiting for `k + 2` bytes and `END\r\n`.
    Value { k: usize },
    /// Inside a `stats` reply: the lines so far and their size.
    Stats {
        lines: Vec<(String, String)>,
        bytes: usize,
    },
}

impl ClientCodec {
    pub fn new(limits: Limits) -> ClientCodec {
        ClientCodec {
            limits,
            state: State::Line,
        }
    }

    pub fn limits(&self) -> Limits {
        self.limits
    }
}

fn protocol(why: impl Into<String>) -> CodecError {
    CodecError::Protocol(why.into())
}

fn lossy(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Parses `[0-9]+` (no sign, no spaces) without overflow.
fn parse_len(token: &[u8]) -> Option<usize> {
    if token.is_empty() {
        return None;
    }
    token.iter().try_fold(0usize, |acc, &b| {
        if b.is_ascii_digit() {
            acc.checked_mul(10)?.checked_add(usize::from(b - b'0'))
        } else {
            None
        }
    })
}

impl ClientCodec {
    /// The next whole line, without its CR LF (a node ends every reply line
    /// with CR LF; a bare LF is an error).
    fn line(&self, src: &mut BytesMut) -> Result<Option<BytesMut>, CodecError> {
        let max = self.limits.max_line_bytes;
        let window = src.len().min(max.saturating_add(2));
        let Some(lf) = src[..window].iter().position(|&b| b == b'\n') else {
            if src.len() > max.saturating_add(1) {
                return Err(protocol("reply line too long"));
            }
            return Ok(None);
        };
        if lf == 0 || src[lf - 1] != b'\r' {
            return Err(protocol(format!(
                "reply line {:?} ends in a bare LF",
                lossy(&src[..lf])
            )));
        }
        let mut line = src.split_to(lf + 1);
        line.truncate(lf - 1);
        if line.len() > max {
            return Err(protocol("reply line too long"));
        }
        Ok(Some(line))
    }
}

impl Decoder for ClientCodec {
    type Item = Reply;
    type Error = CodecError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Reply>, CodecError> {
        loop {
            if let State::Value { k } = self.state {
                // `<k + 2 bytes>END\r\n`; no reserve: `k` is the peer's word.
                let need = k + 2 + 5;
                if src.len() < need {
                    return Ok(None);
                }
                if &src[k..k + 2] != b"\r\n" || &src[k + 2..need] != b"END\r\n" {
                    return Err(protocol("VALUE block not followed by CRLF END"));
                }
                let raw = src.split_to(k + 2).freeze();
                src.advance(5);
                self.state = State::Line;
                let messages = Messages::parse(raw).map_err(CodecError::Protocol)?;
                return Ok(Some(Reply::Messages(messages)));
            }
            let Some(line) = self.line(src)? else {
                return Ok(None);
            };
            if let State::Stats { lines, bytes } = &mut self.state {
                if &line[..] == b"END" {
                    let lines = std::mem::take(lines);
                    self.state = State::Line;
                    return Ok(Some(Reply::Stats(lines)));
                }
                let Some(rest) = line.strip_prefix(b"STAT ") else {
                    return Err(protocol(format!(
                        "want STAT or END, got {:?}",
                        lossy(&line)
                    )));
                };
                *bytes += line.len() + 2;
                if *bytes > self.limits.max_reply_bytes {
                    return Err(protocol("stats reply too large"));
                }
                let rest = lossy(rest);
                let (name, value) = rest.split_once(' ').unwrap_or((&rest, ""));
                lines.push((name.to_string(), value.to_string()));
                continue;
            }
            match &line[..] {
                b"STORED" => return Ok(Some(Reply::Stored)),
                b"NOT_FOUND" => return Ok(Some(Reply::NotFound)),
                b"END" => return Ok(Some(Reply::End)),
                b"ERROR" => return Ok(Some(Reply::Error)),
                _ => {}
            }
            if let Some(k) = line.strip_prefix(b"VALUE messages 0 ") {
                let k = parse_len(k)
                    .filter(|&k| k <= self.limits.max_reply_bytes)
                    .ok_or_else(|| protocol(format!("bad VALUE line {:?}", lossy(&line))))?;
                self.state = State::Value { k };
                continue;
            }
            if line.starts_with(b"STAT ") {
                let rest = lossy(&line[5..]);
                let (name, value) = rest.split_once(' ').unwrap_or((&rest, ""));
                self.state = State::Stats {
                    lines: vec![(name.to_string(), value.to_string())],
                    bytes: line.len() + 2,
                };
                continue;
            }
            let text = |prefix: &[u8]| lossy(line[prefix.len()..].trim_ascii_start());
            if line.starts_with(b"CLIENT_ERROR") {
                return Ok(Some(Reply::ClientError(text(b"CLIENT_ERROR"))));
            }
            if line.starts_with(b"SERVER_ERROR") {
                return Ok(Some(Reply::ServerError(text(b"SERVER_ERROR"))));
            }
            if line.starts_with(b"VERSION ") {
                return Ok(Some(Reply::Version(text(b"VERSION"))));
            }
            return Err(protocol(format!("unexpected reply {:?}", lossy(&line))));
        }
    }
}

impl Encoder<Request> for ClientCodec {
    type Error = CodecError;

    fn encode(&mut self, item: Request, dst: &mut BytesMut) -> Result<(), CodecError> {
        encode_request(&item, dst)
    }
}

impl Encoder<&Request> for ClientCodec {
    type Error = CodecError;

    fn encode(&mut self, item: &Request, dst: &mut BytesMut) -> Result<(), CodecError> {
        encode_request(item, dst)
    }
}

/// One entry of a `get messages` value, borrowed from it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RawEntry<'a> {
    /// The topics as the header holds them, space separated (runs of
    /// spaces possible); at least one.
    pub topics: &'a [u8],
    pub payload: &'a [u8],
}

impl<'a> RawEntry<'a> {
    /// The topics, one by one.
    pub fn topics(&self) -> impl Iterator<Item = &'a [u8]> {
        self.topics.split(|&b| b == b' ').filter(|t| !t.is_empty())
    }

    /// As a [`Message`] sharing `buf`, the buffer this entry lies in.
    pub fn to_message(&self, buf: &Bytes) -> Message {
        Message {
            topics: self.topics().map(|t| buf.slice_ref(t)).collect(),
            payload: buf.slice_ref(self.payload),
        }
    }
}

/// Walks the entries of a `get messages` value (the `<k> + 2` bytes: each
/// entry `MESSAGE <topics> <len>\r\n<payload>\r\n`) by their length fields,
/// without copying. A header's tokens are split on runs of spaces:
/// `MESSAGE`, at least one topic, the decimal length. The payload is taken
/// by length, so it may hold anything. After an error it yields nothing.
pub fn entries(raw: &[u8]) -> Entries<'_> {
    Entries {
        rest: raw,
        failed: false,
    }
}

/// See [`entries`].
pub struct Entries<'a> {
    rest: &'a [u8],
    failed: bool,
}

impl<'a> Iterator for Entries<'a> {
    type Item = Result<RawEntry<'a>, String>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.rest.is_empty() || self.failed {
            return None;
        }
        let entry = self.parse_one();
        self.failed = entry.is_err();
        Some(entry)
    }
}

impl<'a> Entries<'a> {
    fn parse_one(&mut self) -> Result<RawEntry<'a>, String> {
        let rest = self.rest;
        let nl = rest
            .iter()
            .position(|&b| b == b'\n')
            .filter(|&nl| nl > 0 && rest[nl - 1] == b'\r')
            .ok_or("entry header without CRLF")?;
        let header = &rest[..nl - 1];
        let bad = || format!("bad entry header {:?}", lossy(header));
        if header.contains(&b'\r') {
            return Err(bad());
        }
        let header = trim_spaces(header.strip_prefix(b"MESSAGE ").ok_or_else(bad)?);
        let sp = header.iter().rposition(|&b| b == b' ').ok_or_else(bad)?;
        let len = parse_len(&header[sp + 1..]).ok_or_else(bad)?;
        let topics = trim_spaces(&header[..sp]);
        let body = &rest[nl + 1..];
        if body.len() < len.saturating_add(2) {
            return Err("entry payload runs past the value".into());
        }
        if &body[len..len + 2] != b"\r\n" {
            return Err("entry payload not followed by CRLF".into());
        }
        self.rest = &body[len + 2..];
        Ok(RawEntry {
            topics,
            payload: &body[..len],
        })
    }
}

fn trim_spaces(mut b: &[u8]) -> &[u8] {
    while let [b' ', rest @ ..] = b {
        b = rest;
    }
    while let [rest @ .., b' '] = b {
        b = rest;
    }
    b
}

/// Parses the entries of a `get messages` value into [`Message`]s sharing
/// `raw` (see [`entries`]); all or nothing.
pub fn parse_entries(raw: &Bytes) -> Result<Vec<Message>, String> {
    entries(raw).map(|e| e.map(|e| e.to_message(raw))).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Decodes `input` fed one byte at a time (every split point).
    fn bytewise(input: &[u8], limits: Limits) -> Result<Vec<Reply>, String> {
        let mut codec = ClientCodec::new(limits);
        let mut out = Vec::new();
        let mut buf = BytesMut::new();
        for &b in input {
            buf.put_u8(b);
            while let Some(r) = codec.decode(&mut buf).map_err(|e| e.to_string())? {
                out.push(r);
            }
        }
        assert!(buf.is_empty(), "left over: {buf:?}");
        Ok(out)
    }

    fn all(input: &[u8]) -> Result<Vec<Reply>, String> {
        bytewise(input, Limits::default())
    }

    fn msg(topics: &[&str], payload: &[u8]) -> Message {
        Message::new(topics, payload)
    }

    #[test]
    fn decodes_every_reply() {
        let input = b"STORED\r\nNOT_FOUND\r\nEND\r\n\
            VALUE messages 0 48\r\nMESSAGE a b 3\r\nx\r\n\r\nMESSAGE  c   10 \r\nEND\r\nEND\r\n\r\nEND\r\n\
            STAT pid 42\r\nSTAT uptime 7\r\nSTAT empty\r\nEND\r\n\
            VERSION 1.0.0\r\n\
            CLIENT_ERROR bad publish block\r\nSERVER_ERROR Too many clients\r\nERROR\r\n";
        let got = all(input).unwrap();
        let Reply::Messages(m) = &got[3] else {
            panic!("{:?}", got[3]);
        };
        assert_eq!(
            m.iter().collect::<Vec<_>>(),
            vec![msg(&["a", "b"], b"x\r\n"), msg(&["c"], b"END\r\nEND\r\n")]
        );
        assert_eq!(m.raw().len(), 50);
        assert_eq!(
            got,
            vec![
                Reply::Stored,
                Reply::NotFound,
                Reply::End,
                got[3].clone(),
                Reply::Stats(vec![
                    ("pid".into(), "42".into()),
                    ("uptime".into(), "7".into()),
                    ("empty".into(), "".into()),
                ]),
                Reply::Version("1.0.0".into()),
                Reply::ClientError("bad publish block".into()),
                Reply::ServerError("Too many clients".into()),
                Reply::Error,
            ]
        );
    }

    #[test]
    fn refuses_what_no_node_sends() {
        for bad in [
            &b"HELLO\r\n"[..],
            b"STORED\n",
            b"VALUE messages 0 x\r\n",
            b"VALUE messages 0 -1\r\n",
            b"VALUE messages 0 99999999999999999999999\r\n",
            b"VALUE other 0 3\r\n",
            b"VALUE messages 0 3\r\nabcdeEND\r\n",
            b"VALUE messages 0 3\r\nabc\r\nEND!\r\n",
            b"VALUE messages 0 11\r\nMESSAGE t 2\r\n\r\nEND\r\n",
            b"VALUE messages 0 9\r\nMESSAGE 0\r\n\r\nEND\r\n",
            b"VALUE messages 0 11\r\nMASSAGE t 0\r\n\r\nEND\r\n",
            b"VALUE messages 0 11\r\nMESSAGE t x\r\n\r\nEND\r\n",
            b"VALUE messages 0 12\r\nMESSAGE t 1\r\nxy\r\nEND\r\n",
            b"STAT a 1\r\nSTORED\r\n",
        ] {
            assert!(all(bad).is_err(), "{:?}", lossy(bad));
        }
    }

    #[test]
    fn bounded_by_its_limits() {
        let limits = Limits {
            max_line_bytes: 16,
            max_reply_bytes: 32,
        };
        // A line of exactly the limit passes; one byte more does not, even
        // before its line end arrives.
        assert!(bytewise(b"CLIENT_ERROR abc\r\n", limits).is_ok());
        assert!(bytewise(b"CLIENT_ERROR abcd\r\n", limits).is_err());
        let mut codec = ClientCodec::new(limits);
        let mut endless = BytesMut::from(&[b'a'; 18][..]);
        assert!(codec.decode(&mut endless).is_err());
        // A value past the limit is refused on its VALUE line, and nothing
        // is reserved for it.
        let mut codec = ClientCodec::new(limits);
        let mut buf = BytesMut::from(&b"VALUE messages 0 33\r\n"[..]);
        assert!(codec.decode(&mut buf).is_err());
        let mut codec = ClientCodec::default();
        let mut buf = BytesMut::from(&b"VALUE messages 0 1000000000\r\n"[..]);
        assert!(codec.decode(&mut buf).unwrap().is_none());
        assert!(buf.capacity() < 1024, "reserved {}", buf.capacity());
        // A stats reply past the limit.
        assert!(bytewise(
            b"STAT a 1\r\nSTAT b 2\r\nSTAT c 3\r\nSTAT d 4\r\nEND\r\n",
            limits
        )
        .is_err());
        assert!(bytewise(b"STAT a 1\r\nSTAT b 2\r\nSTAT c 3\r\nEND\r\n", limits).is_ok());
    }

    #[test]
    fn encodes_every_request() {
        let t = |v: &[&str]| topics_of(v);
        let cases: Vec<(Request, &[u8])> = vec![
            (
                Request::Subscribe {
                    topics: t(&["a", "bb"]),
                    noreply: false,
                },
                b"set subscribe 0 0 4\r\na bb\r\n",
            ),
            (
                Request::Unsubscribe {
                    topics: t(&["a"]),
                    noreply: true,
                },
                b"set unsubscribe 0 0 1 noreply\r\na\r\n",
            ),
            (
                Request::Publish {
                    messages: vec![msg(&["t1", "t2"], b"hi\r\n"), msg(&["t3"], b"")],
                    noreply: false,
                },
                b"set publish 0 0 39\r\nMESSAGE t1 t2 4\r\nhi\r\n\r\nMESSAGE t3 0\r\n\r\n\r\n",
            ),
            (
                Request::Register { noreply: false },
                b"set register 0 0 0\r\n\r\n",
            ),
            (
                Request::RetroSubscribe {
                    horizon_secs: -5,
                    topics: t(&["x", "y"]),
                    noreply: false,
                },
                b"set retro_subscribe 0 0 7\r\n-5\r\nx y\r\n",
            ),
            (Request::GetMessages, b"get messages\r\n"),
            (Request::Stats, b"stats\r\n"),
            (Request::Version, b"version\r\n"),
            (Request::Quit, b"quit\r\n"),
        ];
        for (request, want) in cases {
            let mut dst = BytesMut::new();
            ClientCodec::default().encode(&request, &mut dst).unwrap();
            assert_eq!(lossy(&dst), lossy(want), "{request:?}");
        }
        let mut n = Vec::new();
        put_num(&mut n, 0);
        put_num(&mut n, u64::MAX);
        assert_eq!(n, b"018446744073709551615");
    }

    #[test]
    fn refuses_topics_that_break_the_framing() {
        for bad in ["", "a b", "a\r", "\nb"] {
            let mut dst = BytesMut::new();
            let r = ClientCodec::default().encode(
                Request::Subscribe {
                    topics: topics_of([bad]),
                    noreply: false,
                },
                &mut dst,
            );
            assert!(matches!(r, Err(CodecError::BadRequest(_))), "{bad:?}");
            assert!(dst.is_empty());
        }
        let mut dst = BytesMut::new();
        let no_topic = Request::Publish {
            messages: vec![Message::new(Vec::<&str>::new(), b"x")],
            noreply: false,
        };
        assert!(ClientCodec::default().encode(no_topic, &mut dst).is_err());
    }
}
