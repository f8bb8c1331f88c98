//! The delivery board: the front of the inbox of every client queue on one
//! worker arbiter, one board per arbiter thread.
//!
//! A delivery used to be a mailbox message to its queue: an envelope and a
//! vector allocated on the publisher's thread, a wake-up of the queue's
//! task, and the frees on the queue's thread. Under sparse fan-out (many
//! publishers, a message to a few hundred of a thousand clients) that was
//! the whole cost of a delivery. On the board a delivery is a pointer push
//! into the queue's slot; the queue takes its slot's deliveries into its
//! inbox at the start of each of its handlers (a poll above all), so they
//! reach it in the order they were posted and before anything it does next.
//!
//! Who touches a board: only actors of its own arbiter thread, the ones
//! that are the queues' mailbox senders in effect. A publisher on that
//! arbiter posts directly; any other publisher sends the arbiter's courier
//! one [`Parcel`](crate::courier::Parcel) of [`Run`]s, which the courier
//! posts. So a board needs no lock, and the queue still owns its inbox: the
//! board only holds what was sent to it and not yet taken.
//!
//! A queue is woken (its task, through the waker its [`listen`]ing future
//! left in its slot: no message, no allocation) only when it must act
//! before its next request: when a slot's deliveries would take its queue
//! past `max_queue_messages` or `max_queue_bytes` (the queue then makes the
//! client a slow consumer at once), or, in push mode, when it
//! is ready to push. A slot sends at most one wake between two takes.
//! Push wakes are not given at the post but by the thread's ringer
//! ([`Ringer`]), for every queue due at once, after the tasks that were
//! ready at the first post: each subscriber then writes everything the
//! publishers of that turn sent in one write, as Redis writes its clients
//! once per turn of its event loop. A ring waits (at most a millisecond)
//! for the worker's publish batches in flight to the shards, and the
//! publishers whose deliveries it carries are answered after its queues
//! have pushed.
//! Past its room a slot keeps nothing more: it drops what it holds and
//! marks itself overflowed, so a queue that cannot take its wake yet (it
//! waits on the shards for a long subscribe) holds no more than its limits.
//!
//! The queue's figures (`crate::client::ClientInfo`) count its inbox; what
//! its slot holds is added by `dump_queues` ([`pending`]), so posting
//! touches nothing but the slot.

use std::cell::RefCell;
use std::task::Waker;

use crate::message::Delivery;

/// Where a client queue lives: its worker arbiter (the index of that
/// arbiter's courier) and its slot on that arbiter's board.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Home {
    pub arbiter: u32,
    pub slot: u32,
}

/// One recipient of a run: the client's id (node-unique, never reused: it
/// tells a reused slot from the one a stale subscriber entry names) and
/// its slot.
#[derive(Debug, Clone, Copy)]
pub struct Target {
    pub id: u64,
    pub slot: u32,
}

/// Deliveries for queues of one arbiter: every target gets every item, in
/// order. Consecutive messages to the same subscriber list share one run.
#[derive(Default)]
pub struct Run {
    pub to: Vec<Target>,
    pub items: Vec<Delivery>,
    /// Queued bytes of `items` (the queue limit's unit).
    pub bytes: usize,
}

impl Run {
    pub fn push(&mut self, item: Delivery) {
        self.bytes += item.message().queued_bytes();
        self.items.push(item);
    }
}

/// Deliveries a queue takes from its slot.
#[derive(Default)]
pub struct Taken {
    pub items: Vec<Delivery>,
    pub bytes: usize,
    /// More arrived than the queue had room for (its client is a slow
    /// consumer); nothing is kept then.
    pub over: bool,
}

const WOKEN: u8 = 1;
const EAGER: u8 = 2;
const OVER: u8 = 4;

struct Slot {
    /// The queue's client id; 0 when the slot is free.
    id: u64,
    items: Vec<Delivery>,
    bytes: usize,
    /// What the queue can still take before it overflows.
    room_messages: u32,
    flags: u8,
    room_bytes: usize,
    /// Wakes the queue's listening future ([`listen`]).
    bell: Option<Waker>,
}

impl Slot {
    const FREE: Slot = Slot {
        id: 0,
        items: Vec::new(),
        bytes: 0,
        room_messages: 0,
        flags: 0,
        room_bytes: 0,
        bell: None,
    };
}

/// Slots live in pages, so that growing the board never moves or doubles
/// the slots of all clients at once.
const PAGE: usize = 256;

#[derive(Default)]
struct Board {
    pages: Vec<Box<[Slot]>>,
    free: Vec<u32>,
    /// The copies of a run being posted, kept between posts (a run of 16
    /// messages to 200 subscribers is 3,200 of them).
    scratch: Vec<Delivery>,
}

impl Board {
    fn slot(&mut self, slot: u32, id: u64) -> Option<&mut Slot> {
        let s = slot as usize;
        let entry = self.pages.get_mut(s / PAGE)?.get_mut(s % PAGE)?;
        (entry.id == id && id != 0).then_some(entry)
    }

    /// Wakes the queues noted for a ring ([`Ringer`]) that have not taken
    /// their deliveries since (a take clears the flag).
    fn ring(&mut self, due: impl Iterator<Item = (u32, u64)>) {
        for (slot, id) in due {
            if let Some(entry) = self.slot(slot, id) {
                if entry.flags & WOKEN != 0 {
                    if let Some(bell) = &entry.bell {
                        bell.wake_by_ref();
                    }
                }
            }
        }
    }
}

thread_local! {
    static BOARD: RefCell<Board> = RefCell::default();
}

/// Opens a slot on this thread's board for queue `id`; returns its index.
pub fn open(id: u64, room: (usize, usize)) -> u32 {
    BOARD.with_borrow_mut(|b| {
        let index = match b.free.pop() {
            Some(i) => i,
            None => {
                let base = b.pages.len() * PAGE;
                b.pages
                    .push((0..PAGE).map(|_| Slot::FREE).collect::<Vec<_>>().into());
                b.free
                    .extend((base + 1..base + PAGE).rev().map(|i| i as u32));
                base as u32
            }
        };
        let s = index as usize;
        b.pages[s / PAGE][s % PAGE] = Slot {
            id,
            room_messages: room.0.min(u32::MAX as usize) as u32,
            room_bytes: room.1,
            ..Slot::FREE
        };
        index
    })
}

/// Queue `id`'s listening future, polled: leaves `waker` in the slot, to be
/// woken when the queue must take its deliveries; whether it must now (a
/// wake since its last take).
pub fn listen(slot: u32, id: u64, waker: &Waker) -> bool {
    BOARD.with_borrow_mut(|b| {
        let Some(entry) = b.slot(slot, id) else {
            return false;
        };
        match &mut entry.bell {
            Some(bell) if bell.will_wake(waker) => {}
            bell => *bell = Some(waker.clone()),
        }
        entry.flags & WOKEN != 0
    })
}

/// Frees queue `id`'s slot, dropping what it still holds.
pub fn close(slot: u32, id: u64) {
    // Dropped outside the borrow: a delivery's drop runs no board code, but
    // keep the board's critical section to bookkeeping.
    let old = BOARD.with_borrow_mut(|b| {
        let entry = b.slot(slot, id)?;
        let old = std::mem::replace(entry, Slot::FREE);
        b.free.push(slot);
        Some(old)
    });
    drop(old);
}

/// A vector given back for a slot to fill is kept up to this capacity (a
/// quiet push subscriber then holds at most this much).
pub const SPARE_MAX: usize = 128;

/// Takes queue `id`'s deliveries, leaving `spare` (empty, kept if its
/// capacity is at most [`SPARE_MAX`]) in the slot to fill next; a new
/// arrival may wake the queue again.
pub fn take(slot: u32, id: u64, mut spare: Vec<Delivery>) -> Taken {
    spare.clear();
    if spare.capacity() > SPARE_MAX {
        spare = Vec::new();
    }
    BOARD.with_borrow_mut(|b| {
        let Some(entry) = b.slot(slot, id) else {
            return Taken::default();
        };
        entry.flags &= !WOKEN;
        let over = entry.flags & OVER != 0;
        if entry.items.is_empty() {
            if entry.items.capacity() < spare.capacity() {
                entry.items = spare;
            }
            return Taken {
                over,
                ..Taken::default()
            };
        }
        Taken {
            items: std::mem::replace(&mut entry.items, spare),
            bytes: std::mem::take(&mut entry.bytes),
            over,
        }
    })
}

/// Sets what queue `id` can take before it overflows (`room`: messages,
/// bytes, counting what its slot holds), and whether to wake it at every
/// arrival (`eager`: in push mode, ready to push).
pub fn arm(slot: u32, id: u64, room: (usize, usize), eager: bool) {
    BOARD.with_borrow_mut(|b| {
        let Some(entry) = b.slot(slot, id) else {
            return;
        };
        let held = (entry.items.len(), entry.bytes);
        entry.room_messages = room.0.saturating_sub(held.0).min(u32::MAX as usize) as u32;
        entry.room_bytes = room.1.saturating_sub(held.1);
        if eager {
            entry.flags |= EAGER;
        } else {
            entry.flags &= !EAGER;
        }
        if eager && !entry.items.is_empty() && entry.flags & WOKEN == 0 {
            // Arrived since the queue last took: take them now.
            entry.flags |= WOKEN;
            if let Some(bell) = &entry.bell {
                ring_later(slot, id, bell);
            }
        }
    })
}

/// What this thread's board holds per queue: (client id, deliveries,
/// their queued bytes), for the queues whose slot holds any.
pub fn pending() -> Vec<(u64, usize, usize)> {
    BOARD.with_borrow(|b| {
        b.pages
            .iter()
            .flat_map(|p| p.iter())
            .filter(|s| s.id != 0 && !s.items.is_empty())
            .map(|s| (s.id, s.items.len(), s.bytes))
            .collect()
    })
}

/// Posts runs to the queues of this thread's board. Queues that would
/// overflow are woken (a wake only schedules the queue's task: no queue
/// code runs here), those ready to push are rung with the thread's others
/// ([`Ringer`]).
pub fn post(runs: Vec<Run>) {
    BOARD.with_borrow_mut(|b| {
        let mut copies = std::mem::take(&mut b.scratch);
        for run in &runs {
            let n = run.items.len();
            if n == 0 {
                continue;
            }
            // The copies first, back to back: each is a locked increment,
            // which would otherwise wait for the store of the previous
            // target's copy into its (cold) slot.
            copies.clear();
            copies.reserve(n * run.to.len());
            for _ in &run.to {
                copies.extend(run.items.iter().cloned());
            }
            let mut copies = copies.drain(..);
            for t in &run.to {
                let mine = copies.by_ref().take(n);
                let entry = match b.slot(t.slot, t.id) {
                    // The queue is gone, or will drop its client.
                    None => None,
                    Some(entry) if entry.flags & OVER != 0 => None,
                    Some(entry) => Some(entry),
                };
                let Some(entry) = entry else {
                    mine.for_each(drop);
                    continue;
                };
                let over = n > entry.room_messages as usize || run.bytes > entry.room_bytes;
                if over {
                    mine.for_each(drop);
                    entry.items = Vec::new();
                    entry.bytes = 0;
                    entry.flags |= OVER;
                } else {
                    if entry.items.is_empty() && n > 1 {
                        entry.items.reserve_exact(n);
                    }
                    entry.items.extend(mine);
                    entry.bytes += run.bytes;
                    entry.room_messages -= n as u32;
                    entry.room_bytes -= run.bytes;
                }
                if (over || entry.flags & EAGER != 0) && entry.flags & WOKEN == 0 {
                    entry.flags |= WOKEN;
                    if let Some(bell) = &entry.bell {
                        if over {
                            bell.wake_by_ref();
                        } else {
                            ring_later(t.slot, t.id, bell);
                        }
                    }
                }
            }
        }
        if copies.capacity() <= SCRATCH_MAX {
            b.scratch = copies;
        }
    });
    drop(runs);
}

/// The scratch vector of [`post`] is kept up to this many copies.
const SCRATCH_MAX: usize = 1 << 16;

/// The push wakes of one thread's board, given together by its [`Ringer`].
#[derive(Default)]
struct Ring {
    /// Queues to wake: (slot, client id).
    due: Vec<(u32, u64)>,
    /// The ringer's waker; none on a thread without a ringer, where wakes
    /// are given at once.
    ringer: Option<Waker>,
    started: bool,
    /// Publish batches this thread's publishers sent to the shards, and
    /// how many of them have since been delivered (or given up).
    routes_sent: u64,
    routes_done: u64,
    /// The ring waits until this many are done: as many as were in flight
    /// when the first of its queues was noted.
    ring_after: u64,
    /// Publishers holding their answers until the queues of the coming
    /// ring have pushed.
    answers: Vec<Waker>,
}

impl Ring {
    fn ready(&self) -> bool {
        self.routes_done >= self.ring_after
    }

    /// Queues are noted for the ringer's next ring.
    fn due(&self) -> bool {
        self.ringer.is_some() && !self.due.is_empty()
    }
}

thread_local! {
    static RING: RefCell<Ring> = RefCell::default();
}

/// Starts this thread's [`Ringer`] unless it runs already (a worker
/// arbiter's courier calls it as it starts).
pub fn start_ringer() {
    if !RING.with_borrow_mut(|r| std::mem::replace(&mut r.started, true)) {
        actix::spawn(Ringer::default());
    }
}

/// Wakes the queue listening on `slot` (whose `bell` this is) at the next
/// ring, or at once on a thread without a ringer.
fn ring_later(slot: u32, id: u64, bell: &Waker) {
    RING.with_borrow_mut(|r| {
        let Some(ringer) = &r.ringer else {
            bell.wake_by_ref();
            return;
        };
        if r.due.is_empty() {
            r.ring_after = r.routes_sent;
            // Woken either way: ready, it rings; not ready, it sets the
            // deadline of its wait.
            ringer.wake_by_ref();
        }
        r.due.push((slot, id));
    })
}

/// A publish batch of this thread in flight to the shards, held by the
/// publisher's pipeline until the batch is delivered or given up: a ring
/// waits until as many batches are done as were in flight when it was
/// first due, so that what the thread's publishers sent in one turn
/// reaches each subscriber in one write when the shards run on another
/// thread too.
pub struct RouteInFlight {
    /// Dropped on the thread that made it.
    _here: std::marker::PhantomData<*const ()>,
}

impl RouteInFlight {
    /// Counts a batch just sent.
    pub fn sent() -> RouteInFlight {
        RING.with_borrow_mut(|r| r.routes_sent += 1);
        RouteInFlight {
            _here: std::marker::PhantomData,
        }
    }
}

impl Drop for RouteInFlight {
    fn drop(&mut self) {
        let _ = RING.try_with(|r| {
            let mut r = r.borrow_mut();
            r.routes_done += 1;
            if !r.due.is_empty() && r.routes_done == r.ring_after {
                if let Some(ringer) = &r.ringer {
                    ringer.wake_by_ref();
                }
            }
        });
    }
}

/// Whether queues of this thread are due to be rung.
pub fn ring_due() -> bool {
    RING.with_borrow(Ring::due)
}

/// Holds a publisher's answers until the queues of the coming ring have
/// pushed: `waker` is woken then. False if no ring is due (answer now).
pub fn answer_after_ring(waker: &Waker) -> bool {
    RING.with_borrow_mut(|r| {
        if !r.due() {
            return false;
        }
        if !r.answers.last().is_some_and(|w| w.will_wake(waker)) {
            r.answers.push(waker.clone());
        }
        true
    })
}

/// Rings this thread's push wakes, as Redis writes its clients once per
/// turn of its event loop, after it has read every client that had sent
/// something: a post does not wake a push subscriber's queue but notes
/// it, and wakes the ringer, a task of the worker's own (started by its
/// courier). The ringer runs after the tasks that were ready then (the
/// other publishers of that turn among them) and wakes every noted queue
/// at once. What those publishers sent then reaches each subscriber
/// before it writes (`docs/PERFORMANCE.md`, "Push wakes rung together").
#[derive(Default)]
struct Ringer {
    /// The last ring's list, kept for the next one.
    spare: Vec<(u32, u64)>,
    /// Publishers to wake once the queues just rung have run.
    answers: Vec<Waker>,
    /// A ring waits for batches in flight at most [`RING_WAIT_MAX`] (a
    /// shard that is slow or being rebuilt holds back only its own
    /// messages): set while waiting.
    deadline: Option<std::pin::Pin<Box<tokio::time::Sleep>>>,
    waiting: bool,
}

/// How long a ring waits for its worker's batches in flight to the shards.
const RING_WAIT_MAX: std::time::Duration = std::time::Duration::from_millis(1);

impl Ringer {
    /// Whether the ring's wait passed [`RING_WAIT_MAX`] (registers the
    /// wake-up at the deadline if not).
    fn waited_long(&mut self, cx: &mut std::task::Context<'_>) -> bool {
        use std::future::Future;
        self.deadline
            .as_mut()
            .is_some_and(|d| d.as_mut().poll(cx).is_ready())
    }
}

impl std::future::Future for Ringer {
    type Output = ();

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<()> {
        let this = &mut *self;
        let (due, ready) = RING.with_borrow_mut(|r| {
            match &r.ringer {
                Some(w) if w.will_wake(cx.waker()) => {}
                _ => r.ringer = Some(cx.waker().clone()),
            }
            (!r.due.is_empty(), r.ready())
        });
        if due && (ready || (this.waiting && this.waited_long(cx))) {
            this.waiting = false;
            RING.with_borrow_mut(|r| {
                std::mem::swap(&mut r.due, &mut this.spare);
                std::mem::swap(&mut r.answers, &mut this.answers);
            });
        } else if due && !this.waiting {
            this.waiting = true;
            let until = tokio::time::Instant::now() + RING_WAIT_MAX;
            match &mut this.deadline {
                Some(d) => d.as_mut().reset(until),
                None => this.deadline = Some(Box::pin(tokio::time::sleep_until(until))),
            }
            let _ = this.waited_long(cx);
        }
        BOARD.with_borrow_mut(|b| b.ring(this.spare.drain(..)));
        // Woken after the queues, these run after them.
        this.answers.drain(..).for_each(Waker::wake);
        std::task::Poll::Pending
    }
}

impl Drop for Ringer {
    /// The thread stops: wake whatever is due, and give wakes at once from
    /// now on.
    fn drop(&mut self) {
        let (due, answers) = RING
            .try_with(|r| {
                let mut r = r.borrow_mut();
                r.ringer = None;
                (std::mem::take(&mut r.due), std::mem::take(&mut r.answers))
            })
            .unwrap_or_default();
        let _ = BOARD.try_with(|b| b.borrow_mut().ring(due.into_iter()));
        answers.into_iter().for_each(Waker::wake);
    }
}
