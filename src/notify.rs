//! The systemd notification protocol (`sd_notify`), for a `Type=notify`
//! unit: one datagram of `NAME=value` lines sent to the Unix socket named
//! by `$NOTIFY_SOCKET` (a path, or an abstract name when it starts with
//! `@`). Without `$NOTIFY_SOCKET` (not started by systemd) nothing is sent.
//!
//! The node sends `READY=1` once it accepts connections, `RELOADING=1` then
//! `READY=1` around a SIGHUP (reopening `log_file`), and `STOPPING=1` when
//! it starts draining.

use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::UnixDatagram;

/// Sends `state` (e.g. `"READY=1"`) to the service manager, if there is one.
/// Returns whether it was sent; failures are not fatal to the node.
pub fn notify(state: &str) -> io::Result<bool> {
    let Some(socket) = std::env::var_os("NOTIFY_SOCKET") else {
        return Ok(false);
    };
    let name = socket.as_bytes();
    if name.is_empty() {
        return Ok(false);
    }
    let sock = UnixDatagram::unbound()?;
    if let Some(abstract_name) = name.strip_prefix(b"@") {
        use std::os::linux::net::SocketAddrExt;
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(abstract_name)?;
        sock.send_to_addr(state.as_bytes(), &addr)?;
    } else {
        sock.send_to(state.as_bytes(), &socket)?;
    }
    Ok(true)
}
