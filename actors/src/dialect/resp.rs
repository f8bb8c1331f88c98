//! The Redis pub/sub dialect of `resp_port` (`docs/RESP.md`): the bounded
//! [`RespCodec`], Redis's replies, and deliveries pushed by the client
//! queue as `message` pushes, one per subscribed channel a message matched.
//!
//! The dialect mirrors the connection's channel set (the client queue owns
//! the subscriptions; only this connection changes them), so it can answer
//! the confirmations' counts, the RESP2 subscribed-mode rule and
//! `UNSUBSCRIBE` without arguments without asking; each change still goes
//! through the queue, and its confirmations are written once the queue
//! (and so every shard) has applied it.

use std::sync::atomic::Ordering;

use bytes::{BufMut, Bytes, BytesMut};
use kraken_protocol::resp::{
    glob_match, ClientCommand, Protocol, Reply, RespCodec, RespCommand, RespLimits,
};
use kraken_protocol::{PublishEntry, Response};
use tokio_util::codec::Decoder;

use super::{Answer, Dialect, Op, Unreadable};
use crate::client::{ClientInfo, FastSet};
use crate::env::Env;
use crate::message::Delivery;
#[cfg(test)]
use crate::message::Message;
use crate::queue::QueueRequest;

/// The RESP dialect of one connection.
pub struct Resp {
    codec: RespCodec,
    /// The channels held, as the queue will hold them once it applied
    /// every change asked so far.
    channels: FastSet<Bytes>,
    name: Option<Bytes>,
    horizon: Option<Horizon>,
}

/// What `KRAKEN.REGISTER` left for the next `SUBSCRIBE`.
#[derive(Debug, Clone, Copy)]
enum Horizon {
    /// Exact: the queue registered (now); the value is the second reported.
    Queue(i64),
    /// At a given second: the next subscribe is a retro subscribe of its
    /// new channels.
    At(i64),
}

/// What a RESP command waits with.
#[derive(Default)]
pub enum Pending {
    /// Nothing to write (pushes, errors).
    #[default]
    Nothing,
    /// The reply, known at once, in the protocol of its time.
    Reply(Reply, Protocol),
    /// Subscription confirmations, then (retro) the replay and the result.
    Subscribe {
        confirms: Vec<Reply>,
        retro: Option<i64>,
        protocol: Protocol,
        /// The channels it added to the mirror (taken back if refused).
        added: Vec<Bytes>,
    },
    /// Unsubscription confirmations, or `+RESET`.
    Confirms(Vec<Reply>, Protocol),
    /// `KRAKEN.REGISTER` without a horizon, reporting this second.
    Registered(i64, Protocol),
    /// `PUBLISH`: the number of subscribers reached.
    Publish,
    /// `PUBSUB CHANNELS [pattern]` and `PUBSUB NUMSUB`.
    Channels(Option<Bytes>, Protocol),
    Numsub(Vec<Bytes>, Protocol),
    /// `INFO`, read once the shards settled.
    Info(Protocol),
}

fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// The `INFO` text: the node's `stats` as `key:value` lines.
fn info_text(env: &Env) -> Bytes {
    let mut text = String::from("# Kraken\r\n");
    for (k, v) in env.stats() {
        text.push_str(&k);
        text.push(':');
        text.push_str(&v);
        text.push_str("\r\n");
    }
    Bytes::from(text)
}

/// `<marker><n>\r\n`
fn put_len(out: &mut BytesMut, marker: u8, n: usize) {
    kraken_protocol::resp::reply::put_len(out, marker, n as u64);
}

/// One `message` push, written straight into `out` (no per-push allocation
/// but the length texts).
fn put_message(out: &mut BytesMut, protocol: Protocol, channel: &[u8], payload: &[u8]) {
    out.reserve(32 + channel.len() + payload.len());
    out.put_slice(match protocol {
        Protocol::Resp2 => b"*3\r\n$7\r\nmessage\r\n",
        Protocol::Resp3 => b">3\r\n$7\r\nmessage\r\n",
    });
    put_len(out, b'$', channel.len());
    out.put_slice(channel);
    out.put_slice(b"\r\n");
    put_len(out, b'$', payload.len());
    out.put_slice(payload);
    out.put_slice(b"\r\n");
}

/// The channels of `d`'s message its subscriber holds, in the order the
/// message names them.
fn held_channels(d: &Delivery, mut each: impl FnMut(&[u8])) {
    match d {
        Delivery::All(m) => m.topics.iter().for_each(|t| each(t)),
        Delivery::Some(m, mask) => m
            .topics
            .iter()
            .enumerate()
            .filter(|(i, _)| mask & (1 << i) != 0)
            .for_each(|(_, t)| each(t)),
        // `MESSAGE <held topics> <len>\r\n`: topics contain no space.
        Delivery::Built(_, header) => {
            let line = header.strip_suffix(b"\r\n").unwrap_or(header);
            let mut words: Vec<&[u8]> = line.split(|&b| b == b' ').collect();
            words.pop();
            words.iter().skip(1).for_each(|t| each(t));
        }
    }
}

impl Resp {
    fn protocol(&self) -> Protocol {
        self.codec.protocol()
    }

    fn now(&self, reply: Reply) -> Op<Pending> {
        Op::Reply(Pending::Reply(reply, self.protocol()))
    }

    /// Confirmations of subscribing `channels`, applied to the mirror.
    fn subscribe_confirms(&mut self, channels: &[Bytes]) -> (Vec<Reply>, Vec<Bytes>) {
        let mut added = Vec::new();
        let confirms = channels
            .iter()
            .map(|c| {
                if self.channels.insert(c.clone()) {
                    added.push(c.clone());
                }
                Reply::subscribed(c.clone(), self.channels.len())
            })
            .collect();
        (confirms, added)
    }

    fn subscribe(&mut self, channels: Vec<Bytes>) -> Op<Pending> {
        let protocol = self.protocol();
        let (confirms, added) = self.subscribe_confirms(&channels);
        let (req, retro) = match self.horizon.take() {
            None => (QueueRequest::Subscribe(channels.into()), None),
            Some(Horizon::Queue(secs)) => (QueueRequest::Subscribe(channels.into()), Some(secs)),
            Some(Horizon::At(secs)) => (
                QueueRequest::RetroSubscribe {
                    horizon_secs: secs,
                    topics: added.clone().into(),
                },
                Some(secs),
            ),
        };
        Op::Ask(
            req,
            Pending::Subscribe {
                confirms,
                retro,
                protocol,
                added,
            },
        )
    }

    fn unsubscribe(&mut self, channels: Vec<Bytes>, reset: bool) -> Op<Pending> {
        let protocol = self.protocol();
        let channels: Vec<Bytes> = if channels.is_empty() {
            self.channels.iter().cloned().collect()
        } else {
            channels
        };
        let mut confirms = Vec::new();
        let mut held = Vec::new();
        for c in channels {
            if self.channels.remove(&c) {
                held.push(c.clone());
            }
            if !reset {
                confirms.push(Reply::unsubscribed(Some(c), self.channels.len()));
            }
        }
        if reset {
            confirms.push(Reply::reset());
        } else if confirms.is_empty() {
            confirms.push(Reply::unsubscribed(None, 0));
        }
        if held.is_empty() {
            return Op::Reply(Pending::Confirms(confirms, protocol));
        }
        Op::Ask(
            QueueRequest::Unsubscribe(held.into()),
            Pending::Confirms(confirms, protocol),
        )
    }

    /// Writes pushed deliveries as `message` pushes.
    fn put_pushes(&self, items: &[Delivery], env: &Env, out: &mut BytesMut) {
        let protocol = self.protocol();
        let mut pushes = 0u64;
        for d in items {
            let m = d.message();
            if let (Delivery::All(_), [channel]) = (d, &m.topics[..]) {
                // The common case: one frame per message, copied.
                let frame = m.resp_push.get_or_init(|| {
                    let mut b = BytesMut::new();
                    put_message(&mut b, Protocol::Resp2, channel, &m.payload);
                    b.freeze()
                });
                let at = out.len();
                out.extend_from_slice(frame);
                if protocol == Protocol::Resp3 {
                    out[at] = b'>';
                }
                pushes += 1;
                continue;
            }
            let payload = &m.payload;
            held_channels(d, |channel| {
                put_message(out, protocol, channel, payload);
                pushes += 1;
            });
        }
        env.node
            .counters
            .resp_pushes
            .fetch_add(pushes, Ordering::Relaxed);
    }
}

impl Dialect for Resp {
    type Request = RespCommand;
    type Pending = Pending;
    const PUSH: bool = true;

    fn new(env: &Env, _info: &ClientInfo) -> Self {
        let s = &env.node.settings;
        let defaults = RespLimits::default();
        Resp {
            codec: RespCodec::new(RespLimits {
                max_inline_bytes: defaults.max_inline_bytes.min(s.max_request_bytes),
                max_bulk_bytes: s.max_request_bytes,
                max_args: defaults.max_args,
                // A whole bulk of max_request_bytes plus the command's
                // other arguments.
                max_command_bytes: s.max_request_bytes.saturating_add(64 * 1024),
                max_channel_bytes: s.max_topic_bytes,
            }),
            channels: FastSet::default(),
            name: None,
            horizon: None,
        }
    }

    fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<RespCommand>, Unreadable> {
        self.codec.decode(buf).map_err(|_| Unreadable)
    }

    fn decode_eof(&mut self, buf: &mut BytesMut) -> Option<RespCommand> {
        self.codec.decode_eof(buf).ok().flatten()
    }

    fn request(&mut self, command: RespCommand, _env: &Env, info: &ClientInfo) -> Op<Pending> {
        let protocol = self.protocol();
        let subscribed = !self.channels.is_empty();
        if protocol == Protocol::Resp2
            && subscribed
            && !command.allowed_in_resp2_subscribed_context()
        {
            let name = command.name().unwrap_or("unknown");
            return self.now(Reply::not_in_subscribed_context(name));
        }
        match command {
            RespCommand::Subscribe(channels) => self.subscribe(channels),
            RespCommand::Unsubscribe(channels) => self.unsubscribe(channels, false),
            RespCommand::PSubscribe(_) => self.now(Reply::psubscribe_refused()),
            RespCommand::PUnsubscribe(_) => {
                self.now(Reply::punsubscribed(None, self.channels.len()))
            }
            RespCommand::Publish { channel, message } => Op::Publish(
                vec![PublishEntry {
                    topics: vec![channel],
                    payload: message,
                }],
                Pending::Publish,
            ),
            RespCommand::Ping(message) => self.now(Reply::pong(protocol, subscribed, message)),
            RespCommand::Quit => Op::ReplyClose(Pending::Reply(Reply::ok(), protocol)),
            RespCommand::Reset => {
                self.name = None;
                // A horizon set at a given second is forgotten; one the
                // queue holds (exact, `KRAKEN.REGISTER` without argument)
                // is still used by the next SUBSCRIBE, which reports it.
                if let Some(Horizon::At(_)) = self.horizon {
                    self.horizon = None;
                }
                self.codec.set_protocol(Protocol::Resp2);
                self.unsubscribe(Vec::new(), true)
            }
            RespCommand::Hello(hello) => {
                if let Some((user, _)) = &hello.auth {
                    if &user[..] != b"default" {
                        return self.now(Reply::wrong_pass());
                    }
                }
                if let Some(name) = hello.setname {
                    self.name = (!name.is_empty()).then_some(name);
                }
                if let Some(p) = hello.protocol {
                    self.codec.set_protocol(p);
                }
                let p = self.protocol();
                self.now(Reply::hello(
                    p,
                    info.id as i64,
                    "kraken",
                    crate::node::VERSION,
                ))
            }
            RespCommand::Client(ClientCommand::SetName(name)) => {
                self.name = (!name.is_empty()).then_some(name);
                self.now(Reply::ok())
            }
            RespCommand::Client(ClientCommand::GetName) => {
                self.now(Reply::bulk_or_null(self.name.clone()))
            }
            RespCommand::Client(ClientCommand::Id) => self.now(Reply::Integer(info.id as i64)),
            RespCommand::Client(ClientCommand::SetInfo { .. }) => self.now(Reply::ok()),
            RespCommand::Command(args) => {
                let count = args
                    .first()
                    .is_some_and(|a| a.eq_ignore_ascii_case(b"COUNT"));
                self.now(if count {
                    Reply::Integer(0)
                } else {
                    Reply::Array(Vec::new())
                })
            }
            RespCommand::Info(_) => Op::Settled(Pending::Info(protocol)),
            RespCommand::PubsubChannels(pattern) => {
                Op::Channels(Pending::Channels(pattern, protocol))
            }
            RespCommand::PubsubNumsub(channels) => {
                Op::Channels(Pending::Numsub(channels, protocol))
            }
            RespCommand::PubsubNumpat => self.now(Reply::Integer(0)),
            RespCommand::KrakenRegister { horizon_secs: None } => {
                let secs = now_secs();
                self.horizon = Some(Horizon::Queue(secs));
                Op::Ask(QueueRequest::Register, Pending::Registered(secs, protocol))
            }
            RespCommand::KrakenRegister {
                horizon_secs: Some(secs),
            } => {
                self.horizon = Some(Horizon::At(secs));
                self.now(Reply::registered(secs))
            }
            RespCommand::KrakenRetroSubscribe {
                horizon_secs,
                channels,
            } => {
                let (confirms, added) = self.subscribe_confirms(&channels);
                Op::Ask(
                    QueueRequest::RetroSubscribe {
                        horizon_secs,
                        topics: channels.into(),
                    },
                    Pending::Subscribe {
                        confirms,
                        retro: Some(horizon_secs),
                        protocol,
                        added,
                    },
                )
            }
            RespCommand::Unknown { reply, .. } | RespCommand::Refused(reply) => self.now(reply),
            RespCommand::ProtocolError(reply) => Op::ReplyClose(Pending::Reply(reply, protocol)),
        }
    }

    fn collects_pushes(pending: &Pending) -> bool {
        matches!(pending, Pending::Subscribe { retro: Some(_), .. })
    }

    fn encode_pushed(
        &mut self,
        items: Vec<Delivery>,
        env: &Env,
        out: &mut BytesMut,
    ) -> Vec<Delivery> {
        self.put_pushes(&items, env, out);
        items
    }

    fn encode(
        &mut self,
        pending: Pending,
        answer: Answer,
        stash: Vec<Delivery>,
        env: &Env,
        out: &mut BytesMut,
    ) {
        let error = |text: &str| Reply::error(format!("ERR {text}"));
        let queue_error = |r: &Response| match r {
            Response::Stored | Response::NotFound => None,
            Response::ServerError(t) | Response::ClientError(t) => Some(error(t)),
            other => Some(error(&format!("{other:?}"))),
        };
        match (pending, answer) {
            (_, Answer::Pushed(items) | Answer::Polled(items)) => self.put_pushes(&items, env, out),
            (_, Answer::ServerError(text)) => error(&text).encode(self.protocol(), out),
            (Pending::Reply(reply, p), _) => reply.encode(p, out),
            (Pending::Info(p), _) => Reply::Verbatim(info_text(env)).encode(p, out),
            (
                Pending::Subscribe {
                    confirms,
                    retro,
                    protocol,
                    added,
                },
                Answer::Queue(r),
            ) => {
                if let Some(e) = queue_error(&r) {
                    // A refusal (a limit) left the queue's set unchanged; a
                    // failed shard did not (the queue keeps the channels and
                    // rebuilds the shard from them).
                    if matches!(r, Response::ClientError(_)) {
                        for c in &added {
                            self.channels.remove(c);
                        }
                    }
                    e.encode(protocol, out);
                } else {
                    for c in confirms {
                        c.encode(protocol, out);
                    }
                }
                self.put_pushes(&stash, env, out);
                if let (Some(secs), None) = (retro, queue_error(&r)) {
                    Reply::retro_result(secs, r == Response::Stored).encode(protocol, out);
                }
            }
            (Pending::Confirms(confirms, p), Answer::Now | Answer::Queue(Response::Stored)) => {
                for c in confirms {
                    c.encode(p, out);
                }
            }
            (Pending::Registered(secs, p), Answer::Queue(Response::Stored)) => {
                Reply::registered(secs).encode(p, out)
            }
            (Pending::Confirms(_, p) | Pending::Registered(_, p), Answer::Queue(r)) => {
                queue_error(&r)
                    .unwrap_or_else(|| error("unexpected answer"))
                    .encode(p, out)
            }
            (Pending::Publish, Answer::Published(Ok(n))) => {
                Reply::Integer(n as i64).encode(self.protocol(), out)
            }
            (Pending::Publish, Answer::Published(Err(failed))) => {
                let text = match failed.reply() {
                    Response::ServerError(t) => t,
                    _ => "publish failed".into(),
                };
                error(&text).encode(self.protocol(), out)
            }
            (Pending::Channels(pattern, p), Answer::Channels(all)) => {
                let mut list: Vec<Bytes> = all
                    .into_iter()
                    .filter(|(c, n)| {
                        *n > 0 && pattern.as_ref().is_none_or(|pat| glob_match(pat, c))
                    })
                    .map(|(c, _)| c)
                    .collect();
                list.sort();
                Reply::Array(list.into_iter().map(Reply::Bulk).collect()).encode(p, out)
            }
            (Pending::Numsub(channels, p), Answer::Channels(all)) => {
                let counts: crate::client::FastMap<Bytes, usize> = all.into_iter().collect();
                let mut list = Vec::with_capacity(2 * channels.len());
                for c in channels {
                    let n = counts.get(&c).copied().unwrap_or(0);
                    list.push(Reply::Bulk(c));
                    list.push(Reply::Integer(n as i64));
                }
                Reply::Array(list).encode(p, out)
            }
            (_, _) => {}
        }
    }
}

/// Kept for symmetry with the memcached side: a message's RESP pushes for a
/// subscriber holding the topics at `matched` (tests).
#[cfg(test)]
fn pushes_of(msg: &std::sync::Arc<Message>, matched: &[u32], protocol: Protocol) -> BytesMut {
    let mut out = BytesMut::new();
    held_channels(&Message::delivery(msg, matched), |c| {
        put_message(&mut out, protocol, c, &msg.payload)
    });
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn msg(topics: &[&str], payload: &[u8]) -> Arc<Message> {
        Arc::new(Message::new(
            1,
            0,
            topics.iter().map(|t| Bytes::from(t.to_string())).collect(),
            Bytes::copy_from_slice(payload),
        ))
    }

    #[test]
    fn a_push_is_what_redis_sends() {
        let m = msg(&["news"], b"hi");
        let expected = Reply::message(Protocol::Resp2, b"news", Bytes::from_static(b"hi"))
            .to_bytes(Protocol::Resp2);
        assert_eq!(&pushes_of(&m, &[0], Protocol::Resp2)[..], &expected[..]);
        let expected3 = Reply::message(Protocol::Resp3, b"news", Bytes::from_static(b"hi"))
            .to_bytes(Protocol::Resp3);
        assert_eq!(&pushes_of(&m, &[0], Protocol::Resp3)[..], &expected3[..]);
    }

    #[test]
    fn one_push_per_matched_channel_in_message_order() {
        let m = msg(&["a", "b", "c"], b"x");
        let out = pushes_of(&m, &[0, 2], Protocol::Resp2);
        assert_eq!(
            &out[..],
            b"*3\r\n$7\r\nmessage\r\n$1\r\na\r\n$1\r\nx\r\n*3\r\n$7\r\nmessage\r\n$1\r\nc\r\n$1\r\nx\r\n"
        );
    }

    #[test]
    fn built_headers_of_wide_messages_give_their_channels() {
        let names: Vec<String> = (0..70).map(|i| format!("t{i}")).collect();
        let refs: Vec<&str> = names.iter().map(|s| s.as_str()).collect();
        let m = msg(&refs, b"p");
        let out = pushes_of(&m, &[1, 69], Protocol::Resp2);
        assert_eq!(
            &out[..],
            b"*3\r\n$7\r\nmessage\r\n$2\r\nt1\r\n$1\r\np\r\n*3\r\n$7\r\nmessage\r\n$3\r\nt69\r\n$1\r\np\r\n"
        );
    }
}
