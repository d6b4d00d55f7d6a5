//! The policy every backend enforces the same way: TTL, lifetime, frame limits.

use std::time::Duration;

use crate::Error;

/// Expiry and size policy shared by all backends. The facade builds it from
/// `[storage]` configuration; backends take it in their constructors.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoreSettings {
    /// Idle time after which a session expires; every write slides it.
    pub ttl: Duration,
    /// Absolute cap on a session's life from its creation, however active.
    pub max_lifetime: Option<Duration>,
    /// Frames kept per session; older ones are trimmed on append.
    pub max_frames_per_session: u64,
    /// Largest frame accepted (payload plus headers), in bytes.
    pub max_frame_bytes: usize,
    /// Largest encoded session metadata accepted, in bytes.
    pub max_session_bytes: usize,
    /// Largest small keyed value ([`kv_put`](crate::SessionStore::kv_put)) accepted,
    /// in bytes.
    pub max_kv_value_bytes: usize,
}

impl Default for StoreSettings {
    fn default() -> Self {
        StoreSettings {
            ttl: Duration::from_secs(24 * 60 * 60),
            max_lifetime: Some(Duration::from_secs(7 * 24 * 60 * 60)),
            max_frames_per_session: 10_000,
            max_frame_bytes: 4 * 1024 * 1024,
            max_session_bytes: 64 * 1024,
            max_kv_value_bytes: 64 * 1024,
        }
    }
}

impl StoreSettings {
    /// Checks the values are usable; the message names the offending setting.
    pub fn validate(&self) -> Result<(), Error> {
        if self.ttl.is_zero() || self.ttl.as_millis() == 0 {
            return Err(Error::config("ttl must be at least 1ms"));
        }
        if matches!(self.max_lifetime, Some(cap) if cap.as_millis() == 0) {
            return Err(Error::config("max_lifetime must be at least 1ms when set"));
        }
        if self.max_frames_per_session == 0 {
            return Err(Error::config("max_frames_per_session must be at least 1"));
        }
        if self.max_frame_bytes == 0 {
            return Err(Error::config("max_frame_bytes must be at least 1"));
        }
        if self.max_session_bytes == 0 {
            return Err(Error::config("max_session_bytes must be at least 1"));
        }
        if self.max_kv_value_bytes == 0 {
            return Err(Error::config("max_kv_value_bytes must be at least 1"));
        }
        Ok(())
    }

    /// Rejects a frame larger than [`max_frame_bytes`](Self::max_frame_bytes).
    pub fn check_frame(&self, frame: &crate::Frame) -> Result<(), Error> {
        let size = frame.encoded_size_hint();
        if size > self.max_frame_bytes {
            return Err(Error::invalid_input(format!(
                "frame of {size} bytes exceeds max_frame_bytes ({})",
                self.max_frame_bytes
            )));
        }
        Ok(())
    }
}
