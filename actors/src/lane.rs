//! A thread's bulk lanes: the large subscription changes of every client on
//! one worker thread take turns here, so that however many clients send
//! huge subscribes (or leave holding half a million topics) at once, the
//! thread does one bounded piece of such work at a time, and everybody
//! else's turns come in between.
//!
//! A client queue already cuts a large change into slices of its own set
//! and chunks for the shards (`crate::queue`), but per client: twenty
//! clients subscribing half a million topics each put twenty slices into
//! every turn of the worker, and up to twenty chunks into each shard's
//! mailbox, ahead of the publishes and polls of everyone else. Through the
//! lanes the thread holds at most:
//!
//! - [`Lane::Local`]: one slice of work on a client's own set (a second
//!   and later slice of a change: its first runs at once);
//! - [`Lane::Shard`]: per router shard, one chunk of a change that needs
//!   several, from the time it is sent until the shard answers it.
//!
//! A lane is first come, first served. A step whose turn has come first
//! yields the thread once (its sockets are polled and what else is ready
//! runs), then holds the lane until its [`Permit`] is dropped. A waiting
//! step that is dropped (its client left) gives up its place. Everything
//! here stays on its thread (`!Send`), as the queues that use it do.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};

/// Which of a thread's lanes a step takes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lane {
    /// Work on a client queue's own set, on this thread.
    Local,
    /// Chunks sent to router shard `s` (its index).
    Shard(usize),
}

impl Lane {
    fn index(self) -> usize {
        match self {
            Lane::Local => 0,
            Lane::Shard(s) => s + 1,
        }
    }
}

/// A place in a lane's line.
struct Ticket {
    admitted: Cell<bool>,
    gone: Cell<bool>,
    waker: RefCell<Option<Waker>>,
}

#[derive(Default)]
struct Line {
    /// A permit of this lane is out.
    busy: bool,
    waiting: VecDeque<Rc<Ticket>>,
}

thread_local! {
    static LINES: RefCell<Vec<Line>> = const { RefCell::new(Vec::new()) };
}

fn with_line<T>(lane: Lane, f: impl FnOnce(&mut Line) -> T) -> Option<T> {
    LINES
        .try_with(|lines| {
            let mut lines = lines.borrow_mut();
            let i = lane.index();
            if lines.len() <= i {
                lines.resize_with(i + 1, Line::default);
            }
            f(&mut lines[i])
        })
        .ok()
}

/// Hands the lane to the next step still waiting, or frees it.
fn release(lane: Lane) {
    let next = with_line(lane, |line| {
        while let Some(t) = line.waiting.pop_front() {
            if !t.gone.get() {
                t.admitted.set(true);
                return Some(t);
            }
        }
        line.busy = false;
        None
    })
    .flatten();
    if let Some(t) = next {
        if let Some(w) = t.waker.borrow_mut().take() {
            w.wake();
        }
    }
}

/// The right to do one step of bulk work in a lane; the next step's turn
/// comes when it is dropped.
pub struct Permit {
    lane: Lane,
    _here: PhantomData<Rc<()>>,
}

impl Drop for Permit {
    fn drop(&mut self) {
        release(self.lane);
    }
}

/// Resolves to a permit of `lane` once the steps queued before this one
/// were done, and the thread has run what else was ready.
pub async fn turn(lane: Lane) -> Permit {
    let permit = Wait { lane, ticket: None }.await;
    tokio::task::yield_now().await;
    permit
}

/// Waiting in a lane's line.
struct Wait {
    lane: Lane,
    ticket: Option<Rc<Ticket>>,
}

impl Future for Wait {
    type Output = Permit;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Permit> {
        let lane = self.lane;
        let permit = || Permit {
            lane,
            _here: PhantomData,
        };
        match &self.ticket {
            Some(t) if t.admitted.get() => {
                self.ticket = None;
                Poll::Ready(permit())
            }
            Some(t) => {
                *t.waker.borrow_mut() = Some(cx.waker().clone());
                Poll::Pending
            }
            None => {
                let queued = with_line(lane, |line| {
                    if !line.busy {
                        line.busy = true;
                        return None;
                    }
                    let t = Rc::new(Ticket {
                        admitted: Cell::new(false),
                        gone: Cell::new(false),
                        waker: RefCell::new(Some(cx.waker().clone())),
                    });
                    line.waiting.push_back(t.clone());
                    Some(t)
                });
                match queued {
                    // The thread is ending: no line to wait in.
                    None | Some(None) => Poll::Ready(permit()),
                    Some(t) => {
                        self.ticket = t;
                        Poll::Pending
                    }
                }
            }
        }
    }
}

impl Drop for Wait {
    fn drop(&mut self) {
        if let Some(t) = self.ticket.take() {
            if t.admitted.get() {
                // Its turn came, unused: the next one's.
                release(self.lane);
            } else {
                t.gone.set(true);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// Runs `f` on a one-thread runtime, as on a worker arbiter.
    fn on_one_thread<F: Future>(f: F) -> F::Output {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        tokio::task::LocalSet::new().block_on(&rt, f)
    }

    /// Steps of one lane run one at a time, first come first served,
    /// whatever their number; other lanes are not held up.
    #[test]
    fn one_step_at_a_time_in_order() {
        let log = Rc::new(RefCell::new(Vec::new()));
        let inside = Rc::new(Cell::new(0));
        on_one_thread(async {
            let mut tasks = Vec::new();
            for i in 0..5 {
                let (log, inside) = (log.clone(), inside.clone());
                tasks.push(tokio::task::spawn_local(async move {
                    for _ in 0..3 {
                        let _p = turn(Lane::Shard(1)).await;
                        inside.set(inside.get() + 1);
                        assert_eq!(inside.get(), 1, "two steps in the lane at once");
                        log.borrow_mut().push(i);
                        tokio::time::sleep(Duration::from_millis(1)).await;
                        inside.set(inside.get() - 1);
                    }
                }));
            }
            // Another lane goes ahead while that one is busy.
            tokio::time::sleep(Duration::from_micros(100)).await;
            let other = turn(Lane::Shard(2));
            let quick = tokio::time::timeout(Duration::from_millis(2), other).await;
            assert!(quick.is_ok(), "a free lane waited for a busy one");
            for t in tasks {
                t.await.unwrap();
            }
        });
        // Round robin: each waits behind the four others.
        assert_eq!(*log.borrow(), [0, 1, 2, 3, 4].repeat(3));
    }

    /// A waiting step dropped gives up its place; one dropped after its
    /// turn came hands the lane on.
    #[test]
    fn dropped_steps_give_way() {
        on_one_thread(async {
            let first = turn(Lane::Local).await;
            let mut cx = Context::from_waker(Waker::noop());
            let mut waiting = Box::pin(turn(Lane::Local));
            assert!(waiting.as_mut().poll(&mut cx).is_pending());
            let mut admitted = Box::pin(Wait {
                lane: Lane::Local,
                ticket: None,
            });
            assert!(admitted.as_mut().poll(&mut cx).is_pending());
            drop(waiting);
            drop(first);
            // `admitted` is next: its turn came; dropping it unused frees the lane.
            drop(admitted);
            let again = tokio::time::timeout(Duration::from_millis(50), turn(Lane::Local)).await;
            assert!(again.is_ok(), "the lane stayed held");
        });
    }
}
