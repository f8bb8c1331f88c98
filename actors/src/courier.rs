//! The courier: one per worker arbiter. A publisher on another arbiter
//! hands it, in one cross-thread message, the deliveries for every client
//! queue that lives on its arbiter; it posts them on its arbiter's delivery
//! board (`crate::board`), where each queue takes its own. A batch to 200
//! subscribers on two arbiters thus costs the publisher two cross-thread
//! messages, not 200, and the subscribers no mailbox message at all.

use actix::prelude::*;

use crate::board::{self, Run};

/// Deliveries for queues on this courier's arbiter, in publish order.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Parcel(pub Vec<Run>);

/// What this arbiter's delivery board holds per queue ([`board::pending`]),
/// for `dump_queues`.
#[derive(Message)]
#[rtype(result = "Vec<(u64, usize, usize)>")]
pub struct Pending;

/// One arbiter's courier. It holds no state, so it cannot be left
/// inconsistent: a failure (a run for a closed queue is skipped) needs no
/// restart.
#[derive(Default)]
pub struct Courier;

impl Actor for Courier {
    type Context = Context<Self>;

    /// The arbiter's push ringer (`board::start_ringer`) is a task of its
    /// own: it outlives a courier that stopped.
    fn started(&mut self, _ctx: &mut Context<Self>) {
        board::start_ringer();
    }
}

impl Handler<Parcel> for Courier {
    type Result = ();

    fn handle(&mut self, msg: Parcel, _ctx: &mut Context<Self>) {
        board::post(msg.0);
    }
}

impl Handler<Pending> for Courier {
    type Result = MessageResult<Pending>;

    fn handle(&mut self, _: Pending, _ctx: &mut Context<Self>) -> Self::Result {
        MessageResult(board::pending())
    }
}
