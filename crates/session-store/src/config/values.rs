//! Value types of the configuration that need more than serde's defaults: secrets
//! that must never be printed, Redis URLs whose password must never be printed, and
//! the string forms environment variables arrive in.

use std::{fmt, time::Duration};

use serde::{de, Deserialize, Deserializer};

/// A secret such as a Redis password. Its `Debug` prints `***`, so a logged
/// configuration never leaks it; [`expose`](Self::expose) hands it to the driver.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The secret itself, for the one place that must send it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        string_like(deserializer).map(Secret)
    }
}

/// A `redis://` or `rediss://` address as written in the configuration. It is
/// checked when the configuration is validated (so the error can name its source);
/// its `Debug` and `Display` hide any password in it.
#[derive(Clone, PartialEq, Eq)]
pub struct RedisUrl(String);

impl RedisUrl {
    /// Wraps an address; call [`parse`](Self::parse) to check it.
    pub fn new(url: impl Into<String>) -> Self {
        RedisUrl(url.into())
    }

    /// The address exactly as configured, password included: only for the driver.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Parses the address and checks its scheme is `redis` or `rediss` and that a
    /// path, if any, is a database number (`/3`). The error message never repeats
    /// the address, which may hold a password.
    pub fn parse(&self) -> Result<url::Url, String> {
        let parsed = parse_url_as_written(&self.0, &["redis", "rediss"], "redis://127.0.0.1:6379")?;
        let path = parsed.path().trim_start_matches('/');
        if !path.is_empty() && path.parse::<u8>().is_err() {
            return Err(format!(
                "the path `/{path}` must be a database number from 0 to 255 (e.g. redis://127.0.0.1:6379/3)"
            ));
        }
        Ok(parsed)
    }

    /// `host:port` (IPv6 hosts in brackets), without scheme, credentials or
    /// database: for log lines. An address that does not parse is
    /// `<unparsable URL>`.
    pub fn address(&self) -> String {
        match self.parse() {
            Ok(parsed) => format!(
                "{}:{}",
                parsed.host_str().unwrap_or_default(),
                parsed.port().unwrap_or(6379)
            ),
            Err(_) => "<unparsable URL>".to_owned(),
        }
    }

    /// True for a `rediss://` address, which implies TLS.
    pub fn is_tls(&self) -> bool {
        self.0
            .get(..9)
            .is_some_and(|scheme| scheme.eq_ignore_ascii_case("rediss://"))
    }

    fn redacted(&self) -> String {
        match url::Url::parse(&self.0) {
            Ok(mut parsed) if parsed.password().is_some() => {
                // Setting a password only fails for URLs that cannot carry one.
                let _ = parsed.set_password(Some("***"));
                parsed.to_string()
            }
            Ok(parsed) if parsed.has_host() => parsed.to_string(),
            // `user:pass@host:port` without `redis://` parses as a URL of
            // scheme `user` with the password in its path.
            Ok(parsed) => match self.0.rsplit_once('@') {
                Some((_, host)) => format!("***@{host}"),
                None => parsed.to_string(),
            },
            Err(_) => "<unparsable URL>".to_owned(),
        }
    }
}

/// Parses `text` as a URL of one of `schemes` written out in full,
/// `scheme://host...`, refusing what a URL parser would otherwise repair
/// silently: `http:/host` or `http:host` (one or no slash), backslashes for
/// slashes, tabs or newlines inside, spaces around. The error says what was
/// expected (`example`) and never repeats `text`, which may hold credentials.
pub fn parse_url_as_written(
    text: &str,
    schemes: &[&str],
    example: &str,
) -> Result<url::Url, String> {
    let expected = || {
        let schemes: Vec<String> = schemes.iter().map(|s| format!("`{s}://`")).collect();
        format!(
            "expected {} and a host, e.g. {example}",
            schemes.join(" or ")
        )
    };
    let repaired = std::cell::RefCell::new(None);
    let parsed = url::Url::options()
        .syntax_violation_callback(Some(&|violation| {
            use url::SyntaxViolation::{Backslash, C0SpaceIgnored, TabOrNewlineIgnored};
            if matches!(violation, Backslash | C0SpaceIgnored | TabOrNewlineIgnored) {
                repaired.borrow_mut().get_or_insert(violation);
            }
        }))
        .parse(text)
        .map_err(|error| format!("not a valid URL ({error}); {}", expected()))?;
    if let Some(violation) = repaired.into_inner() {
        return Err(format!(
            "not a URL as written: {} ({})",
            violation.description(),
            expected()
        ));
    }
    if !schemes.contains(&parsed.scheme()) {
        // The parsed scheme, lower-cased letters only: never a password.
        return Err(format!(
            "scheme must be {}, got `{}` ({})",
            schemes
                .iter()
                .map(|s| format!("`{s}`"))
                .collect::<Vec<_>>()
                .join(" or "),
            parsed.scheme(),
            expected()
        ));
    }
    // `scheme:` then exactly two slashes: `http:/h` and `http:///h` name the
    // host `h` to a URL parser too.
    let slashes = text
        .get(parsed.scheme().len() + 1..)
        .unwrap_or_default()
        .chars()
        .take_while(|c| *c == '/')
        .count();
    if slashes != 2 {
        return Err(format!(
            "`{}:` is followed by {slashes} slash(es), not two ({})",
            parsed.scheme(),
            expected()
        ));
    }
    if parsed.host_str().is_none_or(str::is_empty) {
        return Err(format!("the URL names no host ({})", expected()));
    }
    Ok(parsed)
}

impl Default for RedisUrl {
    fn default() -> Self {
        RedisUrl::new("redis://127.0.0.1:6379")
    }
}

impl fmt::Debug for RedisUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RedisUrl({})", self.redacted())
    }
}

impl fmt::Display for RedisUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted())
    }
}

impl<'de> Deserialize<'de> for RedisUrl {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer).map(RedisUrl)
    }
}

/// Deserializes a string, also accepting the numbers and booleans that figment
/// makes of environment variables such as `SESSION_STORE_REDIS__PASSWORD=1234`.
pub(crate) fn string_like<'de, D: Deserializer<'de>>(deserializer: D) -> Result<String, D::Error> {
    struct StringLike;

    impl de::Visitor<'_> for StringLike {
        type Value = String;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a string")
        }

        fn visit_str<E: de::Error>(self, value: &str) -> Result<String, E> {
            Ok(value.to_owned())
        }

        fn visit_i64<E: de::Error>(self, value: i64) -> Result<String, E> {
            Ok(value.to_string())
        }

        fn visit_u64<E: de::Error>(self, value: u64) -> Result<String, E> {
            Ok(value.to_string())
        }

        fn visit_f64<E: de::Error>(self, value: f64) -> Result<String, E> {
            Ok(value.to_string())
        }

        fn visit_bool<E: de::Error>(self, value: bool) -> Result<String, E> {
            Ok(value.to_string())
        }
    }

    deserializer.deserialize_any(StringLike)
}

/// [`string_like`] for an optional field that is `Some` whenever it is present.
pub(crate) fn optional_string_like<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<String>, D::Error> {
    string_like(deserializer).map(Some)
}

/// A human duration ("5s", "24h") or the word `none` for "no limit".
pub(crate) fn duration_or_none<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<Duration>, D::Error> {
    let text = string_like(deserializer)?;
    if text.trim().eq_ignore_ascii_case("none") {
        return Ok(None);
    }
    humantime::parse_duration(text.trim())
        .map(Some)
        .map_err(|error| {
            de::Error::custom(format!(
                "`{text}` is not a duration such as \"7d\" or \"none\" ({error})"
            ))
        })
}

/// A human duration ("5s", "24h"), with an error that shows the expected form.
pub(crate) fn duration<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
    let text = string_like(deserializer)?;
    humantime::parse_duration(text.trim()).map_err(|error| {
        de::Error::custom(format!(
            "`{text}` is not a duration such as \"5s\" or \"24h\" ({error})"
        ))
    })
}
