//! HMAC-SHA256 signing of tickets, requests and handles.
//!
//! A message is signed over its protobuf encoding with the `signature` field
//! empty; verification re-encodes the decoded message the same way, so any
//! change to a field (or a signature made with another key) is refused.

use bytes::Bytes;
use hmac::{Hmac, Mac};
use prost::Message;
use sha2::Sha256;

use crate::{AuthToken, PreparedHandle, ShardTicket, StatementTicket, WorkerRequest};

type HmacSha256 = Hmac<Sha256>;

/// Why a signed message was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SignError {
    #[error("malformed {what}: {reason}")]
    Malformed { what: &'static str, reason: String },
    #[error(
        "{what} signature does not verify (forged, altered, or signed with another cluster secret)"
    )]
    BadSignature { what: &'static str },
    #[error("{what} expired {ago_ms} ms ago; request a new one")]
    Expired { what: &'static str, ago_ms: i64 },
    #[error("{what} has wire version {got}, this server speaks {want}")]
    Version {
        what: &'static str,
        got: u32,
        want: u32,
    },
}

/// A message with a signature field, an expiry and a version.
pub trait Signed: Message + Default + Clone {
    const WHAT: &'static str;
    fn signature(&self) -> &Bytes;
    fn set_signature(&mut self, sig: Bytes);
    /// Unix ms after which the message is refused; 0 = never.
    fn expires_at_ms(&self) -> i64;
    fn version(&self) -> u32;
}

macro_rules! impl_signed {
    ($ty:ty, $what:literal) => {
        impl Signed for $ty {
            const WHAT: &'static str = $what;
            fn signature(&self) -> &Bytes {
                &self.signature
            }
            fn set_signature(&mut self, sig: Bytes) {
                self.signature = sig;
            }
            fn expires_at_ms(&self) -> i64 {
                self.expires_at_ms
            }
            fn version(&self) -> u32 {
                self.version
            }
        }
    };
}

impl_signed!(ShardTicket, "shard ticket");
impl_signed!(WorkerRequest, "worker request");
impl_signed!(StatementTicket, "statement ticket");
impl_signed!(PreparedHandle, "prepared statement handle");
impl_signed!(AuthToken, "auth token");

/// The cluster secret, shared by the coordinator and its workers.
#[derive(Clone)]
pub struct Signer {
    key: Bytes,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Signer(<secret>)")
    }
}

impl Signer {
    pub fn new(key: impl Into<Bytes>) -> Self {
        Self { key: key.into() }
    }

    /// A signer whose key is derived from this one for one purpose
    /// (`HMAC(key, label)`), so that messages signed for one purpose (auth
    /// tokens) can never be replayed as another (tickets), whatever their
    /// encodings have in common.
    pub fn derive(&self, label: &str) -> Signer {
        let key = self.mac(label.as_bytes()).finalize().into_bytes();
        Signer {
            key: Bytes::copy_from_slice(&key),
        }
    }

    fn mac(&self, body: &[u8]) -> HmacSha256 {
        // HMAC accepts keys of any length.
        let mut mac = match HmacSha256::new_from_slice(&self.key) {
            Ok(mac) => mac,
            Err(_) => unreachable!("HMAC takes keys of any length"),
        };
        mac.update(body);
        mac
    }

    /// Signs `msg` in place and returns its encoding.
    pub fn sign<M: Signed>(&self, msg: &mut M) -> Bytes {
        msg.set_signature(Bytes::new());
        let body = msg.encode_to_vec();
        let sig = self.mac(&body).finalize().into_bytes();
        msg.set_signature(Bytes::copy_from_slice(&sig));
        Bytes::from(msg.encode_to_vec())
    }

    /// Decodes and verifies a signed message: signature, version and expiry.
    pub fn verify<M: Signed>(&self, bytes: &[u8]) -> Result<M, SignError> {
        let mut msg = M::decode(bytes).map_err(|e| SignError::Malformed {
            what: M::WHAT,
            reason: e.to_string(),
        })?;
        let sig = msg.signature().clone();
        if sig.is_empty() {
            return Err(SignError::BadSignature { what: M::WHAT });
        }
        msg.set_signature(Bytes::new());
        let body = msg.encode_to_vec();
        self.mac(&body)
            .verify_slice(&sig)
            .map_err(|_| SignError::BadSignature { what: M::WHAT })?;
        msg.set_signature(sig);
        if msg.version() != crate::WIRE_VERSION {
            return Err(SignError::Version {
                what: M::WHAT,
                got: msg.version(),
                want: crate::WIRE_VERSION,
            });
        }
        let expires = msg.expires_at_ms();
        let now = crate::now_ms();
        if expires != 0 && now > expires {
            return Err(SignError::Expired {
                what: M::WHAT,
                ago_ms: now - expires,
            });
        }
        Ok(msg)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ticket() -> ShardTicket {
        ShardTicket {
            version: crate::WIRE_VERSION,
            query_id: "q1".into(),
            shard: 3,
            fragment: Bytes::from_static(b"plan"),
            expected_schema: Bytes::new(),
            expires_at_ms: crate::now_ms() + 60_000,
            signature: Bytes::new(),
        }
    }

    #[test]
    fn round_trip() {
        let s = Signer::new("secret");
        let bytes = s.sign(&mut ticket());
        let t: ShardTicket = s.verify(&bytes).unwrap();
        assert_eq!(t.shard, 3);
    }

    #[test]
    fn altered_field_is_refused() {
        let s = Signer::new("secret");
        let mut t = ticket();
        s.sign(&mut t);
        t.shard = 4;
        let bytes = t.encode_to_vec();
        assert_eq!(
            s.verify::<ShardTicket>(&bytes).unwrap_err(),
            SignError::BadSignature {
                what: "shard ticket"
            }
        );
    }

    #[test]
    fn other_key_is_refused() {
        let bytes = Signer::new("a").sign(&mut ticket());
        assert!(matches!(
            Signer::new("b").verify::<ShardTicket>(&bytes),
            Err(SignError::BadSignature { .. })
        ));
    }

    #[test]
    fn expired_is_refused() {
        let s = Signer::new("secret");
        let mut t = ticket();
        t.expires_at_ms = crate::now_ms() - 10;
        let bytes = s.sign(&mut t);
        assert!(matches!(
            s.verify::<ShardTicket>(&bytes),
            Err(SignError::Expired { .. })
        ));
    }

    #[test]
    fn derived_keys_are_separate() {
        let s = Signer::new("secret");
        let bytes = s.sign(&mut ticket());
        assert!(s.derive("auth").verify::<ShardTicket>(&bytes).is_err());
        let again = s.derive("auth").sign(&mut ticket());
        assert!(s.derive("auth").verify::<ShardTicket>(&again).is_ok());
    }

    #[test]
    fn garbage_is_malformed() {
        let s = Signer::new("secret");
        assert!(matches!(
            s.verify::<ShardTicket>(b"\xff\xff\xff garbage"),
            Err(SignError::Malformed { .. })
        ));
        assert!(matches!(
            s.verify::<ShardTicket>(b""),
            Err(SignError::BadSignature { .. })
        ));
    }
}
