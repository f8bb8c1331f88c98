//! The commands a Redis client can send, as the decoder yields them:
//! [`RespCommand`], parsed from one command's arguments by
//! [`RespCommand::parse`].
//!
//! Command and subcommand names are case-insensitive, as in Redis. Arity and
//! argument errors are answered here with Redis 7's exact texts
//! ([`RespCommand::Refused`]); what is left for the node is what needs its
//! state (subscriptions, routing, the client's name and id).

use bytes::Bytes;

use super::reply::{c_prefix, Protocol, Reply};

/// One decoded client command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RespCommand {
    /// `SUBSCRIBE channel [channel ...]`: at least one channel, each a valid
    /// Kraken topic (checked). Answer one [`Reply::subscribed`] per channel,
    /// in order, duplicates included.
    Subscribe(Vec<Bytes>),
    /// `UNSUBSCRIBE [channel ...]`; none means all. Channels are not checked
    /// (an unknown one is confirmed like any other).
    Unsubscribe(Vec<Bytes>),
    /// `PSUBSCRIBE pattern [pattern ...]` (at least one). Kraken refuses it
    /// ([`Reply::psubscribe_refused`]).
    PSubscribe(Vec<Bytes>),
    /// `PUNSUBSCRIBE [pattern ...]`; holding no pattern, Kraken can answer
    /// it as Redis does ([`Reply::punsubscribed`]) or refuse it.
    PUnsubscribe(Vec<Bytes>),
    /// `PUBLISH channel message`; the channel is a valid Kraken topic
    /// (checked). Answer `:<receivers>`.
    Publish { channel: Bytes, message: Bytes },
    /// `PING [message]` (see [`Reply::pong`]).
    Ping(Option<Bytes>),
    /// `QUIT [anything]`: answer `+OK`, then close. The decoder yields
    /// nothing after it.
    Quit,
    /// `RESET`: unsubscribe from everything, back to RESP2, forget the name;
    /// answer [`Reply::reset`].
    Reset,
    /// `HELLO [protover [AUTH user pass] [SETNAME name]]`, already checked
    /// as Redis checks it (version, option syntax, the name).
    Hello(Hello),
    /// `CLIENT <subcommand>` that Kraken understands.
    Client(ClientCommand),
    /// `COMMAND [subcommand args...]`: the arguments after `COMMAND`,
    /// unchecked (`redis-cli` sends `COMMAND DOCS` when it starts).
    Command(Vec<Bytes>),
    /// `INFO [section ...]`: the sections asked for, unchecked.
    Info(Vec<Bytes>),
    /// `PUBSUB CHANNELS [pattern]`: active channels (matching a glob
    /// pattern, see [`super::glob_match`]).
    PubsubChannels(Option<Bytes>),
    /// `PUBSUB NUMSUB [channel ...]`: answer channel, count, channel,
    /// count... as one flat array (in RESP3 too).
    PubsubNumsub(Vec<Bytes>),
    /// `PUBSUB NUMPAT`: `:0` on a node without patterns.
    PubsubNumpat,
    /// `KRAKEN.REGISTER [unix-seconds]`: sets the connection's horizon, to
    /// *now* without an argument (exact: everything published after this
    /// command), else to the given second (at-least-once: that whole second
    /// included). The first `SUBSCRIBE` after it replays what was published
    /// on its channels since the horizon, then sends
    /// [`Reply::retro_result`]; a second `KRAKEN.REGISTER` replaces the
    /// first. Answer [`Reply::registered`]. This is how a client whose
    /// library keeps its own subscription list (redis-py's `PubSub`) gets a
    /// retroactive subscription through its own `subscribe()`.
    KrakenRegister { horizon_secs: Option<i64> },
    /// `KRAKEN.RETROSUBSCRIBE <unix-seconds> <channel> [channel ...]`:
    /// subscribe, then replay what was published on those channels at or
    /// after the horizon. Answer one [`Reply::subscribed`] per channel, then
    /// [`Reply::retro_result`].
    KrakenRetroSubscribe {
        horizon_secs: i64,
        channels: Vec<Bytes>,
    },
    /// A command this dialect does not know; `reply` is Redis 7's exact
    /// `unknown command` error. The connection stays open.
    Unknown { name: Bytes, reply: Reply },
    /// A known command with bad arguments (arity, syntax, a bad channel
    /// name, an unknown subcommand): answer `reply`, stay open.
    Refused(Reply),
    /// The stream's framing is lost: answer `reply`
    /// (`-ERR Protocol error: ...`), then close. The decoder yields nothing
    /// after it.
    ProtocolError(Reply),
}

/// `HELLO`'s arguments, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hello {
    /// The protocol to switch to; `None` keeps the current one.
    pub protocol: Option<Protocol>,
    /// `AUTH username password` (the last one given).
    pub auth: Option<(Bytes, Bytes)>,
    /// `SETNAME name` (the last one given), a valid client name; empty
    /// clears the name.
    pub setname: Option<Bytes>,
}

/// The `CLIENT` subcommands Kraken answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientCommand {
    /// `CLIENT SETNAME name`: a valid client name (checked); empty clears it.
    /// Answer `+OK`.
    SetName(Bytes),
    /// `CLIENT GETNAME`: the name, or null.
    GetName,
    /// `CLIENT ID`: the connection's id, as an integer.
    Id,
    /// `CLIENT SETINFO <attribute> <value>` (Redis 7.2; clients send
    /// `LIB-NAME`/`LIB-VER` on connecting and ignore an error). Answer `+OK`.
    SetInfo { attribute: Bytes, value: Bytes },
}

/// What the decoder checks a channel name against: Kraken topics are shared
/// with the memcached dialect, whose framing cannot carry a space, CR or LF.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChannelRules {
    /// Longest channel name in bytes (`max_topic_bytes`).
    pub max_channel_bytes: usize,
}

impl RespCommand {
    /// Parses one command from its arguments (`args[0]` is the name; the
    /// decoder never passes an empty list).
    pub fn parse(mut args: Vec<Bytes>, rules: ChannelRules) -> RespCommand {
        debug_assert!(!args.is_empty());
        if args.is_empty() {
            return RespCommand::Refused(Reply::error("ERR empty command"));
        }
        let name = args.remove(0);
        // Upper-cased on the stack: no known name is longer than this.
        let mut buf = [0u8; 24];
        let upper: &[u8] = match buf.get_mut(..name.len()) {
            Some(upper) => {
                upper.copy_from_slice(&name);
                upper.make_ascii_uppercase();
                upper
            }
            None => b"",
        };
        let n = args.len();
        let arity = |name: &str| RespCommand::Refused(Reply::wrong_arity(name));
        match upper {
            b"SUBSCRIBE" if n == 0 => arity("subscribe"),
            b"SUBSCRIBE" => match check_channels(&args, rules) {
                Ok(()) => RespCommand::Subscribe(args),
                Err(reply) => RespCommand::Refused(reply),
            },
            b"UNSUBSCRIBE" => RespCommand::Unsubscribe(args),
            b"PSUBSCRIBE" if n == 0 => arity("psubscribe"),
            b"PSUBSCRIBE" => RespCommand::PSubscribe(args),
            b"PUNSUBSCRIBE" => RespCommand::PUnsubscribe(args),
            b"PUBLISH" if n != 2 => arity("publish"),
            b"PUBLISH" => {
                let message = args.pop().expect("two arguments");
                let channel = args.pop().expect("two arguments");
                match check_channel(&channel, rules) {
                    Ok(()) => RespCommand::Publish { channel, message },
                    Err(reply) => RespCommand::Refused(reply),
                }
            }
            b"PING" if n > 1 => arity("ping"),
            b"PING" => RespCommand::Ping(args.pop()),
            b"QUIT" => RespCommand::Quit,
            b"RESET" if n > 0 => arity("reset"),
            b"RESET" => RespCommand::Reset,
            b"HELLO" => parse_hello(args),
            b"CLIENT" if n == 0 => arity("client"),
            b"CLIENT" => parse_client(args),
            b"COMMAND" => RespCommand::Command(args),
            b"INFO" => RespCommand::Info(args),
            b"PUBSUB" if n == 0 => arity("pubsub"),
            b"PUBSUB" => parse_pubsub(args),
            b"KRAKEN.REGISTER" if n > 1 => arity("kraken.register"),
            b"KRAKEN.REGISTER" => match args.first() {
                None => RespCommand::KrakenRegister { horizon_secs: None },
                Some(secs) => match parse_redis_i64(secs) {
                    Some(secs) => RespCommand::KrakenRegister {
                        horizon_secs: Some(secs),
                    },
                    None => RespCommand::Refused(Reply::not_an_integer()),
                },
            },
            b"KRAKEN.RETROSUBSCRIBE" if n < 2 => arity("kraken.retrosubscribe"),
            b"KRAKEN.RETROSUBSCRIBE" => {
                let Some(horizon_secs) = parse_redis_i64(&args[0]) else {
                    return RespCommand::Refused(Reply::not_an_integer());
                };
                let channels = args.split_off(1);
                match check_channels(&channels, rules) {
                    Ok(()) => RespCommand::KrakenRetroSubscribe {
                        horizon_secs,
                        channels,
                    },
                    Err(reply) => RespCommand::Refused(reply),
                }
            }
            _ => RespCommand::Unknown {
                reply: Reply::unknown_command(&name, &args),
                name,
            },
        }
    }

    /// The command's lower-case full name as Redis spells it in errors
    /// (`publish`, `client|id`, `pubsub|channels`), or `None` for
    /// [`RespCommand::Unknown`], [`RespCommand::Refused`] and
    /// [`RespCommand::ProtocolError`], which carry their answer.
    pub fn name(&self) -> Option<&'static str> {
        Some(match self {
            RespCommand::Subscribe(_) => "subscribe",
            RespCommand::Unsubscribe(_) => "unsubscribe",
            RespCommand::PSubscribe(_) => "psubscribe",
            RespCommand::PUnsubscribe(_) => "punsubscribe",
            RespCommand::Publish { .. } => "publish",
            RespCommand::Ping(_) => "ping",
            RespCommand::Quit => "quit",
            RespCommand::Reset => "reset",
            RespCommand::Hello(_) => "hello",
            RespCommand::Client(ClientCommand::SetName(_)) => "client|setname",
            RespCommand::Client(ClientCommand::GetName) => "client|getname",
            RespCommand::Client(ClientCommand::Id) => "client|id",
            RespCommand::Client(ClientCommand::SetInfo { .. }) => "client|setinfo",
            RespCommand::Command(_) => "command",
            RespCommand::Info(_) => "info",
            RespCommand::PubsubChannels(_) => "pubsub|channels",
            RespCommand::PubsubNumsub(_) => "pubsub|numsub",
            RespCommand::PubsubNumpat => "pubsub|numpat",
            RespCommand::KrakenRegister { .. } => "kraken.register",
            RespCommand::KrakenRetroSubscribe { .. } => "kraken.retrosubscribe",
            RespCommand::Unknown { .. }
            | RespCommand::Refused(_)
            | RespCommand::ProtocolError(_) => return None,
        })
    }

    /// Whether a RESP2 connection holding subscriptions may run this
    /// command. Redis allows only (P)SUBSCRIBE, (P)UNSUBSCRIBE, PING, QUIT
    /// and RESET there (answer the others with
    /// [`Reply::not_in_subscribed_context`]); Kraken adds its two commands.
    /// Commands that carry their own answer are always allowed. RESP3 has
    /// no such restriction.
    pub fn allowed_in_resp2_subscribed_context(&self) -> bool {
        matches!(
            self,
            RespCommand::Subscribe(_)
                | RespCommand::Unsubscribe(_)
                | RespCommand::PSubscribe(_)
                | RespCommand::PUnsubscribe(_)
                | RespCommand::Ping(_)
                | RespCommand::Quit
                | RespCommand::Reset
                | RespCommand::KrakenRegister { .. }
                | RespCommand::KrakenRetroSubscribe { .. }
                | RespCommand::Unknown { .. }
                | RespCommand::Refused(_)
                | RespCommand::ProtocolError(_)
        )
    }
}

/// Checks one channel name: non-empty, at most `max_channel_bytes`, without
/// space, CR or LF.
pub fn check_channel(channel: &[u8], rules: ChannelRules) -> Result<(), Reply> {
    if channel.is_empty() || channel.iter().any(|&b| matches!(b, b' ' | b'\r' | b'\n')) {
        return Err(Reply::error(
            "ERR invalid channel name: Kraken channels are non-empty and \
             contain no space, CR or LF",
        ));
    }
    if channel.len() > rules.max_channel_bytes {
        return Err(Reply::error(format!(
            "ERR channel name too long: at most {} bytes",
            rules.max_channel_bytes
        )));
    }
    Ok(())
}

fn check_channels(channels: &[Bytes], rules: ChannelRules) -> Result<(), Reply> {
    channels.iter().try_for_each(|c| check_channel(c, rules))
}

/// `HELLO [protover [AUTH username password] [SETNAME clientname]]`, checked
/// in Redis 7's order: the version, each option, then the name.
fn parse_hello(args: Vec<Bytes>) -> RespCommand {
    let mut args = args.into_iter();
    let protocol = match args.next() {
        None => None,
        Some(version) => match parse_redis_i64(&version) {
            None => {
                return RespCommand::Refused(Reply::error(
                    "ERR Protocol version is not an integer or out of range",
                ))
            }
            Some(2) => Some(Protocol::Resp2),
            Some(3) => Some(Protocol::Resp3),
            Some(_) => {
                return RespCommand::Refused(Reply::error("NOPROTO unsupported protocol version"))
            }
        },
    };
    let rest: Vec<Bytes> = args.collect();
    let mut auth = None;
    let mut setname = None;
    let mut i = 0;
    while i < rest.len() {
        let more = rest.len() - 1 - i;
        let option = rest[i].to_ascii_uppercase();
        if option == b"AUTH" && more >= 2 {
            auth = Some((rest[i + 1].clone(), rest[i + 2].clone()));
            i += 3;
        } else if option == b"SETNAME" && more >= 1 {
            setname = Some(rest[i + 1].clone());
            i += 2;
        } else {
            let mut text = b"ERR Syntax error in HELLO option '".to_vec();
            text.extend_from_slice(c_prefix(&rest[i], usize::MAX));
            text.push(b'\'');
            return RespCommand::Refused(Reply::error(text));
        }
    }
    if let Some(name) = &setname {
        if let Err(reply) = check_client_name(name) {
            return RespCommand::Refused(reply);
        }
    }
    RespCommand::Hello(Hello {
        protocol,
        auth,
        setname,
    })
}

/// Redis accepts client names of printable ASCII without space (`!`..`~`).
fn check_client_name(name: &[u8]) -> Result<(), Reply> {
    if name.iter().all(|&b| (b'!'..=b'~').contains(&b)) {
        Ok(())
    } else {
        Err(Reply::error(
            "ERR Client names cannot contain spaces, newlines or special characters.",
        ))
    }
}

fn parse_client(mut args: Vec<Bytes>) -> RespCommand {
    let sub = args.remove(0);
    let n = args.len();
    let arity = |name: &str| RespCommand::Refused(Reply::wrong_arity(name));
    match &sub.to_ascii_uppercase()[..] {
        b"SETNAME" if n != 1 => arity("client|setname"),
        b"SETNAME" => {
            let name = args.pop().expect("one argument");
            match check_client_name(&name) {
                Ok(()) => RespCommand::Client(ClientCommand::SetName(name)),
                Err(reply) => RespCommand::Refused(reply),
            }
        }
        b"GETNAME" if n != 0 => arity("client|getname"),
        b"GETNAME" => RespCommand::Client(ClientCommand::GetName),
        b"ID" if n != 0 => arity("client|id"),
        b"ID" => RespCommand::Client(ClientCommand::Id),
        b"SETINFO" if n != 2 => arity("client|setinfo"),
        b"SETINFO" => {
            let value = args.pop().expect("two arguments");
            let attribute = args.pop().expect("two arguments");
            RespCommand::Client(ClientCommand::SetInfo { attribute, value })
        }
        _ => RespCommand::Refused(Reply::unknown_subcommand("CLIENT", &sub)),
    }
}

fn parse_pubsub(mut args: Vec<Bytes>) -> RespCommand {
    let sub = args.remove(0);
    let n = args.len();
    match &sub.to_ascii_uppercase()[..] {
        b"CHANNELS" if n > 1 => {
            let mut text = b"ERR unknown subcommand or wrong number of arguments for '".to_vec();
            text.extend_from_slice(c_prefix(&sub, 128));
            text.extend_from_slice(b"'. Try PUBSUB HELP.");
            RespCommand::Refused(Reply::error(text))
        }
        b"CHANNELS" => RespCommand::PubsubChannels(args.pop()),
        b"NUMSUB" => RespCommand::PubsubNumsub(args),
        b"NUMPAT" if n != 0 => RespCommand::Refused(Reply::wrong_arity("pubsub|numpat")),
        b"NUMPAT" => RespCommand::PubsubNumpat,
        _ => RespCommand::Refused(Reply::unknown_subcommand("PUBSUB", &sub)),
    }
}

/// A decimal integer as Redis reads one (`string2ll`): an optional `-`,
/// then digits without a leading zero (`0` itself excepted; no `-0`, no
/// `+`, no blanks), fitting in `i64`.
pub fn parse_redis_i64(text: &[u8]) -> Option<i64> {
    let (negative, digits) = match text.split_first()? {
        (b'-', rest) => (true, rest),
        _ => (false, text),
    };
    match digits {
        [] => return None,
        [b'0'] if !negative => return Some(0),
        [b'0', ..] => return None,
        _ => {}
    }
    let magnitude = digits.iter().try_fold(0u64, |acc, &b| {
        if b.is_ascii_digit() {
            acc.checked_mul(10)?.checked_add(u64::from(b - b'0'))
        } else {
            None
        }
    })?;
    if negative {
        0i64.checked_sub_unsigned(magnitude)
    } else {
        i64::try_from(magnitude).ok()
    }
}
