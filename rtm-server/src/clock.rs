//! The server's clock: Unix time in milliseconds, as events and answers carry it.

use std::time::{SystemTime, UNIX_EPOCH};

/// Server time in milliseconds since the Unix epoch (0 if the system clock is before it).
pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
