//! The client side of the control channel (`actors/src/control.rs` has the
//! node's side and the protocol): `status`, `change_log_level`,
//! `dump_queues`, `dump_queue_topics` and `dump_topics` ask the node that the
//! same options name, through its control socket.

use std::io::{ErrorKind, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use std::os::fd::AsFd;

use kraken_actors::control::{check_peer, parse_reply, peer_uid, Reply};
use kraken_actors::{LogLevel, Settings};

/// How long a control request may take (dumps of a big node included).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Why a control request got no answer.
#[derive(Debug)]
pub enum CtlError {
    /// Nothing answers on the socket: no node runs with these options.
    NotRunning(String),
    /// Something is there but the request failed.
    Failed(String),
}

/// Sends one request line to the node's control socket and returns its reply.
///
/// Before sending anything it checks who answers (`SO_PEERCRED`): a process
/// of another user (one that took the socket's name first) is refused.
pub fn request(path: &Path, line: &str, timeout: Duration) -> Result<Reply, CtlError> {
    let shown = path.display();
    let mut stream = UnixStream::connect(path).map_err(|e| match e.kind() {
        ErrorKind::NotFound => CtlError::NotRunning(format!("no control socket at {shown}")),
        ErrorKind::ConnectionRefused => CtlError::NotRunning(format!(
            "nothing answers on control socket {shown} (left by a node that died)"
        )),
        ErrorKind::PermissionDenied => CtlError::Failed(format!(
            "permission denied on control socket {shown}; run this as the node's user"
        )),
        _ => CtlError::Failed(format!("cannot connect to control socket {shown}: {e}")),
    })?;
    let failed = |e: std::io::Error| {
        CtlError::Failed(format!("control socket {shown}: {e} (is the node stuck?)"))
    };
    let peer = peer_uid(stream.as_fd()).map_err(failed)?;
    check_peer(peer).map_err(|why| {
        CtlError::Failed(format!(
            "control socket {shown}: {why}; not a node of this user, refusing to talk to it"
        ))
    })?;
    stream.set_read_timeout(Some(timeout)).map_err(failed)?;
    stream.set_write_timeout(Some(timeout)).map_err(failed)?;
    stream
        .write_all(format!("{line}\n").as_bytes())
        .map_err(failed)?;
    let mut reply = Vec::new();
    stream.read_to_end(&mut reply).map_err(failed)?;
    parse_reply(&reply).ok_or_else(|| {
        CtlError::Failed(format!(
            "control socket {shown}: the reply was cut short (did the node stop?)"
        ))
    })
}

/// [`request`] for a command-line command: an `OK` body, or the exit code
/// after saying what went wrong.
fn ask(settings: &Settings, line: &str) -> Result<Vec<u8>, ExitCode> {
    let path = settings.control_socket_path();
    match request(&path, line, REQUEST_TIMEOUT) {
        Ok(Reply::Ok(body)) => Ok(body),
        Ok(Reply::Error(why)) => {
            eprintln!("kraken: {why}");
            Err(ExitCode::from(1))
        }
        Err(CtlError::NotRunning(why)) => {
            eprintln!("Not running: {why}");
            Err(ExitCode::from(1))
        }
        Err(CtlError::Failed(why)) => {
            eprintln!("kraken: {why}");
            Err(ExitCode::from(1))
        }
    }
}

/// The `name value` lines of a `status` reply.
pub struct Status {
    pub pid: u32,
    pub fields: Vec<(String, String)>,
}

impl Status {
    pub fn parse(body: &[u8]) -> Option<Status> {
        let text = String::from_utf8_lossy(body);
        let fields: Vec<(String, String)> = text
            .lines()
            .filter_map(|l| l.split_once(' '))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let pid = fields.iter().find(|(k, _)| k == "pid")?.1.parse().ok()?;
        Some(Status { pid, fields })
    }

    pub fn get(&self, name: &str) -> &str {
        self.fields
            .iter()
            .find(|(k, _)| k == name)
            .map_or("?", |(_, v)| v)
    }

    /// One line for people.
    pub fn summary(&self, control_socket: &Path) -> String {
        format!(
            "pid {}, listening on {}, up {} s, {} clients (max {}), log level {}, version {}, control socket {}",
            self.pid,
            self.get("addr"),
            self.get("uptime"),
            self.get("clients"),
            self.get("max_tcp_clients"),
            self.get("log_level"),
            self.get("version"),
            control_socket.display()
        )
    }
}

/// `kraken status`: exit 0 and `Running: ...` if a node answers, else 1.
pub fn status(settings: &Settings) -> ExitCode {
    let path = settings.control_socket_path();
    let body = match request(&path, "status", REQUEST_TIMEOUT) {
        Ok(Reply::Ok(body)) => body,
        Ok(Reply::Error(why)) | Err(CtlError::Failed(why)) => {
            eprintln!("kraken: {why}");
            return ExitCode::from(1);
        }
        Err(CtlError::NotRunning(why)) => {
            println!("Not running: {why}");
            return ExitCode::from(1);
        }
    };
    match Status::parse(&body) {
        Some(status) => {
            println!("Running: {}", status.summary(&path));
            ExitCode::SUCCESS
        }
        None => {
            eprintln!(
                "kraken: control socket {}: a malformed status reply",
                path.display()
            );
            ExitCode::from(1)
        }
    }
}

/// `kraken change_log_level LEVEL`.
pub fn change_log_level(settings: &Settings, level: LogLevel) -> ExitCode {
    match ask(settings, &format!("change_log_level {}", level.as_str())) {
        Ok(body) => {
            let text = String::from_utf8_lossy(&body);
            println!("Changed log level {}", text.trim());
            ExitCode::SUCCESS
        }
        Err(code) => code,
    }
}

/// `kraken dump_queues`, `dump_queue_topics ID`, `dump_topics`: the
/// node's lines, as they are, on stdout.
pub fn dump(settings: &Settings, line: &str) -> ExitCode {
    match ask(settings, line) {
        Ok(body) => {
            let mut out = std::io::stdout().lock();
            if out.write_all(&body).and_then(|()| out.flush()).is_err() {
                return ExitCode::from(1);
            }
            ExitCode::SUCCESS
        }
        Err(code) => code,
    }
}
