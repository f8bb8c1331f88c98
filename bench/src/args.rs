//! A tiny command-line parser: `kraken-bench <scenario> [--flag value | --switch]...`.
//! Each scenario reads the flags it knows with its own defaults; a flag that
//! no one read is an error, so a typo never silently runs the default.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::str::FromStr;

/// Flags that take no value.
const SWITCHES: &[&str] = &["json", "subscribe-all", "help", "resp3"];

pub struct Args {
    values: BTreeMap<String, String>,
    used: RefCell<BTreeSet<String>>,
}

impl Args {
    pub fn parse<I: IntoIterator<Item = String>>(it: I) -> Result<Args, String> {
        let mut values = BTreeMap::new();
        let mut it = it.into_iter();
        while let Some(a) = it.next() {
            let Some(name) = a.strip_prefix("--") else {
                return Err(format!("unexpected argument {a:?}"));
            };
            let (name, value) = match name.split_once('=') {
                Some((n, v)) => (n.to_string(), v.to_string()),
                None if SWITCHES.contains(&name) => (name.to_string(), "true".to_string()),
                None => {
                    let v = it.next().ok_or_else(|| format!("--{name} needs a value"))?;
                    (name.to_string(), v)
                }
            };
            if values.insert(name.clone(), value).is_some() {
                return Err(format!("--{name} given twice"));
            }
        }
        Ok(Args {
            values,
            used: RefCell::new(BTreeSet::new()),
        })
    }

    pub fn get<T: FromStr>(&self, name: &str, default: T) -> Result<T, String> {
        self.used.borrow_mut().insert(name.to_string());
        match self.values.get(name) {
            None => Ok(default),
            Some(v) => v.parse().map_err(|_| format!("--{name}: cannot use {v:?}")),
        }
    }

    pub fn get_str(&self, name: &str, default: &str) -> String {
        self.used.borrow_mut().insert(name.to_string());
        self.values
            .get(name)
            .cloned()
            .unwrap_or_else(|| default.to_string())
    }

    pub fn opt<T: FromStr>(&self, name: &str) -> Result<Option<T>, String> {
        self.used.borrow_mut().insert(name.to_string());
        match self.values.get(name) {
            None => Ok(None),
            Some(v) => v
                .parse()
                .map(Some)
                .map_err(|_| format!("--{name}: cannot use {v:?}")),
        }
    }

    pub fn switch(&self, name: &str) -> Result<bool, String> {
        self.get(name, false)
    }

    /// Error on any flag that was given but never read.
    pub fn finish(&self) -> Result<(), String> {
        let used = self.used.borrow();
        let unknown: Vec<_> = self
            .values
            .keys()
            .filter(|k| !used.contains(*k))
            .map(|k| format!("--{k}"))
            .collect();
        if unknown.is_empty() {
            Ok(())
        } else {
            Err(format!(
                "unknown flag(s) for this scenario: {}",
                unknown.join(" ")
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Result<Args, String> {
        Args::parse(s.split_whitespace().map(String::from))
    }

    #[test]
    fn flags() {
        let a = args("--subscribers 10 --json --rate=500 --addr 127.0.0.1:1").unwrap();
        assert_eq!(a.get("subscribers", 200u64).unwrap(), 10);
        assert_eq!(a.get("rate", 0u64).unwrap(), 500);
        assert_eq!(a.get("publishers", 2u64).unwrap(), 2);
        assert!(a.switch("json").unwrap());
        assert!(a.finish().is_err()); // --addr unread
        assert_eq!(a.get_str("addr", "x"), "127.0.0.1:1");
        assert!(a.finish().is_ok());
        assert!(args("--rate").is_err());
        assert!(args("rate 5").is_err());
        assert!(args("--rate 1 --rate 2").is_err());
        assert!(args("--rate x").unwrap().get("rate", 0u64).is_err());
    }
}
