//! The forms an option's value may take, and the checks that turn a given
//! value into a [`Settings`](super::Settings) field: each `pub fn` with a
//! serde `Deserializer` argument is named by an option in the `settings!`
//! table. A check fails with a reason ("must be at least 1"); the loader
//! adds the option, the value and where it came from.
//!
//! Values arrive as a [`Raw`]: what a TOML file, an Erlang-term file, an
//! environment variable or a command-line pair gave, before it is checked.
//! The `config` crate's values know integers, floats, booleans, strings,
//! lists and tables; the kinds they lack (Erlang atoms and tuples, untyped
//! text from the environment and the command line) travel through them
//! tagged, as [`tagged`] strings and [`TUPLE_HEAD`]-led lists, and
//! [`Raw`]'s `Deserialize` reads them back.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use serde::de::{self, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;

use super::{LogFormat, LogLevel};

/// Upper bounds that keep a typo from asking for absurd resources.
const MAX_ROUTER_SHARDS: i128 = 65_536;
const MAX_WORKER_THREADS: i128 = 4_096;

/// Starts every tagged string; no option's text starts with it.
const TAG: char = '\u{0}';

/// The first element of a list that is really an Erlang tuple.
pub const TUPLE_HEAD: &str = "\u{0}tuple";

/// The kinds of tagged text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tag {
    Atom,
    Text,
    Other,
}

impl Tag {
    fn name(self) -> &'static str {
        match self {
            Tag::Atom => "atom",
            Tag::Text => "text",
            Tag::Other => "other",
        }
    }
}

/// `text` tagged as `tag`, as a string the `config` crate can carry.
pub fn tagged(tag: Tag, text: &str) -> String {
    format!("{TAG}{}{TAG}{text}", tag.name())
}

/// A value as a source gave it, before it is checked against its option.
#[derive(Debug, Clone, PartialEq)]
pub enum Raw {
    Int(i128),
    Float(f64),
    Bool(bool),
    /// A typed string: TOML `"x"`, Erlang `"x"` or `<<"x">>`.
    Str(String),
    /// An Erlang atom.
    Atom(String),
    /// Untyped text from the environment or the command line.
    Text(String),
    List(Vec<Raw>),
    Tuple(Vec<Raw>),
    /// Something no option takes (a TOML table, a non-UTF-8 binary), as it
    /// should be shown in a message.
    Other(String),
}

impl fmt::Display for Raw {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fn seq(f: &mut fmt::Formatter<'_>, open: &str, items: &[Raw], close: &str) -> fmt::Result {
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
            Raw::Int(i) => write!(f, "{i}"),
            Raw::Float(x) => write!(f, "{x:?}"),
            Raw::Bool(b) => write!(f, "{b}"),
            Raw::Str(s) | Raw::Text(s) => write!(f, "{s:?}"),
            Raw::Atom(a) => f.write_str(a),
            Raw::List(items) => seq(f, "[", items, "]"),
            Raw::Tuple(items) => seq(f, "{", items, "}"),
            Raw::Other(desc) => f.write_str(desc),
        }
    }
}

impl Raw {
    /// What kind of value this is, for "must be X, not Y".
    pub fn kind(&self) -> &'static str {
        match self {
            Raw::Int(_) => "an integer",
            Raw::Float(_) => "a float",
            Raw::Bool(_) => "a boolean",
            Raw::Str(_) | Raw::Text(_) => "a string",
            Raw::Atom(_) => "an atom",
            Raw::List(_) => "a list",
            Raw::Tuple(_) => "a tuple",
            Raw::Other(_) => "something else",
        }
    }

    /// The text of strings, atoms and untyped text.
    fn text(&self) -> Option<&str> {
        match self {
            Raw::Str(s) | Raw::Atom(s) | Raw::Text(s) => Some(s),
            _ => None,
        }
    }

    fn from_str(s: &str) -> Raw {
        let Some(rest) = s.strip_prefix(TAG) else {
            return Raw::Str(s.to_string());
        };
        match rest.split_once(TAG) {
            Some(("atom", t)) => Raw::Atom(t.to_string()),
            Some(("text", t)) => Raw::Text(t.to_string()),
            Some(("other", t)) => Raw::Other(t.to_string()),
            _ => Raw::Other(s.to_string()),
        }
    }
}

impl<'de> Deserialize<'de> for Raw {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Raw, D::Error> {
        d.deserialize_any(RawVisitor)
    }
}

struct RawVisitor;

impl<'de> Visitor<'de> for RawVisitor {
    type Value = Raw;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a configuration value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Raw, E> {
        Ok(Raw::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Raw, E> {
        Ok(Raw::Int(i128::from(v)))
    }

    fn visit_i128<E>(self, v: i128) -> Result<Raw, E> {
        Ok(Raw::Int(v))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Raw, E> {
        Ok(Raw::Int(i128::from(v)))
    }

    fn visit_u128<E>(self, v: u128) -> Result<Raw, E> {
        Ok(i128::try_from(v).map_or_else(|_| Raw::Other(v.to_string()), Raw::Int))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Raw, E> {
        Ok(Raw::Float(v))
    }

    fn visit_str<E>(self, v: &str) -> Result<Raw, E> {
        Ok(Raw::from_str(v))
    }

    fn visit_none<E>(self) -> Result<Raw, E> {
        Ok(Raw::Other("nothing".to_string()))
    }

    fn visit_unit<E>(self) -> Result<Raw, E> {
        Ok(Raw::Other("nothing".to_string()))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Raw, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element::<Raw>()? {
            items.push(item);
        }
        if items.first() == Some(&Raw::Other(TUPLE_HEAD.to_string())) {
            items.remove(0);
            return Ok(Raw::Tuple(items));
        }
        Ok(Raw::List(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Raw, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(Raw::Other("a table".to_string()))
    }
}

/// Reads a [`Raw`] and checks it with `check`.
fn with<'de, D: Deserializer<'de>, T>(
    d: D,
    check: impl FnOnce(&Raw) -> Result<T, String>,
) -> Result<T, D::Error> {
    let raw = Raw::deserialize(d)?;
    check(&raw).map_err(de::Error::custom)
}

/// An IP address: text (`127.0.0.1`, `::1`, `[::1]`, `any`, `loopback`) or
/// an Erlang tuple of 4 or 8 numbers.
pub fn ip<'de, D: Deserializer<'de>>(d: D) -> Result<IpAddr, D::Error> {
    with(d, parse_ip)
}

/// A TCP port, 0 to 65535.
pub fn port<'de, D: Deserializer<'de>>(d: D) -> Result<u16, D::Error> {
    with(d, |v| int_in(v, 0, 65_535).map(|i| i as u16))
}

/// A count or a size in bytes, at least 1.
pub fn count<'de, D: Deserializer<'de>>(d: D) -> Result<usize, D::Error> {
    with(d, |v| size(v, 1))
}

/// 1 to 65536 router shards.
pub fn router_shards<'de, D: Deserializer<'de>>(d: D) -> Result<usize, D::Error> {
    with(d, |v| int_in(v, 1, MAX_ROUTER_SHARDS).map(|i| i as usize))
}

/// 0 to 4096 worker threads.
pub fn worker_threads<'de, D: Deserializer<'de>>(d: D) -> Result<usize, D::Error> {
    with(d, |v| int_in(v, 0, MAX_WORKER_THREADS).map(|i| i as usize))
}

/// Threads that run only router shards: 0 to 4096.
pub fn router_threads<'de, D: Deserializer<'de>>(d: D) -> Result<Option<usize>, D::Error> {
    with(d, |v| {
        int_in(v, 0, MAX_WORKER_THREADS).map(|i| Some(i as usize))
    })
}

/// A poll's gathering wait: 0 to 1000 milliseconds.
pub fn poll_gather_ms<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    with(d, |v| int_in(v, 0, 1000).map(|i| i as u32))
}

/// A number of restarts, 0 to 2^32 - 1.
pub fn restarts<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    with(d, |v| int_in(v, 0, i128::from(u32::MAX)).map(|i| i as u32))
}

/// A duration in seconds, more than zero (fractions allowed).
pub fn seconds<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    with(d, |v| parse_seconds(v, false))
}

/// A duration in seconds, or 0 for off.
pub fn seconds_or_off<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    with(d, |v| parse_seconds(v, true))
}

/// true or false.
pub fn boolean<'de, D: Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    with(d, parse_boolean)
}

/// debug, info, warn (warning) or error.
pub fn log_level<'de, D: Deserializer<'de>>(d: D) -> Result<LogLevel, D::Error> {
    with(d, |v| {
        v.text()
            .and_then(LogLevel::parse)
            .ok_or_else(|| "must be debug, info, warn or error".to_string())
    })
}

/// text or json.
pub fn log_format<'de, D: Deserializer<'de>>(d: D) -> Result<LogFormat, D::Error> {
    with(d, |v| {
        v.text()
            .and_then(LogFormat::parse)
            .ok_or_else(|| "must be text or json".to_string())
    })
}

/// A file path; an empty string or the atom `undefined` means none.
pub fn path<'de, D: Deserializer<'de>>(d: D) -> Result<Option<PathBuf>, D::Error> {
    with(d, |v| {
        Ok(optional_text(v, "a file path (a string)")?.map(PathBuf::from))
    })
}

/// `IP:PORT` (`[::1]:9121` for IPv6); an empty string or `undefined` means off.
pub fn socket_addr<'de, D: Deserializer<'de>>(d: D) -> Result<Option<SocketAddr>, D::Error> {
    with(d, |v| {
        match optional_text(v, "an address IP:PORT (a string)")? {
            None => Ok(None),
            Some(text) => text.trim().parse().map(Some).map_err(|_| {
                "must be an address IP:PORT, such as 127.0.0.1:9121 or [::1]:9121".to_string()
            }),
        }
    })
}

/// A list of `host:port`: a TOML array or Erlang list of strings (or of
/// Erlang `{Host, Port}` tuples), or a comma-separated string.
pub fn upstreams<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    with(d, parse_upstreams)
}

fn int(value: &Raw) -> Result<i128, String> {
    match value {
        Raw::Int(i) => Ok(*i),
        Raw::Text(t) => t
            .trim()
            .parse()
            .map_err(|_| "must be an integer".to_string()),
        other => Err(format!("must be an integer, not {}", other.kind())),
    }
}

fn int_in(value: &Raw, min: i128, max: i128) -> Result<i128, String> {
    let i = int(value)?;
    if i < min || i > max {
        return Err(format!("must be between {min} and {max}"));
    }
    Ok(i)
}

fn size(value: &Raw, min: i128) -> Result<usize, String> {
    let i = int(value)?;
    if i < min {
        return Err(format!("must be at least {min}"));
    }
    usize::try_from(i).map_err(|_| "is too large".to_string())
}

fn parse_seconds(value: &Raw, zero_is_off: bool) -> Result<Duration, String> {
    let what = if zero_is_off {
        "must be a number of seconds, 0 or more (0 is off)"
    } else {
        "must be a number of seconds greater than 0"
    };
    let too_small = |secs: f64| secs < 0.0 || (secs == 0.0 && !zero_is_off);
    let secs: f64 = match value {
        Raw::Int(i) => {
            if too_small(*i as f64) {
                return Err(what.to_string());
            }
            return u64::try_from(*i)
                .map(Duration::from_secs)
                .map_err(|_| "is too large".to_string());
        }
        Raw::Float(x) => *x,
        Raw::Text(t) => t.trim().parse().map_err(|_| what.to_string())?,
        other => return Err(format!("{what}, not {}", other.kind())),
    };
    if secs.is_nan() || too_small(secs) {
        return Err(what.to_string());
    }
    Duration::try_from_secs_f64(secs).map_err(|_| "is too large".to_string())
}

fn parse_boolean(value: &Raw) -> Result<bool, String> {
    match value {
        Raw::Bool(b) => Ok(*b),
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

/// Text, or none for an empty string or the atom `undefined`.
fn optional_text<'a>(value: &'a Raw, what: &str) -> Result<Option<&'a str>, String> {
    match value {
        Raw::Atom(a) if a == "undefined" => Ok(None),
        other => match other.text() {
            Some("") => Ok(None),
            Some(t) => Ok(Some(t)),
            None => Err(format!("must be {what}, not {}", other.kind())),
        },
    }
}

fn parse_ip(value: &Raw) -> Result<IpAddr, String> {
    const WHAT: &str =
        "must be an IP address (such as 127.0.0.1 or ::1), any, or a tuple such as {127,0,0,1}";
    match value {
        Raw::Tuple(parts) => {
            let numbers: Option<Vec<i128>> = parts
                .iter()
                .map(|p| match p {
                    Raw::Int(i) => Some(*i),
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

fn parse_upstreams(value: &Raw) -> Result<Vec<String>, String> {
    const WHAT: &str = "must be a list of host:port";
    let items: Vec<String> = match value {
        Raw::List(items) => items
            .iter()
            .map(|item| match item {
                Raw::Tuple(hp) if hp.len() == 2 => match (hp[0].text(), &hp[1]) {
                    (Some(host), Raw::Int(port)) => Ok(format!("{host}:{port}")),
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

/// An option's value as the start-up log shows it.
pub trait Render {
    fn render(&self) -> String;
}

macro_rules! render_by_display {
    ($($ty:ty),*) => {
        $(impl Render for $ty {
            fn render(&self) -> String {
                self.to_string()
            }
        })*
    };
}

render_by_display!(u16, u32, usize, bool, IpAddr);

impl Render for Duration {
    /// Whole seconds as an integer, else as a decimal (`1.5`).
    fn render(&self) -> String {
        if self.subsec_nanos() == 0 {
            self.as_secs().to_string()
        } else {
            self.as_secs_f64().to_string()
        }
    }
}

impl Render for Option<PathBuf> {
    fn render(&self) -> String {
        self.as_ref()
            .map_or_else(|| "none".to_string(), |p| p.display().to_string())
    }
}

impl Render for Option<usize> {
    fn render(&self) -> String {
        self.map_or_else(|| "auto".to_string(), |n| n.to_string())
    }
}

impl Render for Option<SocketAddr> {
    fn render(&self) -> String {
        self.map_or_else(|| "off".to_string(), |a| a.to_string())
    }
}

impl Render for Vec<String> {
    fn render(&self) -> String {
        if self.is_empty() {
            "none".to_string()
        } else {
            self.join(",")
        }
    }
}

impl Render for LogLevel {
    fn render(&self) -> String {
        self.as_str().to_string()
    }
}

impl Render for LogFormat {
    fn render(&self) -> String {
        self.as_str().to_string()
    }
}
