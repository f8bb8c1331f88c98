//! The node's effective settings: every option of the original plus this
//! project's own. Loading them from files, environment and command line is
//! the binary's job (`src/config.rs`, on the `config` crate); the actors
//! only read them.
//!
//! Each option is defined once, in the `settings!` table below: its name
//! (the field), type, default, documentation and the function of
//! [`forms`] that checks a given value and turns it into the field's type.
//! From that one entry come the [`Settings`] struct (which derives serde's
//! `Deserialize`), its `Default`, the list [`OPTIONS`] and
//! [`Settings::rendered`]. The only other place an option is spelled is its
//! documented line in `etc/kraken.toml` (a test checks they agree).

pub mod forms;

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

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

/// Defines [`Settings`], its `Default`, [`OPTIONS`] and
/// [`Settings::rendered`] from one entry per option:
/// `doc; name: Type = default, "forms::checker";`.
macro_rules! settings {
    ($(
        $(#[$doc:meta])*
        $name:ident: $ty:ty = $default:expr, $form:tt;
    )*) => {
        /// Everything the node is configured with. `Default` is the
        /// built-in defaults, equal to the original's where the option is
        /// the original's. Deserializing fills what is missing from the
        /// defaults and rejects unknown options.
        #[derive(Debug, Clone, PartialEq, Deserialize)]
        #[serde(default, deny_unknown_fields)]
        pub struct Settings {
            $(
                $(#[$doc])*
                #[serde(deserialize_with = $form)]
                pub $name: $ty,
            )*
        }

        impl Default for Settings {
            fn default() -> Self {
                Settings { $($name: $default,)* }
            }
        }

        /// Every option, named as its [`Settings`] field, in the order
        /// start-up lists them.
        pub const OPTIONS: &[&str] = &[$(stringify!($name)),*];

        impl Settings {
            /// Every option (in [`OPTIONS`] order) with its value as text,
            /// as the start-up log shows it.
            pub fn rendered(&self) -> Vec<(&'static str, String)> {
                vec![$((stringify!($name), forms::Render::render(&self.$name))),*]
            }
        }
    };
}

settings! {
    // --- the original's options ---
    /// Address to listen on (`listen_ip`, default any).
    listen_ip: IpAddr = IpAddr::from([0, 0, 0, 0]), "forms::ip";
    /// Port (`tcp_server_port`, default 12355; 0 picks a free one).
    tcp_server_port: u16 = 12355, "forms::port";
    /// Connections beyond this are refused (`max_tcp_clients`, default 1000).
    max_tcp_clients: usize = 1000, "forms::count";
    /// Router shards (`num_router_shards`, default 4, at most 65536).
    num_router_shards: usize = 4, "forms::router_shards";
    /// Warn when one publish reaches this many subscribers (default 1000).
    router_min_fanout_to_warn: usize = 1000, "forms::count";
    /// Warn when one message names this many topics (default 1000).
    router_min_publish_to_topics_to_warn: usize = 1000, "forms::count";
    /// Retro buffer size per shard, in messages (default 10000).
    messages_stored_per_router_shard: usize = 10_000, "forms::count";
    /// Write the OS pid here; removed on clean stop.
    pid_file: Option<PathBuf> = None, "forms::path";
    /// Log here instead of the console.
    log_file: Option<PathBuf> = None, "forms::path";
    /// Log level (default info); changeable while running.
    log_level: LogLevel = LogLevel::Info, "forms::log_level";

    // --- this project's own ---
    /// Log line format (`log_format`: text or json, default text).
    log_format: LogFormat = LogFormat::Text, "forms::log_format";
    /// Close a client silent for this long (`client_idle_timeout`, seconds, default 3600).
    client_idle_timeout: Duration = Duration::from_secs(3600), "forms::seconds";
    /// Longest command line (`max_line_bytes`, default 2048).
    max_line_bytes: usize = 2048, "forms::count";
    /// Largest data block (`max_request_bytes`, default 16 MiB).
    max_request_bytes: usize = 16 * 1024 * 1024, "forms::count";
    /// Longest topic (`max_topic_bytes`, default 1024).
    max_topic_bytes: usize = 1024, "forms::count";
    /// Most messages queued for one client (`max_queue_messages`, default 100000).
    max_queue_messages: usize = 100_000, "forms::count";
    /// Most payload bytes queued for one client (`max_queue_bytes`, default 64 MiB).
    max_queue_bytes: usize = 64 * 1024 * 1024, "forms::count";
    /// Unix socket of the control channel (`control_socket`; default
    /// `/tmp/kraken-<port>.sock`).
    control_socket: Option<PathBuf> = None, "forms::path";
    /// Upstream nodes as `host:port`; non-empty makes this node a proxy (`upstreams`).
    upstreams: Vec<String> = Vec::new(), "forms::upstreams";
    /// Restarts allowed within `max_restart_seconds` before escalating (default 10).
    max_restarts: u32 = 10, "forms::restarts";
    /// The window for `max_restarts` (default 10 s).
    max_restart_seconds: Duration = Duration::from_secs(10), "forms::seconds";
    /// Threads (arbiters) for connections and router shards; 0 = one per
    /// core (at most 4096). A quarter of them (at least one) run the
    /// shards, the rest the connections (at least one).
    worker_threads: usize = 0, "forms::worker_threads";
    /// How many of those threads run only router shards (`router_threads`,
    /// 0 to 4096; default: a quarter, at least one). 0 runs the shards on
    /// the connection threads: no hop between threads on a publish's way,
    /// which on a small machine costs more than it spreads (on 2 cores,
    /// `worker_threads = 1` with `router_threads = 0` runs the node on one
    /// thread), but huge subscribes then delay the other clients more. At
    /// least one thread always runs connections (one more than
    /// `worker_threads` if need be).
    router_threads: Option<usize> = None, "forms::router_threads";
    /// Enables fault-injection commands for supervision tests (default off).
    fault_injection: bool = false, "forms::boolean";
    /// Address of the HTTP metrics and health listener (`metrics_listen`,
    /// `IP:PORT`; default off).
    metrics_listen: Option<SocketAddr> = None, "forms::socket_addr";
    /// Port of the Redis-protocol (RESP) listener (`resp_port`; 0, the
    /// default, means off).
    resp_port: u16 = 0, "forms::port";
    /// TCP keepalive idle time of client connections
    /// (`tcp_keepalive_seconds`, default 60 s; zero means off).
    tcp_keepalive_seconds: Duration = Duration::from_secs(60), "forms::seconds_or_off";
    /// Most topics one message may name (`max_topics_per_message`, default 10000).
    max_topics_per_message: usize = 10_000, "forms::count";
    /// Most subscriptions one client may hold (`max_subscriptions_per_client`,
    /// default 1000000).
    max_subscriptions_per_client: usize = 1_000_000, "forms::count";
    /// Most distinct topics the node holds (`max_topics_per_node`, default 10000000).
    max_topics_per_node: usize = 10_000_000, "forms::count";
    /// Most payload bytes the retro buffer of one router shard holds
    /// (`max_retro_bytes_per_router_shard`, default 64 MiB).
    max_retro_bytes_per_router_shard: usize = 64 * 1024 * 1024, "forms::count";
    /// Node-wide budget of buffered partial requests
    /// (`max_pending_request_bytes`, default 1 GiB).
    max_pending_request_bytes: usize = 1024 * 1024 * 1024, "forms::count";
    /// How long a closing connection may take to write its unwritten output
    /// (`close_write_timeout_seconds`, default 30 s).
    close_write_timeout_seconds: Duration = Duration::from_secs(30), "forms::seconds";
    /// Directory for the control socket and console log (`runtime_dir`;
    /// none, the default, means `$RUNTIME_DIRECTORY`, else a per-user 0700
    /// directory).
    runtime_dir: Option<PathBuf> = None, "forms::path";
    /// How long a poll that finds little queued (under 16 KiB; nothing,
    /// only if the last answer carried something) waits for more before
    /// it is answered (`poll_gather_ms`, 0 to 1000, default 1; 0 answers
    /// at once, as the original did). A client polling in a
    /// tight loop then gets more per answer, at less node CPU per
    /// delivery; one polling every second or two does not notice.
    poll_gather_ms: u32 = 1, "forms::poll_gather_ms";
}

impl Settings {
    /// The control socket path in effect.
    pub fn control_socket_path(&self) -> PathBuf {
        self.control_socket.clone().unwrap_or_else(|| {
            self.runtime_dir_path()
                .join(format!("kraken-{}.sock", self.tcp_server_port))
        })
    }

    /// The runtime directory in effect (`runtime_dir`, else the default:
    /// `$RUNTIME_DIRECTORY`, else `$XDG_RUNTIME_DIR/kraken`, else
    /// `/tmp/kraken-<uid>`; see [`default_runtime_dir`]).
    pub fn runtime_dir_path(&self) -> PathBuf {
        self.runtime_dir.clone().unwrap_or_else(default_runtime_dir)
    }
}

/// The runtime directory when `runtime_dir` is unset: `$RUNTIME_DIRECTORY`
/// (set by systemd's `RuntimeDirectory=`; the first, if it lists several),
/// else `$XDG_RUNTIME_DIR/kraken` (the login session's private directory),
/// else `/tmp/kraken-<euid>`. Only absolute paths from the environment
/// count.
pub fn default_runtime_dir() -> PathBuf {
    let from_env = |name: &str| {
        let value = std::env::var_os(name)?;
        let first = match value.to_str() {
            Some(text) => PathBuf::from(text.split(':').next().unwrap_or_default()),
            None => PathBuf::from(value),
        };
        first.is_absolute().then_some(first)
    };
    if let Some(dir) = from_env("RUNTIME_DIRECTORY") {
        return dir;
    }
    if let Some(dir) = from_env("XDG_RUNTIME_DIR") {
        return dir.join("kraken");
    }
    // SAFETY: geteuid cannot fail and touches no memory.
    let euid = unsafe { libc::geteuid() };
    PathBuf::from(format!("/tmp/kraken-{euid}"))
}

#[cfg(test)]
mod tests {
    use super::forms::{tagged, Raw, Tag, TUPLE_HEAD};
    use super::*;
    use serde::de::value::{Error, MapDeserializer, SeqDeserializer, StrDeserializer};
    use serde::de::IntoDeserializer;

    fn from_pairs(pairs: &[(&'static str, &'static str)]) -> Result<Settings, Error> {
        Settings::deserialize(MapDeserializer::new(pairs.iter().copied()))
    }

    #[test]
    fn nothing_given_is_the_defaults_and_every_option_is_listed_once() {
        assert_eq!(from_pairs(&[]).unwrap(), Settings::default());
        let rendered = Settings::default().rendered();
        let names: Vec<&str> = rendered.iter().map(|(o, _)| *o).collect();
        assert_eq!(names, OPTIONS);
        let mut unique = names.clone();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!(unique.len(), OPTIONS.len());
    }

    #[test]
    fn each_option_is_checked_and_unknown_ones_are_refused() {
        let s = from_pairs(&[("num_router_shards", "\u{0}text\u{0}8")]).unwrap();
        assert_eq!(s.num_router_shards, 8);
        let e = from_pairs(&[("num_router_shards", "8")]).unwrap_err();
        assert_eq!(e.to_string(), "must be an integer, not a string");
        let e = from_pairs(&[("no_such_option", "1")]).unwrap_err();
        assert!(
            e.to_string().contains("unknown field `no_such_option`"),
            "{e}"
        );
    }

    #[test]
    fn tagged_values_read_back_as_their_kind() {
        let read = |s: &str| Raw::deserialize(StrDeserializer::<Error>::new(s)).unwrap();
        assert_eq!(read(&tagged(Tag::Atom, "any")), Raw::Atom("any".into()));
        assert_eq!(read(&tagged(Tag::Text, "a:1")), Raw::Text("a:1".into()));
        assert_eq!(
            read(&tagged(Tag::Other, "<<1>>")),
            Raw::Other("<<1>>".into())
        );
        assert_eq!(read("plain"), Raw::Str("plain".into()));
        let tuple: Vec<String> = vec![TUPLE_HEAD.into(), tagged(Tag::Atom, "a")];
        let seq = SeqDeserializer::<_, Error>::new(tuple.into_iter());
        assert_eq!(
            Raw::deserialize(seq).unwrap(),
            Raw::Tuple(vec![Raw::Atom("a".into())])
        );
        let list = vec!["x".to_string()].into_deserializer();
        let list: Result<Raw, Error> = Raw::deserialize(list);
        assert_eq!(list.unwrap(), Raw::List(vec![Raw::Str("x".into())]));
    }
}
