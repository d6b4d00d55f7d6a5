//! TLS to the upstream (rustls, no OpenSSL): which roots are trusted, a private CA
//! bundle (`upstream_ca_file`) and an optional client certificate for mutual TLS
//! (`upstream_client_cert` + `upstream_client_key`).

use std::{
    path::{Path, PathBuf},
    sync::Arc,
};

use rustls::{
    crypto::ring,
    pki_types::{pem::PemObject, CertificateDer, PrivateKeyDer},
    ClientConfig, RootCertStore,
};

/// The PEM files of `[proxy]` that configure TLS to the upstream.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct UpstreamTlsFiles {
    /// `upstream_ca_file`: extra trusted CA certificates (PEM bundle).
    pub ca_file: Option<PathBuf>,
    /// `upstream_client_cert`: the proxy's client certificate chain (PEM), sent when
    /// the upstream asks for one.
    pub client_cert: Option<PathBuf>,
    /// `upstream_client_key`: the private key of `client_cert` (PEM: PKCS#8,
    /// PKCS#1 or SEC1).
    pub client_key: Option<PathBuf>,
}

/// A TLS file that cannot be used; the message names the `[proxy]` key and the
/// path.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct TlsFileError {
    message: String,
    /// The dotted key (`proxy.upstream_ca_file`), the path as written (quoted)
    /// and what is wrong, when one file is the cause.
    file: Option<(String, String, String)>,
}

impl TlsFileError {
    fn new(key: &'static str, path: &Path, reason: impl std::fmt::Display) -> Self {
        TlsFileError {
            message: format!("proxy.{key} `{}`: {reason}", path.display()),
            file: Some((
                format!("proxy.{key}"),
                format!("{:?}", path.display().to_string()),
                reason.to_string(),
            )),
        }
    }

    /// A configuration error naming the file's key (so its source can be
    /// added), or the whole message.
    pub(crate) fn into_config_error(self) -> crate::config_error::ConfigError {
        use crate::config_error::ConfigError;
        match self.file {
            Some((key, path, reason)) => ConfigError::value(key, path, reason),
            None => ConfigError::new(self.message),
        }
    }
}

/// What the files hold, parsed.
#[derive(Debug)]
struct Loaded {
    extra_roots: Vec<CertificateDer<'static>>,
    client_identity: Option<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)>,
}

impl UpstreamTlsFiles {
    /// Reads and parses every configured file, as configuration validation does:
    /// a missing, unreadable or non-PEM file, a certificate without its key (or the
    /// reverse), or a key that does not fit the certificate is an error.
    pub fn check(&self) -> Result<(), TlsFileError> {
        self.client_config_with_roots(RootCertStore::empty())
            .map(|_| ())
    }

    /// The rustls configuration for the upstream: the platform's roots
    /// (`rustls-native-certs`) plus the Mozilla roots (`webpki-roots`) plus
    /// `ca_file`, and the client certificate when configured. Offers HTTP/1.1 by
    /// ALPN.
    pub fn client_config(&self) -> Result<ClientConfig, TlsFileError> {
        let mut roots = RootCertStore::empty();
        let native = rustls_native_certs::load_native_certs();
        for error in &native.errors {
            tracing::debug!(%error, "a platform root certificate could not be loaded");
        }
        let (added, ignored) = roots.add_parsable_certificates(native.certs);
        tracing::debug!(added, ignored, "platform root certificates");
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        self.client_config_with_roots(roots)
    }

    fn client_config_with_roots(
        &self,
        mut roots: RootCertStore,
    ) -> Result<ClientConfig, TlsFileError> {
        let loaded = self.load()?;
        for certificate in loaded.extra_roots {
            if let Some(path) = &self.ca_file {
                roots.add(certificate).map_err(|error| {
                    TlsFileError::new(
                        "upstream_ca_file",
                        path,
                        format!("not a CA certificate: {error}"),
                    )
                })?;
            }
        }
        let builder = ClientConfig::builder_with_provider(Arc::new(ring::default_provider()))
            .with_safe_default_protocol_versions()
            .map_err(|error| TlsFileError {
                message: format!("upstream TLS setup failed: {error}"),
                file: None,
            })?
            .with_root_certificates(roots);
        let mut config = match (loaded.client_identity, &self.client_key) {
            (Some((chain, key)), Some(key_path)) => {
                builder.with_client_auth_cert(chain, key).map_err(|error| {
                    TlsFileError::new(
                        "upstream_client_key",
                        key_path,
                        format!("does not fit proxy.upstream_client_cert: {error}"),
                    )
                })?
            }
            _ => builder.with_no_client_auth(),
        };
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(config)
    }

    fn load(&self) -> Result<Loaded, TlsFileError> {
        let extra_roots = match &self.ca_file {
            Some(path) => read_certificates("upstream_ca_file", path)?,
            None => Vec::new(),
        };
        let client_identity = match (&self.client_cert, &self.client_key) {
            (Some(cert), Some(key)) => Some((
                read_certificates("upstream_client_cert", cert)?,
                read_private_key(key)?,
            )),
            (None, None) => None,
            (Some(cert), None) => {
                return Err(TlsFileError::new(
                    "upstream_client_cert",
                    cert,
                    "set proxy.upstream_client_key too: a client certificate needs its key",
                ))
            }
            (None, Some(key)) => {
                return Err(TlsFileError::new(
                    "upstream_client_key",
                    key,
                    "set proxy.upstream_client_cert too: a key needs its certificate",
                ))
            }
        };
        Ok(Loaded {
            extra_roots,
            client_identity,
        })
    }
}

fn read_file(key: &'static str, path: &Path) -> Result<Vec<u8>, TlsFileError> {
    std::fs::read(path)
        .map_err(|error| TlsFileError::new(key, path, format!("cannot be read: {error}")))
}

fn read_certificates(
    key: &'static str,
    path: &Path,
) -> Result<Vec<CertificateDer<'static>>, TlsFileError> {
    let pem = read_file(key, path)?;
    let certificates = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| TlsFileError::new(key, path, format!("is not valid PEM: {error}")))?;
    if certificates.is_empty() {
        return Err(TlsFileError::new(
            key,
            path,
            "holds no `-----BEGIN CERTIFICATE-----` block",
        ));
    }
    Ok(certificates)
}

fn read_private_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsFileError> {
    const KEY: &str = "upstream_client_key";
    let pem = read_file(KEY, path)?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|error| {
        TlsFileError::new(
            KEY,
            path,
            format!("holds no PEM private key (PKCS#8, PKCS#1 or SEC1): {error}"),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str, contents: &str) -> PathBuf {
        let path = std::env::temp_dir().join(format!(
            "mcp-proxy-tls-{}-{:08x}-{name}",
            std::process::id(),
            rand::random::<u32>()
        ));
        std::fs::write(&path, contents).unwrap();
        path
    }

    #[test]
    fn no_files_is_a_valid_configuration() {
        UpstreamTlsFiles::default().check().unwrap();
    }

    #[test]
    fn unusable_files_name_the_key_and_the_path() {
        let not_pem = scratch("not-pem.pem", "hello\n");
        let broken = scratch("broken.pem", "-----BEGIN CERTIFICATE-----\nAAAA\n");
        let missing = PathBuf::from("/nonexistent/ca.pem");
        for (files, key, path) in [
            (
                UpstreamTlsFiles {
                    ca_file: Some(missing.clone()),
                    ..UpstreamTlsFiles::default()
                },
                "proxy.upstream_ca_file",
                &missing,
            ),
            (
                UpstreamTlsFiles {
                    ca_file: Some(not_pem.clone()),
                    ..UpstreamTlsFiles::default()
                },
                "proxy.upstream_ca_file",
                &not_pem,
            ),
            (
                UpstreamTlsFiles {
                    ca_file: Some(broken.clone()),
                    ..UpstreamTlsFiles::default()
                },
                "proxy.upstream_ca_file",
                &broken,
            ),
            (
                UpstreamTlsFiles {
                    client_cert: Some(not_pem.clone()),
                    ..UpstreamTlsFiles::default()
                },
                "proxy.upstream_client_cert",
                &not_pem,
            ),
            (
                UpstreamTlsFiles {
                    client_cert: Some(broken.clone()),
                    client_key: Some(not_pem.clone()),
                    ..UpstreamTlsFiles::default()
                },
                "proxy.upstream_client_cert",
                &broken,
            ),
        ] {
            let message = files.check().unwrap_err().to_string();
            assert!(
                message.contains(key) && message.contains(&path.display().to_string()),
                "{message}"
            );
        }
        let _ = std::fs::remove_file(not_pem);
        let _ = std::fs::remove_file(broken);
    }
}
