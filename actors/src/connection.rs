//! The connection actor: one per TCP client, on a worker arbiter beside its
//! client queue actor. It reads pipelined requests with the bounded
//! [`KrakenCodec`], answers them strictly in request order, publishes
//! through its [`Publisher`] (scatter to the shards, gather, deliver),
//! hands subscription changes and polls to its client queue, and closes
//! for bad input, idleness, a slow consumer or node shutdown.
//!
//! Requests are pipelined: each gets a *ticket* and a slot in `replies`;
//! answers that need another actor (a publish's shards, the queue) fill
//! their slot when they come, and the ready prefix of `replies` is written
//! in order. The socket is driven by one future ([`Io`]) that reads while
//! fewer than [`MAX_PENDING`] answers are outstanding and less than
//! [`OUT_HIGH`] bytes wait to be written (a client that does not read its
//! answers is simply not read from), and ends each turn by sending the
//! turn's publishes as one batch per shard.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::Poll;

use actix::prelude::*;
use bytes::{Buf, Bytes, BytesMut};
use kraken_protocol::{
    parse_publish_block, parse_retro_body, parse_topics, BodyLimits, KrakenCodec, Limits, Request,
    Response, SetKey,
};
use slog::{error, info, warn};
use tokio::io::AsyncWrite;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio_util::codec::{Decoder, Encoder};

use crate::client::{ClientInfo, Kick};
use crate::guard::{guard, Panicked, Supervised};
use crate::message::{encode_poll, Delivery};
use crate::node::Env;
use crate::publish::{Outcome, Publisher};
use crate::queue::{Ask, ClientQueue, Close, FromQueue, QueueRequest, Take, Taken};
use crate::shard::Routed;
use crate::supervisor::InjectFault;

/// Topic that makes a connection actor panic when `fault_injection` is on.
pub const FAULT_CONNECTION_PANIC: &[u8] = b"__kraken_fault_connection_panic__";

/// First size of a connection's read buffer. Most requests are a few dozen
/// bytes; the buffer grows for large publishes. Idle clients are the many,
/// so this is most of what an idle connection costs.
const READ_BUFFER_INITIAL: usize = 64;

/// Largest write buffer a connection keeps once it is empty.
const BUFFER_KEEP: usize = 16 * 1024;

/// Answers outstanding at once; past it, reading pauses.
pub const MAX_PENDING: usize = 1024;

/// Unwritten output past which reading pauses.
pub const OUT_HIGH: usize = 256 * 1024;

/// One client connection.
pub struct Connection {
    env: Arc<Env>,
    info: Arc<ClientInfo>,
    /// The client's queue actor.
    queue: Addr<ClientQueue>,
    publisher: Publisher,
    codec: KrakenCodec,
    reader: OwnedReadHalf,
    rbuf: BytesMut,
    writer: OwnedWriteHalf,
    /// Encoded answers not yet written.
    out: BytesMut,
    /// Answers in request order; `replies[0]` has ticket `first_ticket`.
    replies: VecDeque<Slot>,
    first_ticket: u64,
    /// No more requests are read; close once every answer is written.
    closing: bool,
    /// The client's side is closed (or broken).
    read_done: bool,
}

/// One request's answer.
enum Slot {
    Waiting { noreply: bool },
    Ready(Ready),
}

enum Ready {
    Response(Response),
    Quiet,
    Poll(Vec<Delivery>),
}

/// Tells a connection to close.
#[derive(Message)]
#[rtype(result = "()")]
pub struct KickConnection(pub Kick);

impl Connection {
    /// Starts a connection actor and its queue actor on the current arbiter.
    pub fn start(env: Arc<Env>, home: usize, stream: TcpStream) {
        let _ = stream.set_nodelay(true);
        let peer = stream
            .peer_addr()
            .unwrap_or_else(|_| std::net::SocketAddr::from(([0, 0, 0, 0], 0)));
        let id = env.node.next_client_id();
        let info = Arc::new(ClientInfo::new(id, peer));
        let (reader, writer) = stream.into_split();
        let s = &env.node.settings;
        let limits = Limits {
            max_line_bytes: s.max_line_bytes,
            max_request_bytes: s.max_request_bytes,
        };
        Connection::create(move |ctx| {
            let me = ctx.address();
            let queue =
                ClientQueue::new(env.clone(), home, info.clone(), me.clone().recipient()).start();
            env.clients.do_send(crate::clients::Join {
                id,
                conn: me.clone().recipient(),
                queue: queue.clone(),
                info: info.clone(),
            });
            Connection {
                publisher: Publisher::new(id, home, true, env.clone(), me.recipient()),
                env,
                info,
                queue,
                codec: KrakenCodec::new(limits),
                reader,
                rbuf: BytesMut::with_capacity(READ_BUFFER_INITIAL),
                writer,
                out: BytesMut::new(),
                replies: VecDeque::new(),
                first_ticket: 0,
                closing: false,
                read_done: false,
            }
        });
    }

    fn next_ticket(&self) -> u64 {
        self.first_ticket + self.replies.len() as u64
    }

    fn ready(&mut self, response: Response) {
        self.replies
            .push_back(Slot::Ready(Ready::Response(response)));
    }

    fn waiting(&mut self, noreply: bool) -> u64 {
        let t = self.next_ticket();
        self.replies.push_back(Slot::Waiting { noreply });
        t
    }

    /// Fills the slot of `ticket` (if it is still awaited).
    fn resolve(&mut self, ticket: u64, ready: Ready) {
        let Some(at) = ticket.checked_sub(self.first_ticket) else {
            return;
        };
        if let Some(slot) = self.replies.get_mut(at as usize) {
            if let Slot::Waiting { noreply } = *slot {
                let quiet = noreply
                    && matches!(
                        &ready,
                        Ready::Response(Response::Stored | Response::NotFound)
                    );
                *slot = Slot::Ready(if quiet { Ready::Quiet } else { ready });
            }
        }
    }

    fn resolve_published(&mut self, done: Vec<(u64, Outcome)>) {
        for (ticket, outcome) in done {
            let response = match outcome {
                Ok(()) => Response::Stored,
                Err(failed) => failed.reply(),
            };
            self.resolve(ticket, Ready::Response(response));
        }
    }

    /// Writes the ready prefix of `replies` into `out`.
    fn drain(&mut self) {
        while let Some(Slot::Ready(_)) = self.replies.front() {
            let Some(Slot::Ready(ready)) = self.replies.pop_front() else {
                unreachable!()
            };
            self.first_ticket += 1;
            match ready {
                Ready::Response(r) => {
                    // Encoding into a BytesMut cannot fail.
                    let _ = self.codec.encode(r, &mut self.out);
                }
                Ready::Quiet => {}
                Ready::Poll(items) => encode_poll(&items, &mut self.out),
            }
        }
    }

    fn can_read(&self) -> bool {
        !self.closing
            && !self.read_done
            && self.replies.len() < MAX_PENDING
            && self.out.len() < OUT_HIGH
    }

    /// Reads no more; closes once every answer is written.
    fn close(&mut self, ctx: &mut Context<Self>) {
        if self.closing {
            return;
        }
        self.closing = true;
        let deadline = self.env.node.settings.close_write_timeout_seconds;
        ctx.run_later(deadline, |act, ctx| {
            if !act.out.is_empty() || !act.replies.is_empty() {
                info!(act.env.node.log, "closing client did not take its answers in time; dropped";
                    "client" => act.info.id, "peer" => %act.info.peer,
                    "unwritten_bytes" => act.out.len());
            }
            ctx.stop();
        });
    }

    fn fault_injection(&self, topics: &[Bytes]) {
        if !self.env.node.settings.fault_injection {
            return;
        }
        for t in topics {
            if &t[..] == FAULT_CONNECTION_PANIC {
                panic!("fault injection: connection {} panicked", self.info.id);
            }
            if let Some(fault) = InjectFault::from_topic(t) {
                self.env.faults.do_send(fault);
            }
        }
    }

    fn publish(&mut self, data: &Bytes) -> Option<Response> {
        let settings = &self.env.node.settings;
        let limits = BodyLimits {
            max_topic_bytes: settings.max_topic_bytes,
            max_topics_per_message: settings.max_topics_per_message,
        };
        let entries = match parse_publish_block(data, &limits) {
            Ok(entries) => entries,
            Err(e) => return Some(Response::ClientError(e.message().into())),
        };
        if let Some(proxy) = &self.env.proxy {
            if !proxy.admit(&entries) {
                return Some(Response::ServerError(
                    "upstream backlog full: publish not accepted, retry".into(),
                ));
            }
        }
        for entry in entries {
            if entry.topics.len() >= settings.router_min_publish_to_topics_to_warn {
                warn!(self.env.node.log, "message names many topics";
                    "topics" => entry.topics.len(), "client" => self.info.id,
                    "peer" => %self.info.peer);
            }
            self.publisher.submit(entry.topics, entry.payload);
        }
        None
    }

    fn ask(&mut self, req: QueueRequest, noreply: bool) {
        let ticket = self.waiting(noreply);
        self.queue.do_send(Ask { ticket, req });
    }

    fn handle_request(&mut self, req: Request, ctx: &mut Context<Self>) {
        let max_topic = self.env.node.settings.max_topic_bytes;
        match req {
            Request::GetMessages => {
                let ticket = self.waiting(false);
                self.queue.do_send(Take { ticket });
            }
            Request::Set { key, data, noreply } => match key {
                SetKey::Publish => match self.publish(&data) {
                    Some(refused) => self.ready(refused),
                    None => {
                        let ticket = self.waiting(noreply);
                        self.publisher.ticket(ticket);
                    }
                },
                SetKey::Subscribe | SetKey::Unsubscribe => match parse_topics(&data, max_topic) {
                    Ok(topics) => {
                        self.fault_injection(&topics);
                        let req = if key == SetKey::Subscribe {
                            QueueRequest::Subscribe(topics)
                        } else {
                            QueueRequest::Unsubscribe(topics)
                        };
                        self.ask(req, noreply);
                    }
                    Err(e) => self.ready(Response::ClientError(e.message().into())),
                },
                SetKey::Register => self.ask(QueueRequest::Register, noreply),
                SetKey::RetroSubscribe => match parse_retro_body(&data, max_topic) {
                    Ok(body) => self.ask(QueueRequest::RetroSubscribe(body), noreply),
                    Err(e) => self.ready(Response::ClientError(e.message().into())),
                },
            },
            Request::Quit => self.close(ctx),
            Request::Stats => {
                let stats = self.env.stats();
                self.ready(Response::Stats(stats));
            }
            Request::Version => self.ready(Response::Version(crate::node::VERSION.into())),
            Request::Invalid(rejection) => {
                self.ready(rejection.reply);
                if rejection.close {
                    self.close(ctx);
                }
            }
        }
    }

    fn kicked(&mut self, why: Kick, ctx: &mut Context<Self>) {
        let node = &self.env.node;
        let message = match why {
            Kick::SlowConsumer => {
                if self.closing {
                    return;
                }
                node.counters.slow_consumers.fetch_add(1, Ordering::Relaxed);
                warn!(node.log, "slow consumer: queue limit exceeded, closing connection";
                    "client" => self.info.id, "peer" => %self.info.peer,
                    "max_queue_messages" => node.settings.max_queue_messages,
                    "max_queue_bytes" => node.settings.max_queue_bytes);
                Some("slow consumer: queue limit exceeded")
            }
            Kick::UpstreamLost => {
                slog::debug!(node.log, "upstream lost: closing client";
                    "client" => self.info.id, "peer" => %self.info.peer);
                Some("upstream lost: reconnect and reload")
            }
            Kick::QueueFailed => Some("client queue failed"),
            Kick::Idle => {
                if self.closing {
                    return;
                }
                node.counters.idle_closed.fetch_add(1, Ordering::Relaxed);
                info!(node.log, "idle client closed";
                    "client" => self.info.id, "peer" => %self.info.peer,
                    "idle_seconds" => node.settings.client_idle_timeout.as_secs_f64());
                None
            }
            // Drain: answer what was asked, then close.
            Kick::Shutdown => None,
        };
        match message {
            Some(message) if why == Kick::QueueFailed => {
                // The queue is gone: what was asked of it will not be
                // answered. Say why instead.
                self.drain();
                self.replies.clear();
                let _ = self
                    .codec
                    .encode(Response::ServerError(message.into()), &mut self.out);
            }
            // After the answers to what was already asked.
            Some(message) => self.ready(Response::ServerError(message.into())),
            None => {}
        }
        self.close(ctx);
    }

    /// One turn of socket work; returns `Ready` once the actor stopped.
    fn poll_io(&mut self, ctx: &mut Context<Self>, task: &mut std::task::Context<'_>) -> Poll<()> {
        loop {
            // Decode what is buffered.
            while self.can_read() {
                match self.codec.decode(&mut self.rbuf) {
                    Ok(Some(req)) => {
                        self.info.touch();
                        if guard(self, ctx, |a, ctx| a.handle_request(req, ctx)).is_none() {
                            return Poll::Ready(());
                        }
                    }
                    Ok(None) => break,
                    Err(_) => {
                        self.close(ctx);
                        break;
                    }
                }
            }
            if !self.can_read() {
                break;
            }
            // The decoder reserves room for what it expects (and gives back
            // a large buffer once a large request is done); keep a little.
            if self.rbuf.capacity() == self.rbuf.len() {
                self.rbuf.reserve(READ_BUFFER_INITIAL);
            }
            match tokio_util::io::poll_read_buf(Pin::new(&mut self.reader), task, &mut self.rbuf) {
                Poll::Ready(Ok(0)) | Poll::Ready(Err(_)) => {
                    // The client closed its side: answer what was asked.
                    while let Ok(Some(req)) = self.codec.decode_eof(&mut self.rbuf) {
                        if self.closing {
                            break;
                        }
                        if guard(self, ctx, |a, ctx| a.handle_request(req, ctx)).is_none() {
                            return Poll::Ready(());
                        }
                    }
                    self.read_done = true;
                    self.close(ctx);
                    break;
                }
                Poll::Ready(Ok(_)) => continue,
                Poll::Pending => break,
            }
        }
        // End of the turn: this turn's publishes go out as one batch per shard.
        let done = self.publisher.flush();
        self.resolve_published(done);
        self.drain();
        while !self.out.is_empty() {
            match Pin::new(&mut self.writer).poll_write(task, &self.out) {
                Poll::Ready(Ok(0)) | Poll::Ready(Err(_)) => {
                    ctx.stop();
                    return Poll::Ready(());
                }
                Poll::Ready(Ok(n)) => self.out.advance(n),
                Poll::Pending => return Poll::Pending,
            }
        }
        if self.out.capacity() > BUFFER_KEEP {
            // Don't keep a large buffer per connection between polls.
            self.out = BytesMut::new();
        }
        if self.closing && self.replies.is_empty() {
            let _ = Pin::new(&mut self.writer).poll_shutdown(task);
            ctx.stop();
            return Poll::Ready(());
        }
        Poll::Pending
    }
}

impl Actor for Connection {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.spawn(Io);
    }

    fn stopped(&mut self, _ctx: &mut Context<Self>) {
        self.queue.do_send(Close);
    }
}

impl Supervised for Connection {
    /// Temporary child: a failure ends the client cleanly.
    fn failed(&mut self, ctx: &mut Context<Self>, why: Panicked) {
        let node = &self.env.node;
        node.counters
            .client_failures
            .fetch_add(1, Ordering::Relaxed);
        error!(node.log, "connection failed; client removed";
            "client" => self.info.id, "peer" => %self.info.peer, "panic" => %why);
        self.closing = true;
        ctx.stop();
    }
}

impl Handler<FromQueue> for Connection {
    type Result = ();

    fn handle(&mut self, msg: FromQueue, ctx: &mut Context<Self>) {
        guard(self, ctx, |a, ctx| match msg {
            FromQueue::Answer { ticket, response } => a.resolve(ticket, Ready::Response(response)),
            FromQueue::Taken { ticket, taken } => match taken {
                Taken::Items(items) => {
                    a.env.node.metrics.observe_poll_messages(items.len());
                    a.resolve(ticket, Ready::Poll(items))
                }
                Taken::Overflowed => {
                    a.resolve(ticket, Ready::Quiet);
                    a.kicked(Kick::SlowConsumer, ctx)
                }
            },
            FromQueue::Kick(why) => a.kicked(why, ctx),
        });
    }
}

impl Handler<Routed> for Connection {
    type Result = ();

    fn handle(&mut self, msg: Routed, ctx: &mut Context<Self>) {
        guard(self, ctx, |a, _| {
            let done = a.publisher.routed(msg);
            a.resolve_published(done);
        });
    }
}

impl Handler<KickConnection> for Connection {
    type Result = ();

    fn handle(&mut self, msg: KickConnection, ctx: &mut Context<Self>) {
        guard(self, ctx, |a, ctx| a.kicked(msg.0, ctx));
    }
}

/// Drives the socket (see [`Connection::poll_io`]).
struct Io;

impl ActorFuture<Connection> for Io {
    type Output = ();

    fn poll(
        self: Pin<&mut Self>,
        act: &mut Connection,
        ctx: &mut Context<Connection>,
        task: &mut std::task::Context<'_>,
    ) -> Poll<()> {
        act.poll_io(ctx, task)
    }
}
