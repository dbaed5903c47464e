//! Test certificates, users and TLS channels for secure clusters (a module
//! of the test files that use it: it needs the `rcgen` dev-dependency).
#![allow(dead_code)]

use std::time::Duration;

use flight_coordinator::server::Security;
use flight_worker::auth::{AuthConfig, UserConfig, hash_api_token, hash_password};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};

pub const USER: &str = "alice";
pub const PASSWORD: &str = "wonderland";
pub const API_TOKEN: &str = "alice-api-token-0123456789";

pub struct Certs {
    pub ca: String,
    pub cert: String,
    pub key: String,
}

/// A CA and a server certificate for localhost / 127.0.0.1 signed by it.
pub fn make_certs() -> Certs {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "fsql test CA");
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);
    let key = KeyPair::generate().unwrap();
    let mut params =
        CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()]).unwrap();
    params
        .distinguished_name
        .push(DnType::CommonName, "fsql test server");
    let cert = params.signed_by(&key, &issuer).unwrap();
    Certs {
        ca: ca_cert.pem(),
        cert: cert.pem(),
        key: key.serialize_pem(),
    }
}

/// One user, `alice`, with a password and an API token.
pub fn auth_config() -> AuthConfig {
    AuthConfig {
        users: vec![UserConfig {
            name: USER.into(),
            password_hash: Some(hash_password(PASSWORD).unwrap()),
            api_tokens: vec![hash_api_token(API_TOKEN)],
        }],
        ..AuthConfig::default()
    }
}

/// Authentication on, and TLS with `certs` when given.
pub fn secure(certs: Option<&Certs>) -> Security {
    Security {
        auth: auth_config(),
        require_auth: true,
        tls: certs.map(|c| flight_worker::tls::TlsConfig {
            cert_pem: c.cert.clone().into_bytes(),
            key_pem: c.key.clone().into_bytes(),
        }),
        tls_ca: certs.map(|c| c.ca.clone().into_bytes()),
        ..Security::default()
    }
}

/// A channel to `url`, over TLS trusting `ca` for `grpc+tls://`.
pub async fn connect(url: &str, ca: Option<&str>) -> Result<Channel, tonic::transport::Error> {
    let mut ep = Endpoint::from_shared(flight_coordinator::workers::http_uri(url))
        .unwrap()
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(30));
    if url.starts_with("grpc+tls://") {
        let ca = ca.expect("a CA for a TLS url");
        ep = ep
            .tls_config(ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca)))
            .unwrap();
    }
    ep.connect().await
}
