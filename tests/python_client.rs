//! The pymemcache example of docs/CLIENTS.md (`docs/examples/
//! pymemcache_subscriber.py`) against the real node: a stock Python
//! memcached client, used as that page says, receives every message and
//! sees `NOT_FOUND`. Needs `python3` with `pymemcache` (`.ci/run` installs
//! both); the test fails, saying so, when they are missing.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::Node;

const SCRIPT: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/docs/examples/pymemcache_subscriber.py"
);

/// How long the script may run.
const SCRIPT_TIMEOUT: Duration = Duration::from_secs(60);

fn require_pymemcache() {
    let probe = Command::new("python3")
        .args(["-c", "import pymemcache"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output();
    match probe {
        Err(e) => panic!("python3 is needed for this test (.ci/run installs it): {e}"),
        Ok(out) if !out.status.success() => panic!(
            "python3 lacks pymemcache (`pip install pymemcache`; .ci/run installs it): {}",
            String::from_utf8_lossy(&out.stderr)
        ),
        Ok(_) => {}
    }
}

#[test]
fn the_documented_pymemcache_subscriber_gets_everything_and_sees_not_found() {
    require_pymemcache();
    // The script's retro_subscribe reaches back a day: the node must be
    // younger than that (it is), so it answers NOT_FOUND.
    let node = Node::start(&[]);
    let mut child = Command::new("python3")
        .arg(SCRIPT)
        .arg(node.addr().to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run python3");
    let deadline = Instant::now() + SCRIPT_TIMEOUT;
    while child.try_wait().unwrap().is_none() {
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{SCRIPT} still running after {SCRIPT_TIMEOUT:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "{SCRIPT} failed ({:?})\n--- stdout\n{stdout}--- stderr\n{stderr}",
        out.status
    );
    for line in [
        "received 300 of 300 in order",
        "retro_subscribe from a day ago: NOT_FOUND, reload everything",
        "after reload: sport news b'after reload'",
    ] {
        assert!(
            stdout.lines().any(|l| l == line),
            "missing line {line:?} in\n{stdout}"
        );
    }
}
