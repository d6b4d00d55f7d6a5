//! `SessionId`: the opaque, validated key of a session.

use std::{fmt, str::FromStr};

use serde::{Deserialize, Serialize};

use crate::Error;

/// Longest accepted session id, in bytes.
pub const MAX_SESSION_ID_LEN: usize = 256;

/// An opaque session id: 1 to [`MAX_SESSION_ID_LEN`] visible ASCII characters
/// (0x21 to 0x7E), as the MCP specification requires of `Mcp-Session-Id`.
///
/// Validation happens once, on parse, so every `SessionId` a store sees is safe to
/// use as (part of) a key and to echo in a header.
///
/// ```
/// use session_store_core::SessionId;
///
/// let id: SessionId = "c0ffee-42".parse()?;
/// assert_eq!(id.as_str(), "c0ffee-42");
/// assert!("has space".parse::<SessionId>().is_err());
/// # Ok::<(), session_store_core::Error>(())
/// ```
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct SessionId(Box<str>);

impl SessionId {
    /// Validates `value` and wraps it.
    pub fn new(value: impl Into<String>) -> Result<Self, Error> {
        let value = value.into();
        validate(&value)?;
        Ok(SessionId(value.into_boxed_str()))
    }

    /// A fresh id of 128 random bits from the operating system's CSPRNG, as 32 hex digits.
    pub fn random() -> Result<Self, Error> {
        let mut bytes = [0u8; 16];
        getrandom::fill(&mut bytes).map_err(|e| {
            Error::unavailable(format!("operating system random source failed: {e}"))
        })?;
        let mut hex = String::with_capacity(32);
        for byte in bytes {
            use fmt::Write;
            let _ = write!(hex, "{byte:02x}");
        }
        Ok(SessionId(hex.into_boxed_str()))
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

fn validate(value: &str) -> Result<(), Error> {
    if value.is_empty() {
        return Err(Error::invalid_input("session id is empty"));
    }
    if value.len() > MAX_SESSION_ID_LEN {
        return Err(Error::invalid_input(format!(
            "session id is {} bytes long; at most {MAX_SESSION_ID_LEN} are allowed",
            value.len()
        )));
    }
    if let Some((position, byte)) = value
        .bytes()
        .enumerate()
        .find(|(_, b)| !(0x21..=0x7e).contains(b))
    {
        return Err(Error::invalid_input(format!(
            "session id has byte 0x{byte:02x} at position {position}; only visible ASCII (0x21-0x7E) is allowed"
        )));
    }
    Ok(())
}

impl FromStr for SessionId {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        SessionId::new(s)
    }
}

impl TryFrom<String> for SessionId {
    type Error = Error;
    fn try_from(value: String) -> Result<Self, Error> {
        SessionId::new(value)
    }
}

impl TryFrom<&str> for SessionId {
    type Error = Error;
    fn try_from(value: &str) -> Result<Self, Error> {
        SessionId::new(value)
    }
}

impl<'de> Deserialize<'de> for SessionId {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(deserializer)?;
        SessionId::new(raw).map_err(serde::de::Error::custom)
    }
}

impl AsRef<str> for SessionId {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SessionId({})", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_visible_ascii() {
        assert!(SessionId::new("!~azAZ09-_.").is_ok());
    }

    #[test]
    fn rejects_empty_space_control_non_ascii_and_long() {
        for bad in ["", "a b", "tab\t", "é", "\u{7f}"] {
            let err = SessionId::new(bad).unwrap_err();
            assert!(matches!(err, Error::InvalidInput(_)), "{bad:?}: {err}");
        }
        let long = "x".repeat(MAX_SESSION_ID_LEN + 1);
        assert!(matches!(SessionId::new(long), Err(Error::InvalidInput(m)) if m.contains("257")));
        assert!(SessionId::new("x".repeat(MAX_SESSION_ID_LEN)).is_ok());
    }

    #[test]
    fn random_ids_are_32_hex_and_distinct() {
        let a = SessionId::random().unwrap();
        let b = SessionId::random().unwrap();
        assert_eq!(a.as_str().len(), 32);
        assert_ne!(a, b);
    }

    #[test]
    fn deserialize_validates() {
        let err = serde_json::from_str::<SessionId>("\"a b\"").unwrap_err();
        assert!(err.to_string().contains("visible ASCII"));
    }
}
