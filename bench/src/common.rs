//! Pieces shared by the scenarios: the clock, a PRNG and Zipf sampler,
//! loopback-only connecting, the payload header, and the per-subscriber
//! correctness tracker.

use crate::hist::Histogram;
use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, ToSocketAddrs};
use std::sync::OnceLock;
use std::time::Instant;
use tokio::net::{TcpSocket, TcpStream};

static EPOCH: OnceLock<Instant> = OnceLock::new();

/// The process-wide time origin of payload timestamps.
pub fn epoch() -> Instant {
    *EPOCH.get_or_init(Instant::now)
}

/// Nanoseconds since [`epoch`].
pub fn now_ns() -> u64 {
    epoch().elapsed().as_nanos() as u64
}

/// SplitMix64: small, fast, good enough for load shapes.
#[derive(Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed ^ 0x9E37_79B9_7F4A_7C15)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform in [0, n).
    pub fn below(&mut self, n: u64) -> u64 {
        ((self.next_u64() as u128 * n as u128) >> 64) as u64
    }
}

/// Zipf over ranks 0..n: P(k) proportional to 1/(k+1)^s.
pub struct Zipf {
    cdf: Vec<f64>,
}

impl Zipf {
    pub fn new(n: usize, s: f64) -> Zipf {
        let mut cdf = Vec::with_capacity(n);
        let mut acc = 0.0;
        for k in 0..n {
            acc += 1.0 / ((k + 1) as f64).powf(s);
            cdf.push(acc);
        }
        for c in &mut cdf {
            *c /= acc;
        }
        Zipf { cdf }
    }

    pub fn sample(&self, rng: &mut Rng) -> usize {
        let u = rng.unit();
        self.cdf
            .partition_point(|&c| c <= u)
            .min(self.cdf.len() - 1)
    }

    /// `k` distinct ranks (k must be well below n).
    pub fn sample_distinct(&self, rng: &mut Rng, k: usize, out: &mut Vec<usize>) {
        out.clear();
        let n = self.cdf.len();
        let k = k.min(n);
        let mut tries = 0;
        while out.len() < k {
            // A steep distribution could make the tail nearly unreachable:
            // after many tries, fall back to uniform picks.
            tries += 1;
            let r = if tries < 1000 * k {
                self.sample(rng)
            } else {
                rng.below(n as u64) as usize
            };
            if !out.contains(&r) {
                out.push(r);
            }
        }
    }
}

/// Resolve `--addr`, refusing anything but loopback.
pub fn loopback_addr(addr: &str) -> Result<SocketAddr, String> {
    let all: Vec<SocketAddr> = addr
        .to_socket_addrs()
        .map_err(|e| format!("--addr {addr:?}: {e}"))?
        .collect();
    if all.is_empty() {
        return Err(format!("--addr {addr:?} resolves to nothing"));
    }
    if let Some(a) = all.iter().find(|a| !a.ip().is_loopback()) {
        return Err(format!(
            "--addr {addr:?} resolves to {a}, which is not a loopback address: \
             this load generator only targets servers on this machine"
        ));
    }
    Ok(all.iter().find(|a| a.is_ipv4()).copied().unwrap_or(all[0]))
}

/// Source address for connection `i` when spreading over `source_ips`
/// addresses 127.0.0.1 ..= 127.0.0.N (None = let the kernel choose).
pub fn source_ip(i: usize, source_ips: usize) -> Option<Ipv4Addr> {
    if source_ips <= 1 {
        return None;
    }
    let n = (i % source_ips) as u32 + 1;
    Some(Ipv4Addr::from(0x7f00_0000 + n))
}

pub async fn connect(addr: SocketAddr, source: Option<Ipv4Addr>) -> io::Result<TcpStream> {
    let stream = match source {
        None => TcpStream::connect(addr).await?,
        Some(ip) => {
            if !addr.is_ipv4() {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "--source-ips needs an IPv4 --addr",
                ));
            }
            let sock = TcpSocket::new_v4()?;
            sock.bind(SocketAddr::new(IpAddr::V4(ip), 0))?;
            sock.connect(addr).await?
        }
    };
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// Payload header: publisher id (u32 LE), sequence (u64 LE), send time in ns
/// since [`epoch`] (u64 LE); the rest of the payload is padding.
pub const HEADER: usize = 20;

/// Paces one publisher at `rate` requests per second (0: unpaced):
/// request k is due at start + k / rate.
pub struct Pacer {
    interval: Option<std::time::Duration>,
    next: tokio::time::Instant,
}

impl Pacer {
    pub fn new(rate: f64, start: tokio::time::Instant) -> Self {
        Pacer {
            interval: (rate > 0.0).then(|| std::time::Duration::from_secs_f64(1.0 / rate)),
            next: start,
        }
    }

    /// A `--rate` flag's value, checked.
    pub fn check(rate: f64) -> Result<(), String> {
        if rate.is_nan() || rate < 0.0 {
            return Err("--rate must be >= 0".into());
        }
        Ok(())
    }

    /// Sleeps until the next request is due (or `end`) if it is not due
    /// at `now`; whether it slept (the caller then looks at the time again).
    pub async fn wait(&self, now: tokio::time::Instant, end: tokio::time::Instant) -> bool {
        if self.interval.is_none() || self.next <= now {
            return false;
        }
        tokio::time::sleep_until(self.next.min(end)).await;
        true
    }

    /// Whether a request after `n` more is due at `now`.
    pub fn allows(&self, n: usize, now: tokio::time::Instant) -> bool {
        self.interval
            .is_none_or(|i| self.next + i * n as u32 <= now)
    }

    /// `n` requests went out.
    pub fn sent(&mut self, n: usize) {
        if let Some(i) = self.interval {
            self.next += i * n as u32;
        }
    }

    /// The report's warning when fewer than 95% of the `offered` requests
    /// per second were answered (`achieved`); `what` names them.
    pub fn shortfall(offered: f64, achieved: f64, what: &str) -> Option<String> {
        (offered > 0.0 && achieved < 0.95 * offered).then(|| {
            format!(
                "offered {offered:.0} {what}/s but only {achieved:.0}/s were answered: \
                 the in-flight window (--inflight) or the server was the bound"
            )
        })
    }
}

/// Writes a publisher's requests, giving up at `deadline`; the error is
/// what the report says.
pub async fn write_publishes<W: tokio::io::AsyncWrite + Unpin>(
    w: &mut W,
    buf: &[u8],
    deadline: tokio::time::Instant,
) -> Result<(), String> {
    use tokio::io::AsyncWriteExt;
    match tokio::time::timeout_at(deadline, w.write_all(buf)).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(format!("publish write: {e}")),
        Err(_) => Err("publish write stuck".into()),
    }
}

pub fn write_header(p: &mut [u8], publisher: u32, seq: u64, ts: u64) {
    p[0..4].copy_from_slice(&publisher.to_le_bytes());
    p[4..12].copy_from_slice(&seq.to_le_bytes());
    p[12..20].copy_from_slice(&ts.to_le_bytes());
}

pub fn read_header(p: &[u8]) -> Option<(u32, u64, u64)> {
    if p.len() < HEADER {
        return None;
    }
    let publisher = u32::from_le_bytes(p[0..4].try_into().ok()?);
    let seq = u64::from_le_bytes(p[4..12].try_into().ok()?);
    let ts = u64::from_le_bytes(p[12..20].try_into().ok()?);
    Some((publisher, seq, ts))
}

/// Which sequence numbers of one publisher a subscriber has seen, over a
/// sliding window of the most recent `WINDOW` sequence numbers.
struct SeenWindow {
    bits: Vec<u64>,
    /// One past the highest sequence seen.
    hi: u64,
}

const WINDOW: u64 = 1 << 16;

enum Seen {
    New,
    Duplicate,
    /// Older than the window: cannot tell.
    TooOld,
}

impl SeenWindow {
    fn new() -> SeenWindow {
        SeenWindow {
            bits: vec![0; (WINDOW / 64) as usize],
            hi: 0,
        }
    }

    fn bit(seq: u64) -> (usize, u64) {
        let i = seq % WINDOW;
        ((i / 64) as usize, 1u64 << (i % 64))
    }

    fn see(&mut self, seq: u64) -> Seen {
        if seq >= self.hi {
            if seq - self.hi >= WINDOW {
                self.bits.iter_mut().for_each(|w| *w = 0);
            } else {
                for s in self.hi..seq {
                    let (w, b) = Self::bit(s);
                    self.bits[w] &= !b;
                }
            }
            let (w, b) = Self::bit(seq);
            self.bits[w] |= b;
            self.hi = seq + 1;
            return Seen::New;
        }
        if self.hi - seq > WINDOW {
            return Seen::TooOld;
        }
        let (w, b) = Self::bit(seq);
        if self.bits[w] & b != 0 {
            Seen::Duplicate
        } else {
            self.bits[w] |= b;
            Seen::New
        }
    }
}

fn hash_topic(t: &[u8]) -> u64 {
    // FNV-1a
    let mut h = 0xcbf2_9ce4_8422_2325u64;
    for &c in t {
        h ^= c as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// What one subscriber saw.
#[derive(Default)]
pub struct Tracker {
    /// Per publisher id (ids are small: checked against the publisher
    /// count before use).
    seen: Vec<Option<SeenWindow>>,
    /// Last sequence per (publisher, topic): ordering is promised per
    /// publisher per topic. Keys are already hashed, so the map only
    /// mixes them (SipHash here took a tenth of the subscribers' time).
    last: HashMap<(u32, u64), u64, foldhash::fast::FixedState>,
    pub hist: Histogram,
    /// Entries received (duplicates included).
    pub entries: u64,
    /// Entries received while the load ran (for the rate).
    pub entries_in_run: u64,
    /// Distinct messages received.
    pub unique: u64,
    pub duplicates: u64,
    pub ordering_violations: u64,
    /// Arrived more than 65536 sequence numbers behind the newest of the
    /// same publisher: counted as unique and checked for ordering, but
    /// whether it was a duplicate cannot be told.
    pub too_old: u64,
    /// Entries whose payload could not be read (wrong size or header).
    pub bad_payload: u64,
    /// Replies that could not be parsed.
    pub bad_replies: u64,
    pub polls: u64,
    pub empty_polls: u64,
}

impl Tracker {
    /// Account for one `get messages` value. `in_run` tells whether the
    /// load is still running (for the deliveries/s figure).
    pub fn value(&mut self, value: &[u8], now: u64, size: usize, publishers: u32, in_run: bool) {
        for e in crate::proto::entries(value) {
            let e = match e {
                Ok(e) => e,
                Err(_) => {
                    self.bad_replies += 1;
                    return;
                }
            };
            self.entry(e.payload, e.topics(), now, size, publishers, in_run);
        }
    }

    /// Account for one delivered message (a `get messages` entry, or a
    /// RESP `message` push) that named `topics`.
    pub fn entry<'a>(
        &mut self,
        payload: &[u8],
        topics: impl Iterator<Item = &'a [u8]>,
        now: u64,
        size: usize,
        publishers: u32,
        in_run: bool,
    ) {
        self.entries += 1;
        if in_run {
            self.entries_in_run += 1;
        }
        let Some((p, seq, ts)) = read_header(payload) else {
            self.bad_payload += 1;
            return;
        };
        if payload.len() != size || p >= publishers {
            self.bad_payload += 1;
            return;
        }
        let p_index = p as usize;
        if self.seen.len() <= p_index {
            self.seen.resize_with(p_index + 1, || None);
        }
        let window = self.seen[p_index].get_or_insert_with(SeenWindow::new);
        match window.see(seq) {
            Seen::Duplicate => {
                self.duplicates += 1;
                return;
            }
            Seen::TooOld => self.too_old += 1,
            Seen::New => {}
        }
        self.unique += 1;
        self.hist.record(now.saturating_sub(ts));
        let mut violated = false;
        for t in topics {
            let last = self.last.entry((p, hash_topic(t))).or_insert(0);
            if seq < *last {
                violated = true;
            } else {
                *last = seq;
            }
        }
        if violated {
            self.ordering_violations += 1;
        }
    }

    pub fn merge(&mut self, o: &Tracker) {
        self.hist.merge(&o.hist);
        self.entries += o.entries;
        self.entries_in_run += o.entries_in_run;
        self.unique += o.unique;
        self.duplicates += o.duplicates;
        self.ordering_violations += o.ordering_violations;
        self.too_old += o.too_old;
        self.bad_payload += o.bad_payload;
        self.bad_replies += o.bad_replies;
        self.polls += o.polls;
        self.empty_polls += o.empty_polls;
    }
}

/// Topics to subscribers: for counting the expected deliveries of a message.
pub struct Audience {
    /// Per topic, the sorted indices of the subscribers holding it.
    pub subs: Vec<Vec<u32>>,
}

impl Audience {
    /// Distinct subscribers holding any of `topics` (scratch is a per-caller
    /// buffer).
    pub fn count(&self, topics: &[usize], scratch: &mut Vec<u32>) -> u64 {
        match topics {
            [] => 0,
            [t] => self.subs[*t].len() as u64,
            _ => {
                scratch.clear();
                for t in topics {
                    scratch.extend_from_slice(&self.subs[*t]);
                }
                scratch.sort_unstable();
                scratch.dedup();
                scratch.len() as u64
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(topics: &[&str], p: u32, seq: u64) -> Vec<u8> {
        let mut payload = vec![b'.'; 32];
        write_header(&mut payload, p, seq, 5);
        let mut v = Vec::new();
        crate::proto::push_entry(&mut v, topics, &payload);
        v
    }

    #[test]
    fn tracker_counts() {
        let mut t = Tracker::default();
        let mut v = Vec::new();
        for s in [1u64, 2, 4] {
            v.extend(entry(&["a"], 0, s));
        }
        v.extend(entry(&["a"], 0, 2)); // duplicate
        v.extend(entry(&["a"], 0, 3)); // late: ordering violation
        v.extend(entry(&["b"], 0, 3)); // other topic: duplicate of seq 3 (seen)
        v.extend(entry(&["a"], 1, 0)); // other publisher
        v.extend(entry(&["a"], 9, 0)); // unknown publisher
        t.value(&v, 1005, 32, 2, true);
        assert_eq!(t.entries, 8);
        assert_eq!(t.unique, 5);
        assert_eq!(t.duplicates, 2);
        assert_eq!(t.ordering_violations, 1);
        assert_eq!(t.bad_payload, 1);
        assert_eq!(t.hist.count(), 5);
        assert_eq!(t.hist.quantile(0.5), Some(1000));
        // far jump then old
        let mut v = entry(&["a"], 0, 1_000_000);
        v.extend(entry(&["a"], 0, 5));
        t.value(&v, 2000, 32, 2, false);
        assert_eq!(t.too_old, 1);
        assert_eq!(t.ordering_violations, 2);
        assert_eq!(t.entries_in_run, 8);
        t.value(b"MESSAGE a 99\r\nxx\r\n", 0, 32, 2, true);
        assert_eq!(t.bad_replies, 1);
    }

    #[test]
    fn window_slides() {
        let mut w = SeenWindow::new();
        for s in 0..3 * WINDOW {
            assert!(matches!(w.see(s), Seen::New));
        }
        assert!(matches!(w.see(3 * WINDOW - 1), Seen::Duplicate));
        assert!(matches!(w.see(2 * WINDOW), Seen::Duplicate));
        assert!(matches!(w.see(2 * WINDOW - 1), Seen::TooOld));
        assert!(matches!(w.see(3 * WINDOW + 10), Seen::New));
        assert!(matches!(w.see(3 * WINDOW + 5), Seen::New));
        assert!(matches!(w.see(3 * WINDOW + 5), Seen::Duplicate));
    }

    #[test]
    fn zipf_and_audience() {
        let z = Zipf::new(1000, 1.0);
        let mut r = Rng::new(1);
        let mut c0 = 0;
        for _ in 0..10_000 {
            let k = z.sample(&mut r);
            assert!(k < 1000);
            if k == 0 {
                c0 += 1;
            }
        }
        // P(0) = 1/H(1000) ~ 0.134
        assert!((1100..1600).contains(&c0), "{c0}");
        let mut out = Vec::new();
        z.sample_distinct(&mut r, 20, &mut out);
        let mut d = out.clone();
        d.sort();
        d.dedup();
        assert_eq!(d.len(), 20);
        let a = Audience {
            subs: vec![vec![0, 1, 2], vec![2, 3], vec![]],
        };
        let mut s = Vec::new();
        assert_eq!(a.count(&[0], &mut s), 3);
        assert_eq!(a.count(&[0, 1], &mut s), 4);
        assert_eq!(a.count(&[2, 1], &mut s), 2);
    }

    #[test]
    fn addresses() {
        assert!(loopback_addr("127.0.0.1:12355").is_ok());
        assert!(loopback_addr("127.3.4.5:1").is_ok());
        assert!(loopback_addr("[::1]:1").is_ok());
        assert!(loopback_addr("10.0.0.1:12355").is_err());
        assert!(loopback_addr("8.8.8.8:53").is_err());
        assert_eq!(source_ip(0, 1), None);
        assert_eq!(source_ip(0, 4), Some(Ipv4Addr::new(127, 0, 0, 1)));
        assert_eq!(source_ip(5, 4), Some(Ipv4Addr::new(127, 0, 0, 2)));
    }
}
