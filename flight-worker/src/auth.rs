//! Client authentication, shared by the worker and the coordinator.
//!
//! * [`Authenticator`] checks credentials: users with argon2 password hashes
//!   and SHA-256-hashed API tokens (from the config file), and session tokens
//!   it issues itself. A session token is a signed [`AuthToken`] (user and
//!   expiry, HMAC with a key derived from the cluster secret), sent as
//!   `authorization: Bearer <base64url>`, so every coordinator and worker of
//!   the cluster verifies it without shared state.
//! * [`AuthLayer`] is the tower layer in front of a Flight service: it reads
//!   the `authorization` header of every call, refuses bad credentials with
//!   UNAUTHENTICATED (with a generic message), and puts the
//!   [`AuthenticatedUser`] into the request extensions.
//! * [`handshake`] answers the Flight `Handshake`: the session token goes
//!   back both as the `authorization: Bearer` response header (what JDBC,
//!   ADBC and pyarrow read) and as the response payload.
//!
//! This module owns no transport and no config files; it never logs a
//! secret.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use arrow_flight::{BasicAuth, HandshakeRequest, HandshakeResponse};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD_NO_PAD, URL_SAFE_NO_PAD};
use bytes::Bytes;
use fsql_proto::AuthToken;
use fsql_proto::sign::Signer;
use futures::stream::BoxStream;
use futures::{StreamExt, TryStreamExt};
use prost::Message;
use sha2::{Digest, Sha256};
use tonic::{Request, Response, Status, Streaming};

/// How long a session token is valid unless configured otherwise.
pub const DEFAULT_TOKEN_TTL: Duration = Duration::from_secs(12 * 3600);

/// The gRPC path of the Flight `Handshake`, which authenticates itself.
pub const HANDSHAKE_PATH: &str = "/arrow.flight.protocol.FlightService/Handshake";

/// Label of the key (derived from the cluster secret) signing session tokens.
const TOKEN_KEY_LABEL: &str = "fsql session token v1";

/// Prefix of a hashed API token in the config file.
const API_TOKEN_PREFIX: &str = "sha256:";

/// One user of the config file (`[[users]]`).
#[derive(Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserConfig {
    pub name: String,
    /// An argon2 PHC string (`flight-coordinator hash-password`).
    #[serde(default)]
    pub password_hash: Option<String>,
    /// API tokens as `sha256:<hex>` (`flight-coordinator gen-token`); a
    /// client sends the token itself as `authorization: Bearer <token>`.
    #[serde(default)]
    pub api_tokens: Vec<String>,
}

impl std::fmt::Debug for UserConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UserConfig")
            .field("name", &self.name)
            .field(
                "password_hash",
                &self.password_hash.as_ref().map(|_| "<set>"),
            )
            .field("api_tokens", &self.api_tokens.len())
            .finish()
    }
}

/// Who may connect, and for how long a session token lives.
#[derive(Debug, Clone)]
pub struct AuthConfig {
    pub users: Vec<UserConfig>,
    pub token_ttl: Duration,
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            users: Vec::new(),
            token_ttl: DEFAULT_TOKEN_TTL,
        }
    }
}

/// The authenticated client of a request (a request extension).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthenticatedUser {
    pub name: String,
}

/// Why credentials were refused. The messages are deliberately generic.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("invalid credentials")]
    InvalidCredentials,
    #[error("missing or invalid bearer token")]
    InvalidToken,
    /// The users configuration is unusable (said at startup, never to clients).
    #[error("invalid users configuration: {0}")]
    Config(String),
}

impl From<AuthError> for Status {
    fn from(e: AuthError) -> Self {
        match e {
            AuthError::InvalidCredentials | AuthError::InvalidToken => {
                Status::unauthenticated(e.to_string())
            }
            AuthError::Config(_) => Status::internal("authentication is misconfigured"),
        }
    }
}

struct User {
    name: String,
    password_hash: Option<String>,
    api_tokens: Vec<[u8; 32]>,
}

/// Verifies credentials and issues session tokens.
pub struct Authenticator {
    signer: Signer,
    users: Vec<User>,
    ttl: Duration,
    /// Verified against when the user is unknown, so that the answer takes
    /// as long as for a known user.
    dummy_hash: String,
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authenticator")
            .field("users", &self.users.len())
            .field("ttl", &self.ttl)
            .finish()
    }
}

impl Authenticator {
    /// Checks the configuration (PHC strings parse, API token hashes are
    /// well formed, names are unique) and derives the token key from the
    /// cluster `secret`.
    pub fn new(secret: &Signer, config: &AuthConfig) -> Result<Self, AuthError> {
        let mut users: Vec<User> = Vec::new();
        for u in &config.users {
            if u.name.is_empty() || u.name.contains(':') {
                return Err(AuthError::Config(format!(
                    "user name {:?} must be non-empty and contain no ':'",
                    u.name
                )));
            }
            if users.iter().any(|x| x.name == u.name) {
                return Err(AuthError::Config(format!(
                    "user {:?} is listed twice",
                    u.name
                )));
            }
            if let Some(h) = &u.password_hash {
                argon2::PasswordHash::new(h).map_err(|e| {
                    AuthError::Config(format!(
                        "password_hash of user {:?} is not a PHC string ({e}); \
                         make one with `flight-coordinator hash-password`",
                        u.name
                    ))
                })?;
            }
            let api_tokens = u
                .api_tokens
                .iter()
                .map(|t| parse_token_hash(t))
                .collect::<Option<Vec<_>>>()
                .ok_or_else(|| {
                    AuthError::Config(format!(
                        "api_tokens of user {:?} must be `sha256:<64 hex digits>`; \
                         make them with `flight-coordinator gen-token`",
                        u.name
                    ))
                })?;
            users.push(User {
                name: u.name.clone(),
                password_hash: u.password_hash.clone(),
                api_tokens,
            });
        }
        if config.token_ttl.is_zero() {
            return Err(AuthError::Config("the token TTL must be positive".into()));
        }
        let dummy_hash =
            hash_password("not a password").map_err(|e| AuthError::Config(e.to_string()))?;
        Ok(Self {
            signer: secret.derive(TOKEN_KEY_LABEL),
            users,
            ttl: config.token_ttl,
            dummy_hash,
        })
    }

    /// Whether any user is configured.
    pub fn has_users(&self) -> bool {
        !self.users.is_empty()
    }

    /// A new session token for `user`.
    pub fn issue(&self, user: &str) -> String {
        let now = fsql_proto::now_ms();
        let mut token = AuthToken {
            version: fsql_proto::WIRE_VERSION,
            user: user.to_string(),
            issued_at_ms: now,
            expires_at_ms: now.saturating_add(self.ttl.as_millis() as i64),
            signature: Bytes::new(),
        };
        URL_SAFE_NO_PAD.encode(self.signer.sign(&mut token))
    }

    /// Checks a bearer token: a session token signed by this cluster, or a
    /// configured API token.
    pub fn verify_bearer(&self, token: &str) -> Result<AuthenticatedUser, AuthError> {
        if let Ok(bytes) = URL_SAFE_NO_PAD.decode(token.trim())
            && let Ok(t) = self.signer.verify::<AuthToken>(&bytes)
        {
            // A user removed from the config loses their sessions (where
            // the users are known).
            if self.users.is_empty() || self.users.iter().any(|u| u.name == t.user) {
                return Ok(AuthenticatedUser { name: t.user });
            }
            return Err(AuthError::InvalidToken);
        }
        let digest: [u8; 32] = Sha256::digest(token.trim().as_bytes()).into();
        let mut found = None;
        for u in &self.users {
            for h in &u.api_tokens {
                if constant_time_eq(h, &digest) {
                    found = Some(&u.name);
                }
            }
        }
        found
            .map(|name| AuthenticatedUser { name: name.clone() })
            .ok_or(AuthError::InvalidToken)
    }

    /// Checks a user's password (argon2: slow on purpose, call it off the
    /// async runtime).
    pub fn verify_password(
        &self,
        user: &str,
        password: &str,
    ) -> Result<AuthenticatedUser, AuthError> {
        let known = self.users.iter().find(|u| u.name == user);
        let hash = known
            .and_then(|u| u.password_hash.as_deref())
            .unwrap_or(&self.dummy_hash);
        let ok = verify_password_hash(hash, password);
        match known {
            Some(u) if ok && u.password_hash.is_some() => Ok(AuthenticatedUser {
                name: u.name.clone(),
            }),
            _ => Err(AuthError::InvalidCredentials),
        }
    }

    /// [`Self::verify_password`] on the blocking pool.
    pub async fn verify_password_async(
        self: &Arc<Self>,
        user: String,
        password: String,
    ) -> Result<AuthenticatedUser, AuthError> {
        let this = Arc::clone(self);
        tokio::task::spawn_blocking(move || this.verify_password(&user, &password))
            .await
            .unwrap_or(Err(AuthError::InvalidCredentials))
    }
}

fn verify_password_hash(hash: &str, password: &str) -> bool {
    use argon2::PasswordVerifier;
    match argon2::PasswordHash::new(hash) {
        Ok(parsed) => argon2::Argon2::default()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok(),
        Err(_) => false,
    }
}

/// An argon2id PHC string for `password` (what `password_hash` holds).
pub fn hash_password(password: &str) -> Result<String, argon2::password_hash::Error> {
    use argon2::PasswordHasher;
    let salt: [u8; 16] = rand::random();
    let salt = argon2::password_hash::SaltString::encode_b64(&salt)?;
    Ok(argon2::Argon2::default()
        .hash_password(password.as_bytes(), &salt)?
        .to_string())
}

/// A new random API token and its `sha256:<hex>` hash for the config file.
pub fn generate_api_token() -> (String, String) {
    let bytes: [u8; 32] = rand::random();
    let token = format!("fsql_{}", URL_SAFE_NO_PAD.encode(bytes));
    let hash = hash_api_token(&token);
    (token, hash)
}

/// The `sha256:<hex>` form of an API token.
pub fn hash_api_token(token: &str) -> String {
    let digest = Sha256::digest(token.as_bytes());
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    format!("{API_TOKEN_PREFIX}{hex}")
}

fn parse_token_hash(s: &str) -> Option<[u8; 32]> {
    let hex = s.strip_prefix(API_TOKEN_PREFIX)?;
    if hex.len() != 64 || !hex.is_ascii() {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

/// Compares two byte strings in time independent of where they differ.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let mut diff = 0u8;
    for (x, y) in a.iter().zip(b) {
        diff |= x ^ y;
    }
    std::hint::black_box(diff) == 0
}

/// What an `authorization` header holds.
#[derive(Debug, PartialEq, Eq)]
enum Credentials {
    Basic { user: String, password: String },
    Bearer(String),
}

fn parse_authorization(value: &str) -> Option<Credentials> {
    let (scheme, rest) = value.trim().split_once(' ')?;
    let rest = rest.trim();
    if scheme.eq_ignore_ascii_case("bearer") {
        return Some(Credentials::Bearer(rest.to_string()));
    }
    if scheme.eq_ignore_ascii_case("basic") {
        // Padding is optional: Go's Flight client (ADBC) sends none.
        let decoded = STANDARD_NO_PAD.decode(rest.trim_end_matches('=')).ok()?;
        let decoded = String::from_utf8(decoded).ok()?;
        let (user, password) = decoded.split_once(':')?;
        return Some(Credentials::Basic {
            user: user.to_string(),
            password: password.to_string(),
        });
    }
    None
}

/// How strictly [`AuthLayer`] checks calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthMode {
    /// No checks (a coordinator without users, on loopback or with
    /// `--no-auth`); a Basic handshake still gets a (session) token.
    Off,
    /// Calls that carry an `authorization` header must carry a valid bearer
    /// token; calls without one pass (a worker: its tickets and requests are
    /// signed anyway).
    IfPresent,
    /// Every call except `Handshake` needs a valid bearer token.
    Required,
}

/// What the layer learnt about a `Handshake` call (a request extension).
#[derive(Clone)]
pub struct HandshakeAuth {
    pub authenticator: Arc<Authenticator>,
    /// The session token to hand back, when the header already authenticated.
    pub token: Option<String>,
}

/// Tower layer authenticating every call of a Flight service.
#[derive(Clone)]
pub struct AuthLayer {
    authenticator: Arc<Authenticator>,
    mode: AuthMode,
}

impl AuthLayer {
    pub fn new(authenticator: Arc<Authenticator>, mode: AuthMode) -> Self {
        Self {
            authenticator,
            mode,
        }
    }
}

impl<S> tower_layer::Layer<S> for AuthLayer {
    type Service = AuthService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        AuthService {
            inner,
            authenticator: Arc::clone(&self.authenticator),
            mode: self.mode,
        }
    }
}

/// The service [`AuthLayer`] wraps around a server.
#[derive(Clone)]
pub struct AuthService<S> {
    inner: S,
    authenticator: Arc<Authenticator>,
    mode: AuthMode,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// Decides about one call: the user (if any) or a refusal.
async fn authorize(
    auth: &Arc<Authenticator>,
    mode: AuthMode,
    handshake: bool,
    header: Option<Result<&str, ()>>,
) -> Result<(Option<AuthenticatedUser>, Option<String>), AuthError> {
    let header = match header {
        None => None,
        Some(Ok(v)) => Some(parse_authorization(v).ok_or(if handshake {
            AuthError::InvalidCredentials
        } else {
            AuthError::InvalidToken
        })?),
        Some(Err(())) => return Err(AuthError::InvalidToken),
    };
    match (header, handshake) {
        (None, true) => Ok((None, None)),
        (None, false) => match mode {
            AuthMode::Required => Err(AuthError::InvalidToken),
            _ => Ok((None, None)),
        },
        (Some(Credentials::Bearer(token)), _) => {
            let user = auth.verify_bearer(&token)?;
            Ok((Some(user), Some(token)))
        }
        (Some(Credentials::Basic { user, password }), true) => {
            let user = auth.verify_password_async(user, password).await?;
            let token = auth.issue(&user.name);
            Ok((Some(user), Some(token)))
        }
        // Passwords are checked once, by the handshake.
        (Some(Credentials::Basic { .. }), false) => Err(AuthError::InvalidToken),
    }
}

/// Without authentication a handshake still answers with a token, since
/// some drivers (ADBC) insist on one when given credentials: a session token
/// for the Basic user name (unchecked), or the bearer token sent.
fn unchecked_token<B>(auth: &Authenticator, req: &http::Request<B>) -> Option<String> {
    let value = req
        .headers()
        .get(http::header::AUTHORIZATION)?
        .to_str()
        .ok()?;
    match parse_authorization(value)? {
        Credentials::Basic { user, .. } => Some(auth.issue(&user)),
        Credentials::Bearer(token) => Some(token),
    }
}

impl<S, B> tower_service::Service<http::Request<B>> for AuthService<S>
where
    S: tower_service::Service<http::Request<B>, Response = http::Response<tonic::body::Body>>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = S::Error;
    type Future = BoxFuture<Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: http::Request<B>) -> Self::Future {
        // The clone that was made ready goes with this call.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let handshake = req.uri().path() == HANDSHAKE_PATH;
        if self.mode == AuthMode::Off {
            if handshake && let Some(token) = unchecked_token(&self.authenticator, &req) {
                req.extensions_mut().insert(HandshakeAuth {
                    authenticator: Arc::clone(&self.authenticator),
                    token: Some(token),
                });
            }
            return Box::pin(inner.call(req));
        }
        let auth = Arc::clone(&self.authenticator);
        let mode = self.mode;
        Box::pin(async move {
            let header = req
                .headers()
                .get(http::header::AUTHORIZATION)
                .map(|v| v.to_str().map_err(|_| ()));
            match authorize(&auth, mode, handshake, header).await {
                Ok((user, token)) => {
                    if let Some(user) = user {
                        req.extensions_mut().insert(user);
                    }
                    if handshake {
                        req.extensions_mut().insert(HandshakeAuth {
                            authenticator: auth,
                            token,
                        });
                    }
                    inner.call(req).await
                }
                Err(e) => {
                    tracing::info!(path = %req.uri().path(), "refused: {e}");
                    Ok(Status::from(e).into_http())
                }
            }
        })
    }
}

/// The response stream of a `Handshake`.
pub type HandshakeStream = BoxStream<'static, Result<HandshakeResponse, Status>>;

/// Answers a Flight `Handshake` behind an [`AuthLayer`].
///
/// Without the layer's extension (authentication off) the handshake
/// succeeds with an empty payload. Otherwise the token the layer validated
/// or issued (from an `authorization` header), or one issued now for the
/// `BasicAuth` in the first request's payload, is sent back as the
/// `authorization: Bearer` response header and as the payload.
pub async fn handshake(
    request: Request<Streaming<HandshakeRequest>>,
) -> Result<Response<HandshakeStream>, Status> {
    let Some(auth) = request.extensions().get::<HandshakeAuth>().cloned() else {
        let response = HandshakeResponse {
            protocol_version: 0,
            payload: Bytes::new(),
        };
        return Ok(Response::new(
            futures::stream::once(async { Ok(response) }).boxed(),
        ));
    };
    let token = match auth.token {
        Some(token) => token,
        None => {
            let mut stream = request.into_inner();
            let first = stream
                .try_next()
                .await
                .map_err(|_| Status::from(AuthError::InvalidCredentials))?
                .ok_or(AuthError::InvalidCredentials)?;
            let basic =
                BasicAuth::decode(first.payload).map_err(|_| AuthError::InvalidCredentials)?;
            if basic.username.is_empty() {
                return Err(AuthError::InvalidCredentials.into());
            }
            let user = auth
                .authenticator
                .verify_password_async(basic.username, basic.password)
                .await?;
            auth.authenticator.issue(&user.name)
        }
    };
    let bearer = format!("Bearer {token}");
    let response = HandshakeResponse {
        protocol_version: 0,
        payload: Bytes::from(token),
    };
    let mut response = Response::new(futures::stream::once(async { Ok(response) }).boxed());
    let value = bearer
        .parse()
        .map_err(|_| Status::internal("a session token is not a valid header value"))?;
    response.metadata_mut().insert("authorization", value);
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn authenticator(ttl: Duration) -> Authenticator {
        let config = AuthConfig {
            users: vec![UserConfig {
                name: "alice".into(),
                password_hash: Some(hash_password("s3cret").unwrap()),
                api_tokens: vec![hash_api_token("tok-1")],
            }],
            token_ttl: ttl,
        };
        Authenticator::new(&Signer::new("secret"), &config).unwrap()
    }

    #[test]
    fn passwords_and_tokens() {
        let a = authenticator(DEFAULT_TOKEN_TTL);
        assert_eq!(a.verify_password("alice", "s3cret").unwrap().name, "alice");
        assert!(a.verify_password("alice", "wrong").is_err());
        assert!(a.verify_password("bob", "s3cret").is_err());
        let t = a.issue("alice");
        assert_eq!(a.verify_bearer(&t).unwrap().name, "alice");
        assert_eq!(a.verify_bearer("tok-1").unwrap().name, "alice");
        assert!(a.verify_bearer("tok-2").is_err());
        // Another cluster's token.
        let other = Authenticator::new(&Signer::new("other"), &AuthConfig::default()).unwrap();
        assert!(a.verify_bearer(&other.issue("alice")).is_err());
    }

    #[test]
    fn expired_tokens_are_refused() {
        let a = authenticator(Duration::from_millis(1));
        let t = a.issue("alice");
        std::thread::sleep(Duration::from_millis(5));
        assert_eq!(a.verify_bearer(&t), Err(AuthError::InvalidToken));
    }

    #[test]
    fn headers_parse() {
        assert_eq!(
            parse_authorization("Basic YWxpY2U6czNjcmV0"),
            Some(Credentials::Basic {
                user: "alice".into(),
                password: "s3cret".into()
            })
        );
        assert_eq!(
            parse_authorization("bearer abc"),
            Some(Credentials::Bearer("abc".into()))
        );
        // Unpadded (Go) and padded.
        assert_eq!(
            parse_authorization("Basic YWxpY2U6d29uZGVyIGxhbmQ6NDI"),
            parse_authorization("Basic YWxpY2U6d29uZGVyIGxhbmQ6NDI=")
        );
        assert!(parse_authorization("Basic YWxpY2U6d29uZGVyIGxhbmQ6NDI").is_some());
        assert_eq!(parse_authorization("Digest x"), None);
    }

    #[test]
    fn bad_config_is_refused() {
        let mut c = AuthConfig::default();
        c.users.push(UserConfig {
            name: "a".into(),
            password_hash: Some("plain".into()),
            api_tokens: vec![],
        });
        assert!(Authenticator::new(&Signer::new("s"), &c).is_err());
    }
}
