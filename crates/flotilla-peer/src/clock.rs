//! The clock seam. The pure cores never read time; the IO shell stamps
//! commands through a [`Clock`], which the chaos suite can skew per peer and
//! the simulator can replace.

use std::time::{SystemTime, UNIX_EPOCH};

pub trait Clock: Send + Sync + 'static {
    /// Wall-clock time in Unix milliseconds.
    fn now_unix_ms(&self) -> u64;
}

/// The host's clock, shifted by a fixed offset.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock {
    pub offset_ms: i64,
}

impl Clock for SystemClock {
    fn now_unix_ms(&self) -> u64 {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64);
        now.saturating_add(self.offset_ms).max(0) as u64
    }
}
