//! The router-shard pool's supervisor: starts `num_router_shards` shard
//! actors spread over the worker arbiters, and restarts each one that
//! fails (permanent children) by handing it the client queues to recover
//! its table from. Past its restart intensity it gives up, and since it is
//! a significant child of the root, the node stops (exit status 70).

use std::sync::atomic::Ordering;
use std::sync::Arc;

use actix::prelude::*;
use actix_rt::ArbiterHandle;
use slog::{crit, error, warn};

use crate::clients::{ClientSupervisor, Queues};
use crate::guard::{guard, Panicked, Supervised};
use crate::node::Node;
use crate::router::{Router, SeqClock, TopicObserver};
use crate::shard::{Restart, RouterShard, ShardDown};
use crate::supervision::Intensity;
use crate::supervision::{Child, ChildDown};

/// The pool's supervisor.
pub struct ShardPool {
    node: Arc<Node>,
    shards: Vec<Addr<RouterShard>>,
    clients: Addr<ClientSupervisor>,
    intensity: Intensity,
    parent: Recipient<ChildDown>,
    gave_up: bool,
}

/// From the root: restart (this supervisor failed): every shard restarts.
#[derive(Message)]
#[rtype(result = "()")]
pub struct RestartPool;

/// Fault injection: make this supervisor panic.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Panic;

impl ShardPool {
    /// Starts the pool and its shards; returns it and the router handle.
    pub fn start(
        node: Arc<Node>,
        clock: Arc<SeqClock>,
        observer: Option<Arc<dyn TopicObserver>>,
        clients: Addr<ClientSupervisor>,
        parent: Recipient<ChildDown>,
        workers: &[ArbiterHandle],
    ) -> (Addr<ShardPool>, Router) {
        let n = node.settings.num_router_shards.max(1);
        let mut router = None;
        // Before any client can connect: the fresh buffers are complete
        // from here (each shard is made later, on its arbiter).
        let born = clock.next();
        let pool = ShardPool::create(|ctx| {
            let me = ctx.address();
            let shards: Vec<Addr<RouterShard>> = (0..n)
                .map(|i| {
                    let (node, clock, observer) = (node.clone(), clock.clone(), observer.clone());
                    let sup = me.clone().recipient();
                    RouterShard::start_in_arbiter(&workers[i % workers.len()], move |_| {
                        RouterShard::new(i, node, clock, born, observer, sup)
                    })
                })
                .collect();
            router = Some(Router::new(shards.clone(), clock.clone(), observer.clone()));
            let s = &node.settings;
            ShardPool {
                intensity: Intensity::new(s.max_restarts, s.max_restart_seconds),
                node: node.clone(),
                shards,
                clients,
                parent,
                gave_up: false,
            }
        });
        (pool, router.expect("router built"))
    }

    /// Restarts shard `i` from the client queues.
    fn restart(&mut self, i: usize, ctx: &mut Context<Self>) {
        let shard = self.shards[i].clone();
        let fut = self
            .clients
            .send(Queues)
            .into_actor(self)
            .map(move |queues, _, _| {
                shard.do_send(Restart {
                    queues: queues.unwrap_or_default(),
                });
            });
        ctx.spawn(fut);
    }
}

impl Actor for ShardPool {
    type Context = Context<Self>;
}

impl Supervised for ShardPool {
    fn failed(&mut self, _ctx: &mut Context<Self>, why: Panicked) {
        error!(self.node.log, "router-shard pool supervisor failed"; "panic" => %why);
        self.parent.do_send(ChildDown {
            child: Child::ShardPool,
            why,
            gave_up: false,
        });
    }
}

impl Handler<ShardDown> for ShardPool {
    type Result = ();

    fn handle(&mut self, msg: ShardDown, ctx: &mut Context<Self>) {
        guard(self, ctx, |a, ctx| {
            if a.gave_up {
                return;
            }
            let restarts = a
                .node
                .counters
                .shard_restarts
                .fetch_add(1, Ordering::Relaxed)
                + 1;
            if !a.intensity.record() {
                a.gave_up = true;
                crit!(a.node.log, "too many restarts of router shards; the pool gives up";
                    "shard" => msg.index, "restarts" => a.intensity.recent(),
                    "max_restarts" => a.node.settings.max_restarts,
                    "max_restart_seconds" => a.node.settings.max_restart_seconds.as_secs());
                a.parent.do_send(ChildDown {
                    child: Child::ShardPool,
                    why: msg.why,
                    gave_up: true,
                });
                return;
            }
            warn!(a.node.log, "router shard failed and was restarted; subscriptions restored, retro buffer lost";
                "shard" => msg.index, "shard_restarts" => restarts, "panic" => %msg.why);
            a.restart(msg.index, ctx);
        });
    }
}

impl Handler<RestartPool> for ShardPool {
    type Result = ();

    fn handle(&mut self, _: RestartPool, ctx: &mut Context<Self>) {
        let s = &self.node.settings;
        self.intensity = Intensity::new(s.max_restarts, s.max_restart_seconds);
        self.gave_up = false;
        for i in 0..self.shards.len() {
            self.restart(i, ctx);
        }
    }
}

impl Handler<Panic> for ShardPool {
    type Result = ();

    fn handle(&mut self, _: Panic, ctx: &mut Context<Self>) {
        guard(self, ctx, |_, _| -> () {
            panic!("fault injection: router-shard pool supervisor panicked")
        });
    }
}
