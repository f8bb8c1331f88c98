//! The listener actor: accepts TCP connections, refuses those beyond
//! `max_tcp_clients` with `SERVER_ERROR Too many clients`, and starts each
//! accepted connection's actors on the next worker arbiter (round robin), so
//! connections spread over every core. With `resp_port` set it accepts on
//! that socket too, starting Redis-dialect connections there
//! ([`crate::dialect::Resp`]); `max_tcp_clients` counts both.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use actix_rt::ArbiterHandle;
use slog::{error, warn};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::connection::Connection;
use crate::dialect::{Memcached, Resp};
use crate::env::Env;
use crate::guard::{guard, Panicked, Supervised};
use crate::ratelimit::RateLimit;
use crate::supervision::{Child, ChildDown};

/// The accept loop.
pub struct Listener {
    env: Arc<Env>,
    /// Where connection actors run.
    workers: Vec<ArbiterHandle>,
    /// The next worker to use.
    next: usize,
    /// Told if this actor fails, so it restarts it.
    supervisor: Recipient<ChildDown>,
}

/// Which dialect a listening socket speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Port {
    /// The main port: the memcached dialect.
    Main,
    /// `resp_port`: the Redis dialect.
    Resp,
}

type Accepted = (Port, std::io::Result<(TcpStream, SocketAddr)>);

/// Stops accepting (node shutdown).
#[derive(Message)]
#[rtype(result = "()")]
pub struct Stop;

impl Handler<Stop> for Listener {
    type Result = ();

    fn handle(&mut self, _: Stop, ctx: &mut Context<Self>) {
        ctx.stop();
    }
}

/// Fault injection: makes the listener panic.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Panic;

impl Listener {
    /// Starts a listener on a clone of the supervisor's socket, so the socket
    /// outlives any one listener actor.
    pub fn start(
        env: Arc<Env>,
        socket: &std::net::TcpListener,
        resp_socket: Option<&std::net::TcpListener>,
        workers: Vec<ArbiterHandle>,
        supervisor: Recipient<ChildDown>,
    ) -> std::io::Result<Addr<Listener>> {
        let mut sockets = vec![(Port::Main, TcpListener::from_std(socket.try_clone()?)?)];
        if let Some(resp) = resp_socket {
            sockets.push((Port::Resp, TcpListener::from_std(resp.try_clone()?)?));
        }
        Ok(Listener::create(move |ctx| {
            for (port, socket) in sockets {
                let accepts = futures_util::stream::unfold(socket, move |socket| async move {
                    let accepted = socket.accept().await;
                    if accepted.is_err() {
                        // Out of file descriptors or similar: don't spin.
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                    Some(((port, accepted), socket))
                });
                ctx.add_stream(accepts);
            }
            Listener {
                env,
                workers,
                next: 0,
                supervisor,
            }
        }))
    }

    fn refuse(&self, port: Port, mut stream: TcpStream, peer: SocketAddr) {
        self.env
            .node
            .counters
            .refused_connections
            .fetch_add(1, Ordering::Relaxed);
        let node = &self.env.node;
        static REFUSED: RateLimit = RateLimit::warnings();
        if let Some(suppressed) = REFUSED.allow() {
            warn!(node.log, "refused client: too many clients";
                "peer" => %peer, "max_tcp_clients" => node.settings.max_tcp_clients,
                "suppressed" => suppressed);
        }
        actix::spawn(async move {
            let refusal: &[u8] = match port {
                Port::Main => b"SERVER_ERROR Too many clients\r\n",
                // Redis's own words when maxclients is reached.
                Port::Resp => b"-ERR max number of clients reached\r\n",
            };
            let _ = stream.write_all(refusal).await;
            let _ = stream.shutdown().await;
            let mut sink = [0u8; 512];
            let _ = tokio::time::timeout(Duration::from_secs(1), async {
                while let Ok(n) = stream.read(&mut sink).await {
                    if n == 0 {
                        break;
                    }
                }
            })
            .await;
        });
    }
}

impl Actor for Listener {
    type Context = Context<Self>;
}

impl Supervised for Listener {
    /// Permanent child: the supervisor starts a new listener on the same socket.
    fn failed(&mut self, ctx: &mut Context<Self>, why: Panicked) {
        error!(self.env.node.log, "listener failed"; "panic" => %why);
        self.supervisor.do_send(ChildDown {
            child: Child::Listener,
            why,
            gave_up: false,
        });
        ctx.stop();
    }
}

impl StreamHandler<Accepted> for Listener {
    fn handle(&mut self, (port, item): Accepted, ctx: &mut Context<Self>) {
        guard(self, ctx, |a, _| a.accepted(port, item));
    }

    fn finished(&mut self, _ctx: &mut Context<Self>) {}
}

impl Listener {
    fn accepted(&mut self, port: Port, item: std::io::Result<(TcpStream, SocketAddr)>) {
        let (stream, peer) = match item {
            Ok(accepted) => accepted,
            Err(e) => {
                error!(self.env.node.log, "accept failed"; "error" => %e);
                return;
            }
        };
        let node = &self.env.node;
        let current = &node.counters.current_connections;
        let before = current.fetch_add(1, Ordering::SeqCst);
        if before >= node.settings.max_tcp_clients as u64 {
            current.fetch_sub(1, Ordering::SeqCst);
            self.refuse(port, stream, peer);
            return;
        }
        node.counters
            .total_connections
            .fetch_add(1, Ordering::Relaxed);
        keepalive(&stream, node.settings.tcp_keepalive_seconds);
        let std_stream = match stream.into_std() {
            Ok(s) => s,
            Err(_) => {
                current.fetch_sub(1, Ordering::SeqCst);
                return;
            }
        };
        let home = self.next % self.workers.len();
        let worker = &self.workers[home];
        self.next = self.next.wrapping_add(1);
        let env = self.env.clone();
        worker.spawn_fn(move || match TcpStream::from_std(std_stream) {
            Ok(stream) => match port {
                Port::Main => Connection::<Memcached>::start(env, home, stream),
                Port::Resp => Connection::<Resp>::start(env, home, stream),
            },
            Err(_) => {
                env.node
                    .counters
                    .current_connections
                    .fetch_sub(1, Ordering::SeqCst);
            }
        });
    }
}

/// TCP keepalive on an accepted client socket (`tcp_keepalive_seconds`;
/// zero: off): after `idle` without traffic the kernel probes the peer
/// every `idle / 6` (at least 1 s), and gives up after 5 unanswered probes,
/// so a peer that vanished without closing is found dead after about
/// twice `idle` and its connection closed.
fn keepalive(stream: &TcpStream, idle: Duration) {
    if idle.is_zero() {
        return;
    }
    let probes = socket2::TcpKeepalive::new()
        .with_time(idle)
        .with_interval((idle / 6).max(Duration::from_secs(1)))
        .with_retries(5);
    let _ = socket2::SockRef::from(stream).set_tcp_keepalive(&probes);
}

impl Handler<Panic> for Listener {
    type Result = ();

    fn handle(&mut self, _: Panic, ctx: &mut Context<Self>) {
        guard(self, ctx, |_, _| -> () {
            panic!("fault injection: listener panicked")
        });
    }
}
