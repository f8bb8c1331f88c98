//! Replies of an upstream node, as a proxy's upstream link reads them.
//!
//! A link only ever sends `set subscribe|unsubscribe|publish|retro_subscribe`,
//! `get messages` and `stats`, so the replies it must understand are few:
//! `STORED`, `NOT_FOUND`, `END`, `VALUE messages 0 <k>` + block + `END`,
//! `STAT` lines up to `END`, and the error lines. [`ReplyCodec`] frames them;
//! it is bounded like the node's own request decoder (a line of at most
//! [`MAX_LINE`] bytes, a value of at most [`MAX_VALUE`] bytes, never reserved
//! up front on the strength of `<k>`).

use bytes::{Buf, Bytes, BytesMut};
use tokio_util::codec::Decoder;

/// Longest reply line accepted.
pub const MAX_LINE: usize = 64 * 1024;
/// Largest `get messages` value accepted (an upstream's queue is bounded by
/// its `max_queue_bytes`, 64 MiB by default).
pub const MAX_VALUE: usize = 1 << 30;

/// One reply of an upstream node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// `STORED`
    Stored,
    /// `NOT_FOUND`
    NotFound,
    /// `END` on its own: an empty `get messages`.
    End,
    /// `VALUE messages 0 <k>`: the entries, `k + 2` bytes ending in `\r\n`
    /// (the value terminator is the last entry's own line end,
    /// `docs/PROTOCOL.md` §4).
    Messages(Bytes),
    /// `STAT <name> <value>` lines, then `END`.
    Stats(Vec<(String, String)>),
    /// `ERROR`, `CLIENT_ERROR ...` or `SERVER_ERROR ...`: the whole line.
    Failed(String),
}

/// Why the reply stream cannot be read on.
#[derive(Debug)]
pub enum ReplyError {
    /// Something that is not a reply to what a link sends.
    Protocol(String),
    Io(std::io::Error),
}

impl From<std::io::Error> for ReplyError {
    fn from(e: std::io::Error) -> Self {
        ReplyError::Io(e)
    }
}

impl std::fmt::Display for ReplyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReplyError::Protocol(why) => write!(f, "bad reply: {why}"),
            ReplyError::Io(e) => write!(f, "{e}"),
        }
    }
}

/// Frames [`Reply`]s.
#[derive(Debug, Default)]
pub struct ReplyCodec {
    /// `STAT` lines read so far of a `stats` reply.
    stats: Option<Vec<(String, String)>>,
    /// The `<k>` of a `VALUE` line whose block has not fully arrived.
    value: Option<usize>,
    /// Bytes of the current line already searched for its end.
    scanned: usize,
}

fn lossy(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

impl Decoder for ReplyCodec {
    type Item = Reply;
    type Error = ReplyError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Reply>, ReplyError> {
        loop {
            if let Some(k) = self.value {
                // `<k + 2 bytes>END\r\n`
                let need = k + 2 + 5;
                if src.len() < need {
                    return Ok(None);
                }
                if &src[k..k + 2] != b"\r\n" || &src[k + 2..need] != b"END\r\n" {
                    return Err(ReplyError::Protocol("VALUE block not framed".into()));
                }
                let block = src.split_to(k + 2).freeze();
                src.advance(5);
                self.value = None;
                return Ok(Some(Reply::Messages(block)));
            }
            let Some(nl) = src[self.scanned..].iter().position(|&b| b == b'\n') else {
                if src.len() > MAX_LINE {
                    return Err(ReplyError::Protocol("reply line too long".into()));
                }
                self.scanned = src.len();
                return Ok(None);
            };
            let nl = self.scanned + nl;
            self.scanned = 0;
            let line = src.split_to(nl + 1);
            let line = line
                .strip_suffix(b"\r\n")
                .or_else(|| line.strip_suffix(b"\n"))
                .unwrap_or(&line[..]);
            if let Some(rest) = line.strip_prefix(b"STAT ") {
                let rest = lossy(rest);
                let (name, value) = rest.split_once(' ').unwrap_or((&rest, ""));
                self.stats
                    .get_or_insert_with(Vec::new)
                    .push((name.to_string(), value.to_string()));
                continue;
            }
            if self.stats.is_some() {
                if line == b"END" {
                    let stats = self.stats.take().unwrap_or_default();
                    return Ok(Some(Reply::Stats(stats)));
                }
                return Err(ReplyError::Protocol(format!(
                    "want STAT or END, got {:?}",
                    lossy(line)
                )));
            }
            match line {
                b"STORED" => return Ok(Some(Reply::Stored)),
                b"NOT_FOUND" => return Ok(Some(Reply::NotFound)),
                b"END" => return Ok(Some(Reply::End)),
                _ => {}
            }
            if let Some(k) = line.strip_prefix(b"VALUE messages 0 ") {
                let k = std::str::from_utf8(k)
                    .ok()
                    .and_then(|k| k.parse::<usize>().ok())
                    .filter(|&k| k <= MAX_VALUE)
                    .ok_or_else(|| {
                        ReplyError::Protocol(format!("bad VALUE line {:?}", lossy(line)))
                    })?;
                self.value = Some(k);
                continue;
            }
            if line == b"ERROR"
                || line.starts_with(b"CLIENT_ERROR")
                || line.starts_with(b"SERVER_ERROR")
            {
                return Ok(Some(Reply::Failed(lossy(line))));
            }
            return Err(ReplyError::Protocol(format!(
                "unexpected reply {:?}",
                lossy(line)
            )));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all(input: &[u8]) -> Result<Vec<Reply>, String> {
        let mut codec = ReplyCodec::default();
        let mut out = Vec::new();
        // Byte by byte: every split point must work.
        let mut buf = BytesMut::new();
        for &b in input {
            buf.extend_from_slice(&[b]);
            while let Some(r) = codec.decode(&mut buf).map_err(|e| e.to_string())? {
                out.push(r);
            }
        }
        Ok(out)
    }

    #[test]
    fn frames_every_reply_a_link_can_get() {
        let input = b"STORED\r\nNOT_FOUND\r\nEND\r\n\
            VALUE messages 0 18\r\nMESSAGE a b 3\r\nx\r\n\r\nEND\r\n\
            STAT pid 42\r\nSTAT uptime 7\r\nEND\r\n\
            CLIENT_ERROR bad publish block\r\nSERVER_ERROR slow consumer\r\nERROR\r\n";
        let got = all(input).unwrap();
        assert_eq!(
            got,
            vec![
                Reply::Stored,
                Reply::NotFound,
                Reply::End,
                Reply::Messages(Bytes::from_static(b"MESSAGE a b 3\r\nx\r\n\r\n")),
                Reply::Stats(vec![
                    ("pid".into(), "42".into()),
                    ("uptime".into(), "7".into())
                ]),
                Reply::Failed("CLIENT_ERROR bad publish block".into()),
                Reply::Failed("SERVER_ERROR slow consumer".into()),
                Reply::Failed("ERROR".into()),
            ]
        );
    }

    #[test]
    fn refuses_what_no_upstream_sends() {
        assert!(all(b"HELLO\r\n").is_err());
        assert!(all(b"VALUE messages 0 x\r\n").is_err());
        assert!(all(b"VALUE messages 0 3\r\nabcdeEND\r\n").is_err());
        assert!(all(b"STAT a 1\r\nSTORED\r\n").is_err());
        let mut long = BytesMut::from(&vec![b'a'; MAX_LINE + 2][..]);
        assert!(ReplyCodec::default().decode(&mut long).is_err());
    }
}
