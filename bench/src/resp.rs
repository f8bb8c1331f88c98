//! A small RESP (Redis protocol) client for the Redis modes: commands
//! written as arrays of bulk strings, replies and pushes read from a
//! buffered reader, `message` pushes by a fast path that borrows the
//! payload from the read buffer. Independent of the node's own codec, so
//! that it measures any RESP server the same way.

use tokio::io::{AsyncRead, AsyncReadExt};

/// Appends `*<n>\r\n` and each argument as `$<len>\r\n<arg>\r\n`.
pub fn push_command(out: &mut Vec<u8>, args: &[&[u8]]) {
    out.extend_from_slice(format!("*{}\r\n", args.len()).as_bytes());
    for arg in args {
        out.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
        out.extend_from_slice(arg);
        out.extend_from_slice(b"\r\n");
    }
}

/// One RESP value as the client reads it.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Simple(String),
    Error(String),
    Int(i64),
    /// `$-1` and `_` are `Bulk(None)`.
    Bulk(Option<Vec<u8>>),
    /// `*` arrays and `>` pushes (`*-1` is an empty array here).
    Array(Vec<Value>),
    /// RESP3 `%` maps, flattened (key, value, key, value...).
    Map(Vec<Value>),
    /// Other RESP3 scalars (`#`, `,`, `(`, `=`), as text.
    Other(String),
}

impl Value {
    pub fn describe(&self) -> String {
        let s = format!("{self:?}");
        if s.len() > 120 {
            format!("{}...", &s[..120])
        } else {
            s
        }
    }

    /// Whether this is the confirmation `subscribe <channel> <n>`.
    pub fn is_subscribe_confirmation(&self, channel: &[u8]) -> bool {
        matches!(self, Value::Array(items) if matches!(&items[..],
            [Value::Bulk(Some(kind)), Value::Bulk(Some(ch)), Value::Int(_)]
                if kind == b"subscribe" && ch == channel))
    }
}

/// What [`RespReader::next`] read.
pub enum Item<'a> {
    /// A `message` push (RESP2 array or RESP3 push).
    Message {
        channel: &'a [u8],
        payload: &'a [u8],
    },
    Value(Value),
}

/// A buffered reader of RESP values. Reading is cancel-safe: everything
/// read is kept in the buffer until parsed, so a `next()` dropped by a
/// timeout loses nothing.
pub struct RespReader<R> {
    inner: R,
    buf: Vec<u8>,
    start: usize,
    end: usize,
}

/// A parsed value's extent, or a message's channel and payload ranges.
enum Parsed {
    Message { channel: Range, payload: Range },
    Value(Value),
}

impl<R: AsyncRead + Unpin> RespReader<R> {
    pub fn new(inner: R, capacity: usize) -> Self {
        RespReader {
            inner,
            buf: vec![0; capacity.max(64)],
            start: 0,
            end: 0,
        }
    }

    pub fn get_mut(&mut self) -> &mut R {
        &mut self.inner
    }

    /// The stream back, once nothing more is buffered (set-up is
    /// request/answer, so nothing is).
    pub fn into_inner(self) -> R {
        debug_assert_eq!(self.start, self.end, "unread bytes dropped");
        self.inner
    }

    /// The next value or message.
    pub async fn next(&mut self) -> Result<Item<'_>, String> {
        loop {
            if let Some((parsed, used)) = parse(&self.buf[self.start..self.end])? {
                return Ok(self.take(parsed, used));
            }
            self.read_more().await?;
        }
    }

    /// The next value or message if one is whole in the buffer, without
    /// reading: a reader takes everything one read brought with one look
    /// at the clock.
    pub fn next_buffered(&mut self) -> Result<Option<Item<'_>>, String> {
        let parsed = parse(&self.buf[self.start..self.end])?;
        Ok(parsed.map(|(parsed, used)| self.take(parsed, used)))
    }

    /// Consumes the `used` bytes of a value just parsed at the start.
    fn take(&mut self, parsed: Parsed, used: usize) -> Item<'_> {
        let base = self.start;
        self.start += used;
        match parsed {
            Parsed::Message { channel, payload } => Item::Message {
                channel: &self.buf[base + channel.0..base + channel.1],
                payload: &self.buf[base + payload.0..base + payload.1],
            },
            Parsed::Value(v) => Item::Value(v),
        }
    }

    /// The next value (a message push is returned as an array).
    pub async fn value(&mut self) -> Result<Value, String> {
        match self.next().await? {
            Item::Value(v) => Ok(v),
            Item::Message { channel, payload } => Ok(Value::Array(vec![
                Value::Bulk(Some(b"message".to_vec())),
                Value::Bulk(Some(channel.to_vec())),
                Value::Bulk(Some(payload.to_vec())),
            ])),
        }
    }

    /// Reads more bytes (one read), making room first. Cancel-safe.
    pub async fn read_more(&mut self) -> Result<(), String> {
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        } else if self.end == self.buf.len() {
            if self.start > 0 {
                self.buf.copy_within(self.start..self.end, 0);
                self.end -= self.start;
                self.start = 0;
            } else {
                let n = self.buf.len() * 2;
                self.buf.resize(n, 0);
            }
        }
        let n = self
            .inner
            .read(&mut self.buf[self.end..])
            .await
            .map_err(|e| format!("read: {e}"))?;
        if n == 0 {
            return Err("connection closed".into());
        }
        self.end += n;
        Ok(())
    }
}

/// Parses one value from the start of `b`: `None` if incomplete.
fn parse(b: &[u8]) -> Result<Option<(Parsed, usize)>, String> {
    for prefix in [&b"*3\r\n$7\r\nmessage\r\n"[..], b">3\r\n$7\r\nmessage\r\n"] {
        if b.starts_with(prefix) {
            let Some((channel, p)) = bulk_range(b, prefix.len())? else {
                return Ok(None);
            };
            let Some((payload, p)) = bulk_range(b, p)? else {
                return Ok(None);
            };
            return Ok(Some((Parsed::Message { channel, payload }, p)));
        }
    }
    Ok(value(b, 0)?.map(|(v, p)| (Parsed::Value(v), p)))
}

/// Start and end of a byte range in the read buffer.
type Range = (usize, usize);

/// A `$<len>\r\n<bytes>\r\n` at `p`: the bytes' range and the next index.
fn bulk_range(b: &[u8], p: usize) -> Result<Option<(Range, usize)>, String> {
    if p >= b.len() {
        return Ok(None);
    }
    if b[p] != b'$' {
        return Err(format!("expected a bulk string, got {:?}", b[p] as char));
    }
    let Some((line, next)) = line(b, p + 1) else {
        return Ok(None);
    };
    let len: usize = number(line)?
        .try_into()
        .map_err(|_| "negative bulk length in a message".to_string())?;
    if b.len() < next + len + 2 {
        return Ok(None);
    }
    Ok(Some(((next, next + len), next + len + 2)))
}

/// The line starting at `p` (without CR LF) and the index after it.
fn line(b: &[u8], p: usize) -> Option<(&[u8], usize)> {
    let i = b.get(p..)?.windows(2).position(|w| w == b"\r\n")?;
    Some((&b[p..p + i], p + i + 2))
}

fn number(text: &[u8]) -> Result<i64, String> {
    let bad = || format!("bad number {:?}", String::from_utf8_lossy(text));
    let (negative, digits) = match text.split_first() {
        Some((b'-', rest)) => (true, rest),
        _ => (false, text),
    };
    if digits.is_empty() || digits.len() > 18 {
        return Err(bad());
    }
    let mut n = 0i64;
    for &d in digits {
        if !d.is_ascii_digit() {
            return Err(bad());
        }
        n = n * 10 + (d - b'0') as i64;
    }
    Ok(if negative { -n } else { n })
}

fn value(b: &[u8], p: usize) -> Result<Option<(Value, usize)>, String> {
    let Some(&marker) = b.get(p) else {
        return Ok(None);
    };
    let Some((text, next)) = line(b, p + 1) else {
        return Ok(None);
    };
    let text_s = || String::from_utf8_lossy(text).into_owned();
    Ok(Some(match marker {
        b'+' => (Value::Simple(text_s()), next),
        b'-' => (Value::Error(text_s()), next),
        b':' => (Value::Int(number(text)?), next),
        b'_' => (Value::Bulk(None), next),
        b'#' | b',' | b'(' => (Value::Other(text_s()), next),
        b'$' | b'=' => {
            let n = number(text)?;
            if n < 0 {
                return Ok(Some((Value::Bulk(None), next)));
            }
            let n = n as usize;
            if b.len() < next + n + 2 {
                return Ok(None);
            }
            let bytes = b[next..next + n].to_vec();
            if marker == b'=' {
                (
                    Value::Other(String::from_utf8_lossy(&bytes).into_owned()),
                    next + n + 2,
                )
            } else {
                (Value::Bulk(Some(bytes)), next + n + 2)
            }
        }
        b'*' | b'>' | b'%' | b'~' => {
            let n = number(text)?;
            let count = if marker == b'%' {
                2 * n.max(0)
            } else {
                n.max(0)
            };
            let mut items = Vec::new();
            let mut q = next;
            for _ in 0..count {
                match value(b, q)? {
                    Some((v, after)) => {
                        items.push(v);
                        q = after;
                    }
                    None => return Ok(None),
                }
            }
            if marker == b'%' {
                (Value::Map(items), q)
            } else {
                (Value::Array(items), q)
            }
        }
        other => return Err(format!("unexpected RESP type byte {:?}", other as char)),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn items(wire: &[u8], capacity: usize) -> Vec<String> {
        let mut r = RespReader::new(wire, capacity);
        let mut out = Vec::new();
        loop {
            match r.next().await {
                Ok(Item::Message { channel, payload }) => out.push(format!(
                    "message {} {}",
                    String::from_utf8_lossy(channel),
                    String::from_utf8_lossy(payload)
                )),
                Ok(Item::Value(v)) => out.push(format!("{v:?}")),
                Err(e) => {
                    out.push(e);
                    return out;
                }
            }
        }
    }

    #[test]
    fn reads_replies_and_pushes_across_buffer_refills() {
        let wire = b"*3\r\n$9\r\nsubscribe\r\n$1\r\na\r\n:1\r\n\
*3\r\n$7\r\nmessage\r\n$1\r\na\r\n$4\r\nx\r\ny\r\n\
>3\r\n$7\r\nmessage\r\n$2\r\nbb\r\n$0\r\n\r\n:7\r\n-ERR no\r\n_\r\n$-1\r\n\
%1\r\n$1\r\nk\r\n:2\r\n";
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        for capacity in [1, 7, 64, 4096] {
            let got = rt.block_on(items(wire, capacity));
            assert_eq!(
                got,
                [
                    r#"Array([Bulk(Some([115, 117, 98, 115, 99, 114, 105, 98, 101])), Bulk(Some([97])), Int(1)])"#,
                    "message a x\r\ny",
                    "message bb ",
                    "Int(7)",
                    r#"Error("ERR no")"#,
                    "Bulk(None)",
                    "Bulk(None)",
                    r#"Map([Bulk(Some([107])), Int(2)])"#,
                    "connection closed",
                ],
                "capacity {capacity}"
            );
        }
    }

    #[test]
    fn commands_are_arrays_of_bulk_strings() {
        let mut out = Vec::new();
        push_command(&mut out, &[b"PUBLISH", b"ch", b"a\r\nb"]);
        assert_eq!(out, b"*3\r\n$7\r\nPUBLISH\r\n$2\r\nch\r\n$4\r\na\r\nb\r\n");
        let v = Value::Array(vec![
            Value::Bulk(Some(b"subscribe".to_vec())),
            Value::Bulk(Some(b"ch".to_vec())),
            Value::Int(1),
        ]);
        assert!(v.is_subscribe_confirmation(b"ch"));
        assert!(!v.is_subscribe_confirmation(b"c"));
    }
}
