//! The client side of Kraken's memcached text dialect for the bench: thin
//! wrappers over the client library's codec (`kraken_client::codec`), in
//! the shape the scenarios use.
//!
//! Requests are appended to a caller-owned buffer (so several can go out in
//! one write); replies are read by [`ReplyReader`], a buffered reader over
//! any `AsyncRead` that hands back whole replies, and the entries of a
//! `get messages` value are walked by [`entries`] without copying.

use bytes::{Bytes, BytesMut};
use kraken_client::codec::{self, ClientCodec, CodecError};
use std::io;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio_util::codec::Decoder;

pub use kraken_client::codec::{entries, GET_MESSAGES};

/// Append `set <key> 0 0 <n>\r\n<data>\r\n`.
pub fn push_set(buf: &mut Vec<u8>, key: &str, data: &[u8]) {
    codec::put_set(buf, key, data, false);
}

/// Append a subscribe (or unsubscribe, `key = "unsubscribe"`) of `topics`.
pub fn push_topics<S: AsRef<[u8]>>(buf: &mut Vec<u8>, key: &str, topics: &[S]) {
    codec::put_topics(buf, key, topics, false);
}

/// Append one publish entry `MESSAGE <topics> <len>\r\n<payload>\r\n` to a
/// publish data block under construction.
pub fn push_entry<I, S>(block: &mut Vec<u8>, topics: I, payload: &[u8])
where
    I: IntoIterator<Item = S>,
    S: AsRef<[u8]>,
{
    codec::put_entry(block, topics, payload);
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
    /// `SERVER_ERROR ...`, `VERSION ...`): its first line without CRLF.
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

impl From<codec::Reply> for Reply {
    fn from(r: codec::Reply) -> Reply {
        match r {
            codec::Reply::Stored => Reply::Stored,
            codec::Reply::End => Reply::End,
            codec::Reply::Messages(m) => Reply::Value(m.into_raw()),
            other => Reply::Other(Bytes::from(other.to_string())),
        }
    }
}

/// A buffered reader of replies.
pub struct ReplyReader<R> {
    inner: R,
    buf: BytesMut,
    codec: ClientCodec,
    /// How much to grow the buffer by when it runs out of room.
    chunk: usize,
}

impl<R: AsyncRead + Unpin> ReplyReader<R> {
    pub fn new(inner: R, capacity: usize) -> Self {
        ReplyReader {
            inner,
            buf: BytesMut::with_capacity(capacity),
            codec: ClientCodec::default(),
            chunk: capacity.max(512),
        }
    }

    /// The next reply.
    pub async fn reply(&mut self) -> io::Result<Reply> {
        loop {
            match self.codec.decode(&mut self.buf) {
                Ok(Some(reply)) => return Ok(reply.into()),
                Ok(None) => {}
                Err(CodecError::Io(e)) => return Err(e),
                Err(e) => return Err(io::Error::new(io::ErrorKind::InvalidData, e.to_string())),
            }
            if self.buf.capacity() - self.buf.len() < 256 {
                // Doubling: a large value is read in O(its size).
                self.buf.reserve(self.chunk.max(self.buf.len()));
            }
            let n = self.inner.read_buf(&mut self.buf).await?;
            if n == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "server closed the connection",
                ));
            }
        }
    }

    pub fn get_mut(&mut self) -> &mut R {
        &mut self.inner
    }
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
        codec::put_num(&mut n, 0);
        codec::put_num(&mut n, 18_446_744_073_709_551_615);
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
