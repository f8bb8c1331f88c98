//! The Redis pub/sub dialect (RESP2 and RESP3), as pure data and a
//! `tokio_util` codec, beside the memcached dialect of [`crate::codec`].
//!
//! # Layout
//! - [`codec`]: [`RespCodec`], the bounded decoder of client commands
//!   (arrays of bulk strings and inline lines) and the encoder of replies,
//!   with its [`RespLimits`].
//! - [`command`]: what a client can ask ([`RespCommand`]), parsed and
//!   checked as Redis 7 checks it, with Redis's exact error texts.
//! - [`reply`]: what the node answers ([`Reply`]) in either [`Protocol`],
//!   and the exact replies of the pub/sub commands as constructors
//!   (subscribe confirmations, `message` pushes, PING in subscribed mode,
//!   HELLO's map, Kraken's `kraken.retro` push).
//! - [`inline`]: how an inline command line splits into arguments.
//! - [`glob`]: Redis's glob patterns, for `PUBSUB CHANNELS <pattern>`.
//!
//! The byte-exact behaviour is documented in `docs/RESP.md`; the tests
//! hold the replies of a real Redis 7 as vectors.

pub mod codec;
pub mod command;
pub mod glob;
pub mod inline;
pub mod reply;

pub use codec::{RespCodec, RespLimits};
pub use command::{
    check_channel, parse_redis_i64, ChannelRules, ClientCommand, Hello, RespCommand,
};
pub use glob::glob_match;
pub use inline::{split_inline, Unbalanced};
pub use reply::{MessagePush, Protocol, Reply};
