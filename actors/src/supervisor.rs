//! The supervisor: starts the worker arbiters and the listener, hears about
//! failures (a router shard rebuilt, the listener dead), restarts what
//! failed, and escalates in the manner of OTP: more than `max_restarts`
//! restarts within `max_restart_seconds` and the node logs why and exits
//! non-zero, for the service manager to restart it. It also drains the node
//! on shutdown.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use actix_rt::Arbiter;
use slog::{crit, info, warn};

use crate::client::Kick;
use crate::listener::{self, Listener};
use crate::node::Node;

/// The supervisor actor.
pub struct Supervisor {
    node: Arc<Node>,
    /// The listening socket; each listener actor works on a clone of it, so
    /// a listener restart neither drops queued connections nor rebinds.
    socket: std::net::TcpListener,
    /// Worker threads for connections.
    workers: Vec<Arbiter>,
    listener: Option<Addr<Listener>>,
    /// Recent restarts, for escalation.
    restarts: VecDeque<Instant>,
    /// `closed_connections` when the heap was last trimmed.
    closed_at_last_trim: u64,
}

/// Trim the heap once this many clients left since the last trim.
const TRIM_AFTER_CLOSES: u64 = 256;

/// Returns free heap memory to the OS (glibc keeps it in its arenas).
fn trim_heap() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only walks the allocator's own free lists.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// A router shard was rebuilt after a failure.
#[derive(Message)]
#[rtype(result = "()")]
pub struct ShardRestarted(pub usize);

/// The listener actor died.
#[derive(Message)]
#[rtype(result = "()")]
pub struct ListenerDied;

/// Fault injection: make the listener panic.
#[derive(Message)]
#[rtype(result = "()")]
pub struct InjectListenerPanic;

/// Drain and stop the node: stop accepting, close every client after its
/// pending answers are written, then stop the system.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Shutdown;

impl Supervisor {
    /// Binds the listening socket and starts the node's actors. Must run
    /// inside an actix `System`. Returns the supervisor and the bound address.
    pub fn start(node: Arc<Node>) -> std::io::Result<(Addr<Supervisor>, SocketAddr)> {
        let s = &node.settings;
        let socket = std::net::TcpListener::bind((s.listen_ip, s.tcp_server_port))?;
        socket.set_nonblocking(true)?;
        let addr = socket.local_addr()?;
        let threads = if s.worker_threads > 0 {
            s.worker_threads
        } else {
            std::thread::available_parallelism().map_or(2, |n| n.get())
        };
        let workers: Vec<Arbiter> = (0..threads).map(|_| Arbiter::new()).collect();
        // A proxy node: its upstream links start (and its router reports to
        // them) before the listener accepts anyone.
        if !s.upstreams.is_empty() {
            crate::proxy::start(&node);
        }
        let sup = Supervisor {
            node: node.clone(),
            socket,
            workers,
            listener: None,
            restarts: VecDeque::new(),
            closed_at_last_trim: 0,
        }
        .start();
        let hook_addr = sup.clone();
        node.router.set_restart_hook(Box::new(move |shard| {
            hook_addr.do_send(ShardRestarted(shard))
        }));
        node.set_supervisor(sup.clone());
        node.set_local_addr(addr);
        crate::control::start(node.clone(), sup.clone())?;
        crate::http::start(&node)?;
        node.metrics.set_ready(true);
        info!(node.log, "accepting connections";
            "addr" => %addr, "router_shards" => node.router.num_shards(),
            "worker_threads" => threads, "max_tcp_clients" => s.max_tcp_clients);
        Ok((sup, addr))
    }

    fn start_listener(&mut self, ctx: &mut Context<Self>) {
        let handles = self.workers.iter().map(|a| a.handle()).collect();
        match Listener::start(self.node.clone(), &self.socket, handles, ctx.address()) {
            Ok(addr) => self.listener = Some(addr),
            Err(e) => {
                crit!(self.node.log, "cannot start listener"; "error" => %e);
                std::process::exit(1);
            }
        }
    }

    /// Closes idle clients, and gives memory back to the OS after many
    /// clients left (the allocator keeps freed memory otherwise).
    fn sweep(&mut self) {
        let timeout = self.node.settings.client_idle_timeout;
        self.node.router.registry.for_each(|client| {
            if client.idle_for() >= timeout {
                client.kick(Kick::Idle);
            }
        });
        let closed = self
            .node
            .counters
            .closed_connections
            .load(Ordering::Relaxed);
        if closed >= self.closed_at_last_trim + TRIM_AFTER_CLOSES {
            self.closed_at_last_trim = closed;
            trim_heap();
        }
    }

    /// Counts a restart; past the budget, escalates by exiting the process.
    fn count_restart(&mut self, what: &str) {
        let now = Instant::now();
        let window = self.node.settings.max_restart_seconds;
        self.restarts.push_back(now);
        while self
            .restarts
            .front()
            .is_some_and(|t| now.duration_since(*t) > window)
        {
            self.restarts.pop_front();
        }
        let max = self.node.settings.max_restarts as usize;
        if self.restarts.len() > max {
            crit!(self.node.log, "too many restarts; giving up so the service manager restarts the node";
                "last" => what, "restarts" => self.restarts.len(),
                "max_restarts" => max, "max_restart_seconds" => window.as_secs());
            std::process::exit(70);
        }
    }
}

impl Actor for Supervisor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        self.start_listener(ctx);
        let timeout = self.node.settings.client_idle_timeout;
        let every = (timeout / 4).clamp(Duration::from_millis(100), Duration::from_secs(1));
        ctx.run_interval(every, |act, _ctx| act.sweep());
    }
}

impl Handler<ShardRestarted> for Supervisor {
    type Result = ();

    fn handle(&mut self, msg: ShardRestarted, _ctx: &mut Context<Self>) {
        warn!(self.node.log, "router shard failed and was restarted; subscriptions restored, retro buffer lost";
            "shard" => msg.0, "shard_restarts" => self.node.router.restarts());
        self.count_restart("router shard");
    }
}

impl Handler<ListenerDied> for Supervisor {
    type Result = ();

    fn handle(&mut self, _: ListenerDied, ctx: &mut Context<Self>) {
        self.node
            .counters
            .listener_restarts
            .fetch_add(1, Ordering::Relaxed);
        warn!(self.node.log, "listener failed and was restarted");
        self.count_restart("listener");
        self.start_listener(ctx);
    }
}

impl Handler<InjectListenerPanic> for Supervisor {
    type Result = ();

    fn handle(&mut self, _: InjectListenerPanic, _ctx: &mut Context<Self>) {
        if let Some(l) = &self.listener {
            l.do_send(listener::Panic);
        }
    }
}

impl Handler<Shutdown> for Supervisor {
    type Result = ();

    fn handle(&mut self, _: Shutdown, ctx: &mut Context<Self>) {
        info!(self.node.log, "shutting down: draining clients";
            "clients" => self.node.current_connections.load(Ordering::Relaxed));
        self.node.metrics.set_ready(false);
        // Stop accepting: the listener goes, and so does our socket.
        if let Some(l) = self.listener.take() {
            l.do_send(listener::Stop);
        }
        for client in self.node.router.registry.all() {
            client.kick(Kick::Shutdown);
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        ctx.run_interval(Duration::from_millis(20), move |act, _ctx| {
            let open = act.node.current_connections.load(Ordering::Relaxed);
            if open == 0 || Instant::now() > deadline {
                info!(act.node.log, "stopped"; "clients_left" => open);
                System::current().stop();
            }
        });
    }
}
