//! The `kraken` binary: parses the command line (the original's
//! `-kraken <option> <value>` and `-config PATH` syntax), loads the
//! configuration, sets up logging and runs the node (or talks to a running
//! one over its control socket).
//!
//! # Layout
//! - `cli.rs`: the command line.
//! - `config.rs`: options from defaults, `etc/kraken.toml`, `-config`,
//!   `KRAKEN_<OPTION>` and `-kraken` pairs, with where each came from.
//! - `erlang_term.rs`: the original's Erlang-term config files.
//! - `logging.rs`: slog to console or `log_file`, text or JSON, level
//!   changeable at run time, `log_file` reopened on SIGHUP.
//! - `run.rs`: starting the node in the foreground, its signals (SIGHUP
//!   reopens `log_file`).
//! - `notify.rs`: telling systemd the node is ready (`sd_notify`).
//! - `daemon.rs`: `start` (the node in the background) and `stop`.
//! - `control_client.rs`: `status`, `change_log_level` and the dumps, asked
//!   of the running node over its control socket.

mod cli;
mod config;
mod control_client;
mod daemon;
mod erlang_term;
mod logging;
mod notify;
mod run;

/// mimalloc rather than glibc's malloc (Cargo.toml says why); build with
/// `--no-default-features` for the system allocator (heap profilers).
#[cfg(feature = "mimalloc")]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Gives the calling thread's freed memory back to the system (mimalloc
/// keeps the pages of an idle thread's heap otherwise).
#[cfg(feature = "mimalloc")]
fn trim_heap() {
    // SAFETY: mi_collect only walks the calling thread's own heap and the
    // allocator's arenas.
    unsafe { libmimalloc_sys::mi_collect(true) }
}

#[cfg(not(feature = "mimalloc"))]
use kraken_actors::node::trim_system_heap as trim_heap;

use std::collections::HashMap;
use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let cli = match cli::parse(args) {
        Ok(cli) => cli,
        Err(e) => {
            eprintln!("kraken: {e}\n\n{}", cli::usage());
            return ExitCode::from(2);
        }
    };
    if matches!(cli.command, cli::Command::Help) {
        println!("{}", cli::usage());
        return ExitCode::SUCCESS;
    }
    if matches!(cli.command, cli::Command::Version) {
        println!("kraken {}", kraken_actors::node::VERSION);
        return ExitCode::SUCCESS;
    }
    if let cli::Command::Bench(args) = &cli.command {
        return bench(args);
    }
    let env: HashMap<String, String> = std::env::vars().collect();
    let loaded = match config::load(&cli, &env) {
        Ok(loaded) => loaded,
        Err(e) => {
            eprintln!("kraken: configuration error: {e}");
            return ExitCode::from(2);
        }
    };
    match cli.command {
        cli::Command::Run => run::run(loaded),
        cli::Command::Start => daemon::start(&cli, &loaded.settings),
        cli::Command::Stop => daemon::stop(&loaded.settings),
        cli::Command::Status => control_client::status(&loaded.settings),
        cli::Command::ChangeLogLevel(level) => {
            control_client::change_log_level(&loaded.settings, level)
        }
        cli::Command::DumpQueues => control_client::dump(&loaded.settings, "dump_queues"),
        cli::Command::DumpQueueTopics(id) => {
            control_client::dump(&loaded.settings, &format!("dump_queue_topics {id}"))
        }
        cli::Command::DumpTopics => control_client::dump(&loaded.settings, "dump_topics"),
        cli::Command::Help | cli::Command::Version | cli::Command::Bench(_) => {
            unreachable!("handled above")
        }
    }
}

/// `kraken bench <scenario> [flags]`: runs the load generator built beside
/// this binary (`bench/README.md`; `bin/kraken bench` builds both).
fn bench(args: &[String]) -> ExitCode {
    let exe = std::env::current_exe()
        .map(|p| p.with_file_name("kraken-bench"))
        .unwrap_or_else(|_| "kraken-bench".into());
    if !exe.exists() {
        eprintln!(
            "kraken: {} is missing; build it with 'cargo build --release -p kraken-bench' \
             (bin/kraken bench does)",
            exe.display()
        );
        return ExitCode::from(2);
    }
    match std::process::Command::new(&exe).args(args).status() {
        Ok(status) => ExitCode::from(status.code().unwrap_or(1).clamp(0, 255) as u8),
        Err(e) => {
            eprintln!("kraken: cannot run {}: {e}", exe.display());
            ExitCode::from(2)
        }
    }
}
