//! Running the node as a service: the shipped systemd unit
//! (`etc/kraken.service`) starts it as written, with the package's
//! `/etc/kraken/kraken.toml`; the node tells systemd when it accepts
//! (`sd_notify` `READY=1`), reopens `log_file` on SIGHUP (logrotate) and
//! logs it; logs are text or JSON with RFC 3339 timestamps and keep every
//! key-value; errors opening files name the path; `kraken --version`;
//! `bin/kraken` through a symbolic link; the Debian package's paths agree
//! with the unit's.

mod common;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

const REPO: &str = env!("CARGO_MANIFEST_DIR");
const BIN: &str = env!("CARGO_BIN_EXE_kraken");

/// A node started by a test with `$NOTIFY_SOCKET` pointing at a datagram
/// socket the test reads; its stdout and stderr go to `console.log` in its
/// directory (as they would go to the journal). Killed on drop.
struct Launched {
    child: Child,
    notify: UnixDatagram,
    console: PathBuf,
    /// Messages received on the notify socket, in order.
    notes: Vec<String>,
}

impl Launched {
    /// Spawns `program args` with exactly `env` (plus `NOTIFY_SOCKET`) in
    /// `cwd`, files in `dir`.
    fn spawn(
        program: &str,
        args: &[String],
        env: &[(String, String)],
        cwd: &Path,
        dir: &Path,
    ) -> Launched {
        let notify_path = dir.join("notify.sock");
        let _ = std::fs::remove_file(&notify_path);
        let notify = UnixDatagram::bind(&notify_path).expect("bind the notify socket");
        let console = dir.join("console.log");
        let out = std::fs::File::create(&console).unwrap();
        let child = Command::new(program)
            .args(args)
            .env_clear()
            .envs(env.iter().map(|(k, v)| (k, v)))
            .env("NOTIFY_SOCKET", &notify_path)
            .current_dir(cwd)
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {program}: {e}"));
        Launched {
            child,
            notify,
            console,
            notes: Vec::new(),
        }
    }

    fn console(&self) -> String {
        std::fs::read_to_string(&self.console).unwrap_or_default()
    }

    /// Waits (bounded) for a notify datagram holding the line `want`;
    /// panics with the console output if it does not come.
    fn expect_note(&mut self, want: &str) -> String {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                panic!(
                    "no {want} on NOTIFY_SOCKET within {READY_TIMEOUT:?} (got {:?}); exit {:?}; console:\n{}",
                    self.notes,
                    self.child.try_wait(),
                    self.console()
                );
            }
            self.notify
                .set_read_timeout(Some(left.min(Duration::from_millis(200))))
                .unwrap();
            let mut buf = [0u8; 4096];
            match self.notify.recv(&mut buf) {
                Ok(n) => {
                    let note = String::from_utf8_lossy(&buf[..n]).into_owned();
                    self.notes.push(note.clone());
                    if note.lines().any(|l| l == want) {
                        return note;
                    }
                }
                Err(_) => {
                    if let Ok(Some(status)) = self.child.try_wait() {
                        panic!(
                            "the node exited ({status}) before {want}; console:\n{}",
                            self.console()
                        );
                    }
                }
            }
        }
    }

    fn signal(&self, signal: i32) {
        // SAFETY: kill(2) on our own child.
        assert_eq!(
            unsafe { libc::kill(self.child.id() as libc::pid_t, signal) },
            0
        );
    }

    fn wait_exit(&mut self) -> std::process::ExitStatus {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "the node did not exit; console:\n{}",
                self.console()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Launched {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The `addr` of the `accepting connections` line in `log` (text or JSON).
fn accepting_addr(log: &str) -> Option<SocketAddr> {
    let line = log.lines().find(|l| l.contains("accepting connections"))?;
    let rest = &line[line.find("addr")?..];
    let at = rest.find("127.0.0.1:")?;
    let port: String = rest[at + "127.0.0.1:".len()..]
        .chars()
        .take_while(|c| c.is_ascii_digit())
        .collect();
    Some(SocketAddr::from(([127, 0, 0, 1], port.parse().ok()?)))
}

/// Sends `version` on the pubsub port and returns the answer line.
fn version_answer(addr: SocketAddr) -> String {
    let mut s = TcpStream::connect_timeout(&addr, REPLY_TIMEOUT).expect("connect to the node");
    s.set_read_timeout(Some(REPLY_TIMEOUT)).unwrap();
    s.write_all(b"version\r\n").unwrap();
    let mut got = Vec::new();
    let mut byte = [0u8; 1];
    while !got.ends_with(b"\r\n") {
        match s.read(&mut byte) {
            Ok(1) => got.push(byte[0]),
            _ => break,
        }
    }
    String::from_utf8_lossy(&got).into_owned()
}

// ---------------------------------------------------------------------------
// The systemd unit
// ---------------------------------------------------------------------------

/// The `[Service]` settings of `etc/kraken.service`: key -> values in order.
fn unit_service_section() -> BTreeMap<String, Vec<String>> {
    let text = std::fs::read_to_string(Path::new(REPO).join("etc/kraken.service")).unwrap();
    let mut section = String::new();
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if line.starts_with('[') {
            section = line.to_string();
            continue;
        }
        assert!(
            !line.ends_with('\\'),
            "continued lines are not handled: {line}"
        );
        if section == "[Service]" {
            let (k, v) = line
                .split_once('=')
                .unwrap_or_else(|| panic!("bad line {line}"));
            out.entry(k.to_string()).or_default().push(v.to_string());
        }
    }
    out
}

fn one<'a>(unit: &'a BTreeMap<String, Vec<String>>, key: &str) -> &'a str {
    match unit.get(key).map(Vec::as_slice) {
        Some([v]) => v,
        other => panic!("the unit needs exactly one {key}=, has {other:?}"),
    }
}

/// The install paths the unit and the package use, and where this test puts
/// each (the only substitution made in the unit and the packaged config).
fn install_paths(root: &Path) -> Vec<(&'static str, String)> {
    let at = |p: &str| root.join(p).to_str().unwrap().to_string();
    vec![
        ("/usr/bin/kraken", BIN.to_string()),
        // The package puts etc/kraken.toml there, as the checkout has it.
        ("/usr/share/kraken", REPO.to_string()),
        ("/etc/kraken", at("etc/kraken")),
        ("/run/kraken", at("run/kraken")),
        ("/var/log/kraken", at("log/kraken")),
        ("/var/lib/kraken", at("lib/kraken")),
    ]
}

fn substitute(text: &str, paths: &[(&str, String)]) -> String {
    let mut out = text.to_string();
    for (from, to) in paths {
        out = out.replace(from, to);
    }
    out
}

#[test]
fn the_shipped_unit_starts_the_node_with_the_packaged_config() {
    let unit = unit_service_section();
    assert_eq!(one(&unit, "Type"), "notify");
    assert_eq!(one(&unit, "RuntimeDirectory"), "kraken");
    assert_eq!(one(&unit, "LogsDirectory"), "kraken");
    assert_eq!(one(&unit, "StateDirectory"), "kraken");
    assert_eq!(one(&unit, "ExecReload"), "/bin/kill -HUP $MAINPID");
    assert_eq!(one(&unit, "User"), "kraken");

    let dir = TempDir::new("unit");
    let root = dir.join("root");
    let paths = install_paths(&root);
    // What systemd creates for the unit's directories.
    for d in ["run/kraken", "log/kraken", "lib/kraken", "etc/kraken"] {
        std::fs::create_dir_all(root.join(d)).unwrap();
    }
    // The package's /etc/kraken/kraken.toml, with its paths moved likewise.
    let packaged = std::fs::read_to_string(Path::new(REPO).join("debian/kraken.toml")).unwrap();
    assert!(
        packaged.contains("\"/run/kraken/"),
        "the packaged control_socket is under RuntimeDirectory"
    );
    std::fs::write(
        root.join("etc/kraken/kraken.toml"),
        substitute(&packaged, &paths),
    )
    .unwrap();

    let exec = one(&unit, "ExecStart");
    assert!(
        exec.starts_with("/usr/bin/kraken run -config /etc/kraken/kraken"),
        "{exec}"
    );
    assert!(
        !exec.contains(['"', '\'', '$', '%']),
        "a plain command line: {exec}"
    );
    let argv: Vec<String> = substitute(exec, &paths)
        .split_whitespace()
        .map(String::from)
        .collect();
    let mut env: Vec<(String, String)> = Vec::new();
    for line in unit.get("Environment").into_iter().flatten() {
        for assignment in line.split_whitespace() {
            let (k, v) = assignment.split_once('=').expect("Environment=KEY=VALUE");
            env.push((k.to_string(), substitute(v, &paths)));
        }
    }
    assert!(!env.is_empty(), "the unit's Environment= lines are used");
    let at = |p: &str| root.join(p).to_str().unwrap().to_string();
    // What systemd sets for these directories, and the test's own
    // overrides: loopback only, and a free port instead of 12355.
    env.extend([
        ("RUNTIME_DIRECTORY".to_string(), at("run/kraken")),
        ("LOGS_DIRECTORY".to_string(), at("log/kraken")),
        ("STATE_DIRECTORY".to_string(), at("lib/kraken")),
        ("KRAKEN_LISTEN_IP".to_string(), "127.0.0.1".to_string()),
        ("KRAKEN_TCP_SERVER_PORT".to_string(), "0".to_string()),
    ]);
    let cwd = PathBuf::from(substitute(one(&unit, "WorkingDirectory"), &paths));

    let mut node = Launched::spawn(&argv[0], &argv[1..], &env, &cwd, &dir.join(""));
    let ready = node.expect_note("READY=1");
    // READY=1 is sent only once the port accepts: the log line naming the
    // port is already written, and the port answers.
    let console = node.console();
    let addr = accepting_addr(&console).unwrap_or_else(|| {
        panic!("READY=1 ({ready:?}) before `accepting connections`; console:\n{console}")
    });
    assert_eq!(
        version_answer(addr),
        format!("VERSION {}\r\n", env!("CARGO_PKG_VERSION"))
    );
    assert!(
        console.contains(&format!(
            "configuration file read, path: {}",
            at("etc/kraken/kraken.toml")
        )),
        "{console}"
    );
    // The control socket is where the packaged config puts it, in the
    // RuntimeDirectory, and the control commands find it from the same config.
    assert!(root.join("run/kraken/kraken.sock").exists(), "{console}");
    let status = Command::new(BIN)
        .args(["status", "-config", &at("etc/kraken/kraken")])
        .env_clear()
        .envs(env.iter().map(|(k, v)| (k, v)))
        .output()
        .unwrap();
    assert!(status.status.success(), "{status:?}");
    assert!(
        String::from_utf8_lossy(&status.stdout).contains("Running"),
        "{status:?}"
    );

    // systemctl reload: SIGHUP, told to systemd, logged (no log_file here).
    node.signal(libc::SIGHUP);
    node.expect_note("RELOADING=1");
    node.expect_note("READY=1");
    assert_eq!(
        version_answer(addr),
        format!("VERSION {}\r\n", env!("CARGO_PKG_VERSION"))
    );
    assert!(
        node.console().contains("SIGHUP: no log_file to reopen"),
        "{}",
        node.console()
    );

    // systemctl stop: SIGTERM drains, STOPPING=1, exit 0.
    node.signal(libc::SIGTERM);
    node.expect_note("STOPPING=1");
    let status = node.wait_exit();
    assert!(status.success(), "{status}; console:\n{}", node.console());
    assert!(node.console().contains("kraken stopped"));
}

#[test]
fn the_package_installs_what_the_unit_runs() {
    let cargo = std::fs::read_to_string(Path::new(REPO).join("Cargo.toml")).unwrap();
    let meta = &cargo[cargo
        .find("[package.metadata.deb]")
        .expect("[package.metadata.deb]")..];
    let meta = &meta[..meta[1..].find("\n[").map_or(meta.len(), |i| i + 1)];
    for (source, target) in [
        ("target/release/kraken", "usr/bin/kraken"),
        ("etc/kraken.service", "lib/systemd/system/kraken.service"),
        ("debian/kraken.toml", "etc/kraken/kraken.toml"),
        ("etc/kraken.toml", "usr/share/kraken/etc/kraken.toml"),
        ("debian/kraken.logrotate", "etc/logrotate.d/kraken"),
    ] {
        assert!(
            meta.contains(&format!("[\"{source}\", \"{target}\"")),
            "the package installs {source} as /{target}"
        );
    }
    assert!(meta.contains("maintainer-scripts = \"debian/\""));
    let postinst = std::fs::read_to_string(Path::new(REPO).join("debian/postinst")).unwrap();
    assert!(
        postinst.contains("adduser --system"),
        "postinst creates the kraken user"
    );
    // The examples of etc/kraken.toml and the packaged config use the
    // unit's directories.
    let etc = std::fs::read_to_string(Path::new(REPO).join("etc/kraken.toml")).unwrap();
    let packaged = std::fs::read_to_string(Path::new(REPO).join("debian/kraken.toml")).unwrap();
    for (option, path) in [
        ("pid_file", "/run/kraken/kraken.pid"),
        ("log_file", "/var/log/kraken/kraken.log"),
        ("control_socket", "/run/kraken/kraken.sock"),
    ] {
        let line = format!("{option} = \"{path}\"");
        assert!(etc.contains(&line), "etc/kraken.toml: {line}");
        assert!(packaged.contains(&line), "debian/kraken.toml: {line}");
    }
    let logrotate =
        std::fs::read_to_string(Path::new(REPO).join("debian/kraken.logrotate")).unwrap();
    assert!(
        logrotate.contains("/var/log/kraken/") && logrotate.contains("systemctl reload kraken")
    );
}

// ---------------------------------------------------------------------------
// sd_notify, SIGHUP and the log
// ---------------------------------------------------------------------------

/// `kraken run` on loopback, a free port, its control socket in `dir`, with
/// `-kraken` pairs `options`.
fn launch(dir: &TempDir, options: &[(&str, &str)]) -> Launched {
    let mut args = vec!["run".to_string()];
    args.extend(loopback_args("0").map(String::from));
    args.extend([
        "-kraken".into(),
        "control_socket".into(),
        dir.join("ctl.sock").to_str().unwrap().into(),
    ]);
    for (k, v) in options {
        args.extend(["-kraken".to_string(), k.to_string(), v.to_string()]);
    }
    let env = [("KRAKEN_HOME".to_string(), REPO.to_string())];
    Launched::spawn(BIN, &args, &env, &dir.join(""), &dir.join(""))
}

#[test]
fn sighup_reopens_log_file_for_logrotate_and_logs_it() {
    let dir = TempDir::new("hup");
    let log = dir.join("kraken.log");
    let mut node = launch(&dir, &[("log_file", log.to_str().unwrap())]);
    node.expect_note("READY=1");
    let before = std::fs::read_to_string(&log).unwrap();
    let addr = accepting_addr(&before).expect("accepting connections in log_file");

    // logrotate: move the file away, then SIGHUP (systemctl reload).
    let rotated = dir.join("kraken.log.1");
    std::fs::rename(&log, &rotated).unwrap();
    node.signal(libc::SIGHUP);
    node.expect_note("RELOADING=1");
    node.expect_note("READY=1");
    let deadline = Instant::now() + ASYNC_TIMEOUT;
    while !std::fs::read_to_string(&log).is_ok_and(|t| t.contains("log_file reopened")) {
        assert!(
            Instant::now() < deadline,
            "no `log_file reopened` in a fresh {}",
            log.display()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let old = std::fs::read_to_string(&rotated).unwrap();
    assert!(
        old.contains("SIGHUP: reopening log_file"),
        "the old file says it was let go:\n{old}"
    );
    assert!(!old.contains("log_file reopened"));
    // The node lives on and logs to the new file.
    assert_eq!(
        version_answer(addr),
        format!("VERSION {}\r\n", env!("CARGO_PKG_VERSION"))
    );
    node.signal(libc::SIGTERM);
    assert!(node.wait_exit().success());
    let new = std::fs::read_to_string(&log).unwrap();
    assert!(new.contains("kraken stopped"), "{new}");
    assert!(!std::fs::read_to_string(&rotated)
        .unwrap()
        .contains("kraken stopped"));
}

#[test]
fn ready_goes_to_an_abstract_notify_socket_too() {
    let dir = TempDir::new("abstract");
    let name = format!("kraken-it-notify-{}", std::process::id());
    use std::os::linux::net::SocketAddrExt;
    let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
    let sock = UnixDatagram::bind_addr(&addr).unwrap();
    sock.set_read_timeout(Some(READY_TIMEOUT)).unwrap();
    let mut child = Command::new(BIN)
        .arg("run")
        .args(loopback_args("0"))
        .args([
            "-kraken",
            "control_socket",
            dir.join("ctl.sock").to_str().unwrap(),
        ])
        .env("KRAKEN_HOME", REPO)
        .env("NOTIFY_SOCKET", format!("@{name}"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut buf = [0u8; 512];
    let got = sock.recv(&mut buf);
    let _ = child.kill();
    let _ = child.wait();
    let n = got.expect("READY=1 on the abstract socket");
    assert!(String::from_utf8_lossy(&buf[..n])
        .lines()
        .any(|l| l == "READY=1"));
}

#[test]
fn json_log_lines_have_rfc3339_times_and_every_field() {
    let dir = TempDir::new("json");
    let log = dir.join("kraken.json");
    let mut node = launch(
        &dir,
        &[("log_file", log.to_str().unwrap()), ("log_format", "json")],
    );
    node.expect_note("READY=1");
    node.signal(libc::SIGTERM);
    assert!(node.wait_exit().success());
    let text = std::fs::read_to_string(&log).unwrap();
    let mut accepting = None;
    for line in text.lines() {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        let ts = v["ts"].as_str().unwrap_or_else(|| panic!("no ts: {line}"));
        assert_rfc3339_utc(ts);
        assert!(v["level"].is_string() && v["msg"].is_string(), "{line}");
        if v["msg"] == "accepting connections" {
            accepting = Some(v);
        }
    }
    let accepting = accepting.unwrap_or_else(|| panic!("no accepting connections:\n{text}"));
    assert_eq!(accepting["level"], "INFO");
    assert!(
        accepting["addr"]
            .as_str()
            .unwrap()
            .starts_with("127.0.0.1:"),
        "{accepting}"
    );
    for key in ["router_shards", "worker_threads", "max_tcp_clients"] {
        assert!(accepting.get(key).is_some(), "{key} missing: {accepting}");
    }
    assert!(text.contains("\"msg\":\"kraken stopped\""));
}

#[test]
fn text_log_lines_start_with_an_rfc3339_time_and_keep_their_fields() {
    let dir = TempDir::new("text");
    let mut node = launch(&dir, &[]);
    node.expect_note("READY=1");
    let console = node.console();
    for line in console.lines() {
        let ts = line.split(' ').next().unwrap();
        assert_rfc3339_utc(ts);
    }
    let accepting = console
        .lines()
        .find(|l| l.contains("accepting connections"))
        .unwrap();
    for key in [
        "addr: 127.0.0.1:",
        "router_shards: ",
        "worker_threads: ",
        "max_tcp_clients: ",
    ] {
        assert!(accepting.contains(key), "{key} missing: {accepting}");
    }
}

#[track_caller]
fn assert_rfc3339_utc(ts: &str) {
    // 2026-12-01T21:04:24.254Z
    let b = ts.as_bytes();
    let digits =
        |r: std::ops::Range<usize>| r.clone().all(|i| b.get(i).is_some_and(u8::is_ascii_digit));
    assert!(
        b.len() == 24
            && digits(0..4)
            && b[4] == b'-'
            && digits(5..7)
            && b[7] == b'-'
            && digits(8..10)
            && b[10] == b'T'
            && digits(11..13)
            && b[13] == b':'
            && digits(14..16)
            && b[16] == b':'
            && digits(17..19)
            && b[19] == b'.'
            && digits(20..23)
            && b[23] == b'Z',
        "not an RFC 3339 UTC time: {ts:?}"
    );
}

// ---------------------------------------------------------------------------
// Files, exit codes, --version, bin/kraken
// ---------------------------------------------------------------------------

#[test]
fn a_log_file_that_cannot_be_opened_is_named() {
    let dir = TempDir::new("badlog");
    let missing = dir.join("no-such-dir/kraken.log");
    let run = |log: &Path| {
        let ctl = dir.join("ctl.sock");
        kraken(
            &[
                &["run"][..],
                &loopback_args("0"),
                &[
                    "-kraken",
                    "control_socket",
                    ctl.to_str().unwrap(),
                    "-kraken",
                    "log_file",
                    log.to_str().unwrap(),
                ],
            ]
            .concat(),
        )
    };
    let out = run(&missing);
    assert_eq!(out.code, Some(1), "{}", out.text());
    assert!(
        out.stderr
            .contains(&format!("cannot open log_file {}", missing.display())),
        "{}",
        out.text()
    );

    // A symbolic link is not followed (a log file in a shared directory
    // must not be redirected).
    let link = dir.join("link.log");
    std::os::unix::fs::symlink(dir.join("elsewhere.log"), &link).unwrap();
    let out = run(&link);
    assert_eq!(out.code, Some(1), "{}", out.text());
    assert!(
        out.stderr.contains(link.to_str().unwrap()) && out.stderr.contains("symbolic link"),
        "{}",
        out.text()
    );
    assert!(!dir.join("elsewhere.log").exists());
}

#[test]
fn a_bad_option_exits_2_as_the_readme_says() {
    let out = kraken(&["run", "-kraken", "no_such_option", "1"]);
    assert_eq!(out.code, Some(2), "{}", out.text());
    let readme = std::fs::read_to_string(Path::new(REPO).join("README.md")).unwrap();
    let row = readme
        .lines()
        .find(|l| l.starts_with("| `bin/kraken run` |"))
        .expect("the README's row for run");
    assert!(row.contains("2 for a bad option"), "{row}");
}

#[test]
fn version_flag_prints_the_version() {
    for flag in ["--version", "-version", "version"] {
        let out = kraken(&[flag]);
        assert_eq!(out.code, Some(0), "{}", out.text());
        assert_eq!(
            out.stdout,
            format!("kraken {}\n", env!("CARGO_PKG_VERSION"))
        );
    }
}

#[test]
fn bin_kraken_works_through_a_symbolic_link() {
    let dir = TempDir::new("symlink");
    let link = dir.join("kraken");
    std::os::unix::fs::symlink(Path::new(REPO).join("bin/kraken"), &link).unwrap();
    // Without building (a test must not run cargo): it either runs the
    // checkout's release binary or says it is missing, naming the path in
    // the checkout, never looking for Cargo.toml beside the link.
    let out = Command::new(&link)
        .arg("--version")
        .env("KRAKEN_NO_BUILD", "1")
        .env_remove("KRAKEN_HOME")
        .current_dir(dir.join(""))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let release = Path::new(REPO).join("target/release/kraken");
    if release.exists() && out.status.success() {
        assert!(stdout.starts_with("kraken "), "{stdout}{stderr}");
    } else {
        assert!(
            stderr.contains(&format!("{} is missing", release.display()))
                || stderr.contains("expected a command"),
            "{:?}\n{stdout}{stderr}",
            out.status
        );
    }
    assert!(!stderr.contains("Cargo.toml"), "{stderr}");
}

#[test]
fn a_control_socket_that_cannot_be_created_is_named_and_the_node_exits_1() {
    let dir = TempDir::new("badctl");
    let socket = dir.join("no-such-dir/kraken.sock");
    let out = kraken(
        &[
            &["run"][..],
            &loopback_args("0"),
            &["-kraken", "control_socket", socket.to_str().unwrap()],
        ]
        .concat(),
    );
    assert_eq!(out.code, Some(1), "{}", out.text());
    assert!(
        out.stderr.contains(socket.to_str().unwrap()),
        "{}",
        out.text()
    );
    assert!(!out.stderr.contains("panicked"), "{}", out.text());
}
