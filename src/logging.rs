//! Logging: slog to the console (stderr) or to `log_file`, one line per
//! event, as text or JSON (`log_format`), with RFC 3339 UTC timestamps,
//! filtered by a level that `change_log_level` can change while the node
//! runs.
//!
//! `log_file` can be reopened while the node runs (SIGHUP, for logrotate):
//! the drain holding the open file sits behind a mutex, and
//! [`LogFile::reopen`] opens the new file first and swaps it in under that
//! mutex, so every event goes whole to one file or the other. Log files are
//! opened without following symbolic links, and every error names the path.

use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::panic::{RefUnwindSafe, UnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use kraken_actors::loglevel::{RuntimeLevel, RuntimeLevelFilter};
use kraken_actors::settings::LogFormat;
use kraken_actors::Settings;
use slog::{o, Drain, FnValue, Logger, OwnedKVList, PushFnValue, Record};

/// The node's logger, the handle that changes its level, and the log file
/// (if it logs to one) for reopening.
pub struct Log {
    pub logger: Logger,
    pub level: Arc<RuntimeLevel>,
    pub file: Option<Arc<LogFile>>,
}

/// A file that could not be opened, with its path.
#[derive(Debug)]
pub struct OpenError {
    pub path: PathBuf,
    pub error: io::Error,
}

impl fmt::Display for OpenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "cannot open log_file {}: ", self.path.display())?;
        if self.error.raw_os_error() == Some(libc::ELOOP) {
            write!(f, "it is a symbolic link, which is not followed")
        } else {
            write!(f, "{}", self.error)
        }
    }
}

type BoxedDrain = Box<dyn Drain<Ok = (), Err = io::Error> + Send>;

/// `log_file`, open, with the drain that formats into it.
pub struct LogFile {
    path: PathBuf,
    format: LogFormat,
    drain: Mutex<BoxedDrain>,
}

impl LogFile {
    fn open(path: &Path, format: LogFormat) -> Result<LogFile, OpenError> {
        Ok(LogFile {
            path: path.to_path_buf(),
            format,
            drain: Mutex::new(formatted(open_append(path)?, format)),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Opens `log_file` afresh (after logrotate moved it away) and writes
    /// the following events there. On an error the old file stays in use.
    pub fn reopen(&self) -> Result<(), OpenError> {
        let fresh = formatted(open_append(&self.path)?, self.format);
        let old = std::mem::replace(&mut *self.lock(), fresh);
        drop(old);
        Ok(())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BoxedDrain> {
        // A panic while formatting one event must not stop all logging.
        self.drain.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Appends to `path` (created 0640 if missing), never through a symlink.
fn open_append(path: &Path) -> Result<File, OpenError> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o640)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
        .map_err(|error| OpenError {
            path: path.to_path_buf(),
            error,
        })
}

/// The drain that sends each event to the current [`LogFile`].
struct ToLogFile(Arc<LogFile>);

impl Drain for ToLogFile {
    type Ok = ();
    type Err = io::Error;

    fn log(&self, record: &Record, values: &OwnedKVList) -> io::Result<()> {
        self.0.lock().log(record, values)
    }
}

/// The drain that sends each event to stderr.
struct ToStderr(Mutex<BoxedDrain>);

impl Drain for ToStderr {
    type Ok = ();
    type Err = io::Error;

    fn log(&self, record: &Record, values: &OwnedKVList) -> io::Result<()> {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .log(record, values)
    }
}

/// Builds the node's logger as `settings` say (`log_file`, `log_format`,
/// `log_level`).
pub fn build(settings: &Settings) -> Result<Log, OpenError> {
    let level = RuntimeLevel::new(settings.log_level);
    let (logger, file) = match &settings.log_file {
        Some(path) => {
            let file = Arc::new(LogFile::open(path, settings.log_format)?);
            (wrap(ToLogFile(file.clone()), &level), Some(file))
        }
        None => {
            let drain = formatted(io::stderr(), settings.log_format);
            (wrap(ToStderr(Mutex::new(drain)), &level), None)
        }
    };
    Ok(Log {
        logger,
        level,
        file,
    })
}

/// A drain writing events to `out` in `format`; each event reaches `out`
/// in one write (buffered, flushed at its end).
fn formatted<W: Write + Send + 'static>(out: W, format: LogFormat) -> BoxedDrain {
    let out = BufWriter::new(out);
    match format {
        LogFormat::Text => {
            let decorator = slog_term::PlainDecorator::new(out);
            Box::new(
                slog_term::FullFormat::new(decorator)
                    .use_custom_timestamp(|w: &mut dyn Write| write!(w, "{}", timestamp()))
                    .build(),
            )
        }
        LogFormat::Json => Box::new(
            slog_json::Json::new(out)
                .set_newlines(true)
                .set_flush(true)
                .add_key_value(o!(
                    // slog serializes these last to first: ts, level, msg.
                    "msg" => PushFnValue(|r: &Record, ser| ser.emit(r.msg())),
                    "level" => FnValue(|r: &Record| r.level().as_str()),
                    "ts" => FnValue(|_: &Record| timestamp()),
                ))
                .build(),
        ),
    }
}

/// Now as RFC 3339 in UTC with milliseconds: `2026-12-01T21:04:24.254Z`.
pub fn timestamp() -> String {
    const FORMAT: &[time::format_description::FormatItem<'static>] = time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
    );
    time::OffsetDateTime::now_utc()
        .format(FORMAT)
        .unwrap_or_else(|_| "1970-01-01T00:00:00.000Z".to_string())
}

fn wrap<D>(drain: D, level: &Arc<RuntimeLevel>) -> Logger
where
    D: Drain<Ok = (), Err = io::Error> + Send + Sync + UnwindSafe + RefUnwindSafe + 'static,
{
    // A full disk or a closed stderr loses events; it must not stop the node.
    let filtered = RuntimeLevelFilter {
        inner: drain.ignore_res(),
        level: level.clone(),
    }
    .ignore_res();
    Logger::root(filtered, o!())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_rfc3339_utc_with_milliseconds() {
        let ts = timestamp();
        let parsed =
            time::OffsetDateTime::parse(&ts, &time::format_description::well_known::Rfc3339)
                .unwrap();
        assert_eq!(parsed.offset(), time::UtcOffset::UTC);
        assert_eq!(ts.len(), "2026-12-01T21:04:24.254Z".len(), "{ts}");
    }

    #[test]
    fn an_open_error_names_the_path() {
        let dir = std::env::temp_dir().join(format!("kraken-logging-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let missing = dir.join("no/such/dir/k.log");
        let e = open_append(&missing).err().unwrap();
        assert!(e.to_string().contains(&*missing.to_string_lossy()), "{e}");
        let link = dir.join("link.log");
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(dir.join("target.log"), &link).unwrap();
        let e = open_append(&link).err().unwrap();
        assert!(e.to_string().contains("symbolic link"), "{e}");
        assert!(!dir.join("target.log").exists());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
