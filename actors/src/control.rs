//! The control channel: a Unix socket on which `bin/kraken status|stop|
//! change_log_level|dump_queues|dump_queue_topics|dump_topics` talk to a
//! running node (the original used Erlang distribution for this).
//!
//! Pubsub clients cannot reach it: it is not on the TCP port, the socket file
//! is created owner-only (mode 0600), and a peer whose uid is neither the
//! node's nor root's is refused even if the file's mode was widened.
//!
//! # Where it lives
//!
//! Other local users must not be able to take the socket's name first (and
//! so answer the control commands in the node's place) or point it
//! elsewhere. By default the socket is `kraken-<port>.sock` in the *runtime
//! directory* ([`default_runtime_dir`]: `$RUNTIME_DIRECTORY` under systemd,
//! else `$XDG_RUNTIME_DIR/kraken`, else `/tmp/kraken-<uid>`; option
//! `runtime_dir`), which [`ensure_private_dir`] creates mode 0700 and
//! refuses unless it is a real directory (not a symlink) owned by the
//! node's user and writable by no one else. A `control_socket` set
//! explicitly must sit in a directory owned by the node's user or root and
//! writable by no one else, or sticky (as `/tmp`); a symlink or another
//! user's file at the path is refused. Control clients check, with
//! `SO_PEERCRED`, that the process answering on the socket runs as their
//! own user or root ([`check_peer`]), and the node checks its callers the
//! same way.
//!
//! # Protocol
//!
//! One request per connection: a line such as `status`, `stop`,
//! `change_log_level debug`, `dump_queues`, `dump_queue_topics 7` or
//! `dump_topics`. The reply is a first line `OK` or `ERROR <why>`, the body
//! (zero or more lines), and a last line `END`; then the node closes the
//! connection. A reply whose last line is not `END` was cut short.
//!
//! # The socket file
//!
//! At start a file already at the path is removed if it is a socket nobody
//! answers on (left by a node that died); a live one stops start-up, so two
//! nodes never share a control socket. The file is removed when the node
//! stops (when the actix system's tasks are dropped), unless another node
//! replaced it meanwhile.

use std::fmt::Write as _;
use std::io;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use actix::Recipient;
use slog::{info, warn};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};

use crate::client::FastMap;
use crate::clients::{DumpQueues, QueueTopics, DUMP_QUEUES_HEADER};
use crate::courier::Pending;
use crate::env::Env;
use crate::node::{Node, VERSION};
use crate::settings::LogLevel;
use crate::shard::DumpTopics;
use crate::supervision::Shutdown;

/// The longest request line the node reads.
pub const MAX_REQUEST_BYTES: u64 = 4096;
/// How long a control client may take to send its request.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// The reply's last line.
pub const END: &[u8] = b"END";

/// Starts serving the control socket at `node.settings.control_socket_path()`.
pub fn start(env: Arc<Env>, supervisor: Recipient<Shutdown>) -> io::Result<()> {
    let node = env.node.clone();
    let path = node.settings.control_socket_path();
    if node.settings.control_socket.is_none() {
        ensure_private_dir(&node.settings.runtime_dir_path())?;
    } else {
        check_socket_dir(&path)?;
    }
    let (listener, file) = bind(&path)?;
    info!(node.log, "control socket ready"; "path" => %path.display());
    actix::spawn(async move {
        // Dropped with the system's tasks when the node stops: removes the file.
        let file = file;
        loop {
            match listener.accept().await {
                Ok((stream, _)) => {
                    actix::spawn(serve(env.clone(), supervisor.clone(), file.uid, stream));
                }
                Err(e) => {
                    warn!(node.log, "control socket accept failed"; "error" => %e);
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    });
    Ok(())
}

/// The socket file this node created; removes it when dropped, if it is
/// still the same file.
struct SocketFile {
    path: PathBuf,
    dev: u64,
    ino: u64,
    /// The file's owner: the uid control clients must have (or root).
    uid: u32,
}

impl Drop for SocketFile {
    fn drop(&mut self) {
        if let Ok(meta) = std::fs::symlink_metadata(&self.path) {
            if meta.dev() == self.dev && meta.ino() == self.ino {
                let _ = std::fs::remove_file(&self.path);
            }
        }
    }
}

/// Binds the control socket, removing a stale one first; owner-only.
fn bind(path: &Path) -> io::Result<(UnixListener, SocketFile)> {
    let shown = path.display();
    let error = |kind: io::ErrorKind, why: String| io::Error::new(kind, why);
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        if meta.file_type().is_symlink() {
            return Err(error(
                io::ErrorKind::PermissionDenied,
                format!("control socket {shown} is a symlink; refusing to follow it"),
            ));
        }
        if meta.uid() != euid() {
            return Err(error(
                io::ErrorKind::PermissionDenied,
                format!(
                    "control socket {shown} belongs to uid {}, not to this node's user (uid {}); \
                     refusing it",
                    meta.uid(),
                    euid()
                ),
            ));
        }
        if !meta.file_type().is_socket() {
            return Err(error(
                io::ErrorKind::AlreadyExists,
                format!("control socket {shown} exists and is not a socket; remove it or set control_socket"),
            ));
        }
        match std::os::unix::net::UnixStream::connect(path) {
            Ok(_) => {
                return Err(error(
                    io::ErrorKind::AddrInUse,
                    format!("control socket {shown} is in use by another running node; stop it or set control_socket"),
                ))
            }
            // Nobody answers: a dead node's leftover.
            Err(_) => std::fs::remove_file(path).map_err(|e| {
                error(e.kind(), format!("cannot remove stale control socket {shown}: {e}"))
            })?,
        }
    }
    let std_listener = std::os::unix::net::UnixListener::bind(path).map_err(|e| {
        error(
            e.kind(),
            format!("cannot create control socket {shown}: {e}"),
        )
    })?;
    let meta = std::fs::symlink_metadata(path)?;
    let file = SocketFile {
        path: path.to_path_buf(),
        dev: meta.dev(),
        ino: meta.ino(),
        uid: meta.uid(),
    };
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    std_listener.set_nonblocking(true)?;
    Ok((UnixListener::from_std(std_listener)?, file))
}

/// This process's effective uid.
pub fn euid() -> u32 {
    // SAFETY: geteuid cannot fail and touches no memory.
    unsafe { libc::geteuid() }
}

pub use crate::settings::default_runtime_dir;

/// Makes sure `dir` is a directory only this process's user can write:
/// creates it (mode 0700, not its parents) if missing, then refuses it
/// unless it is a real directory, not a symlink, owned by the effective
/// uid, without group or other write permission.
pub fn ensure_private_dir(dir: &Path) -> io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    let shown = dir.display();
    if let Err(e) = std::fs::DirBuilder::new().mode(0o700).create(dir) {
        if e.kind() != io::ErrorKind::AlreadyExists {
            return Err(io::Error::new(
                e.kind(),
                format!("cannot create runtime directory {shown}: {e}"),
            ));
        }
    }
    let refuse = |why: String| {
        Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!("runtime directory {shown} {why}; refusing it (set runtime_dir)"),
        ))
    };
    let meta = std::fs::symlink_metadata(dir)?;
    if meta.file_type().is_symlink() {
        return refuse("is a symlink".into());
    }
    if !meta.is_dir() {
        return refuse("is not a directory".into());
    }
    if meta.uid() != euid() {
        return refuse(format!(
            "belongs to uid {}, not to this user (uid {})",
            meta.uid(),
            euid()
        ));
    }
    if meta.mode() & 0o022 != 0 {
        return refuse(format!(
            "is writable by others (mode {:o})",
            meta.mode() & 0o7777
        ));
    }
    Ok(())
}

/// Refuses an explicitly set control socket whose directory someone else
/// could write to: the directory must belong to this user or root and be
/// writable by no one else, unless it is sticky (as `/tmp`, where others
/// cannot remove or rename this user's files).
fn check_socket_dir(socket: &Path) -> io::Result<()> {
    let dir = match socket.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let Ok(meta) = std::fs::metadata(dir) else {
        // bind reports the missing directory.
        return Ok(());
    };
    let sticky = meta.mode() & 0o1000 != 0;
    let owner_ok = meta.uid() == euid() || meta.uid() == 0;
    if !owner_ok || (meta.mode() & 0o022 != 0 && !sticky) {
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!(
                "control socket directory {} (uid {}, mode {:o}) can be written by other users; \
                 refusing it",
                dir.display(),
                meta.uid(),
                meta.mode() & 0o7777
            ),
        ));
    }
    Ok(())
}

/// The uid of the process at the other end of a Unix socket (`SO_PEERCRED`).
pub fn peer_uid(fd: std::os::fd::BorrowedFd<'_>) -> io::Result<u32> {
    use std::os::fd::AsRawFd;
    let mut cred = libc::ucred {
        pid: 0,
        uid: 0,
        gid: 0,
    };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: `cred` and `len` are valid for writes of the sizes given, and
    // `fd` is an open socket for the duration of the call.
    let rc = unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&mut cred as *mut libc::ucred).cast(),
            &mut len,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(cred.uid)
}

/// The rule both ends apply: a control peer must run as this process's
/// user or as root.
pub fn check_peer(peer_uid: u32) -> Result<(), String> {
    if peer_uid == euid() || peer_uid == 0 {
        Ok(())
    } else {
        Err(format!(
            "the peer runs as uid {peer_uid}, neither this user (uid {}) nor root",
            euid()
        ))
    }
}

/// Answers one control connection.
async fn serve(env: Arc<Env>, supervisor: Recipient<Shutdown>, owner: u32, stream: UnixStream) {
    let allowed = stream
        .peer_cred()
        .map(|c| c.uid() == owner || c.uid() == 0)
        .unwrap_or(false);
    let (read, mut write) = stream.into_split();
    let reply = if !allowed {
        error_reply("permission denied: not the node's user")
    } else {
        let mut line = Vec::new();
        let mut reader = BufReader::new(read).take(MAX_REQUEST_BYTES);
        match tokio::time::timeout(REQUEST_TIMEOUT, reader.read_until(b'\n', &mut line)).await {
            Ok(Ok(_)) if line.ends_with(b"\n") => {
                let request = String::from_utf8_lossy(&line);
                execute(&env, &supervisor, request.trim()).await
            }
            _ => error_reply("expected one request line"),
        }
    };
    let _ = write.write_all(&reply).await;
    let _ = write.shutdown().await;
}

fn error_reply(why: &str) -> Vec<u8> {
    format!("ERROR {why}\nEND\n").into_bytes()
}

fn ok_reply(body: &[u8]) -> Vec<u8> {
    let mut reply = Vec::with_capacity(body.len() + 8);
    reply.extend_from_slice(b"OK\n");
    reply.extend_from_slice(body);
    reply.extend_from_slice(END);
    reply.push(b'\n');
    reply
}

/// Runs one control request; returns the whole reply.
async fn execute(env: &Env, supervisor: &Recipient<Shutdown>, request: &str) -> Vec<u8> {
    let node = &env.node;
    let mut words = request.split_ascii_whitespace();
    let command = words.next().unwrap_or("");
    let arg = words.next();
    if words.next().is_some() {
        return error_reply(&format!("too many arguments to {command}"));
    }
    match (command, arg) {
        ("status", None) => ok_reply(status(env).as_bytes()),
        ("stop", None) => {
            info!(node.log, "stop requested on the control socket");
            supervisor.do_send(Shutdown);
            ok_reply(format!("pid {}\n", std::process::id()).as_bytes())
        }
        ("change_log_level", Some(level)) => match LogLevel::parse(level) {
            Some(level) => ok_reply(change_log_level(node, level).as_bytes()),
            None => error_reply(&format!(
                "unknown log level '{level}'; expected debug, info, warn or error"
            )),
        },
        ("dump_queues", None) => ok_reply(dump_queues(env).await.as_bytes()),
        ("dump_queue_topics", Some(id)) => match dump_queue_topics(env, id).await {
            Some(body) => ok_reply(&body),
            None => error_reply(&format!("no client queue with id {id}")),
        },
        ("dump_topics", None) => ok_reply(&dump_topics(env).await),
        _ => error_reply(&format!(
            "unknown request '{request}'; expected status, stop, change_log_level LEVEL, \
             dump_queues, dump_queue_topics ID or dump_topics"
        )),
    }
}

/// `name value` lines about the running node.
fn status(env: &Env) -> String {
    let node = &env.node;
    let addr = env.local_addr;
    let mut out = String::new();
    let _ = writeln!(out, "pid {}", std::process::id());
    let _ = writeln!(out, "addr {addr}");
    let _ = writeln!(out, "version {VERSION}");
    let _ = writeln!(out, "uptime {}", node.started.elapsed().as_secs());
    let _ = writeln!(
        out,
        "clients {}",
        node.counters.current_connections.load(Ordering::Relaxed)
    );
    let _ = writeln!(out, "max_tcp_clients {}", node.settings.max_tcp_clients);
    let _ = writeln!(out, "log_level {}", node.level.get().as_str());
    out
}

fn change_log_level(node: &Node, level: LogLevel) -> String {
    let before = node.level.get();
    // Log where the line is let through: before raising the level, after
    // lowering it.
    if level > LogLevel::Info {
        info!(node.log, "log level changed"; "from" => before.as_str(), "to" => level.as_str());
    }
    node.level.set(level);
    if level <= LogLevel::Info {
        info!(node.log, "log level changed"; "from" => before.as_str(), "to" => level.as_str());
    }
    format!("from {} to {}\n", before.as_str(), level.as_str())
}

/// One tab-separated line per client queue, after [`DUMP_QUEUES_HEADER`].
async fn dump_queues(env: &Env) -> String {
    // What the delivery boards hold, not yet taken by the queues.
    let boards = futures_util::future::join_all(env.couriers.iter().map(|c| c.send(Pending))).await;
    let mut posted: FastMap<u64, (usize, usize)> = FastMap::default();
    for (id, n, bytes) in boards.into_iter().flatten().flatten() {
        posted.insert(id, (n, bytes));
    }
    let lines = env
        .clients
        .send(DumpQueues(posted))
        .await
        .unwrap_or_default();
    format!("{DUMP_QUEUES_HEADER}\n{lines}")
}

/// One client's topics, one a line, sorted; `None` if no such client.
async fn dump_queue_topics(env: &Env, id: &str) -> Option<Vec<u8>> {
    let id: u64 = id.parse().ok()?;
    let mut topics = env.clients.send(QueueTopics(id)).await.ok()??;
    topics.sort();
    let mut out = Vec::new();
    for t in topics {
        out.extend_from_slice(&t);
        out.push(b'\n');
    }
    Some(out)
}

/// `topic\tcount` lines, most subscribers first (ties by name).
async fn dump_topics(env: &Env) -> Vec<u8> {
    let asks: Vec<_> = env
        .router
        .shards()
        .iter()
        .map(|s| s.send(DumpTopics))
        .collect();
    let mut all: Vec<(bytes::Bytes, usize)> = futures_util::future::join_all(asks)
        .await
        .into_iter()
        .flatten()
        .flatten()
        .collect();
    all.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    let mut out = Vec::new();
    for (topic, count) in all {
        out.extend_from_slice(&topic);
        out.extend_from_slice(format!("\t{count}\n").as_bytes());
    }
    out
}

/// A control reply, split.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// `OK`: the body lines' bytes (each ending in `\n`).
    Ok(Vec<u8>),
    /// `ERROR <why>`.
    Error(String),
}

/// Splits a whole reply as read up to EOF; `None` if it is malformed or was
/// cut short (no `END` line last).
pub fn parse_reply(reply: &[u8]) -> Option<Reply> {
    let rest = reply.strip_suffix(b"\n")?;
    let body_end = match rest.iter().rposition(|&b| b == b'\n') {
        Some(i) if &rest[i + 1..] == END => i + 1,
        _ => return None,
    };
    let first_end = reply.iter().position(|&b| b == b'\n')?;
    let first = &reply[..first_end];
    if first == b"OK" {
        Some(Reply::Ok(reply[first_end + 1..body_end].to_vec()))
    } else {
        let why = first.strip_prefix(b"ERROR ")?;
        Some(Reply::Error(String::from_utf8_lossy(why).into_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_round_trip() {
        assert_eq!(
            parse_reply(&ok_reply(b"a\t1\nEND\t2\n")),
            Some(Reply::Ok(b"a\t1\nEND\t2\n".to_vec()))
        );
        assert_eq!(parse_reply(&ok_reply(b"")), Some(Reply::Ok(Vec::new())));
        assert_eq!(
            parse_reply(&error_reply("no client queue with id 9")),
            Some(Reply::Error("no client queue with id 9".into()))
        );
    }

    #[test]
    fn a_cut_reply_is_refused() {
        assert_eq!(parse_reply(b""), None);
        assert_eq!(parse_reply(b"OK\n"), None);
        assert_eq!(parse_reply(b"OK\na\n"), None);
        assert_eq!(parse_reply(b"OK\nEN"), None);
        assert_eq!(parse_reply(b"HUH\nEND\n"), None);
    }
}
