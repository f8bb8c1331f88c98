//! A client library for the Kraken pubsub server.
//!
//! - [`codec`]: the client side of the wire protocol (a bounded
//!   `tokio_util` codec of requests and replies). Always built; it needs no
//!   runtime.
//! - [`Client`] (feature `client`, on by default): one async connection
//!   (tokio). Every request waits for its reply, so when `subscribe`
//!   returns the subscription is in force, and `NOT_FOUND` is never missed.
//! - [`Subscriber`] (feature `client`): a subscription that polls, yields
//!   [`Event`]s and survives connection loss. On reconnection it
//!   re-subscribes with `retro_subscribe` from the second of its last
//!   successful poll, so the node replays what was published meanwhile; when
//!   the node cannot (it restarted, or its replay buffer no longer reaches
//!   back), the subscriber yields [`Event::ReloadEverything`]. Nothing is
//!   ever silently missed; a message may arrive twice (at-least-once).
//!
//! ```no_run
//! # async fn run() -> Result<(), kraken_client::Error> {
//! use kraken_client::{Event, Subscriber, SubscriberOptions};
//!
//! let mut sub = Subscriber::connect("127.0.0.1:12355", ["news"], SubscriberOptions::default()).await?;
//! loop {
//!     match sub.next().await {
//!         Event::Message { topics, payload } => println!("{topics:?}: {payload:?}"),
//!         Event::ReloadEverything => println!("reload the data behind every topic"),
//!     }
//! }
//! # }
//! ```

pub mod codec;

#[cfg(feature = "client")]
mod client;
#[cfg(feature = "client")]
mod subscriber;

#[cfg(feature = "client")]
pub use client::{Client, ClientOptions, Error, Retro};
pub use codec::{ClientCodec, Limits, Message, Reply, Request};
#[cfg(feature = "client")]
pub use subscriber::{Event, Subscriber, SubscriberOptions};
