//! The clock seam. The pure cores never read time; the IO shell stamps
//! commands through a [`Clock`], which the chaos suite can skew per peer and
//! the simulator can replace.

use std::path::PathBuf;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
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

/// Follows another clock forward but never back. When the wall clock steps
/// back (an operator, NTP, the chaos suite's offsets), this one runs on at
/// the monotonic clock's pace from where it was, and stays ahead by the
/// step. The node agent schedules container polls, probes and back-offs on
/// its clock: a step back of five minutes would otherwise stall every Pod
/// worker, and hide every container exit, for five minutes.
pub struct NeverBackwards {
    inner: Arc<dyn Clock>,
    /// The last time given, and when (monotonic).
    last: Mutex<Option<(u64, tokio::time::Instant)>>,
}

impl NeverBackwards {
    pub fn new(inner: Arc<dyn Clock>) -> Self {
        Self { inner, last: Mutex::new(None) }
    }
}

impl Clock for NeverBackwards {
    fn now_unix_ms(&self) -> u64 {
        let wall = self.inner.now_unix_ms();
        let now = tokio::time::Instant::now();
        let mut last = self.last.lock().expect("clock lock");
        let given = match *last {
            Some((ms, at)) => wall.max(ms + now.saturating_duration_since(at).as_millis() as u64),
            None => wall,
        };
        // Re-anchored only when time moves, so sub-millisecond calls do not
        // lose their fractions.
        if last.is_none_or(|(ms, _)| given > ms) {
            *last = Some((given, now));
        }
        given
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Manual(AtomicI64);

    impl Clock for Manual {
        fn now_unix_ms(&self) -> u64 {
            self.0.load(Ordering::SeqCst) as u64
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_step_back_is_absorbed_and_a_step_forward_followed() {
        let wall = Arc::new(Manual(AtomicI64::new(1_000_000)));
        let clock = NeverBackwards::new(wall.clone());
        assert_eq!(clock.now_unix_ms(), 1_000_000);
        tokio::time::advance(std::time::Duration::from_millis(500)).await;
        wall.0.store(1_000_500, Ordering::SeqCst);
        assert_eq!(clock.now_unix_ms(), 1_000_500);
        // Five minutes back: time goes on from where it was.
        wall.0.store(700_500, Ordering::SeqCst);
        assert_eq!(clock.now_unix_ms(), 1_000_500);
        tokio::time::advance(std::time::Duration::from_millis(250)).await;
        wall.0.store(700_750, Ordering::SeqCst);
        assert_eq!(clock.now_unix_ms(), 1_000_750);
        // Forward steps are followed at once.
        wall.0.store(2_000_000, Ordering::SeqCst);
        assert_eq!(clock.now_unix_ms(), 2_000_000);
    }
}
