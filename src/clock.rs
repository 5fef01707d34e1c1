//! Wall-clock time as Unix seconds and milliseconds: the one clock tokens, the store
//! and revocations read, so their instants compare.

use std::time::{SystemTime, UNIX_EPOCH};

/// Seconds since the epoch by this machine's clock.
pub fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Milliseconds since the epoch by this machine's clock.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
