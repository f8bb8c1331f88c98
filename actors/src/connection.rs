//! The connection actor: one per TCP client. It reads pipelined requests with
//! the bounded [`KrakenCodec`], answers them strictly in order, routes
//! publishes and polls itself, hands subscription changes to the client's
//! queue actor (on the same arbiter), and closes the connection for bad
//! input, idleness, a slow consumer, or node shutdown.

use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Poll, Waker};

use actix::prelude::*;
use bytes::{Buf, BytesMut};
use kraken_protocol::{
    parse_publish_block, parse_retro_body, parse_topics, BodyLimits, KrakenCodec, Limits, Request,
    Response, SetKey,
};
use slog::{info, warn};
use tokio::io::AsyncWrite;
use tokio::net::tcp::OwnedWriteHalf;
use tokio::net::TcpStream;
use tokio_util::codec::{Encoder, FramedRead};

use crate::client::{ClientShared, Kick};
use crate::node::Node;
use crate::queue::{ClientQueue, QueueRequest};

/// Topic that makes a connection actor panic when `fault_injection` is on.
pub const FAULT_CONNECTION_PANIC: &[u8] = b"__kraken_fault_connection_panic__";
/// Topic whose publish makes its router shard panic when `fault_injection` is on.
pub const FAULT_SHARD_PANIC: &[u8] = b"__kraken_fault_shard_panic__";
/// Topic that makes the listener panic when `fault_injection` is on.
pub const FAULT_LISTENER_PANIC: &[u8] = b"__kraken_fault_listener_panic__";

/// First size of a connection's read buffer. Most requests are a few dozen
/// bytes; the buffer grows for large publishes. Idle clients are the many,
/// so this is most of what an idle connection costs.
const READ_BUFFER_INITIAL: usize = 64;

/// Largest write buffer a connection keeps once it is written out.
const OUT_BUFFER_KEEP: usize = 16 * 1024;

/// One client connection.
pub struct Connection {
    node: Arc<Node>,
    client: Arc<ClientShared>,
    /// The client's queue actor; dropping the last address stops it.
    queue: Addr<ClientQueue>,
    /// Encodes responses into `out`.
    codec: KrakenCodec,
    /// The socket's write half, drained by the [`Flusher`].
    writer: OwnedWriteHalf,
    /// Encoded responses not yet written.
    out: BytesMut,
    /// Wakes the flusher when `out` gains bytes.
    flush_waker: Option<Waker>,
    /// Close once `out` is written; read nothing more.
    closing: bool,
}

/// Tells a connection to close.
#[derive(Message)]
#[rtype(result = "()")]
pub struct KickConnection(pub Kick);

impl Connection {
    /// Starts a connection actor and its queue actor on the current arbiter.
    pub fn start(node: Arc<Node>, stream: TcpStream) {
        let _ = stream.set_nodelay(true);
        let peer = stream
            .peer_addr()
            .unwrap_or_else(|_| std::net::SocketAddr::from(([0, 0, 0, 0], 0)));
        let client = Arc::new(ClientShared::new(
            node.next_client_id(),
            peer,
            node.settings.max_queue_messages,
            node.settings.max_queue_bytes,
        ));
        node.router.registry.insert(client.clone());
        let queue = ClientQueue::new(node.clone(), client.clone()).start();
        let (read, write) = stream.into_split();
        let limits = Limits {
            max_line_bytes: node.settings.max_line_bytes,
            max_request_bytes: node.settings.max_request_bytes,
        };
        Connection::create(move |ctx| {
            ctx.add_stream(FramedRead::with_capacity(
                read,
                KrakenCodec::new(limits),
                READ_BUFFER_INITIAL,
            ));
            let me = ctx.address().downgrade();
            client.set_kick_hook(Box::new(move |why| {
                if let Some(addr) = me.upgrade() {
                    addr.do_send(KickConnection(why));
                }
            }));
            Connection {
                node,
                client,
                queue,
                codec: KrakenCodec::new(limits),
                writer: write,
                out: BytesMut::new(),
                flush_waker: None,
                closing: false,
            }
        });
    }

    fn write(&mut self, response: Response) {
        // Encoding into a BytesMut cannot fail.
        let _ = self.codec.encode(response, &mut self.out);
        self.wake_flusher();
    }

    fn wake_flusher(&mut self) {
        if let Some(w) = self.flush_waker.take() {
            w.wake();
        }
    }

    /// Writes what is pending, then closes.
    fn close(&mut self) {
        self.closing = true;
        self.wake_flusher();
    }

    fn reply(&mut self, response: Response, noreply: bool) {
        let quiet = noreply && matches!(response, Response::Stored | Response::NotFound);
        if !quiet {
            self.write(response);
        }
    }

    fn fault_injection(&self, topics: &[bytes::Bytes]) {
        if !self.node.settings.fault_injection {
            return;
        }
        if topics.iter().any(|t| &t[..] == FAULT_CONNECTION_PANIC) {
            panic!("fault injection: connection {} panicked", self.client.id);
        }
        if topics.iter().any(|t| &t[..] == FAULT_LISTENER_PANIC) {
            if let Some(sup) = self.node.supervisor() {
                sup.do_send(crate::supervisor::InjectListenerPanic);
            }
        }
    }

    fn publish(&mut self, data: &bytes::Bytes) -> Response {
        let settings = &self.node.settings;
        let limits = BodyLimits {
            max_topic_bytes: settings.max_topic_bytes,
            max_topics_per_message: settings.max_topics_per_message,
        };
        let entries = match parse_publish_block(data, &limits) {
            Ok(entries) => entries,
            Err(e) => return Response::ClientError(e.message().into()),
        };
        let node = &self.node;
        let id = self.client.id;
        if let Some(proxy) = node.proxy() {
            if !proxy.admit(&entries) {
                return Response::ServerError(
                    "upstream backlog full: publish not accepted, retry".into(),
                );
            }
        }
        for entry in entries {
            if entry.topics.len() >= settings.router_min_publish_to_topics_to_warn {
                warn!(node.log, "message names many topics";
                    "topics" => entry.topics.len(), "client" => id, "peer" => %self.client.peer);
            }
            if settings.fault_injection && entry.topics.iter().any(|t| &t[..] == FAULT_SHARD_PANIC)
            {
                let shard = node.router.shard_of(FAULT_SHARD_PANIC);
                if let Err(failed) = node
                    .router
                    .supervised(|| node.router.inject_shard_panic(shard))
                {
                    return failed.reply();
                }
            }
            let published = match node
                .router
                .supervised(|| node.router.publish(id, entry.topics, entry.payload))
            {
                Ok(published) => published,
                Err(failed) => return failed.reply(),
            };
            node.counters.published.fetch_add(1, Ordering::Relaxed);
            node.counters
                .delivered
                .fetch_add(published.recipients as u64, Ordering::Relaxed);
            if published.recipients >= settings.router_min_fanout_to_warn {
                warn!(node.log, "message fanned out widely";
                    "subscribers" => published.recipients, "client" => id);
            }
        }
        Response::Stored
    }

    /// Hands a subscription change to the queue actor and waits for its
    /// answer before reading the next request, so answers stay in order.
    fn ask_queue(&mut self, req: QueueRequest, noreply: bool, ctx: &mut Context<Self>) {
        let fut = self
            .queue
            .send(req)
            .into_actor(self)
            .map(move |res, act, _ctx| match res {
                Ok(response) => act.reply(response, noreply),
                Err(_) => {
                    act.write(Response::ServerError("client queue failed".into()));
                    act.close();
                }
            });
        ctx.wait(fut);
    }

    fn handle_request(&mut self, req: Request, ctx: &mut Context<Self>) {
        let max_topic = self.node.settings.max_topic_bytes;
        match req {
            Request::GetMessages => match self.client.take() {
                Some(items) => {
                    crate::message::encode_poll(&items, &mut self.out);
                    self.wake_flusher();
                }
                None if self.client.overflowed() => self.kicked(Kick::SlowConsumer),
                None => self.kicked(Kick::QueueFailed),
            },
            Request::Set { key, data, noreply } => match key {
                SetKey::Publish => {
                    let response = self.publish(&data);
                    self.reply(response, noreply);
                }
                SetKey::Subscribe | SetKey::Unsubscribe => match parse_topics(&data, max_topic) {
                    Ok(topics) => {
                        self.fault_injection(&topics);
                        let req = if key == SetKey::Subscribe {
                            QueueRequest::Subscribe(topics)
                        } else {
                            QueueRequest::Unsubscribe(topics)
                        };
                        self.ask_queue(req, noreply, ctx);
                    }
                    Err(e) => self.write(Response::ClientError(e.message().into())),
                },
                SetKey::Register => self.ask_queue(QueueRequest::Register, noreply, ctx),
                SetKey::RetroSubscribe => match parse_retro_body(&data, max_topic) {
                    Ok(body) => self.ask_queue(QueueRequest::RetroSubscribe(body), noreply, ctx),
                    Err(e) => self.write(Response::ClientError(e.message().into())),
                },
            },
            Request::Quit => self.close(),
            Request::Stats => {
                let stats = self.node.stats();
                self.write(Response::Stats(stats));
            }
            Request::Version => self.write(Response::Version(crate::node::VERSION.into())),
            Request::Invalid(rejection) => {
                self.write(rejection.reply);
                if rejection.close {
                    self.close();
                }
            }
        }
    }

    fn kicked(&mut self, why: Kick) {
        if self.closing {
            return;
        }
        match why {
            Kick::SlowConsumer => {
                self.node
                    .counters
                    .slow_consumers
                    .fetch_add(1, Ordering::Relaxed);
                let (messages, bytes) = (
                    self.node.settings.max_queue_messages,
                    self.node.settings.max_queue_bytes,
                );
                warn!(self.node.log, "slow consumer: queue limit exceeded, closing connection";
                    "client" => self.client.id, "peer" => %self.client.peer,
                    "max_queue_messages" => messages, "max_queue_bytes" => bytes);
                self.write(Response::ServerError(
                    "slow consumer: queue limit exceeded".into(),
                ));
            }
            Kick::UpstreamLost => {
                slog::debug!(self.node.log, "upstream lost: closing client";
                    "client" => self.client.id, "peer" => %self.client.peer);
                self.write(Response::ServerError(
                    "upstream lost: reconnect and reload".into(),
                ));
            }
            Kick::Shutdown => {}
            Kick::QueueFailed => {
                self.write(Response::ServerError("client queue failed".into()));
            }
            Kick::Idle => {
                self.node
                    .counters
                    .idle_closed
                    .fetch_add(1, Ordering::Relaxed);
                info!(self.node.log, "idle client closed";
                    "client" => self.client.id, "peer" => %self.client.peer,
                    "idle_seconds" => self.node.settings.client_idle_timeout.as_secs_f64());
            }
        }
        self.close();
    }
}

impl Actor for Connection {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.spawn(Flusher);
    }

    fn stopped(&mut self, _ctx: &mut Context<Self>) {
        self.client.close();
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.node
                .counters
                .client_failures
                .fetch_add(1, Ordering::Relaxed);
            slog::error!(self.node.log, "connection failed; client removed";
                "client" => self.client.id, "peer" => %self.client.peer);
            self.client.close();
        }
    }
}

impl StreamHandler<Result<Request, std::io::Error>> for Connection {
    fn handle(&mut self, item: Result<Request, std::io::Error>, ctx: &mut Context<Self>) {
        if self.closing {
            return;
        }
        self.client.touch();
        match item {
            Ok(req) => self.handle_request(req, ctx),
            Err(_) => self.close(),
        }
        if self.out.len() > self.node.settings.max_queue_bytes.saturating_add(1 << 20) {
            self.kicked(Kick::SlowConsumer);
        }
    }

    fn finished(&mut self, _ctx: &mut Context<Self>) {
        // The client closed its side: answer what was asked, then close.
        self.close();
    }
}

impl Handler<KickConnection> for Connection {
    type Result = ();

    fn handle(&mut self, msg: KickConnection, _ctx: &mut Context<Self>) {
        self.kicked(msg.0);
    }
}

/// Writes `Connection::out` to the socket; stops the actor once a close was
/// asked for and everything is written, or when the socket fails.
struct Flusher;

impl ActorFuture<Connection> for Flusher {
    type Output = ();

    fn poll(
        self: Pin<&mut Self>,
        act: &mut Connection,
        ctx: &mut Context<Connection>,
        task: &mut std::task::Context<'_>,
    ) -> Poll<()> {
        while !act.out.is_empty() {
            match Pin::new(&mut act.writer).poll_write(task, &act.out) {
                Poll::Ready(Ok(0)) | Poll::Ready(Err(_)) => {
                    ctx.stop();
                    return Poll::Ready(());
                }
                Poll::Ready(Ok(n)) => act.out.advance(n),
                Poll::Pending => return Poll::Pending,
            }
        }
        if act.out.capacity() > OUT_BUFFER_KEEP {
            // Don't keep a large buffer per connection between polls.
            act.out = BytesMut::new();
        }
        if act.closing {
            let _ = Pin::new(&mut act.writer).poll_shutdown(task);
            ctx.stop();
            return Poll::Ready(());
        }
        act.flush_waker = Some(task.waker().clone());
        Poll::Pending
    }
}
