//! Where a configuration value came from, in the words a user fixes it with: the
//! TOML file and dotted key, the exact environment variable, or the default.

use figment::{error::Kind, Figment, Metadata, Profile};
use session_store_core::Error;

/// The provider name of the environment layer (`StorageEnv`): a value it set is
/// named by its variable. Only its interpolation is used in messages, because
/// figment's default one prefixes the profile (`default.storage.ttl`). Another
/// section's environment layer gets it from
/// [`env_layer_metadata`](super::env_layer_metadata).
pub(crate) const ENV_METADATA_NAME: &str = "environment variable";

/// Names keys and their sources for error messages.
pub(crate) trait Origins {
    /// The dotted key as the user writes it, e.g. `storage.redis.pool_size`, for a
    /// key relative to the `[storage]` table.
    fn key(&self, relative: &str) -> String;

    /// Where the value of the relative key came from, e.g.
    /// `/etc/proxy.toml: storage.redis.pool_size` or
    /// `environment variable SESSION_STORE_REDIS__POOL_SIZE`.
    fn source(&self, relative: &str) -> String;
}

/// Origins of a configuration extracted from a figment at `root`.
pub(crate) struct FigmentOrigins<'a> {
    pub(crate) figment: &'a Figment,
    pub(crate) root: &'a str,
}

impl Origins for FigmentOrigins<'_> {
    fn key(&self, relative: &str) -> String {
        join_key(self.root, relative)
    }

    fn source(&self, relative: &str) -> String {
        let key = self.key(relative);
        match self.figment.find_metadata(&key) {
            Some(metadata) => describe(metadata, &key),
            None => "default".to_owned(),
        }
    }
}

/// Origins of a configuration built in code, which has no file or variable.
pub(crate) struct CodeOrigins;

impl Origins for CodeOrigins {
    fn key(&self, relative: &str) -> String {
        join_key(super::STORAGE_KEY, relative)
    }

    fn source(&self, _relative: &str) -> String {
        "the StorageConfig passed to build".to_owned()
    }
}

fn join_key(root: &str, relative: &str) -> String {
    match (root.is_empty(), relative.is_empty()) {
        (true, _) => relative.to_owned(),
        (false, true) => root.to_owned(),
        (false, false) => format!("{root}.{relative}"),
    }
}

/// `path: key` for a file, `<provider name> <interpolated key>` otherwise (the
/// environment provider interpolates to the variable's name).
fn describe(metadata: &Metadata, key: &str) -> String {
    let name = if metadata.name == ENV_METADATA_NAME {
        let keys: Vec<&str> = key.split('.').collect();
        metadata.interpolate(&Profile::Default, &keys)
    } else {
        key.to_owned()
    };
    match metadata
        .source
        .as_ref()
        .and_then(|source| source.file_path())
    {
        Some(path) => format!("{}: {name}", path.display()),
        None => format!("{} {name}", metadata.name),
    }
}

/// Where the value at the dotted `key` (from the root: `proxy.upstream`) of
/// `figment` came from, as [`describe_extraction_error`] names it:
/// `/etc/mcp-proxy.toml: proxy.upstream`, `environment variable
/// MCP_PROXY_UPSTREAM` (a layer with [`env_layer_metadata`](super::env_layer_metadata)), `command-line
/// override proxy.upstream`, or `default`: for a section of the same file
/// validated by another crate.
pub fn describe_source(figment: &Figment, key: &str) -> String {
    FigmentOrigins { figment, root: "" }.source(key)
}

/// Turns figment's extraction errors into one [`Error::Config`] whose every line
/// names the key and its source.
/// `root` is the key the configuration was extracted from; error paths are relative
/// to it.
pub(crate) fn extraction_error(error: figment::Error, figment: &Figment, root: &str) -> Error {
    Error::config(describe_extraction_error(error, figment, root))
}

/// Every error in figment's chain as `<key> (from <file: key | environment
/// variable NAME>): <what is wrong>`, joined by `; `: for a section of the same
/// configuration file extracted by another crate (mcp-proxy's `[proxy]`), so
/// both sections' errors read alike. `root` is the key the section was
/// extracted from (`proxy`); error paths are relative to it.
pub fn describe_extraction_error(error: figment::Error, figment: &Figment, root: &str) -> String {
    let problems: Vec<String> = error
        .into_iter()
        .map(|error| describe_error(&error, figment, root))
        .collect();
    problems.join("; ")
}

fn describe_error(error: &figment::Error, figment: &Figment, root: &str) -> String {
    let mut path = error.path.clone();
    // figment puts the field's name at the end of the path for some layers and
    // not for others: name it once.
    let field = match &error.kind {
        Kind::UnknownField(name, _) => Some(name.as_str()),
        Kind::MissingField(name) => Some(name.as_ref()),
        _ => None,
    };
    if let Some(field) = field {
        if path.last().map(String::as_str) != Some(field) {
            path.push(field.to_owned());
        }
    }
    if path.is_empty() {
        // A layer that failed as a whole, such as a file that is not valid TOML.
        let layer = error.metadata.as_ref().map_or_else(
            || "configuration".to_owned(),
            |metadata| match metadata
                .source
                .as_ref()
                .and_then(|source| source.file_path())
            {
                Some(path) => path.display().to_string(),
                None => metadata.name.to_string(),
            },
        );
        return format!("{layer}: {}", error.kind);
    }
    let key = join_key(root, &path.join("."));
    let source = figment
        .find_metadata(&key)
        .or(error.metadata.as_ref())
        .map_or_else(|| "default".to_owned(), |metadata| describe(metadata, &key));
    format!(
        "{key} (from {source}): {}",
        describe_kind(&error.kind, &key)
    )
}

fn describe_kind(kind: &Kind, key: &str) -> String {
    match kind {
        Kind::UnknownField(name, expected) => {
            format!(
                "unknown key `{name}`; expected one of: {}",
                expected.join(", ")
            )
        }
        Kind::UnknownVariant(value, expected) => {
            format!(
                "unknown value `{value}`; expected one of: {}",
                expected.join(", ")
            )
        }
        Kind::MissingField(name) => format!("missing required key `{name}`"),
        Kind::InvalidType(actual, expected) | Kind::InvalidValue(actual, expected) => {
            if is_secret(key) {
                format!("invalid value: expected {expected}")
            } else {
                format!("invalid value: found {}, expected {expected}", actual)
            }
        }
        Kind::Message(message) => message.clone(),
        other => other.to_string(),
    }
}

/// Keys whose values may hold credentials and are never echoed.
fn is_secret(key: &str) -> bool {
    key.ends_with("password") || key.ends_with("url") || key.ends_with("nodes")
}
