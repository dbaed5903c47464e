//! `flight-coordinator sql`: a SQL shell for any Flight SQL server.
//!
//! One statement with `-c`, a script on stdin, or an interactive prompt
//! (line editing and history in `~/.fsql_history`, statements end with `;`
//! and may span lines). Results print as aligned tables with the row count
//! and the time taken. Dot commands: `.set name=value` (SetSessionOptions,
//! where the server supports sessions), `.get`, `.tables`, `.help`, `.quit`.

use std::collections::HashMap;
use std::io::{IsTerminal, Read};
use std::time::Instant;

use arrow::array::RecordBatch;
use arrow::util::pretty::pretty_format_batches;
use arrow_flight::sql::CommandGetTables;
use arrow_flight::sql::client::FlightSqlServiceClient;
use arrow_flight::{Action, FlightInfo, Ticket};
use bytes::Bytes;
use fsql_proto::flight_session::{
    GetSessionOptionsRequest, GetSessionOptionsResult, SessionOptionValue,
    SetSessionOptionsRequest, SetSessionOptionsResult, session_option_value::OptionValue,
};
use futures::TryStreamExt;
use prost::Message;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// How to reach the server.
#[derive(Debug, Clone, Default)]
pub struct Connect {
    /// `grpc://host:port` or `grpc+tls://host:port`.
    pub uri: String,
    pub user: Option<String>,
    pub password: Option<String>,
    /// PEM CA bundle for `grpc+tls://` (default: the system roots).
    pub tls_ca: Option<Vec<u8>>,
}

/// A connected shell session.
pub struct Shell {
    connect: Connect,
    client: FlightSqlServiceClient<Channel>,
    /// The session cookie the server set, sent back on every call.
    cookie: Option<String>,
    /// Clients for endpoint locations other than the server itself.
    others: HashMap<String, FlightSqlServiceClient<Channel>>,
}

async fn channel(uri: &str, tls_ca: Option<&[u8]>) -> Result<Channel, BoxError> {
    let http = crate::workers::http_uri(uri);
    let mut endpoint = Endpoint::from_shared(http.clone())
        .map_err(|e| format!("invalid server address {uri}: {e}"))?;
    if http.starts_with("https://") {
        let mut tls = ClientTlsConfig::new().with_enabled_roots();
        if let Some(ca) = tls_ca {
            tls = tls.ca_certificate(Certificate::from_pem(ca));
        }
        endpoint = endpoint.tls_config(tls)?;
    }
    Ok(endpoint
        .connect()
        .await
        .map_err(|e| format!("cannot connect to {uri}: {e}"))?)
}

/// Whether `sql` returns rows (sent as a query) rather than a count.
fn is_query(sql: &str) -> bool {
    let first = sql
        .trim_start_matches(|c: char| c.is_whitespace() || c == '(')
        .split(|c: char| !c.is_ascii_alphabetic())
        .next()
        .unwrap_or("")
        .to_ascii_uppercase();
    matches!(
        first.as_str(),
        "SELECT" | "WITH" | "VALUES" | "EXPLAIN" | "SHOW" | "DESCRIBE" | "TABLE" | "FROM"
    )
}

fn status_text(e: &arrow_flight::error::FlightError) -> String {
    match e {
        arrow_flight::error::FlightError::Tonic(s) => format!("{:?}: {}", s.code(), s.message()),
        other => other.to_string(),
    }
}

fn option_text(v: &SessionOptionValue) -> String {
    match &v.option_value {
        Some(OptionValue::StringValue(s)) => s.clone(),
        Some(OptionValue::BoolValue(b)) => b.to_string(),
        Some(OptionValue::Int64Value(i)) => i.to_string(),
        Some(OptionValue::DoubleValue(d)) => d.to_string(),
        Some(OptionValue::StringListValue(l)) => l.values.join(","),
        None => String::new(),
    }
}

impl Shell {
    pub async fn connect(connect: Connect) -> Result<Self, BoxError> {
        let ch = channel(&connect.uri, connect.tls_ca.as_deref()).await?;
        let mut client = FlightSqlServiceClient::new(ch);
        if let Some(user) = &connect.user {
            let password = connect.password.clone().unwrap_or_default();
            client
                .handshake(user, &password)
                .await
                .map_err(|e| format!("login as {user} failed: {}", status_text(&e)))?;
        }
        Ok(Self {
            connect,
            client,
            cookie: None,
            others: HashMap::new(),
        })
    }

    /// Runs one statement or dot command, printing its result to stdout.
    pub async fn run(&mut self, input: &str) -> Result<(), String> {
        let input = input.trim().trim_end_matches(';').trim();
        if input.is_empty() {
            return Ok(());
        }
        if let Some(cmd) = input.strip_prefix('.') {
            return self.dot(cmd).await;
        }
        let start = Instant::now();
        if is_query(input) {
            let batches = self.query(input).await?;
            let rows: usize = batches.iter().map(|b| b.num_rows()).sum();
            if !batches.is_empty() && batches[0].num_columns() > 0 {
                let table = pretty_format_batches(&batches).map_err(|e| e.to_string())?;
                println!("{table}");
            }
            println!(
                "({rows} row{}, {:.3} s)",
                if rows == 1 { "" } else { "s" },
                start.elapsed().as_secs_f64()
            );
        } else {
            let n = self.update(input).await?;
            println!(
                "OK, {n} row(s) affected ({:.3} s)",
                start.elapsed().as_secs_f64()
            );
        }
        Ok(())
    }

    /// Runs an update. On a terminal, a statement running longer than half
    /// a second shows its progress from `system.queries` (loads report the
    /// files read and rows written) until it ends.
    async fn update(&mut self, sql: &str) -> Result<i64, String> {
        let mut client = self.client.clone();
        let run = client.execute_update(sql.to_string(), None);
        tokio::pin!(run);
        let mut watch = std::io::stderr().is_terminal().then(|| self.client.clone());
        let mut shown = false;
        let start = tokio::time::Instant::now() + std::time::Duration::from_millis(500);
        let mut tick = tokio::time::interval_at(start, std::time::Duration::from_millis(250));
        let result = loop {
            tokio::select! {
                result = &mut run => break result,
                _ = tick.tick(), if watch.is_some() => {
                    let Some(poller) = watch.as_mut() else { continue };
                    match progress(poller, sql).await {
                        Some(p) => {
                            eprint!("\r\x1b[K{}", progress_line(&p));
                            shown = true;
                        }
                        // The server has no system.queries: stop asking.
                        None if !shown => watch = None,
                        None => {}
                    }
                }
            }
        };
        if shown {
            eprint!("\r\x1b[K");
        }
        result.map_err(|e| status_text(&e))
    }

    async fn query(&mut self, sql: &str) -> Result<Vec<RecordBatch>, String> {
        let info = self
            .client
            .execute(sql.to_string(), None)
            .await
            .map_err(|e| status_text(&e))?;
        self.read(info).await
    }

    /// Reads every endpoint, at the location it names (the server itself
    /// when it names none).
    async fn read(&mut self, info: FlightInfo) -> Result<Vec<RecordBatch>, String> {
        let mut out = Vec::new();
        for ep in info.endpoint {
            let ticket = ep
                .ticket
                .ok_or("the server sent an endpoint without a ticket")?;
            let location = ep
                .location
                .first()
                .map(|l| l.uri.clone())
                .filter(|u| !u.starts_with("arrow-flight-reuse-connection"));
            let client = match location {
                None => &mut self.client,
                Some(uri) => self.other(&uri).await?,
            };
            let batches: Vec<RecordBatch> = client
                .do_get(Ticket::new(ticket.ticket))
                .await
                .map_err(|e| status_text(&e))?
                .try_collect()
                .await
                .map_err(|e| status_text(&e))?;
            out.extend(batches);
        }
        Ok(out)
    }

    async fn other(&mut self, uri: &str) -> Result<&mut FlightSqlServiceClient<Channel>, String> {
        if !self.others.contains_key(uri) {
            let ch = channel(uri, self.connect.tls_ca.as_deref())
                .await
                .map_err(|e| e.to_string())?;
            let mut c = FlightSqlServiceClient::new(ch);
            if let Some(user) = &self.connect.user {
                let password = self.connect.password.clone().unwrap_or_default();
                c.handshake(user, &password)
                    .await
                    .map_err(|e| format!("login at {uri} failed: {}", status_text(&e)))?;
            }
            self.others.insert(uri.to_string(), c);
        }
        self.others
            .get_mut(uri)
            .ok_or_else(|| format!("no client for {uri}"))
    }

    /// A session action through the raw Flight client, keeping the cookie.
    async fn action(&mut self, kind: &str, body: Vec<u8>) -> Result<Vec<Bytes>, String> {
        let mut request = tonic::Request::new(Action {
            r#type: kind.to_string(),
            body: body.into(),
        });
        if let Some(token) = self.client.token() {
            let v = format!("Bearer {token}")
                .parse()
                .map_err(|e| format!("{e}"))?;
            request.metadata_mut().insert("authorization", v);
        }
        if let Some(c) = &self.cookie {
            let v = c.parse().map_err(|e| format!("{e}"))?;
            request.metadata_mut().insert("cookie", v);
        }
        let response = self
            .client
            .inner_mut()
            .do_action(request)
            .await
            .map_err(|s| format!("{:?}: {}", s.code(), s.message()))?;
        if let Some(v) = response.metadata().get("set-cookie")
            && let Ok(v) = v.to_str()
            && let Some(cookie) = v.split(';').next()
        {
            if cookie.ends_with('=') {
                self.cookie = None;
            } else {
                self.cookie = Some(cookie.to_string());
                self.client.set_header("cookie", cookie);
                for c in self.others.values_mut() {
                    c.set_header("cookie", cookie);
                }
            }
        }
        let bodies: Vec<arrow_flight::Result> = response
            .into_inner()
            .try_collect()
            .await
            .map_err(|s| format!("{:?}: {}", s.code(), s.message()))?;
        Ok(bodies.into_iter().map(|r| r.body).collect())
    }

    async fn dot(&mut self, cmd: &str) -> Result<(), String> {
        let (name, rest) = cmd.split_once(char::is_whitespace).unwrap_or((cmd, ""));
        match name {
            "set" => {
                let (key, value) = rest
                    .split_once('=')
                    .ok_or("usage: .set name=value (for example .set distributed=false)")?;
                let (key, value) = (key.trim(), value.trim());
                let value = match value.to_ascii_lowercase().as_str() {
                    "true" | "on" => OptionValue::BoolValue(true),
                    "false" | "off" => OptionValue::BoolValue(false),
                    _ => OptionValue::StringValue(value.trim_matches('\'').to_string()),
                };
                let request = SetSessionOptionsRequest {
                    session_options: [(
                        key.to_string(),
                        SessionOptionValue {
                            option_value: Some(value),
                        },
                    )]
                    .into(),
                };
                let bodies = self
                    .action("SetSessionOptions", request.encode_to_vec())
                    .await?;
                let result = bodies
                    .first()
                    .map(|b| SetSessionOptionsResult::decode(b.as_ref()))
                    .transpose()
                    .map_err(|e| format!("bad SetSessionOptions answer: {e}"))?
                    .unwrap_or_default();
                if let Some((k, e)) = result.errors.iter().next() {
                    return Err(format!("the server refused {k} ({:?})", e.value()));
                }
                println!("{key} set");
                Ok(())
            }
            "get" => {
                let bodies = self
                    .action(
                        "GetSessionOptions",
                        GetSessionOptionsRequest {}.encode_to_vec(),
                    )
                    .await?;
                let result = bodies
                    .first()
                    .map(|b| GetSessionOptionsResult::decode(b.as_ref()))
                    .transpose()
                    .map_err(|e| format!("bad GetSessionOptions answer: {e}"))?
                    .unwrap_or_default();
                let mut options: Vec<_> = result.session_options.into_iter().collect();
                options.sort_by(|a, b| a.0.cmp(&b.0));
                for (k, v) in options {
                    println!("{k} = {}", option_text(&v));
                }
                Ok(())
            }
            "tables" => {
                let cmd = CommandGetTables {
                    catalog: None,
                    db_schema_filter_pattern: None,
                    table_name_filter_pattern: None,
                    table_types: vec![],
                    include_schema: false,
                };
                let info = self
                    .client
                    .get_tables(cmd)
                    .await
                    .map_err(|e| status_text(&e))?;
                let batches = self.read(info).await?;
                println!(
                    "{}",
                    pretty_format_batches(&batches).map_err(|e| e.to_string())?
                );
                Ok(())
            }
            "help" => {
                println!(
                    "Statements end with ';' and may span lines.\n\
                     .set name=value   set a session option (e.g. .set distributed=false)\n\
                     .get              show the session options\n\
                     .tables           list the tables\n\
                     .quit             leave (also Ctrl-D)"
                );
                Ok(())
            }
            other => Err(format!(
                "unknown command .{other}; .help lists the commands"
            )),
        }
    }
}

/// Splits a script into statements at `;` outside quotes and comments.
pub fn split_statements(script: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut chars = script.chars().peekable();
    let mut quote: Option<char> = None;
    while let Some(c) = chars.next() {
        match quote {
            Some(q) => {
                cur.push(c);
                if c == q {
                    quote = None;
                }
            }
            None => match c {
                '\'' | '"' => {
                    quote = Some(c);
                    cur.push(c);
                }
                '-' if chars.peek() == Some(&'-') => {
                    for c in chars.by_ref() {
                        if c == '\n' {
                            cur.push('\n');
                            break;
                        }
                    }
                }
                '\n' if cur.trim_start().starts_with('.') => {
                    out.push(std::mem::take(&mut cur));
                }
                ';' => out.push(std::mem::take(&mut cur)),
                _ => cur.push(c),
            },
        }
    }
    out.push(cur);
    out.into_iter()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect()
}

/// The progress of the running statement `sql`, from `system.queries`.
async fn progress(client: &mut FlightSqlServiceClient<Channel>, sql: &str) -> Option<String> {
    let query = format!(
        "SELECT progress, rows FROM system.queries WHERE state = 'running' AND sql = '{}'",
        sql.replace('\'', "''")
    );
    let info = client.execute(query, None).await.ok()?;
    let ticket = info.endpoint.first()?.ticket.clone()?;
    let batches: Vec<RecordBatch> = client.do_get(ticket).await.ok()?.try_collect().await.ok()?;
    let batch = batches.iter().find(|b| b.num_rows() > 0)?;
    let text = arrow::compute::cast(batch.column(0), &arrow::datatypes::DataType::Utf8).ok()?;
    let text = arrow::array::AsArray::as_string::<i32>(&text);
    Some(if arrow::array::Array::is_null(text, 0) {
        "running".to_string()
    } else {
        text.value(0).to_string()
    })
}

/// A progress bar for progress text starting with a percentage
/// (`37% (3/8 files read, ...)`), else the text.
fn progress_line(text: &str) -> String {
    const WIDTH: usize = 30;
    let pct = text
        .split_once('%')
        .and_then(|(n, _)| n.trim().parse::<usize>().ok());
    match pct {
        Some(pct) => {
            let filled = pct.min(100) * WIDTH / 100;
            format!(
                "[{}{}] {text}",
                "#".repeat(filled),
                ".".repeat(WIDTH - filled)
            )
        }
        None => text.to_string(),
    }
}

/// Runs the shell: `command`, else stdin when it is not a terminal, else
/// the interactive prompt. Fails if any statement failed (non-interactive).
pub async fn main(connect: Connect, command: Option<String>) -> Result<(), BoxError> {
    let mut shell = Shell::connect(connect).await?;
    let script = match command {
        Some(c) => Some(c),
        None if !std::io::stdin().is_terminal() => {
            let mut s = String::new();
            std::io::stdin().read_to_string(&mut s)?;
            Some(s)
        }
        None => None,
    };
    if let Some(script) = script {
        let mut failed = 0;
        for stmt in split_statements(&script) {
            if let Err(e) = shell.run(&stmt).await {
                eprintln!("error: {e}");
                failed += 1;
            }
        }
        if failed > 0 {
            return Err(format!("{failed} statement(s) failed").into());
        }
        return Ok(());
    }
    interactive(&mut shell).await
}

async fn interactive(shell: &mut Shell) -> Result<(), BoxError> {
    use rustyline::error::ReadlineError;
    let mut editor = rustyline::DefaultEditor::new()?;
    let history =
        std::env::var_os("HOME").map(|h| std::path::PathBuf::from(h).join(".fsql_history"));
    if let Some(h) = &history {
        let _ = editor.load_history(h);
    }
    println!(
        "connected to {}; statements end with ';', .help for commands",
        shell.connect.uri
    );
    let mut pending = String::new();
    loop {
        let prompt = if pending.is_empty() {
            "fsql> "
        } else {
            "   -> "
        };
        match editor.readline(prompt) {
            Ok(line) => {
                if pending.is_empty() && line.trim_start().starts_with('.') {
                    let _ = editor.add_history_entry(line.as_str());
                    let cmd = line.trim();
                    if cmd == ".quit" || cmd == ".exit" {
                        break;
                    }
                    if let Err(e) = shell.run(cmd).await {
                        eprintln!("error: {e}");
                    }
                    continue;
                }
                pending.push_str(&line);
                pending.push('\n');
                let mut stmts = split_statements(&pending);
                if !line.trim_end().ends_with(';') {
                    continue;
                }
                let _ = editor.add_history_entry(pending.trim());
                pending.clear();
                for stmt in stmts.drain(..) {
                    if let Err(e) = shell.run(&stmt).await {
                        eprintln!("error: {e}");
                    }
                }
            }
            Err(ReadlineError::Interrupted) => pending.clear(),
            Err(ReadlineError::Eof) => break,
            Err(e) => return Err(e.into()),
        }
    }
    if let Some(h) = &history {
        let _ = editor.save_history(h);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_statements_outside_quotes_and_comments() {
        let s = split_statements(
            "SELECT 'a;b'; -- c;\nSELECT \"x;\" FROM t;\n.set distributed=false\nSELECT 1",
        );
        assert_eq!(
            s,
            vec![
                "SELECT 'a;b'",
                "SELECT \"x;\" FROM t",
                ".set distributed=false",
                "SELECT 1"
            ]
        );
    }

    #[test]
    fn progress_bars() {
        assert_eq!(
            progress_line("50% (1/2 files read, 10 rows written)"),
            "[###############...............] 50% (1/2 files read, 10 rows written)"
        );
        assert_eq!(progress_line("10 rows written"), "10 rows written");
    }

    #[test]
    fn queries_and_updates() {
        assert!(is_query("  select 1"));
        assert!(is_query("(SELECT 1) UNION (SELECT 2)"));
        assert!(is_query("WITH x AS (SELECT 1) SELECT * FROM x"));
        assert!(!is_query("INSERT INTO t VALUES (1)"));
        assert!(!is_query("CREATE TABLE t (a INT)"));
    }
}
