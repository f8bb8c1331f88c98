//! Requests as the decoder yields them.

use bytes::Bytes;

use crate::response::Response;

/// The key of a `set` request: which Kraken operation it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SetKey {
    /// `set subscribe`: data is a space-separated topic list.
    Subscribe,
    /// `set unsubscribe`: data is a space-separated topic list.
    Unsubscribe,
    /// `set publish`: data is one or more `MESSAGE` entries.
    Publish,
    /// `set register`: data ignored; the client's horizon becomes *now*.
    Register,
    /// `set retro_subscribe`: data is `<unix seconds>\r\n<topics>`.
    RetroSubscribe,
}

impl SetKey {
    /// The key as it appears on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            SetKey::Subscribe => "subscribe",
            SetKey::Unsubscribe => "unsubscribe",
            SetKey::Publish => "publish",
            SetKey::Register => "register",
            SetKey::RetroSubscribe => "retro_subscribe",
        }
    }
}

/// One decoded request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// `set <key> <flags> <exptime> <n> [noreply]\r\n<n bytes>\r\n`.
    Set {
        key: SetKey,
        /// The data block, exactly `<n>` bytes, without its `\r\n`.
        data: Bytes,
        /// memcached's `noreply`: suppress `STORED` / `NOT_FOUND`.
        noreply: bool,
    },
    /// `get messages\r\n`: take everything queued (also the heartbeat).
    GetMessages,
    /// `quit\r\n`: close without answering. The decoder yields nothing after
    /// it: requests pipelined behind `quit` are never run.
    Quit,
    /// `stats\r\n`: memcached-style `STAT` lines.
    Stats,
    /// `version\r\n` (stock memcached clients probe with it).
    Version,
    /// A request the decoder refused; answer `reply`, then close if `close`.
    Invalid(Rejection),
}

/// A refused request: what to answer and whether the connection survives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    /// The answer to send.
    pub reply: Response,
    /// Close the connection after sending `reply`. Once the decoder yields a
    /// closing rejection it yields nothing more.
    pub close: bool,
}
