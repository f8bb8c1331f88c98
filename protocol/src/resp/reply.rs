//! What the node answers a Redis client: [`Reply`], written by
//! [`Reply::encode`] in the client's [`Protocol`] (RESP2 or RESP3), and the
//! exact replies Redis 7 gives to the pub/sub commands, as constructors.
//!
//! One `Reply` means the same thing in both protocol versions; only its
//! spelling differs: a null is `$-1` in RESP2 and `_` in RESP3, a map is a
//! flat array of keys and values in RESP2, a push is an array in RESP2 and
//! `>` in RESP3, a verbatim string is a plain bulk string in RESP2.

use std::borrow::Cow;

use bytes::{BufMut, Bytes, BytesMut};

/// The RESP version a connection speaks. Every connection starts in RESP2;
/// `HELLO 3` switches it (and its own reply is already RESP3), `RESET`
/// switches it back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Protocol {
    #[default]
    Resp2,
    Resp3,
}

impl Protocol {
    /// 2 or 3, as `HELLO` reports it.
    pub fn version(self) -> i64 {
        match self {
            Protocol::Resp2 => 2,
            Protocol::Resp3 => 3,
        }
    }
}

/// One RESP value sent to a client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// `+<text>\r\n`. The text must not contain CR or LF.
    Simple(Cow<'static, str>),
    /// `-<text>\r\n`; the text starts with the error code (`ERR ...`).
    /// Build it with [`Reply::error`], which keeps CR and LF out.
    Error(Bytes),
    /// `:<n>\r\n`
    Integer(i64),
    /// `$<len>\r\n<bytes>\r\n`
    Bulk(Bytes),
    /// RESP2 `$-1\r\n`, RESP3 `_\r\n`.
    Null,
    /// `*<n>\r\n` then the elements.
    Array(Vec<Reply>),
    /// RESP3 `%<n>\r\n` then key, value, key, value...; RESP2 the same
    /// elements as a flat array of `2n`.
    Map(Vec<(Reply, Reply)>),
    /// An out-of-band message: RESP3 `><n>\r\n` then the elements; RESP2 an
    /// array (which is how RESP2 pub/sub clients expect it).
    Push(Vec<Reply>),
    /// RESP3 `=<len+4>\r\ntxt:<bytes>\r\n` (how Redis 7 answers `INFO` in
    /// RESP3); RESP2 a bulk string.
    Verbatim(Bytes),
    /// A delivered message: a prebuilt head (see [`MessagePush`]) then the
    /// shared payload, so that fan-out copies no payload before the socket.
    Message(MessagePush),
}

/// A `message` push whose head (everything before the payload) is built once
/// per channel, payload length and protocol, and shared between every
/// subscriber receiving it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessagePush {
    /// `*3\r\n$7\r\nmessage\r\n$<n>\r\n<channel>\r\n$<len>\r\n` (RESP2) or
    /// the same after `>3\r\n` (RESP3), from [`MessagePush::head`].
    pub head: Bytes,
    /// The message; the encoder writes it, then `\r\n`.
    pub payload: Bytes,
}

impl MessagePush {
    /// The push for `payload` on `channel`.
    pub fn new(protocol: Protocol, channel: &[u8], payload: Bytes) -> Self {
        MessagePush {
            head: MessagePush::head(protocol, channel, payload.len()),
            payload,
        }
    }

    /// The bytes before the payload of a `message` push on `channel`.
    pub fn head(protocol: Protocol, channel: &[u8], payload_len: usize) -> Bytes {
        let mut out = BytesMut::with_capacity(32 + channel.len());
        out.put_slice(match protocol {
            Protocol::Resp2 => b"*3\r\n$7\r\nmessage\r\n",
            Protocol::Resp3 => b">3\r\n$7\r\nmessage\r\n",
        });
        put_len(&mut out, b'$', channel.len() as u64);
        out.put_slice(channel);
        out.put_slice(b"\r\n");
        put_len(&mut out, b'$', payload_len as u64);
        out.freeze()
    }
}

/// The longest text Redis copies into an error from a client's argument.
const ECHO_MAX: usize = 128;

impl Reply {
    /// `+OK`
    pub fn ok() -> Reply {
        Reply::Simple(Cow::Borrowed("OK"))
    }

    /// `-<text>`, with every CR and LF in `text` turned into a space (as
    /// Redis does), so that an echoed argument cannot break the framing.
    pub fn error(text: impl AsRef<[u8]>) -> Reply {
        let text: Vec<u8> = text
            .as_ref()
            .iter()
            .map(|&b| if b == b'\r' || b == b'\n' { b' ' } else { b })
            .collect();
        Reply::Error(Bytes::from(text))
    }

    /// A bulk string from static text.
    pub fn bulk_static(text: &'static str) -> Reply {
        Reply::Bulk(Bytes::from_static(text.as_bytes()))
    }

    /// A bulk string, or null when `value` is `None`.
    pub fn bulk_or_null(value: Option<Bytes>) -> Reply {
        value.map_or(Reply::Null, Reply::Bulk)
    }

    /// `ERR wrong number of arguments for '<name>' command`; `name` is the
    /// lower-case full name (`subscribe`, `client|setname`).
    pub fn wrong_arity(name: &str) -> Reply {
        Reply::error(format!(
            "ERR wrong number of arguments for '{name}' command"
        ))
    }

    /// `ERR unknown subcommand '<sub>'. Try <COMMAND> HELP.`
    pub fn unknown_subcommand(command: &str, sub: &[u8]) -> Reply {
        let mut text = b"ERR unknown subcommand '".to_vec();
        text.extend_from_slice(c_prefix(sub, ECHO_MAX));
        text.extend_from_slice(format!("'. Try {command} HELP.").as_bytes());
        Reply::error(text)
    }

    /// Redis 7's answer to a command it does not know, byte for byte:
    /// `ERR unknown command '<name>', with args beginning with: 'a' 'b' `.
    /// The name and each argument are cut at a NUL byte; the name at 128
    /// bytes; arguments are added while the list is shorter than 128 bytes,
    /// each cut to what is left of those 128.
    pub fn unknown_command(name: &[u8], args: &[Bytes]) -> Reply {
        let mut text = b"ERR unknown command '".to_vec();
        text.extend_from_slice(c_prefix(name, ECHO_MAX));
        text.extend_from_slice(b"', with args beginning with: ");
        let mut list = Vec::new();
        for arg in args {
            if list.len() >= ECHO_MAX {
                break;
            }
            let room = ECHO_MAX - list.len();
            list.push(b'\'');
            list.extend_from_slice(c_prefix(arg, room));
            list.extend_from_slice(b"' ");
        }
        text.extend_from_slice(&list);
        Reply::error(text)
    }

    /// `ERR value is not an integer or out of range`
    pub fn not_an_integer() -> Reply {
        Reply::error("ERR value is not an integer or out of range")
    }

    /// What Redis answers a RESP2 connection in subscribed mode that sends a
    /// command other than (P)SUBSCRIBE, (P)UNSUBSCRIBE, PING, QUIT or RESET:
    /// `ERR Can't execute '<name>': only (P|S)SUBSCRIBE / (P|S)UNSUBSCRIBE /
    /// PING / QUIT / RESET are allowed in this context`.
    pub fn not_in_subscribed_context(name: &str) -> Reply {
        Reply::error(format!(
            "ERR Can't execute '{name}': only (P|S)SUBSCRIBE / (P|S)UNSUBSCRIBE \
             / PING / QUIT / RESET are allowed in this context"
        ))
    }

    /// Kraken's refusal of `PSUBSCRIBE` (it routes exact channel names only).
    pub fn psubscribe_refused() -> Reply {
        Reply::error(
            "ERR PSUBSCRIBE is not supported: Kraken routes exact channel names only, \
             subscribe to each channel by name",
        )
    }

    /// `WRONGPASS invalid username-password pair or user is disabled.`
    pub fn wrong_pass() -> Reply {
        Reply::error("WRONGPASS invalid username-password pair or user is disabled.")
    }

    /// The confirmation of one channel of a `SUBSCRIBE`:
    /// `subscribe`, the channel, and how many subscriptions the connection
    /// now holds.
    pub fn subscribed(channel: Bytes, count: usize) -> Reply {
        Reply::Push(vec![
            Reply::bulk_static("subscribe"),
            Reply::Bulk(channel),
            Reply::Integer(count as i64),
        ])
    }

    /// The confirmation of one channel of an `UNSUBSCRIBE`; `None` is the
    /// single confirmation of an `UNSUBSCRIBE` without arguments by a
    /// connection that holds no subscription (`$-1` / `_` as the channel).
    pub fn unsubscribed(channel: Option<Bytes>, count: usize) -> Reply {
        Reply::Push(vec![
            Reply::bulk_static("unsubscribe"),
            Reply::bulk_or_null(channel),
            Reply::Integer(count as i64),
        ])
    }

    /// The confirmation of a `PUNSUBSCRIBE` (with or without patterns) on a
    /// node without patterns: Redis answers `punsubscribe`, null and the
    /// number of channel subscriptions when no pattern is held.
    pub fn punsubscribed(pattern: Option<Bytes>, count: usize) -> Reply {
        Reply::Push(vec![
            Reply::bulk_static("punsubscribe"),
            Reply::bulk_or_null(pattern),
            Reply::Integer(count as i64),
        ])
    }

    /// The answer to `PING [message]`. In RESP2 subscribed mode Redis
    /// answers an array `pong`, message (empty without one); otherwise
    /// `+PONG`, or the message as a bulk string.
    pub fn pong(protocol: Protocol, subscribed: bool, message: Option<Bytes>) -> Reply {
        match (protocol, subscribed, message) {
            (Protocol::Resp2, true, message) => Reply::Array(vec![
                Reply::bulk_static("pong"),
                Reply::Bulk(message.unwrap_or_default()),
            ]),
            (_, _, None) => Reply::Simple(Cow::Borrowed("PONG")),
            (_, _, Some(message)) => Reply::Bulk(message),
        }
    }

    /// The answer to `HELLO`, in the protocol it selected: `server`,
    /// `version`, `proto`, `id`, `mode` (`standalone`), `role` (`master`),
    /// `modules` (empty), in this order, as Redis 7 sends them.
    pub fn hello(protocol: Protocol, id: i64, server: &str, version: &str) -> Reply {
        let key = Reply::bulk_static;
        let text = |s: &str| Reply::Bulk(Bytes::copy_from_slice(s.as_bytes()));
        Reply::Map(vec![
            (key("server"), text(server)),
            (key("version"), text(version)),
            (key("proto"), Reply::Integer(protocol.version())),
            (key("id"), Reply::Integer(id)),
            (key("mode"), key("standalone")),
            (key("role"), key("master")),
            (key("modules"), Reply::Array(Vec::new())),
        ])
    }

    /// `+RESET`
    pub fn reset() -> Reply {
        Reply::Simple(Cow::Borrowed("RESET"))
    }

    /// Kraken's answer to `KRAKEN.RETROSUBSCRIBE`, after one
    /// [`Reply::subscribed`] per channel: a push `kraken.retro`, the horizon
    /// as given, then `stored` (everything since the horizon was replayed)
    /// or `not_found` (the node cannot prove nothing was lost: reload).
    pub fn retro_result(horizon_secs: i64, stored: bool) -> Reply {
        Reply::Push(vec![
            Reply::bulk_static("kraken.retro"),
            Reply::Bulk(Bytes::from(horizon_secs.to_string())),
            Reply::bulk_static(if stored { "stored" } else { "not_found" }),
        ])
    }

    /// Kraken's answer to `KRAKEN.REGISTER`: an array (not a push, so that
    /// a RESP3 client reading it as a command's answer gets it)
    /// `kraken.register`, the horizon in unix seconds (the current second
    /// when none was given), `ok`. A pub/sub client library that reads it
    /// with its messages (redis-py's `PubSub.get_message`) sees one more
    /// non-message event, as for a subscribe confirmation.
    pub fn registered(horizon_secs: i64) -> Reply {
        Reply::Array(vec![
            Reply::bulk_static("kraken.register"),
            Reply::Bulk(Bytes::from(horizon_secs.to_string())),
            Reply::bulk_static("ok"),
        ])
    }

    /// A `message` push of `payload` on `channel` (see [`MessagePush`] for
    /// building the head once for many subscribers).
    pub fn message(protocol: Protocol, channel: &[u8], payload: Bytes) -> Reply {
        Reply::Message(MessagePush::new(protocol, channel, payload))
    }

    /// Appends this reply, spelled for `protocol`, to `dst`.
    pub fn encode(&self, protocol: Protocol, dst: &mut BytesMut) {
        match self {
            Reply::Simple(text) => {
                debug_assert!(
                    !text.contains(['\r', '\n']),
                    "a simple string must not break the framing: {text:?}"
                );
                dst.reserve(text.len() + 3);
                dst.put_u8(b'+');
                dst.put_slice(text.as_bytes());
                dst.put_slice(b"\r\n");
            }
            Reply::Error(text) => {
                debug_assert!(
                    !text.iter().any(|&b| b == b'\r' || b == b'\n'),
                    "an error must not break the framing: {text:?}"
                );
                dst.reserve(text.len() + 3);
                dst.put_u8(b'-');
                dst.put_slice(text);
                dst.put_slice(b"\r\n");
            }
            Reply::Integer(n) if *n >= 0 => put_len(dst, b':', *n as u64),
            Reply::Integer(n) => {
                dst.put_u8(b':');
                dst.put_slice(n.to_string().as_bytes());
                dst.put_slice(b"\r\n");
            }
            Reply::Bulk(bytes) => put_bulk(dst, b'$', b"", bytes),
            Reply::Null => dst.put_slice(match protocol {
                Protocol::Resp2 => b"$-1\r\n",
                Protocol::Resp3 => b"_\r\n",
            }),
            Reply::Array(items) => {
                put_len(dst, b'*', items.len() as u64);
                for item in items {
                    item.encode(protocol, dst);
                }
            }
            Reply::Map(pairs) => {
                match protocol {
                    Protocol::Resp2 => put_len(dst, b'*', 2 * pairs.len() as u64),
                    Protocol::Resp3 => put_len(dst, b'%', pairs.len() as u64),
                }
                for (key, value) in pairs {
                    key.encode(protocol, dst);
                    value.encode(protocol, dst);
                }
            }
            Reply::Push(items) => {
                let marker = match protocol {
                    Protocol::Resp2 => b'*',
                    Protocol::Resp3 => b'>',
                };
                put_len(dst, marker, items.len() as u64);
                for item in items {
                    item.encode(protocol, dst);
                }
            }
            Reply::Verbatim(bytes) => match protocol {
                Protocol::Resp2 => put_bulk(dst, b'$', b"", bytes),
                Protocol::Resp3 => put_bulk(dst, b'=', b"txt:", bytes),
            },
            Reply::Message(push) => {
                dst.reserve(push.head.len() + push.payload.len() + 4);
                dst.put_slice(&push.head);
                dst.put_slice(&push.payload);
                dst.put_slice(b"\r\n");
            }
        }
    }

    /// This reply's bytes in `protocol` (tests, and replies shared by many).
    pub fn to_bytes(&self, protocol: Protocol) -> Bytes {
        let mut out = BytesMut::new();
        self.encode(protocol, &mut out);
        out.freeze()
    }
}

/// `<marker><n>\r\n`, formatted without an allocation (every push
/// writes two of them).
pub fn put_len(dst: &mut BytesMut, marker: u8, n: u64) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    let mut rest = n;
    loop {
        at -= 1;
        digits[at] = b'0' + (rest % 10) as u8;
        rest /= 10;
        if rest == 0 {
            break;
        }
    }
    dst.reserve(digits.len() - at + 3);
    dst.put_u8(marker);
    dst.put_slice(&digits[at..]);
    dst.put_slice(b"\r\n");
}

/// `<marker><len>\r\n<prefix><bytes>\r\n`, len counting the prefix.
fn put_bulk(dst: &mut BytesMut, marker: u8, prefix: &[u8], bytes: &[u8]) {
    dst.reserve(bytes.len() + prefix.len() + 24);
    put_len(dst, marker, (prefix.len() + bytes.len()) as u64);
    dst.put_slice(prefix);
    dst.put_slice(bytes);
    dst.put_slice(b"\r\n");
}

/// `bytes` as C's `%.*s` prints it: up to the first NUL, at most `max` bytes.
pub(crate) fn c_prefix(bytes: &[u8], max: usize) -> &[u8] {
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    &bytes[..end.min(max)]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lengths_are_written_as_decimal_text() {
        for n in [0, 1, 9, 10, 99, 100, 12345, u32::MAX as u64, u64::MAX] {
            let mut out = BytesMut::new();
            put_len(&mut out, b'$', n);
            assert_eq!(&out[..], format!("${n}\r\n").as_bytes());
        }
        for n in [0i64, 7, -1, i64::MIN, i64::MAX] {
            let mut out = BytesMut::new();
            Reply::Integer(n).encode(Protocol::Resp2, &mut out);
            assert_eq!(&out[..], format!(":{n}\r\n").as_bytes());
        }
    }
}
