//! Loads the node's [`Settings`] from every source of SPEC §3, later
//! sources winning:
//!
//! 1. the built-in defaults ([`Settings::default`]);
//! 2. `etc/kraken.toml`, the native format (read with the `config` crate),
//!    found under `$KRAKEN_HOME`, else in the nearest ancestor of the
//!    executable's directory that has one, else under the current
//!    directory; a missing file is fine;
//! 3. the file named with `-config PATH`: the original's Erlang-term file
//!    (`[{kraken, [{num_router_shards, 8}]}].`, `octopus` sections too) or
//!    TOML. `PATH.toml` and `PATH.config` are read as what they say; a
//!    `PATH` without either extension is tried as `PATH.config`, then as
//!    `PATH.toml`;
//! 4. environment variables `KRAKEN_<OPTION>` (upper case);
//! 5. command-line pairs `-kraken <option> <value>`.
//!
//! Options are named as the fields of [`Settings`]. Values from the
//! environment and the command line are read as Erlang terms when they parse
//! as one (`8`, `debug`, `{127,0,0,1}`, `["h:1","h:2"]`, `"quoted"`), and as
//! plain text otherwise (`127.0.0.1`, `/var/run/kraken.pid`, `h:1,h:2`).
//! An unknown option or a bad value is a [`ConfigError`] naming the option,
//! the value and where it came from; the node must not start with it.

use std::collections::HashMap;
use std::ffi::OsString;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use config::Source as _;
use kraken_actors::settings::{LogFormat, LogLevel, Settings};

use crate::cli::Cli;
use crate::erlang_term::{self, ConfigItem, Term, TermValue};

/// Every option, named as its [`Settings`] field, in the order start-up
/// lists them.
pub const OPTIONS: &[&str] = &[
    "listen_ip",
    "tcp_server_port",
    "max_tcp_clients",
    "num_router_shards",
    "router_min_fanout_to_warn",
    "router_min_publish_to_topics_to_warn",
    "messages_stored_per_router_shard",
    "pid_file",
    "log_file",
    "log_level",
    "log_format",
    "client_idle_timeout",
    "max_line_bytes",
    "max_request_bytes",
    "max_topic_bytes",
    "max_queue_messages",
    "max_queue_bytes",
    "control_socket",
    "upstreams",
    "max_restarts",
    "max_restart_seconds",
    "worker_threads",
    "fault_injection",
];

/// Options that some version of the original had and that mean nothing
/// here: accepted, so that an old config still starts, and reported in
/// [`Loaded::warnings`]. (`proxy_to_node` named an Erlang node to proxy to;
/// `upstreams` is its replacement.)
pub const IGNORED_OPTIONS: &[&str] = &["proxy_to_node"];

/// `KRAKEN_*` environment variables that are not options: the tooling uses
/// them (`KRAKEN_HOME` locates `etc/kraken.toml`; the others are kept for
/// `bin/kraken` and logging). Any other `KRAKEN_*` variable must name an
/// option, so that a misspelt one is not silently ignored.
pub const RESERVED_ENV: &[&str] = &["KRAKEN_HOME", "KRAKEN_LOG", "KRAKEN_BIN", "KRAKEN_PROFILE"];

/// The application sections of an Erlang config file that hold our options:
/// the original's name, and the name its README used.
const ERLANG_APPS: &[&str] = &["kraken", "octopus"];

/// Erlang config files may name other config files; this bounds the chain
/// (and so breaks cycles).
const MAX_INCLUDE_DEPTH: usize = 8;

/// Upper bounds that keep a typo from asking for absurd resources.
const MAX_ROUTER_SHARDS: i128 = 65_536;
const MAX_WORKER_THREADS: i128 = 4_096;

/// Where an option's effective value came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    Default,
    EtcFile(PathBuf),
    ConfigFile(PathBuf),
    Env(String),
    CommandLine,
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Default => f.write_str("default"),
            Source::EtcFile(p) | Source::ConfigFile(p) => write!(f, "{}", p.display()),
            Source::Env(var) => write!(f, "environment variable {var}"),
            Source::CommandLine => f.write_str("command line"),
        }
    }
}

/// A source and, for files, the line where the option was set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    pub source: Source,
    pub line: Option<u32>,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(line) => write!(f, "{}:{line}", self.source),
            None => write!(f, "{}", self.source),
        }
    }
}

/// Why the configuration cannot be loaded; start-up stops with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigError {
    /// `-config PATH` without an extension, and neither file exists.
    NotFound { tried: Vec<PathBuf> },
    /// A file exists (or was named explicitly) but cannot be read.
    Read { path: PathBuf, error: String },
    /// A file is not valid TOML / Erlang terms, or has the wrong shape.
    Syntax { path: PathBuf, message: String },
    /// An option that neither this node nor the original knows.
    UnknownOption {
        option: String,
        value: String,
        at: Location,
        /// A known option with a similar name, if there is one.
        suggestion: Option<&'static str>,
    },
    /// A known option with a value of the wrong type or out of range.
    BadValue {
        option: String,
        value: String,
        reason: String,
        at: Location,
    },
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigError::NotFound { tried } => {
                let names: Vec<String> = tried.iter().map(|p| p.display().to_string()).collect();
                write!(f, "config file not found: tried {}", names.join(" and "))
            }
            ConfigError::Read { path, error } => {
                write!(f, "cannot read config file {}: {error}", path.display())
            }
            ConfigError::Syntax { path, message } => write!(f, "{}: {message}", path.display()),
            ConfigError::UnknownOption {
                option,
                value,
                at,
                suggestion,
            } => {
                write!(f, "{at}: unknown option '{option}' (value {value})")?;
                let from_env = matches!(at.source, Source::Env(_));
                match suggestion {
                    Some(s) if from_env => {
                        write!(f, "; did you mean KRAKEN_{}?", s.to_ascii_uppercase())?
                    }
                    Some(s) => write!(f, "; did you mean '{s}'?")?,
                    None => write!(f, "; the options are {}", OPTIONS.join(", "))?,
                }
                if from_env {
                    write!(
                        f,
                        " (a KRAKEN_* variable must name an option or be one of {})",
                        RESERVED_ENV.join(", ")
                    )?;
                }
                Ok(())
            }
            ConfigError::BadValue {
                option,
                value,
                reason,
                at,
            } => write!(f, "{at}: bad value {value} for {option}: {reason}"),
        }
    }
}

impl std::error::Error for ConfigError {}

/// The loaded configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Loaded {
    pub settings: Settings,
    /// Every option (in [`OPTIONS`] order) with its effective value, as
    /// text, and where that value came from: start-up logs these.
    pub sources: Vec<(String, String, Source)>,
    /// The files read, in the order they were applied.
    pub files: Vec<PathBuf>,
    /// Things worth a log line that do not stop start-up (ignored options).
    pub warnings: Vec<String>,
}

/// Loads the configuration for `cli` (its `-config` file and `-kraken`
/// pairs) with `env` as the environment (`std::env::vars().collect()`).
pub fn load(cli: &Cli, env: &HashMap<String, String>) -> Result<Loaded, ConfigError> {
    let exe = std::env::current_exe().ok();
    let cwd = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("."));
    load_with_etc(cli, env, &etc_file_path(env, exe.as_deref(), &cwd))
}

/// Where `etc/kraken.toml` is: under `$KRAKEN_HOME` if that is set, else in
/// the nearest ancestor of the executable's directory that has one (the
/// binary lives in `target/release/`), else under `cwd`. The file need not
/// exist.
pub fn etc_file_path(env: &HashMap<String, String>, exe: Option<&Path>, cwd: &Path) -> PathBuf {
    let relative = Path::new("etc").join("kraken.toml");
    if let Some(home) = env.get("KRAKEN_HOME").filter(|h| !h.is_empty()) {
        return Path::new(home).join(relative);
    }
    let exe_dir = exe.and_then(Path::parent);
    for dir in exe_dir.into_iter().flat_map(Path::ancestors) {
        let candidate = dir.join(&relative);
        if candidate.is_file() {
            return candidate;
        }
    }
    cwd.join(relative)
}

/// [`load`] with the etc file given.
pub fn load_with_etc(
    cli: &Cli,
    env: &HashMap<String, String>,
    etc_file: &Path,
) -> Result<Loaded, ConfigError> {
    let mut b = Builder::new();

    match std::fs::read(etc_file) {
        Ok(bytes) => b.apply_toml(etc_file, &bytes, Source::EtcFile(etc_file.to_path_buf()))?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => {
            return Err(ConfigError::Read {
                path: etc_file.to_path_buf(),
                error: e.to_string(),
            })
        }
    }

    if let Some(path) = &cli.config_path {
        let (path, format) = resolve_config_path(path)?;
        let bytes = read_file(&path)?;
        match format {
            Format::Toml => b.apply_toml(&path, &bytes, Source::ConfigFile(path.clone()))?,
            Format::Erlang => b.apply_erlang(&path, &bytes, 0)?,
        }
    }

    let mut vars: Vec<(&String, &String)> = env
        .iter()
        .filter(|(k, _)| k.starts_with("KRAKEN_") && !RESERVED_ENV.contains(&k.as_str()))
        .collect();
    vars.sort();
    for (var, text) in vars {
        let option = var["KRAKEN_".len()..].to_ascii_lowercase();
        let at = Location {
            source: Source::Env(var.clone()),
            line: None,
        };
        b.apply(&option, &Value::from_text(text), at)?;
    }

    for (option, text) in &cli.pairs {
        let at = Location {
            source: Source::CommandLine,
            line: None,
        };
        b.apply(option, &Value::from_text(text), at)?;
    }

    Ok(b.finish())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Toml,
    Erlang,
}

/// Applies the naming rules of `-config PATH`.
fn resolve_config_path(path: &Path) -> Result<(PathBuf, Format), ConfigError> {
    match path.extension().and_then(|e| e.to_str()) {
        Some("toml") => Ok((path.to_path_buf(), Format::Toml)),
        Some("config") => Ok((path.to_path_buf(), Format::Erlang)),
        _ => {
            let erlang = with_suffix(path, ".config");
            if erlang.exists() {
                return Ok((erlang, Format::Erlang));
            }
            let toml = with_suffix(path, ".toml");
            if toml.exists() {
                return Ok((toml, Format::Toml));
            }
            Err(ConfigError::NotFound {
                tried: vec![erlang, toml],
            })
        }
    }
}

/// `path` with `suffix` appended (not replacing an extension: Erlang reads
/// `-config /etc/kraken.prod` as `/etc/kraken.prod.config`).
fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut s = OsString::from(path.as_os_str());
    s.push(suffix);
    PathBuf::from(s)
}

fn read_file(path: &Path) -> Result<Vec<u8>, ConfigError> {
    std::fs::read(path).map_err(|e| ConfigError::Read {
        path: path.to_path_buf(),
        error: e.to_string(),
    })
}

/// A file's text: UTF-8, or else Latin-1 (what older Erlang files were).
fn decode(bytes: &[u8]) -> String {
    match std::str::from_utf8(bytes) {
        Ok(s) => s.to_string(),
        Err(_) => bytes.iter().map(|&b| char::from(b)).collect(),
    }
}

/// A value as a source gave it, before it is checked against its option.
#[derive(Debug, Clone, PartialEq)]
enum Value {
    Int(i128),
    Float(f64),
    Bool(bool),
    /// A typed string: TOML `"x"`, Erlang `"x"` or `<<"x">>`.
    Str(String),
    /// An Erlang atom.
    Atom(String),
    /// Untyped text from the environment or the command line.
    Text(String),
    List(Vec<Value>),
    Tuple(Vec<Value>),
    /// Something no option takes (a TOML table, a non-UTF-8 binary), as
    /// it should be shown in a message.
    Other(String),
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fn seq(
            f: &mut fmt::Formatter<'_>,
            open: &str,
            items: &[Value],
            close: &str,
        ) -> fmt::Result {
            f.write_str(open)?;
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    f.write_str(",")?;
                }
                write!(f, "{item}")?;
            }
            f.write_str(close)
        }
        match self {
            Value::Int(i) => write!(f, "{i}"),
            Value::Float(x) => write!(f, "{x:?}"),
            Value::Bool(b) => write!(f, "{b}"),
            Value::Str(s) | Value::Text(s) => write!(f, "{s:?}"),
            Value::Atom(a) => f.write_str(a),
            Value::List(items) => seq(f, "[", items, "]"),
            Value::Tuple(items) => seq(f, "{", items, "}"),
            Value::Other(desc) => f.write_str(desc),
        }
    }
}

impl Value {
    fn from_term(term: &Term) -> Value {
        match &term.value {
            TermValue::Integer(i) => Value::Int(*i),
            TermValue::Float(x) => Value::Float(*x),
            TermValue::Atom(a) => Value::Atom(a.clone()),
            TermValue::String(s) => Value::Str(s.clone()),
            TermValue::Binary(b) => match String::from_utf8(b.clone()) {
                Ok(s) => Value::Str(s),
                Err(_) => Value::Other(term.to_string()),
            },
            TermValue::List(items) => Value::List(items.iter().map(Value::from_term).collect()),
            TermValue::Tuple(items) => Value::Tuple(items.iter().map(Value::from_term).collect()),
        }
    }

    fn from_toml(value: &config::Value) -> Value {
        use config::ValueKind as K;
        match &value.kind {
            K::Nil => Value::Other("nothing".to_string()),
            K::Boolean(b) => Value::Bool(*b),
            K::I64(i) => Value::Int(i128::from(*i)),
            K::I128(i) => Value::Int(*i),
            K::U64(u) => Value::Int(i128::from(*u)),
            K::U128(u) => i128::try_from(*u)
                .map(Value::Int)
                .unwrap_or_else(|_| Value::Other(u.to_string())),
            K::Float(x) => Value::Float(*x),
            K::String(s) => Value::Str(s.clone()),
            K::Table(_) => Value::Other("a table".to_string()),
            K::Array(items) => Value::List(items.iter().map(Value::from_toml).collect()),
        }
    }

    /// A value from the environment or the command line: an Erlang term if
    /// it parses as one, else plain text.
    fn from_text(text: &str) -> Value {
        match erlang_term::parse_value(text) {
            Ok(term) => Value::from_term(&term),
            Err(_) => Value::Text(text.to_string()),
        }
    }

    /// What kind of value this is, for "expected X, found Y".
    fn kind(&self) -> &'static str {
        match self {
            Value::Int(_) => "an integer",
            Value::Float(_) => "a float",
            Value::Bool(_) => "a boolean",
            Value::Str(_) | Value::Text(_) => "a string",
            Value::Atom(_) => "an atom",
            Value::List(_) => "a list",
            Value::Tuple(_) => "a tuple",
            Value::Other(_) => "something else",
        }
    }

    /// The text of strings, atoms and untyped text.
    fn text(&self) -> Option<&str> {
        match self {
            Value::Str(s) | Value::Atom(s) | Value::Text(s) => Some(s),
            _ => None,
        }
    }
}

/// Accumulates settings source by source, remembering who set what.
struct Builder {
    settings: Settings,
    origins: Vec<Source>,
    files: Vec<PathBuf>,
    warnings: Vec<String>,
}

impl Builder {
    fn new() -> Builder {
        Builder {
            settings: Settings::default(),
            origins: vec![Source::Default; OPTIONS.len()],
            files: Vec::new(),
            warnings: Vec::new(),
        }
    }

    fn apply(&mut self, option: &str, value: &Value, at: Location) -> Result<(), ConfigError> {
        if let Some(i) = OPTIONS.iter().position(|o| *o == option) {
            set_option(&mut self.settings, option, value).map_err(|reason| {
                ConfigError::BadValue {
                    option: option.to_string(),
                    value: value.to_string(),
                    reason,
                    at: at.clone(),
                }
            })?;
            self.origins[i] = at.source;
            Ok(())
        } else if IGNORED_OPTIONS.contains(&option) {
            self.warnings.push(format!(
                "{at}: option {option} of the original Kraken has no meaning here and is \
                 ignored (value {value}); see upstreams"
            ));
            Ok(())
        } else {
            Err(ConfigError::UnknownOption {
                option: option.to_string(),
                value: value.to_string(),
                at,
                suggestion: suggest(option),
            })
        }
    }

    fn apply_toml(&mut self, path: &Path, bytes: &[u8], source: Source) -> Result<(), ConfigError> {
        let text = decode(bytes);
        let table = config::File::from_str(&text, config::FileFormat::Toml)
            .collect()
            .map_err(|e| ConfigError::Syntax {
                path: path.to_path_buf(),
                message: tidy_toml_error(&e.to_string()),
            })?;
        let mut entries: Vec<(Option<u32>, &String, &config::Value)> = table
            .iter()
            .map(|(key, value)| (toml_key_line(&text, key), key, value))
            .collect();
        entries.sort_by_key(|(line, key, _)| (line.unwrap_or(u32::MAX), *key));
        for (line, key, value) in entries {
            let at = Location {
                source: source.clone(),
                line,
            };
            self.apply(key, &Value::from_toml(value), at)?;
        }
        self.files.push(path.to_path_buf());
        Ok(())
    }

    fn apply_erlang(&mut self, path: &Path, bytes: &[u8], depth: usize) -> Result<(), ConfigError> {
        let syntax = |e: erlang_term::ParseError| ConfigError::Syntax {
            path: path.to_path_buf(),
            message: e.to_string(),
        };
        let text = decode(bytes);
        let root = erlang_term::parse_file(&text).map_err(syntax)?;
        let items = erlang_term::config_items(&root, ERLANG_APPS).map_err(syntax)?;
        self.files.push(path.to_path_buf());
        for item in items {
            match item {
                ConfigItem::Include { path: name, pos } => {
                    if depth >= MAX_INCLUDE_DEPTH {
                        return Err(syntax(erlang_term::ParseError {
                            pos,
                            message: format!(
                                "config files include each other more than \
                                 {MAX_INCLUDE_DEPTH} deep (is there a cycle?)"
                            ),
                        }));
                    }
                    let mut included = PathBuf::from(&name);
                    if included.extension().and_then(|e| e.to_str()) != Some("config") {
                        included = with_suffix(&included, ".config");
                    }
                    let bytes = std::fs::read(&included).map_err(|e| {
                        syntax(erlang_term::ParseError {
                            pos,
                            message: format!(
                                "cannot read included config file {}: {e}",
                                included.display()
                            ),
                        })
                    })?;
                    self.apply_erlang(&included, &bytes, depth + 1)?;
                }
                ConfigItem::Setting {
                    option, value, pos, ..
                } => {
                    let at = Location {
                        source: Source::ConfigFile(path.to_path_buf()),
                        line: Some(pos.line),
                    };
                    self.apply(&option, &Value::from_term(&value), at)?;
                }
            }
        }
        Ok(())
    }

    fn finish(self) -> Loaded {
        let sources = OPTIONS
            .iter()
            .zip(self.origins)
            .map(|(option, source)| (option.to_string(), render(&self.settings, option), source))
            .collect();
        Loaded {
            settings: self.settings,
            sources,
            files: self.files,
            warnings: self.warnings,
        }
    }
}

/// The line of a top-level `key = ...` in TOML text (the `config` crate
/// keeps no positions).
fn toml_key_line(text: &str, key: &str) -> Option<u32> {
    let forms = [key.to_string(), format!("\"{key}\""), format!("'{key}'")];
    for (n, line) in text.lines().enumerate() {
        let line = line.trim_start();
        if line.starts_with('[') {
            break;
        }
        for form in &forms {
            if let Some(rest) = line.strip_prefix(form.as_str()) {
                let rest = rest.trim_start();
                if rest.starts_with('=') || rest.starts_with('.') {
                    return u32::try_from(n + 1).ok();
                }
            }
        }
    }
    None
}

/// The TOML parser's message on one line: "line 3, column 5: reason".
fn tidy_toml_error(message: &str) -> String {
    let mut lines = message.lines();
    let first = lines.next().unwrap_or_default();
    let reason = message
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| !l.is_empty() && !l.starts_with('|') && !l.contains(" | ") && !l.starts_with('^'))
        .unwrap_or_default();
    match first.strip_prefix("TOML parse error at ") {
        Some(place) if !reason.is_empty() && reason != first => format!("{place}: {reason}"),
        _ => message.split_whitespace().collect::<Vec<_>>().join(" "),
    }
}

/// The known option nearest to a misspelt one, if any is near: a few
/// edits away, or having every word of it (`tcp_port`: `tcp_server_port`).
fn suggest(option: &str) -> Option<&'static str> {
    let option = option.to_ascii_lowercase();
    let words: Vec<&str> = option.split('_').filter(|w| !w.is_empty()).collect();
    OPTIONS
        .iter()
        .chain(IGNORED_OPTIONS)
        .map(|o| (edit_distance(&option, o), *o))
        .filter(|(d, o)| {
            *d <= 3.max(o.len() / 5)
                || (words.len() > 1 && words.iter().all(|w| o.split('_').any(|ow| ow == *w)))
        })
        .min()
        .map(|(_, o)| o)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.iter().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != cb);
            cur[j + 1] = (prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

/// Checks `value` against `option` and stores it; `Err` says what is wrong
/// with the value.
fn set_option(s: &mut Settings, option: &str, value: &Value) -> Result<(), String> {
    match option {
        "listen_ip" => s.listen_ip = ip(value)?,
        "tcp_server_port" => s.tcp_server_port = int_in(value, 0, 65_535)? as u16,
        "max_tcp_clients" => s.max_tcp_clients = size(value, 1)?,
        "num_router_shards" => {
            s.num_router_shards = int_in(value, 1, MAX_ROUTER_SHARDS)? as usize;
        }
        "router_min_fanout_to_warn" => s.router_min_fanout_to_warn = size(value, 1)?,
        "router_min_publish_to_topics_to_warn" => {
            s.router_min_publish_to_topics_to_warn = size(value, 1)?;
        }
        "messages_stored_per_router_shard" => {
            s.messages_stored_per_router_shard = size(value, 1)?;
        }
        "pid_file" => s.pid_file = optional_path(value)?,
        "log_file" => s.log_file = optional_path(value)?,
        "log_level" => s.log_level = log_level(value)?,
        "log_format" => {
            s.log_format = value
                .text()
                .and_then(LogFormat::parse)
                .ok_or("must be text or json")?;
        }
        "client_idle_timeout" => s.client_idle_timeout = seconds(value)?,
        "max_line_bytes" => s.max_line_bytes = size(value, 1)?,
        "max_request_bytes" => s.max_request_bytes = size(value, 1)?,
        "max_topic_bytes" => s.max_topic_bytes = size(value, 1)?,
        "max_queue_messages" => s.max_queue_messages = size(value, 1)?,
        "max_queue_bytes" => s.max_queue_bytes = size(value, 1)?,
        "control_socket" => s.control_socket = optional_path(value)?,
        "upstreams" => s.upstreams = upstreams(value)?,
        "max_restarts" => s.max_restarts = int_in(value, 0, i128::from(u32::MAX))? as u32,
        "max_restart_seconds" => s.max_restart_seconds = seconds(value)?,
        "worker_threads" => s.worker_threads = int_in(value, 0, MAX_WORKER_THREADS)? as usize,
        "fault_injection" => s.fault_injection = boolean(value)?,
        other => return Err(format!("no such option {other}")),
    }
    Ok(())
}

/// An option's effective value as text, for the start-up log.
fn render(s: &Settings, option: &str) -> String {
    fn path(p: &Option<PathBuf>) -> String {
        p.as_ref()
            .map_or_else(|| "none".to_string(), |p| p.display().to_string())
    }
    fn secs(d: Duration) -> String {
        if d.subsec_nanos() == 0 {
            d.as_secs().to_string()
        } else {
            d.as_secs_f64().to_string()
        }
    }
    match option {
        "listen_ip" => s.listen_ip.to_string(),
        "tcp_server_port" => s.tcp_server_port.to_string(),
        "max_tcp_clients" => s.max_tcp_clients.to_string(),
        "num_router_shards" => s.num_router_shards.to_string(),
        "router_min_fanout_to_warn" => s.router_min_fanout_to_warn.to_string(),
        "router_min_publish_to_topics_to_warn" => {
            s.router_min_publish_to_topics_to_warn.to_string()
        }
        "messages_stored_per_router_shard" => s.messages_stored_per_router_shard.to_string(),
        "pid_file" => path(&s.pid_file),
        "log_file" => path(&s.log_file),
        "log_level" => s.log_level.as_str().to_string(),
        "log_format" => s.log_format.as_str().to_string(),
        "client_idle_timeout" => secs(s.client_idle_timeout),
        "max_line_bytes" => s.max_line_bytes.to_string(),
        "max_request_bytes" => s.max_request_bytes.to_string(),
        "max_topic_bytes" => s.max_topic_bytes.to_string(),
        "max_queue_messages" => s.max_queue_messages.to_string(),
        "max_queue_bytes" => s.max_queue_bytes.to_string(),
        "control_socket" => s.control_socket_path().display().to_string(),
        "upstreams" if s.upstreams.is_empty() => "none".to_string(),
        "upstreams" => s.upstreams.join(","),
        "max_restarts" => s.max_restarts.to_string(),
        "max_restart_seconds" => secs(s.max_restart_seconds),
        "worker_threads" => s.worker_threads.to_string(),
        "fault_injection" => s.fault_injection.to_string(),
        _ => String::new(),
    }
}

fn int(value: &Value) -> Result<i128, String> {
    match value {
        Value::Int(i) => Ok(*i),
        Value::Text(t) => t
            .trim()
            .parse()
            .map_err(|_| "must be an integer".to_string()),
        other => Err(format!("must be an integer, not {}", other.kind())),
    }
}

fn int_in(value: &Value, min: i128, max: i128) -> Result<i128, String> {
    let i = int(value)?;
    if i < min || i > max {
        return Err(format!("must be between {min} and {max}"));
    }
    Ok(i)
}

/// A count or a size in bytes: an integer of at least `min`.
fn size(value: &Value, min: i128) -> Result<usize, String> {
    let i = int(value)?;
    if i < min {
        return Err(format!("must be at least {min}"));
    }
    usize::try_from(i).map_err(|_| "is too large".to_string())
}

/// A duration in seconds, more than zero (fractions allowed).
fn seconds(value: &Value) -> Result<Duration, String> {
    const WHAT: &str = "must be a number of seconds greater than 0";
    let secs: f64 = match value {
        Value::Int(i) => {
            if *i <= 0 {
                return Err(WHAT.to_string());
            }
            return u64::try_from(*i)
                .map(Duration::from_secs)
                .map_err(|_| "is too large".to_string());
        }
        Value::Float(x) => *x,
        Value::Text(t) => t.trim().parse().map_err(|_| WHAT.to_string())?,
        other => return Err(format!("{WHAT}, not {}", other.kind())),
    };
    if secs.is_nan() || secs <= 0.0 {
        return Err(WHAT.to_string());
    }
    Duration::try_from_secs_f64(secs).map_err(|_| "is too large".to_string())
}

fn boolean(value: &Value) -> Result<bool, String> {
    match value {
        Value::Bool(b) => Ok(*b),
        other => match other
            .text()
            .map(|t| t.trim().to_ascii_lowercase())
            .as_deref()
        {
            Some("true") => Ok(true),
            Some("false") => Ok(false),
            _ => Err("must be true or false".to_string()),
        },
    }
}

fn log_level(value: &Value) -> Result<LogLevel, String> {
    value
        .text()
        .and_then(LogLevel::parse)
        .ok_or_else(|| "must be debug, info, warn or error".to_string())
}

/// A file path; an empty string or the atom `undefined` means none.
fn optional_path(value: &Value) -> Result<Option<PathBuf>, String> {
    match value {
        Value::Atom(a) if a == "undefined" => Ok(None),
        other => match other.text() {
            Some("") => Ok(None),
            Some(t) => Ok(Some(PathBuf::from(t))),
            None => Err(format!(
                "must be a file path (a string), not {}",
                other.kind()
            )),
        },
    }
}

fn ip(value: &Value) -> Result<IpAddr, String> {
    const WHAT: &str =
        "must be an IP address (such as 127.0.0.1 or ::1), any, or a tuple such as {127,0,0,1}";
    match value {
        Value::Tuple(parts) => {
            let numbers: Option<Vec<i128>> = parts
                .iter()
                .map(|p| match p {
                    Value::Int(i) => Some(*i),
                    _ => None,
                })
                .collect();
            match numbers.as_deref() {
                Some(n) if n.len() == 4 => {
                    let mut octets = [0u8; 4];
                    for (o, i) in octets.iter_mut().zip(n) {
                        *o = u8::try_from(*i).map_err(|_| WHAT.to_string())?;
                    }
                    Ok(IpAddr::V4(Ipv4Addr::from(octets)))
                }
                Some(n) if n.len() == 8 => {
                    let mut segments = [0u16; 8];
                    for (s, i) in segments.iter_mut().zip(n) {
                        *s = u16::try_from(*i).map_err(|_| WHAT.to_string())?;
                    }
                    Ok(IpAddr::V6(Ipv6Addr::from(segments)))
                }
                _ => Err(WHAT.to_string()),
            }
        }
        other => {
            let text = other.text().ok_or_else(|| WHAT.to_string())?.trim();
            match text {
                "any" => Ok(IpAddr::V4(Ipv4Addr::UNSPECIFIED)),
                "loopback" => Ok(IpAddr::V4(Ipv4Addr::LOCALHOST)),
                _ => text
                    .strip_prefix('[')
                    .and_then(|t| t.strip_suffix(']'))
                    .unwrap_or(text)
                    .parse()
                    .map_err(|_| WHAT.to_string()),
            }
        }
    }
}

/// A list of `host:port`: a TOML array or Erlang list of strings (or of
/// Erlang `{Host, Port}` tuples), or a comma-separated string.
fn upstreams(value: &Value) -> Result<Vec<String>, String> {
    const WHAT: &str = "must be a list of host:port";
    let items: Vec<String> = match value {
        Value::List(items) => items
            .iter()
            .map(|item| match item {
                Value::Tuple(hp) if hp.len() == 2 => match (hp[0].text(), &hp[1]) {
                    (Some(host), Value::Int(port)) => Ok(format!("{host}:{port}")),
                    _ => Err(format!("{WHAT}; {item} is not")),
                },
                other => other
                    .text()
                    .map(|t| t.trim().to_string())
                    .ok_or_else(|| format!("{WHAT}; {item} is not")),
            })
            .collect::<Result<_, _>>()?,
        other => match other.text() {
            Some(t) => t
                .split(',')
                .map(str::trim)
                .filter(|t| !t.is_empty())
                .map(String::from)
                .collect(),
            None => return Err(format!("{WHAT}, not {}", other.kind())),
        },
    };
    for item in &items {
        let valid = item.rsplit_once(':').is_some_and(|(host, port)| {
            !host.is_empty()
                && !host.contains(char::is_whitespace)
                && port.parse::<u16>().is_ok_and(|p| p > 0)
        });
        if !valid {
            return Err(format!("{WHAT}; {item:?} is not host:port"));
        }
    }
    Ok(items)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A scratch directory, removed on drop.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new() -> TempDir {
            static N: AtomicUsize = AtomicUsize::new(0);
            let dir = std::env::temp_dir().join(format!(
                "kraken-config-test-{}-{}",
                std::process::id(),
                N.fetch_add(1, Ordering::SeqCst)
            ));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).unwrap();
            TempDir(dir)
        }

        fn write(&self, name: &str, text: &str) -> PathBuf {
            let path = self.0.join(name);
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent).unwrap();
            }
            std::fs::write(&path, text).unwrap();
            path
        }

        fn path(&self, name: &str) -> PathBuf {
            self.0.join(name)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn args(line: &str) -> Cli {
        cli::parse(line.split_whitespace().map(String::from)).unwrap()
    }

    fn no_env() -> HashMap<String, String> {
        HashMap::new()
    }

    fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    /// Loads with no etc file.
    fn load_plain(cli: &Cli, env: &HashMap<String, String>) -> Result<Loaded, ConfigError> {
        load_with_etc(cli, env, Path::new("/nonexistent/etc/kraken.toml"))
    }

    fn pair(option: &str, value: &str) -> Cli {
        Cli {
            command: cli::Command::Run,
            config_path: None,
            pairs: vec![(option.to_string(), value.to_string())],
        }
    }

    fn source_of(loaded: &Loaded, option: &str) -> (String, Source) {
        let (_, value, source) = loaded
            .sources
            .iter()
            .find(|(o, _, _)| o == option)
            .unwrap_or_else(|| panic!("no source for {option}"));
        (value.clone(), source.clone())
    }

    fn err(cli: &Cli, env: &HashMap<String, String>) -> String {
        load_plain(cli, env).unwrap_err().to_string()
    }

    /// The embedded etc/kraken.toml of the repository.
    fn repo_etc() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("etc/kraken.toml")
    }

    #[test]
    fn defaults_without_any_source() {
        let loaded = load_plain(&args("run"), &no_env()).unwrap();
        assert_eq!(loaded.settings, Settings::default());
        assert_eq!(loaded.sources.len(), OPTIONS.len());
        assert!(loaded.sources.iter().all(|(_, _, s)| *s == Source::Default));
        assert_eq!(source_of(&loaded, "listen_ip").0, "0.0.0.0");
        assert_eq!(source_of(&loaded, "pid_file").0, "none");
        assert_eq!(
            source_of(&loaded, "control_socket").0,
            "/tmp/kraken-12355.sock"
        );
        assert_eq!(source_of(&loaded, "client_idle_timeout").0, "3600");
        assert_eq!(source_of(&loaded, "upstreams").0, "none");
        assert!(loaded.files.is_empty());
        assert!(loaded.warnings.is_empty());
    }

    #[test]
    fn the_embedded_etc_file_is_the_defaults() {
        let etc = repo_etc();
        let loaded = load_with_etc(&args("run"), &no_env(), &etc).unwrap();
        assert_eq!(loaded.settings, Settings::default());
        assert_eq!(loaded.files, vec![etc.clone()]);
        // Every option with a default is written out in it.
        for (option, _, source) in &loaded.sources {
            let commented = ["pid_file", "log_file", "control_socket", "upstreams"];
            if commented.contains(&option.as_str()) {
                assert_eq!(*source, Source::Default, "{option}");
            } else {
                assert_eq!(*source, Source::EtcFile(etc.clone()), "{option}");
            }
        }
        // The commented-out ones are there too, and valid when uncommented.
        let text = std::fs::read_to_string(&etc).unwrap();
        for option in OPTIONS {
            assert!(
                text.lines().any(|l| l
                    .trim_start_matches("# ")
                    .starts_with(&format!("{option} ="))),
                "{option} missing from etc/kraken.toml"
            );
        }
        let uncommented: String = text
            .lines()
            .map(|l| match l.strip_prefix("# ") {
                Some(rest) if rest.contains(" = ") => rest,
                _ => l,
            })
            .collect::<Vec<_>>()
            .join("\n");
        let dir = TempDir::new();
        let path = dir.write("etc/kraken.toml", &uncommented);
        let loaded = load_with_etc(&args("run"), &no_env(), &path).unwrap();
        assert!(loaded
            .sources
            .iter()
            .all(|(_, _, s)| *s == Source::EtcFile(path.clone())));
    }

    #[test]
    fn every_option_from_the_command_line() {
        let cli = args(
            "run -kraken listen_ip 127.0.0.1 -kraken tcp_server_port 4000 \
             -kraken max_tcp_clients 30000 -kraken num_router_shards 8 \
             -kraken router_min_fanout_to_warn 10 -kraken router_min_publish_to_topics_to_warn 20 \
             -kraken messages_stored_per_router_shard 30 -kraken pid_file /var/run/kraken.pid \
             -kraken log_file /var/log/kraken.log -kraken log_level debug -kraken log_format json \
             -kraken client_idle_timeout 60 -kraken max_line_bytes 4096 \
             -kraken max_request_bytes 1000000 -kraken max_topic_bytes 512 \
             -kraken max_queue_messages 77 -kraken max_queue_bytes 8888 \
             -kraken control_socket /run/k.sock -kraken upstreams h1:1,h2:2 \
             -kraken max_restarts 3 -kraken max_restart_seconds 5 \
             -kraken worker_threads 2 -kraken fault_injection true",
        );
        let loaded = load_plain(&cli, &no_env()).unwrap();
        let want = Settings {
            listen_ip: IpAddr::from([127, 0, 0, 1]),
            tcp_server_port: 4000,
            max_tcp_clients: 30000,
            num_router_shards: 8,
            router_min_fanout_to_warn: 10,
            router_min_publish_to_topics_to_warn: 20,
            messages_stored_per_router_shard: 30,
            pid_file: Some("/var/run/kraken.pid".into()),
            log_file: Some("/var/log/kraken.log".into()),
            log_level: LogLevel::Debug,
            log_format: LogFormat::Json,
            client_idle_timeout: Duration::from_secs(60),
            max_line_bytes: 4096,
            max_request_bytes: 1_000_000,
            max_topic_bytes: 512,
            max_queue_messages: 77,
            max_queue_bytes: 8888,
            control_socket: Some("/run/k.sock".into()),
            upstreams: vec!["h1:1".into(), "h2:2".into()],
            max_restarts: 3,
            max_restart_seconds: Duration::from_secs(5),
            worker_threads: 2,
            fault_injection: true,
        };
        assert_eq!(loaded.settings, want);
        assert!(loaded
            .sources
            .iter()
            .all(|(_, _, s)| *s == Source::CommandLine));
        let rendered: Vec<String> = loaded
            .sources
            .iter()
            .map(|(o, v, _)| format!("{o}={v}"))
            .collect();
        assert_eq!(
            rendered.join(" "),
            "listen_ip=127.0.0.1 tcp_server_port=4000 max_tcp_clients=30000 \
             num_router_shards=8 router_min_fanout_to_warn=10 \
             router_min_publish_to_topics_to_warn=20 messages_stored_per_router_shard=30 \
             pid_file=/var/run/kraken.pid log_file=/var/log/kraken.log log_level=debug log_format=json \
             client_idle_timeout=60 max_line_bytes=4096 max_request_bytes=1000000 \
             max_topic_bytes=512 max_queue_messages=77 max_queue_bytes=8888 \
             control_socket=/run/k.sock upstreams=h1:1,h2:2 max_restarts=3 \
             max_restart_seconds=5 worker_threads=2 fault_injection=true"
        );
    }

    #[test]
    fn every_option_from_the_environment() {
        let vars: Vec<(String, String)> = [
            ("LISTEN_IP", "::1"),
            ("TCP_SERVER_PORT", "0"),
            ("MAX_TCP_CLIENTS", "5"),
            ("NUM_ROUTER_SHARDS", "2"),
            ("ROUTER_MIN_FANOUT_TO_WARN", "3"),
            ("ROUTER_MIN_PUBLISH_TO_TOPICS_TO_WARN", "4"),
            ("MESSAGES_STORED_PER_ROUTER_SHARD", "5"),
            ("PID_FILE", "/tmp/k.pid"),
            ("LOG_FILE", "kraken.log"),
            ("LOG_LEVEL", "warn"),
            ("LOG_FORMAT", "JSON"),
            ("CLIENT_IDLE_TIMEOUT", "0.5"),
            ("MAX_LINE_BYTES", "100"),
            ("MAX_REQUEST_BYTES", "200"),
            ("MAX_TOPIC_BYTES", "300"),
            ("MAX_QUEUE_MESSAGES", "400"),
            ("MAX_QUEUE_BYTES", "500"),
            ("CONTROL_SOCKET", "/tmp/c.sock"),
            ("UPSTREAMS", " a:1 , b:2 "),
            ("MAX_RESTARTS", "0"),
            ("MAX_RESTART_SECONDS", "60"),
            ("WORKER_THREADS", "0"),
            ("FAULT_INJECTION", "false"),
        ]
        .iter()
        .map(|(k, v)| (format!("KRAKEN_{k}"), v.to_string()))
        .collect();
        assert_eq!(vars.len(), OPTIONS.len());
        let env: HashMap<String, String> = vars.into_iter().collect();
        let loaded = load_plain(&args("run"), &env).unwrap();
        let s = &loaded.settings;
        assert_eq!(s.listen_ip, "::1".parse::<IpAddr>().unwrap());
        assert_eq!(s.tcp_server_port, 0);
        assert_eq!(s.max_tcp_clients, 5);
        assert_eq!(s.num_router_shards, 2);
        assert_eq!(s.router_min_fanout_to_warn, 3);
        assert_eq!(s.router_min_publish_to_topics_to_warn, 4);
        assert_eq!(s.messages_stored_per_router_shard, 5);
        assert_eq!(s.pid_file, Some("/tmp/k.pid".into()));
        assert_eq!(s.log_file, Some("kraken.log".into()));
        assert_eq!(s.log_level, LogLevel::Warn);
        assert_eq!(s.log_format, LogFormat::Json);
        assert_eq!(s.client_idle_timeout, Duration::from_millis(500));
        assert_eq!(
            (s.max_line_bytes, s.max_request_bytes, s.max_topic_bytes),
            (100, 200, 300)
        );
        assert_eq!((s.max_queue_messages, s.max_queue_bytes), (400, 500));
        assert_eq!(s.control_socket, Some("/tmp/c.sock".into()));
        assert_eq!(s.upstreams, vec!["a:1".to_string(), "b:2".to_string()]);
        assert_eq!(s.max_restarts, 0);
        assert_eq!(s.max_restart_seconds, Duration::from_secs(60));
        assert_eq!(s.worker_threads, 0);
        assert!(!s.fault_injection);
        for (option, value, source) in &loaded.sources {
            assert_eq!(
                *source,
                Source::Env(format!("KRAKEN_{}", option.to_uppercase())),
                "{option}"
            );
            if option == "client_idle_timeout" {
                assert_eq!(value, "0.5");
            }
        }
    }

    const EVERY_OPTION_TOML: &str = r#"
listen_ip = "10.1.2.3"
tcp_server_port = 1234
max_tcp_clients = 2
num_router_shards = 3
router_min_fanout_to_warn = 4
router_min_publish_to_topics_to_warn = 5
messages_stored_per_router_shard = 6
pid_file = "/p.pid"
log_file = "/l.log"
log_level = "error"
log_format = "json"
client_idle_timeout = 7
max_line_bytes = 8
max_request_bytes = 9
max_topic_bytes = 10
max_queue_messages = 11
max_queue_bytes = 12
control_socket = "/c.sock"
upstreams = ["u1:1", "u2:2"]
max_restarts = 13
max_restart_seconds = 1.5
worker_threads = 14
fault_injection = true
"#;

    const EVERY_OPTION_ERLANG: &str = r#"
[{kraken, [
  {listen_ip, {10,1,2,3}},
  {tcp_server_port, 1234},
  {max_tcp_clients, 2},
  {num_router_shards, 3},
  {router_min_fanout_to_warn, 4},
  {router_min_publish_to_topics_to_warn, 5},
  {messages_stored_per_router_shard, 6},
  {pid_file, "/p.pid"},
  {log_file, <<"/l.log">>},
  {log_level, error},
  {log_format, json},
  {client_idle_timeout, 7},
  {max_line_bytes, 8},
  {max_request_bytes, 9},
  {max_topic_bytes, 10},
  {max_queue_messages, 11},
  {max_queue_bytes, 12},
  {control_socket, '/c.sock'},
  {upstreams, ["u1:1", {"u2", 2}]},
  {max_restarts, 13},
  {max_restart_seconds, 1.5},
  {worker_threads, 14},
  {fault_injection, true}
]}].
"#;

    fn every_option_settings() -> Settings {
        Settings {
            listen_ip: IpAddr::from([10, 1, 2, 3]),
            tcp_server_port: 1234,
            max_tcp_clients: 2,
            num_router_shards: 3,
            router_min_fanout_to_warn: 4,
            router_min_publish_to_topics_to_warn: 5,
            messages_stored_per_router_shard: 6,
            pid_file: Some("/p.pid".into()),
            log_file: Some("/l.log".into()),
            log_level: LogLevel::Error,
            log_format: LogFormat::Json,
            client_idle_timeout: Duration::from_secs(7),
            max_line_bytes: 8,
            max_request_bytes: 9,
            max_topic_bytes: 10,
            max_queue_messages: 11,
            max_queue_bytes: 12,
            control_socket: Some("/c.sock".into()),
            upstreams: vec!["u1:1".into(), "u2:2".into()],
            max_restarts: 13,
            max_restart_seconds: Duration::from_millis(1500),
            worker_threads: 14,
            fault_injection: true,
        }
    }

    #[test]
    fn every_option_from_a_toml_file_via_config() {
        let dir = TempDir::new();
        let path = dir.write("k.toml", EVERY_OPTION_TOML);
        let cli = args(&format!("run -config {}", path.display()));
        let loaded = load_plain(&cli, &no_env()).unwrap();
        assert_eq!(loaded.settings, every_option_settings());
        assert!(loaded
            .sources
            .iter()
            .all(|(_, _, s)| *s == Source::ConfigFile(path.clone())));
        assert_eq!(source_of(&loaded, "max_restart_seconds").0, "1.5");
    }

    #[test]
    fn every_option_from_the_etc_file() {
        let dir = TempDir::new();
        let path = dir.write("etc/kraken.toml", EVERY_OPTION_TOML);
        let loaded = load_with_etc(&args("run"), &no_env(), &path).unwrap();
        assert_eq!(loaded.settings, every_option_settings());
        assert!(loaded
            .sources
            .iter()
            .all(|(_, _, s)| *s == Source::EtcFile(path.clone())));
    }

    #[test]
    fn every_option_from_an_erlang_file() {
        let dir = TempDir::new();
        let path = dir.write("k.config", EVERY_OPTION_ERLANG);
        let cli = args(&format!("run -config {}", path.display()));
        let loaded = load_plain(&cli, &no_env()).unwrap();
        assert_eq!(loaded.settings, every_option_settings());
        assert_eq!(loaded.files, vec![path.clone()]);
        assert!(loaded
            .sources
            .iter()
            .all(|(_, _, s)| *s == Source::ConfigFile(path.clone())));
    }

    #[test]
    fn readme_octopus_example_verbatim() {
        let dir = TempDir::new();
        dir.write(
            "kraken.config",
            "[{octopus, [\n   {pid_file, \"/var/run/kraken.pid\"},\n   {log_file, \"/var/log/kraken.log\"},\n   {max_tcp_clients, 30000},\n   {num_router_shards, 8}]}].\n",
        );
        // "bin/kraken start -config /etc/kraken": the extension left off.
        let cli = args(&format!("start -config {}", dir.path("kraken").display()));
        let loaded = load_plain(&cli, &no_env()).unwrap();
        let s = &loaded.settings;
        assert_eq!(s.pid_file, Some("/var/run/kraken.pid".into()));
        assert_eq!(s.log_file, Some("/var/log/kraken.log".into()));
        assert_eq!(s.max_tcp_clients, 30000);
        assert_eq!(s.num_router_shards, 8);
        assert_eq!(
            loaded
                .sources
                .iter()
                .filter(|(_, _, src)| *src != Source::Default)
                .count(),
            4
        );
    }

    #[test]
    fn readme_command_line_example() {
        let cli = args("run -kraken num_router_shards 8 -kraken router_min_fanout_to_warn 1000");
        let loaded = load_plain(&cli, &no_env()).unwrap();
        assert_eq!(loaded.settings.num_router_shards, 8);
        assert_eq!(loaded.settings.router_min_fanout_to_warn, 1000);
        assert_eq!(
            source_of(&loaded, "num_router_shards"),
            ("8".to_string(), Source::CommandLine)
        );
    }

    #[test]
    fn spec_erlang_example_and_both_sections_later_wins() {
        let dir = TempDir::new();
        let path = dir.write(
            "k.config",
            "%% sections for other applications are ignored\n\
             [{kernel, [{inet_dist_listen_min, 9100}]},\n\
              {lager, [{handlers, [{lager_console_backend, info}]}]},\n\
              {kraken, [{num_router_shards, 8}, {pid_file, \"/var/run/kraken.pid\"}]},\n\
              {octopus, [{num_router_shards, 16}]}].\n",
        );
        let loaded =
            load_plain(&args(&format!("run -config {}", path.display())), &no_env()).unwrap();
        assert_eq!(loaded.settings.num_router_shards, 16);
        assert_eq!(loaded.settings.pid_file, Some("/var/run/kraken.pid".into()));
    }

    #[test]
    fn precedence_defaults_etc_config_env_command_line() {
        let dir = TempDir::new();
        let etc = dir.write(
            "etc/kraken.toml",
            "num_router_shards = 2\nmax_tcp_clients = 2\ntcp_server_port = 2\nlog_level = \"error\"\n",
        );
        dir.write(
            "my.config",
            "[{kraken, [{max_tcp_clients, 3}, {tcp_server_port, 3}, {log_level, warn}]}].",
        );
        let env = env(&[
            ("KRAKEN_TCP_SERVER_PORT", "4"),
            ("KRAKEN_LOG_LEVEL", "info"),
            ("KRAKEN_HOME", "/ignored"),
            ("PATH", "/usr/bin"),
        ]);
        let cli = args(&format!(
            "run -config {} -kraken log_level debug",
            dir.path("my").display()
        ));
        let loaded = load_with_etc(&cli, &env, &etc).unwrap();
        let config = dir.path("my.config");
        assert_eq!(
            source_of(&loaded, "max_queue_bytes"),
            ("67108864".to_string(), Source::Default)
        );
        assert_eq!(
            source_of(&loaded, "num_router_shards"),
            ("2".to_string(), Source::EtcFile(etc.clone()))
        );
        assert_eq!(
            source_of(&loaded, "max_tcp_clients"),
            ("3".to_string(), Source::ConfigFile(config.clone()))
        );
        assert_eq!(
            source_of(&loaded, "tcp_server_port"),
            (
                "4".to_string(),
                Source::Env("KRAKEN_TCP_SERVER_PORT".into())
            )
        );
        assert_eq!(
            source_of(&loaded, "log_level"),
            ("debug".to_string(), Source::CommandLine)
        );
        assert_eq!(loaded.files, vec![etc, config]);
        // Later pairs on the command line win over earlier ones.
        let cli = args("run -kraken num_router_shards 3 -octopus num_router_shards 5");
        assert_eq!(
            load_plain(&cli, &no_env())
                .unwrap()
                .settings
                .num_router_shards,
            5
        );
    }

    #[test]
    fn config_path_resolution() {
        let dir = TempDir::new();
        // Only the .toml exists: PATH falls back to it.
        dir.write("a.toml", "num_router_shards = 6\n");
        let loaded = load_plain(
            &args(&format!("run -config {}", dir.path("a").display())),
            &no_env(),
        )
        .unwrap();
        assert_eq!(loaded.settings.num_router_shards, 6);
        // Both exist: .config first.
        dir.write("a.config", "[{kraken, [{num_router_shards, 7}]}].");
        let loaded = load_plain(
            &args(&format!("run -config {}", dir.path("a").display())),
            &no_env(),
        )
        .unwrap();
        assert_eq!(loaded.settings.num_router_shards, 7);
        // Explicit extensions choose the format.
        let loaded = load_plain(
            &args(&format!("run -config {}", dir.path("a.toml").display())),
            &no_env(),
        )
        .unwrap();
        assert_eq!(loaded.settings.num_router_shards, 6);
        // Another dot in the name is not an extension to replace.
        dir.write("b.prod.config", "[{kraken, [{num_router_shards, 9}]}].");
        let loaded = load_plain(
            &args(&format!("run -config {}", dir.path("b.prod").display())),
            &no_env(),
        )
        .unwrap();
        assert_eq!(loaded.settings.num_router_shards, 9);
        // Neither exists: the error names both.
        let missing = dir.path("missing");
        assert_eq!(
            err(
                &args(&format!("run -config {}", missing.display())),
                &no_env()
            ),
            format!(
                "config file not found: tried {}.config and {}.toml",
                missing.display(),
                missing.display()
            )
        );
        // An explicit file that does not exist.
        let e = err(
            &args(&format!("run -config {}", dir.path("nope.toml").display())),
            &no_env(),
        );
        assert!(
            e.starts_with(&format!(
                "cannot read config file {}: ",
                dir.path("nope.toml").display()
            )),
            "{e}"
        );
    }

    #[test]
    fn etc_file_location() {
        let dir = TempDir::new();
        let home = dir.path("home");
        // KRAKEN_HOME wins, even when its file is missing.
        let with_home = env(&[("KRAKEN_HOME", home.to_str().unwrap())]);
        assert_eq!(
            etc_file_path(&with_home, None, Path::new("/cwd")),
            home.join("etc/kraken.toml")
        );
        // Else the nearest ancestor of the executable's directory that has one.
        let etc = dir.write("root/etc/kraken.toml", "");
        let exe = dir.path("root/target/release/kraken");
        assert_eq!(etc_file_path(&no_env(), Some(&exe), Path::new("/cwd")), etc);
        // Else under the current directory.
        let lonely = dir.path("elsewhere/bin/kraken");
        assert_eq!(
            etc_file_path(&no_env(), Some(&lonely), Path::new("/cwd")),
            Path::new("/cwd/etc/kraken.toml")
        );
        // A missing etc file is fine; an unreadable one is not.
        assert!(load_with_etc(&args("run"), &no_env(), &dir.path("no/etc/kraken.toml")).is_ok());
        let e = load_with_etc(&args("run"), &no_env(), &dir.path("root/etc")).unwrap_err();
        assert!(matches!(e, ConfigError::Read { .. }), "{e}");
        // load() itself finds the etc file through KRAKEN_HOME.
        dir.write("home/etc/kraken.toml", "num_router_shards = 11\n");
        let loaded = load(&args("run"), &with_home).unwrap();
        assert_eq!(loaded.settings.num_router_shards, 11);
        assert_eq!(
            source_of(&loaded, "num_router_shards").1,
            Source::EtcFile(home.join("etc/kraken.toml"))
        );
    }

    #[test]
    fn listen_ip_forms() {
        let cases: &[(&str, &str)] = &[
            ("127.0.0.1", "127.0.0.1"),
            ("any", "0.0.0.0"),
            ("0.0.0.0", "0.0.0.0"),
            ("loopback", "127.0.0.1"),
            ("::1", "::1"),
            ("[::1]", "::1"),
            ("::", "::"),
            ("fe80::1:2", "fe80::1:2"),
            ("{127,0,0,1}", "127.0.0.1"),
            ("{10, 0, 0, 7}", "10.0.0.7"),
            ("{0,0,0,0,0,0,0,1}", "::1"),
            ("\"192.168.1.1\"", "192.168.1.1"),
        ];
        for (text, want) in cases {
            let loaded = load_plain(&pair("listen_ip", text), &no_env())
                .unwrap_or_else(|e| panic!("{text}: {e}"));
            assert_eq!(loaded.settings.listen_ip.to_string(), *want, "{text}");
        }
        let dir = TempDir::new();
        for (i, (term, want)) in [
            ("{127,0,0,1}", "127.0.0.1"),
            ("\"127.0.0.2\"", "127.0.0.2"),
            ("any", "0.0.0.0"),
            ("{0,0,0,0,0,0,0,0}", "::"),
        ]
        .iter()
        .enumerate()
        {
            let path = dir.write(
                &format!("ip{i}.config"),
                &format!("[{{kraken, [{{listen_ip, {term}}}]}}]."),
            );
            let loaded =
                load_plain(&args(&format!("run -config {}", path.display())), &no_env()).unwrap();
            assert_eq!(loaded.settings.listen_ip.to_string(), *want, "{term}");
        }
        for bad in [
            "{127,0,0,256}",
            "{127,0,0}",
            "{a,b,c,d}",
            "localhost",
            "1.2.3",
            "8",
            "[]",
        ] {
            let e = err(&pair("listen_ip", bad), &no_env());
            assert!(e.starts_with("command line: bad value "), "{bad}: {e}");
            assert!(
                e.ends_with(
                    "for listen_ip: must be an IP address (such as 127.0.0.1 or ::1), any, \
                 or a tuple such as {127,0,0,1}"
                ),
                "{bad}: {e}"
            );
        }
        assert_eq!(
            err(&pair("listen_ip", "{127,0,0,256}"), &no_env()),
            "command line: bad value {127,0,0,256} for listen_ip: must be an IP address \
             (such as 127.0.0.1 or ::1), any, or a tuple such as {127,0,0,1}"
        );
    }

    #[test]
    fn command_line_values_are_erlang_terms_or_text() {
        let load1 = |option: &str, value: &str| load_plain(&pair(option, value), &no_env());
        assert_eq!(
            load1("pid_file", "\"/var/run/k.pid\"")
                .unwrap()
                .settings
                .pid_file,
            Some("/var/run/k.pid".into())
        );
        assert_eq!(
            load1("pid_file", "k.pid").unwrap().settings.pid_file,
            Some("k.pid".into())
        );
        assert_eq!(
            load1("pid_file", "undefined").unwrap().settings.pid_file,
            None
        );
        assert_eq!(load1("pid_file", "").unwrap().settings.pid_file, None);
        assert_eq!(
            load1("upstreams", "[\"a:1\",\"b:2\"]")
                .unwrap()
                .settings
                .upstreams,
            vec!["a:1".to_string(), "b:2".to_string()]
        );
        assert_eq!(
            load1("upstreams", "h:1").unwrap().settings.upstreams,
            vec!["h:1".to_string()]
        );
        assert_eq!(
            load1("upstreams", "[::1]:5,kraken.example.com:12355")
                .unwrap()
                .settings
                .upstreams,
            vec![
                "[::1]:5".to_string(),
                "kraken.example.com:12355".to_string()
            ]
        );
        assert!(load1("upstreams", "")
            .unwrap()
            .settings
            .upstreams
            .is_empty());
        assert!(load1("upstreams", "[]")
            .unwrap()
            .settings
            .upstreams
            .is_empty());
        assert_eq!(
            load1("max_restarts", "1_000")
                .unwrap()
                .settings
                .max_restarts,
            1000
        );
        assert!(
            load1("fault_injection", "TRUE")
                .unwrap()
                .settings
                .fault_injection
        );
        assert_eq!(
            load1("log_level", "'WARNING'").unwrap().settings.log_level,
            LogLevel::Warn
        );
    }

    #[test]
    fn bad_values_name_option_value_and_source() {
        let cases: &[(&str, &str, &str)] = &[
            ("num_router_shards", "0", "bad value 0 for num_router_shards: must be between 1 and 65536"),
            ("num_router_shards", "abc", "bad value abc for num_router_shards: must be an integer, not an atom"),
            ("num_router_shards", "8x", "bad value \"8x\" for num_router_shards: must be an integer"),
            ("num_router_shards", "\"8\"", "bad value \"8\" for num_router_shards: must be an integer, not a string"),
            ("max_tcp_clients", "0", "bad value 0 for max_tcp_clients: must be at least 1"),
            ("max_tcp_clients", "-5", "bad value -5 for max_tcp_clients: must be at least 1"),
            ("max_tcp_clients", "1.5", "bad value 1.5 for max_tcp_clients: must be an integer, not a float"),
            ("tcp_server_port", "65536", "bad value 65536 for tcp_server_port: must be between 0 and 65535"),
            ("tcp_server_port", "-1", "bad value -1 for tcp_server_port: must be between 0 and 65535"),
            ("max_request_bytes", "0", "bad value 0 for max_request_bytes: must be at least 1"),
            ("max_queue_bytes", "99999999999999999999999999", "bad value 99999999999999999999999999 for max_queue_bytes: is too large"),
            ("max_restarts", "-1", "bad value -1 for max_restarts: must be between 0 and 4294967295"),
            ("worker_threads", "100000", "bad value 100000 for worker_threads: must be between 0 and 4096"),
            ("client_idle_timeout", "0", "bad value 0 for client_idle_timeout: must be a number of seconds greater than 0"),
            ("client_idle_timeout", "-1.5", "bad value -1.5 for client_idle_timeout: must be a number of seconds greater than 0"),
            ("client_idle_timeout", "soon", "bad value soon for client_idle_timeout: must be a number of seconds greater than 0, not an atom"),
            ("max_restart_seconds", "1.0e300", "bad value 1e300 for max_restart_seconds: is too large"),
            ("log_level", "loud", "bad value loud for log_level: must be debug, info, warn or error"),
            ("log_level", "3", "bad value 3 for log_level: must be debug, info, warn or error"),
            ("log_format", "xml", "bad value xml for log_format: must be text or json"),
            ("fault_injection", "yes", "bad value yes for fault_injection: must be true or false"),
            ("fault_injection", "1", "bad value 1 for fault_injection: must be true or false"),
            ("pid_file", "{a}", "bad value {a} for pid_file: must be a file path (a string), not a tuple"),
            ("upstreams", "h", "bad value h for upstreams: must be a list of host:port; \"h\" is not host:port"),
            ("upstreams", "h:0", "bad value \"h:0\" for upstreams: must be a list of host:port; \"h:0\" is not host:port"),
            ("upstreams", "a:1,:2", "bad value \"a:1,:2\" for upstreams: must be a list of host:port; \":2\" is not host:port"),
            ("upstreams", "[1]", "bad value [1] for upstreams: must be a list of host:port; 1 is not"),
            ("upstreams", "8", "bad value 8 for upstreams: must be a list of host:port, not an integer"),
        ];
        for (option, value, want) in cases {
            assert_eq!(
                err(&pair(option, value), &no_env()),
                format!("command line: {want}"),
                "{option} {value}"
            );
        }
    }

    #[test]
    fn bad_values_in_files_name_file_and_line() {
        let dir = TempDir::new();
        let path = dir.write(
            "k.config",
            "% comment\n[{kraken, [\n  {num_router_shards, 8},\n  {max_tcp_clients, 0}]}].\n",
        );
        assert_eq!(
            err(&args(&format!("run -config {}", path.display())), &no_env()),
            format!(
                "{}:4: bad value 0 for max_tcp_clients: must be at least 1",
                path.display()
            )
        );
        let path = dir.write("k.toml", "# comment\n\nlisten_ip = \"nowhere\"\n");
        assert_eq!(
            err(&args(&format!("run -config {}", path.display())), &no_env()),
            format!(
                "{}:3: bad value \"nowhere\" for listen_ip: must be an IP address (such as \
                 127.0.0.1 or ::1), any, or a tuple such as {{127,0,0,1}}",
                path.display()
            )
        );
        let path = dir.write("t.toml", "num_router_shards = \"8\"\n");
        assert_eq!(
            err(&args(&format!("run -config {}", path.display())), &no_env()),
            format!(
                "{}:1: bad value \"8\" for num_router_shards: must be an integer, not a string",
                path.display()
            )
        );
        let env = env(&[("KRAKEN_MAX_TOPIC_BYTES", "0")]);
        assert_eq!(
            err(&args("run"), &env),
            "environment variable KRAKEN_MAX_TOPIC_BYTES: bad value 0 for max_topic_bytes: \
             must be at least 1"
        );
        let etc = dir.write("etc/kraken.toml", "\n\nworker_threads = -1\n");
        assert_eq!(
            load_with_etc(&args("run"), &no_env(), &etc)
                .unwrap_err()
                .to_string(),
            format!(
                "{}:3: bad value -1 for worker_threads: must be between 0 and 4096",
                etc.display()
            )
        );
    }

    #[test]
    fn unknown_options_are_errors_from_every_source() {
        assert_eq!(
            err(&pair("num_router_shard", "8"), &no_env()),
            "command line: unknown option 'num_router_shard' (value 8); did you mean \
             'num_router_shards'?"
        );
        let e = err(&pair("frobnicate", "1"), &no_env());
        assert!(
            e.starts_with(
                "command line: unknown option 'frobnicate' (value 1); the options are listen_ip, \
                 tcp_server_port,"
            ),
            "{e}"
        );
        assert_eq!(
            err(&args("run"), &env(&[("KRAKEN_NUM_ROUTER_SHARD", "8")])),
            "environment variable KRAKEN_NUM_ROUTER_SHARD: unknown option 'num_router_shard' \
             (value 8); did you mean KRAKEN_NUM_ROUTER_SHARDS? (a KRAKEN_* variable must name \
             an option or be one of KRAKEN_HOME, KRAKEN_LOG, KRAKEN_BIN, KRAKEN_PROFILE)"
        );
        // Reserved variables are not options.
        for var in RESERVED_ENV {
            assert!(
                load_plain(&args("run"), &env(&[(var, "x")])).is_ok(),
                "{var}"
            );
        }
        let dir = TempDir::new();
        let path = dir.write(
            "k.config",
            "[{kraken, [\n{num_router_shards, 8},\n{tcp_port, 1}]}].",
        );
        assert_eq!(
            err(&args(&format!("run -config {}", path.display())), &no_env()),
            format!(
                "{}:3: unknown option 'tcp_port' (value 1); did you mean 'tcp_server_port'?",
                path.display()
            )
        );
        let path = dir.write(
            "k.toml",
            "max_tcp_clients = 5\n[kraken]\nnum_router_shards = 8\n",
        );
        assert_eq!(
            err(&args(&format!("run -config {}", path.display())), &no_env())
                .split("; ")
                .next()
                .unwrap(),
            format!(
                "{}: unknown option 'kraken' (value a table)",
                path.display()
            )
        );
    }

    #[test]
    fn original_options_without_meaning_are_accepted_with_a_warning() {
        let dir = TempDir::new();
        let path = dir.write("k.config", "[{kraken, [{proxy_to_node, undefined}]}].");
        let loaded =
            load_plain(&args(&format!("run -config {}", path.display())), &no_env()).unwrap();
        assert_eq!(loaded.settings, Settings::default());
        assert_eq!(
            loaded.warnings,
            vec![format!(
                "{}:1: option proxy_to_node of the original Kraken has no meaning here and is \
                 ignored (value undefined); see upstreams",
                path.display()
            )]
        );
    }

    #[test]
    fn syntax_errors_carry_file_line_and_column() {
        let dir = TempDir::new();
        let path = dir.write(
            "k.config",
            "[{kraken, [\n  {num_router_shards, 8}\n  {pid_file, \"/x\"}]}].\n",
        );
        assert_eq!(
            err(&args(&format!("run -config {}", path.display())), &no_env()),
            format!(
                "{}: line 3, column 3: expected ',' or ']', found '{{'",
                path.display()
            )
        );
        let path = dir.write("nodot.config", "[{kraken, []}]\n");
        assert_eq!(
            err(&args(&format!("run -config {}", path.display())), &no_env()),
            format!(
                "{}: line 2, column 1: expected '.' after the term, found the end of the file",
                path.display()
            )
        );
        let path = dir.write("bad.toml", "num_router_shards = \n");
        let e = err(&args(&format!("run -config {}", path.display())), &no_env());
        assert!(
            e.starts_with(&format!("{}: line 1, column ", path.display())),
            "{e}"
        );
        assert!(!e.contains('\n'), "{e}");
    }

    #[test]
    fn erlang_includes() {
        let dir = TempDir::new();
        let common = dir.write(
            "common.config",
            "[{kraken, [{num_router_shards, 3}, {max_tcp_clients, 9}]}].",
        );
        let main = dir.write(
            "main.config",
            &format!(
                "[\"{}\",\n {{kraken, [{{num_router_shards, 5}}]}}].",
                dir.path("common").display()
            ),
        );
        let loaded =
            load_plain(&args(&format!("run -config {}", main.display())), &no_env()).unwrap();
        assert_eq!(loaded.settings.num_router_shards, 5);
        assert_eq!(loaded.settings.max_tcp_clients, 9);
        assert_eq!(
            source_of(&loaded, "max_tcp_clients").1,
            Source::ConfigFile(common.clone())
        );
        assert_eq!(loaded.files, vec![main.clone(), common]);
        // A cycle is stopped.
        let cyclic = dir.write(
            "cycle.config",
            &format!("[\"{}\"].", dir.path("cycle").display()),
        );
        let e = err(
            &args(&format!("run -config {}", cyclic.display())),
            &no_env(),
        );
        assert!(e.contains("include each other more than 8 deep"), "{e}");
        // A missing include names it and where it was included.
        let broken = dir.write("broken.config", "[\n \"/nonexistent/x\"].");
        let e = err(
            &args(&format!("run -config {}", broken.display())),
            &no_env(),
        );
        assert!(
            e.starts_with(&format!(
                "{}: line 2, column 2: cannot read included config file /nonexistent/x.config: ",
                broken.display()
            )),
            "{e}"
        );
    }

    #[test]
    fn latin1_erlang_files() {
        let dir = TempDir::new();
        let path = dir.path("l.config");
        std::fs::write(&path, b"[{kraken, [{pid_file, \"/tmp/caf\xe9.pid\"}]}].").unwrap();
        let loaded =
            load_plain(&args(&format!("run -config {}", path.display())), &no_env()).unwrap();
        assert_eq!(loaded.settings.pid_file, Some("/tmp/café.pid".into()));
    }

    #[test]
    fn suggestions() {
        assert_eq!(suggest("num_router_shard"), Some("num_router_shards"));
        assert_eq!(suggest("LISTEN_IP"), Some("listen_ip"));
        assert_eq!(suggest("tcp_port"), Some("tcp_server_port"));
        assert_eq!(suggest("upstream"), Some("upstreams"));
        assert_eq!(suggest("zzz"), None);
    }
}
