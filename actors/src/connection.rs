//! The connection actor: one per TCP client, on a worker arbiter beside its
//! client queue actor, generic over its wire [`Dialect`] (memcached on the
//! main port, RESP on `resp_port`; static dispatch). It reads pipelined
//! requests with the dialect's bounded decoder, answers them strictly in
//! request order, publishes through its [`Publisher`] (scatter to the
//! shards, gather, deliver), hands subscription changes and polls to its
//! client queue, and closes for bad input, idleness, a slow consumer or
//! node shutdown.
//!
//! Requests are pipelined: each gets a *ticket* and a slot in `replies`;
//! answers that need another actor (a publish's shards, the queue) fill
//! their slot when they come, and the ready prefix of `replies` is encoded
//! by the dialect, in order. The socket is driven by one future ([`Io`])
//! that reads while fewer than [`MAX_PENDING`] answers are outstanding,
//! less than [`OUT_HIGH`] bytes wait to be written (a client that does not
//! read its answers is simply not read from) and the large subscription
//! changes its queue has not answered yet name at most `max_request_bytes`
//! of topics (a queue takes a huge subscribe a slice at a time, far slower
//! than it is read), and ends each turn by sending the turn's publishes as
//! one batch per shard. It reads at most
//! [`READ_PER_TURN`] bytes per turn (a client streaming without pause does
//! not hold its worker), and a partial request's bytes count against the
//! node's `max_pending_request_bytes` (`crate::budget`).
//!
//! With a pushing dialect the queue is in push mode: each
//! [`FromQueue::Pushed`] batch takes a slot behind the answers already
//! asked for (or joins the answer of a retroactive subscribe that is still
//! waiting), and once everything encoded so far is written the connection
//! acknowledges ([`PushAck`]), so the queue sends the next batch: everything
//! queued meanwhile goes out in one write. While the socket is not
//! writable nothing is acknowledged, deliveries stay in the queue's
//! bounded inbox, and past its limit the client is a slow consumer.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::Poll;

use actix::prelude::*;
use bytes::{Buf, BytesMut};
use futures_util::future::join_all;
use slog::{error, info, warn};
use tokio::io::AsyncWrite;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;

use crate::budget::{Held, OverBudget};
use crate::client::{ClientInfo, Kick};
use crate::dialect::{Answer, Dialect, Op};
use crate::env::Env;
use crate::guard::{guard, Panicked, Supervised};
use crate::message::Delivery;
use crate::publish::{Outcome, Publisher};
use crate::queue::{
    Ask, ClientQueue, Close, FromQueue, Named, PushAck, QueueRequest, QueueRun, Take, Taken, Watch,
};
use crate::ratelimit::RateLimit;
use crate::shard::{DumpTopics, Routed, Settle};
use crate::supervision::InjectFault;

/// Topic that makes a connection actor panic when `fault_injection` is on.
pub const FAULT_CONNECTION_PANIC: &[u8] = b"__kraken_fault_connection_panic__";

/// First size of a connection's read buffer. Most requests are a few dozen
/// bytes; the buffer grows for large publishes. Idle clients are the many,
/// so this is most of what an idle connection costs.
const READ_BUFFER_INITIAL: usize = 64;

/// Most room a read asks for: a connection whose reads fill the room it
/// gave doubles it, up to this (a publisher pipelining a few dozen
/// requests reads them in one call, not one call per 64 bytes). A buffer
/// left empty at the end of a turn is given back, so only connections in
/// the middle of a request hold more than [`READ_BUFFER_INITIAL`].
const READ_BUFFER_BUSY: usize = 4096;

/// Largest write buffer a busy connection keeps once it is written out.
const BUFFER_KEEP: usize = 64 * 1024;

/// Bytes read in one turn of the socket future before it yields to the
/// other connections on its worker (it is woken again at once).
pub const READ_PER_TURN: usize = 1024 * 1024;

/// Answers outstanding at once; past it, reading pauses.
pub const MAX_PENDING: usize = 1024;

/// Unwritten output past which reading pauses.
pub const OUT_HIGH: usize = 256 * 1024;

/// A subscription change naming this many bytes of topics or more is
/// counted against `max_request_bytes` until the queue answers it.
const BIG_ASK: usize = 64 * 1024;
/// A publisher's answers wait for the pushes of its deliveries
/// (`crate::board::answer_after_ring`) only while this small: a turn's
/// worth of a pipelining publisher, not a backlog.
const HOLD_ANSWERS_MAX: usize = 16 * 1024;

/// One client connection, speaking dialect `D`.
pub struct Connection<D: Dialect> {
    env: Arc<Env>,
    info: Arc<ClientInfo>,
    /// The client's queue actor (its address is shared with the clients'
    /// supervisor and the shards: one sender for all).
    queue: Arc<Addr<ClientQueue>>,
    /// The queue actor itself, run in this connection's task while both
    /// live ([`RunQueue`]); handed to a task of its own when the
    /// connection stops, so the queue finishes on its own.
    queue_run: Option<QueueRun>,
    /// The publish pipeline, made at the first publish (most clients only
    /// subscribe and poll; an idle connection should cost little).
    publisher: Option<Box<Publisher>>,
    /// The worker arbiter this connection runs on (`worker_threads` is at
    /// most 4,096).
    home: u16,
    dialect: D,
    reader: OwnedReadHalf,
    rbuf: BytesMut,
    writer: OwnedWriteHalf,
    /// Encoded answers not yet written.
    out: BytesMut,
    /// Answers in request order; `replies[0]` has ticket `first_ticket`.
    replies: VecDeque<Slot<D::Pending>>,
    first_ticket: u64,
    /// Push mode: pushed batches received and not yet encoded, and whether
    /// the last one still awaits its acknowledgement. Few: the queue sends
    /// a batch only once the last one is acknowledged, besides one (a
    /// replay) per retroactive subscribe, whose answers outstanding are at
    /// most [`MAX_PENDING`].
    pushes_held: u16,
    push_unacked: bool,
    /// No more requests are read; close once every answer is written.
    closing: bool,
    /// The client's side is closed (or broken).
    read_done: bool,
    /// The last poll found nothing: the client is quiet, keep no buffers.
    quiet: bool,
    /// This connection's share of `max_pending_request_bytes`.
    pending: Held,
    /// What few connections need, made at first use (an idle connection
    /// should be small: see [`RunQueue`]).
    extra: Option<Box<Extra>>,
}

#[derive(Default)]
struct Extra {
    /// Large subscription changes the queue has not answered yet (ticket,
    /// bytes of topics), in order, and their bytes: past
    /// `max_request_bytes` reading pauses, so a client pipelining huge
    /// subscribes has at most about two of them waiting at its queue (the
    /// queue takes one a slice at a time, much slower than they are read).
    asked: VecDeque<(u64, usize)>,
    asked_bytes: usize,
    /// Push mode: the last written batch's vector, given back with the
    /// [`PushAck`] for the queue's board slot to fill next.
    spare: Vec<Delivery>,
    /// Reads ask for `READ_BUFFER_INITIAL << read_grown` bytes of room.
    /// Here, not in the connection: most connections' reads never fill 64
    /// bytes, and one byte more in the connection took its task cell into
    /// the next size class (290 bytes more per idle client).
    read_grown: u8,
}

/// One request's answer.
enum Slot<P> {
    /// Awaiting another actor; `stash` collects pushes that belong inside
    /// the answer (`batches` of them).
    Waiting {
        pending: P,
        stash: Vec<Delivery>,
        batches: u16,
    },
    Ready {
        pending: P,
        answer: Answer,
        stash: Vec<Delivery>,
        batches: u16,
    },
}

/// Makes the connection run a turn of socket work (after an answer that
/// came outside a message handler).
#[derive(Message)]
#[rtype(result = "()")]
struct Wake;

impl<D: Dialect> Connection<D> {
    /// Starts a connection actor and its queue actor on the current arbiter.
    pub fn start(env: Arc<Env>, home: usize, stream: TcpStream) {
        let _ = stream.set_nodelay(true);
        let peer = stream
            .peer_addr()
            .unwrap_or_else(|_| std::net::SocketAddr::from(([0, 0, 0, 0], 0)));
        let id = env.node.next_client_id();
        let info = Arc::new(ClientInfo::new(id, peer));
        let (reader, writer) = stream.into_split();
        Connection::<D>::create(move |ctx| {
            let (queue, queue_run) =
                ClientQueue::prepare(env.clone(), home, info.clone(), ctx.address().recipient());
            if D::PUSH {
                queue.do_send(Watch);
                env.node
                    .counters
                    .resp_connections
                    .fetch_add(1, Ordering::Relaxed);
            }
            env.clients.do_send(crate::clients::Join {
                id,
                queue: queue.clone(),
                client: queue.clone(),
                info: info.clone(),
            });
            Connection {
                publisher: None,
                home: home as u16,
                dialect: D::new(&env, &info),
                env,
                info,
                queue,
                queue_run: Some(queue_run),
                reader,
                rbuf: BytesMut::new(),
                writer,
                out: BytesMut::new(),
                replies: VecDeque::new(),
                first_ticket: 0,
                pushes_held: 0,
                push_unacked: false,
                closing: false,
                read_done: false,
                quiet: true,
                pending: Held::default(),
                extra: None,
            }
        });
    }

    fn extra(&mut self) -> &mut Extra {
        self.extra.get_or_insert_with(Default::default)
    }

    fn next_ticket(&self) -> u64 {
        self.first_ticket + self.replies.len() as u64
    }

    fn ready(&mut self, pending: D::Pending, answer: Answer) {
        self.replies.push_back(Slot::Ready {
            pending,
            answer,
            stash: Vec::new(),
            batches: 0,
        });
    }

    fn waiting(&mut self, pending: D::Pending) -> u64 {
        let t = self.next_ticket();
        self.replies.push_back(Slot::Waiting {
            pending,
            stash: Vec::new(),
            batches: 0,
        });
        t
    }

    /// Fills the slot of `ticket` (if it is still awaited).
    fn resolve(&mut self, ticket: u64, answer: Answer) {
        let Some(at) = ticket.checked_sub(self.first_ticket) else {
            return;
        };
        let Some(slot) = self.replies.get_mut(at as usize) else {
            return;
        };
        if let Slot::Waiting { .. } = slot {
            let Slot::Waiting {
                pending,
                stash,
                batches,
            } = std::mem::replace(
                slot,
                Slot::Ready {
                    pending: D::Pending::default(),
                    answer: Answer::Now,
                    stash: Vec::new(),
                    batches: 0,
                },
            )
            else {
                unreachable!()
            };
            *slot = Slot::Ready {
                pending,
                answer,
                stash,
                batches,
            };
        }
    }

    fn resolve_published(&mut self, done: Vec<(u64, Outcome)>) {
        for (ticket, outcome) in done {
            self.resolve(ticket, Answer::Published(outcome));
        }
    }

    /// Push mode: a batch from the queue, behind the answers asked before
    /// it, or inside a waiting retroactive subscribe's answer.
    fn pushed(&mut self, items: Vec<Delivery>) {
        self.pushes_held += 1;
        self.push_unacked = true;
        for slot in self.replies.iter_mut() {
            if let Slot::Waiting {
                pending,
                stash,
                batches,
            } = slot
            {
                if D::collects_pushes(pending) {
                    stash.extend(items);
                    *batches += 1;
                    return;
                }
            }
        }
        self.replies.push_back(Slot::Ready {
            pending: D::Pending::default(),
            answer: Answer::Pushed(items),
            stash: Vec::new(),
            batches: 1,
        });
    }

    /// Encodes the ready prefix of `replies` into `out`.
    fn drain(&mut self) {
        while let Some(Slot::Ready { .. }) = self.replies.front() {
            let Some(Slot::Ready {
                pending,
                answer,
                stash,
                batches,
            }) = self.replies.pop_front()
            else {
                unreachable!()
            };
            self.first_ticket += 1;
            self.pushes_held -= batches;
            match answer {
                Answer::Pushed(items) if stash.is_empty() => {
                    let mut spare = self.dialect.encode_pushed(items, &self.env, &mut self.out);
                    spare.clear();
                    let extra = self.extra();
                    if extra.spare.capacity() < spare.capacity() {
                        extra.spare = spare;
                    }
                }
                answer => self
                    .dialect
                    .encode(pending, answer, stash, &self.env, &mut self.out),
            }
        }
    }

    fn can_read(&self) -> bool {
        !self.closing
            && !self.read_done
            && self.replies.len() < MAX_PENDING
            && self.out.len() < OUT_HIGH
            && self.extra.as_ref().map_or(0, |e| e.asked_bytes)
                <= self.env.node.settings.max_request_bytes
    }

    /// The queue answered `ticket`: the changes asked up to it are done.
    fn answered(&mut self, ticket: u64) {
        let Some(extra) = self.extra.as_mut() else {
            return;
        };
        while let Some(&(asked, bytes)) = extra.asked.front() {
            if asked > ticket {
                break;
            }
            extra.asked.pop_front();
            extra.asked_bytes -= bytes;
        }
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

    fn fault_injection(&self, topics: &Named) {
        if !self.env.node.settings.fault_injection {
            return;
        }
        for t in &topics.all() {
            if &t[..] == FAULT_CONNECTION_PANIC {
                panic!("fault injection: connection {} panicked", self.info.id);
            }
            if let Some(fault) = InjectFault::from_topic(t) {
                self.env.faults.do_send(fault);
            }
        }
    }

    /// The publish pipeline, made on first use.
    fn publisher(&mut self, ctx: &mut Context<Self>) -> &mut Publisher {
        let (id, home, env) = (self.info.id, self.home as usize, &self.env);
        self.publisher.get_or_insert_with(|| {
            Box::new(Publisher::new(
                id,
                home,
                true,
                env.clone(),
                ctx.address().recipient(),
            ))
        })
    }

    fn publish(
        &mut self,
        entries: Vec<kraken_protocol::PublishEntry>,
        pending: D::Pending,
        ctx: &mut Context<Self>,
    ) {
        let settings = &self.env.node.settings;
        if let Some(proxy) = &self.env.proxy {
            if !proxy.admit(&entries) {
                self.env
                    .node
                    .counters
                    .refused_publishes_backlog
                    .fetch_add(1, Ordering::Relaxed);
                let text = "upstream backlog full: publish not accepted, retry";
                return self.ready(pending, Answer::ServerError(text.into()));
            }
        }
        let warn_topics = settings.router_min_publish_to_topics_to_warn;
        for entry in entries {
            if entry.topics.len() >= warn_topics {
                static MANY_TOPICS: RateLimit = RateLimit::warnings();
                if let Some(suppressed) = MANY_TOPICS.allow() {
                    warn!(self.env.node.log, "message names many topics";
                        "topics" => entry.topics.len(), "client" => self.info.id,
                        "peer" => %self.info.peer, "suppressed" => suppressed);
                }
            }
            self.publisher(ctx).submit(entry.topics, entry.payload);
        }
        let ticket = self.waiting(pending);
        self.publisher(ctx).ticket(ticket);
    }

    /// Every shard's topics, for the dialect (`PUBSUB CHANNELS`, `NUMSUB`).
    fn channels(&mut self, pending: D::Pending, ctx: &mut Context<Self>) {
        let ticket = self.waiting(pending);
        let router = &self.env.router;
        let asks: Vec<_> = (0..router.num_shards())
            .map(|s| router.shard(s).send(DumpTopics))
            .collect();
        let fut =
            async move { join_all(asks).await }
                .into_actor(self)
                .map(move |answers, act, ctx| {
                    let all = answers.into_iter().flatten().flatten().collect();
                    act.resolve(ticket, Answer::Channels(all));
                    // A message turn polls the socket future again.
                    ctx.notify(Wake);
                });
        ctx.spawn(fut);
    }

    fn settled(&mut self, pending: D::Pending, ctx: &mut Context<Self>) {
        let ticket = self.waiting(pending);
        let asks: Vec<_> = self
            .env
            .router
            .shards()
            .iter()
            .map(|s| s.send(Settle))
            .collect();
        let fut = async move { join_all(asks).await }
            .into_actor(self)
            .map(move |_, act, ctx| {
                act.resolve(ticket, Answer::Now);
                ctx.notify(Wake);
            });
        ctx.spawn(fut);
    }

    fn handle_request(&mut self, req: D::Request, ctx: &mut Context<Self>) {
        let op = self.dialect.request(req, &self.env, &self.info);
        match op {
            Op::Reply(pending) => self.ready(pending, Answer::Now),
            Op::ReplyClose(pending) => {
                self.ready(pending, Answer::Now);
                self.close(ctx);
            }
            Op::Close => self.close(ctx),
            Op::Publish(entries, pending) => self.publish(entries, pending, ctx),
            Op::Ask(req, pending) => {
                if let QueueRequest::Subscribe(topics) | QueueRequest::Unsubscribe(topics) = &req {
                    self.fault_injection(topics);
                }
                let ticket = self.waiting(pending);
                let bytes = match &req {
                    QueueRequest::Subscribe(topics)
                    | QueueRequest::Unsubscribe(topics)
                    | QueueRequest::RetroSubscribe { topics, .. } => topics.bytes(),
                    QueueRequest::Register => 0,
                };
                if bytes >= BIG_ASK {
                    let extra = self.extra();
                    extra.asked.push_back((ticket, bytes));
                    extra.asked_bytes += bytes;
                }
                self.queue.do_send(Ask { ticket, req });
            }
            Op::Poll(pending) => {
                let ticket = self.waiting(pending);
                self.queue.do_send(Take { ticket });
            }
            Op::Channels(pending) => self.channels(pending, ctx),
            Op::Settled(pending) => self.settled(pending, ctx),
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
                static SLOW: RateLimit = RateLimit::warnings();
                if let Some(suppressed) = SLOW.allow() {
                    warn!(node.log, "slow consumer: queue limit exceeded, closing connection";
                        "client" => self.info.id, "peer" => %self.info.peer,
                        "max_queue_messages" => node.settings.max_queue_messages,
                        "max_queue_bytes" => node.settings.max_queue_bytes,
                        "suppressed" => suppressed);
                }
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
                self.pushes_held = 0;
                self.dialect.encode(
                    D::Pending::default(),
                    Answer::ServerError(message.into()),
                    Vec::new(),
                    &self.env,
                    &mut self.out,
                );
            }
            // After the answers to what was already asked.
            Some(message) => self.ready(D::Pending::default(), Answer::ServerError(message.into())),
            None => {}
        }
        self.close(ctx);
    }

    /// One turn of socket work; returns `Ready` once the actor stopped.
    fn poll_io(&mut self, ctx: &mut Context<Self>, task: &mut std::task::Context<'_>) -> Poll<()> {
        let mut read_this_turn = 0;
        // The socket said "nothing more now" (so it will wake this task).
        let mut read_pending = false;
        loop {
            // Decode what is buffered.
            while self.can_read() {
                match self.dialect.decode(&mut self.rbuf) {
                    Ok(Some(req)) => {
                        self.info.touch();
                        if guard(self, ctx, |a, ctx| a.handle_request(req, ctx)).is_none() {
                            return Poll::Ready(());
                        }
                    }
                    Ok(None) => {
                        // The buffer holds a partial request (`crate::budget`).
                        let tell = || ctx.address().recipient();
                        let (node, id) = (&self.env.node, self.info.id);
                        if !self
                            .pending
                            .update(node, &self.env.budget, id, tell, self.rbuf.len())
                        {
                            self.over_budget(ctx);
                        }
                        break;
                    }
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
            // a large buffer once a large request is done); besides, ask for
            // as much room as the last reads filled.
            let room = READ_BUFFER_INITIAL << self.extra.as_ref().map_or(0, |e| e.read_grown);
            if self.rbuf.capacity() - self.rbuf.len() < room {
                self.rbuf.reserve(room);
            }
            let spare = self.rbuf.capacity() - self.rbuf.len();
            match tokio_util::io::poll_read_buf(Pin::new(&mut self.reader), task, &mut self.rbuf) {
                Poll::Ready(Ok(0)) | Poll::Ready(Err(_)) => {
                    // The client closed its side: answer what was asked.
                    while let Some(req) = self.dialect.decode_eof(&mut self.rbuf) {
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
                Poll::Ready(Ok(n)) => {
                    if n == spare && room < READ_BUFFER_BUSY {
                        self.extra().read_grown += 1;
                    }
                    // A client that streams without pause must not hold
                    // the worker: past READ_PER_TURN, let the others run.
                    read_this_turn += n;
                    if read_this_turn >= READ_PER_TURN {
                        task.waker().wake_by_ref();
                        break;
                    }
                    continue;
                }
                Poll::Pending => {
                    read_pending = true;
                    break;
                }
            }
        }
        // End of the turn: this turn's publishes go out as one batch per shard.
        if let Some(p) = self.publisher.as_mut() {
            let done = p.flush();
            self.resolve_published(done);
        }
        self.drain();
        // Answers to publishes whose deliveries are due to be rung on this
        // worker go out after those pushes (the ringer wakes this task
        // behind the queues it rang), as Redis answers a publisher after
        // the pushes of its turn: its next messages then follow them
        // instead of piling up behind them. Once per delivery.
        if self.publisher.as_mut().is_some_and(|p| p.take_rang())
            && !self.out.is_empty()
            && self.out.len() <= HOLD_ANSWERS_MAX
            && crate::board::answer_after_ring(task.waker())
        {
            return Poll::Pending;
        }
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
        if D::PUSH && self.push_unacked && self.pushes_held == 0 {
            // Everything pushed so far is written: ask for what came since.
            // A subscriber taking its pushes is not idle, as a polling one.
            self.push_unacked = false;
            self.info.touch();
            self.env
                .node
                .counters
                .resp_push_batches
                .fetch_add(1, Ordering::Relaxed);
            let spare = self
                .extra
                .as_mut()
                .map(|e| std::mem::take(&mut e.spare))
                .unwrap_or_default();
            self.queue.do_send(PushAck(spare));
        }
        // Idle connections are the many: once a poll found nothing (or a
        // write needed a large buffer), keep no buffers or answer slots.
        if self.out.capacity() > BUFFER_KEEP || (self.quiet && self.out.capacity() > 0) {
            self.out = BytesMut::new();
        }
        if self.rbuf.is_empty()
            && (self.rbuf.capacity() > READ_BUFFER_INITIAL
                || (self.quiet && self.rbuf.capacity() > 0))
        {
            self.rbuf = BytesMut::new();
        }
        if self.quiet && self.replies.is_empty() && self.replies.capacity() > 0 {
            self.replies = VecDeque::new();
        }
        if self.closing && self.replies.is_empty() {
            let _ = Pin::new(&mut self.writer).poll_shutdown(task);
            ctx.stop();
            return Poll::Ready(());
        }
        if !read_pending && self.can_read() {
            // Reading paused this turn (answers outstanding) and may go on
            // now, but no socket wake-up is due: come back at once, or a
            // client pipelining locally answered requests would stall (and
            // its disconnect would go unnoticed).
            task.waker().wake_by_ref();
        }
        Poll::Pending
    }

    /// This connection's partial request would pass the node's
    /// `max_pending_request_bytes`: refuse it and close.
    fn over_budget(&mut self, ctx: &mut Context<Self>) {
        if self.closing {
            return;
        }
        self.pending
            .release(&self.env.node, &self.env.budget, self.info.id);
        self.env
            .node
            .counters
            .refused_pending
            .fetch_add(1, Ordering::Relaxed);
        static OVER_BUDGET: RateLimit = RateLimit::warnings();
        if let Some(suppressed) = OVER_BUDGET.allow() {
            warn!(self.env.node.log, "pending request budget exceeded: closing connection";
                "client" => self.info.id, "peer" => %self.info.peer,
                "buffered" => self.rbuf.len(),
                "max_pending_request_bytes" => self.env.node.settings.max_pending_request_bytes,
                "suppressed" => suppressed);
        }
        self.rbuf = BytesMut::new();
        self.replies.push_back(Slot::Ready {
            pending: Default::default(),
            answer: Answer::ServerError(crate::budget::REFUSAL.into()),
            stash: Vec::new(),
            batches: 0,
        });
        self.close(ctx);
    }
}

impl<D: Dialect> Actor for Connection<D> {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.spawn(Io);
        ctx.spawn(RunQueue);
    }

    fn stopped(&mut self, _ctx: &mut Context<Self>) {
        self.pending
            .release(&self.env.node, &self.env.budget, self.info.id);
        self.queue.do_send(Close);
        if let Some(run) = self.queue_run.take() {
            actix::spawn(run);
        }
        if D::PUSH {
            self.env
                .node
                .counters
                .resp_connections
                .fetch_sub(1, Ordering::Relaxed);
        }
    }
}

impl<D: Dialect> Supervised for Connection<D> {
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

impl<D: Dialect> Handler<FromQueue> for Connection<D> {
    type Result = ();

    fn handle(&mut self, msg: FromQueue, ctx: &mut Context<Self>) {
        guard(self, ctx, |a, ctx| match msg {
            FromQueue::Answer { ticket, response } => {
                a.answered(ticket);
                a.resolve(ticket, Answer::Queue(response))
            }
            FromQueue::Taken { ticket, taken } => match taken {
                Taken::Items(items) => {
                    a.quiet = items.is_empty();
                    a.env.node.metrics.observe_poll_messages(items.len());
                    a.resolve(ticket, Answer::Polled(items))
                }
                Taken::Overflowed => {
                    a.resolve(ticket, Answer::Now);
                    a.kicked(Kick::SlowConsumer, ctx)
                }
            },
            FromQueue::Pushed(items) => a.pushed(items),
            FromQueue::Kick(why) => a.kicked(why, ctx),
        });
    }
}

impl<D: Dialect> Handler<Routed> for Connection<D> {
    type Result = ();

    fn handle(&mut self, msg: Routed, ctx: &mut Context<Self>) {
        guard(self, ctx, |a, _| {
            if let Some(p) = a.publisher.as_mut() {
                let done = p.routed(msg);
                a.resolve_published(done);
            }
        });
    }
}

impl<D: Dialect> Handler<Wake> for Connection<D> {
    type Result = ();

    fn handle(&mut self, _: Wake, _ctx: &mut Context<Self>) {}
}

impl<D: Dialect> Handler<OverBudget> for Connection<D> {
    type Result = ();

    /// Another connection's growth chose this one to give its bytes back.
    fn handle(&mut self, _: OverBudget, ctx: &mut Context<Self>) {
        guard(self, ctx, |a, ctx| a.over_budget(ctx));
    }
}

/// Drives the socket (see [`Connection::poll_io`]).
struct Io;

/// Drives the client's queue actor inside the connection's task: the two
/// actors of a client keep their own contexts and mailboxes, and share a
/// task (one task cell per client instead of two: an idle client is
/// mostly these two actors). Whatever wakes the queue (its mailbox, its
/// timers) wakes this task, and each turn of the task polls the queue.
struct RunQueue;

impl<D: Dialect> ActorFuture<Connection<D>> for RunQueue {
    type Output = ();

    fn poll(
        self: Pin<&mut Self>,
        act: &mut Connection<D>,
        ctx: &mut Context<Connection<D>>,
        task: &mut std::task::Context<'_>,
    ) -> Poll<()> {
        // A push the queue handed over is written in this turn, and the
        // queue polled once more to take the acknowledgement.
        for _ in 0..2 {
            let Some(run) = act.queue_run.as_mut() else {
                return Poll::Ready(());
            };
            let (poll, handed) = crate::queue::run_in_task(act.info.id, run, task);
            if poll.is_ready() {
                // The queue stopped (it failed, say): the connection
                // hears of it through its mailbox.
                act.queue_run = None;
                if let Some(items) = handed {
                    act.pushed(items);
                }
                return Poll::Ready(());
            }
            let Some(items) = handed else {
                break;
            };
            act.pushed(items);
            if act.poll_io(ctx, task).is_ready() {
                return Poll::Pending;
            }
            if act.push_unacked {
                break;
            }
        }
        Poll::Pending
    }
}

impl<D: Dialect> ActorFuture<Connection<D>> for Io {
    type Output = ();

    fn poll(
        self: Pin<&mut Self>,
        act: &mut Connection<D>,
        ctx: &mut Context<Connection<D>>,
        task: &mut std::task::Context<'_>,
    ) -> Poll<()> {
        act.poll_io(ctx, task)
    }
}
