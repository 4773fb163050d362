//! Time as the whole system keeps it: unix milliseconds in UTC, written as RFC 3339.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub use cart_rules::Millis;

/// The wall clock.
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
}
