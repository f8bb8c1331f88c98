//! The figures of a run, printed for a person or as one JSON object line.

use crate::hist::Histogram;
use crate::sys::{CpuSpan, Snapshot};

pub enum Value {
    Int(i64),
    Float(f64),
    Str(String),
    List(Vec<f64>),
    Null,
}

struct Figure {
    key: String,
    value: Value,
    /// Unit and meaning, for the human report.
    note: String,
}

pub struct Report {
    pub title: String,
    figures: Vec<Figure>,
    pub warnings: Vec<String>,
}

impl Report {
    pub fn new(title: String) -> Report {
        Report {
            title,
            figures: Vec::new(),
            warnings: Vec::new(),
        }
    }

    fn push(&mut self, key: &str, value: Value, note: &str) {
        self.figures.push(Figure {
            key: key.to_string(),
            value,
            note: note.to_string(),
        });
    }

    pub fn int(&mut self, key: &str, v: i64, note: &str) {
        self.push(key, Value::Int(v), note);
    }

    pub fn float(&mut self, key: &str, v: f64, note: &str) {
        let v = if v.is_finite() {
            Value::Float(v)
        } else {
            Value::Null
        };
        self.push(key, v, note);
    }

    pub fn opt_float(&mut self, key: &str, v: Option<f64>, note: &str) {
        match v {
            Some(v) => self.float(key, v, note),
            None => self.push(key, Value::Null, note),
        }
    }

    pub fn opt_int(&mut self, key: &str, v: Option<i64>, note: &str) {
        match v {
            Some(v) => self.int(key, v, note),
            None => self.push(key, Value::Null, note),
        }
    }

    pub fn str(&mut self, key: &str, v: &str, note: &str) {
        self.push(key, Value::Str(v.to_string()), note);
    }

    pub fn list(&mut self, key: &str, v: Vec<f64>, note: &str) {
        self.push(key, Value::List(v), note);
    }

    /// `<prefix>_p50_us`, `_p99_us`, `_p999_us`, `_max_us`, `_count`.
    pub fn latency(&mut self, prefix: &str, h: &Histogram, what: &str) {
        let us = |v: Option<u64>| v.map(|ns| ns as f64 / 1000.0);
        self.int(
            &format!("{prefix}_count"),
            h.count() as i64,
            &format!("samples of {what}"),
        );
        self.opt_float(
            &format!("{prefix}_mean_us"),
            h.mean().map(|m| m / 1000.0),
            &format!("µs, mean {what}"),
        );
        self.opt_float(
            &format!("{prefix}_p50_us"),
            us(h.quantile(0.50)),
            &format!("µs, median {what}"),
        );
        self.opt_float(
            &format!("{prefix}_p99_us"),
            us(h.quantile(0.99)),
            &format!("µs, 99th percentile {what}"),
        );
        self.opt_float(
            &format!("{prefix}_p999_us"),
            us(h.quantile(0.999)),
            &format!("µs, 99.9th percentile {what}"),
        );
        self.opt_float(
            &format!("{prefix}_max_us"),
            us(h.max()),
            &format!("µs, largest {what}"),
        );
    }

    /// CPU figures over a span: own and server CPU seconds and cores busy,
    /// and, when `deliveries` is given, server CPU µs per delivery.
    pub fn cpu(&mut self, s: &CpuSpan, deliveries: Option<u64>, threads: usize) {
        let machine = crate::sys::cores() as f64;
        self.float(
            "measured_wall_s",
            s.wall,
            "s, wall time the CPU figures cover",
        );
        self.float(
            "client_cpu_s",
            s.self_cpu,
            "s, CPU used by this load generator",
        );
        self.float(
            "client_cores_busy",
            s.self_cpu / s.wall,
            "cores, load generator CPU / wall",
        );
        self.opt_float(
            "server_cpu_s",
            s.server_cpu,
            "s, CPU used by the server (--server-pid)",
        );
        self.opt_float(
            "server_cores_busy",
            s.server_cpu.map(|c| c / s.wall),
            "cores, server CPU / wall",
        );
        if let Some(d) = deliveries {
            self.opt_float(
                "server_cpu_us_per_delivery",
                s.server_cpu.filter(|_| d > 0).map(|c| c * 1e6 / d as f64),
                "µs, server CPU / deliveries",
            );
        }
        self.int("machine_cores", machine as i64, "cores on this machine");
        let machine_busy = s.machine_busy.map(|m| m / s.wall);
        self.opt_float(
            "machine_cores_busy",
            machine_busy,
            "cores, CPU of every process on the machine / wall",
        );
        let other = machine_busy
            .map(|m| (m - s.self_cpu / s.wall - s.server_cpu.unwrap_or(0.0) / s.wall).max(0.0));
        self.opt_float(
            "other_cores_busy",
            other,
            "cores, machine busy - client - server (others disturbing the run; includes the server without --server-pid)",
        );
        if let Some(o) = other.filter(|&o| s.server_cpu.is_some() && s.wall > 0.5 && o > 0.25) {
            self.warnings.push(format!(
                "other processes kept {o:.2} cores busy during the run: the figures are disturbed"
            ));
        }
        let client = s.self_cpu / s.wall;
        let total =
            machine_busy.unwrap_or(client + s.server_cpu.map(|c| c / s.wall).unwrap_or(0.0));
        if s.wall > 0.5 && total > 0.9 * machine {
            self.warnings.push(format!(
                "the machine was saturated ({total:.2} of {machine} cores busy, client {client:.2}): \
                 figures are bounded by CPU, the client's share included"
            ));
        }
        let client_max = (threads as f64).min(machine);
        if s.wall > 0.5 && client > 0.8 * client_max {
            self.warnings.push(format!(
                "the client used {client:.2} cores of the {client_max} its --threads {threads} \
                 allow: it may have been the bottleneck"
            ));
        }
    }

    /// Server RSS figures from snapshots at start, once connected and at end.
    pub fn rss(&mut self, start: &Snapshot, connected: &Snapshot, end: &Snapshot, conns: u64) {
        let kib = |s: &Snapshot| s.server_rss_kib.map(|k| k as i64);
        self.opt_int(
            "server_rss_start_kib",
            kib(start),
            "KiB, server RSS before connecting",
        );
        self.opt_int(
            "server_rss_connected_kib",
            kib(connected),
            "KiB, server RSS once all connected and subscribed",
        );
        self.opt_int(
            "server_rss_end_kib",
            kib(end),
            "KiB, server RSS at the end of the load, still connected",
        );
        // Bytes per connection grown from `start` to `at`.
        let per = |at: &Snapshot| match (start.server_rss_kib, at.server_rss_kib) {
            (Some(a), Some(b)) if conns > 0 => Some((b as f64 - a as f64) * 1024.0 / conns as f64),
            _ => None,
        };
        self.opt_float(
            "server_rss_per_conn_bytes",
            per(connected),
            "bytes, (connected RSS - start RSS) / connections",
        );
        self.opt_float(
            "server_rss_per_conn_settled_bytes",
            per(end),
            "bytes, (RSS at the end of the load - start RSS) / connections: what \
             the connections cost once the server settled after the connects",
        );
    }

    pub fn to_json(&self) -> String {
        let mut s = String::from("{");
        s.push_str(&format!("\"title\":{}", json_str(&self.title)));
        for f in &self.figures {
            s.push(',');
            s.push_str(&json_str(&f.key));
            s.push(':');
            s.push_str(&json_value(&f.value));
        }
        s.push_str(",\"warnings\":[");
        let w: Vec<_> = self.warnings.iter().map(|w| json_str(w)).collect();
        s.push_str(&w.join(","));
        s.push_str("]}");
        s
    }

    pub fn to_text(&self) -> String {
        let mut s = format!("{}\n", self.title);
        let width = self.figures.iter().map(|f| f.key.len()).max().unwrap_or(0);
        for f in &self.figures {
            let v = match &f.value {
                Value::Int(i) => i.to_string(),
                Value::Float(x) => human_float(*x),
                Value::Str(t) => t.clone(),
                Value::Null => "-".to_string(),
                Value::List(l) => {
                    let items: Vec<_> = l.iter().map(|x| human_float(*x)).collect();
                    format!("[{}]", items.join(" "))
                }
            };
            let line = format!("  {:width$}  {:>12}  {}", f.key, v, f.note);
            s.push_str(line.trim_end());
            s.push('\n');
        }
        for w in &self.warnings {
            s.push_str(&format!("  warning: {w}\n"));
        }
        s
    }
}

fn human_float(x: f64) -> String {
    if x == 0.0 {
        "0".into()
    } else if x.abs() >= 1000.0 {
        format!("{x:.0}")
    } else if x.abs() >= 10.0 {
        format!("{x:.1}")
    } else if x.abs() >= 0.1 {
        format!("{x:.3}")
    } else {
        format!("{x:.5}")
    }
}

fn json_value(v: &Value) -> String {
    match v {
        Value::Int(i) => i.to_string(),
        Value::Float(x) if x.is_finite() => format!("{x}"),
        Value::Float(_) | Value::Null => "null".into(),
        Value::Str(s) => json_str(s),
        Value::List(l) => {
            let items: Vec<_> = l.iter().map(|x| json_value(&Value::Float(*x))).collect();
            format!("[{}]", items.join(","))
        }
    }
}

pub fn json_str(s: &str) -> String {
    let mut o = String::with_capacity(s.len() + 2);
    o.push('"');
    for c in s.chars() {
        match c {
            '"' => o.push_str("\\\""),
            '\\' => o.push_str("\\\\"),
            '\n' => o.push_str("\\n"),
            '\r' => o.push_str("\\r"),
            '\t' => o.push_str("\\t"),
            c if (c as u32) < 0x20 => o.push_str(&format!("\\u{:04x}", c as u32)),
            c => o.push(c),
        }
    }
    o.push('"');
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_line() {
        let mut r = Report::new("t \"q\"".into());
        r.int("a", 3, "");
        r.float("b", 1.5, "");
        r.float("c", f64::NAN, "");
        r.opt_int("d", None, "");
        r.str("e", "x\ny", "");
        r.list("f", vec![1.0, 2.5], "");
        r.warnings.push("w".into());
        assert_eq!(
            r.to_json(),
            r#"{"title":"t \"q\"","a":3,"b":1.5,"c":null,"d":null,"e":"x\ny","f":[1,2.5],"warnings":["w"]}"#
        );
        assert!(r.to_text().contains("warning: w"));
    }
}
