//! The memcached text dialect of the main port (`docs/PROTOCOL.md`): the
//! bounded [`KrakenCodec`], `set <key>` bodies parsed here (but a topic
//! list, which the client queue checks and splits a slice at a time),
//! `noreply` answers kept quiet, deliveries taken by polls (`get messages`).

use bytes::BytesMut;
use kraken_protocol::{
    parse_publish_block, parse_retro_head, BodyError, BodyLimits, KrakenCodec, Limits, Request,
    Response, SetKey, TopicList,
};
use std::sync::atomic::Ordering;
use tokio_util::codec::{Decoder, Encoder};

use super::{Answer, Dialect, Op, Unreadable};
use crate::client::ClientInfo;
use crate::env::Env;
use crate::message::{encode_poll, Delivery};
use crate::queue::{Named, QueueRequest};

/// The memcached dialect of one connection.
pub struct Memcached {
    codec: KrakenCodec,
}

/// What a memcached request waits with.
pub enum Pending {
    /// The node's answer is the reply; `noreply` keeps `STORED` and
    /// `NOT_FOUND` quiet.
    Await { noreply: bool },
    /// The reply, known at once.
    Reply(Response),
    /// `stats`, read once the shards settled.
    Stats,
}

impl Default for Pending {
    fn default() -> Self {
        Pending::Await { noreply: false }
    }
}

impl Memcached {
    fn put(&mut self, response: Response, out: &mut BytesMut) {
        // Encoding into a BytesMut cannot fail.
        let _ = self.codec.encode(response, out);
    }
}

impl Dialect for Memcached {
    type Request = Request;
    type Pending = Pending;
    const PUSH: bool = false;

    fn new(env: &Env, _info: &ClientInfo) -> Self {
        let s = &env.node.settings;
        Memcached {
            codec: KrakenCodec::new(Limits {
                max_line_bytes: s.max_line_bytes,
                max_request_bytes: s.max_request_bytes,
            }),
        }
    }

    #[inline]
    fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Request>, Unreadable> {
        self.codec.decode(buf).map_err(|_| Unreadable)
    }

    fn decode_eof(&mut self, buf: &mut BytesMut) -> Option<Request> {
        self.codec.decode_eof(buf).ok().flatten()
    }

    fn request(&mut self, req: Request, env: &Env, _info: &ClientInfo) -> Op<Pending> {
        let settings = &env.node.settings;
        let max_topic = settings.max_topic_bytes;
        let refuse =
            |text: &'static str| Op::Reply(Pending::Reply(Response::ClientError(text.into())));
        match req {
            Request::GetMessages => Op::Poll(Pending::default()),
            Request::Set { key, data, noreply } => {
                let wait = Pending::Await { noreply };
                match key {
                    SetKey::Publish => {
                        let limits = BodyLimits {
                            max_topic_bytes: max_topic,
                            max_topics_per_message: settings.max_topics_per_message,
                        };
                        match parse_publish_block(&data, &limits) {
                            Ok(entries) => Op::Publish(entries, wait),
                            Err(e) => {
                                let c = &env.node.counters;
                                let counter = match e {
                                    BodyError::TooManyTopics => &c.refused_publishes_topics,
                                    _ => &c.refused_publishes_bad,
                                };
                                counter.fetch_add(1, Ordering::Relaxed);
                                refuse(e.message())
                            }
                        }
                    }
                    // The queue checks and splits a topic list a slice at a
                    // time (`Named::Body`): half a million topics take some
                    // 40 ms to split, which must not hold this worker at once.
                    SetKey::Subscribe | SetKey::Unsubscribe => {
                        let topics = Named::Body(TopicList::new(data, max_topic));
                        Op::Ask(
                            if key == SetKey::Subscribe {
                                QueueRequest::Subscribe(topics)
                            } else {
                                QueueRequest::Unsubscribe(topics)
                            },
                            wait,
                        )
                    }
                    SetKey::Register => Op::Ask(QueueRequest::Register, wait),
                    SetKey::RetroSubscribe => match parse_retro_head(&data) {
                        Ok((horizon_secs, topics)) => Op::Ask(
                            QueueRequest::RetroSubscribe {
                                horizon_secs,
                                topics: Named::Body(TopicList::new(topics, max_topic)),
                            },
                            wait,
                        ),
                        Err(e) => refuse(e.message()),
                    },
                }
            }
            Request::Quit => Op::Close,
            Request::Stats => Op::Settled(Pending::Stats),
            Request::Version => Op::Reply(Pending::Reply(Response::Version(
                crate::node::VERSION.into(),
            ))),
            Request::Invalid(rejection) => {
                if matches!(&rejection.reply, Response::ClientError(m) if m == "data block too large")
                {
                    env.node
                        .counters
                        .refused_publishes_size
                        .fetch_add(1, Ordering::Relaxed);
                }
                let reply = Pending::Reply(rejection.reply);
                if rejection.close {
                    Op::ReplyClose(reply)
                } else {
                    Op::Reply(reply)
                }
            }
        }
    }

    #[inline]
    fn encode(
        &mut self,
        pending: Pending,
        answer: Answer,
        _stash: Vec<Delivery>,
        env: &Env,
        out: &mut BytesMut,
    ) {
        let noreply = matches!(pending, Pending::Await { noreply: true });
        match (pending, answer) {
            (Pending::Reply(r), _) => self.put(r, out),
            (Pending::Stats, _) => self.put(Response::Stats(env.stats()), out),
            (_, Answer::Polled(items) | Answer::Pushed(items)) => encode_poll(&items, out),
            (_, Answer::Queue(r @ (Response::Stored | Response::NotFound))) if noreply => {
                let _ = r;
            }
            (_, Answer::Queue(r)) => self.put(r, out),
            (_, Answer::Published(Ok(_))) if noreply => {}
            (_, Answer::Published(Ok(_))) => self.put(Response::Stored, out),
            (_, Answer::Published(Err(failed))) => self.put(failed.reply(), out),
            (_, Answer::ServerError(text)) => self.put(Response::ServerError(text.into()), out),
            (_, Answer::Now | Answer::Channels(_)) => {}
        }
    }
}
