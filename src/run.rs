//! `kraken run`: the node in the foreground until SIGTERM/SIGINT (which
//! drain it) or an escalated failure (which exits non-zero).

use std::process::ExitCode;

use actix::System;
use kraken_actors::supervisor::Shutdown;
use kraken_actors::{Node, Supervisor};
use slog::{crit, info};

use crate::config::Loaded;
use crate::logging;

pub fn run(loaded: Loaded) -> ExitCode {
    let settings = loaded.settings.clone();
    let (log, level) = match logging::build(&settings) {
        Ok(built) => built,
        Err(e) => {
            eprintln!("kraken: cannot open log_file: {e}");
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
        if let Err(e) = std::fs::write(path, format!("{}\n", std::process::id())) {
            crit!(log, "cannot write pid_file"; "path" => %path.display(), "error" => %e);
            return ExitCode::from(1);
        }
    }
    let node = Node::new(settings.clone(), log.clone(), level);
    let system = System::new();
    let started = system.block_on(async {
        let started = Supervisor::start(node.clone());
        if let Ok((sup, _, _)) = &started {
            let sup = sup.clone();
            actix::spawn(async move {
                wait_for_stop_signal().await;
                sup.do_send(Shutdown);
            });
        }
        started
    });
    if let Err(e) = started {
        crit!(log, "cannot listen"; "listen_ip" => %settings.listen_ip,
            "tcp_server_port" => settings.tcp_server_port, "error" => %e);
        eprintln!(
            "kraken: cannot listen on {}:{}: {e}",
            settings.listen_ip, settings.tcp_server_port
        );
        if let Some(path) = &settings.pid_file {
            let _ = std::fs::remove_file(path);
        }
        return ExitCode::from(1);
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

async fn wait_for_stop_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => return std::future::pending().await,
    };
    let mut int = match signal(SignalKind::interrupt()) {
        Ok(s) => s,
        Err(_) => return std::future::pending().await,
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
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
