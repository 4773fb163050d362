//! The request clock: wall time plus an offset that tests move to make holds lapse.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Unix milliseconds, as every time in the system is kept.
pub type Millis = i64;

/// A cheap, cloneable clock. Clones share the offset.
#[derive(Clone, Debug, Default)]
pub struct Clock {
    offset_ms: Arc<AtomicI64>,
}

impl Clock {
    pub fn now(&self) -> Millis {
        wall_ms() + self.offset_ms.load(Ordering::Relaxed)
    }

    /// Moves this clock (and its clones) forward.
    pub fn advance(&self, by: Duration) {
        let ms = i64::try_from(by.as_millis()).unwrap_or(i64::MAX);
        self.offset_ms.fetch_add(ms, Ordering::Relaxed);
    }
}

pub fn wall_ms() -> Millis {
    let since = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO);
    i64::try_from(since.as_millis()).unwrap_or(i64::MAX)
}

/// RFC 3339 in UTC, whole seconds unless the time has a fraction.
pub fn rfc3339(ms: Millis) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
}

/// Parses an RFC 3339 time into unix milliseconds.
pub fn parse_rfc3339(s: &str) -> Option<Millis> {
    chrono::DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|t| t.timestamp_millis())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_round_trips_whole_and_fractional_seconds() {
        assert_eq!(rfc3339(1_795_780_800_000), "2026-11-27T12:00:00Z");
        assert_eq!(rfc3339(1_795_780_800_250), "2026-11-27T12:00:00.250Z");
        assert_eq!(
            parse_rfc3339("2026-11-27T12:00:00Z"),
            Some(1_795_780_800_000)
        );
        assert_eq!(parse_rfc3339("noon"), None);
    }

    #[test]
    fn advancing_a_clone_moves_the_original() {
        let clock = Clock::default();
        let before = clock.now();
        clock.clone().advance(Duration::from_secs(3600));
        assert!(clock.now() >= before + 3_600_000);
    }
}
