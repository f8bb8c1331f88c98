//! The targets' `main` without AFL: replay inputs, or stress them.
//!
//! ```text
//! cargo run --release --bin decoder                      # replay seeds/decoder + corpus/decoder
//! cargo run --release --bin decoder -- PATH...           # replay these files/directories
//! cargo run --release --bin decoder -- --stress 60 [--seed N] [PATH...]
//! ```
//!
//! Replay walks directories recursively (an AFL++ output directory can be
//! given as it is: its bookkeeping files are just more inputs) and runs
//! every file through the target, reporting each that panics. `--stress`
//! is a coverage-less fallback fuzzer: it mutates the replayed inputs with
//! a seeded PRNG and a dictionary of protocol tokens for the given number of
//! seconds, and on a panic saves the input under `artifacts/<target>/`.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Tokens the stress mutator splices in.
const DICTIONARY: &[&[u8]] = &[
    b"get messages\r\n",
    b"set ",
    b"subscribe ",
    b"unsubscribe ",
    b"publish ",
    b"register ",
    b"retro_subscribe ",
    b"0 0 ",
    b" noreply",
    b"quit\r\n",
    b"stats\r\n",
    b"version\r\n",
    b"MESSAGE ",
    b"MESSAGE a 3\r\nhey\r\n",
    b"\r\n",
    b"\r",
    b"\n",
    b" ",
    b"-",
    b"0",
    b"1",
    b"63",
    b"64",
    b"65",
    b"255",
    b"256",
    b"257",
    b"4294967296",
    b"9223372036854775807",
    b"-9223372036854775808",
    b"18446744073709551615",
    b"18446744073709551616",
    b"\x00",
    b"\xff",
    // The Redis dialect (target `resp`).
    b"*",
    b"$",
    b"*1\r\n$4\r\nPING\r\n",
    b"SUBSCRIBE ",
    b"PUBLISH ",
    b"HELLO 3",
    b"QUIT\r\n",
    b"KRAKEN.RETROSUBSCRIBE ",
    b"\"",
    b"'",
    b"\\x41",
    b"48",
    b"49",
];

pub fn main(target: &str, check: fn(&[u8])) {
    let mut stress: Option<u64> = None;
    let mut seed: Option<u64> = None;
    let mut paths: Vec<PathBuf> = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--stress" => stress = Some(number(args.next(), "--stress SECS")),
            "--seed" => seed = Some(number(args.next(), "--seed N")),
            "-h" | "--help" => {
                eprintln!(
                    "usage: {target} [--stress SECS [--seed N]] [PATH...]\n\
                     replays PATHs (default: seeds/{target} and corpus/{target});\n\
                     with --stress, then mutates them for SECS seconds"
                );
                return;
            }
            _ => paths.push(PathBuf::from(arg)),
        }
    }
    if paths.is_empty() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        paths.push(root.join("seeds").join(target));
        paths.push(root.join("corpus").join(target));
    }

    let mut files = Vec::new();
    for path in &paths {
        collect(path, &mut files);
    }
    files.sort();

    let mut pool = Vec::new();
    let mut failed = 0usize;
    for file in &files {
        let Ok(data) = std::fs::read(file) else {
            continue;
        };
        if catch_unwind(AssertUnwindSafe(|| check(&data))).is_err() {
            eprintln!("FAILED: {}", file.display());
            failed += 1;
        }
        pool.push(data);
    }
    println!(
        "{target}: replayed {} inputs: {} passed, {failed} failed",
        files.len(),
        files.len() - failed
    );
    if failed > 0 {
        std::process::exit(1);
    }

    if let Some(secs) = stress {
        let seed = seed.unwrap_or_else(|| {
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64)
        });
        run_stress(target, check, pool, Duration::from_secs(secs), seed);
    }
}

fn number(arg: Option<String>, what: &str) -> u64 {
    arg.and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("expected {what}"))
}

/// Every file under `path` (or `path` itself); missing paths are skipped.
fn collect(path: &Path, out: &mut Vec<PathBuf>) {
    if path.is_file() {
        out.push(path.to_path_buf());
    } else if let Ok(entries) = std::fs::read_dir(path) {
        for entry in entries.flatten() {
            collect(&entry.path(), out);
        }
    }
}

/// xorshift64*: small, fast, and reproducible from its seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform-ish in `0..n` (`n > 0`).
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// Applies 1 to 8 random mutations to `data`.
fn mutate(rng: &mut Rng, data: &mut Vec<u8>, pool: &[Vec<u8>]) {
    const MAX_LEN: usize = 16 * 1024;
    for _ in 0..1 + rng.below(8) {
        let len = data.len();
        match rng.below(9) {
            0 if len > 0 => {
                let i = rng.below(len);
                data[i] ^= 1 << rng.below(8);
            }
            1 if len > 0 => {
                let i = rng.below(len);
                const BYTES: &[u8] = b"\r\n 0 9-\x00\xffMa";
                data[i] = BYTES[rng.below(BYTES.len())];
            }
            2 | 3 => {
                let token = DICTIONARY[rng.below(DICTIONARY.len())];
                let at = rng.below(len + 1);
                data.splice(at..at, token.iter().copied());
            }
            4 if len > 0 => {
                let at = rng.below(len);
                let n = 1 + rng.below((len - at).min(32));
                data.drain(at..at + n);
            }
            5 if len > 0 => {
                let at = rng.below(len);
                let n = 1 + rng.below((len - at).min(64));
                let copy = data[at..at + n].to_vec();
                let to = rng.below(len + 1);
                data.splice(to..to, copy);
            }
            6 if !pool.is_empty() => {
                let other = &pool[rng.below(pool.len())];
                let from = rng.below(other.len() + 1);
                let to = from + rng.below(other.len() - from + 1);
                let at = rng.below(len + 1);
                data.splice(at..at, other[from..to].iter().copied());
            }
            7 if len > 0 => data.truncate(rng.below(len)),
            _ => {
                let at = rng.below(len + 1);
                data.insert(at, rng.next() as u8);
            }
        }
        data.truncate(MAX_LEN);
    }
}

fn run_stress(target: &str, check: fn(&[u8]), mut pool: Vec<Vec<u8>>, time: Duration, seed: u64) {
    println!("{target}: stress for {}s, seed {seed}", time.as_secs());
    if pool.is_empty() {
        pool.push(Vec::new());
    }
    let mut rng = Rng(seed | 1);
    let start = Instant::now();
    let mut execs: u64 = 0;
    let mut input = Vec::new();
    while start.elapsed() < time {
        for _ in 0..256 {
            input.clear();
            input.extend_from_slice(&pool[rng.below(pool.len())]);
            mutate(&mut rng, &mut input, &pool);
            execs += 1;
            if catch_unwind(AssertUnwindSafe(|| check(&input))).is_err() {
                let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
                    .join("artifacts")
                    .join(target);
                let _ = std::fs::create_dir_all(&dir);
                let file = dir.join(format!("crash-{seed}-{execs}"));
                let _ = std::fs::write(&file, &input);
                eprintln!(
                    "{target}: CRASH after {execs} execs, input saved to {}: {:?}",
                    file.display(),
                    input.escape_ascii().to_string()
                );
                std::process::exit(1);
            }
            // Without coverage feedback, keep a random few mutants as seeds so
            // that mutations compound.
            if pool.len() < 4096 && rng.below(64) == 0 {
                pool.push(input.clone());
            }
        }
    }
    let secs = start.elapsed().as_secs_f64();
    println!(
        "{target}: {execs} execs in {secs:.0}s ({:.0}/s), no crash",
        execs as f64 / secs
    );
}
