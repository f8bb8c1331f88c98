//! Fuzz harnesses for `kraken-protocol`.
//!
//! Each target is one function from arbitrary bytes to nothing, which panics
//! when an invariant of the protocol crate does not hold:
//!
//! - [`decoder::check`]: [`kraken_protocol::KrakenCodec`] fed arbitrary bytes
//!   in arbitrary chunkings (the chunk sizes come from the input's first
//!   bytes);
//! - [`bodies::check`]: `parse_publish_block`, `parse_topics` and
//!   `parse_retro_body` on arbitrary bytes, each against a small independent
//!   reference model;
//! - [`roundtrip::check`]: a `Response::Messages` built from arbitrary
//!   entries, encoded, read back as a memcached client reads it, and parsed
//!   again as a publish block;
//! - [`resp::check`]: [`kraken_protocol::resp::RespCodec`] (the Redis
//!   dialect) fed arbitrary bytes in arbitrary chunkings, against a
//!   reference framer.
//!
//! The binaries in `src/bin/` wrap them with [`fuzz_main!`]: an AFL++
//! harness when built with `--features afl` (as `cargo afl build` does), a
//! corpus replayer and seeded random stress driver otherwise ([`driver`]).

pub mod bodies;
pub mod decoder;
pub mod driver;
pub mod resp;
pub mod roundtrip;

/// Defines `main` for a fuzz target binary.
///
/// With the `afl` feature, `main` is AFL++'s persistent loop around
/// `$check`; without it, `main` is [`driver::main`]: replay files or
/// directories named on the command line (default: `seeds/<target>` and
/// `corpus/<target>`), or `--stress SECS` for coverage-less mutation.
#[macro_export]
macro_rules! fuzz_main {
    ($target:literal, $check:path) => {
        #[cfg(feature = "afl")]
        fn main() {
            afl::fuzz!(|data: &[u8]| {
                $check(data);
            });
        }

        #[cfg(not(feature = "afl"))]
        fn main() {
            $crate::driver::main($target, $check);
        }
    };
}

/// A cursor over fuzz input that never fails: past the end it yields zeros
/// and empty slices, so every input, however short, means something.
#[derive(Debug, Clone)]
pub struct Input<'a> {
    rest: &'a [u8],
}

impl<'a> Input<'a> {
    pub fn new(data: &'a [u8]) -> Self {
        Input { rest: data }
    }

    pub fn is_empty(&self) -> bool {
        self.rest.is_empty()
    }

    /// The next byte, or 0 past the end.
    pub fn byte(&mut self) -> u8 {
        match self.rest.split_first() {
            Some((&b, rest)) => {
                self.rest = rest;
                b
            }
            None => 0,
        }
    }

    /// Up to `n` next bytes (fewer at the end).
    pub fn take(&mut self, n: usize) -> &'a [u8] {
        let (head, rest) = self.rest.split_at(n.min(self.rest.len()));
        self.rest = rest;
        head
    }

    /// Everything left.
    pub fn rest(self) -> &'a [u8] {
        self.rest
    }
}
