//! The root supervisor. It binds the listening socket, starts the worker
//! arbiters and its children, restarts those that fail, and stops the node
//! when supervision gives up (exit status 70, after the cleanup: pid file,
//! control socket). It also drains the node on shutdown.
//!
//! Its children and their strategies (see `crate::supervision`):
//!
//! | child | kind | restart |
//! |---|---|---|
//! | clients' supervisor (`crate::clients`) | supervisor of the client pairs (temporary) | permanent |
//! | router-shard pool (`crate::shard_pool`) | supervisor of the shards (permanent), significant | permanent |
//! | listener (`crate::listener`) | worker | permanent |
//! | upstream links (`crate::proxy`, proxies only) | workers | permanent |
//!
//! A child's failure counts against the root's intensity (`max_restarts` in
//! `max_restart_seconds`); past it, or when a significant child gives up,
//! or when the root itself fails, the node stops with status 70.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use actix_rt::Arbiter;
use slog::{crit, error, info, warn};

use crate::client::Kick;
use crate::clients::{self, ClientSupervisor, KickAll};
use crate::courier::Courier;
use crate::env::{Env, ProxyHooks};
use crate::guard::{guard, Panicked, Supervised};
use crate::listener::{self, Listener};
use crate::node::Node;
use crate::proxy::{self, Proxy};
use crate::router::SeqClock;
use crate::shard_pool::{self, RestartPool, ShardPool};
use crate::supervision::{Intensity, ESCALATION_EXIT};

pub use crate::supervision::{Child, ChildDown, InjectFault, Shutdown};

/// The root supervisor.
pub struct Supervisor {
    node: Arc<Node>,
    /// The listening socket; each listener actor works on a clone of it, so
    /// a listener restart neither drops queued connections nor rebinds.
    socket: std::net::TcpListener,
    /// The `resp_port` socket, if set (the listener accepts on both).
    resp_socket: Option<std::net::TcpListener>,
    /// Worker threads for connections.
    workers: Vec<Arbiter>,
    /// Threads of the router shards (kept for the node's lifetime).
    _router_threads: Vec<Arbiter>,
    env: Option<Arc<Env>>,
    clients: Option<Addr<ClientSupervisor>>,
    pool: Option<Addr<ShardPool>>,
    listener: Option<Addr<Listener>>,
    proxy: Option<Arc<Proxy>>,
    intensity: Intensity,
    stopping: bool,
}

impl Supervisor {
    /// Binds the listening socket and starts the node's actors. Must run
    /// inside an actix `System`. Returns the supervisor, the bound address
    /// and the clients' environment (for the control channel).
    pub fn start(node: Arc<Node>) -> std::io::Result<(Addr<Supervisor>, SocketAddr, Arc<Env>)> {
        let s = &node.settings;
        let socket = std::net::TcpListener::bind((s.listen_ip, s.tcp_server_port))?;
        socket.set_nonblocking(true)?;
        let addr = socket.local_addr()?;
        let resp_socket = match s.resp_port {
            0 => None,
            port => {
                let resp = std::net::TcpListener::bind((s.listen_ip, port))?;
                resp.set_nonblocking(true)?;
                Some(resp)
            }
        };
        let threads = if s.worker_threads > 0 {
            s.worker_threads
        } else {
            std::thread::available_parallelism().map_or(2, |n| n.get())
        };
        // The shards get threads of their own: a publish waits for its
        // shards' answers, and a worker thread busy with thousands of
        // connections would make it wait a whole round of them. A quarter
        // of the threads (at least one) run them, the rest the connections:
        // routing is per message, connection work per delivery, and more
        // threads than cores would cost every hop between them a context
        // switch (on 2 cores, 2 workers and a router thread took 15-20%
        // more CPU per delivery than one of each).
        // `router_threads = 0`: the shards share the connection threads.
        let shard_threads = s.router_threads.unwrap_or((threads / 4).max(1));
        let threads = threads.saturating_sub(shard_threads).max(1);
        let workers: Vec<Arbiter> = (0..threads).map(|_| Arbiter::new()).collect();
        let router_threads: Vec<Arbiter> = (0..shard_threads).map(|_| Arbiter::new()).collect();
        let mut env_out = None;
        let sup = Supervisor::create(|ctx| {
            let me = ctx.address();
            let handles: Vec<_> = workers.iter().map(|a| a.handle()).collect();
            let threads = handles
                .iter()
                .cloned()
                .chain(router_threads.iter().map(|a| a.handle()))
                .collect();
            let clients =
                ClientSupervisor::new(node.clone(), me.clone().recipient(), threads).start();
            let clock = Arc::new(SeqClock::new());
            // A proxy's links get their mailboxes first: the shards report
            // to them, and they publish through the shards.
            let links = (!s.upstreams.is_empty()).then(|| proxy::Links::new(&node));
            let observer = links.as_ref().map(|l| l.proxy.clone() as _);
            let (pool, router) = ShardPool::start(
                node.clone(),
                clock,
                observer,
                clients.clone(),
                me.clone().recipient(),
                &if router_threads.is_empty() {
                    handles.clone()
                } else {
                    router_threads.iter().map(|a| a.handle()).collect()
                },
            );
            let proxy = links.as_ref().map(|l| l.proxy.clone());
            let couriers = handles
                .iter()
                .map(|h| Courier::start_in_arbiter(h, |_| Courier))
                .collect();
            let env = Arc::new(Env {
                node: node.clone(),
                router,
                clients: clients.clone(),
                couriers,
                proxy: proxy.clone().map(|p| p as Arc<dyn ProxyHooks>),
                faults: me.clone().recipient(),
                local_addr: addr,
                budget: Default::default(),
            });
            if let Some(links) = links {
                links.start(env.clone(), me.clone().recipient());
            }
            env_out = Some(env.clone());
            Supervisor {
                node: node.clone(),
                socket,
                resp_socket,
                workers,
                _router_threads: router_threads,
                env: Some(env),
                clients: Some(clients),
                pool: Some(pool),
                listener: None,
                proxy,
                intensity: Intensity::new(s.max_restarts, s.max_restart_seconds),
                stopping: false,
            }
        });
        let env = env_out.expect("env built");
        crate::control::start(env.clone(), sup.clone().recipient())?;
        crate::http::start(&env)?;
        node.metrics.set_ready(true);
        info!(node.log, "accepting connections";
            "addr" => %addr, "router_shards" => env.router.num_shards(),
            "worker_threads" => threads, "router_threads" => shard_threads, "max_tcp_clients" => s.max_tcp_clients,
            "resp_port" => s.resp_port);
        Ok((sup, addr, env))
    }

    fn start_listener(&mut self, ctx: &mut Context<Self>) {
        let handles = self.workers.iter().map(|a| a.handle()).collect();
        let env = self.env.clone().expect("env");
        match Listener::start(
            env,
            &self.socket,
            self.resp_socket.as_ref(),
            handles,
            ctx.address().recipient(),
        ) {
            Ok(addr) => self.listener = Some(addr),
            Err(e) => {
                crit!(self.node.log, "cannot start listener"; "error" => %e);
                self.escalate("listener cannot start");
            }
        }
    }

    /// Supervision gives up: the node stops with status 70 (the caller of
    /// `System::run` cleans up and exits with it).
    fn escalate(&mut self, what: &str) {
        crit!(self.node.log, "too many restarts; giving up so the service manager restarts the node";
            "last" => what, "restarts" => self.intensity.recent(),
            "max_restarts" => self.node.settings.max_restarts,
            "max_restart_seconds" => self.node.settings.max_restart_seconds.as_secs());
        self.stopping = true;
        System::current().stop_with_code(ESCALATION_EXIT);
    }

    fn child_down(&mut self, msg: ChildDown, ctx: &mut Context<Self>) {
        if self.stopping {
            return;
        }
        let name = msg.child.name();
        if msg.gave_up && msg.child.significant() {
            return self.escalate(&name);
        }
        if !msg.child.restart().restarts(true) {
            return;
        }
        if !self.intensity.record() {
            return self.escalate(&name);
        }
        let c = &self.node.counters;
        match msg.child {
            Child::Listener => {
                c.listener_restarts.fetch_add(1, Ordering::Relaxed);
                warn!(self.node.log, "listener failed and was restarted"; "panic" => %msg.why);
                self.start_listener(ctx);
            }
            Child::ShardPool => {
                c.supervisor_restarts.fetch_add(1, Ordering::Relaxed);
                warn!(self.node.log, "router-shard pool supervisor failed and was restarted; every shard restarts";
                    "panic" => %msg.why);
                if let Some(pool) = &self.pool {
                    pool.do_send(RestartPool);
                }
            }
            Child::Clients => {
                c.supervisor_restarts.fetch_add(1, Ordering::Relaxed);
                warn!(self.node.log, "clients' supervisor failed and was restarted; clients kept";
                    "panic" => %msg.why);
            }
            Child::Upstream(i) => {
                c.upstream_restarts.fetch_add(1, Ordering::Relaxed);
                warn!(self.node.log, "upstream link failed and was restarted; it mirrors its topics again, its backlog was reset";
                    "link" => i, "panic" => %msg.why);
                if let Some(proxy) = &self.proxy {
                    proxy.restart_link(i);
                }
            }
        }
    }

    fn inject(&mut self, fault: InjectFault) {
        match fault {
            InjectFault::Listener => {
                if let Some(l) = &self.listener {
                    l.do_send(listener::Panic);
                }
            }
            InjectFault::ShardPool => {
                if let Some(p) = &self.pool {
                    p.do_send(shard_pool::Panic);
                }
            }
            InjectFault::Clients => {
                if let Some(c) = &self.clients {
                    c.do_send(clients::Panic);
                }
            }
            InjectFault::Upstream => {
                if let Some(p) = &self.proxy {
                    p.inject_panic();
                }
            }
            InjectFault::Root => panic!("fault injection: root supervisor panicked"),
        }
    }
}

impl Actor for Supervisor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        self.start_listener(ctx);
    }
}

impl Supervised for Supervisor {
    /// Nothing supervises the root: its failure stops the node.
    fn failed(&mut self, _ctx: &mut Context<Self>, why: Panicked) {
        error!(self.node.log, "root supervisor failed"; "panic" => %why);
        self.escalate("root supervisor");
    }
}

impl Handler<ChildDown> for Supervisor {
    type Result = ();

    fn handle(&mut self, msg: ChildDown, ctx: &mut Context<Self>) {
        guard(self, ctx, |a, ctx| a.child_down(msg, ctx));
    }
}

impl Handler<InjectFault> for Supervisor {
    type Result = ();

    fn handle(&mut self, msg: InjectFault, ctx: &mut Context<Self>) {
        if !self.node.settings.fault_injection {
            return;
        }
        guard(self, ctx, |a, _| a.inject(msg));
    }
}

impl Handler<Shutdown> for Supervisor {
    type Result = ();

    fn handle(&mut self, _: Shutdown, ctx: &mut Context<Self>) {
        if self.stopping {
            return;
        }
        self.stopping = true;
        self.node.metrics.set_ready(false);
        info!(self.node.log, "shutting down: draining clients";
            "clients" => self.node.counters.current_connections.load(Ordering::Relaxed));
        // Stop accepting: the listener goes, and so does our socket.
        if let Some(l) = self.listener.take() {
            l.do_send(listener::Stop);
        }
        if let Some(c) = &self.clients {
            c.do_send(KickAll(Kick::Shutdown));
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        ctx.run_interval(Duration::from_millis(20), move |act, _ctx| {
            let open = act
                .node
                .counters
                .current_connections
                .load(Ordering::Relaxed);
            if open == 0 || Instant::now() > deadline {
                info!(act.node.log, "stopped"; "clients_left" => open);
                System::current().stop();
            }
        });
    }
}
