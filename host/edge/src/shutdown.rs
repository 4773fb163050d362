//! Waiting in a background loop, cut short when the edge stops.

use std::time::Duration;

use tokio::sync::watch;

/// Waits `period`, or returns false when shutdown was asked for.
pub async fn pause(period: Duration, shutdown: &mut watch::Receiver<bool>) -> bool {
    tokio::select! {
        () = tokio::time::sleep(period) => true,
        _ = shutdown.changed() => false,
    }
}
