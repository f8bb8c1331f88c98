//! Fuzz target `resp`: see `kraken_fuzz::resp` for the input layout and the
//! invariants. `cargo afl build --release --features afl` makes it an AFL++
//! harness; a plain build replays inputs (see `kraken_fuzz::driver`).

kraken_fuzz::fuzz_main!("resp", kraken_fuzz::resp::check);
