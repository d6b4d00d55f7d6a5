//! The policy every backend enforces the same way: TTL, lifetime, frame and byte
//! limits.

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
    /// Bytes of frames kept per session; the oldest are trimmed on append while
    /// the frames stored exceed it (the newest frame is always kept). Counted as
    /// each backend stores a frame: the encoded frame in Redis,
    /// [`Frame::encoded_size_hint`](crate::Frame::encoded_size_hint) in memory. At
    /// least [`max_frame_bytes`](Self::max_frame_bytes).
    pub max_session_frame_bytes: u64,
    /// Bytes of frames one [`read_frames`](crate::SessionStore::read_frames) page
    /// holds at most, counted as for
    /// [`max_session_frame_bytes`](Self::max_session_frame_bytes); a page always
    /// holds at least one frame, so a reader moves past a larger one.
    pub max_read_bytes: usize,
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
            max_session_frame_bytes: 64 * 1024 * 1024,
            max_read_bytes: 16 * 1024 * 1024,
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
        if self.max_session_frame_bytes < self.max_frame_bytes as u64 {
            return Err(Error::config(format!(
                "max_session_frame_bytes ({}) must be at least max_frame_bytes ({}), \
                 so the newest frame always fits",
                self.max_session_frame_bytes, self.max_frame_bytes
            )));
        }
        if self.max_read_bytes == 0 {
            return Err(Error::config("max_read_bytes must be at least 1"));
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_budgets_below_their_floor_are_config_errors_naming_the_setting() {
        let small_cap = StoreSettings {
            max_session_frame_bytes: 1024,
            max_frame_bytes: 2048,
            ..StoreSettings::default()
        };
        let no_read = StoreSettings {
            max_read_bytes: 0,
            ..StoreSettings::default()
        };
        for (settings, name) in [
            (small_cap, "max_session_frame_bytes"),
            (no_read, "max_read_bytes"),
        ] {
            match settings.validate() {
                Err(Error::Config(message)) => assert!(message.contains(name), "{message}"),
                other => panic!("{name}: expected a config error, got {other:?}"),
            }
        }
        StoreSettings::default().validate().unwrap();
    }
}
