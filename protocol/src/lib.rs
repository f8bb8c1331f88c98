//! Kraken's wire protocol: the memcached text dialect the original Erlang node
//! speaks (`docs/PROTOCOL.md`), as pure data and a `tokio_util` codec.
//!
//! # Layout
//! - [`request`]: what a client can ask ([`Request`], [`SetKey`]) and the
//!   framing errors the decoder reports in-band ([`Rejection`]).
//! - [`response`]: what the node answers ([`Response`], [`OutMessage`]) and
//!   [`message_header`], which spells a delivered entry's header line.
//! - [`codec`]: [`KrakenCodec`], the bounded decoder of requests and the
//!   encoder of responses. It never allocates a client-announced length up
//!   front.
//! - [`publish`]: the body of `set publish` (entries `MESSAGE <topics> <len>`),
//!   `set subscribe`/`unsubscribe` topic lists and the `retro_subscribe` body.
//! - [`resp`]: the Redis pub/sub dialect (RESP2/RESP3): [`resp::RespCodec`]
//!   decodes Redis client commands and encodes replies and pushes.
//!
//! Nothing here knows about actors or sockets; everything is unit-tested and
//! fuzzed with random bytes.

pub mod codec;
mod num;
pub mod publish;
pub mod request;
pub mod resp;
pub mod response;

pub use codec::{KrakenCodec, Limits, RefusalStreak, DISCARD_READ_BYTES, MAX_CONSECUTIVE_REFUSALS};
pub use publish::{
    parse_publish_block, parse_retro_body, parse_retro_head, parse_topics, BodyError, BodyLimits,
    PublishEntry, RetroBody, TopicList,
};
pub use request::{Rejection, Request, SetKey};
pub use response::{message_header, OutMessage, Response};
