//! Client-supplied text as it may appear in logs: escaped (`{:?}`, so no control
//! character, newline or ANSI sequence reaches the log) and bounded in length, so
//! a client can neither forge log lines nor flood them.

use std::fmt;

/// Longest prefix of a client value that is logged, in bytes.
pub const MAX_LOGGED_BYTES: usize = 128;

/// A client-supplied value (header, id), displayed escaped and truncated to
/// [`MAX_LOGGED_BYTES`], with the full length noted when cut:
/// `tracing::info!(origin = %ClientText(value.as_bytes()), ...)`.
#[derive(Clone, Copy)]
pub struct ClientText<'a>(pub &'a [u8]);

impl fmt::Display for ClientText<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let shown = &self.0[..self.0.len().min(MAX_LOGGED_BYTES)];
        write!(f, "{:?}", String::from_utf8_lossy(shown))?;
        if shown.len() < self.0.len() {
            write!(f, "...({} bytes)", self.0.len())?;
        }
        Ok(())
    }
}

impl fmt::Debug for ClientText<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_are_escaped_and_long_values_cut() {
        let forged = b"x\r\n2026-01-01 INFO forged line\x1b[31m";
        let shown = ClientText(forged).to_string();
        assert!(!shown.contains('\n') && !shown.contains('\r') && !shown.contains('\x1b'));
        assert!(shown.contains("\\r\\n"), "{shown}");
        let long = vec![b'a'; 10_000];
        let shown = ClientText(&long).to_string();
        assert!(shown.len() < MAX_LOGGED_BYTES + 32, "{}", shown.len());
        assert!(shown.ends_with("...(10000 bytes)"), "{shown}");
        assert_eq!(ClientText(&[0xff, b'a']).to_string(), "\"\u{fffd}a\"");
    }
}
