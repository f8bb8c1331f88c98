//! The courier: one per worker arbiter. A publisher hands it, in one
//! cross-thread message, the deliveries for every client queue that lives on
//! its arbiter; it passes each queue its batch with a local (same-thread)
//! send. A batch to 200 subscribers on two arbiters thus costs the
//! publisher two cross-thread messages, not 200.

use actix::prelude::*;

use crate::message::Delivery;
use crate::queue::Deliver;
use crate::shard::QueueRef;

/// Deliveries for queues on this courier's arbiter.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Parcel(pub Vec<(QueueRef, Vec<Delivery>)>);

/// One arbiter's courier. It holds no state, so it cannot be left
/// inconsistent: a failure (a closed queue is skipped by `do_send`) needs
/// no restart.
#[derive(Default)]
pub struct Courier;

impl Actor for Courier {
    type Context = Context<Self>;
}

impl Handler<Parcel> for Courier {
    type Result = ();

    fn handle(&mut self, msg: Parcel, _ctx: &mut Context<Self>) {
        for (queue, items) in msg.0 {
            queue.do_send(Deliver(items));
        }
    }
}
