//! The bounded request decoder and response encoder.
//!
//! [`KrakenCodec`] turns a byte stream of pipelined memcached-text requests
//! into [`Request`]s and writes [`Response`]s, for `tokio_util`'s
//! `FramedRead`/`FramedWrite`. It owns the framing rules and the framing
//! limits of `docs/PROTOCOL.md` (§2, §8):
//!
//! - a command line ends at LF; a CR just before it is dropped (a bare LF is
//!   accepted); tokens are split on runs of spaces; commands are
//!   case-sensitive, as in memcached;
//! - a command line longer than [`Limits::max_line_bytes`] is refused with
//!   `CLIENT_ERROR line too long` and the connection closes;
//! - a `set` data block is read by its announced length `<n>` and must be
//!   followed by `\r\n` (`CLIENT_ERROR bad data chunk`, close); a block larger
//!   than [`Limits::max_request_bytes`] is refused with
//!   `CLIENT_ERROR data block too large` and its bytes are skipped as they
//!   arrive, so the connection stays usable; but the
//!   [`MAX_CONSECUTIVE_REFUSALS`]th such refusal in a row (no request
//!   accepted in between) also closes the connection: a client that keeps
//!   sending what will be refused is not worth reading;
//! - anything else it cannot parse is `ERROR`, then close.
//!
//! The decoder never buffers more than it must: at most one command line, or
//! one data block of at most `max_request_bytes` (+2), whatever `<n>` says. It
//! never reserves buffer space on the strength of `<n>`, except that while it
//! skips a refused block it asks for room for [`DISCARD_READ_BYTES`] at a
//! time, so that the reader skips it in large reads (a connection's buffer
//! starts at a few dozen bytes, and one read per few dozen bytes costs far
//! more than the bytes); the buffer is shrunk back when the skip ends. Once
//! it has yielded a closing [`Rejection`] (or [`Request::Quit`]) it yields
//! nothing more.
//!
//! A data block smaller than half of the read buffer behind it is copied
//! out, so that a small request kept for long (a queued message) does not
//! keep a buffer that grew for a large one; a larger block is a slice of it,
//! and the decoder then moves what follows it to a new small buffer, so
//! that the big one is freed with the block and not kept by the connection.
//!
//! What a `set` body means (topics, publish entries, horizons) is decided
//! later, by [`crate::publish`].

use std::borrow::Cow;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use tokio_util::codec::{Decoder, Encoder};

use memchr::memchr;

use crate::num::{format_usize, parse_i64, parse_u32, parse_usize};
use crate::request::{Rejection, Request, SetKey};
use crate::response::Response;

/// Size limits the decoder enforces (`docs/PROTOCOL.md` §8).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Longest command line, without its line end (default 2048).
    pub max_line_bytes: usize,
    /// Largest `set` data block `<n>` (default 16 MiB).
    pub max_request_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_line_bytes: 2048,
            max_request_bytes: 16 * 1024 * 1024,
        }
    }
}

/// Refused requests in a row after which the connection is closed.
///
/// The decoder applies it to the data blocks it refuses: the last one is
/// answered `CLIENT_ERROR data block too large` and closes. Any request it
/// decodes in between starts its count again, including one whose body the
/// connection will refuse, which the decoder cannot know. So a connection
/// should keep a [`RefusalStreak`] of its own over both kinds: count every
/// non-closing [`Rejection`] it is handed and every body it refuses
/// (`bad publish block`, `too many topics in one message`, ...), reset it
/// on a request it carries out, and close when it says so. Then a client
/// alternating the two kinds is closed too.
pub const MAX_CONSECUTIVE_REFUSALS: u32 = 8;

/// How much room the decoder asks of the read buffer while skipping a
/// refused block (at most what is left to skip).
pub const DISCARD_READ_BYTES: usize = 64 * 1024;

/// A read buffer larger than this is shrunk once a skip has ended, if it
/// holds little.
const SHRINK_ABOVE: usize = 4 * 1024;

/// Counts consecutive refused requests: the rule behind
/// [`MAX_CONSECUTIVE_REFUSALS`], for the decoder and for a connection
/// counting the bodies it refuses.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RefusalStreak {
    /// Refusals since the last accepted request.
    count: u32,
}

impl RefusalStreak {
    /// Counts one refusal; true if it is the one that must close the
    /// connection ([`MAX_CONSECUTIVE_REFUSALS`] in a row).
    pub fn refused(&mut self) -> bool {
        self.count = self.count.saturating_add(1);
        self.count >= MAX_CONSECUTIVE_REFUSALS
    }

    /// An accepted request: the streak is over.
    pub fn accepted(&mut self) {
        self.count = 0;
    }

    /// Refusals in a row so far.
    pub fn count(&self) -> u32 {
        self.count
    }
}

/// Kraken's codec: decodes [`Request`]s, encodes [`Response`]s.
///
/// One codec serves one connection: the decoder is a state machine that
/// remembers where in the stream it is between calls.
#[derive(Debug)]
pub struct KrakenCodec {
    /// The limits this connection is held to; fixed for its lifetime.
    limits: Limits,
    /// Where the decoder is in the request stream. Bytes may arrive one at a
    /// time, so everything needed to resume lives here, not on the stack.
    state: State,
    /// Oversized blocks refused in a row.
    refusals: RefusalStreak,
}

impl KrakenCodec {
    pub fn new(limits: Limits) -> Self {
        KrakenCodec {
            limits,
            state: State::Line { scanned: 0 },
            refusals: RefusalStreak::default(),
        }
    }
}

/// The decoder's position in the request stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Reading a command line.
    Line {
        /// How many buffered bytes are already known to hold no LF, so that
        /// a line trickling in is scanned once, not once per arrival.
        scanned: usize,
    },
    /// A `set` line was read; waiting for its `<n>` data bytes and `\r\n`.
    Data {
        /// Which operation the block belongs to.
        key: SetKey,
        /// The announced block length, already checked against
        /// `max_request_bytes`.
        len: usize,
        /// memcached's `noreply` flag from the command line.
        noreply: bool,
    },
    /// Skipping an oversized data block (and its line end) as it arrives,
    /// without buffering it, after `CLIENT_ERROR data block too large`.
    Discard {
        /// Bytes still to skip. Saturates at `u64::MAX` (more than any
        /// connection will ever send).
        remaining: u64,
    },
    /// A closing rejection or `quit` was yielded: the connection is going
    /// away, so every further byte is dropped and nothing more is decoded.
    Closed,
}

/// What one command line asks for.
enum Command {
    /// A request complete in itself (including rejections).
    Done(Request),
    /// A `set` whose data block follows.
    Set {
        key: SetKey,
        len: usize,
        noreply: bool,
    },
}

impl Decoder for KrakenCodec {
    type Item = Request;
    type Error = std::io::Error;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Request>, std::io::Error> {
        loop {
            match self.state {
                State::Closed => {
                    src.clear();
                    return Ok(None);
                }
                State::Discard { remaining } => {
                    let skip = remaining.min(src.len() as u64);
                    src.advance(skip as usize);
                    if skip < remaining {
                        let left = remaining - skip;
                        self.state = State::Discard { remaining: left };
                        // Room for one large read, so the reader does not
                        // skip the block a few dozen bytes per read.
                        src.reserve(left.min(DISCARD_READ_BYTES as u64) as usize);
                        return Ok(None);
                    }
                    shrink(src);
                    self.state = State::Line { scanned: 0 };
                }
                State::Data { key, len, noreply } => {
                    // `len <= max_request_bytes`; saturation only matters for
                    // a limit of `usize::MAX`, whose block can never arrive.
                    let needed = len.saturating_add(2);
                    if src.len() < needed {
                        // No `reserve(needed)`: `<n>` is the client's word,
                        // not a fact. The reader grows the buffer as bytes
                        // actually arrive (`FramedRead` doubles it when full).
                        return Ok(None);
                    }
                    if &src[len..needed] != b"\r\n" {
                        return Ok(Some(self.close(src, client_error("bad data chunk"))));
                    }
                    let copy = len < src.capacity() / 2;
                    let data = take_block(src, len, copy);
                    if !copy {
                        // The buffer is shared with the block now: let it
                        // go with the block instead of reading on into it.
                        shrink(src);
                    }
                    self.state = State::Line { scanned: 0 };
                    self.refusals.accepted();
                    return Ok(Some(Request::Set { key, data, noreply }));
                }
                State::Line { scanned } => {
                    let max = self.limits.max_line_bytes;
                    // A line of `max` bytes may still be followed by CR LF.
                    let window = src.len().min(max.saturating_add(2));
                    // `min`: robust against a caller that shrank the buffer.
                    let scanned = scanned.min(window);
                    let Some(lf) = memchr(b'\n', &src[scanned..window]).map(|i| scanned + i) else {
                        let waiting_for_lf_after_cr =
                            src.len() == max.saturating_add(1) && src.last() == Some(&b'\r');
                        if src.len() > max && !waiting_for_lf_after_cr {
                            return Ok(Some(self.close(src, client_error("line too long"))));
                        }
                        self.state = State::Line { scanned: window };
                        return Ok(None);
                    };
                    let end = if lf > 0 && src[lf - 1] == b'\r' {
                        lf - 1
                    } else {
                        lf
                    };
                    if end > max {
                        return Ok(Some(self.close(src, client_error("line too long"))));
                    }
                    let command = parse_command(&src[..end]);
                    src.advance(lf + 1);
                    self.state = State::Line { scanned: 0 };
                    match command {
                        Command::Done(Request::Invalid(rejection)) if rejection.close => {
                            return Ok(Some(self.close(src, rejection)));
                        }
                        Command::Done(Request::Quit) => {
                            // Nothing pipelined after `quit` is executed.
                            self.state = State::Closed;
                            src.clear();
                            return Ok(Some(Request::Quit));
                        }
                        Command::Done(request) => {
                            self.refusals.accepted();
                            return Ok(Some(request));
                        }
                        Command::Set { len, .. } if len > self.limits.max_request_bytes => {
                            let too_large = client_error("data block too large");
                            if self.refusals.refused() {
                                return Ok(Some(self.close(src, too_large)));
                            }
                            self.state = State::Discard {
                                remaining: (len as u64).saturating_add(2),
                            };
                            return Ok(Some(Request::Invalid(Rejection {
                                close: false,
                                ..too_large
                            })));
                        }
                        Command::Set { key, len, noreply } => {
                            self.state = State::Data { key, len, noreply };
                        }
                    }
                }
            }
        }
    }

    /// At end of stream, a request cut short (a line without its LF, a data
    /// block without all its bytes) is dropped silently: the client went
    /// away mid-request, which is not an error worth reporting.
    fn decode_eof(&mut self, src: &mut BytesMut) -> Result<Option<Request>, std::io::Error> {
        let request = self.decode(src)?;
        if request.is_none() {
            src.clear();
        }
        Ok(request)
    }
}

impl KrakenCodec {
    /// Enters [`State::Closed`], drops what is buffered, and yields the
    /// closing rejection.
    fn close(&mut self, src: &mut BytesMut, rejection: Rejection) -> Request {
        debug_assert!(rejection.close);
        self.state = State::Closed;
        src.clear();
        Request::Invalid(rejection)
    }
}

/// Takes `src[..len]` and the CR LF after it out of `src`: a copy when
/// `copy` (so that what is kept of a small block does not keep the read
/// buffer alive, and the buffer stays the reader's alone), else a slice of
/// the buffer, without a copy.
pub(crate) fn take_block(src: &mut BytesMut, len: usize, copy: bool) -> Bytes {
    if copy {
        let block = Bytes::copy_from_slice(&src[..len]);
        src.advance(len + 2);
        block
    } else {
        let block = src.split_to(len).freeze();
        src.advance(2);
        block
    }
}

/// Replaces a read buffer larger than [`SHRINK_ABOVE`] that holds little
/// with a small copy of what it holds: after a large block was skipped or
/// handed out, a connection should not keep (or keep alive) room it no
/// longer needs.
fn shrink(src: &mut BytesMut) {
    if src.capacity() > SHRINK_ABOVE && src.len() <= SHRINK_ABOVE / 4 {
        let mut small = BytesMut::with_capacity(src.len().max(256));
        small.extend_from_slice(src);
        *src = small;
    }
}

/// `CLIENT_ERROR <why>`, then close: the stream's framing is lost.
fn client_error(why: &'static str) -> Rejection {
    Rejection {
        reply: Response::ClientError(Cow::Borrowed(why)),
        close: true,
    }
}

/// `ERROR`, then close: an unknown or unparsable command line.
const fn unknown_command() -> Command {
    Command::Done(Request::Invalid(Rejection {
        reply: Response::Error,
        close: true,
    }))
}

/// Parses one command line (without its line end).
fn parse_command(line: &[u8]) -> Command {
    let mut tokens = line.split(|&b| b == b' ').filter(|t| !t.is_empty());
    let Some(command) = tokens.next() else {
        return unknown_command();
    };
    match command {
        b"get" => match (tokens.next(), tokens.next()) {
            (Some(b"messages"), None) => Command::Done(Request::GetMessages),
            _ => unknown_command(),
        },
        b"set" => parse_set(tokens).unwrap_or_else(unknown_command),
        b"quit" if tokens.next().is_none() => Command::Done(Request::Quit),
        b"version" if tokens.next().is_none() => Command::Done(Request::Version),
        // memcached's `stats <group>`: one set of statistics here.
        b"stats" => Command::Done(Request::Stats),
        _ => unknown_command(),
    }
}

/// Parses the tokens after `set`: `<key> <flags> <exptime> <n> [noreply]`.
fn parse_set<'a>(mut tokens: impl Iterator<Item = &'a [u8]>) -> Option<Command> {
    let key = match tokens.next()? {
        b"subscribe" => SetKey::Subscribe,
        b"unsubscribe" => SetKey::Unsubscribe,
        b"publish" => SetKey::Publish,
        b"register" => SetKey::Register,
        b"retro_subscribe" => SetKey::RetroSubscribe,
        _ => return None,
    };
    // Flags and exptime are accepted and ignored, but must be numbers.
    parse_u32(tokens.next()?)?;
    parse_i64(tokens.next()?)?;
    let len = parse_usize(tokens.next()?)?;
    let noreply = match tokens.next() {
        None => false,
        Some(b"noreply") => true,
        Some(_) => return None,
    };
    if tokens.next().is_some() {
        return None;
    }
    Some(Command::Set { key, len, noreply })
}

impl Encoder<Response> for KrakenCodec {
    type Error = std::io::Error;

    fn encode(&mut self, item: Response, dst: &mut BytesMut) -> Result<(), std::io::Error> {
        encode_response(&item, dst);
        Ok(())
    }
}

/// Writes one response, reserving its exact size once.
fn encode_response(response: &Response, dst: &mut BytesMut) {
    match response {
        Response::Stored => dst.extend_from_slice(b"STORED\r\n"),
        Response::NotFound => dst.extend_from_slice(b"NOT_FOUND\r\n"),
        Response::End => dst.extend_from_slice(b"END\r\n"),
        Response::Error => dst.extend_from_slice(b"ERROR\r\n"),
        Response::Messages(messages) if messages.is_empty() => dst.extend_from_slice(b"END\r\n"),
        Response::Messages(messages) => {
            // Each entry is header + payload + CRLF; the value length leaves
            // out the last CRLF, which doubles as the memcached terminator.
            let entries: usize = messages
                .iter()
                .map(|m| m.header.len() + m.payload.len() + 2)
                .sum();
            let mut digits = [0u8; 20];
            let value_len = format_usize(entries - 2, &mut digits);
            const VALUE: &[u8] = b"VALUE messages 0 ";
            dst.reserve(VALUE.len() + value_len.len() + 2 + entries + b"END\r\n".len());
            dst.put_slice(VALUE);
            dst.put_slice(value_len);
            dst.put_slice(b"\r\n");
            for message in messages {
                dst.put_slice(&message.header);
                dst.put_slice(&message.payload);
                dst.put_slice(b"\r\n");
            }
            dst.put_slice(b"END\r\n");
        }
        Response::ClientError(why) => line(dst, b"CLIENT_ERROR ", why),
        Response::ServerError(why) => line(dst, b"SERVER_ERROR ", why),
        Response::Version(version) => line(dst, b"VERSION ", version),
        Response::Stats(stats) => {
            let size: usize = stats
                .iter()
                .map(|(name, value)| b"STAT ".len() + name.len() + 1 + value.len() + 2)
                .sum();
            dst.reserve(size + b"END\r\n".len());
            for (name, value) in stats {
                dst.put_slice(b"STAT ");
                dst.put_slice(name.as_bytes());
                dst.put_u8(b' ');
                dst.put_slice(value.as_bytes());
                dst.put_slice(b"\r\n");
            }
            dst.put_slice(b"END\r\n");
        }
    }
}

/// Writes `<prefix><text>\r\n`.
fn line(dst: &mut BytesMut, prefix: &[u8], text: &str) {
    debug_assert!(
        !text.contains(['\r', '\n']),
        "a response line must not break the framing: {text:?}"
    );
    dst.reserve(prefix.len() + text.len() + 2);
    dst.put_slice(prefix);
    dst.put_slice(text.as_bytes());
    dst.put_slice(b"\r\n");
}
