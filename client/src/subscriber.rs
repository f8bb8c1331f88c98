//! [`Subscriber`]: a subscription that polls at an interval, yields
//! [`Event`]s, and reconnects without silently losing a message.
//!
//! It remembers the unix second in which its last successful poll was sent
//! (at first: the second its subscription was sent). Every message
//! published before that poll was queued for it and received. When the
//! connection fails (closed by the node as a slow consumer or an idle
//! client, a restart, a network fault, a reply timeout), it reconnects with
//! exponential backoff and sends `retro_subscribe <that second>` for all
//! its topics: the node replays everything on them published at or after
//! that second, which covers every message the lost connection did not
//! deliver. If the node answers `NOT_FOUND` (it restarted since, or its
//! replay buffer was overrun), the subscriber yields
//! [`Event::ReloadEverything`]: the application reloads the data behind its
//! topics. A message may be delivered twice (the replay starts at a whole
//! second): delivery is at-least-once. If the replay itself keeps losing
//! the connection (it exceeds the node's per-client queue limit, so the
//! node closes the connection as a slow consumer), the subscriber gives up
//! on it after a few attempts and yields [`Event::ReloadEverything`].

use std::collections::{BTreeSet, VecDeque};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use futures_util::stream::{self, Stream};
use tokio::time::Instant;

use crate::client::{Client, ClientOptions, Error, Retro};
use crate::codec::{check_topic, topics_of};

/// Reconnections in a row whose connection was lost again before its
/// first successful poll, after which the subscriber stops asking for a
/// replay (it subscribes plainly and yields [`Event::ReloadEverything`]): a
/// replay larger than the node's per-client queue limit would otherwise get
/// the connection closed as a slow consumer forever.
const MAX_UNPOLLED_RECONNECTS: u32 = 3;

/// Largest topic list sent in one request (a node refuses data blocks past
/// its `max_request_bytes`, 16 MiB by default).
const BATCH_BYTES: usize = 1 << 20;

/// What a [`Subscriber`] yields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A published message: the subscribed topics it matched, its payload.
    Message { topics: Vec<Bytes>, payload: Bytes },
    /// The node cannot prove that no message was lost (it answered
    /// `NOT_FOUND`): reload the data behind every subscribed topic. Later
    /// events continue from there.
    ReloadEverything,
}

/// How a [`Subscriber`] polls and reconnects.
#[derive(Debug, Clone, Copy)]
pub struct SubscriberOptions {
    /// Pause between polls when nothing came (a poll that brought messages
    /// is followed by another at once). Default 100 ms. Keep it well under
    /// the node's `client_idle_timeout`.
    pub poll_interval: Duration,
    /// First reconnection delay; it doubles per failed attempt. Default 50 ms.
    pub backoff_min: Duration,
    /// Longest reconnection delay. Default 5 s.
    pub backoff_max: Duration,
    /// Start with `retro_subscribe <since>` (unix seconds, e.g. when the
    /// application last loaded its data) instead of a plain subscribe: the
    /// first events replay what it missed, or say
    /// [`Event::ReloadEverything`].
    pub since: Option<i64>,
    /// Timeouts and decoder bounds of each connection.
    pub client: ClientOptions,
}

impl Default for SubscriberOptions {
    fn default() -> Self {
        SubscriberOptions {
            poll_interval: Duration::from_millis(100),
            backoff_min: Duration::from_millis(50),
            backoff_max: Duration::from_secs(5),
            since: None,
            client: ClientOptions::default(),
        }
    }
}

/// A subscription that survives connection loss. See the module docs.
pub struct Subscriber {
    addr: String,
    options: SubscriberOptions,
    topics: BTreeSet<Bytes>,
    conn: Option<Client>,
    /// The unix second of the last successful poll (or subscription).
    horizon: i64,
    events: VecDeque<Event>,
    /// When to poll next; `None`: at once.
    next_poll: Option<Instant>,
    /// A request is in flight: if a `next` future is dropped while this is
    /// set, the connection's reply stream is out of step and is dropped.
    busy: bool,
    backoff: Duration,
    last_error: Option<Error>,
    reconnects: u64,
    /// Reconnections since the last successful poll.
    unpolled_reconnects: u32,
}

/// The current unix time in whole seconds.
fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Splits `topics` into lists of at most [`BATCH_BYTES`].
fn batches(topics: &BTreeSet<Bytes>) -> Vec<Vec<Bytes>> {
    let mut out = vec![Vec::new()];
    let mut size = 0;
    for t in topics {
        if size + t.len() + 1 > BATCH_BYTES && !out.last().is_some_and(|b| b.is_empty()) {
            out.push(Vec::new());
            size = 0;
        }
        size += t.len() + 1;
        out.last_mut().expect("one batch").push(t.clone());
    }
    out.retain(|b| !b.is_empty());
    out
}

impl Subscriber {
    /// Connects to `addr` (`host:port`) and subscribes `topics` (or
    /// retro-subscribes from [`SubscriberOptions::since`]). Fails if the
    /// first connection does; later failures are retried forever.
    pub async fn connect<I, T>(
        addr: impl Into<String>,
        topics: I,
        options: SubscriberOptions,
    ) -> Result<Subscriber, Error>
    where
        I: IntoIterator<Item = T>,
        T: AsRef<[u8]>,
    {
        let topics: BTreeSet<Bytes> = topics_of(topics).into_iter().collect();
        for t in &topics {
            check_topic(t)?;
        }
        let mut sub = Subscriber {
            addr: addr.into(),
            options,
            topics,
            conn: None,
            horizon: 0,
            events: VecDeque::new(),
            next_poll: None,
            busy: false,
            backoff: options.backoff_min,
            last_error: None,
            reconnects: 0,
            unpolled_reconnects: 0,
        };
        let mut client = Client::connect_with(sub.addr.as_str(), options.client).await?;
        match options.since {
            // Until the first poll, a reconnection replays from `since`.
            Some(since) => {
                sub.horizon = since;
                sub.resubscribe(&mut client).await?;
            }
            None => {
                sub.horizon = unix_now();
                for batch in batches(&sub.topics) {
                    client.subscribe(batch).await?;
                }
            }
        }
        sub.conn = Some(client);
        Ok(sub)
    }

    /// `retro_subscribe <horizon>` of every topic on `client`; queues
    /// [`Event::ReloadEverything`] on `NOT_FOUND`.
    async fn resubscribe(&mut self, client: &mut Client) -> Result<(), Error> {
        let mut reload = false;
        for batch in batches(&self.topics) {
            if client.retro_subscribe_bytes(self.horizon, batch).await? == Retro::ReloadEverything {
                reload = true;
            }
        }
        if reload {
            self.events.push_back(Event::ReloadEverything);
        }
        Ok(())
    }

    /// The next event. Polls, and reconnects as long as it takes; it never
    /// gives up (wrap it in a timeout to bound it). Dropping the future
    /// midway is safe: nothing is lost (the connection is replaced and the
    /// replay covers it).
    pub async fn next(&mut self) -> Event {
        loop {
            if let Some(e) = self.events.pop_front() {
                return e;
            }
            if self.busy {
                // A previous `next` was dropped with a request in flight.
                self.busy = false;
                self.conn = None;
            }
            let Some(client) = self.conn.as_mut() else {
                self.reconnect().await;
                continue;
            };
            if let Some(at) = self.next_poll {
                tokio::time::sleep_until(at).await;
            }
            let sent = unix_now();
            self.busy = true;
            let polled = client.poll().await;
            self.busy = false;
            match polled {
                Ok(messages) => {
                    self.horizon = sent;
                    self.backoff = self.options.backoff_min;
                    self.unpolled_reconnects = 0;
                    self.next_poll = if messages.is_empty() {
                        Some(Instant::now() + self.options.poll_interval)
                    } else {
                        None
                    };
                    self.events
                        .extend(messages.into_iter().map(|m| Event::Message {
                            topics: m.topics,
                            payload: m.payload,
                        }));
                }
                Err(e) => {
                    self.conn = None;
                    self.last_error = Some(e);
                }
            }
        }
    }

    /// Connects again after `backoff` (doubled per attempt, reset by a
    /// successful poll), then retro-subscribes everything; or, after
    /// [`MAX_UNPOLLED_RECONNECTS`], subscribes plainly and says "reload".
    async fn reconnect(&mut self) {
        loop {
            tokio::time::sleep(self.backoff).await;
            self.backoff = (self.backoff * 2).min(self.options.backoff_max);
            let replay = self.unpolled_reconnects < MAX_UNPOLLED_RECONNECTS;
            let attempt = async {
                let mut client =
                    Client::connect_with(self.addr.as_str(), self.options.client).await?;
                if replay {
                    self.resubscribe(&mut client).await?;
                } else {
                    let horizon = unix_now();
                    for batch in batches(&self.topics) {
                        client.subscribe(batch).await?;
                    }
                    self.horizon = horizon;
                    self.events.push_back(Event::ReloadEverything);
                }
                Ok::<Client, Error>(client)
            };
            match attempt.await {
                Ok(client) => {
                    self.conn = Some(client);
                    self.next_poll = None;
                    self.reconnects += 1;
                    self.unpolled_reconnects = if replay {
                        self.unpolled_reconnects + 1
                    } else {
                        0
                    };
                    return;
                }
                Err(e) => self.last_error = Some(e),
            }
        }
    }

    /// Adds `topics`. On a live connection they are subscribed at once
    /// (an error other than a refused topic drops the connection, and the
    /// reconnection subscribes them); else on reconnection. A reconnection
    /// before the next poll may also replay messages on them published
    /// shortly before they were added (from the last poll's second).
    pub async fn subscribe<I, T>(&mut self, topics: I) -> Result<(), Error>
    where
        I: IntoIterator<Item = T>,
        T: AsRef<[u8]>,
    {
        let topics = topics_of(topics);
        for t in &topics {
            check_topic(t)?;
        }
        if let Some(client) = self.conn.as_mut().filter(|_| !self.busy) {
            match client.subscribe(&topics).await {
                Ok(_) => {}
                Err(e) if e.connection_usable() => return Err(e),
                Err(e) => {
                    self.conn = None;
                    self.last_error = Some(e);
                }
            }
        }
        self.topics.extend(topics);
        Ok(())
    }

    /// Removes `topics` (messages already queued for them may still come).
    pub async fn unsubscribe<I, T>(&mut self, topics: I) -> Result<(), Error>
    where
        I: IntoIterator<Item = T>,
        T: AsRef<[u8]>,
    {
        let topics = topics_of(topics);
        for t in &topics {
            self.topics.remove(t);
        }
        if let Some(client) = self.conn.as_mut().filter(|_| !self.busy) {
            if let Err(e) = client.unsubscribe(&topics).await {
                if !e.connection_usable() {
                    self.conn = None;
                    self.last_error = Some(e);
                }
            }
        }
        Ok(())
    }

    /// The subscribed topics.
    pub fn topics(&self) -> impl Iterator<Item = &Bytes> {
        self.topics.iter()
    }

    /// The unix second from which a reconnection would replay.
    pub fn horizon(&self) -> i64 {
        self.horizon
    }

    /// How many times the subscriber has reconnected.
    pub fn reconnects(&self) -> u64 {
        self.reconnects
    }

    /// The last connection error (kept after a successful reconnection).
    pub fn last_error(&self) -> Option<&Error> {
        self.last_error.as_ref()
    }

    /// The events as a [`Stream`] (it never ends).
    pub fn into_stream(self) -> impl Stream<Item = Event> {
        stream::unfold(self, |mut sub| async move {
            let event = sub.next().await;
            Some((event, sub))
        })
    }

    /// Closes the connection (`quit`).
    pub async fn close(mut self) {
        if let Some(client) = self.conn.take().filter(|_| !self.busy) {
            let _ = client.quit().await;
        }
    }
}
