//! A log level that can change while the node runs (`change_log_level`):
//! an atomic checked by a small slog `Drain` in front of the real one.

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;

use slog::{Drain, Level, OwnedKVList, Record};

use crate::settings::LogLevel;

/// The level in force; shared by the drain and whoever changes it.
#[derive(Debug)]
pub struct RuntimeLevel(AtomicU8);

impl RuntimeLevel {
    pub fn new(level: LogLevel) -> Arc<Self> {
        Arc::new(RuntimeLevel(AtomicU8::new(level as u8)))
    }

    pub fn set(&self, level: LogLevel) {
        self.0.store(level as u8, Ordering::Relaxed);
    }

    pub fn get(&self) -> LogLevel {
        match self.0.load(Ordering::Relaxed) {
            0 => LogLevel::Debug,
            1 => LogLevel::Info,
            2 => LogLevel::Warn,
            _ => LogLevel::Error,
        }
    }

    fn allows(&self, level: Level) -> bool {
        let min = match self.get() {
            LogLevel::Debug => Level::Debug,
            LogLevel::Info => Level::Info,
            LogLevel::Warn => Level::Warning,
            LogLevel::Error => Level::Error,
        };
        level.is_at_least(min)
    }
}

/// Passes records at or above the runtime level to the inner drain.
pub struct RuntimeLevelFilter<D> {
    pub inner: D,
    pub level: Arc<RuntimeLevel>,
}

impl<D: Drain> Drain for RuntimeLevelFilter<D> {
    type Ok = Option<D::Ok>;
    type Err = D::Err;

    fn log(&self, record: &Record, values: &OwnedKVList) -> Result<Self::Ok, Self::Err> {
        if self.level.allows(record.level()) {
            self.inner.log(record, values).map(Some)
        } else {
            Ok(None)
        }
    }

    fn is_enabled(&self, level: Level) -> bool {
        self.level.allows(level) && self.inner.is_enabled(level)
    }
}
