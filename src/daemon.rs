//! `kraken start` and `kraken stop`: the node in the background.
//!
//! `start` runs this same executable as `kraken run` with the same options
//! (and environment) in a new session, with stdin from `/dev/null` and
//! stdout/stderr appended to `log_file`, or, without one, to the *console
//! file* `kraken-<port>.log` in the runtime directory (see
//! `kraken_actors::control`: a directory only the node's user can write).
//! Either is opened without following a symlink, and refused unless it is a
//! regular file of this user. It returns once the node answers `status` on
//! its control socket (and has written `pid_file`, if set), or fails with
//! what the node printed if it exits first or does not answer in time.
//!
//! `stop` asks the node to drain and stop over the control socket, then
//! waits until the process is gone (`run` removes `pid_file` on its way out).

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use kraken_actors::control::Reply;
use kraken_actors::Settings;

use crate::cli::Cli;
use crate::control_client::{request, CtlError, Status};

/// How long `start` waits for the node to accept connections.
pub const START_TIMEOUT: Duration = Duration::from_secs(20);
/// How long `stop` waits for the node to drain and exit.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(15);
/// How often both look.
const POLL_EVERY: Duration = Duration::from_millis(25);
/// How long one `status` probe may take while waiting.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// Where a background node's stdout and stderr go when `log_file` is unset.
pub fn console_file(settings: &Settings) -> PathBuf {
    settings
        .runtime_dir_path()
        .join(format!("kraken-{}.log", settings.tcp_server_port))
}

/// Opens a log for appending (mode 0600 if created) without following a
/// symlink at its path, and refuses anything but a regular file of this
/// user: a file planted by someone else must not receive the node's log.
pub fn open_log(path: &Path) -> std::io::Result<File> {
    use std::os::unix::fs::MetadataExt;
    let file = OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
        .map_err(|e| {
            if e.raw_os_error() == Some(libc::ELOOP) {
                std::io::Error::new(e.kind(), "it is a symlink; refusing to follow it")
            } else {
                e
            }
        })?;
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Err(std::io::Error::other("it is not a regular file"));
    }
    let me = kraken_actors::control::euid();
    if meta.uid() != me {
        return Err(std::io::Error::new(
            std::io::ErrorKind::PermissionDenied,
            format!(
                "it belongs to uid {}, not to this user (uid {me})",
                meta.uid()
            ),
        ));
    }
    Ok(file)
}

/// `kraken start`.
pub fn start(cli: &Cli, settings: &Settings) -> ExitCode {
    let socket = settings.control_socket_path();
    if let Ok(Reply::Ok(body)) = request(&socket, "status", PROBE_TIMEOUT) {
        let shown = Status::parse(&body).map_or_else(String::new, |s| s.summary(&socket));
        eprintln!("kraken: already running: {shown}");
        return ExitCode::from(1);
    }
    if settings.log_file.is_none() {
        if let Err(e) = kraken_actors::control::ensure_private_dir(&settings.runtime_dir_path()) {
            eprintln!("kraken: {e}");
            return ExitCode::from(1);
        }
    }
    let output_path = settings
        .log_file
        .clone()
        .unwrap_or_else(|| console_file(settings));
    let output = match open_log(&output_path) {
        Ok(f) => f,
        Err(e) => {
            eprintln!(
                "kraken: cannot open {} for the node's output: {e}",
                output_path.display()
            );
            return ExitCode::from(1);
        }
    };
    let offset = output.metadata().map_or(0, |m| m.len());
    let exe = match std::env::current_exe() {
        Ok(exe) => exe,
        Err(e) => {
            eprintln!("kraken: cannot find this executable to start the node: {e}");
            return ExitCode::from(1);
        }
    };
    let (stdout, stderr) = match (output.try_clone(), output.try_clone()) {
        (Ok(a), Ok(b)) => (a, b),
        (Err(e), _) | (_, Err(e)) => {
            eprintln!("kraken: {e}");
            return ExitCode::from(1);
        }
    };
    let mut command = Command::new(exe);
    command
        .arg("run")
        .args(cli.option_args())
        .stdin(Stdio::null())
        .stdout(stdout)
        .stderr(stderr);
    // SAFETY: setsid is async-signal-safe; it detaches the node from our
    // terminal and session so that closing it does not stop the node.
    unsafe {
        command.pre_exec(|| {
            if libc::setsid() == -1 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = match command.spawn() {
        Ok(child) => child,
        Err(e) => {
            eprintln!("kraken: cannot start the node: {e}");
            return ExitCode::from(1);
        }
    };
    match wait_started(&mut child, settings, &socket) {
        Ok(status) => {
            println!(
                "Started: {}, output in {}",
                status.summary(&socket),
                output_path.display()
            );
            ExitCode::SUCCESS
        }
        Err(why) => {
            let said = read_from(&output_path, offset);
            if !said.trim().is_empty() {
                eprintln!("{}", said.trim_end());
            }
            eprintln!("kraken: the node did not start: {why}");
            ExitCode::from(1)
        }
    }
}

/// Waits until `child` answers `status` on `socket` (and has written its
/// pid file); on failure, makes sure it is gone and says why.
fn wait_started(child: &mut Child, settings: &Settings, socket: &Path) -> Result<Status, String> {
    let deadline = Instant::now() + START_TIMEOUT;
    let mut answered: Option<Status> = None;
    loop {
        match child.try_wait() {
            Ok(Some(exit)) => {
                return Err(format!("it exited ({exit}) before accepting connections"))
            }
            Ok(None) => {}
            Err(e) => return Err(format!("cannot watch it: {e}")),
        }
        if answered.is_none() {
            if let Ok(Reply::Ok(body)) = request(socket, "status", PROBE_TIMEOUT) {
                answered = Status::parse(&body).filter(|s| s.pid == child.id());
            }
        }
        if let Some(status) = &answered {
            let pid_written = settings.pid_file.as_ref().is_none_or(|path| {
                std::fs::read_to_string(path)
                    .is_ok_and(|text| text.trim() == status.pid.to_string())
            });
            if pid_written {
                return Ok(answered.take().expect("answered"));
            }
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!(
                "it did not answer on control socket {} within {} s, so it was killed",
                socket.display(),
                START_TIMEOUT.as_secs()
            ));
        }
        std::thread::sleep(POLL_EVERY);
    }
}

/// What was appended to `path` after `offset` (at most the last 64 KiB).
fn read_from(path: &Path, offset: u64) -> String {
    let Ok(mut file) = File::open(path) else {
        return String::new();
    };
    let len = file.metadata().map_or(0, |m| m.len());
    let from = offset.max(len.saturating_sub(64 * 1024));
    let mut text = Vec::new();
    if file.seek(SeekFrom::Start(from)).is_ok() {
        let _ = file.read_to_end(&mut text);
    }
    String::from_utf8_lossy(&text).into_owned()
}

/// `kraken stop`.
pub fn stop(settings: &Settings) -> ExitCode {
    let socket = settings.control_socket_path();
    let pid = match request(&socket, "stop", PROBE_TIMEOUT) {
        Ok(Reply::Ok(body)) => Status::parse(&body).map(|s| s.pid),
        Ok(Reply::Error(why)) => {
            eprintln!("kraken: {why}");
            return ExitCode::from(1);
        }
        Err(CtlError::NotRunning(why)) => {
            println!("Not running: {why}");
            remove_stale_pid_file(settings);
            return ExitCode::SUCCESS;
        }
        Err(CtlError::Failed(why)) => {
            eprintln!("kraken: {why}");
            return ExitCode::from(1);
        }
    };
    let Some(pid) = pid else {
        eprintln!(
            "kraken: control socket {}: a malformed stop reply",
            socket.display()
        );
        return ExitCode::from(1);
    };
    println!("Stopping: pid {pid}");
    let deadline = Instant::now() + STOP_TIMEOUT;
    while process_alive(pid) {
        if Instant::now() >= deadline {
            eprintln!(
                "kraken: pid {pid} is still running {} s after it was asked to stop",
                STOP_TIMEOUT.as_secs()
            );
            return ExitCode::from(1);
        }
        std::thread::sleep(POLL_EVERY);
    }
    println!("Stopped.");
    ExitCode::SUCCESS
}

/// Removes `pid_file` if it names a process that no longer exists (a node
/// that died without cleaning up).
fn remove_stale_pid_file(settings: &Settings) {
    let Some(path) = &settings.pid_file else {
        return;
    };
    let Ok(text) = std::fs::read_to_string(path) else {
        return;
    };
    if let Ok(pid) = text.trim().parse::<u32>() {
        if !process_alive(pid) && std::fs::remove_file(path).is_ok() {
            println!("Removed stale pid_file {} (pid {pid})", path.display());
        }
    }
}

/// Whether process `pid` exists and is not a zombie.
pub fn process_alive(pid: u32) -> bool {
    let Ok(pid_t) = libc::pid_t::try_from(pid) else {
        return false;
    };
    // SAFETY: signal 0 only checks that the process exists.
    let exists = unsafe { libc::kill(pid_t, 0) } == 0
        || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM);
    if !exists {
        return false;
    }
    // A zombie (exited, not yet reaped by its parent) is not running.
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_none_or(|state| state != "Z"),
        Err(_) => true,
    }
}
