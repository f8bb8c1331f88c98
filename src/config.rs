//! Loads the node's [`Settings`] from every source, later sources winning:
//!
//! 1. the built-in defaults ([`Settings::default`]);
//! 2. `etc/kraken.toml`, the native format, found under `$KRAKEN_HOME`,
//!    else in the nearest ancestor of the executable's directory that has
//!    one, else under the current directory; a missing file is fine;
//! 3. the file named with `-config PATH`: the original's Erlang-term file
//!    (`[{kraken, [{num_router_shards, 8}]}].`, `octopus` sections too) or
//!    TOML. `PATH.toml` and `PATH.config` are read as what they say; a
//!    `PATH` without either extension is tried as `PATH.config`, then as
//!    `PATH.toml`;
//! 4. environment variables `KRAKEN_<OPTION>` (upper case), except the
//!    tooling's own variables listed in [`TOOLING_ENV`];
//! 5. command-line pairs `-kraken <option> <value>`.
//!
//! The layers are merged by the `config` crate (`config::Config::builder()`):
//! each is a [`Layer`], a custom `config::Source` (the Erlang-term file,
//! TOML files as the crate parses them, the variables the crate's
//! `Environment` source finds, the command-line pairs). Every value of
//! every layer is checked against its option when its layer is read, so a
//! bad value is an error even where a later layer overrides it, and errors
//! come in layer order. The merged values keep their origin
//! (`config::Value::origin`): that is the start-up log's "where each value
//! came from". The merged table is then deserialized into [`Settings`].
//!
//! Options are named as the fields of [`Settings`] (the table in
//! `kraken_actors::settings`). Values from the environment and the command
//! line are read as Erlang terms when they parse as one (`8`, `debug`,
//! `{127,0,0,1}`, `["h:1","h:2"]`, `"quoted"`), and as plain text otherwise
//! (`127.0.0.1`, `/var/run/kraken.pid`, `h:1,h:2`). An unknown option or a
//! bad value is a [`ConfigError`] naming the option, the value and where it
//! came from; the node must not start with it.

use std::collections::HashMap;
use std::ffi::OsString;
use std::fmt;
use std::path::{Path, PathBuf};

use config::Source as _;
use kraken_actors::settings::forms::{self, Raw, Tag};
use kraken_actors::settings::Settings;
pub use kraken_actors::settings::OPTIONS;
use serde::Deserialize as _;

use crate::cli::Cli;
use crate::erlang_term::{self, ConfigItem, Term, TermValue};

/// Options that some version of the original had and that mean nothing
/// here: accepted, so that an old config still starts, and reported in
/// [`Loaded::warnings`]. (`proxy_to_node` named an Erlang node to proxy to;
/// `upstreams` is its replacement.)
pub const IGNORED_OPTIONS: &[&str] = &["proxy_to_node"];

/// `KRAKEN_*` environment variables that are not options but configure the
/// tooling around the node: `KRAKEN_HOME` locates `etc/kraken.toml`,
/// `KRAKEN_NO_BUILD` and `KRAKEN_BIN` are `bin/kraken`'s (skip the build;
/// the binary to run), `KRAKEN_LOG` and `KRAKEN_PROFILE` are kept for
/// logging and build profiles. They are skipped before option parsing.
/// Any other `KRAKEN_*` variable must name an option, so that a misspelt
/// one is not silently ignored.
pub const TOOLING_ENV: &[&str] = &[
    "KRAKEN_HOME",
    "KRAKEN_NO_BUILD",
    "KRAKEN_BIN",
    "KRAKEN_LOG",
    "KRAKEN_PROFILE",
];

/// The prefix of option variables (`KRAKEN_NUM_ROUTER_SHARDS`).
const ENV_PREFIX: &str = "KRAKEN_";

/// The application sections of an Erlang config file that hold our options:
/// the original's name, and the name its README used.
const ERLANG_APPS: &[&str] = &["kraken", "octopus"];

/// Erlang config files may name other config files; this bounds the chain
/// (and so breaks cycles).
const MAX_INCLUDE_DEPTH: usize = 8;

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
    /// The `config` crate failed in a way the checks above do not foresee.
    Merge(String),
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
                        TOOLING_ENV.join(", ")
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
            ConfigError::Merge(message) => write!(f, "{message}"),
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
    // Each layer is read and checked in turn, so errors come in layer order.
    let mut files = Vec::new();
    let mut layers = Vec::new();

    match std::fs::read(etc_file) {
        Ok(bytes) => {
            let source = Source::EtcFile(etc_file.to_path_buf());
            layers.push(Layer::new(toml_items(etc_file, &bytes, source)?)?);
            files.push(etc_file.to_path_buf());
        }
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
        let items = match format {
            Format::Toml => {
                let items = toml_items(&path, &bytes, Source::ConfigFile(path.clone()))?;
                files.push(path);
                items
            }
            Format::Erlang => {
                let mut items = Vec::new();
                read_erlang(&path, &bytes, 0, &mut items, &mut files)?;
                items
            }
        };
        layers.push(Layer::new(items)?);
    }

    layers.push(Layer::new(env_items(env)?)?);

    let cli_items = cli
        .pairs
        .iter()
        .map(|(option, text)| Item {
            option: option.clone(),
            value: raw_from_text(text),
            at: Location {
                source: Source::CommandLine,
                line: None,
            },
        })
        .collect();
    layers.push(Layer::new(cli_items)?);

    // Every origin a merged value can carry, back to its location.
    let locations: HashMap<&str, &Location> = layers
        .iter()
        .flat_map(|l| &l.locations)
        .map(|(origin, at)| (origin.as_str(), at))
        .collect();
    let mut builder = config::Config::builder();
    for layer in &layers {
        builder = builder.add_source(layer.clone());
    }
    let merged = builder
        .build()
        .map_err(|e| ConfigError::Merge(e.to_string()))?;
    let mut table = merged
        .cache
        .into_table()
        .map_err(|e| ConfigError::Merge(e.to_string()))?;

    let location_of = |value: &config::Value| {
        value.origin().and_then(|o| locations.get(o)).map_or(
            Location {
                source: Source::Default,
                line: None,
            },
            |at| (*at).clone(),
        )
    };
    let mut warnings = Vec::new();
    for option in IGNORED_OPTIONS {
        if let Some(value) = table.remove(*option) {
            warnings.push(format!(
                "{}: option {option} of the original Kraken has no meaning here and is \
                 ignored (value {}); see upstreams",
                location_of(&value),
                raw_of(&value)
            ));
        }
    }
    let origins: HashMap<String, Source> = table
        .iter()
        .map(|(option, value)| (option.clone(), location_of(value).source))
        .collect();
    let settings = Settings::deserialize(config::Value::new(None, table))
        .map_err(|e| ConfigError::Merge(e.to_string()))?;

    // The start-up log shows the control socket in effect, not "none".
    let mut shown = settings.clone();
    shown.control_socket = Some(settings.control_socket_path());
    let sources = shown
        .rendered()
        .into_iter()
        .map(|(option, text)| {
            let source = origins.get(option).cloned().unwrap_or(Source::Default);
            (option.to_string(), text, source)
        })
        .collect();
    Ok(Loaded {
        settings,
        sources,
        files,
        warnings,
    })
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

/// One `option = value` of a layer, where it was given.
#[derive(Debug, Clone)]
struct Item {
    option: String,
    value: Raw,
    at: Location,
}

/// One layer (a file, the environment or the command line) as a `config`
/// source: its values, each checked against its option when the layer is
/// made, in the order given (a later one of the same option wins). Each
/// value's origin is where it was given, as text; `locations` maps that
/// text back.
#[derive(Debug, Clone)]
struct Layer {
    values: Vec<(String, config::Value)>,
    locations: Vec<(String, Location)>,
}

impl Layer {
    fn new(items: Vec<Item>) -> Result<Layer, ConfigError> {
        let mut layer = Layer {
            values: Vec::with_capacity(items.len()),
            locations: Vec::with_capacity(items.len()),
        };
        for item in items {
            let value = checked(&item)?;
            layer.locations.push((item.at.to_string(), item.at));
            layer.values.push((item.option, value));
        }
        Ok(layer)
    }
}

impl config::Source for Layer {
    fn clone_into_box(&self) -> Box<dyn config::Source + Send + Sync> {
        Box::new(self.clone())
    }

    fn collect(&self) -> Result<config::Map<String, config::Value>, config::ConfigError> {
        Ok(self.values.iter().cloned().collect())
    }
}

/// The top-level keys of a TOML file (parsed by the `config` crate), in
/// line order.
fn toml_items(path: &Path, bytes: &[u8], source: Source) -> Result<Vec<Item>, ConfigError> {
    let text = decode(bytes);
    let table = config::File::from_str(&text, config::FileFormat::Toml)
        .collect()
        .map_err(|e| ConfigError::Syntax {
            path: path.to_path_buf(),
            message: tidy_toml_error(&e.to_string()),
        })?;
    let mut items: Vec<(Option<u32>, Item)> = table
        .into_iter()
        .map(|(key, value)| {
            let line = toml_key_line(&text, &key);
            let item = Item {
                value: raw_of(&value),
                option: key,
                at: Location {
                    source: source.clone(),
                    line,
                },
            };
            (line, item)
        })
        .collect();
    items.sort_by(|(a, x), (b, y)| {
        (a.unwrap_or(u32::MAX), &x.option).cmp(&(b.unwrap_or(u32::MAX), &y.option))
    });
    Ok(items.into_iter().map(|(_, item)| item).collect())
}

/// The `KRAKEN_<OPTION>` variables, as the `config` crate's `Environment`
/// source (prefix `KRAKEN`) reads them, with the [`TOOLING_ENV`] variables
/// left out; each value is an Erlang term or text. Sorted by variable.
fn env_items(env: &HashMap<String, String>) -> Result<Vec<Item>, ConfigError> {
    let options: config::Map<String, String> = env
        .iter()
        .filter(|(k, _)| k.starts_with(ENV_PREFIX) && !TOOLING_ENV.contains(&k.as_str()))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    // The source names an option by its variable's lower-cased rest.
    let vars: HashMap<String, String> = options
        .keys()
        .map(|var| (var[ENV_PREFIX.len()..].to_ascii_lowercase(), var.clone()))
        .collect();
    let source =
        config::Environment::with_prefix(ENV_PREFIX.trim_end_matches('_')).source(Some(options));
    let mut items: Vec<Item> = source
        .collect()
        .map_err(|e| ConfigError::Merge(e.to_string()))?
        .into_iter()
        .map(|(option, value)| {
            let text = value.into_string().unwrap_or_default();
            let var = vars
                .get(&option)
                .cloned()
                .unwrap_or_else(|| format!("{ENV_PREFIX}{}", option.to_ascii_uppercase()));
            Item {
                option,
                value: raw_from_text(&text),
                at: Location {
                    source: Source::Env(var),
                    line: None,
                },
            }
        })
        .collect();
    items.sort_by_key(|item| item.at.to_string());
    Ok(items)
}

/// Checks one item against its option; returns its value for the merge,
/// its origin set to where it was given.
fn checked(item: &Item) -> Result<config::Value, ConfigError> {
    let origin = item.at.to_string();
    let value = config::Value::new(Some(&origin), to_config(&item.value));
    let option = item.option.as_str();
    if OPTIONS.contains(&option) {
        // Deserializing a table of just this option runs its check.
        let mut one = config::Map::new();
        one.insert(item.option.clone(), value.clone());
        Settings::deserialize(config::Value::new(None, one)).map_err(|e| {
            ConfigError::BadValue {
                option: item.option.clone(),
                value: item.value.to_string(),
                reason: check_reason(e),
                at: item.at.clone(),
            }
        })?;
        Ok(value)
    } else if IGNORED_OPTIONS.contains(&option) {
        Ok(value)
    } else {
        Err(ConfigError::UnknownOption {
            option: item.option.clone(),
            value: item.value.to_string(),
            at: item.at.clone(),
            suggestion: suggest(option),
        })
    }
}

/// The reason an option's check gave, without the `config` crate's
/// "for key ..." decoration.
fn check_reason(e: config::ConfigError) -> String {
    match e {
        config::ConfigError::At { error, .. } => check_reason(*error),
        config::ConfigError::Message(reason) => reason,
        other => other.to_string(),
    }
}

/// A value as the `config` crate carries it (the kinds it lacks tagged, see
/// `kraken_actors::settings::forms`).
fn to_config(raw: &Raw) -> config::ValueKind {
    use config::ValueKind as K;
    let seq = |items: &[Raw]| -> Vec<config::Value> {
        items
            .iter()
            .map(|i| config::Value::new(None, to_config(i)))
            .collect()
    };
    match raw {
        Raw::Int(i) => match i64::try_from(*i) {
            Ok(small) => K::I64(small),
            Err(_) => K::I128(*i),
        },
        Raw::Float(x) => K::Float(*x),
        Raw::Bool(b) => K::Boolean(*b),
        Raw::Str(s) => K::String(s.clone()),
        Raw::Atom(a) => K::String(forms::tagged(Tag::Atom, a)),
        Raw::Text(t) => K::String(forms::tagged(Tag::Text, t)),
        Raw::Other(desc) => K::String(forms::tagged(Tag::Other, desc)),
        Raw::List(items) => K::Array(seq(items)),
        Raw::Tuple(items) => {
            let mut all = vec![config::Value::new(
                None,
                K::String(forms::TUPLE_HEAD.into()),
            )];
            all.extend(seq(items));
            K::Array(all)
        }
    }
}

/// A `config` value as a [`Raw`] one (reading back tags).
fn raw_of(value: &config::Value) -> Raw {
    Raw::deserialize(value.clone()).unwrap_or_else(|e| Raw::Other(e.to_string()))
}

fn raw_from_term(term: &Term) -> Raw {
    match &term.value {
        TermValue::Integer(i) => Raw::Int(*i),
        TermValue::Float(x) => Raw::Float(*x),
        TermValue::Atom(a) => Raw::Atom(a.clone()),
        TermValue::String(s) => Raw::Str(s.clone()),
        TermValue::Binary(b) => match String::from_utf8(b.clone()) {
            Ok(s) => Raw::Str(s),
            Err(_) => Raw::Other(term.to_string()),
        },
        TermValue::List(items) => Raw::List(items.iter().map(raw_from_term).collect()),
        TermValue::Tuple(items) => Raw::Tuple(items.iter().map(raw_from_term).collect()),
    }
}

/// A value from the environment or the command line: an Erlang term if it
/// parses as one, else plain text.
fn raw_from_text(text: &str) -> Raw {
    match erlang_term::parse_value(text) {
        Ok(term) => raw_from_term(&term),
        Err(_) => Raw::Text(text.to_string()),
    }
}

/// Reads an Erlang-term config file and the files it includes, in order,
/// into `items`; `files` gets each file read.
fn read_erlang(
    path: &Path,
    bytes: &[u8],
    depth: usize,
    items: &mut Vec<Item>,
    files: &mut Vec<PathBuf>,
) -> Result<(), ConfigError> {
    let syntax = |e: erlang_term::ParseError| ConfigError::Syntax {
        path: path.to_path_buf(),
        message: e.to_string(),
    };
    let text = decode(bytes);
    let root = erlang_term::parse_file(&text).map_err(syntax)?;
    let entries = erlang_term::config_items(&root, ERLANG_APPS).map_err(syntax)?;
    files.push(path.to_path_buf());
    for entry in entries {
        match entry {
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
                read_erlang(&included, &bytes, depth + 1, items, files)?;
            }
            ConfigItem::Setting {
                option, value, pos, ..
            } => items.push(Item {
                option,
                value: raw_from_term(&value),
                at: Location {
                    source: Source::ConfigFile(path.to_path_buf()),
                    line: Some(pos.line),
                },
            }),
        }
    }
    Ok(())
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

/// The known option nearest to a misspelt one, if any is near: one having
/// every word of it (`tcp_port`: `tcp_server_port`), else one a few edits
/// away.
fn suggest(option: &str) -> Option<&'static str> {
    let option = option.to_ascii_lowercase();
    let words: Vec<&str> = option.split('_').filter(|w| !w.is_empty()).collect();
    OPTIONS
        .iter()
        .chain(IGNORED_OPTIONS)
        .map(|o| {
            let has_words =
                words.len() > 1 && words.iter().all(|w| o.split('_').any(|ow| ow == *w));
            (!has_words, edit_distance(&option, o), *o)
        })
        .filter(|(lacks_words, d, o)| !lacks_words || *d <= 3.max(o.len() / 5))
        .min()
        .map(|(_, _, o)| o)
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli;
    use kraken_actors::settings::{LogFormat, LogLevel};
    use std::net::{IpAddr, SocketAddr};
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

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
        assert!(source_of(&loaded, "control_socket")
            .0
            .ends_with("/kraken-12355.sock"));
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
            let commented = [
                "router_threads",
                "pid_file",
                "log_file",
                "control_socket",
                "runtime_dir",
                "upstreams",
            ];
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
             -kraken log_file /var/log/kraken.log -kraken log_level debug \
             -kraken client_idle_timeout 60 -kraken max_line_bytes 4096 \
             -kraken max_request_bytes 1000000 -kraken max_topic_bytes 512 \
             -kraken max_queue_messages 77 -kraken max_queue_bytes 8888 \
             -kraken control_socket /run/k.sock -kraken upstreams h1:1,h2:2 \
             -kraken max_restarts 3 -kraken max_restart_seconds 5 \
             -kraken worker_threads 2 -kraken router_threads 0 -kraken fault_injection true \
             -kraken log_format json \
             -kraken metrics_listen 127.0.0.1:9121 -kraken resp_port 6379 \
             -kraken tcp_keepalive_seconds 0 -kraken max_topics_per_message 5 \
             -kraken max_subscriptions_per_client 6 -kraken max_topics_per_node 7 \
             -kraken max_retro_bytes_per_router_shard 8 -kraken max_pending_request_bytes 9 \
             -kraken close_write_timeout_seconds 2.5 -kraken runtime_dir /run/k \
             -kraken poll_gather_ms 0",
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
            router_threads: Some(0),
            fault_injection: true,
            log_format: LogFormat::Json,
            metrics_listen: Some(SocketAddr::from(([127, 0, 0, 1], 9121))),
            resp_port: 6379,
            tcp_keepalive_seconds: Duration::ZERO,
            max_topics_per_message: 5,
            max_subscriptions_per_client: 6,
            max_topics_per_node: 7,
            max_retro_bytes_per_router_shard: 8,
            max_pending_request_bytes: 9,
            close_write_timeout_seconds: Duration::from_millis(2500),
            runtime_dir: Some("/run/k".into()),
            poll_gather_ms: 0,
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
             pid_file=/var/run/kraken.pid log_file=/var/log/kraken.log log_level=debug \
             log_format=json client_idle_timeout=60 max_line_bytes=4096 max_request_bytes=1000000 \
             max_topic_bytes=512 max_queue_messages=77 max_queue_bytes=8888 \
             control_socket=/run/k.sock upstreams=h1:1,h2:2 max_restarts=3 \
             max_restart_seconds=5 worker_threads=2 router_threads=0 fault_injection=true \
             metrics_listen=127.0.0.1:9121 resp_port=6379 tcp_keepalive_seconds=0 \
             max_topics_per_message=5 max_subscriptions_per_client=6 max_topics_per_node=7 \
             max_retro_bytes_per_router_shard=8 max_pending_request_bytes=9 \
             close_write_timeout_seconds=2.5 runtime_dir=/run/k poll_gather_ms=0"
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
            ("ROUTER_THREADS", "1"),
            ("FAULT_INJECTION", "false"),
            ("LOG_FORMAT", "JSON"),
            ("METRICS_LISTEN", "[::1]:9121"),
            ("RESP_PORT", "0"),
            ("TCP_KEEPALIVE_SECONDS", "15"),
            ("MAX_TOPICS_PER_MESSAGE", "11"),
            ("MAX_SUBSCRIPTIONS_PER_CLIENT", "12"),
            ("MAX_TOPICS_PER_NODE", "13"),
            ("MAX_RETRO_BYTES_PER_ROUTER_SHARD", "14"),
            ("MAX_PENDING_REQUEST_BYTES", "15"),
            ("CLOSE_WRITE_TIMEOUT_SECONDS", "1"),
            ("RUNTIME_DIR", "/run/kraken"),
            ("POLL_GATHER_MS", "7"),
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
        assert_eq!(s.router_threads, Some(1));
        assert!(!s.fault_injection);
        assert_eq!(s.log_format, LogFormat::Json);
        assert_eq!(s.metrics_listen, Some("[::1]:9121".parse().unwrap()));
        assert_eq!(s.resp_port, 0);
        assert_eq!(s.tcp_keepalive_seconds, Duration::from_secs(15));
        assert_eq!(
            (
                s.max_topics_per_message,
                s.max_subscriptions_per_client,
                s.max_topics_per_node
            ),
            (11, 12, 13)
        );
        assert_eq!(
            (
                s.max_retro_bytes_per_router_shard,
                s.max_pending_request_bytes
            ),
            (14, 15)
        );
        assert_eq!(s.close_write_timeout_seconds, Duration::from_secs(1));
        assert_eq!(s.runtime_dir, Some("/run/kraken".into()));
        assert_eq!(s.poll_gather_ms, 7);
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
router_threads = 3
fault_injection = true
log_format = "json"
metrics_listen = "10.0.0.1:80"
resp_port = 6380
tcp_keepalive_seconds = 0.5
max_topics_per_message = 15
max_subscriptions_per_client = 16
max_topics_per_node = 17
max_retro_bytes_per_router_shard = 18
max_pending_request_bytes = 19
close_write_timeout_seconds = 20
runtime_dir = "/r"
poll_gather_ms = 21
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
  {router_threads, 3},
  {fault_injection, true},
  {log_format, json},
  {metrics_listen, "10.0.0.1:80"},
  {resp_port, 6380},
  {tcp_keepalive_seconds, 0.5},
  {max_topics_per_message, 15},
  {max_subscriptions_per_client, 16},
  {max_topics_per_node, 17},
  {max_retro_bytes_per_router_shard, 18},
  {max_pending_request_bytes, 19},
  {close_write_timeout_seconds, 20},
  {runtime_dir, <<"/r">>},
  {poll_gather_ms, 21}
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
            router_threads: Some(3),
            fault_injection: true,
            log_format: LogFormat::Json,
            metrics_listen: Some(SocketAddr::from(([10, 0, 0, 1], 80))),
            resp_port: 6380,
            tcp_keepalive_seconds: Duration::from_millis(500),
            max_topics_per_message: 15,
            max_subscriptions_per_client: 16,
            max_topics_per_node: 17,
            max_retro_bytes_per_router_shard: 18,
            max_pending_request_bytes: 19,
            close_write_timeout_seconds: Duration::from_secs(20),
            runtime_dir: Some("/r".into()),
            poll_gather_ms: 21,
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
            ("router_threads", "-1", "bad value -1 for router_threads: must be between 0 and 4096"),
            ("client_idle_timeout", "0", "bad value 0 for client_idle_timeout: must be a number of seconds greater than 0"),
            ("client_idle_timeout", "-1.5", "bad value -1.5 for client_idle_timeout: must be a number of seconds greater than 0"),
            ("client_idle_timeout", "soon", "bad value soon for client_idle_timeout: must be a number of seconds greater than 0, not an atom"),
            ("max_restart_seconds", "1.0e300", "bad value 1e300 for max_restart_seconds: is too large"),
            ("log_level", "loud", "bad value loud for log_level: must be debug, info, warn or error"),
            ("log_level", "3", "bad value 3 for log_level: must be debug, info, warn or error"),
            ("fault_injection", "yes", "bad value yes for fault_injection: must be true or false"),
            ("fault_injection", "1", "bad value 1 for fault_injection: must be true or false"),
            ("pid_file", "{a}", "bad value {a} for pid_file: must be a file path (a string), not a tuple"),
            ("upstreams", "h", "bad value h for upstreams: must be a list of host:port; \"h\" is not host:port"),
            ("upstreams", "h:0", "bad value \"h:0\" for upstreams: must be a list of host:port; \"h:0\" is not host:port"),
            ("upstreams", "a:1,:2", "bad value \"a:1,:2\" for upstreams: must be a list of host:port; \":2\" is not host:port"),
            ("upstreams", "[1]", "bad value [1] for upstreams: must be a list of host:port; 1 is not"),
            ("upstreams", "8", "bad value 8 for upstreams: must be a list of host:port, not an integer"),
            ("log_format", "xml", "bad value xml for log_format: must be text or json"),
            ("metrics_listen", "9121", "bad value 9121 for metrics_listen: must be an address IP:PORT (a string), not an integer"),
            ("metrics_listen", "localhost:9121", "bad value \"localhost:9121\" for metrics_listen: must be an address IP:PORT, such as 127.0.0.1:9121 or [::1]:9121"),
            ("resp_port", "70000", "bad value 70000 for resp_port: must be between 0 and 65535"),
            ("tcp_keepalive_seconds", "-1", "bad value -1 for tcp_keepalive_seconds: must be a number of seconds, 0 or more (0 is off)"),
            ("close_write_timeout_seconds", "0", "bad value 0 for close_write_timeout_seconds: must be a number of seconds greater than 0"),
            ("max_topics_per_message", "0", "bad value 0 for max_topics_per_message: must be at least 1"),
            ("max_subscriptions_per_client", "none", "bad value none for max_subscriptions_per_client: must be an integer, not an atom"),
            ("max_topics_per_node", "-3", "bad value -3 for max_topics_per_node: must be at least 1"),
            ("max_retro_bytes_per_router_shard", "0", "bad value 0 for max_retro_bytes_per_router_shard: must be at least 1"),
            ("max_pending_request_bytes", "1.5", "bad value 1.5 for max_pending_request_bytes: must be an integer, not a float"),
            ("runtime_dir", "[1]", "bad value [1] for runtime_dir: must be a file path (a string), not a list"),
            ("poll_gather_ms", "1001", "bad value 1001 for poll_gather_ms: must be between 0 and 1000"),
            ("poll_gather_ms", "-1", "bad value -1 for poll_gather_ms: must be between 0 and 1000"),
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
             an option or be one of KRAKEN_HOME, KRAKEN_NO_BUILD, KRAKEN_BIN, KRAKEN_LOG, KRAKEN_PROFILE)"
        );
        // Reserved variables are not options.
        for var in TOOLING_ENV {
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
    fn tooling_variables_never_reach_option_parsing() {
        // What the systemd unit and bin/kraken set.
        let tooling = env(&[
            ("KRAKEN_NO_BUILD", "1"),
            ("KRAKEN_HOME", "/opt/kraken"),
            ("KRAKEN_BIN", "/opt/kraken/target/release/kraken"),
            ("KRAKEN_LOG", "debug"),
            ("KRAKEN_PROFILE", "release"),
            ("KRAKEN_NUM_ROUTER_SHARDS", "6"),
        ]);
        let loaded = load_plain(&args("run"), &tooling).unwrap();
        assert_eq!(loaded.settings.num_router_shards, 6);
        let not_default: Vec<&str> = loaded
            .sources
            .iter()
            .filter(|(_, _, s)| *s != Source::Default)
            .map(|(o, _, _)| o.as_str())
            .collect();
        assert_eq!(not_default, ["num_router_shards"]);
        // Only the listed names are skipped: a near miss is still an error.
        let e = err(&args("run"), &env(&[("KRAKEN_NO_BUILDS", "1")]));
        assert!(
            e.starts_with(
                "environment variable KRAKEN_NO_BUILDS: unknown option 'no_builds' (value 1)"
            ),
            "{e}"
        );
        // Variables without the KRAKEN_ prefix (or in lower case) are not ours.
        assert!(load_plain(
            &args("run"),
            &env(&[("kraken_frob", "1"), ("KRAKENX", "1")])
        )
        .is_ok());
    }

    #[test]
    fn the_tooling_variables_are_documented_where_options_are() {
        let etc = std::fs::read_to_string(repo_etc()).unwrap();
        for var in TOOLING_ENV {
            assert!(
                cli::usage().contains(var),
                "{var} missing from the usage text"
            );
            assert!(etc.contains(var), "{var} missing from etc/kraken.toml");
        }
    }

    #[test]
    fn every_layer_is_checked_even_where_a_later_one_overrides_it() {
        let dir = TempDir::new();
        let etc = dir.write("etc/kraken.toml", "num_router_shards = 0\n");
        let cli = args("run -kraken num_router_shards 8");
        assert_eq!(
            load_with_etc(&cli, &no_env(), &etc)
                .unwrap_err()
                .to_string(),
            format!(
                "{}:1: bad value 0 for num_router_shards: must be between 1 and 65536",
                etc.display()
            )
        );
        // Errors come in layer order: the etc file's before the environment's.
        let env = env(&[("KRAKEN_MAX_TCP_CLIENTS", "0")]);
        assert!(load_with_etc(&cli, &env, &etc)
            .unwrap_err()
            .to_string()
            .starts_with(&etc.display().to_string()));
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
