//! Cart updates over the last two minutes, second by second: how many this edge answered and
//! how long they took. The dashboard charts it; a scaler can read it. Prometheus histograms
//! count since the start; this answers "what is it like now" without a time-series database.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use crate::locks;

/// Seconds kept.
pub const WINDOW_SECS: u64 = 120;
/// Longest time recorded exactly; longer ones count as this.
const LONGEST_MICROS: u64 = 60_000_000;

/// Whole seconds of cart updates, in columns (as charts take them).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Seconds {
    /// The first second's start, in seconds since the Unix epoch; the others follow it.
    pub first: u64,
    /// Updates answered in each second.
    pub updates: Vec<u64>,
    /// Each second's median and 99th percentile time to answer (0 for a quiet second).
    pub p50_ms: Vec<f64>,
    pub p99_ms: Vec<f64>,
}

/// The last [`WINDOW_SECS`] seconds: the current one as a histogram, the closed ones as their
/// count and percentiles, worked out once when the next second begins, so that a reader copies
/// numbers instead of holding the updates' lock over percentiles.
pub struct Recent {
    window: Mutex<Window>,
}

struct Window {
    current: Option<(u64, Histogram<u64>)>,
    closed: VecDeque<Closed>,
    /// The last closed second's histogram, reset: one allocation for the edge's life.
    spare: Option<Histogram<u64>>,
}

#[derive(Clone, Copy)]
struct Closed {
    second: u64,
    updates: u64,
    p50_ms: f64,
    p99_ms: f64,
}

impl Closed {
    fn of(second: u64, h: &Histogram<u64>) -> Self {
        Self {
            second,
            updates: h.len(),
            p50_ms: h.value_at_quantile(0.5) as f64 / 1000.0,
            p99_ms: h.value_at_quantile(0.99) as f64 / 1000.0,
        }
    }

    fn quiet(second: u64) -> Self {
        Self {
            second,
            updates: 0,
            p50_ms: 0.0,
            p99_ms: 0.0,
        }
    }
}

impl Default for Recent {
    fn default() -> Self {
        Self {
            window: Mutex::new(Window {
                current: None,
                closed: VecDeque::with_capacity(WINDOW_SECS as usize + 1),
                spare: None,
            }),
        }
    }
}

#[allow(clippy::expect_used)] // constant bounds, checked by the tests
fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, LONGEST_MICROS, 2).expect("valid bounds")
}

fn unix_second(at: SystemTime) -> u64 {
    at.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

impl Recent {
    /// Counts one update that took `took`, in the current second.
    pub fn record(&self, took: Duration) {
        self.record_at(SystemTime::now(), took);
    }

    fn record_at(&self, at: SystemTime, took: Duration) {
        let now = unix_second(at);
        let micros = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        let mut guard = locks::lock(&self.window);
        let window = &mut *guard;
        if window
            .current
            .as_ref()
            .is_none_or(|(second, _)| *second < now)
        {
            if let Some((second, mut histogram)) = window.current.take() {
                window.closed.push_back(Closed::of(second, &histogram));
                histogram.reset();
                window.spare = Some(histogram);
            }
            while window
                .closed
                .front()
                .is_some_and(|c| c.second + WINDOW_SECS <= now)
            {
                window.closed.pop_front();
            }
            let histogram = window.spare.take().unwrap_or_else(new_histogram);
            window.current = Some((now, histogram));
        }
        if let Some((_, histogram)) = &mut window.current {
            histogram.saturating_record(micros.clamp(1, LONGEST_MICROS));
        }
    }

    /// Every whole second of the window before now, oldest first, quiet ones as zeros.
    pub fn seconds(&self) -> Seconds {
        self.seconds_at(SystemTime::now())
    }

    fn seconds_at(&self, at: SystemTime) -> Seconds {
        let now = unix_second(at);
        let first = now.saturating_sub(WINDOW_SECS);
        let (mut known, last) = {
            let window = locks::lock(&self.window);
            let known: Vec<Closed> = window.closed.iter().copied().collect();
            // A second with no update after it is not closed yet: copied out, worked out below.
            let last = window
                .current
                .as_ref()
                .filter(|(second, _)| *second < now)
                .map(|(second, h)| (*second, h.clone()));
            (known, last)
        };
        known.extend(last.map(|(second, h)| Closed::of(second, &h)));
        let mut known = known
            .into_iter()
            .filter(|c| (first..now).contains(&c.second))
            .peekable();
        let mut columns = Seconds {
            first,
            ..Seconds::default()
        };
        for second in first..now {
            let c = known
                .next_if(|c| c.second == second)
                .unwrap_or(Closed::quiet(second));
            columns.updates.push(c.updates);
            columns.p50_ms.push(c.p50_ms);
            columns.p99_ms.push(c.p99_ms);
        }
        columns
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_each_second_and_forgets_the_old_ones() {
        let recent = Recent::default();
        let t0 = UNIX_EPOCH + Duration::from_secs(1_000_000);
        for ms in 1..=100 {
            recent.record_at(t0, Duration::from_millis(ms));
        }
        recent.record_at(t0 + Duration::from_secs(2), Duration::from_millis(7));

        let seconds = recent.seconds_at(t0 + Duration::from_secs(3));
        assert_eq!(seconds.updates.len(), WINDOW_SECS as usize);
        assert_eq!(seconds.first + WINDOW_SECS, 1_000_003);
        assert_eq!(seconds.updates[WINDOW_SECS as usize - 3..], [100, 0, 1]);
        let p50 = seconds.p50_ms[WINDOW_SECS as usize - 3];
        let p99 = seconds.p99_ms[WINDOW_SECS as usize - 3];
        assert!((49.0..=51.0).contains(&p50), "{p50}");
        assert!((98.0..=100.5).contains(&p99), "{p99}");
        // The current second is not whole yet.
        assert!(recent.seconds_at(t0).updates.iter().all(|n| *n == 0));

        // Two minutes on, the first second is gone and its histogram reused.
        let later = t0 + Duration::from_secs(WINDOW_SECS + 1);
        recent.record_at(later, Duration::from_millis(3));
        let seconds = recent.seconds_at(later + Duration::from_secs(1));
        assert_eq!(seconds.updates.iter().sum::<u64>(), 2);
        assert_eq!(seconds.updates.last(), Some(&1));
        assert!(recent.window.lock().expect("lock").closed.len() <= WINDOW_SECS as usize);
    }
}
