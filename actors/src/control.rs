//! The control channel: a Unix socket (owner-only permissions) on which
//! `bin/kraken status|stop|change_log_level|dump_*` talk to a running node.
//! Pubsub clients cannot reach it: it is not on the TCP port.
//!
//! TODO(helper): implement.

use std::sync::Arc;

use actix::Addr;

use crate::node::Node;
use crate::supervisor::Supervisor;

/// Starts serving the control socket at `node.settings.control_socket_path()`.
pub fn start(node: Arc<Node>, supervisor: Addr<Supervisor>) -> std::io::Result<()> {
    let _ = (node, supervisor);
    Ok(())
}
