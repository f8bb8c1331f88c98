//! [`RespCodec`]: the bounded decoder of client commands and the encoder of
//! replies, for `tokio_util`'s `FramedRead`/`FramedWrite`.
//!
//! Framing, as Redis 7 reads it:
//!
//! - a command that starts with `*` is an array of bulk strings:
//!   `*<n>\r\n` then `n` times `$<len>\r\n<len bytes>\r\n`. Counts and
//!   lengths are decimal as Redis reads them (no sign but `-`, no leading
//!   zero, no blank). An array of `n <= 0` is skipped without an answer;
//! - anything else is an inline command: one line ending at LF (a CR before
//!   it is dropped), split as [`super::inline`] describes; an empty line is
//!   skipped without an answer.
//!
//! Bounds ([`RespLimits`]), each answered like Redis answers its own (the
//! text after `-ERR Protocol error: `), then the connection closes:
//!
//! - an inline line longer than `max_inline_bytes`: `too big inline request`;
//! - a count or length of more than 20 characters: `too big mbulk count
//!   string` / `too big bulk count string`; one that is not a number, or out
//!   of range (more than `max_args` elements, a bulk longer than
//!   `max_bulk_bytes`): `invalid multibulk length` / `invalid bulk length`;
//! - not `$` where a bulk string must start: `expected '$', got '<byte>'`;
//! - a command whose arguments together (each counted as its length + 32
//!   bytes of bookkeeping) exceed `max_command_bytes`: `too big command`;
//! - a bulk string not followed by CR LF: `expected CRLF after bulk string`
//!   (stricter than Redis, which skips two bytes unread);
//! - an inline line with an open quote: `unbalanced quotes in request`.
//!
//! The decoder never reserves buffer space on a client's word: an array's
//! elements are collected one by one as they arrive, and a bulk string is
//! taken out of the buffer only once all its bytes are there (the reader
//! grows the buffer as bytes arrive). Between calls it holds at most
//! `max(max_inline_bytes, max_bulk_bytes) + 2` bytes in the buffer, plus
//! the arguments of the command being read (bounded by
//! `max_command_bytes`). After a [`RespCommand::ProtocolError`] or
//! [`RespCommand::Quit`] it yields nothing more and drops what arrives.
//!
//! The encoder writes [`Reply`]s in the connection's current [`Protocol`]
//! ([`RespCodec::set_protocol`]).

use bytes::{Buf, Bytes, BytesMut};
use tokio_util::codec::{Decoder, Encoder};

use super::command::{parse_redis_i64, ChannelRules, RespCommand};
use super::inline::split_inline;
use super::reply::{Protocol, Reply};
use crate::codec::take_block;

/// Size limits the decoder enforces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RespLimits {
    /// Longest inline command line, without its line end (default 64 KiB,
    /// as Redis).
    pub max_inline_bytes: usize,
    /// Longest bulk string (default 16 MiB, the memcached dialect's
    /// `max_request_bytes`). Arguments of an inline line are bounded by
    /// `max_inline_bytes` instead.
    pub max_bulk_bytes: usize,
    /// Most elements in one command array (default 1 Mi).
    pub max_args: usize,
    /// Most bytes one command's arguments may hold, each counted as its
    /// length + 32 (default 32 MiB).
    pub max_command_bytes: usize,
    /// Longest channel name (default 1024, `max_topic_bytes`).
    pub max_channel_bytes: usize,
}

impl Default for RespLimits {
    fn default() -> Self {
        RespLimits {
            max_inline_bytes: 64 * 1024,
            max_bulk_bytes: 16 * 1024 * 1024,
            max_args: 1024 * 1024,
            max_command_bytes: 32 * 1024 * 1024,
            max_channel_bytes: 1024,
        }
    }
}

impl RespLimits {
    /// The most bytes the decoder leaves in its buffer between calls.
    pub fn buffer_bound(&self) -> usize {
        self.max_inline_bytes
            .max(self.max_bulk_bytes)
            .max(HEADER_MAX)
            .saturating_add(2)
    }
}

/// What one argument costs besides its bytes (its `Bytes` handle).
const ARG_OVERHEAD: usize = 32;

/// Arguments up to this long are always copied out of the read buffer
/// (larger ones too when they are less than half of what is left of it).
const COPY_ARG_MAX: usize = 1024;

/// Longest count or length text: `-9223372036854775808` (Redis's limit).
const DIGITS_MAX: usize = 20;

/// Longest header line (`*`/`$`, digits) before its CR.
const HEADER_MAX: usize = 1 + DIGITS_MAX;

/// The RESP codec of one connection: decodes [`RespCommand`]s, encodes
/// [`Reply`]s in the connection's [`Protocol`].
#[derive(Debug)]
pub struct RespCodec {
    limits: RespLimits,
    /// How replies are spelled; RESP2 until `HELLO 3`.
    protocol: Protocol,
    state: State,
    /// The arguments of the array being read, collected as they arrive.
    args: Vec<Bytes>,
    /// Bulk strings of that array still to come.
    pending: usize,
    /// What its arguments cost so far, against `max_command_bytes`.
    charged: usize,
}

/// Where the decoder is in the command stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Between commands.
    Idle,
    /// Reading an inline line; `scanned` bytes are known to hold no LF.
    Inline { scanned: usize },
    /// Reading `*<n>\r\n`.
    Count,
    /// Reading `$<len>\r\n`.
    BulkHeader,
    /// Waiting for `len` bytes and CR LF.
    Bulk { len: usize },
    /// A protocol error or `QUIT` was yielded: nothing more is decoded.
    Closed,
}

impl RespCodec {
    pub fn new(limits: RespLimits) -> Self {
        RespCodec {
            limits,
            protocol: Protocol::Resp2,
            state: State::Idle,
            args: Vec::new(),
            pending: 0,
            charged: 0,
        }
    }

    /// The protocol replies are encoded in.
    pub fn protocol(&self) -> Protocol {
        self.protocol
    }

    /// Switches the protocol replies are encoded in (after `HELLO`, before
    /// encoding its reply; back to RESP2 on `RESET`).
    pub fn set_protocol(&mut self, protocol: Protocol) {
        self.protocol = protocol;
    }

    /// The limits this codec enforces.
    pub fn limits(&self) -> RespLimits {
        self.limits
    }

    fn rules(&self) -> ChannelRules {
        ChannelRules {
            max_channel_bytes: self.limits.max_channel_bytes,
        }
    }

    /// Enters [`State::Closed`], drops what is buffered, and yields the
    /// protocol error.
    fn fail(&mut self, src: &mut BytesMut, why: &[u8]) -> Option<RespCommand> {
        self.state = State::Closed;
        self.args = Vec::new();
        src.clear();
        let mut text = b"ERR Protocol error: ".to_vec();
        text.extend_from_slice(why);
        Some(RespCommand::ProtocolError(Reply::error(text)))
    }

    /// A complete command: parse it; `QUIT` closes the stream.
    fn finish(&mut self, src: &mut BytesMut, args: Vec<Bytes>) -> Option<RespCommand> {
        self.state = State::Idle;
        let command = RespCommand::parse(args, self.rules());
        if command == RespCommand::Quit {
            // Nothing pipelined after QUIT is run.
            self.state = State::Closed;
            src.clear();
        }
        Some(command)
    }

    /// Charges one argument of `len` bytes against `max_command_bytes`.
    fn charge(&mut self, len: usize) -> bool {
        match self
            .charged
            .checked_add(len)
            .and_then(|c| c.checked_add(ARG_OVERHEAD))
        {
            Some(total) if total <= self.limits.max_command_bytes => {
                self.charged = total;
                true
            }
            _ => false,
        }
    }
}

/// A header line `<marker><digits>\r\n` at the start of `src`.
enum Header {
    /// Not all there yet.
    Partial,
    /// No CR within the longest valid header.
    TooBig,
    /// CR not followed by LF, or not a number as Redis reads one.
    Invalid,
    /// The number, and the header's length including CR LF.
    Number(i64, usize),
}

fn header(src: &[u8]) -> Header {
    let window = &src[..src.len().min(HEADER_MAX + 1)];
    let Some(cr) = window.iter().position(|&b| b == b'\r') else {
        return if src.len() > HEADER_MAX {
            Header::TooBig
        } else {
            Header::Partial
        };
    };
    match src.get(cr + 1) {
        None => Header::Partial,
        Some(b'\n') => match parse_redis_i64(&src[1..cr]) {
            Some(n) => Header::Number(n, cr + 2),
            None => Header::Invalid,
        },
        Some(_) => Header::Invalid,
    }
}

impl Decoder for RespCodec {
    type Item = RespCommand;
    type Error = std::io::Error;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<RespCommand>, std::io::Error> {
        loop {
            match self.state {
                State::Closed => {
                    src.clear();
                    return Ok(None);
                }
                State::Idle => match src.first() {
                    None => return Ok(None),
                    Some(b'*') => self.state = State::Count,
                    Some(_) => self.state = State::Inline { scanned: 0 },
                },
                State::Count => match header(src) {
                    Header::Partial => return Ok(None),
                    Header::TooBig => return Ok(self.fail(src, b"too big mbulk count string")),
                    Header::Invalid => return Ok(self.fail(src, b"invalid multibulk length")),
                    Header::Number(n, used) => {
                        src.advance(used);
                        if n <= 0 {
                            // Redis skips empty and null arrays silently.
                            self.state = State::Idle;
                            continue;
                        }
                        if n as u64 > self.limits.max_args as u64 || n > i64::from(i32::MAX) {
                            return Ok(self.fail(src, b"invalid multibulk length"));
                        }
                        // No `with_capacity(n)`: `n` is the client's word.
                        self.args = Vec::new();
                        self.pending = n as usize;
                        self.charged = 0;
                        self.state = State::BulkHeader;
                    }
                },
                State::BulkHeader => {
                    match src.first() {
                        None => return Ok(None),
                        Some(b'$') => {}
                        Some(&other) => {
                            let mut why = b"expected '$', got '".to_vec();
                            why.push(other);
                            why.push(b'\'');
                            return Ok(self.fail(src, &why));
                        }
                    }
                    match header(src) {
                        Header::Partial => return Ok(None),
                        Header::TooBig => return Ok(self.fail(src, b"too big bulk count string")),
                        Header::Invalid => return Ok(self.fail(src, b"invalid bulk length")),
                        Header::Number(len, used) => {
                            if len < 0 || len as u64 > self.limits.max_bulk_bytes as u64 {
                                return Ok(self.fail(src, b"invalid bulk length"));
                            }
                            let len = len as usize;
                            if !self.charge(len) {
                                return Ok(self.fail(src, b"too big command"));
                            }
                            src.advance(used);
                            self.state = State::Bulk { len };
                        }
                    }
                }
                State::Bulk { len } => {
                    // `len <= max_bulk_bytes`; saturation only matters for a
                    // limit of `usize::MAX`, whose bulk can never arrive.
                    let needed = len.saturating_add(2);
                    if src.len() < needed {
                        return Ok(None);
                    }
                    if &src[len..needed] != b"\r\n" {
                        return Ok(self.fail(src, b"expected CRLF after bulk string"));
                    }
                    // A small argument (a subscribed channel's name, say)
                    // is copied; a large one, most of its buffer, is not.
                    let copy = len <= COPY_ARG_MAX || len < src.capacity() / 2;
                    let arg = take_block(src, len, copy);
                    self.args.push(arg);
                    self.pending -= 1;
                    if self.pending > 0 {
                        self.state = State::BulkHeader;
                        continue;
                    }
                    let args = std::mem::take(&mut self.args);
                    return Ok(self.finish(src, args));
                }
                State::Inline { scanned } => {
                    let max = self.limits.max_inline_bytes;
                    // A line of `max` bytes may still be followed by CR LF.
                    let window = src.len().min(max.saturating_add(2));
                    let scanned = scanned.min(window);
                    let Some(lf) = src[scanned..window]
                        .iter()
                        .position(|&b| b == b'\n')
                        .map(|i| scanned + i)
                    else {
                        let waiting_for_lf_after_cr =
                            src.len() == max.saturating_add(1) && src.last() == Some(&b'\r');
                        if src.len() > max && !waiting_for_lf_after_cr {
                            return Ok(self.fail(src, b"too big inline request"));
                        }
                        self.state = State::Inline { scanned: window };
                        return Ok(None);
                    };
                    let end = if lf > 0 && src[lf - 1] == b'\r' {
                        lf - 1
                    } else {
                        lf
                    };
                    if end > max {
                        return Ok(self.fail(src, b"too big inline request"));
                    }
                    let parsed = split_inline(&src[..end]);
                    src.advance(lf + 1);
                    match parsed {
                        Err(_) => return Ok(self.fail(src, b"unbalanced quotes in request")),
                        Ok(args) if args.is_empty() => self.state = State::Idle,
                        Ok(args) => return Ok(self.finish(src, args)),
                    }
                }
            }
        }
    }

    /// At end of stream, a command cut short is dropped silently: the client
    /// went away mid-command (Redis does not run it either).
    fn decode_eof(&mut self, src: &mut BytesMut) -> Result<Option<RespCommand>, std::io::Error> {
        let command = self.decode(src)?;
        if command.is_none() {
            src.clear();
            self.args = Vec::new();
        }
        Ok(command)
    }
}

impl Encoder<Reply> for RespCodec {
    type Error = std::io::Error;

    fn encode(&mut self, item: Reply, dst: &mut BytesMut) -> Result<(), std::io::Error> {
        item.encode(self.protocol, dst);
        Ok(())
    }
}

impl Encoder<&Reply> for RespCodec {
    type Error = std::io::Error;

    fn encode(&mut self, item: &Reply, dst: &mut BytesMut) -> Result<(), std::io::Error> {
        item.encode(self.protocol, dst);
        Ok(())
    }
}
