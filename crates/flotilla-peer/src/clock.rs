//! The clock seam. The pure cores never read time; the IO shell stamps
//! commands through a [`Clock`], which the chaos suite can skew per peer and
//! the simulator can replace.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub trait Clock: Send + Sync + 'static {
    /// Wall-clock time in Unix milliseconds.
    fn now_unix_ms(&self) -> u64;
}

/// How often a skewable clock re-reads its offset file.
const OFFSET_POLL_INTERVAL: Duration = Duration::from_millis(200);
/// The largest skew the offset file may set: a day either way.
const MAX_OFFSET_MS: i64 = 86_400_000;

/// The host's clock, shifted by an offset that fault injection may change
/// while the peer runs (containers share the host's clock, so skewing one
/// peer's time has to happen inside it).
#[derive(Debug, Default)]
pub struct SystemClock {
    offset_ms: AtomicI64,
}

impl SystemClock {
    pub fn offset_ms(&self) -> i64 {
        self.offset_ms.load(Ordering::Relaxed)
    }

    /// Follows `file`, which holds the offset in milliseconds (absent or
    /// empty: no offset), until the clock is dropped elsewhere. An
    /// unreadable value is reported once and leaves the offset as it was.
    pub async fn follow_offset_file(self: Arc<Self>, file: PathBuf) {
        let mut reported = None;
        loop {
            let text = std::fs::read_to_string(&file).unwrap_or_default();
            let text = text.trim();
            match if text.is_empty() { Ok(0) } else { text.parse::<i64>() } {
                Ok(offset) if offset.abs() <= MAX_OFFSET_MS => {
                    if self.offset_ms.swap(offset, Ordering::Relaxed) != offset {
                        tracing::warn!(offset_ms = offset, "fault injection: clock offset changed");
                    }
                    reported = None;
                }
                _ => {
                    if reported.as_deref() != Some(text) {
                        tracing::error!(file = %file.display(), "clock offset {text:?} is not milliseconds within ±{MAX_OFFSET_MS}");
                        reported = Some(text.to_string());
                    }
                }
            }
            tokio::time::sleep(OFFSET_POLL_INTERVAL).await;
        }
    }
}

impl Clock for SystemClock {
    fn now_unix_ms(&self) -> u64 {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64);
        now.saturating_add(self.offset_ms()).max(0) as u64
    }
}
