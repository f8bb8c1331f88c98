//! Process figures: own CPU (getrusage), the server's CPU and RSS (/proc),
//! and the open-file limit.

use std::time::Instant;

/// Raise the soft RLIMIT_NOFILE to the hard limit; returns (old soft, new soft).
pub fn raise_nofile_limit() -> Option<(u64, u64)> {
    let mut rl = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read/write the struct we pass.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut rl) != 0 {
            return None;
        }
        let old = rl.rlim_cur;
        if rl.rlim_cur < rl.rlim_max {
            rl.rlim_cur = rl.rlim_max;
            if libc::setrlimit(libc::RLIMIT_NOFILE, &rl) != 0 {
                return Some((old, old));
            }
        }
        Some((old, rl.rlim_cur))
    }
}

/// CPU seconds (user + system) used by this process so far.
pub fn self_cpu_secs() -> f64 {
    // SAFETY: getrusage fills the zeroed struct we own.
    unsafe {
        let mut ru: libc::rusage = std::mem::zeroed();
        if libc::getrusage(libc::RUSAGE_SELF, &mut ru) != 0 {
            return 0.0;
        }
        let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
        tv(ru.ru_utime) + tv(ru.ru_stime)
    }
}

fn clock_ticks() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as f64
    } else {
        100.0
    }
}

/// utime + stime of process `pid`, in seconds, from /proc/PID/stat.
pub fn proc_cpu_secs(pid: u32) -> Option<f64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_stat_cpu_ticks(&s).map(|t| t as f64 / clock_ticks())
}

fn parse_stat_cpu_ticks(stat: &str) -> Option<u64> {
    // The command name (field 2) is in parentheses and may hold spaces:
    // count fields from the last ')'. utime and stime are fields 14 and 15,
    // i.e. the 12th and 13th after the name.
    let after = &stat[stat.rfind(')')? + 1..];
    let mut f = after.split_whitespace().skip(11);
    let utime: u64 = f.next()?.parse().ok()?;
    let stime: u64 = f.next()?.parse().ok()?;
    Some(utime + stime)
}

/// VmRSS of process `pid`, in KiB, from /proc/PID/status.
pub fn proc_rss_kib(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    parse_status_rss(&s)
}

fn parse_status_rss(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line["VmRSS:".len()..]
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Busy CPU seconds of the whole machine (every process), from /proc/stat.
pub fn machine_busy_secs() -> Option<f64> {
    let s = std::fs::read_to_string("/proc/stat").ok()?;
    parse_proc_stat_busy(&s).map(|t| t as f64 / clock_ticks())
}

fn parse_proc_stat_busy(stat: &str) -> Option<u64> {
    // cpu  user nice system idle iowait irq softirq steal guest guest_nice
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    let f: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    if f.len() < 8 {
        return None;
    }
    // guest time is already inside user time.
    Some(f[0] + f[1] + f[2] + f[5] + f[6] + f[7])
}

/// One reading of the server (if its pid was given) and of ourselves.
#[derive(Clone, Copy, Debug)]
pub struct Snapshot {
    pub at: Instant,
    pub self_cpu: f64,
    pub server_cpu: Option<f64>,
    pub server_rss_kib: Option<u64>,
    pub machine_busy: Option<f64>,
}

pub fn snapshot(server_pid: Option<u32>) -> Snapshot {
    Snapshot {
        at: Instant::now(),
        self_cpu: self_cpu_secs(),
        server_cpu: server_pid.and_then(proc_cpu_secs),
        server_rss_kib: server_pid.and_then(proc_rss_kib),
        machine_busy: machine_busy_secs(),
    }
}

/// CPU used between two snapshots.
pub struct CpuSpan {
    pub wall: f64,
    pub self_cpu: f64,
    pub server_cpu: Option<f64>,
    /// CPU used by every process of the machine.
    pub machine_busy: Option<f64>,
}

pub fn span(a: &Snapshot, b: &Snapshot) -> CpuSpan {
    CpuSpan {
        wall: b.at.duration_since(a.at).as_secs_f64(),
        self_cpu: b.self_cpu - a.self_cpu,
        server_cpu: match (a.server_cpu, b.server_cpu) {
            (Some(x), Some(y)) => Some(y - x),
            _ => None,
        },
        machine_busy: match (a.machine_busy, b.machine_busy) {
            (Some(x), Some(y)) => Some(y - x),
            _ => None,
        },
    }
}

pub fn cores() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_parsing() {
        let s =
            "1234 (kra ken) S 1 1234 1234 0 -1 4194560 500 0 0 0 250 75 0 0 20 0 9 0 100 1000 200";
        assert_eq!(parse_stat_cpu_ticks(s), Some(325));
        let st = "Name:\tkraken\nVmPeak:\t  1000 kB\nVmRSS:\t    5120 kB\n";
        assert_eq!(parse_status_rss(st), Some(5120));
        let ps = "cpu  100 5 50 1000 7 3 2 1 40 0\ncpu0 1 2 3 4 5 6 7 8 9 0\n";
        assert_eq!(parse_proc_stat_busy(ps), Some(161));
    }

    #[test]
    fn own_figures() {
        let me = std::process::id();
        assert!(proc_cpu_secs(me).is_some());
        assert!(proc_rss_kib(me).unwrap() > 0);
        assert!(self_cpu_secs() >= 0.0);
        assert!(raise_nofile_limit().is_some());
        assert!(machine_busy_secs().is_some());
    }
}
