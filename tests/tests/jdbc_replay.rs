//! The Flight SQL JDBC driver (DBeaver, Tableau, IntelliJ), replayed call
//! for call against a TLS cluster with authentication.
//!
//! The driver cannot be installed here (no Maven), so [`Driver`] does what
//! its sources do, with its wire-level habits: every call carries the
//! `authorization` header (the bearer token from the Handshake *response
//! header*, or the `token=` property) and the session cookies the server
//! set; `catalog=` sends `SetSessionOptions` to every server it talks to
//! and `CloseSession` on close; queries are always prepared; results are
//! read from each endpoint's location with a new client that logs in again.
//! It asserts what the driver relies on.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
#[path = "common/secure.rs"]
mod secure;

use std::collections::HashMap;

use arrow::array::{Array, AsArray, RecordBatch, UnionArray};
use arrow::datatypes::{DataType, Field, Int32Type, Int64Type, Schema, UInt32Type};
use arrow_flight::encode::FlightDataEncoderBuilder;
use arrow_flight::flight_service_client::FlightServiceClient;
use arrow_flight::sql::{
    ActionClosePreparedStatementRequest, ActionCreatePreparedStatementRequest,
    ActionCreatePreparedStatementResult, Any, CommandGetCatalogs, CommandGetDbSchemas,
    CommandGetExportedKeys, CommandGetImportedKeys, CommandGetPrimaryKeys, CommandGetSqlInfo,
    CommandGetTableTypes, CommandGetTables, CommandPreparedStatementQuery,
    CommandPreparedStatementUpdate, DoPutPreparedStatementResult, DoPutUpdateResult,
    ProstMessageExt,
};
use arrow_flight::{Action, FlightDescriptor, FlightInfo, HandshakeRequest};
use base64::Engine;
use common::TestCluster;
use flight_worker::session::set_options_action;
use fsql_proto::flight_session::{
    CloseSessionResult, SetSessionOptionsResult, session_option_value::OptionValue,
};
use futures::{StreamExt, TryStreamExt};
use prost::Message;
use secure::{API_TOKEN, Certs, PASSWORD, USER};
use std::sync::Arc;
use tonic::Code;
use tonic::metadata::MetadataMap;

/// How the connection authenticates (`user`/`password` or `token`).
#[derive(Clone)]
enum Login {
    Password(String, String),
    Token(String),
}

/// One JDBC connection: its properties and per-server state.
struct Driver {
    ca: String,
    login: Login,
    catalog: Option<String>,
    /// Bearer token per server URL (the driver logs in to each location).
    tokens: HashMap<String, String>,
    /// Session cookies per server URL (ClientCookieMiddleware).
    cookies: HashMap<String, String>,
    /// Servers the session options were sent to.
    sessions: Vec<String>,
}

impl Driver {
    async fn connect(
        url: &str,
        ca: &str,
        login: Login,
        catalog: Option<&str>,
    ) -> Result<Self, tonic::Status> {
        let mut d = Driver {
            ca: ca.to_string(),
            login,
            catalog: catalog.map(str::to_string),
            tokens: HashMap::new(),
            cookies: HashMap::new(),
            sessions: Vec::new(),
        };
        d.open(url).await?;
        Ok(d)
    }

    /// What the driver does on each new client: log in, set the catalog.
    async fn open(&mut self, url: &str) -> Result<(), tonic::Status> {
        if let Login::Password(user, password) = self.login.clone() {
            let mut client = self.client(url).await;
            let mut request =
                tonic::Request::new(futures::stream::iter(vec![HandshakeRequest::default()]));
            let basic =
                base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
            request
                .metadata_mut()
                .insert("authorization", format!("Basic {basic}").parse().unwrap());
            let response = client.handshake(request).await?;
            // The driver keeps the token from the response *header*.
            let header = response
                .metadata()
                .get("authorization")
                .expect("Handshake answers with an authorization header")
                .to_str()
                .unwrap()
                .to_string();
            let token = header
                .strip_prefix("Bearer ")
                .expect("a Bearer token")
                .to_string();
            let _: Vec<_> = response.into_inner().try_collect().await?;
            self.tokens.insert(url.to_string(), token);
        }
        if let Some(catalog) = self.catalog.clone() {
            let action = set_options_action(&[("catalog", OptionValue::StringValue(catalog))]);
            let bodies = self.action(url, action).await?;
            let result = SetSessionOptionsResult::decode(bodies[0].as_ref()).unwrap();
            assert!(result.errors.is_empty(), "catalog refused: {result:?}");
            assert!(
                self.cookies.contains_key(url),
                "no session cookie from {url}"
            );
            self.sessions.push(url.to_string());
        }
        Ok(())
    }

    async fn client(&self, url: &str) -> FlightServiceClient<tonic::transport::Channel> {
        FlightServiceClient::new(secure::connect(url, Some(&self.ca)).await.unwrap())
            .max_decoding_message_size(64 * 1024 * 1024)
    }

    /// A request carrying the driver's headers for `url`.
    fn request<T>(&self, url: &str, body: T) -> tonic::Request<T> {
        let mut request = tonic::Request::new(body);
        let token = match &self.login {
            Login::Token(t) => Some(t.clone()),
            Login::Password(..) => self.tokens.get(url).cloned(),
        };
        if let Some(t) = token {
            request
                .metadata_mut()
                .insert("authorization", format!("Bearer {t}").parse().unwrap());
        }
        if let Some(c) = self.cookies.get(url) {
            request.metadata_mut().insert("cookie", c.parse().unwrap());
        }
        request
    }

    fn keep_cookies(&mut self, url: &str, metadata: &MetadataMap) {
        if let Some(v) = metadata.get("set-cookie") {
            let cookie = v.to_str().unwrap().split(';').next().unwrap().to_string();
            if cookie.ends_with('=') {
                self.cookies.remove(url);
            } else {
                self.cookies.insert(url.to_string(), cookie);
            }
        }
    }

    async fn action(
        &mut self,
        url: &str,
        action: Action,
    ) -> Result<Vec<bytes::Bytes>, tonic::Status> {
        let mut client = self.client(url).await;
        let response = client.do_action(self.request(url, action)).await?;
        self.keep_cookies(url, response.metadata());
        response.into_inner().map_ok(|r| r.body).try_collect().await
    }

    async fn flight_info(
        &mut self,
        url: &str,
        cmd: impl ProstMessageExt,
    ) -> Result<FlightInfo, tonic::Status> {
        let mut client = self.client(url).await;
        let descriptor = FlightDescriptor::new_cmd(cmd.as_any().encode_to_vec());
        let response = client
            .get_flight_info(self.request(url, descriptor))
            .await?;
        self.keep_cookies(url, response.metadata());
        Ok(response.into_inner())
    }

    /// Reads every endpoint: at the coordinator, or at its location with a
    /// new client that logs in (and sets the catalog) first.
    async fn read(
        &mut self,
        url: &str,
        info: &FlightInfo,
    ) -> Result<Vec<RecordBatch>, tonic::Status> {
        let expected = info.clone().try_decode_schema().unwrap();
        let mut out = Vec::new();
        for ep in &info.endpoint {
            let target = match ep.location.first() {
                Some(loc) => {
                    assert!(
                        loc.uri.starts_with("grpc+tls://"),
                        "plaintext location {} under TLS",
                        loc.uri
                    );
                    if !self.tokens.contains_key(&loc.uri) && !self.sessions.contains(&loc.uri) {
                        self.open(&loc.uri).await?;
                    }
                    loc.uri.clone()
                }
                None => url.to_string(),
            };
            let mut client = self.client(&target).await;
            let ticket = ep.ticket.clone().unwrap();
            let response = client.do_get(self.request(&target, ticket)).await?;
            let stream = arrow_flight::decode::FlightRecordBatchStream::new_from_flight_data(
                response
                    .into_inner()
                    .map_err(arrow_flight::error::FlightError::from),
            );
            let batches: Vec<RecordBatch> = stream.try_collect().await.map_err(|e| match e {
                arrow_flight::error::FlightError::Tonic(s) => *s,
                other => tonic::Status::unknown(other.to_string()),
            })?;
            for b in &batches {
                assert_eq!(
                    b.schema().as_ref(),
                    &expected,
                    "stream schema != FlightInfo schema"
                );
            }
            out.extend(batches);
        }
        Ok(out)
    }

    async fn metadata(&mut self, url: &str, cmd: impl ProstMessageExt) -> Vec<RecordBatch> {
        let info = self.flight_info(url, cmd).await.unwrap();
        self.read(url, &info).await.unwrap()
    }

    /// `executeQuery` / `executeUpdate` on a (prepared) statement.
    async fn prepare(&mut self, url: &str, sql: &str) -> ActionCreatePreparedStatementResult {
        let request = ActionCreatePreparedStatementRequest {
            query: sql.to_string(),
            transaction_id: None,
        };
        let bodies = self
            .action(
                url,
                Action::new("CreatePreparedStatement", request.as_any().encode_to_vec()),
            )
            .await
            .unwrap();
        Any::decode(bodies[0].as_ref())
            .unwrap()
            .unpack()
            .unwrap()
            .unwrap()
    }

    async fn close_prepared(&mut self, url: &str, handle: bytes::Bytes) {
        let request = ActionClosePreparedStatementRequest {
            prepared_statement_handle: handle,
        };
        self.action(
            url,
            Action::new("ClosePreparedStatement", request.as_any().encode_to_vec()),
        )
        .await
        .unwrap();
    }

    /// `DoPut` of one batch under `cmd`; returns the PutResult metadata.
    async fn put(
        &mut self,
        url: &str,
        cmd: impl ProstMessageExt,
        batch: RecordBatch,
    ) -> bytes::Bytes {
        let descriptor = FlightDescriptor::new_cmd(cmd.as_any().encode_to_vec());
        let stream = FlightDataEncoderBuilder::new()
            .with_schema(batch.schema())
            .with_flight_descriptor(Some(descriptor))
            .build(futures::stream::iter(vec![Ok(batch)]))
            .map(|r| r.unwrap());
        let mut client = self.client(url).await;
        let response = client.do_put(self.request(url, stream)).await.unwrap();
        let results: Vec<_> = response.into_inner().try_collect().await.unwrap();
        assert_eq!(results.len(), 1, "one PutResult");
        results[0].app_metadata.clone()
    }

    async fn query(
        &mut self,
        url: &str,
        sql: &str,
        params: Option<RecordBatch>,
    ) -> Vec<RecordBatch> {
        let prepared = self.prepare(url, sql).await;
        assert!(
            !prepared.dataset_schema.is_empty(),
            "a query has a dataset schema"
        );
        let mut handle = prepared.prepared_statement_handle.clone();
        if let Some(params) = params {
            let cmd = CommandPreparedStatementQuery {
                prepared_statement_handle: handle.clone(),
            };
            let md = self.put(url, cmd, params).await;
            let result = DoPutPreparedStatementResult::decode(md.as_ref()).unwrap();
            if let Some(h) = result.prepared_statement_handle {
                handle = h;
            }
        }
        let cmd = CommandPreparedStatementQuery {
            prepared_statement_handle: handle,
        };
        let info = self.flight_info(url, cmd).await.unwrap();
        let dataset =
            arrow::ipc::convert::try_schema_from_ipc_buffer(&prepared.dataset_schema).unwrap();
        assert_eq!(
            info.clone().try_decode_schema().unwrap(),
            dataset,
            "prepared schema == FlightInfo schema"
        );
        let batches = self.read(url, &info).await.unwrap();
        self.close_prepared(url, prepared.prepared_statement_handle)
            .await;
        batches
    }

    async fn update(&mut self, url: &str, sql: &str) -> i64 {
        let prepared = self.prepare(url, sql).await;
        // An empty dataset schema is how the driver tells DML.
        assert!(
            prepared.dataset_schema.is_empty(),
            "DML has no dataset schema: {sql}"
        );
        let params = if prepared.parameter_schema.is_empty() {
            Arc::new(Schema::empty())
        } else {
            Arc::new(
                arrow::ipc::convert::try_schema_from_ipc_buffer(&prepared.parameter_schema)
                    .unwrap(),
            )
        };
        let cmd = CommandPreparedStatementUpdate {
            prepared_statement_handle: prepared.prepared_statement_handle.clone(),
        };
        let md = self.put(url, cmd, RecordBatch::new_empty(params)).await;
        let count = DoPutUpdateResult::decode(md.as_ref()).unwrap().record_count;
        self.close_prepared(url, prepared.prepared_statement_handle)
            .await;
        count
    }

    /// `Connection.close()`: CloseSession everywhere a session was opened.
    async fn close(mut self) {
        for url in std::mem::take(&mut self.sessions) {
            let bodies = self
                .action(&url, Action::new("CloseSession", ""))
                .await
                .unwrap();
            assert_eq!(
                CloseSessionResult::decode(bodies[0].as_ref())
                    .unwrap()
                    .status,
                1
            );
        }
    }
}

fn strings(batches: &[RecordBatch], column: usize) -> Vec<String> {
    batches
        .iter()
        .flat_map(|b| {
            b.column(column)
                .as_string::<i32>()
                .iter()
                .map(|s| s.unwrap_or("").to_string())
                .collect::<Vec<_>>()
        })
        .collect()
}

async fn cluster(certs: &Certs) -> TestCluster {
    TestCluster::start_secure(2, secure::secure(Some(certs))).await
}

/// Connect, browse the catalog, run queries and updates, as DBeaver does
/// with `user=...&password=...&catalog=fsql`.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn dbeaver_session_with_user_password_and_catalog() {
    let certs = secure::make_certs();
    let c = cluster(&certs).await;
    let url = c.cluster.url();
    assert!(url.starts_with("grpc+tls://"), "{url}");
    let login = Login::Password(USER.into(), PASSWORD.into());
    let mut d = Driver::connect(&url, &certs.ca, login, Some("fsql"))
        .await
        .unwrap();

    // DDL and DML through executeUpdate.
    assert_eq!(
        d.update(&url, "CREATE TABLE sales (id BIGINT, region VARCHAR, amount DECIMAL(10, 2)) WITH (distribution = 'hash(id)', shards = 4)").await,
        0
    );
    let values: Vec<String> = (1..=200)
        .map(|i| {
            format!(
                "({i}, '{}', {}.{:02})",
                ["north", "south", "east"][i % 3],
                i,
                i % 100
            )
        })
        .collect();
    assert_eq!(
        d.update(
            &url,
            &format!("INSERT INTO sales VALUES {}", values.join(", "))
        )
        .await,
        200
    );

    // DatabaseMetaData: one GetSqlInfo with no ids; the driver reads values
    // by union member.
    let info = d.metadata(&url, CommandGetSqlInfo { info: vec![] }).await;
    let mut members: HashMap<u32, i8> = HashMap::new();
    for b in &info {
        let ids = b.column(0).as_primitive::<UInt32Type>();
        let values = b.column(1).as_any().downcast_ref::<UnionArray>().unwrap();
        for i in 0..b.num_rows() {
            members.insert(ids.value(i), values.type_id(i));
        }
    }
    for (id, member) in [
        (0, 0),
        (1, 0),
        (2, 0),
        (3, 1),
        (4, 1),
        (8, 3),
        (504, 0),
        (508, 4),
        (509, 4),
        (517, 5),
        (503, 3),
        (541, 2),
        (563, 1),
    ] {
        assert_eq!(members.get(&id), Some(&member), "SqlInfo {id}");
    }

    // getCatalogs, getSchemas, getTableTypes, getTables.
    let b = d.metadata(&url, CommandGetCatalogs {}).await;
    assert_eq!(strings(&b, 0), vec!["fsql"]);
    let b = d
        .metadata(
            &url,
            CommandGetDbSchemas {
                catalog: Some("fsql".into()),
                db_schema_filter_pattern: Some("%".into()),
            },
        )
        .await;
    assert_eq!(strings(&b, 1), vec!["public", "system"]);
    let b = d.metadata(&url, CommandGetTableTypes {}).await;
    assert_eq!(strings(&b, 0), vec!["SYSTEM TABLE", "TABLE"]);
    let tables = CommandGetTables {
        catalog: Some("fsql".into()),
        db_schema_filter_pattern: Some("public".into()),
        table_name_filter_pattern: Some("%".into()),
        table_types: vec!["TABLE".into()],
        include_schema: false,
    };
    let b = d.metadata(&url, tables).await;
    assert_eq!(strings(&b, 2), vec!["sales"]);

    // getColumns: GetTables with include_schema, then the field metadata.
    let columns = CommandGetTables {
        catalog: Some("fsql".into()),
        db_schema_filter_pattern: Some("public".into()),
        table_name_filter_pattern: Some("sales".into()),
        table_types: vec![],
        include_schema: true,
    };
    let b = d.metadata(&url, columns).await;
    let schema =
        arrow::ipc::convert::try_schema_from_ipc_buffer(b[0].column(4).as_binary::<i32>().value(0))
            .unwrap();
    let md = |c: &str, k: &str| {
        schema
            .field_with_name(c)
            .unwrap()
            .metadata()
            .get(&format!("ARROW:FLIGHT:SQL:{k}"))
            .cloned()
    };
    assert_eq!(md("id", "TYPE_NAME").as_deref(), Some("BIGINT"));
    assert_eq!(md("region", "TYPE_NAME").as_deref(), Some("VARCHAR"));
    assert_eq!(md("amount", "TYPE_NAME").as_deref(), Some("DECIMAL"));
    assert_eq!(md("amount", "PRECISION").as_deref(), Some("10"));
    assert_eq!(md("amount", "SCALE").as_deref(), Some("2"));
    assert_eq!(md("amount", "IS_AUTO_INCREMENT").as_deref(), Some("0"));
    assert_eq!(md("amount", "SCHEMA_NAME").as_deref(), Some("public"));
    assert!(md("amount", "REMARKS").is_some());

    // getPrimaryKeys / getImportedKeys / getExportedKeys: empty, right shape.
    let b = d
        .metadata(
            &url,
            CommandGetPrimaryKeys {
                catalog: Some("fsql".into()),
                db_schema: Some("public".into()),
                table: "sales".into(),
            },
        )
        .await;
    assert_eq!(b.iter().map(|b| b.num_rows()).sum::<usize>(), 0);
    let info = d
        .flight_info(
            &url,
            CommandGetImportedKeys {
                catalog: None,
                db_schema: None,
                table: "sales".into(),
            },
        )
        .await
        .unwrap();
    assert_eq!(info.clone().try_decode_schema().unwrap().fields().len(), 13);
    d.read(&url, &info).await.unwrap();
    let info = d
        .flight_info(
            &url,
            CommandGetExportedKeys {
                catalog: None,
                db_schema: None,
                table: "sales".into(),
            },
        )
        .await
        .unwrap();
    d.read(&url, &info).await.unwrap();

    // executeQuery: plain (direct endpoints at the workers, over TLS, each
    // read by a client that logged in there and set the catalog).
    let b = d
        .query(&url, "SELECT id, region FROM sales WHERE amount > 50", None)
        .await;
    let expected = (1..=200)
        .filter(|i| *i as f64 + (i % 100) as f64 / 100.0 > 50.0)
        .count();
    assert_eq!(b.iter().map(|b| b.num_rows()).sum::<usize>(), expected);
    assert!(
        d.sessions.len() > 1,
        "the worker locations got the session options too"
    );

    // A prepared query with parameters (DoPut of the parameter batch).
    let prepared = d
        .prepare(
            &url,
            "SELECT count(*) AS n, sum(id) AS s FROM sales WHERE region = ? AND id > ?",
        )
        .await;
    let params =
        arrow::ipc::convert::try_schema_from_ipc_buffer(&prepared.parameter_schema).unwrap();
    assert_eq!(params.fields().len(), 2, "one parameter field per ?");
    assert!(params.fields().iter().all(|f| f.is_nullable()));
    d.close_prepared(&url, prepared.prepared_statement_handle)
        .await;
    let batch = RecordBatch::try_new(
        Arc::new(Schema::new(vec![
            Field::new("0", DataType::Utf8, true),
            Field::new("1", DataType::Int32, true),
        ])),
        vec![
            Arc::new(arrow::array::StringArray::from(vec!["north"])),
            Arc::new(arrow::array::Int32Array::from(vec![100])),
        ],
    )
    .unwrap();
    let b = d
        .query(
            &url,
            "SELECT count(*) AS n, sum(id) AS s FROM sales WHERE region = ? AND id > ?",
            Some(batch),
        )
        .await;
    let north: Vec<i64> = (101..=200).filter(|i| i % 3 == 0).collect();
    assert_eq!(
        b[0].column(0).as_primitive::<Int64Type>().value(0),
        north.len() as i64
    );
    assert_eq!(
        b[0].column(1).as_primitive::<Int64Type>().value(0),
        north.iter().sum::<i64>()
    );

    assert_eq!(d.update(&url, "DROP TABLE sales").await, 0);
    d.close().await;
    c.stop().await;
}

/// `token=` (an API token as the bearer), no catalog; and the failures the
/// driver must report.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn token_login_and_refusals() {
    let certs = secure::make_certs();
    let c = cluster(&certs).await;
    let url = c.cluster.url();
    let mut d = Driver::connect(&url, &certs.ca, Login::Token(API_TOKEN.into()), None)
        .await
        .unwrap();
    d.update(
        &url,
        "CREATE TABLE t (a INT) WITH (distribution = 'hash(a)', shards = 2)",
    )
    .await;
    d.update(&url, "INSERT INTO t VALUES (1), (2), (3)").await;
    let b = d.query(&url, "SELECT a FROM t", None).await;
    let mut got: Vec<i32> = b
        .iter()
        .flat_map(|b| b.column(0).as_primitive::<Int32Type>().values().to_vec())
        .collect();
    got.sort();
    assert_eq!(got, vec![1, 2, 3]);

    // Wrong password, unknown token: UNAUTHENTICATED.
    let e = Driver::connect(
        &url,
        &certs.ca,
        Login::Password(USER.into(), "nope".into()),
        None,
    )
    .await
    .err()
    .unwrap();
    assert_eq!(e.code(), Code::Unauthenticated);
    let mut bad = Driver::connect(&url, &certs.ca, Login::Token("not-a-token".into()), None)
        .await
        .unwrap();
    let e = bad
        .flight_info(&url, CommandGetCatalogs {})
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated);
    // An unknown catalog is refused by SetSessionOptions.
    let mut d2 = Driver::connect(&url, &certs.ca, Login::Token(API_TOKEN.into()), None)
        .await
        .unwrap();
    let action = set_options_action(&[("catalog", OptionValue::StringValue("other".into()))]);
    let bodies = d2.action(&url, action).await.unwrap();
    assert_eq!(
        SetSessionOptionsResult::decode(bodies[0].as_ref())
            .unwrap()
            .errors
            .len(),
        1
    );
    // The server still serves.
    let b = d.query(&url, "SELECT count(*) FROM t", None).await;
    assert_eq!(b[0].column(0).as_primitive::<Int64Type>().value(0), 3);
    c.stop().await;
}
