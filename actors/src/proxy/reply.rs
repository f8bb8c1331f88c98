//! Replies of an upstream node, as a proxy's upstream link reads them.
//!
//! A link only ever sends `set subscribe|unsubscribe|publish|retro_subscribe`,
//! `get messages` and `stats`, so the replies it must understand are few:
//! `STORED`, `NOT_FOUND`, `END`, `VALUE messages 0 <k>` + block + `END`,
//! `STAT` lines up to `END`, and the error lines. [`ReplyCodec`] frames them
//! with the client library's codec ([`kraken_client::codec::ClientCodec`]),
//! bounded like the node's own request decoder (a line of at most
//! [`MAX_LINE`] bytes, a value of at most [`MAX_VALUE`] bytes, never reserved
//! up front on the strength of `<k>`), and hands them to the link in the
//! shape it matches on.

use bytes::{Bytes, BytesMut};
use kraken_client::codec::{ClientCodec, CodecError, Limits, Reply as ClientReply};
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
    /// (the value terminator is the last entry's own line end).
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
#[derive(Debug)]
pub struct ReplyCodec(ClientCodec);

impl Default for ReplyCodec {
    fn default() -> Self {
        ReplyCodec(ClientCodec::new(Limits {
            max_line_bytes: MAX_LINE,
            max_reply_bytes: MAX_VALUE,
        }))
    }
}

impl Decoder for ReplyCodec {
    type Item = Reply;
    type Error = ReplyError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Reply>, ReplyError> {
        let reply = match self.0.decode(src) {
            Ok(Some(reply)) => reply,
            Ok(None) => return Ok(None),
            Err(CodecError::Io(e)) => return Err(ReplyError::Io(e)),
            Err(e) => return Err(ReplyError::Protocol(e.to_string())),
        };
        Ok(Some(match reply {
            ClientReply::Stored => Reply::Stored,
            ClientReply::NotFound => Reply::NotFound,
            ClientReply::End => Reply::End,
            ClientReply::Messages(m) => Reply::Messages(m.into_raw()),
            ClientReply::Stats(s) => Reply::Stats(s),
            failed @ (ClientReply::Error
            | ClientReply::ClientError(_)
            | ClientReply::ServerError(_)) => Reply::Failed(failed.to_string()),
            other @ ClientReply::Version(_) => {
                return Err(ReplyError::Protocol(format!("unexpected reply {other}")));
            }
        }))
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
        assert!(all(b"VERSION 1\r\n").is_err());
        assert!(all(b"VALUE messages 0 4\r\nabc\r\n\r\nEND\r\n").is_err());
        assert!(all(b"VALUE messages 0 x\r\n").is_err());
        assert!(all(b"VALUE messages 0 3\r\nabcdeEND\r\n").is_err());
        assert!(all(b"STAT a 1\r\nSTORED\r\n").is_err());
        let mut long = BytesMut::from(&vec![b'a'; MAX_LINE + 2][..]);
        assert!(ReplyCodec::default().decode(&mut long).is_err());
    }
}
