//! The client side of Kraken's memcached text dialect, hand-rolled so that
//! the bench depends on nothing else in the workspace.
//!
//! Requests are appended to a caller-owned buffer (so several can go out in
//! one write); replies are read by [`ReplyReader`], a buffered reader over
//! any `AsyncRead` that hands back whole replies, and the entries of a
//! `get messages` value are walked by [`Entries`] without copying.

use bytes::{Bytes, BytesMut};
use std::io;
use tokio::io::{AsyncRead, AsyncReadExt};

/// Append `set <key> 0 0 <n>\r\n<data>\r\n`.
pub fn push_set(buf: &mut Vec<u8>, key: &str, data: &[u8]) {
    buf.extend_from_slice(b"set ");
    buf.extend_from_slice(key.as_bytes());
    buf.extend_from_slice(b" 0 0 ");
    push_num(buf, data.len() as u64);
    buf.extend_from_slice(b"\r\n");
    buf.extend_from_slice(data);
    buf.extend_from_slice(b"\r\n");
}

/// Append a subscribe (or unsubscribe, `key = "unsubscribe"`) of `topics`.
pub fn push_topics<S: AsRef<[u8]>>(buf: &mut Vec<u8>, key: &str, topics: &[S]) {
    let mut data = Vec::with_capacity(topics.iter().map(|t| t.as_ref().len() + 1).sum());
    for (i, t) in topics.iter().enumerate() {
        if i > 0 {
            data.push(b' ');
        }
        data.extend_from_slice(t.as_ref());
    }
    push_set(buf, key, &data);
}

/// Append one publish entry `MESSAGE <topics> <len>\r\n<payload>\r\n` to a
/// publish data block under construction.
pub fn push_entry<I, S>(block: &mut Vec<u8>, topics: I, payload: &[u8])
where
    I: IntoIterator<Item = S>,
    S: AsRef<[u8]>,
{
    block.extend_from_slice(b"MESSAGE");
    for t in topics {
        block.push(b' ');
        block.extend_from_slice(t.as_ref());
    }
    block.push(b' ');
    push_num(block, payload.len() as u64);
    block.extend_from_slice(b"\r\n");
    block.extend_from_slice(payload);
    block.extend_from_slice(b"\r\n");
}

pub const GET_MESSAGES: &[u8] = b"get messages\r\n";

pub fn push_num(buf: &mut Vec<u8>, mut n: u64) {
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
    buf.extend_from_slice(&tmp[i..]);
}

fn parse_num(s: &[u8]) -> Option<u64> {
    if s.is_empty() || s.len() > 19 {
        return None;
    }
    let mut n = 0u64;
    for &c in s {
        if !c.is_ascii_digit() {
            return None;
        }
        n = n * 10 + (c - b'0') as u64;
    }
    Some(n)
}

/// One reply of the server.
#[derive(Debug, PartialEq, Eq)]
pub enum Reply {
    Stored,
    /// `END`: an empty poll.
    End,
    /// `VALUE messages <flags> <k>`: the entries, including the last entry's
    /// trailing CRLF (k + 2 bytes).
    Value(Bytes),
    /// Anything else (`NOT_FOUND`, `ERROR`, `CLIENT_ERROR ...`,
    /// `SERVER_ERROR ...`): the line without its CRLF.
    Other(Bytes),
}

impl Reply {
    pub fn describe(&self) -> String {
        match self {
            Reply::Stored => "STORED".into(),
            Reply::End => "END".into(),
            Reply::Value(v) => format!("VALUE ({} bytes)", v.len()),
            Reply::Other(l) => String::from_utf8_lossy(l).into_owned(),
        }
    }
}

fn bad(msg: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.into())
}

/// A buffered reader of replies.
pub struct ReplyReader<R> {
    inner: R,
    buf: BytesMut,
    /// How far `buf` has already been searched for a CRLF.
    scanned: usize,
    /// How much to grow the buffer by when it runs out of room.
    chunk: usize,
}

/// The longest reply line accepted before giving up on the stream.
const MAX_LINE: usize = 64 * 1024;

impl<R: AsyncRead + Unpin> ReplyReader<R> {
    pub fn new(inner: R, capacity: usize) -> Self {
        ReplyReader {
            inner,
            buf: BytesMut::with_capacity(capacity),
            scanned: 0,
            chunk: capacity.max(512),
        }
    }

    async fn fill(&mut self, want_total: usize) -> io::Result<()> {
        if self.buf.capacity() - self.buf.len() < 256 {
            self.buf.reserve(want_total.max(self.chunk));
        }
        let n = self.inner.read_buf(&mut self.buf).await?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "server closed the connection",
            ));
        }
        Ok(())
    }

    /// The next line, without its CRLF.
    async fn line(&mut self) -> io::Result<Bytes> {
        loop {
            let from = self.scanned.saturating_sub(1);
            if let Some(p) = find_crlf(&self.buf[from..]) {
                let end = from + p;
                let line = self.buf.split_to(end + 2).freeze();
                self.scanned = 0;
                return Ok(line.slice(..end));
            }
            self.scanned = self.buf.len();
            if self.buf.len() > MAX_LINE {
                return Err(bad("reply line too long"));
            }
            self.fill(0).await?;
        }
    }

    /// Exactly `n` bytes.
    async fn exact(&mut self, n: usize) -> io::Result<Bytes> {
        while self.buf.len() < n {
            let missing = n - self.buf.len();
            self.fill(missing).await?;
        }
        self.scanned = 0;
        Ok(self.buf.split_to(n).freeze())
    }

    /// The next reply.
    pub async fn reply(&mut self) -> io::Result<Reply> {
        let line = self.line().await?;
        match &line[..] {
            b"STORED" => Ok(Reply::Stored),
            b"END" => Ok(Reply::End),
            l if l.starts_with(b"VALUE ") => {
                let mut it = l.split(|&c| c == b' ').filter(|s| !s.is_empty());
                let (_value, _key, _flags, k) = (it.next(), it.next(), it.next(), it.next());
                let k = k.and_then(parse_num).ok_or_else(|| {
                    bad(format!("bad VALUE line {:?}", String::from_utf8_lossy(l)))
                })?;
                let data = self.exact(k as usize + 2).await?;
                let end = self.line().await?;
                if &end[..] != b"END" {
                    return Err(bad(format!(
                        "expected END after value, got {:?}",
                        String::from_utf8_lossy(&end)
                    )));
                }
                if !data.ends_with(b"\r\n") {
                    return Err(bad("value does not end with CRLF"));
                }
                Ok(Reply::Value(data))
            }
            _ => Ok(Reply::Other(line)),
        }
    }

    pub fn get_mut(&mut self) -> &mut R {
        &mut self.inner
    }
}

fn find_crlf(b: &[u8]) -> Option<usize> {
    let mut i = 0;
    while i + 1 < b.len() {
        match b[i + 1..].iter().position(|&c| c == b'\n') {
            None => return None,
            Some(p) => {
                let nl = i + 1 + p;
                if b[nl - 1] == b'\r' {
                    return Some(nl - 1);
                }
                i = nl;
            }
        }
    }
    None
}

/// One entry of a `get messages` value.
#[derive(Debug, PartialEq, Eq)]
pub struct Entry<'a> {
    /// The topics, space separated (runs of spaces possible).
    pub topics: &'a [u8],
    pub payload: &'a [u8],
}

impl<'a> Entry<'a> {
    pub fn topics(&self) -> impl Iterator<Item = &'a [u8]> {
        self.topics.split(|&c| c == b' ').filter(|t| !t.is_empty())
    }
}

/// Walks the entries of a value (as returned in [`Reply::Value`]) by their
/// length fields.
pub struct Entries<'a> {
    rest: &'a [u8],
    failed: bool,
}

pub fn entries(value: &[u8]) -> Entries<'_> {
    Entries {
        rest: value,
        failed: false,
    }
}

impl<'a> Iterator for Entries<'a> {
    type Item = Result<Entry<'a>, String>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.rest.is_empty() || self.failed {
            return None;
        }
        let r = self.parse_one();
        if r.is_err() {
            self.failed = true;
        }
        Some(r)
    }
}

impl<'a> Entries<'a> {
    fn parse_one(&mut self) -> Result<Entry<'a>, String> {
        let rest = self.rest;
        let eol = find_crlf(rest).ok_or("entry header without CRLF")?;
        let header = &rest[..eol];
        let header = header
            .strip_prefix(b"MESSAGE ")
            .ok_or_else(|| format!("entry header {:?}", String::from_utf8_lossy(header)))?;
        let header = trim_end_spaces(header);
        let sp = header
            .iter()
            .rposition(|&c| c == b' ')
            .ok_or("entry header without topics")?;
        let len = parse_num(&header[sp + 1..]).ok_or("entry length not a number")? as usize;
        let topics = trim_end_spaces(&header[..sp]);
        if topics.iter().all(|&c| c == b' ') {
            return Err("entry without topics".into());
        }
        let body = &rest[eol + 2..];
        if body.len() < len + 2 || &body[len..len + 2] != b"\r\n" {
            return Err("entry payload runs past the value or lacks CRLF".into());
        }
        self.rest = &body[len + 2..];
        Ok(Entry {
            topics,
            payload: &body[..len],
        })
    }
}

fn trim_end_spaces(mut b: &[u8]) -> &[u8] {
    while let [head @ .., b' '] = b {
        b = head;
    }
    b
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::pin::Pin;
    use std::task::{Context, Poll};
    use tokio::io::ReadBuf;

    /// Hands out its data `step` bytes at a time.
    struct Trickle {
        data: Vec<u8>,
        pos: usize,
        step: usize,
    }

    impl AsyncRead for Trickle {
        fn poll_read(
            mut self: Pin<&mut Self>,
            _cx: &mut Context<'_>,
            buf: &mut ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            let n = self
                .step
                .min(self.data.len() - self.pos)
                .min(buf.remaining());
            let pos = self.pos;
            buf.put_slice(&self.data[pos..pos + n]);
            self.pos += n;
            Poll::Ready(Ok(()))
        }
    }

    fn value_of(entries: &[u8]) -> Vec<u8> {
        let mut v = format!("VALUE messages 0 {}\r\n", entries.len() - 2).into_bytes();
        v.extend_from_slice(entries);
        v.extend_from_slice(b"END\r\n");
        v
    }

    #[test]
    fn requests() {
        let mut b = Vec::new();
        push_topics(&mut b, "subscribe", &["a", "bb"]);
        assert_eq!(b, b"set subscribe 0 0 4\r\na bb\r\n");
        let mut block = Vec::new();
        push_entry(&mut block, ["t1", "t2"], b"hi\r\n");
        push_entry(&mut block, ["t3"], b"");
        assert_eq!(block, b"MESSAGE t1 t2 4\r\nhi\r\n\r\nMESSAGE t3 0\r\n\r\n");
        let mut r = Vec::new();
        push_set(&mut r, "publish", &block);
        assert!(r.starts_with(b"set publish 0 0 39\r\nMESSAGE"));
        let mut n = Vec::new();
        push_num(&mut n, 0);
        push_num(&mut n, 18_446_744_073_709_551_615);
        assert_eq!(n, b"018446744073709551615");
    }

    #[tokio::test]
    async fn replies_in_any_chunking() {
        let mut ents = Vec::new();
        push_entry(&mut ents, ["t"], b"x\r\nEND\r\ny");
        push_entry(&mut ents, ["t", "u"], b"");
        let mut stream = Vec::new();
        stream.extend_from_slice(b"STORED\r\nEND\r\n");
        stream.extend_from_slice(&value_of(&ents));
        stream.extend_from_slice(b"CLIENT_ERROR bad publish block\r\nSTORED\r\n");
        for step in [1, 2, 3, 7, 64, 100_000] {
            let mut r = ReplyReader::new(
                Trickle {
                    data: stream.clone(),
                    pos: 0,
                    step,
                },
                16,
            );
            assert_eq!(r.reply().await.unwrap(), Reply::Stored);
            assert_eq!(r.reply().await.unwrap(), Reply::End);
            match r.reply().await.unwrap() {
                Reply::Value(v) => {
                    assert_eq!(&v[..], &ents[..]);
                    let got: Vec<_> = entries(&v).map(|e| e.unwrap()).collect();
                    assert_eq!(got.len(), 2);
                    assert_eq!(got[0].payload, b"x\r\nEND\r\ny");
                    assert_eq!(got[0].topics().collect::<Vec<_>>(), vec![&b"t"[..]]);
                    assert_eq!(got[1].payload, b"");
                    assert_eq!(got[1].topics().collect::<Vec<_>>(), vec![&b"t"[..], b"u"]);
                }
                other => panic!("{other:?}"),
            }
            assert_eq!(
                r.reply().await.unwrap(),
                Reply::Other(Bytes::from_static(b"CLIENT_ERROR bad publish block"))
            );
            assert_eq!(r.reply().await.unwrap(), Reply::Stored);
            let e = r.reply().await.unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof);
        }
    }

    #[tokio::test]
    async fn bad_value_framing() {
        let mut r = ReplyReader::new(&b"VALUE messages 0 3\r\nabcdeEND\r\n"[..], 64);
        assert!(r.reply().await.is_err());
        let mut r = ReplyReader::new(&b"VALUE messages 0 x\r\n"[..], 64);
        assert!(r.reply().await.is_err());
    }

    #[test]
    fn entry_walker_rejects_garbage() {
        let bad_ones: [&[u8]; 5] = [
            b"MESSAGE t 5\r\nabc\r\n",
            b"MESSAGE 3\r\nabc\r\n",
            b"MESSAGE t x\r\nabc\r\n",
            b"MASSAGE t 3\r\nabc\r\n",
            b"MESSAGE t 3\r\nabcd\r\n",
        ];
        for b in bad_ones {
            let v: Vec<_> = entries(b).collect();
            assert_eq!(v.len(), 1, "{:?}", String::from_utf8_lossy(b));
            assert!(v[0].is_err(), "{:?}", String::from_utf8_lossy(b));
        }
        let ok: Vec<_> = entries(b"MESSAGE  a   b  2 \r\nhi\r\n").collect();
        let e = ok[0].as_ref().unwrap();
        assert_eq!(e.payload, b"hi");
        assert_eq!(e.topics().collect::<Vec<_>>(), vec![&b"a"[..], b"b"]);
    }
}
