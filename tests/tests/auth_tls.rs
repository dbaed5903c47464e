//! Authentication and TLS against real clusters on loopback.
//!
//! Basic handshake → `authorization: Bearer` response header → queries;
//! refused credentials and forged, tampered or expired tokens at the
//! coordinator and at the workers (the servers keep serving); a TLS cluster
//! whose endpoints are all `grpc+tls` and read over TLS; plaintext to a TLS
//! port; the configurable message size limit.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
#[path = "common/secure.rs"]
mod secure;

use std::time::Duration;

use arrow::array::{Array, Int64Array};
use arrow::record_batch::RecordBatch;
use arrow_flight::flight_service_client::FlightServiceClient;
use arrow_flight::sql::client::FlightSqlServiceClient;
use arrow_flight::{FlightInfo, HandshakeRequest, Ticket};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use common::{TestCluster, rows, to_status};
use flight_coordinator::server::Security;
use flight_worker::auth::{AuthConfig, Authenticator};
use fsql_proto::sign::Signer;
use futures::TryStreamExt;
use prost::Message;
use secure::{API_TOKEN, PASSWORD, USER, connect, make_certs, secure};
use tonic::Code;
use tonic::transport::Channel;

async fn sql_client(
    url: &str,
    ca: Option<&str>,
    token: Option<&str>,
) -> FlightSqlServiceClient<Channel> {
    let mut c = FlightSqlServiceClient::new(connect(url, ca).await.unwrap());
    if let Some(t) = token {
        c.set_token(t.to_string());
    }
    c
}

/// A Handshake with `authorization: Basic`: the `authorization` response
/// header and the payload.
async fn basic_handshake(
    channel: Channel,
    user: &str,
    password: &str,
) -> Result<(Option<String>, bytes::Bytes), tonic::Status> {
    let mut client = FlightServiceClient::new(channel);
    let mut req = tonic::Request::new(futures::stream::iter(vec![HandshakeRequest::default()]));
    let basic = STANDARD.encode(format!("{user}:{password}"));
    req.metadata_mut()
        .insert("authorization", format!("Basic {basic}").parse().unwrap());
    let resp = client.handshake(req).await?;
    let header = resp
        .metadata()
        .get("authorization")
        .map(|v| v.to_str().unwrap().to_string());
    let responses: Vec<_> = resp.into_inner().try_collect().await?;
    let payload = responses
        .into_iter()
        .next()
        .map(|r| r.payload)
        .unwrap_or_default();
    Ok((header, payload))
}

/// Logs in and returns the bearer token from the response header.
async fn login(url: &str, ca: Option<&str>) -> String {
    let (header, payload) = basic_handshake(connect(url, ca).await.unwrap(), USER, PASSWORD)
        .await
        .unwrap();
    let header = header.expect("an authorization response header");
    let token = header
        .strip_prefix("Bearer ")
        .expect("a Bearer header")
        .to_string();
    assert_eq!(
        payload,
        token.as_bytes(),
        "the payload carries the token too"
    );
    token
}

/// Reads every endpoint of `info`, at its location when it has one, with
/// the same bearer token (as JDBC and ADBC do).
async fn read_all(
    coordinator: &mut FlightSqlServiceClient<Channel>,
    info: &FlightInfo,
    ca: Option<&str>,
    token: Option<&str>,
) -> Result<Vec<RecordBatch>, tonic::Status> {
    let mut out = Vec::new();
    for ep in &info.endpoint {
        let ticket = ep.ticket.clone().unwrap();
        let stream = match ep.location.first() {
            None => coordinator.do_get(ticket).await,
            Some(loc) => sql_client(&loc.uri, ca, token).await.do_get(ticket).await,
        }
        .map_err(to_status)?;
        out.extend(stream.try_collect::<Vec<_>>().await.map_err(to_status)?);
    }
    Ok(out)
}

async fn setup_table(client: &mut FlightSqlServiceClient<Channel>, rows: i64) {
    client
        .execute_update(
            "CREATE TABLE t (id BIGINT, v VARCHAR) WITH (distribution = 'hash(id)', shards = 4)"
                .into(),
            None,
        )
        .await
        .unwrap();
    let values: Vec<String> = (0..rows).map(|i| format!("({i}, 'v{i}')")).collect();
    client
        .execute_update(format!("INSERT INTO t VALUES {}", values.join(", ")), None)
        .await
        .unwrap();
}

fn sum_ids(batches: &[RecordBatch]) -> i64 {
    batches
        .iter()
        .map(|b| {
            let a = b.column(0).as_any().downcast_ref::<Int64Array>().unwrap();
            (0..a.len()).map(|i| a.value(i)).sum::<i64>()
        })
        .sum()
}

/// SELECT id FROM t through `client`, reading every endpoint.
async fn select_ids(
    client: &mut FlightSqlServiceClient<Channel>,
    ca: Option<&str>,
    token: Option<&str>,
) -> Result<(FlightInfo, Vec<RecordBatch>), tonic::Status> {
    let info = client
        .execute("SELECT id FROM t".into(), None)
        .await
        .map_err(to_status)?;
    let batches = read_all(client, &info, ca, token).await?;
    Ok((info, batches))
}

fn assert_unauthenticated<T: std::fmt::Debug>(r: Result<T, tonic::Status>, what: &str) {
    let e = r.expect_err(what);
    assert_eq!(e.code(), Code::Unauthenticated, "{what}: {e}");
    assert!(
        e.message() == "invalid credentials" || e.message() == "missing or invalid bearer token",
        "{what}: a generic message, got {:?}",
        e.message()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn basic_handshake_issues_a_bearer_token_and_queries_work() {
    let cluster = TestCluster::start_secure(2, secure(None)).await;
    let url = cluster.cluster.url();
    let token = login(&url, None).await;

    let mut client = sql_client(&url, None, Some(&token)).await;
    setup_table(&mut client, 100).await;
    let (info, batches) = select_ids(&mut client, None, Some(&token)).await.unwrap();
    assert!(
        info.endpoint.iter().all(|e| !e.location.is_empty()),
        "a plain scan reads from the workers"
    );
    assert_eq!(rows(&batches), 100);
    assert_eq!(sum_ids(&batches), (0..100).sum::<i64>());

    // arrow-flight's own client keeps the response header's token.
    let mut c = sql_client(&url, None, None).await;
    c.handshake(USER, PASSWORD).await.unwrap();
    assert!(c.token().is_some());
    let t = c.token().cloned();
    let (_, batches) = select_ids(&mut c, None, t.as_deref()).await.unwrap();
    assert_eq!(rows(&batches), 100);

    // A configured API token works as a bearer token, at the workers too.
    let mut c = sql_client(&url, None, Some(API_TOKEN)).await;
    let (_, batches) = select_ids(&mut c, None, Some(API_TOKEN)).await.unwrap();
    assert_eq!(rows(&batches), 100);

    // A merged query (at the coordinator) with the token.
    let info = client
        .execute("SELECT count(*) AS n FROM t".into(), None)
        .await
        .unwrap();
    let batches = read_all(&mut client, &info, None, Some(&token))
        .await
        .unwrap();
    assert_eq!(rows(&batches), 1);
    cluster.stop().await;
}

/// Tokens a client might forge: expired, another cluster's, tampered.
fn bad_tokens(secret: &[u8], good: &str) -> Vec<(&'static str, String)> {
    let expired = Authenticator::new(
        &Signer::new(secret.to_vec()),
        &AuthConfig {
            users: vec![],
            token_ttl: Duration::from_millis(1),
        },
    )
    .unwrap()
    .issue(USER);
    let other = Authenticator::new(
        &Signer::new("another cluster's secret"),
        &AuthConfig::default(),
    )
    .unwrap()
    .issue(USER);
    // The same token for another user, signature kept.
    let mut t =
        fsql_proto::AuthToken::decode(URL_SAFE_NO_PAD.decode(good).unwrap().as_slice()).unwrap();
    t.user = "root".into();
    let renamed = URL_SAFE_NO_PAD.encode(t.encode_to_vec());
    // Expiry pushed out, signature kept.
    let mut t =
        fsql_proto::AuthToken::decode(URL_SAFE_NO_PAD.decode(good).unwrap().as_slice()).unwrap();
    t.expires_at_ms += 365 * 24 * 3600 * 1000;
    let extended = URL_SAFE_NO_PAD.encode(t.encode_to_vec());
    // A token with no signature at all.
    t.signature = bytes::Bytes::new();
    let unsigned = URL_SAFE_NO_PAD.encode(t.encode_to_vec());
    vec![
        ("expired", expired),
        ("signed with another secret", other),
        ("tampered user", renamed),
        ("tampered expiry", extended),
        ("unsigned", unsigned),
        ("garbage", "not-a-token".to_string()),
        ("empty", String::new()),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_credentials_and_forged_tokens_are_refused() {
    let cluster = TestCluster::start_secure(2, secure(None)).await;
    let url = cluster.cluster.url();
    let worker_url = cluster.cluster.workers[0].url();

    // Wrong password, unknown user: at the coordinator and at a worker.
    for target in [&url, &worker_url] {
        let r = basic_handshake(connect(target, None).await.unwrap(), USER, "wrong").await;
        assert_unauthenticated(r, "wrong password");
        let r = basic_handshake(connect(target, None).await.unwrap(), "mallory", PASSWORD).await;
        assert_unauthenticated(r, "unknown user");
    }
    // A handshake with no credentials at all.
    let mut raw = FlightServiceClient::new(connect(&url, None).await.unwrap());
    let r = raw
        .handshake(futures::stream::iter(vec![HandshakeRequest::default()]))
        .await;
    assert_unauthenticated(r.map(|_| ()), "handshake without credentials");

    // No token.
    let mut anonymous = sql_client(&url, None, None).await;
    let r = anonymous
        .execute("SELECT 1".into(), None)
        .await
        .map_err(to_status);
    assert_unauthenticated(r, "no token");

    let token = login(&url, None).await;
    let mut client = sql_client(&url, None, Some(&token)).await;
    setup_table(&mut client, 50).await;
    let info = client
        .execute("SELECT id FROM t".into(), None)
        .await
        .unwrap();
    let direct = info
        .endpoint
        .iter()
        .find(|e| !e.location.is_empty())
        .expect("a direct endpoint")
        .clone();
    let ticket: Ticket = direct.ticket.clone().unwrap();
    let location = direct.location[0].uri.clone();

    let secret = std::fs::read(cluster.dir.path().join("coordinator").join("secret")).unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;
    for (what, bad) in bad_tokens(&secret, &token) {
        // At the coordinator.
        let mut c = sql_client(&url, None, Some(&bad)).await;
        let r = c
            .execute("SELECT id FROM t".into(), None)
            .await
            .map_err(to_status);
        assert_unauthenticated(r, &format!("coordinator, {what} token"));
        // At a worker, with a valid shard ticket.
        let mut w = sql_client(&location, None, Some(&bad)).await;
        let r = match w.do_get(ticket.clone()).await {
            Ok(s) => s.try_collect::<Vec<_>>().await.map(|_| ()),
            Err(e) => Err(e),
        }
        .map_err(to_status);
        assert_unauthenticated(r, &format!("worker, {what} token"));
        // A worker's handshake does not echo it either.
        let mut raw = FlightServiceClient::new(connect(&location, None).await.unwrap());
        let mut req = tonic::Request::new(futures::stream::iter(vec![HandshakeRequest::default()]));
        if let Ok(v) = format!("Bearer {bad}").parse() {
            req.metadata_mut().insert("authorization", v);
        }
        assert_unauthenticated(
            raw.handshake(req).await.map(|_| ()),
            &format!("worker handshake, {what} token"),
        );
    }
    // Basic credentials are for the handshake only.
    let mut c = sql_client(&url, None, None).await;
    c.set_header(
        "authorization",
        format!("Basic {}", STANDARD.encode(format!("{USER}:{PASSWORD}"))),
    );
    let r = c.execute("SELECT 1".into(), None).await.map_err(to_status);
    assert_unauthenticated(r, "Basic on a query");

    // The worker echoes a good token and takes the users' passwords.
    let mut raw = FlightServiceClient::new(connect(&location, None).await.unwrap());
    let mut req = tonic::Request::new(futures::stream::iter(vec![HandshakeRequest::default()]));
    req.metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    let resp = raw.handshake(req).await.unwrap();
    assert_eq!(
        resp.metadata()
            .get("authorization")
            .unwrap()
            .to_str()
            .unwrap(),
        format!("Bearer {token}")
    );
    let (header, _) = basic_handshake(connect(&location, None).await.unwrap(), USER, PASSWORD)
        .await
        .unwrap();
    let worker_token = header.unwrap().strip_prefix("Bearer ").unwrap().to_string();
    // ... and a token a worker issued is one of the cluster's.
    let mut c = sql_client(&url, None, Some(&worker_token)).await;
    c.execute("SELECT 1".into(), None).await.unwrap();

    // Still serving.
    let (_, batches) = select_ids(&mut client, None, Some(&token)).await.unwrap();
    assert_eq!(rows(&batches), 50);
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_cluster_advertises_only_tls_locations() {
    let certs = make_certs();
    let ca = Some(certs.ca.as_str());
    let cluster = TestCluster::start_secure(2, secure(Some(&certs))).await;
    let url = cluster.cluster.url();
    assert!(url.starts_with("grpc+tls://"), "{url}");
    assert!(
        cluster
            .cluster
            .workers
            .iter()
            .all(|w| w.url().starts_with("grpc+tls://"))
    );
    let token = login(&url, ca).await;
    let mut client = sql_client(&url, ca, Some(&token)).await;
    setup_table(&mut client, 200).await;
    let (info, batches) = select_ids(&mut client, ca, Some(&token)).await.unwrap();
    let locations: Vec<&str> = info
        .endpoint
        .iter()
        .flat_map(|e| e.location.iter().map(|l| l.uri.as_str()))
        .collect();
    assert!(!locations.is_empty(), "a plain scan has direct endpoints");
    assert!(
        locations.iter().all(|l| l.starts_with("grpc+tls://")),
        "{locations:?}"
    );
    assert_eq!(rows(&batches), 200);
    assert_eq!(sum_ids(&batches), (0..200).sum::<i64>());

    // Plaintext to the TLS ports (coordinator and worker) fails...
    for target in [url.clone(), cluster.cluster.workers[0].url()] {
        let plain = target.replace("grpc+tls://", "grpc://");
        let failed = match connect(&plain, None).await {
            Err(_) => true,
            Ok(ch) => {
                let mut c = FlightSqlServiceClient::new(ch);
                c.set_token(token.clone());
                c.execute("SELECT 1".into(), None).await.is_err()
            }
        };
        assert!(failed, "plaintext to {target} must fail");
    }
    // ... and a client that does not trust the certificate fails too.
    let other = make_certs();
    assert!(
        match connect(&url, Some(&other.ca)).await {
            Err(_) => true,
            Ok(ch) => FlightSqlServiceClient::new(ch)
                .execute("SELECT 1".into(), None)
                .await
                .is_err(),
        },
        "an untrusted certificate must be refused"
    );
    // The servers keep serving.
    let (_, batches) = select_ids(&mut client, ca, Some(&token)).await.unwrap();
    assert_eq!(rows(&batches), 200);
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_message_size_is_configurable() {
    let security = Security {
        max_message_size: 1 << 20,
        ..Security::default()
    };
    let cluster = TestCluster::start_secure(1, security).await;
    let mut client = cluster.client().await;
    client.update("CREATE TABLE big (s VARCHAR)").await.unwrap();
    let small = format!("INSERT INTO big VALUES ('{}')", "x".repeat(256 * 1024));
    assert_eq!(client.update(&small).await.unwrap(), 1);
    let large = format!("INSERT INTO big VALUES ('{}')", "x".repeat(3 << 20));
    let e = client
        .update(&large)
        .await
        .expect_err("a 3 MiB message over a 1 MiB limit");
    assert!(
        matches!(
            e.code(),
            Code::OutOfRange | Code::ResourceExhausted | Code::Internal
        ),
        "{e}"
    );
    // Still serving.
    assert_eq!(client.update(&small).await.unwrap(), 1);
    cluster.stop().await;

    // The default takes messages far larger than gRPC's 4 MiB.
    let cluster = TestCluster::start(1).await;
    let mut client = cluster.client().await;
    client.update("CREATE TABLE big (s VARCHAR)").await.unwrap();
    let large = format!("INSERT INTO big VALUES ('{}')", "x".repeat(12 << 20));
    assert_eq!(client.update(&large).await.unwrap(), 1);
    let batches = client
        .query("SELECT length(s) AS n FROM big")
        .await
        .unwrap();
    assert_eq!(rows(&batches), 1);
    cluster.stop().await;
}
