//! Loading `[storage]` with figment: defaults < TOML file < environment < overrides.
//!
//! Defaults are the serde defaults of the config structs, so a key no layer sets
//! keeps its documented default and is reported as coming from "default".

use std::path::Path;

use figment::{
    providers::{Env, Format, Toml},
    value::{Dict, Map, Value},
    Figment, Metadata, Profile, Provider,
};
use session_store_core::{Error, Result};

use super::{
    origin::{extraction_error, CodeOrigins, FigmentOrigins, ENV_METADATA_NAME},
    validate::validate,
    StorageConfig,
};

/// The table that holds the storage configuration, in a stand-alone file as in the
/// proxy's file.
pub const STORAGE_KEY: &str = "storage";

/// Prefix of every storage environment variable.
pub const ENV_PREFIX: &str = "SESSION_STORE_";

/// Separator of nested keys in environment variable names:
/// `SESSION_STORE_REDIS__POOL_SIZE` sets `storage.redis.pool_size`.
pub const ENV_SEPARATOR: &str = "__";

impl StorageConfig {
    /// The layered figment for `[storage]`: the TOML file at `path` (when given; it
    /// must exist), then `SESSION_STORE_*` environment variables. Merge further
    /// layers (such as [`StorageOverrides`]) on top, then call
    /// [`from_figment`](Self::from_figment) with [`STORAGE_KEY`].
    pub fn figment(path: Option<&Path>) -> Result<Figment> {
        let mut figment = Figment::new();
        if let Some(path) = path {
            if !path.is_file() {
                return Err(Error::config(format!(
                    "configuration file {} does not exist or is not a file",
                    path.display()
                )));
            }
            figment = figment.merge(Toml::file_exact(path));
        }
        Ok(figment.merge(StorageEnv::new()))
    }

    /// Loads `[storage]` from the TOML file at `path` (optional) and the
    /// environment, then validates it.
    ///
    /// Every error is [`Error::Config`] and names the key and where it came from.
    pub fn load(path: Option<&Path>) -> Result<StorageConfig> {
        StorageConfig::from_figment(&StorageConfig::figment(path)?, STORAGE_KEY)
    }

    /// As [`load`](Self::load), with `overrides` (typically command-line flags)
    /// above every other layer.
    pub fn load_with_overrides(
        path: Option<&Path>,
        overrides: impl Provider,
    ) -> Result<StorageConfig> {
        let figment = StorageConfig::figment(path)?.merge(overrides);
        StorageConfig::from_figment(&figment, STORAGE_KEY)
    }

    /// Parses a TOML document whose `[storage]` table is the configuration, without
    /// reading the environment: for tests and examples.
    pub fn from_toml_str(toml: &str) -> Result<StorageConfig> {
        StorageConfig::from_figment(&Figment::from(Toml::string(toml)), STORAGE_KEY)
    }

    /// Extracts and validates the configuration at `key` (a dotted path such as
    /// `"storage"`) of a figment the caller assembled. A missing table means every
    /// default.
    pub fn from_figment(figment: &Figment, key: &str) -> Result<StorageConfig> {
        let config = if figment.contains(key) {
            // `focus` rather than `extract_inner`, whose error paths put the root
            // last; `extraction_error` puts it first again.
            figment
                .focus(key)
                .extract::<StorageConfig>()
                .map_err(|error| extraction_error(error, figment, key))?
        } else {
            // A broken layer (unparsable file) must still be reported, not defaulted.
            figment
                .extract::<Dict>()
                .map_err(|error| extraction_error(error, figment, key))?;
            StorageConfig::default()
        };
        validate(&config, &FigmentOrigins { figment, root: key })?;
        Ok(config)
    }

    /// Checks a configuration built in code (loading checks it already).
    pub fn validate(&self) -> Result<()> {
        validate(self, &CodeOrigins)
    }
}

/// The environment layer: `SESSION_STORE_TTL=1h` sets `storage.ttl`,
/// `SESSION_STORE_REDIS__POOL_SIZE=4` sets `storage.redis.pool_size`. Errors about
/// these values name the variable itself.
#[derive(Debug, Clone)]
pub struct StorageEnv {
    env: Env,
}

impl StorageEnv {
    /// Reads `SESSION_STORE_*` variables.
    pub fn new() -> Self {
        StorageEnv {
            env: Env::prefixed(ENV_PREFIX).split(ENV_SEPARATOR),
        }
    }
}

impl Default for StorageEnv {
    fn default() -> Self {
        StorageEnv::new()
    }
}

/// The metadata of an environment layer whose variables are `prefix` and the
/// upper-cased keys below the `root` table joined by `separator`
/// (`SESSION_STORE_REDIS__POOL_SIZE` for `storage.redis.pool_size`), so
/// errors name the variable itself (`environment variable
/// SESSION_STORE_REDIS__POOL_SIZE`): for [`StorageEnv`], and for another
/// section's layer (mcp-proxy's `MCP_PROXY_*` under `proxy`).
pub fn env_layer_metadata(
    prefix: &'static str,
    root: &'static str,
    separator: &'static str,
) -> Metadata {
    Metadata::named(ENV_METADATA_NAME).interpolater(move |_: &Profile, keys: &[&str]| {
        let relative = match keys.split_first() {
            Some((first, rest)) if *first == root => rest,
            _ => keys,
        };
        let name: Vec<String> = relative
            .iter()
            .map(|key| key.to_ascii_uppercase())
            .collect();
        format!("{prefix}{}", name.join(separator))
    })
}

impl Provider for StorageEnv {
    fn metadata(&self) -> Metadata {
        env_layer_metadata(ENV_PREFIX, STORAGE_KEY, ENV_SEPARATOR)
    }

    fn data(&self) -> figment::Result<Map<Profile, Dict>> {
        Ok(nest_under_storage(self.env.data()?))
    }
}

/// The top layer, typically command-line flags: dotted keys relative to
/// `[storage]`, with the values a TOML file would hold (durations as strings).
///
/// ```
/// use session_store::{StorageConfig, StorageOverrides};
///
/// let overrides = StorageOverrides::new().set("ttl", "1h").set("redis.pool_size", 4);
/// let config = StorageConfig::load_with_overrides(None, overrides)?;
/// assert_eq!(config.ttl, std::time::Duration::from_secs(3600));
/// assert_eq!(config.redis.pool_size, 4);
/// # Ok::<(), session_store::Error>(())
/// ```
#[derive(Debug, Clone, Default)]
pub struct StorageOverrides {
    entries: Vec<(String, Value)>,
}

impl StorageOverrides {
    /// No overrides.
    pub fn new() -> Self {
        StorageOverrides::default()
    }

    /// Sets the dotted `key` (relative to `[storage]`, e.g. `"redis.url"`).
    #[must_use]
    pub fn set(mut self, key: impl Into<String>, value: impl Into<Value>) -> Self {
        self.entries.push((key.into(), value.into()));
        self
    }

    /// True when nothing is overridden.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

impl Provider for StorageOverrides {
    fn metadata(&self) -> Metadata {
        Metadata::named("command-line override")
    }

    fn data(&self) -> figment::Result<Map<Profile, Dict>> {
        let mut storage = Dict::new();
        for (key, value) in &self.entries {
            let path: Vec<&str> = key.split('.').filter(|part| !part.is_empty()).collect();
            insert_at(&mut storage, &path, value.clone());
        }
        Ok(nest_under_storage(Map::from([(Profile::Default, storage)])))
    }
}

/// Sets `value` at the dotted `path` inside `dict`, creating tables on the way.
fn insert_at(dict: &mut Dict, path: &[&str], value: Value) {
    match path {
        [] => {}
        [last] => {
            dict.insert((*last).to_owned(), value);
        }
        [first, rest @ ..] => {
            let table = dict
                .entry((*first).to_owned())
                .or_insert_with(|| Value::from(Dict::new()));
            if !matches!(table, Value::Dict(..)) {
                *table = Value::from(Dict::new());
            }
            if let Value::Dict(_, inner) = table {
                insert_at(inner, rest, value);
            }
        }
    }
}

/// Puts each profile's keys under the `[storage]` table.
fn nest_under_storage(data: Map<Profile, Dict>) -> Map<Profile, Dict> {
    data.into_iter()
        .map(|(profile, dict)| {
            (
                profile,
                Dict::from([(STORAGE_KEY.to_owned(), Value::from(dict))]),
            )
        })
        .collect()
}
