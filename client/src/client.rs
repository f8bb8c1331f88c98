//! [`Client`]: one async connection to a node, one request at a time, each
//! waiting for its reply (bounded by [`ClientOptions::reply_timeout`]).

use std::fmt;
use std::io;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use tokio::net::{TcpStream, ToSocketAddrs};
use tokio_util::codec::Framed;

use crate::codec::{topics_of, ClientCodec, CodecError, Limits, Message, Reply, Request};

/// How a [`Client`] connects and waits.
#[derive(Debug, Clone, Copy)]
pub struct ClientOptions {
    /// How long a connection attempt may take. Default 5 s.
    pub connect_timeout: Duration,
    /// How long a reply may take. Default 10 s.
    pub reply_timeout: Duration,
    /// Bounds of the reply decoder.
    pub limits: Limits,
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            connect_timeout: Duration::from_secs(5),
            reply_timeout: Duration::from_secs(10),
            limits: Limits::default(),
        }
    }
}

/// What went wrong with a request.
#[derive(Debug)]
pub enum Error {
    /// Connecting, reading or writing failed; the connection is unusable.
    Io(io::Error),
    /// The node closed the connection.
    Closed,
    /// No reply within [`ClientOptions::reply_timeout`] (or no connection
    /// within `connect_timeout`); the connection is unusable.
    Timeout,
    /// The reply stream is not Kraken's; the connection is unusable.
    Protocol(String),
    /// The request cannot be framed (a bad topic); nothing was sent and
    /// the connection is still usable.
    BadRequest(String),
    /// The node refused the request (`ERROR`, `CLIENT_ERROR ...`,
    /// `SERVER_ERROR ...`: the whole line). After `CLIENT_ERROR` about a
    /// body (a bad topic, a too long topic) the connection is still usable.
    Refused(String),
}

impl Error {
    /// Whether the connection can still be used after this error.
    pub fn connection_usable(&self) -> bool {
        match self {
            Error::BadRequest(_) => true,
            Error::Refused(line) => line.starts_with("CLIENT_ERROR"),
            _ => false,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Io(e) => write!(f, "{e}"),
            Error::Closed => f.write_str("the node closed the connection"),
            Error::Timeout => f.write_str("the node did not answer in time"),
            Error::Protocol(why) => write!(f, "bad reply: {why}"),
            Error::BadRequest(why) => write!(f, "bad request: {why}"),
            Error::Refused(line) => write!(f, "refused: {line}"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Io(e) => Some(e),
            _ => None,
        }
    }
}

impl From<CodecError> for Error {
    fn from(e: CodecError) -> Self {
        match e {
            CodecError::Io(e) => Error::Io(e),
            CodecError::Protocol(why) => Error::Protocol(why),
            CodecError::BadRequest(why) => Error::BadRequest(why),
        }
    }
}

/// The answer to `retro_subscribe` (and to the first `subscribe` after a
/// `register`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retro {
    /// `STORED`: subscribed, and every buffered message since the horizon
    /// will be delivered by the next polls.
    Complete,
    /// `NOT_FOUND`: subscribed, but the node cannot prove that nothing was
    /// lost since the horizon (it restarted, or its buffer no longer reaches
    /// back). Reload everything the topics stand for.
    ReloadEverything,
}

/// One connection to a node.
///
/// Every method sends one request and waits for its reply, so a
/// `subscribe` that returned is in force, and a `NOT_FOUND` is always seen.
/// A method's future is not cancel-safe: dropping it midway leaves the
/// reply unread, so drop the `Client` too.
pub struct Client {
    framed: Framed<TcpStream, ClientCodec>,
    options: ClientOptions,
}

impl Client {
    /// Connects with default options.
    pub async fn connect(addr: impl ToSocketAddrs) -> Result<Client, Error> {
        Client::connect_with(addr, ClientOptions::default()).await
    }

    /// Connects (TCP_NODELAY) within `options.connect_timeout`.
    pub async fn connect_with(
        addr: impl ToSocketAddrs,
        options: ClientOptions,
    ) -> Result<Client, Error> {
        let stream = tokio::time::timeout(options.connect_timeout, TcpStream::connect(addr))
            .await
            .map_err(|_| Error::Timeout)?
            .map_err(Error::Io)?;
        stream.set_nodelay(true).map_err(Error::Io)?;
        Ok(Client {
            framed: Framed::new(stream, ClientCodec::new(options.limits)),
            options,
        })
    }

    /// Sends `request` and, unless it has none, waits for its reply.
    /// A refusal (`ERROR`, `CLIENT_ERROR`, `SERVER_ERROR`) is returned as a
    /// reply, not an error.
    pub async fn request(&mut self, request: Request) -> Result<Option<Reply>, Error> {
        let expects = request.expects_reply();
        self.framed.send(request).await?;
        if !expects {
            return Ok(None);
        }
        match tokio::time::timeout(self.options.reply_timeout, self.framed.next()).await {
            Err(_) => Err(Error::Timeout),
            Ok(None) => Err(Error::Closed),
            Ok(Some(Err(e))) => Err(e.into()),
            Ok(Some(Ok(reply))) => Ok(Some(reply)),
        }
    }

    /// [`Client::request`] for a request that has a reply; a refusal is an
    /// [`Error::Refused`].
    async fn call(&mut self, request: Request) -> Result<Reply, Error> {
        match self.request(request).await? {
            Some(r) if r.is_error() => Err(Error::Refused(r.to_string())),
            Some(r) => Ok(r),
            None => Err(Error::Protocol("no reply expected".into())),
        }
    }

    fn unexpected(what: &str, reply: Reply) -> Error {
        Error::Protocol(format!("unexpected reply {reply} to {what}"))
    }

    /// `set subscribe`: returns once the subscription is in force. After a
    /// `register`, the first subscribe replays what was published since; if
    /// it answers `NOT_FOUND`, this returns [`Retro::ReloadEverything`].
    pub async fn subscribe<I, T>(&mut self, topics: I) -> Result<Retro, Error>
    where
        I: IntoIterator<Item = T>,
        T: AsRef<[u8]>,
    {
        let topics = topics_of(topics);
        match self
            .call(Request::Subscribe {
                topics,
                noreply: false,
            })
            .await?
        {
            Reply::Stored => Ok(Retro::Complete),
            Reply::NotFound => Ok(Retro::ReloadEverything),
            other => Err(Client::unexpected("subscribe", other)),
        }
    }

    /// `set unsubscribe` (unknown topics are ignored).
    pub async fn unsubscribe<I, T>(&mut self, topics: I) -> Result<(), Error>
    where
        I: IntoIterator<Item = T>,
        T: AsRef<[u8]>,
    {
        let topics = topics_of(topics);
        match self
            .call(Request::Unsubscribe {
                topics,
                noreply: false,
            })
            .await?
        {
            Reply::Stored => Ok(()),
            other => Err(Client::unexpected("unsubscribe", other)),
        }
    }

    /// Publishes `payload` to `topics`. A publisher never receives its own
    /// messages.
    pub async fn publish<I, T>(&mut self, topics: I, payload: impl AsRef<[u8]>) -> Result<(), Error>
    where
        I: IntoIterator<Item = T>,
        T: AsRef<[u8]>,
    {
        self.publish_many(vec![Message::new(topics, payload)]).await
    }

    /// Publishes several messages in one request (all or none accepted).
    pub async fn publish_many(&mut self, messages: Vec<Message>) -> Result<(), Error> {
        match self
            .call(Request::Publish {
                messages,
                noreply: false,
            })
            .await?
        {
            Reply::Stored => Ok(()),
            other => Err(Client::unexpected("publish", other)),
        }
    }

    /// `set register`: the node remembers *now*; the first `subscribe`
    /// after it replays every message published since.
    pub async fn register(&mut self) -> Result<(), Error> {
        match self.call(Request::Register { noreply: false }).await? {
            Reply::Stored => Ok(()),
            other => Err(Client::unexpected("register", other)),
        }
    }

    /// `set retro_subscribe`: subscribes `topics` and replays the buffered
    /// messages on them published at or after `horizon_secs` (unix
    /// seconds), or says [`Retro::ReloadEverything`] when it cannot prove
    /// that nothing since then is missing.
    pub async fn retro_subscribe<I, T>(
        &mut self,
        horizon_secs: i64,
        topics: I,
    ) -> Result<Retro, Error>
    where
        I: IntoIterator<Item = T>,
        T: AsRef<[u8]>,
    {
        let topics = topics_of(topics);
        self.retro_subscribe_bytes(horizon_secs, topics).await
    }

    pub(crate) async fn retro_subscribe_bytes(
        &mut self,
        horizon_secs: i64,
        topics: Vec<Bytes>,
    ) -> Result<Retro, Error> {
        let request = Request::RetroSubscribe {
            horizon_secs,
            topics,
            noreply: false,
        };
        match self.call(request).await? {
            Reply::Stored => Ok(Retro::Complete),
            Reply::NotFound => Ok(Retro::ReloadEverything),
            other => Err(Client::unexpected("retro_subscribe", other)),
        }
    }

    /// `get messages`: takes everything queued for this connection (also
    /// its heartbeat: a node closes a client silent for its idle timeout).
    pub async fn poll(&mut self) -> Result<Vec<Message>, Error> {
        match self.call(Request::GetMessages).await? {
            Reply::End => Ok(Vec::new()),
            Reply::Messages(m) => Ok(m.into_vec()),
            other => Err(Client::unexpected("get messages", other)),
        }
    }

    /// `stats`: the node's counters, in its order.
    pub async fn stats(&mut self) -> Result<Vec<(String, String)>, Error> {
        match self.call(Request::Stats).await? {
            Reply::Stats(s) => Ok(s),
            other => Err(Client::unexpected("stats", other)),
        }
    }

    /// `version`
    pub async fn version(&mut self) -> Result<String, Error> {
        match self.call(Request::Version).await? {
            Reply::Version(v) => Ok(v),
            other => Err(Client::unexpected("version", other)),
        }
    }

    /// `quit`: the node closes the connection (and forgets its
    /// subscriptions and queue).
    pub async fn quit(mut self) -> Result<(), Error> {
        self.request(Request::Quit).await.map(|_| ())
    }
}
