//! The one panic guard. Every handler of every supervised actor runs its
//! body through [`guard`]: a panic (a bug) is caught there, the actor's
//! [`Supervised::failed`] turns it into that child's restart (or, for a
//! temporary child, its clean end), and its supervisor is told. A panic
//! therefore never kills an actor silently, never aborts the process, and
//! never leaves a sender waiting on a reply that will not come.

use std::any::Any;
use std::panic::{catch_unwind, AssertUnwindSafe};

use actix::Actor;

/// A caught panic, with its message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Panicked(pub String);

impl std::fmt::Display for Panicked {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// An actor that a supervisor watches.
pub trait Supervised: Actor {
    /// A handler of this actor panicked (the panic was caught by [`guard`]):
    /// reset what the panic may have left inconsistent and tell the
    /// supervisor, which restarts the child or ends it.
    fn failed(&mut self, ctx: &mut Self::Context, why: Panicked);
}

/// Runs `f`, catching a panic; a plain closure version of [`guard`] for
/// code that is not an actor's handler.
pub fn catch<T>(f: impl FnOnce() -> T) -> Result<T, Panicked> {
    catch_unwind(AssertUnwindSafe(f)).map_err(|e| Panicked(describe(&*e)))
}

/// Runs a handler body; on a panic calls `act.failed` and returns `None`.
pub fn guard<A: Supervised, T>(
    act: &mut A,
    ctx: &mut A::Context,
    f: impl FnOnce(&mut A, &mut A::Context) -> T,
) -> Option<T> {
    match catch_unwind(AssertUnwindSafe(|| f(&mut *act, &mut *ctx))) {
        Ok(v) => Some(v),
        Err(e) => {
            act.failed(ctx, Panicked(describe(&*e)));
            None
        }
    }
}

fn describe(e: &(dyn Any + Send)) -> String {
    if let Some(s) = e.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = e.downcast_ref::<String>() {
        s.clone()
    } else {
        "panic".to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn catch_returns_the_value_or_the_message() {
        assert_eq!(catch(|| 7), Ok(7));
        let caught = catch(|| -> u8 { panic!("boom {}", 1) });
        assert_eq!(caught, Err(Panicked("boom 1".into())));
    }
}
