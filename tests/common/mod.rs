//! The integration-test harness: a real `kraken` node per test, spoken to
//! with raw protocol bytes over loopback.
//!
//! - [`Node`] starts the binary (`kraken run`) on a free port with its own
//!   control socket, collects its log lines, and kills it when dropped.
//! - [`Client`] is one TCP connection: [`Client::send`] raw bytes,
//!   [`Client::expect`] exact reply bytes, plus helpers that speak the
//!   protocol (`subscribe`, `publish`, `poll`, ...) and check its framing
//!   strictly. Requests are built, and replies and delivered entries are
//!   read, with the client library's codec (`kraken_client::codec`).
//! - [`poll_until`] and friends wait, in bounded time, for the effects of an
//!   asynchronous effect (a delivery, a cleanup, a counter).
//!
//! Every wait is bounded; nothing here talks to anything but 127.0.0.1.

#![allow(dead_code)]

use std::collections::HashMap;
use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::{Bytes, BytesMut};
use kraken_client::codec::{self, ClientCodec, Reply};
use tokio_util::codec::Decoder;

/// How long a node may take to log `accepting connections`.
pub const READY_TIMEOUT: Duration = Duration::from_secs(20);
/// How long a reply may take to arrive.
pub const REPLY_TIMEOUT: Duration = Duration::from_secs(5);
/// How long an asynchronous effect (delivery, cleanup) may take.
pub const ASYNC_TIMEOUT: Duration = Duration::from_secs(5);
/// How long we watch for something that must NOT happen, once a positive
/// control has shown that the effect it would come with has happened.
pub const QUIET_PERIOD: Duration = Duration::from_millis(300);

static NEXT_NODE: AtomicUsize = AtomicUsize::new(0);

// ---------------------------------------------------------------------------
// Byte formatting
// ---------------------------------------------------------------------------

/// Bytes as a Rust-escaped string (`\r`, `\n`, `\0`, `\xff`), for readable
/// assertion messages. Long runs are cut in the middle.
pub fn esc(bytes: &[u8]) -> String {
    const MAX: usize = 600;
    let render = |b: &[u8]| -> String {
        b.iter()
            .flat_map(|&c| std::ascii::escape_default(c))
            .map(char::from)
            .collect()
    };
    if bytes.len() <= MAX {
        render(bytes)
    } else {
        format!(
            "{}...<{} bytes>...{}",
            render(&bytes[..MAX / 2]),
            bytes.len() - MAX,
            render(&bytes[bytes.len() - MAX / 2..])
        )
    }
}

/// Asserts two byte strings are equal, showing both escaped and where they
/// first differ.
#[track_caller]
pub fn assert_bytes_eq(got: &[u8], want: &[u8], what: &str) {
    if got != want {
        let at = got
            .iter()
            .zip(want.iter())
            .position(|(a, b)| a != b)
            .unwrap_or(got.len().min(want.len()));
        panic!(
            "{what}: bytes differ at offset {at}\n  want ({} bytes): \"{}\"\n  got  ({} bytes): \"{}\"",
            want.len(),
            esc(want),
            got.len(),
            esc(got)
        );
    }
}

// ---------------------------------------------------------------------------
// Request builders (the protocol, as bytes)
// ---------------------------------------------------------------------------

/// `set <key> 0 0 <n>\r\n<data>\r\n`
pub fn set_request(key: &str, data: &[u8]) -> Vec<u8> {
    let mut r = Vec::new();
    codec::put_set(&mut r, key, data, false);
    r
}

/// One publish entry `MESSAGE <topics> <len>\r\n<payload>\r\n`.
pub fn entry(topics: &[&str], payload: &[u8]) -> Vec<u8> {
    let mut e = Vec::new();
    codec::put_entry(&mut e, topics, payload);
    e
}

/// The data block of a `set publish` holding these entries.
pub fn publish_block(entries: &[(&[&str], &[u8])]) -> Vec<u8> {
    entries.iter().flat_map(|(t, p)| entry(t, p)).collect()
}

/// A whole `set publish` request for these entries.
pub fn publish_request(entries: &[(&[&str], &[u8])]) -> Vec<u8> {
    set_request("publish", &publish_block(entries))
}

/// A whole `set retro_subscribe` request: `<H>\r\n<topics>`.
pub fn retro_request(horizon: &str, topics: &[&str]) -> Vec<u8> {
    set_request(
        "retro_subscribe",
        format!("{horizon}\r\n{}", topics.join(" ")).as_bytes(),
    )
}

/// The exact `get messages` reply for these entries (`docs/PROTOCOL.md` §4:
/// `<k>` is the entries' length minus the final CRLF).
pub fn messages_reply(entries: &[u8]) -> Vec<u8> {
    if entries.is_empty() {
        return b"END\r\n".to_vec();
    }
    let mut r = format!("VALUE messages 0 {}\r\n", entries.len() - 2).into_bytes();
    r.extend_from_slice(entries);
    r.extend_from_slice(b"END\r\n");
    r
}

/// A loopback port nobody listens on now (bound and released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `start` on a [`free_port`]; again on another, up to five times, while
/// it fails with "Address already in use": a port found free may be taken
/// by another test's node (whose main port is any free one) before `start`
/// binds it. Any other failure panics with its text.
pub fn with_free_port<T>(mut start: impl FnMut(u16) -> Result<T, String>) -> T {
    let mut last = String::new();
    for _ in 0..5 {
        match start(free_port()) {
            Ok(started) => return started,
            Err(e) if e.contains("Address already in use") => last = e,
            Err(e) => panic!("{e}"),
        }
    }
    panic!("no free port in five tries; last: {last}")
}

/// The current unix time in whole seconds, as the server's horizons count it.
pub fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs() as i64
}

/// Sleeps (at most ~1.1 s) until the wall clock enters a new second, and
/// returns that second. Useful to get a whole second of headroom for
/// "same second" scenarios.
pub fn wait_for_next_second() -> i64 {
    let start = unix_now();
    let deadline = Instant::now() + Duration::from_millis(1500);
    loop {
        let now = unix_now();
        if now > start {
            return now;
        }
        assert!(Instant::now() < deadline, "wall clock did not advance");
        let into = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
        let left = 1_000_000_000u32.saturating_sub(into);
        std::thread::sleep(Duration::from_nanos(left as u64 + 1_000_000));
    }
}

/// A deterministic pseudo-random byte string (xorshift), for payloads.
pub fn pseudo_random_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

// ---------------------------------------------------------------------------
// The node
// ---------------------------------------------------------------------------

/// A running `kraken run` child process. Dropping it kills it (SIGKILL),
/// reaps it and removes its temporary directory.
pub struct Node {
    child: Child,
    addr: SocketAddr,
    dir: PathBuf,
    log: Arc<Mutex<Vec<String>>>,
    /// Wall-clock second in which the node reported readiness.
    ready_at_secs: i64,
}

/// How to start a node: extra `-kraken` options, environment, and whether
/// to pass the harness defaults.
#[derive(Default)]
pub struct NodeOptions<'a> {
    pub options: &'a [(&'a str, &'a str)],
    pub env: &'a [(&'a str, &'a str)],
    /// Leave `-kraken tcp_server_port 0` off the command line (the test
    /// provides the port some other way, e.g. through the environment).
    pub no_port_arg: bool,
}

impl Node {
    /// Starts a node on 127.0.0.1, a free port and its own control socket,
    /// with these extra `-kraken <option> <value>` pairs.
    pub fn start(options: &[(&str, &str)]) -> Node {
        Node::start_with(NodeOptions {
            options,
            ..Default::default()
        })
    }

    /// Starts a node with full control over options and environment.
    pub fn start_with(opts: NodeOptions<'_>) -> Node {
        Node::try_start_with(opts).unwrap_or_else(|e| panic!("{e}"))
    }

    /// As [`Node::start_with`], but a node that exits or never gets ready
    /// is an `Err` with its log, not a panic (for a caller that retries,
    /// say on a port another test took meanwhile: [`with_free_port`]).
    pub fn try_start(options: &[(&str, &str)]) -> Result<Node, String> {
        Node::try_start_with(NodeOptions {
            options,
            ..Default::default()
        })
    }

    fn try_start_with(opts: NodeOptions<'_>) -> Result<Node, String> {
        let n = NEXT_NODE.fetch_add(1, Ordering::SeqCst);
        let dir = std::env::temp_dir().join(format!("kraken-it-{}-{}", std::process::id(), n));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create temp dir");
        let ctl = dir.join("ctl.sock");

        let mut cmd = Command::new(env!("CARGO_BIN_EXE_kraken"));
        cmd.arg("run")
            .args(["-kraken", "listen_ip", "127.0.0.1"])
            .args(["-kraken", "control_socket"])
            .arg(&ctl);
        if !opts.no_port_arg {
            cmd.args(["-kraken", "tcp_server_port", "0"]);
        }
        for (k, v) in opts.options {
            cmd.args(["-kraken", k, v]);
        }
        cmd.env("KRAKEN_HOME", env!("CARGO_MANIFEST_DIR"));
        for (k, v) in opts.env {
            cmd.env(k, v);
        }
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("spawn the kraken binary");

        let log = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = mpsc::channel::<Option<SocketAddr>>();
        // The node logs to stderr; stdout is collected too in case something
        // lands there.
        let stderr = child.stderr.take().unwrap();
        let stdout = child.stdout.take().unwrap();
        spawn_log_reader(stderr, log.clone(), tx.clone());
        spawn_log_reader(stdout, log.clone(), tx);

        let deadline = Instant::now() + READY_TIMEOUT;
        let mut eofs = 0;
        let addr = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(Some(addr)) => break addr,
                Ok(None) => {
                    // One of the two streams ended.
                    eofs += 1;
                    if eofs == 2 {
                        let status = child.wait().ok();
                        let _ = std::fs::remove_dir_all(&dir);
                        return Err(format!(
                            "kraken exited before accepting connections ({status:?}); log:\n{}",
                            log.lock().unwrap().join("\n")
                        ));
                    }
                }
                Err(_) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    let _ = std::fs::remove_dir_all(&dir);
                    return Err(format!(
                        "kraken did not log `accepting connections` with `addr: 127.0.0.1:<port>` within {:?}; log:\n{}",
                        READY_TIMEOUT,
                        log.lock().unwrap().join("\n")
                    ));
                }
            }
        };
        Ok(Node {
            child,
            addr,
            dir,
            log,
            ready_at_secs: unix_now(),
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// The OS pid of the node.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// A new client connection.
    pub fn connect(&self) -> Client {
        Client::connect(self.addr)
    }

    /// All log lines so far.
    pub fn log_lines(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }

    /// Waits (bounded) for a log line containing `needle`, case-insensitive.
    pub fn log_contains(&self, needle: &str) -> bool {
        let needle = needle.to_lowercase();
        let deadline = Instant::now() + ASYNC_TIMEOUT;
        loop {
            if self
                .log
                .lock()
                .unwrap()
                .iter()
                .any(|l| l.to_lowercase().contains(&needle))
            {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// `stats` over a fresh connection, as a name → value map.
    pub fn stats(&self) -> HashMap<String, String> {
        let mut c = self.connect();
        let s = c.stats();
        c.send(b"quit\r\n");
        s
    }

    /// Waits (bounded) until `stats` value `name` satisfies `pred`; returns
    /// the last value seen.
    pub fn wait_for_stat(&self, name: &str, pred: impl Fn(i64) -> bool) -> i64 {
        let deadline = Instant::now() + ASYNC_TIMEOUT;
        loop {
            let s = self.stats();
            let v: i64 = s
                .get(name)
                .unwrap_or_else(|| panic!("stats has no `{name}`: {s:?}"))
                .parse()
                .unwrap_or_else(|_| panic!("stat `{name}` is not a number: {s:?}"));
            if pred(v) {
                return v;
            }
            assert!(
                Instant::now() < deadline,
                "stat `{name}` stayed at {v} for {ASYNC_TIMEOUT:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// A horizon (unix seconds) strictly after the node's start: waits for
    /// the wall clock to pass the second in which the node became ready.
    pub fn fresh_horizon(&self) -> i64 {
        let deadline = Instant::now() + Duration::from_millis(2500);
        loop {
            let now = unix_now();
            if now > self.ready_at_secs {
                return now;
            }
            assert!(Instant::now() < deadline, "wall clock did not advance");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Reads lines from the node forever (until EOF) into `log`; sends the
/// listening address when the readiness line appears, and `None` on EOF.
fn spawn_log_reader(
    stream: impl Read + Send + 'static,
    log: Arc<Mutex<Vec<String>>>,
    tx: mpsc::Sender<Option<SocketAddr>>,
) {
    std::thread::spawn(move || {
        let mut reader = BufReader::new(stream);
        let mut buf = Vec::new();
        loop {
            buf.clear();
            match reader.read_until(b'\n', &mut buf) {
                Ok(0) | Err(_) => {
                    let _ = tx.send(None);
                    return;
                }
                Ok(_) => {
                    let line = String::from_utf8_lossy(&buf).trim_end().to_string();
                    if line.contains("accepting connections") {
                        if let Some(addr) = parse_ready_addr(&line) {
                            let _ = tx.send(Some(addr));
                        }
                    }
                    log.lock().unwrap().push(line);
                }
            }
        }
    });
}

/// Finds `127.0.0.1:<port>` after `addr` in a log line.
fn parse_ready_addr(line: &str) -> Option<SocketAddr> {
    let from = line.find("addr")?;
    let rest = &line[from..];
    let at = rest.find("127.0.0.1:")?;
    let port: String = rest[at + "127.0.0.1:".len()..]
        .chars()
        .take_while(|c| c.is_ascii_digit())
        .collect();
    let port: u16 = port.parse().ok()?;
    Some(SocketAddr::from(([127, 0, 0, 1], port)))
}

// ---------------------------------------------------------------------------
// A client connection
// ---------------------------------------------------------------------------

/// One message as `get messages` delivers it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Msg {
    pub topics: Vec<String>,
    pub payload: Vec<u8>,
}

impl Msg {
    pub fn new(topics: &[&str], payload: &[u8]) -> Msg {
        Msg {
            topics: topics.iter().map(|t| t.to_string()).collect(),
            payload: payload.to_vec(),
        }
    }
}

/// One TCP connection to the node (TCP_NODELAY, 5 s read timeout).
pub struct Client {
    stream: TcpStream,
    /// Bytes read from the socket but not yet consumed.
    buf: Vec<u8>,
}

impl Client {
    pub fn connect(addr: SocketAddr) -> Client {
        let stream = TcpStream::connect_timeout(&addr, REPLY_TIMEOUT)
            .unwrap_or_else(|e| panic!("connect to {addr}: {e}"));
        stream.set_nodelay(true).unwrap();
        stream.set_read_timeout(Some(REPLY_TIMEOUT)).unwrap();
        stream
            .set_write_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        Client {
            stream,
            buf: Vec::new(),
        }
    }

    /// Writes raw bytes.
    #[track_caller]
    pub fn send(&mut self, bytes: &[u8]) {
        self.stream
            .write_all(bytes)
            .unwrap_or_else(|e| panic!("write \"{}\": {e}", esc(&bytes[..bytes.len().min(200)])));
    }

    /// Writes raw bytes one byte per write (a `sleep` of 1 ms in between
    /// makes each byte its own TCP segment).
    pub fn send_bytewise(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.send(&[*b]);
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// Reads more bytes into `buf`; `Ok(0)` at EOF.
    fn fill(&mut self) -> std::io::Result<usize> {
        let mut chunk = [0u8; 64 * 1024];
        let n = self.stream.read(&mut chunk)?;
        self.buf.extend_from_slice(&chunk[..n]);
        Ok(n)
    }

    /// Reads exactly `n` bytes (or panics, showing what did arrive).
    #[track_caller]
    pub fn read_exact_bytes(&mut self, n: usize) -> Vec<u8> {
        while self.buf.len() < n {
            match self.fill() {
                Ok(0) => panic!(
                    "connection closed after \"{}\" while waiting for {n} bytes",
                    esc(&self.buf)
                ),
                Ok(_) => {}
                Err(e) => panic!(
                    "read failed ({e}) after \"{}\" while waiting for {n} bytes",
                    esc(&self.buf)
                ),
            }
        }
        self.buf.drain(..n).collect()
    }

    /// Reads one line including its `\r\n` (at most 64 KiB).
    #[track_caller]
    pub fn read_line(&mut self) -> Vec<u8> {
        loop {
            if let Some(i) = self.buf.windows(2).position(|w| w == b"\r\n") {
                return self.buf.drain(..i + 2).collect();
            }
            assert!(
                self.buf.len() < 64 * 1024,
                "reply line too long: \"{}\"",
                esc(&self.buf)
            );
            match self.fill() {
                Ok(0) => panic!(
                    "connection closed in the middle of a line: \"{}\"",
                    esc(&self.buf)
                ),
                Ok(_) => {}
                Err(e) => panic!(
                    "read failed ({e}) waiting for a line; have \"{}\"",
                    esc(&self.buf)
                ),
            }
        }
    }

    /// Reads exactly `want.len()` bytes and asserts they are `want`.
    #[track_caller]
    pub fn expect(&mut self, want: &[u8]) {
        while self.buf.len() < want.len() {
            match self.fill() {
                Ok(0) => panic!(
                    "connection closed; want \"{}\", got only \"{}\"",
                    esc(want),
                    esc(&self.buf)
                ),
                Ok(_) => {}
                Err(e) => panic!(
                    "read failed ({e}); want \"{}\", got only \"{}\"",
                    esc(want),
                    esc(&self.buf)
                ),
            }
            // Fail early on a mismatch in what has arrived so far.
            let n = self.buf.len().min(want.len());
            if self.buf[..n] != want[..n] {
                break;
            }
        }
        let n = self.buf.len().min(want.len());
        let got: Vec<u8> = self.buf.drain(..n).collect();
        assert_bytes_eq(&got, want, "reply");
    }

    /// Whether `want` is what the client has already received (read
    /// without waiting: what the socket holds now), consumed if so.
    #[track_caller]
    pub fn has_now(&mut self, want: &[u8]) -> bool {
        self.stream.set_nonblocking(true).unwrap();
        let mut chunk = [0u8; 4096];
        while self.buf.len() < want.len() {
            match self.stream.read(&mut chunk) {
                Ok(0) => panic!("connection closed"),
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) => panic!("read failed: {e}"),
            }
        }
        self.stream.set_nonblocking(false).unwrap();
        let n = self.buf.len().min(want.len());
        assert_bytes_eq(&self.buf[..n], &want[..n], "what arrived so far");
        if n < want.len() {
            return false;
        }
        self.buf.drain(..n);
        true
    }

    /// Reads one reply line and asserts it starts with `prefix` (the line
    /// is returned without its CRLF).
    #[track_caller]
    pub fn expect_line_starting(&mut self, prefix: &str) -> String {
        let line = self.read_line();
        assert!(
            line.starts_with(prefix.as_bytes()),
            "want a line starting \"{prefix}\", got \"{}\"",
            esc(&line)
        );
        String::from_utf8_lossy(&line[..line.len() - 2]).into_owned()
    }

    /// Asserts the server closes the connection (EOF or reset) within a few
    /// seconds without sending anything more.
    #[track_caller]
    pub fn expect_closed(&mut self) {
        let got = self.wait_closed(REPLY_TIMEOUT);
        assert!(
            got.is_empty(),
            "want the connection closed, got bytes \"{}\"",
            esc(&got)
        );
    }

    /// Waits up to `timeout` for EOF or reset; returns whatever bytes
    /// arrived first. Panics if the connection is still open.
    #[track_caller]
    pub fn wait_closed(&mut self, timeout: Duration) -> Vec<u8> {
        let deadline = Instant::now() + timeout;
        self.stream
            .set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        let result = loop {
            match self.fill() {
                Ok(0) => break Ok(()),
                Ok(_) => {}
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                Err(e) if matches!(e.kind(), ErrorKind::Interrupted) => {}
                Err(_) => break Ok(()), // reset, aborted...: closed
            }
            if Instant::now() >= deadline {
                break Err(());
            }
        };
        let _ = self.stream.set_read_timeout(Some(REPLY_TIMEOUT));
        let got = std::mem::take(&mut self.buf);
        if result.is_err() {
            panic!(
                "connection still open after {timeout:?} (received \"{}\")",
                esc(&got)
            );
        }
        got
    }

    /// True if the connection is closed by the server within `timeout`,
    /// false if it is still open then (any bytes received are kept).
    pub fn is_closed_within(&mut self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        self.stream
            .set_read_timeout(Some(Duration::from_millis(50)))
            .unwrap();
        let closed = loop {
            match self.fill() {
                Ok(0) => break true,
                Ok(_) => {}
                Err(e)
                    if matches!(
                        e.kind(),
                        ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted
                    ) => {}
                Err(_) => break true,
            }
            if Instant::now() >= deadline {
                break false;
            }
        };
        let _ = self.stream.set_read_timeout(Some(REPLY_TIMEOUT));
        closed
    }

    /// Asserts the connection is open and idle: `get messages` answers
    /// `END\r\n`.
    #[track_caller]
    pub fn expect_open_and_empty(&mut self) {
        self.send(b"get messages\r\n");
        self.expect(b"END\r\n");
    }

    /// `set subscribe` these topics; expects `STORED\r\n`.
    #[track_caller]
    pub fn subscribe(&mut self, topics: &[&str]) {
        self.send(&set_request("subscribe", topics.join(" ").as_bytes()));
        self.expect(b"STORED\r\n");
    }

    /// `set unsubscribe` these topics; expects `STORED\r\n`.
    #[track_caller]
    pub fn unsubscribe(&mut self, topics: &[&str]) {
        self.send(&set_request("unsubscribe", topics.join(" ").as_bytes()));
        self.expect(b"STORED\r\n");
    }

    /// `set register 0 0 0`; expects `STORED\r\n`.
    #[track_caller]
    pub fn register(&mut self) {
        self.send(b"set register 0 0 0\r\n\r\n");
        self.expect(b"STORED\r\n");
    }

    /// `set publish` these entries; expects `STORED\r\n`.
    #[track_caller]
    pub fn publish(&mut self, entries: &[(&[&str], &[u8])]) {
        self.send(&publish_request(entries));
        self.expect(b"STORED\r\n");
    }

    /// Publishes one payload to one topic; expects `STORED\r\n`.
    #[track_caller]
    pub fn publish1(&mut self, topic: &str, payload: &[u8]) {
        self.publish(&[(&[topic], payload)]);
    }

    /// Sends `get messages\r\n` and returns the raw reply (`END\r\n` or the
    /// whole `VALUE ... END\r\n`), checking the framing strictly.
    #[track_caller]
    pub fn get_raw(&mut self) -> Vec<u8> {
        self.send(b"get messages\r\n");
        self.read_messages_reply()
    }

    /// Reads one `get messages` reply (raw), checking the framing strictly:
    /// `END\r\n`, or `VALUE messages 0 <k>\r\n` + k+2 bytes of well-formed
    /// entries + `END\r\n`.
    #[track_caller]
    pub fn read_messages_reply(&mut self) -> Vec<u8> {
        match self.read_reply() {
            Reply::End => b"END\r\n".to_vec(),
            Reply::Messages(m) => {
                let entries = m.into_raw();
                let mut raw = format!("VALUE messages 0 {}\r\n", entries.len() - 2).into_bytes();
                raw.extend_from_slice(&entries);
                raw.extend_from_slice(b"END\r\n");
                raw
            }
            other => panic!("want `END` or `VALUE messages 0 <k>`, got `{other}`"),
        }
    }

    /// Reads one whole reply with the client codec (strict framing: CR LF
    /// line ends, a value's length, its entries, `END`); panics on anything
    /// else, showing the bytes.
    #[track_caller]
    pub fn read_reply(&mut self) -> Reply {
        loop {
            let mut buf = BytesMut::from(&self.buf[..]);
            let decoded = ClientCodec::default().decode(&mut buf);
            match decoded {
                Ok(Some(reply)) => {
                    self.buf = buf.to_vec();
                    return reply;
                }
                Ok(None) => {}
                Err(e) => panic!("{e}; received \"{}\"", esc(&self.buf)),
            }
            match self.fill() {
                Ok(0) => panic!(
                    "connection closed in the middle of a reply: \"{}\"",
                    esc(&self.buf)
                ),
                Ok(_) => {}
                Err(e) => panic!(
                    "read failed ({e}) waiting for a reply; have \"{}\"",
                    esc(&self.buf)
                ),
            }
        }
    }

    /// One `get messages`: the queued entries' bytes (each
    /// `MESSAGE ... <len>\r\n<payload>\r\n`, concatenated), empty if `END`.
    #[track_caller]
    pub fn poll_entries_raw(&mut self) -> Vec<u8> {
        self.send(b"get messages\r\n");
        self.read_entries_raw()
    }

    /// Reads the answer to a `get messages` already sent: its entries'
    /// bytes, as [`Client::poll_entries_raw`] returns them.
    #[track_caller]
    pub fn read_entries_raw(&mut self) -> Vec<u8> {
        let raw = self.read_messages_reply();
        if raw == b"END\r\n" {
            return Vec::new();
        }
        let start = raw.iter().position(|&b| b == b'\n').unwrap() + 1;
        raw[start..raw.len() - 5].to_vec()
    }

    /// One `get messages`, parsed.
    #[track_caller]
    pub fn poll(&mut self) -> Vec<Msg> {
        let entries = self.poll_entries_raw();
        parse_entries(&entries)
    }

    /// `stats\r\n`: reads `STAT <name> <value>\r\n` lines up to `END\r\n`.
    #[track_caller]
    pub fn stats(&mut self) -> HashMap<String, String> {
        self.send(codec::STATS);
        match self.read_reply() {
            Reply::Stats(lines) => lines
                .into_iter()
                .inspect(|(name, _)| assert!(!name.is_empty(), "STAT line without a name"))
                .collect(),
            other => panic!("want `STAT` lines and `END`, got `{other}`"),
        }
    }

    /// Shuts down the write half (the server sees EOF).
    pub fn shutdown_write(&self) {
        let _ = self.stream.shutdown(std::net::Shutdown::Write);
    }
}

/// Parses concatenated entries `MESSAGE <topics> <len>\r\n<payload>\r\n`,
/// strictly (with the client codec, then checking that the entries are
/// spelled exactly as the node spells them: one space apart, UTF-8
/// topics): anything else panics.
#[track_caller]
pub fn parse_entries(data: &[u8]) -> Vec<Msg> {
    let raw = Bytes::copy_from_slice(data);
    let parsed = codec::parse_entries(&raw).unwrap_or_else(|e| panic!("{e} in \"{}\"", esc(data)));
    let mut canonical = Vec::new();
    let out = parsed
        .into_iter()
        .map(|m| {
            codec::put_entry(&mut canonical, &m.topics, &m.payload);
            Msg {
                topics: m
                    .topics
                    .iter()
                    .map(|t| {
                        String::from_utf8(t.to_vec()).unwrap_or_else(|_| {
                            panic!("entry topic not UTF-8 in \"{}\"", esc(data))
                        })
                    })
                    .collect(),
                payload: m.payload.to_vec(),
            }
        })
        .collect();
    assert_bytes_eq(data, &canonical, "entries, as the node spells them");
    out
}

/// Polls `client` until the messages received so far (accumulated over
/// polls) satisfy `pred`, or panics after `timeout` showing them.
#[track_caller]
pub fn poll_until(
    client: &mut Client,
    pred: impl Fn(&[Msg]) -> bool,
    timeout: Duration,
) -> Vec<Msg> {
    let deadline = Instant::now() + timeout;
    let mut got = Vec::new();
    loop {
        got.extend(client.poll());
        if pred(&got) {
            return got;
        }
        if Instant::now() >= deadline {
            panic!(
                "condition not met within {timeout:?}; received {} messages: {}",
                got.len(),
                show_msgs(&got)
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Polls until at least `n` messages have arrived; returns them all.
#[track_caller]
pub fn poll_count(client: &mut Client, n: usize) -> Vec<Msg> {
    poll_until(client, |m| m.len() >= n, ASYNC_TIMEOUT)
}

/// Polls until at least `n` messages have arrived, then keeps polling for
/// [`QUIET_PERIOD`] and asserts exactly `n` arrived.
#[track_caller]
pub fn poll_exactly(client: &mut Client, n: usize) -> Vec<Msg> {
    let mut got = poll_count(client, n);
    got.extend(collect_for(client, QUIET_PERIOD));
    assert_eq!(
        got.len(),
        n,
        "want exactly {n} messages, got {}: {}",
        got.len(),
        show_msgs(&got)
    );
    got
}

/// Polls for `period` and returns whatever arrived.
#[track_caller]
pub fn collect_for(client: &mut Client, period: Duration) -> Vec<Msg> {
    let deadline = Instant::now() + period;
    let mut got = Vec::new();
    loop {
        got.extend(client.poll());
        if Instant::now() >= deadline {
            return got;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Asserts nothing arrives at `client` for [`QUIET_PERIOD`].
#[track_caller]
pub fn assert_nothing_arrives(client: &mut Client) {
    let got = collect_for(client, QUIET_PERIOD);
    assert!(got.is_empty(), "want no messages, got {}", show_msgs(&got));
}

/// Polls until the concatenated entry bytes reach `want.len()`, then
/// asserts they are exactly `want` (framing of every reply checked).
#[track_caller]
pub fn expect_entries(client: &mut Client, want: &[u8]) {
    let deadline = Instant::now() + ASYNC_TIMEOUT;
    let mut got = Vec::new();
    while got.len() < want.len() {
        got.extend(client.poll_entries_raw());
        if got.len() >= want.len() {
            break;
        }
        if Instant::now() >= deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_bytes_eq(&got, want, "delivered entries");
}

/// Sends `get messages` until a non-empty reply comes; returns it raw.
#[track_caller]
pub fn first_nonempty_reply(client: &mut Client) -> Vec<u8> {
    let deadline = Instant::now() + ASYNC_TIMEOUT;
    loop {
        let raw = client.get_raw();
        if raw != b"END\r\n" {
            return raw;
        }
        assert!(
            Instant::now() < deadline,
            "nothing delivered within {ASYNC_TIMEOUT:?}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Messages, readable.
pub fn show_msgs(msgs: &[Msg]) -> String {
    let shown: Vec<String> = msgs
        .iter()
        .take(40)
        .map(|m| format!("[{}] \"{}\"", m.topics.join(" "), esc(&m.payload)))
        .collect();
    let more = if msgs.len() > 40 {
        format!(" ... and {} more", msgs.len() - 40)
    } else {
        String::new()
    };
    format!("{}{more}", shown.join(", "))
}

/// Payloads of messages as strings (lossy), for compact assertions.
pub fn payloads(msgs: &[Msg]) -> Vec<String> {
    msgs.iter()
        .map(|m| String::from_utf8_lossy(&m.payload).into_owned())
        .collect()
}

// ---------------------------------------------------------------------------
// The `kraken` command and the node's process (lifecycle, control, supervision)
// ---------------------------------------------------------------------------

/// How long a `kraken` command (start, stop, status, ...) may take.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(40);

/// What a finished `kraken` command said.
#[derive(Debug)]
pub struct Output {
    /// The exit code (`None` if killed by a signal).
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Output {
    /// stdout and stderr together, for assertion messages.
    pub fn text(&self) -> String {
        format!(
            "exit {:?}\n--- stdout\n{}--- stderr\n{}",
            self.code, self.stdout, self.stderr
        )
    }
}

/// The `-kraken` pairs that put a node on loopback, on `port` ("0": an
/// ephemeral one).
pub fn loopback_args(port: &str) -> [&str; 6] {
    [
        "-kraken",
        "listen_ip",
        "127.0.0.1",
        "-kraken",
        "tcp_server_port",
        port,
    ]
}

/// Runs `kraken <args>` (with `KRAKEN_HOME` set as the harness does) to its
/// end, bounded by [`COMMAND_TIMEOUT`] (then it is killed and this panics).
pub fn kraken(args: &[&str]) -> Output {
    kraken_with_env(args, &[])
}

/// [`kraken`] with extra environment variables.
pub fn kraken_with_env(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_kraken"));
    cmd.args(args)
        .env("KRAKEN_HOME", env!("CARGO_MANIFEST_DIR"))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("spawn the kraken binary");
    let mut out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    // `kraken start` leaves a node behind that holds no pipe of ours, so
    // reading to EOF ends when the command does.
    let t_out = std::thread::spawn(move || {
        let mut s = Vec::new();
        let _ = out.read_to_end(&mut s);
        s
    });
    let t_err = std::thread::spawn(move || {
        let mut s = Vec::new();
        let _ = err.read_to_end(&mut s);
        s
    });
    let deadline = Instant::now() + COMMAND_TIMEOUT;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("kraken {args:?} still running after {COMMAND_TIMEOUT:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    Output {
        code: status.code(),
        stdout: String::from_utf8_lossy(&t_out.join().unwrap()).into_owned(),
        stderr: String::from_utf8_lossy(&t_err.join().unwrap()).into_owned(),
    }
}

impl Node {
    /// The node's control socket.
    pub fn control_socket(&self) -> PathBuf {
        self.dir.join("ctl.sock")
    }

    /// The node's private temporary directory (removed on drop).
    pub fn dir(&self) -> PathBuf {
        self.dir.clone()
    }

    /// Runs a control command (`status`, `dump_topics`, ...) against this
    /// node: `kraken <args> -kraken control_socket <its socket>`.
    pub fn ctl(&self, args: &[&str]) -> Output {
        let socket = self.control_socket();
        let mut all: Vec<&str> = args.to_vec();
        all.extend(["-kraken", "control_socket", socket.to_str().unwrap()]);
        kraken(&all)
    }

    /// Sends the node a signal (e.g. `libc::SIGTERM`).
    pub fn signal(&self, signal: i32) {
        // SAFETY: kill(2) on our own child's pid.
        let rc = unsafe { libc::kill(self.child.id() as libc::pid_t, signal) };
        assert_eq!(rc, 0, "kill({}, {signal}) failed", self.child.id());
    }

    /// Waits up to `timeout` for the node to exit; its status, or `None` if
    /// it is still running.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Client {
    /// This connection's own address (the peer the node sees).
    pub fn local_addr(&self) -> SocketAddr {
        self.stream.local_addr().expect("local_addr")
    }
}

/// Whether process `pid` exists and is not a zombie (exited, not reaped).
pub fn process_alive(pid: u32) -> bool {
    // SAFETY: signal 0 only checks that the process exists.
    if unsafe { libc::kill(pid as libc::pid_t, 0) } != 0 {
        return false;
    }
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => {
            stat.rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().next())
                != Some("Z")
        }
        Err(_) => true,
    }
}

/// A fresh temporary directory for one test, removed when dropped.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(what: &str) -> TempDir {
        let n = NEXT_NODE.fetch_add(1, Ordering::SeqCst);
        let dir = std::env::temp_dir().join(format!("kraken-it-{what}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create temp dir");
        TempDir(dir)
    }

    /// A path in the directory.
    pub fn join(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

impl Client {
    /// Waits up to `timeout` until the node has sent something (unread).
    pub fn wait_readable(&mut self, timeout: Duration) -> bool {
        if !self.buf.is_empty() {
            return true;
        }
        self.stream
            .set_read_timeout(Some(Duration::from_millis(50)))
            .unwrap();
        let deadline = Instant::now() + timeout;
        let mut one = [0u8; 1];
        let readable = loop {
            match self.stream.peek(&mut one) {
                Ok(n) if n > 0 => break true,
                Ok(_) => break false,
                Err(e)
                    if matches!(
                        e.kind(),
                        ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted
                    ) => {}
                Err(_) => break false,
            }
            if Instant::now() >= deadline {
                break false;
            }
        };
        let _ = self.stream.set_read_timeout(Some(REPLY_TIMEOUT));
        readable
    }
}

/// A stock `memcache` crate client (0.21, ASCII protocol) for `node`; it
/// checks each connection with `version` before its first command.
impl Node {
    pub fn memcache_client(&self) -> memcache::Client {
        let url = format!("memcache://127.0.0.1:{}?protocol=ascii", self.port());
        memcache::Client::builder()
            .add_server(url)
            .expect("url")
            .with_read_timeout(Duration::from_secs(5))
            .with_write_timeout(Duration::from_secs(5))
            .with_connection_timeout(Duration::from_secs(5))
            .build()
            .expect("memcache client connects (it sends `version` first)")
    }
}
