//! A tiny HTTP/1.1 server for metrics and health probes.
//!
//! One request per connection: [`serve`] accepts on a
//! [`TcpListener`] the caller bound, reads the request line and headers
//! (at most [`MAX_HEAD`] bytes, within [`CLIENT_TIMEOUT`]), answers `GET`
//! and `HEAD` from a [`Router`] (exact paths; the query string is passed
//! on) and closes the connection. Every response carries `Content-Length`
//! and `Connection: close`. Bad input never panics: a malformed request is
//! 400, another method 405, an oversized head 431, a slow client 408.
//! Request bodies are not read. It owns no routes itself: see
//! [`crate::metrics::worker_routes`] and the coordinator's routes.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::future::BoxFuture;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;

/// Largest request line plus headers accepted.
pub const MAX_HEAD: usize = 16 * 1024;

/// How long a client may take to send its request, and to take the
/// response; also the longest a handler may run.
pub const CLIENT_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a connection waits for the client to close after the response.
const LINGER: Duration = Duration::from_secs(1);

/// Most bytes read and dropped while waiting for the client to close.
const LINGER_BYTES: usize = 256 * 1024;

/// The methods served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Get,
    Head,
}

/// A parsed request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub method: Method,
    /// The path, without the query string (not percent-decoded).
    pub path: String,
    /// What follows `?` in the target (empty without one).
    pub query: String,
    /// Header names (lower case) and values, in order.
    pub headers: Vec<(String, String)>,
}

/// A response: status, content type and the whole body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub content_type: &'static str,
    pub body: Bytes,
}

impl Response {
    pub fn new(status: u16, content_type: &'static str, body: impl Into<Bytes>) -> Self {
        Self {
            status,
            content_type,
            body: body.into(),
        }
    }

    /// `text/plain` in UTF-8.
    pub fn text(status: u16, body: impl Into<Bytes>) -> Self {
        Self::new(status, "text/plain; charset=utf-8", body)
    }

    /// `text/html` in UTF-8.
    pub fn html(status: u16, body: impl Into<Bytes>) -> Self {
        Self::new(status, "text/html; charset=utf-8", body)
    }

    /// `application/json`.
    pub fn json(status: u16, body: impl Into<Bytes>) -> Self {
        Self::new(status, "application/json", body)
    }

    /// 200 with the Prometheus text exposition content type.
    pub fn prometheus(body: impl Into<Bytes>) -> Self {
        Self::new(200, crate::metrics::CONTENT_TYPE, body)
    }

    /// 404 `not found`.
    pub fn not_found() -> Self {
        Self::text(404, "not found\n")
    }
}

/// A route's handler.
pub type Handler = Arc<dyn Fn(Request) -> BoxFuture<'static, Response> + Send + Sync>;

/// Handlers by exact path; other paths are 404.
#[derive(Clone, Default)]
pub struct Router {
    routes: HashMap<String, Handler>,
}

impl fmt::Debug for Router {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut paths: Vec<&String> = self.routes.keys().collect();
        paths.sort();
        f.debug_struct("Router").field("paths", &paths).finish()
    }
}

impl Router {
    pub fn new() -> Self {
        Self::default()
    }

    /// Serves `path` (exact match, e.g. `/metrics`) with `handler`,
    /// replacing an earlier handler of that path.
    pub fn route<F, Fut>(mut self, path: &str, handler: F) -> Self
    where
        F: Fn(Request) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Response> + Send + 'static,
    {
        let handler: Handler = Arc::new(move |req| Box::pin(handler(req)));
        self.routes.insert(path.to_string(), handler);
        self
    }

    /// Adds `other`'s routes; on the same path `other` wins.
    pub fn merge(mut self, other: Router) -> Self {
        self.routes.extend(other.routes);
        self
    }

    /// The paths served, sorted.
    pub fn paths(&self) -> Vec<String> {
        let mut paths: Vec<String> = self.routes.keys().cloned().collect();
        paths.sort();
        paths
    }

    /// The response to `req` (404 for an unknown path, 503 when the
    /// handler takes longer than [`CLIENT_TIMEOUT`]).
    pub async fn handle(&self, req: Request) -> Response {
        let Some(handler) = self.routes.get(&req.path) else {
            return Response::not_found();
        };
        match tokio::time::timeout(CLIENT_TIMEOUT, handler(req)).await {
            Ok(response) => response,
            Err(_) => Response::text(503, "the handler timed out\n"),
        }
    }
}

/// Serves `router` on `listener` until `shutdown` completes, then stops
/// accepting and drops open connections. Accepted connections get
/// `TCP_NODELAY`; failed accepts are logged and retried.
pub async fn serve(listener: TcpListener, router: Router, shutdown: impl Future<Output = ()>) {
    serve_with_timeout(listener, router, shutdown, CLIENT_TIMEOUT).await;
}

async fn serve_with_timeout(
    listener: TcpListener,
    router: Router,
    shutdown: impl Future<Output = ()>,
    timeout: Duration,
) {
    let router = Arc::new(router);
    let mut connections = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            accepted = listener.accept() => match accepted {
                Ok((stream, _peer)) => {
                    let _ = stream.set_nodelay(true);
                    let router = Arc::clone(&router);
                    connections.spawn(async move { connection(stream, &router, timeout).await });
                }
                Err(e) => {
                    // Out of file descriptors, a connection reset before
                    // accept: wait a little instead of spinning.
                    tracing::warn!("HTTP accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
        }
    }
    connections.shutdown().await;
}

/// Why a request head could not be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    pub status: u16,
    pub reason: String,
}

impl Rejection {
    fn new(status: u16, reason: impl Into<String>) -> Self {
        Self {
            status,
            reason: reason.into(),
        }
    }

    fn bad(reason: impl Into<String>) -> Self {
        Self::new(400, reason)
    }
}

/// Answers one request on `stream`, then closes it.
async fn connection(mut stream: TcpStream, router: &Router, timeout: Duration) {
    let head = tokio::time::timeout(timeout, read_head(&mut stream)).await;
    let (method, response) = match head {
        Err(_) => (None, Response::text(408, "request timed out\n")),
        Ok(Err(Some(rejection))) => (None, rejection_response(&rejection)),
        // The client closed without sending anything, or the socket failed.
        Ok(Err(None)) => return,
        Ok(Ok(head)) => match parse_request(&head) {
            Ok(req) => (Some(req.method), router.handle(req).await),
            Err(rejection) => (None, rejection_response(&rejection)),
        },
    };
    let bytes = encode_response(&response, method == Some(Method::Head));
    let write = async {
        stream.write_all(&bytes).await?;
        stream.shutdown().await
    };
    if let Ok(Err(e)) = tokio::time::timeout(timeout, write).await {
        tracing::debug!("writing an HTTP response: {e}");
        return;
    }
    // Lingering close: read what the client still sends (a body, the
    // rest of an oversized head) until it closes, so that closing with
    // unread data does not reset the connection before the client has
    // read the response.
    let mut sink = [0u8; 4096];
    let mut drained = 0;
    let drain = async {
        while drained < LINGER_BYTES {
            match stream.read(&mut sink).await {
                Ok(0) | Err(_) => break,
                Ok(n) => drained += n,
            }
        }
    };
    let _ = tokio::time::timeout(LINGER, drain).await;
}

fn rejection_response(rejection: &Rejection) -> Response {
    Response::text(rejection.status, format!("{}\n", rejection.reason))
}

/// Reads up to the end of the head (the empty line). `Err(None)`: the
/// connection closed before any byte or failed.
async fn read_head(stream: &mut TcpStream) -> Result<Vec<u8>, Option<Rejection>> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 2048];
    loop {
        let n = match stream.read(&mut chunk).await {
            Ok(n) => n,
            Err(e) => {
                tracing::debug!("reading an HTTP request: {e}");
                return Err(None);
            }
        };
        if n == 0 {
            return if buf.is_empty() {
                Err(None)
            } else {
                Err(Some(Rejection::bad("incomplete request head")))
            };
        }
        let searched_from = buf.len().saturating_sub(3);
        buf.extend_from_slice(&chunk[..n]);
        if let Some(end) = head_end(&buf, searched_from) {
            if end > MAX_HEAD {
                break;
            }
            buf.truncate(end);
            return Ok(buf);
        }
        if buf.len() > MAX_HEAD {
            break;
        }
    }
    Err(Some(Rejection::new(
        431,
        format!("request head larger than {MAX_HEAD} bytes"),
    )))
}

/// The length of the head including its final empty line (`\r\n\r\n`, or
/// bare `\n\n`), searching from `from`.
fn head_end(buf: &[u8], from: usize) -> Option<usize> {
    (from..buf.len()).find_map(|i| {
        if buf[i..].starts_with(b"\r\n\r\n") {
            Some(i + 4)
        } else if buf[i..].starts_with(b"\n\n") {
            Some(i + 2)
        } else if buf[i..].starts_with(b"\n\r\n") {
            Some(i + 3)
        } else {
            None
        }
    })
}

/// Parses a request head (request line and headers, ending with the empty
/// line or not).
pub fn parse_request(head: &[u8]) -> Result<Request, Rejection> {
    let text =
        std::str::from_utf8(head).map_err(|_| Rejection::bad("request head is not UTF-8"))?;
    let mut lines = text.split('\n').map(|l| l.strip_suffix('\r').unwrap_or(l));
    let line = lines.next().unwrap_or_default();
    let mut parts = line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(Rejection::bad("malformed request line"));
    };
    if method.is_empty() || !method.bytes().all(is_token) {
        return Err(Rejection::bad("malformed method"));
    }
    let Some(minor) = version.strip_prefix("HTTP/1.") else {
        return Err(Rejection::bad(format!("unsupported version {version:?}")));
    };
    if minor.len() != 1 || !minor.bytes().all(|b| b.is_ascii_digit()) {
        return Err(Rejection::bad(format!("unsupported version {version:?}")));
    }
    if !target.starts_with('/') || target.bytes().any(|b| b.is_ascii_control()) {
        return Err(Rejection::bad("the request target must be a path"));
    }
    let mut headers = Vec::new();
    for line in lines {
        if line.is_empty() {
            break;
        }
        let Some((name, value)) = line.split_once(':') else {
            return Err(Rejection::bad("malformed header line"));
        };
        if name.is_empty() || !name.bytes().all(is_token) {
            return Err(Rejection::bad("malformed header name"));
        }
        headers.push((
            name.to_ascii_lowercase(),
            value.trim_matches([' ', '\t']).to_string(),
        ));
    }
    let method = match method {
        "GET" => Method::Get,
        "HEAD" => Method::Head,
        other => {
            return Err(Rejection::new(
                405,
                format!("method {other} not allowed; use GET or HEAD"),
            ));
        }
    };
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    Ok(Request {
        method,
        path: path.to_string(),
        query: query.to_string(),
        headers,
    })
}

/// An RFC 9110 token character.
fn is_token(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

fn reason_phrase(status: u16) -> &'static str {
    match status {
        200 => "OK",
        204 => "No Content",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "",
    }
}

/// The bytes of a response (headers only for `HEAD`, with the
/// `Content-Length` the body would have).
pub fn encode_response(response: &Response, head_only: bool) -> Vec<u8> {
    let mut out = format!(
        "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: close\r\n",
        response.status,
        reason_phrase(response.status),
        response.content_type,
        response.body.len()
    );
    if response.status == 405 {
        out.push_str("Allow: GET, HEAD\r\n");
    }
    out.push_str("\r\n");
    let mut out = out.into_bytes();
    if !head_only {
        out.extend_from_slice(&response.body);
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn parses_get_with_query_and_headers() {
        let req = parse_request(b"GET /metrics?x=1&y HTTP/1.1\r\nHost: a\r\nAccept:  */* \r\n\r\n")
            .unwrap();
        assert_eq!(req.method, Method::Get);
        assert_eq!(req.path, "/metrics");
        assert_eq!(req.query, "x=1&y");
        assert_eq!(
            req.headers,
            vec![("host".into(), "a".into()), ("accept".into(), "*/*".into())]
        );
        let req = parse_request(b"HEAD / HTTP/1.0\n\n").unwrap();
        assert_eq!(req.method, Method::Head);
        assert_eq!(req.query, "");
    }

    #[test]
    fn rejects_malformed() {
        let heads: &[&[u8]] = &[
            b"\r\n\r\n",
            b"GET\r\n\r\n",
            b"GET /\r\n\r\n",
            b"GET / HTTP/1.1 extra\r\n\r\n",
            b"GET  / HTTP/1.1\r\n\r\n",
            b"GET / HTTP/2.0\r\n\r\n",
            b"GET / HTTP/1.12\r\n\r\n",
            b"GET http://x/ HTTP/1.1\r\n\r\n",
            b"GET / HTTP/1.1\r\nno colon\r\n\r\n",
            b"GET / HTTP/1.1\r\nbad name: x\r\n\r\n",
            b"GET / HTTP/1.1\r\n: x\r\n\r\n",
            b"G(T / HTTP/1.1\r\n\r\n",
            b"GET /\xff HTTP/1.1\r\n\r\n",
        ];
        for head in heads {
            let err = parse_request(head).unwrap_err();
            assert_eq!(err.status, 400, "{:?}", String::from_utf8_lossy(head));
        }
    }

    #[test]
    fn other_methods_are_405() {
        let err = parse_request(b"POST /metrics HTTP/1.1\r\n\r\n").unwrap_err();
        assert_eq!(err.status, 405);
        let bytes = encode_response(&rejection_response(&err), false);
        let text = String::from_utf8(bytes).unwrap();
        assert!(
            text.starts_with("HTTP/1.1 405 Method Not Allowed\r\n"),
            "{text}"
        );
        assert!(text.contains("\r\nAllow: GET, HEAD\r\n"), "{text}");
    }

    #[test]
    fn head_has_length_but_no_body() {
        let r = Response::text(200, "hello");
        let full = String::from_utf8(encode_response(&r, false)).unwrap();
        let head = String::from_utf8(encode_response(&r, true)).unwrap();
        assert!(full.ends_with("\r\n\r\nhello"));
        assert!(head.ends_with("\r\n\r\n"));
        assert!(head.contains("Content-Length: 5\r\n"));
        assert!(head.contains("Connection: close\r\n"));
    }

    /// Sends `request` to a server of `router` and returns the whole reply.
    async fn exchange(addr: std::net::SocketAddr, request: &[u8]) -> String {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(request).await.unwrap();
        let mut out = Vec::new();
        tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out))
            .await
            .unwrap()
            .unwrap();
        String::from_utf8(out).unwrap()
    }

    #[tokio::test]
    async fn serves_routes() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let router = Router::new().route("/hi", |req: Request| async move {
            Response::text(200, format!("q={}", req.query))
        });
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(serve(listener, router, async {
            let _ = stopped.await;
        }));

        let r = exchange(addr, b"GET /hi?a=b HTTP/1.1\r\nHost: x\r\n\r\n").await;
        assert!(r.starts_with("HTTP/1.1 200 OK\r\n"), "{r}");
        assert!(r.contains("Content-Length: 5\r\n"), "{r}");
        assert!(r.ends_with("\r\n\r\nq=a=b"), "{r}");

        let r = exchange(addr, b"HEAD /hi HTTP/1.1\r\n\r\n").await;
        assert!(r.starts_with("HTTP/1.1 200 OK\r\n"), "{r}");
        assert!(r.contains("Content-Length: 2\r\n"), "{r}");
        assert!(r.ends_with("\r\n\r\n"), "{r}");

        let r = exchange(addr, b"GET /nope HTTP/1.1\r\n\r\n").await;
        assert!(r.starts_with("HTTP/1.1 404 "), "{r}");
        let r = exchange(addr, b"DELETE /hi HTTP/1.1\r\n\r\n").await;
        assert!(r.starts_with("HTTP/1.1 405 "), "{r}");
        let r = exchange(addr, b"garbage\r\n\r\n").await;
        assert!(r.starts_with("HTTP/1.1 400 "), "{r}");
        let mut big = b"GET /hi HTTP/1.1\r\nX: ".to_vec();
        big.extend(std::iter::repeat_n(b'a', MAX_HEAD + 10));
        big.extend_from_slice(b"\r\n\r\n");
        let r = exchange(addr, &big).await;
        assert!(r.starts_with("HTTP/1.1 431 "), "{r}");

        // A client closing its side mid-head gets a 400.
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(b"GET /hi HTT").await.unwrap();
        s.shutdown().await.unwrap();
        let mut out = Vec::new();
        s.read_to_end(&mut out).await.unwrap();
        assert!(String::from_utf8(out).unwrap().starts_with("HTTP/1.1 400 "));

        stop.send(()).unwrap();
        tokio::time::timeout(Duration::from_secs(5), server)
            .await
            .unwrap()
            .unwrap();
        assert!(TcpStream::connect(addr).await.is_err());
    }

    #[tokio::test]
    async fn slow_clients_time_out() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(serve_with_timeout(
            listener,
            Router::new(),
            std::future::pending(),
            Duration::from_millis(200),
        ));
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(b"GET / HTTP/1.1\r\n").await.unwrap();
        let mut out = Vec::new();
        s.read_to_end(&mut out).await.unwrap();
        assert!(String::from_utf8(out).unwrap().starts_with("HTTP/1.1 408 "));
        server.abort();
    }
}
