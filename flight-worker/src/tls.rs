//! TLS (rustls through tonic) for the worker's and the coordinator's
//! servers, and for the coordinator's connections to TLS workers.
//!
//! Certificates and keys are PEM files given on the command line or in the
//! config file; this module reads them and builds tonic's configurations.
//! It never logs key material.

use std::path::Path;

use tonic::transport::{Certificate, ClientTlsConfig, Identity, ServerTlsConfig};

use crate::error::{Error, Result};

/// A server certificate chain and its private key, PEM-encoded.
#[derive(Clone)]
pub struct TlsConfig {
    pub cert_pem: Vec<u8>,
    pub key_pem: Vec<u8>,
}

impl std::fmt::Debug for TlsConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsConfig")
            .field("cert_pem", &format!("{} bytes", self.cert_pem.len()))
            .field("key_pem", &"<redacted>")
            .finish()
    }
}

/// Reads a PEM file, checking it holds what it should.
pub fn read_pem(path: &Path, what: &str, marker: &str) -> Result<Vec<u8>> {
    let bytes = std::fs::read(path).map_err(|source| Error::Io {
        what: "reading the TLS file",
        path: path.to_path_buf(),
        source,
    })?;
    let text = String::from_utf8_lossy(&bytes);
    if !text.contains("-----BEGIN") || !text.contains(marker) {
        return Err(Error::Config(format!(
            "{} is not a PEM file holding {what}",
            path.display()
        )));
    }
    Ok(bytes)
}

impl TlsConfig {
    /// Reads the certificate chain and the key.
    pub fn from_files(cert: &Path, key: &Path) -> Result<Self> {
        Ok(Self {
            cert_pem: read_pem(cert, "a certificate", "CERTIFICATE")?,
            key_pem: read_pem(key, "a private key", "PRIVATE KEY")?,
        })
    }

    /// tonic's server configuration.
    pub fn server(&self) -> ServerTlsConfig {
        ServerTlsConfig::new().identity(Identity::from_pem(&self.cert_pem, &self.key_pem))
    }
}

/// The client configuration trusting the certificates of `ca_pem`.
pub fn client_config(ca_pem: &[u8]) -> ClientTlsConfig {
    ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca_pem))
}

/// Reads a CA bundle.
pub fn read_ca(path: &Path) -> Result<Vec<u8>> {
    read_pem(path, "a CA certificate", "CERTIFICATE")
}
