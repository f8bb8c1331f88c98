//! The dialect seam: what a wire protocol must provide for the one
//! connection actor ([`crate::connection::Connection`]) to serve it.
//!
//! A [`Dialect`] decodes requests from the read buffer and turns each into
//! one node operation ([`Op`]): answer now, publish entries, ask the client
//! queue (subscribe, unsubscribe, register, retro), poll, list the active
//! channels, close. It keeps with each operation a *pending* value of its
//! own, and when the node has answered ([`Answer`]) it encodes the reply
//! from the two into the write buffer, in request order. Deliveries reach
//! it either by polls (memcached) or pushed by the client queue
//! ([`Dialect::PUSH`], RESP), and it spells them too.
//!
//! The connection is generic over its dialect (`Connection<D: Dialect>`):
//! dispatch is static, and a new protocol is one codec plus one dialect.
//!
//! - [`memcached`]: the memcached text dialect of the main port.
//! - [`resp`]: the Redis pub/sub dialect of `resp_port`.

use bytes::{Bytes, BytesMut};
use kraken_protocol::{PublishEntry, Response};

use crate::client::ClientInfo;
use crate::env::Env;
use crate::message::Delivery;
use crate::publish::Outcome;
use crate::queue::QueueRequest;

pub mod memcached;
pub mod resp;

pub use memcached::Memcached;
pub use resp::Resp;

/// What a request asks of the node; `P` is the dialect's pending value,
/// given back with the [`Answer`].
pub enum Op<P> {
    /// Answer at once ([`Answer::Now`]).
    Reply(P),
    /// Answer at once, then close (nothing more is read).
    ReplyClose(P),
    /// Close without an answer.
    Close,
    /// Publish these entries; answered [`Answer::Published`].
    Publish(Vec<PublishEntry>, P),
    /// A subscription change for the client queue; answered
    /// [`Answer::Queue`].
    Ask(QueueRequest, P),
    /// Take from the inbox; answered [`Answer::Polled`].
    Poll(P),
    /// Every active channel with its subscriber count (all shards);
    /// answered [`Answer::Channels`].
    Channels(P),
    /// Answer once every router shard has handled what reached it before
    /// (the node's counters then include every subscription change the
    /// client was answered); answered [`Answer::Now`].
    Settled(P),
}

/// The node's answer to an [`Op`], or something the connection must say.
pub enum Answer {
    /// The operation needed no other actor.
    Now,
    /// The client queue's answer.
    Queue(Response),
    /// A publish request completed.
    Published(Outcome),
    /// A poll's deliveries.
    Polled(Vec<Delivery>),
    /// Deliveries pushed by the queue (push mode), with the default pending.
    Pushed(Vec<Delivery>),
    /// Active channels and their subscriber counts.
    Channels(Vec<(Bytes, usize)>),
    /// A server-side error to report (slow consumer, upstream backlog,
    /// a failed queue...), with the default pending.
    ServerError(String),
}

/// The request stream cannot be decoded further: the connection closes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unreadable;

/// One wire protocol, as the connection actor uses it.
pub trait Dialect: Sized + Unpin + 'static {
    /// One decoded request.
    type Request;
    /// What the dialect keeps with an operation until it is answered.
    type Pending: Default + Unpin + 'static;
    /// Whether the client queue pushes deliveries (`true`) or waits for
    /// polls.
    const PUSH: bool;

    fn new(env: &Env, info: &ClientInfo) -> Self;

    /// Decodes one request; `Err` means the stream cannot be read further
    /// (the connection closes).
    fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Self::Request>, Unreadable>;

    /// Decodes one request at end of stream.
    fn decode_eof(&mut self, buf: &mut BytesMut) -> Option<Self::Request>;

    /// Turns a request into an operation.
    fn request(&mut self, req: Self::Request, env: &Env, info: &ClientInfo) -> Op<Self::Pending>;

    /// Whether pushes arriving while this operation waits belong inside its
    /// answer (a retroactive subscribe: confirmations, replay, result).
    fn collects_pushes(_pending: &Self::Pending) -> bool {
        false
    }

    /// Encodes an answer into `out`; `stash` holds the pushes collected
    /// while it waited (see [`Dialect::collects_pushes`]).
    fn encode(
        &mut self,
        pending: Self::Pending,
        answer: Answer,
        stash: Vec<Delivery>,
        env: &Env,
        out: &mut BytesMut,
    );

    /// Encodes a pushed batch (an [`Answer::Pushed`] of its own) and gives
    /// back its vector for reuse (empty: nothing to reuse).
    fn encode_pushed(
        &mut self,
        items: Vec<Delivery>,
        env: &Env,
        out: &mut BytesMut,
    ) -> Vec<Delivery> {
        let nothing = Self::Pending::default();
        self.encode(nothing, Answer::Pushed(items), Vec::new(), env, out);
        Vec::new()
    }
}
