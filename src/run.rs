//! `kraken run`: the node in the foreground until SIGTERM/SIGINT (which
//! drain it) or an escalated failure (which exits non-zero). SIGHUP reopens
//! `log_file` (for logrotate). Under systemd (`Type=notify`) it reports
//! `READY=1` once it accepts connections and `STOPPING=1` when it drains.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::process::ExitCode;

use actix::System;
use kraken_actors::supervisor::Shutdown;
use kraken_actors::{Node, Supervisor};
use slog::{crit, error, info, Logger};
use tokio::signal::unix::{signal, Signal, SignalKind};

use crate::config::Loaded;
use crate::logging::{self, LogFile};
use crate::notify::notify;

pub fn run(loaded: Loaded) -> ExitCode {
    // Until the handler below is in place (once the actor system runs), a
    // SIGHUP (a logrotate racing the start) must not kill the node.
    // SAFETY: setting a signal's disposition to SIG_IGN has no preconditions.
    unsafe { libc::signal(libc::SIGHUP, libc::SIG_IGN) };
    let settings = loaded.settings.clone();
    let logging::Log {
        logger: log,
        level,
        file: log_file,
    } = match logging::build(&settings) {
        Ok(built) => built,
        Err(e) => {
            eprintln!("kraken: {e}");
            return ExitCode::from(1);
        }
    };
    let effective: Vec<String> = loaded
        .sources
        .iter()
        .map(|(name, value, source)| format!("{name}={value} ({source})"))
        .collect();
    info!(log, "starting kraken"; "version" => kraken_actors::node::VERSION, "pid" => std::process::id());
    info!(log, "configuration"; "options" => effective.join(", "));
    for file in &loaded.files {
        info!(log, "configuration file read"; "path" => %file.display());
    }
    for warning in &loaded.warnings {
        slog::warn!(log, "configuration"; "note" => warning);
    }

    let files = raise_open_files_limit();
    // Each client costs one descriptor; keep some for the listener, logs, control.
    let capacity = files.saturating_sub(64) as usize;
    info!(log, "open files limit"; "limit" => files, "clients_possible" => capacity,
        "max_tcp_clients" => settings.max_tcp_clients);
    if capacity < settings.max_tcp_clients {
        slog::warn!(log, "max_tcp_clients exceeds what the open files limit allows; raise the hard limit (ulimit -Hn, LimitNOFILE=)";
            "max_tcp_clients" => settings.max_tcp_clients, "clients_possible" => capacity);
    }

    // The pid file exists before the node says it is accepting connections.
    if let Some(path) = &settings.pid_file {
        if let Err(e) = write_pid_file(path) {
            crit!(log, "cannot write pid_file"; "path" => %path.display(), "error" => %e);
            eprintln!("kraken: cannot write pid_file {}: {e}", path.display());
            return ExitCode::from(1);
        }
    }
    let node = Node::with_heap_trim(settings.clone(), log.clone(), level, crate::trim_heap);
    let system = System::new();
    let started = system.block_on(async {
        // Signals are taken over before the node starts, so a SIGHUP or
        // SIGTERM during start-up is not fatal.
        let signals = Signals::new();
        let started = Supervisor::start(node.clone());
        if let Ok((sup, addr, _)) = &started {
            if let Err(e) = notify(&format!("READY=1\nSTATUS=accepting connections on {addr}")) {
                slog::warn!(log, "cannot notify the service manager"; "error" => %e);
            }
            let sup = sup.clone();
            let log = log.clone();
            actix::spawn(async move {
                signals.serve(&log, log_file.as_deref()).await;
                let _ = notify("STOPPING=1");
                sup.do_send(Shutdown);
            });
        }
        started
    });
    if let Err(e) = started {
        crit!(log, "cannot listen"; "listen_ip" => %settings.listen_ip,
            "tcp_server_port" => settings.tcp_server_port, "error" => %e);
        eprintln!(
            "kraken: cannot start on {}:{}: {e}",
            settings.listen_ip, settings.tcp_server_port
        );
        if let Some(path) = &settings.pid_file {
            let _ = std::fs::remove_file(path);
        }
        // Exit at once: actors started before the failure must not run on
        // while the actor system is torn down.
        std::process::exit(1);
    }
    let result = system.run_with_code();
    if let Some(path) = &settings.pid_file {
        let _ = std::fs::remove_file(path);
    }
    // The control socket went with the system's tasks.
    let _ = std::fs::remove_file(settings.control_socket_path());
    match result {
        Ok(0) => {
            info!(log, "kraken stopped");
            ExitCode::SUCCESS
        }
        Ok(code) => {
            crit!(log, "kraken stopped: supervision gave up"; "exit_status" => code);
            ExitCode::from(code as u8)
        }
        Err(e) => {
            crit!(log, "kraken failed"; "error" => %e);
            ExitCode::from(1)
        }
    }
}

/// The signals `run` handles: SIGTERM and SIGINT stop the node, SIGHUP
/// reopens `log_file`.
struct Signals {
    term: Option<Signal>,
    int: Option<Signal>,
    hup: Option<Signal>,
}

impl Signals {
    fn new() -> Signals {
        Signals {
            term: signal(SignalKind::terminate()).ok(),
            int: signal(SignalKind::interrupt()).ok(),
            hup: signal(SignalKind::hangup()).ok(),
        }
    }

    /// Handles SIGHUPs until SIGTERM or SIGINT arrives.
    async fn serve(mut self, log: &Logger, log_file: Option<&LogFile>) {
        async fn next(s: &mut Option<Signal>) {
            match s {
                Some(s) => {
                    s.recv().await;
                }
                None => std::future::pending().await,
            }
        }
        loop {
            tokio::select! {
                _ = next(&mut self.term) => return,
                _ = next(&mut self.int) => return,
                _ = next(&mut self.hup) => reopen_log_file(log, log_file),
            }
        }
    }
}

/// SIGHUP: reopens `log_file` (logrotate moved it away), telling the
/// service manager it is reloading meanwhile.
fn reopen_log_file(log: &Logger, log_file: Option<&LogFile>) {
    let _ = notify("RELOADING=1");
    match log_file {
        Some(file) => {
            info!(log, "SIGHUP: reopening log_file"; "path" => %file.path().display());
            match file.reopen() {
                Ok(()) => {
                    info!(log, "SIGHUP: log_file reopened"; "path" => %file.path().display())
                }
                Err(e) => {
                    error!(log, "SIGHUP: cannot reopen log_file; still writing to the old one";
                    "path" => %file.path().display(), "error" => %e.error)
                }
            }
        }
        None => info!(log, "SIGHUP: no log_file to reopen (logging to stderr)"),
    }
    let _ = notify("READY=1");
}

/// Writes the pid to `path` (0644), never through a symbolic link.
fn write_pid_file(path: &Path) -> std::io::Result<()> {
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o644)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)?;
    writeln!(file, "{}", std::process::id())
}

/// Raises the soft limit on open files to the hard limit; returns the limit
/// now in force.
fn raise_open_files_limit() -> u64 {
    // SAFETY: getrlimit/setrlimit only read/write the struct we pass.
    unsafe {
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return 1024;
        }
        if lim.rlim_cur < lim.rlim_max {
            let wanted = libc::rlimit {
                rlim_cur: lim.rlim_max,
                rlim_max: lim.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &wanted) == 0 {
                return wanted.rlim_cur;
            }
        }
        lim.rlim_cur
    }
}
