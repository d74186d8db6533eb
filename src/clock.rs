//! Time comes from a `Clock` so expiry can be tested without sleeping.

use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

#[derive(Clone, Debug)]
pub enum Clock {
    System,
    /// System time plus a whole number of seconds read from a file on every
    /// call. Only for tests that start the real binary and need to move time
    /// forward (`--test-clock-file`); never enabled unless asked for.
    OffsetFile(PathBuf),
}

impl Clock {
    pub fn now(&self) -> i64 {
        let base = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0);
        match self {
            Clock::System => base,
            Clock::OffsetFile(path) => {
                let offset = std::fs::read_to_string(path)
                    .ok()
                    .and_then(|s| s.trim().parse::<i64>().ok())
                    .unwrap_or(0);
                base + offset
            }
        }
    }
}
