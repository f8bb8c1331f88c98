//! The node's effective settings: every option of the original plus this
//! project's own (SPEC §3). Loading them from files, environment and command
//! line is the binary's job (`src/config.rs`); the actors only read them.

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

/// Log levels the node understands, as the original named them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum LogLevel {
    Debug,
    Info,
    Warn,
    Error,
}

impl LogLevel {
    pub fn parse(s: &str) -> Option<LogLevel> {
        match s.trim().to_ascii_lowercase().as_str() {
            "debug" => Some(LogLevel::Debug),
            "info" => Some(LogLevel::Info),
            "warn" | "warning" => Some(LogLevel::Warn),
            "error" => Some(LogLevel::Error),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            LogLevel::Debug => "debug",
            LogLevel::Info => "info",
            LogLevel::Warn => "warn",
            LogLevel::Error => "error",
        }
    }
}

/// How log lines are written (`log_format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// One line per event: time, level, message, `key: value` details.
    Text,
    /// One JSON object per line: `ts`, `level`, `msg` and every key-value.
    Json,
}

impl LogFormat {
    pub fn parse(s: &str) -> Option<LogFormat> {
        match s.trim().to_ascii_lowercase().as_str() {
            "text" => Some(LogFormat::Text),
            "json" => Some(LogFormat::Json),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            LogFormat::Text => "text",
            LogFormat::Json => "json",
        }
    }
}

/// Everything the node is configured with. `Default` is the built-in
/// defaults, equal to the original's where the option is the original's.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    // --- the original's options ---
    /// Address to listen on (`listen_ip`, default any).
    pub listen_ip: IpAddr,
    /// Port (`tcp_server_port`, default 12355; 0 picks a free one).
    pub tcp_server_port: u16,
    /// Connections beyond this are refused (`max_tcp_clients`, default 1000).
    pub max_tcp_clients: usize,
    /// Router shards (`num_router_shards`, default 4).
    pub num_router_shards: usize,
    /// Warn when one publish reaches this many subscribers (default 1000).
    pub router_min_fanout_to_warn: usize,
    /// Warn when one message names this many topics (default 1000).
    pub router_min_publish_to_topics_to_warn: usize,
    /// Retro buffer size per shard (default 10000).
    pub messages_stored_per_router_shard: usize,
    /// Write the OS pid here; removed on clean stop.
    pub pid_file: Option<PathBuf>,
    /// Log here instead of the console.
    pub log_file: Option<PathBuf>,
    /// Log level (default info); changeable while running.
    pub log_level: LogLevel,
    /// Log line format (`log_format`: text or json, default text).
    pub log_format: LogFormat,

    // --- this project's own ---
    /// Close a client silent for this long (`client_idle_timeout`, seconds, default 3600).
    pub client_idle_timeout: Duration,
    /// Longest command line (`max_line_bytes`, default 2048).
    pub max_line_bytes: usize,
    /// Largest data block (`max_request_bytes`, default 16 MiB).
    pub max_request_bytes: usize,
    /// Longest topic (`max_topic_bytes`, default 1024).
    pub max_topic_bytes: usize,
    /// Most messages queued for one client (`max_queue_messages`, default 100000).
    pub max_queue_messages: usize,
    /// Most payload bytes queued for one client (`max_queue_bytes`, default 64 MiB).
    pub max_queue_bytes: usize,
    /// Unix socket of the control channel (`control_socket`; default
    /// `/tmp/kraken-<port>.sock`).
    pub control_socket: Option<PathBuf>,
    /// Upstream nodes; non-empty makes this node a proxy (`upstreams`).
    pub upstreams: Vec<String>,
    /// Restarts allowed within `max_restart_seconds` before escalating (default 10).
    pub max_restarts: u32,
    /// The window for `max_restarts` (default 10 s).
    pub max_restart_seconds: Duration,
    /// Worker threads (arbiters) for connections; 0 = one per core.
    pub worker_threads: usize,
    /// Enables fault-injection commands for supervision tests (default off).
    pub fault_injection: bool,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            listen_ip: IpAddr::from([0, 0, 0, 0]),
            tcp_server_port: 12355,
            max_tcp_clients: 1000,
            num_router_shards: 4,
            router_min_fanout_to_warn: 1000,
            router_min_publish_to_topics_to_warn: 1000,
            messages_stored_per_router_shard: 10000,
            pid_file: None,
            log_file: None,
            log_level: LogLevel::Info,
            log_format: LogFormat::Text,
            client_idle_timeout: Duration::from_secs(3600),
            max_line_bytes: 2048,
            max_request_bytes: 16 * 1024 * 1024,
            max_topic_bytes: 1024,
            max_queue_messages: 100_000,
            max_queue_bytes: 64 * 1024 * 1024,
            control_socket: None,
            upstreams: Vec::new(),
            max_restarts: 10,
            max_restart_seconds: Duration::from_secs(10),
            worker_threads: 0,
            fault_injection: false,
        }
    }
}

impl Settings {
    /// The control socket path in effect.
    pub fn control_socket_path(&self) -> PathBuf {
        self.control_socket
            .clone()
            .unwrap_or_else(|| PathBuf::from(format!("/tmp/kraken-{}.sock", self.tcp_server_port)))
    }
}
