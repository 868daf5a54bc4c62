//! Fetching RCML documents: over HTTP(S) with Restcomm's parameters, or from `file:`
//! URLs (standalone mode's documents beside the manifests) with `$core_<Name>`
//! substitution.
//!
//! The HTTP client is hyper-util's (legacy pooled client) over hyper-rustls with ring,
//! not reqwest: both crates and rustls are already compiled for kube, the edge already
//! uses hyper for its own server, and RCML needs none of reqwest's extras (redirects,
//! cookies, compression, JSON). That keeps the edge's compile and binary lean.
//!
//! Every way a fetch can fail is its own [`FetchError`] variant with a short metric
//! label ([`FetchError::kind`]); the caller decides what follows (`voiceFallbackUrl` or
//! a clean hang-up). Nothing here panics on what a server or a file contains.

use std::io::ErrorKind;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::header::{ACCEPT, CONTENT_LENGTH, CONTENT_TYPE, USER_AGENT};
use hyper_rustls::{ConfigBuilderExt, HttpsConnector};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use switchyard_routing::resource::HttpMethod;
use thiserror::Error;
use tokio::io::AsyncReadExt;
use tracing::{debug, warn};
use url::Url;

use super::document::{self, Document, MAX_DOCUMENT_BYTES, RcmlError};
use crate::metrics::METRICS;

/// Why a document is fetched: the label of the fetch metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Purpose {
    /// A number's `voiceUrl`, for a new call.
    Voice,
    /// `voiceFallbackUrl`, after the voice document failed.
    VoiceFallback,
    /// A number's `referUrl`, when a party presses Blind Transfer.
    Refer,
    /// A `<Dial>`'s `action`, with the Dial's outcome.
    DialAction,
    /// A `<Redirect>`'s URL.
    Redirect,
}

impl Purpose {
    pub fn as_str(self) -> &'static str {
        match self {
            Purpose::Voice => "voice",
            Purpose::VoiceFallback => "voice_fallback",
            Purpose::Refer => "refer",
            Purpose::DialAction => "dial_action",
            Purpose::Redirect => "redirect",
        }
    }
}

impl std::fmt::Display for Purpose {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A document and where it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fetched {
    /// The URL fetched (without the parameters added to a GET's query): the base for the
    /// document's relative `action` and `Redirect` URLs.
    pub url: String,
    pub document: Document,
}

#[derive(Debug, Error)]
pub enum FetchError {
    #[error("invalid RCML URL {url:?}: {reason}")]
    InvalidUrl { url: String, reason: String },
    #[error("RCML URL {url} has scheme {scheme:?}: only http, https and file are fetched")]
    UnsupportedScheme { url: String, scheme: String },
    #[error("setting up the HTTP client: {0}")]
    Client(String),
    #[error("connection refused by {url}")]
    ConnectionRefused { url: String },
    #[error("cannot connect to {url}: {message}")]
    Connect { url: String, message: String },
    #[error("fetching {url}: {message}")]
    Http { url: String, message: String },
    #[error("no answer from {url} within {timeout:?}")]
    Timeout { url: String, timeout: Duration },
    #[error("{url} answered HTTP {status}")]
    Status { url: String, status: u16 },
    #[error("{url} sent more than {limit} bytes")]
    TooLarge { url: String, limit: usize },
    #[error("{url} sent a document that is not UTF-8")]
    NotUtf8 { url: String },
    #[error("reading {url}: {source}")]
    File {
        url: String,
        #[source]
        source: std::io::Error,
    },
    #[error("RCML from {url}: {source}")]
    Parse {
        url: String,
        #[source]
        source: RcmlError,
    },
}

impl FetchError {
    /// The `kind` label of `switchyard_edge_rcml_errors_total`.
    pub fn kind(&self) -> &'static str {
        match self {
            FetchError::InvalidUrl { .. } => "url",
            FetchError::UnsupportedScheme { .. } => "scheme",
            FetchError::Client(_) => "client",
            FetchError::ConnectionRefused { .. } => "refused",
            FetchError::Connect { .. } => "connect",
            FetchError::Http { .. } => "fetch",
            FetchError::Timeout { .. } => "timeout",
            FetchError::Status { .. } => "status",
            FetchError::TooLarge { .. } => "too_large",
            FetchError::NotUtf8 { .. } => "encoding",
            FetchError::File { .. } => "file",
            FetchError::Parse { .. } => "parse",
        }
    }
}

type HttpClient = Client<HttpsConnector<HttpConnector>, Full<Bytes>>;

/// Fetches RCML documents; one per edge, shared by all calls (it pools connections).
#[derive(Clone)]
pub struct Fetcher {
    client: HttpClient,
    timeout: Duration,
}

impl std::fmt::Debug for Fetcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fetcher")
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

const USER_AGENT_VALUE: &str = concat!("switchyard-edge/", env!("CARGO_PKG_VERSION"));

impl Fetcher {
    /// `timeout` bounds a whole HTTP fetch: connecting, the answer and its body.
    pub fn new(timeout: Duration) -> Result<Self, FetchError> {
        if timeout.is_zero() {
            // Every fetch would time out: a configuration mistake worth refusing early.
            return Err(FetchError::Client(
                "the fetch timeout must be above zero".into(),
            ));
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| FetchError::Client(e.to_string()))?;
        // The system's CA certificates (the image ships them). Without any, plain http
        // still works and https fails per fetch, which beats an edge that cannot start.
        let tls = match builder.clone().with_native_roots() {
            Ok(builder) => builder.with_no_client_auth(),
            Err(e) => {
                warn!(error = %e, "no CA certificates found: https RCML URLs will fail");
                builder
                    .with_root_certificates(rustls::RootCertStore::empty())
                    .with_no_client_auth()
            }
        };
        let mut http = HttpConnector::new();
        http.enforce_http(false); // the https connector wraps it and checks the scheme
        http.set_nodelay(true);
        http.set_connect_timeout(Some(timeout));
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        let client = Client::builder(TokioExecutor::new()).build(connector);
        Ok(Fetcher { client, timeout })
    }

    /// Fetches and parses the document at `url`. `method` and `params` apply to http(s):
    /// GET puts `params` in the query string, POST in a form body. A `file:` document gets
    /// `$core_<Name>` replaced by the value of param `<Name>` instead.
    pub async fn fetch(
        &self,
        url: &str,
        method: HttpMethod,
        params: &[(String, String)],
        purpose: Purpose,
    ) -> Result<Fetched, FetchError> {
        let started = Instant::now();
        let result = self.fetch_unmeasured(url, method, params).await;
        let elapsed = started.elapsed();
        METRICS
            .rcml_fetch_duration
            .with_label_values(&[purpose.as_str()])
            .observe(elapsed.as_secs_f64());
        match &result {
            Ok(fetched) => debug!(
                url = %fetched.url,
                %purpose,
                %method,
                duration_ms = elapsed.as_millis() as u64,
                verbs = fetched.document.verbs.len(),
                "fetched RCML"
            ),
            Err(error) => {
                METRICS
                    .rcml_errors
                    .with_label_values(&[purpose.as_str(), error.kind()])
                    .inc();
                warn!(
                    url = %redacted(url),
                    %purpose,
                    %method,
                    duration_ms = elapsed.as_millis() as u64,
                    kind = error.kind(),
                    %error,
                    "RCML fetch failed"
                );
            }
        }
        result
    }

    async fn fetch_unmeasured(
        &self,
        url: &str,
        method: HttpMethod,
        params: &[(String, String)],
    ) -> Result<Fetched, FetchError> {
        let mut parsed = parse_url(url)?;
        parsed.set_fragment(None);
        let base = parsed.to_string();
        let xml = match parsed.scheme() {
            "http" | "https" => self.http(parsed, method, params).await?,
            "file" => {
                let raw = read_file(&parsed).await?;
                substitute_core(&raw, params)
            }
            scheme => {
                return Err(FetchError::UnsupportedScheme {
                    url: url.to_owned(),
                    scheme: scheme.to_owned(),
                });
            }
        };
        let document = document::parse(&xml).map_err(|source| FetchError::Parse {
            url: base.clone(),
            source,
        })?;
        Ok(Fetched {
            url: base,
            document,
        })
    }

    async fn http(
        &self,
        mut url: Url,
        method: HttpMethod,
        params: &[(String, String)],
    ) -> Result<String, FetchError> {
        let shown = url.to_string();
        if !url.username().is_empty() || url.password().is_some() {
            // Sending them would need Basic auth; logging them would leak them.
            return Err(FetchError::InvalidUrl {
                url: redacted(&shown),
                reason: "credentials in RCML URLs are not supported".into(),
            });
        }
        let body = match method {
            HttpMethod::Get => {
                if !params.is_empty() {
                    url.query_pairs_mut().extend_pairs(params);
                }
                Full::new(Bytes::new())
            }
            HttpMethod::Post => {
                let form = form_urlencoded::Serializer::new(String::new())
                    .extend_pairs(params)
                    .finish();
                Full::new(Bytes::from(form))
            }
        };
        let invalid = |e: &dyn std::fmt::Display| FetchError::InvalidUrl {
            url: shown.clone(),
            reason: e.to_string(),
        };
        let mut request = hyper::Request::builder()
            .method(method.as_str())
            .uri(url.as_str())
            .header(USER_AGENT, USER_AGENT_VALUE)
            .header(ACCEPT, "application/xml, text/xml");
        if method == HttpMethod::Post {
            request = request.header(CONTENT_TYPE, "application/x-www-form-urlencoded");
        }
        let request = request.body(body).map_err(|e| invalid(&e))?;

        let exchange = async {
            let response = self
                .client
                .request(request)
                .await
                .map_err(|e| request_error(&shown, &e))?;
            let status = response.status();
            if !status.is_success() {
                return Err(FetchError::Status {
                    url: shown.clone(),
                    status: status.as_u16(),
                });
            }
            let too_large = || FetchError::TooLarge {
                url: shown.clone(),
                limit: MAX_DOCUMENT_BYTES,
            };
            // Refuse a declared oversize at once; count as the body streams otherwise.
            let declared = response
                .headers()
                .get(CONTENT_LENGTH)
                .and_then(|value| value.to_str().ok())
                .and_then(|value| value.parse::<u64>().ok());
            if declared.is_some_and(|length| length > MAX_DOCUMENT_BYTES as u64) {
                return Err(too_large());
            }
            let mut body = response.into_body();
            let mut bytes = Vec::new();
            while let Some(frame) = body.frame().await {
                let frame = frame.map_err(|e| FetchError::Http {
                    url: shown.clone(),
                    message: e.to_string(),
                })?;
                if let Some(data) = frame.data_ref() {
                    if bytes.len() + data.len() > MAX_DOCUMENT_BYTES {
                        return Err(too_large());
                    }
                    bytes.extend_from_slice(data);
                }
            }
            Ok(bytes)
        };
        let bytes = tokio::time::timeout(self.timeout, exchange)
            .await
            .map_err(|_| FetchError::Timeout {
                url: shown.clone(),
                timeout: self.timeout,
            })??;
        String::from_utf8(bytes).map_err(|_| FetchError::NotUtf8 { url: shown })
    }
}

/// Tells a refused connection (nothing listens: a wrong port or a server down) from other
/// connection failures (DNS, TLS, unreachable) and from failures after connecting.
fn request_error(url: &str, error: &hyper_util::client::legacy::Error) -> FetchError {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
    let mut refused = false;
    let mut message = error.to_string();
    while let Some(cause) = source {
        if let Some(io) = cause.downcast_ref::<std::io::Error>()
            && io.kind() == ErrorKind::ConnectionRefused
        {
            refused = true;
        }
        // The innermost cause says most ("tcp connect error" alone does not).
        message = cause.to_string();
        source = cause.source();
    }
    if refused {
        FetchError::ConnectionRefused {
            url: url.to_owned(),
        }
    } else if error.is_connect() {
        FetchError::Connect {
            url: url.to_owned(),
            message,
        }
    } else {
        FetchError::Http {
            url: url.to_owned(),
            message,
        }
    }
}

fn parse_url(url: &str) -> Result<Url, FetchError> {
    Url::parse(url.trim()).map_err(|e| FetchError::InvalidUrl {
        url: redacted(url),
        reason: e.to_string(),
    })
}

/// The URL with any password hidden, for logs and errors.
fn redacted(url: &str) -> String {
    match Url::parse(url) {
        Ok(mut parsed) if parsed.password().is_some() => {
            let _ = parsed.set_password(Some("redacted"));
            parsed.to_string()
        }
        _ => url.to_owned(),
    }
}

/// Resolves a document's relative `action` or `Redirect` URL against the document's URL
/// (as an HTML link is resolved); an absolute `reference` stands as it is. The result
/// must be http, https or file.
pub fn resolve(base: &str, reference: &str) -> Result<String, FetchError> {
    let base = parse_url(base)?;
    let resolved = base
        .join(reference.trim())
        .map_err(|e| FetchError::InvalidUrl {
            url: redacted(reference),
            reason: e.to_string(),
        })?;
    match resolved.scheme() {
        "http" | "https" | "file" => Ok(resolved.to_string()),
        scheme => Err(FetchError::UnsupportedScheme {
            url: redacted(resolved.as_str()),
            scheme: scheme.to_owned(),
        }),
    }
}

/// Reads a `file:` document, refusing one over the size limit without reading it all.
async fn read_file(url: &Url) -> Result<String, FetchError> {
    let shown = url.to_string();
    let path = url.to_file_path().map_err(|()| FetchError::InvalidUrl {
        url: shown.clone(),
        reason: "not a local absolute path".into(),
    })?;
    let io_error = |source| FetchError::File {
        url: shown.clone(),
        source,
    };
    let file = tokio::fs::File::open(&path).await.map_err(io_error)?;
    let mut bytes = Vec::new();
    file.take(MAX_DOCUMENT_BYTES as u64 + 1)
        .read_to_end(&mut bytes)
        .await
        .map_err(io_error)?;
    if bytes.len() > MAX_DOCUMENT_BYTES {
        return Err(FetchError::TooLarge {
            url: shown,
            limit: MAX_DOCUMENT_BYTES,
        });
    }
    String::from_utf8(bytes).map_err(|_| FetchError::NotUtf8 { url: shown })
}

/// Replaces each `$core_<Name>` (Name: ASCII letters and digits, as Restcomm's parameter
/// names are) with the XML-escaped value of param `<Name>`, so a value cannot change the
/// document's structure. An unknown name becomes empty, as in Visual Designer.
pub fn substitute_core(text: &str, params: &[(String, String)]) -> String {
    const MARKER: &str = "$core_";
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find(MARKER) {
        out.push_str(&rest[..at]);
        let after = &rest[at + MARKER.len()..];
        let name_len = after
            .find(|c: char| !c.is_ascii_alphanumeric())
            .unwrap_or(after.len());
        let name = &after[..name_len];
        if name.is_empty() {
            // A lone "$core_" names nothing: keep it as written.
            out.push_str(MARKER);
        } else {
            match params.iter().find(|(key, _)| key == name) {
                Some((_, value)) => out.push_str(&quick_xml::escape::escape(value.as_str())),
                None => debug!(variable = %name, "unknown $core_ variable: substituted empty"),
            }
        }
        rest = &after[name_len..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};
    use tokio::sync::mpsc;

    use super::*;
    use crate::rcml::document::{DialTarget, Verb};

    /// A request as the test server saw it.
    #[derive(Debug)]
    struct Seen {
        method: String,
        target: String,
        headers: Vec<(String, String)>,
        body: String,
    }

    impl Seen {
        fn header(&self, name: &str) -> Option<&str> {
            self.headers
                .iter()
                .find(|(key, _)| key.eq_ignore_ascii_case(name))
                .map(|(_, value)| value.as_str())
        }
    }

    /// A real HTTP/1.1 server on 127.0.0.1 that answers every request with `response`
    /// (raw bytes, then closes) and reports what it received.
    async fn serve(response: Vec<u8>) -> (String, mpsc::UnboundedReceiver<Seen>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let (seen_tx, seen_rx) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let response = response.clone();
                let seen_tx = seen_tx.clone();
                tokio::spawn(async move {
                    if let Some((seen, mut stream)) = read_request(stream).await {
                        let _ = seen_tx.send(seen);
                        let _ = stream.write_all(&response).await;
                        let _ = stream.shutdown().await;
                    }
                });
            }
        });
        (base, seen_rx)
    }

    async fn read_request(mut stream: TcpStream) -> Option<(Seen, TcpStream)> {
        let mut buffer = Vec::new();
        let header_end = loop {
            let mut chunk = [0u8; 4096];
            let n = stream.read(&mut chunk).await.ok()?;
            if n == 0 {
                return None;
            }
            buffer.extend_from_slice(&chunk[..n]);
            if let Some(at) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
                break at;
            }
        };
        let head = String::from_utf8(buffer[..header_end].to_vec()).ok()?;
        let mut lines = head.split("\r\n");
        let mut request_line = lines.next()?.split(' ');
        let method = request_line.next()?.to_owned();
        let target = request_line.next()?.to_owned();
        let headers: Vec<(String, String)> = lines
            .filter_map(|line| line.split_once(':'))
            .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
            .collect();
        let length: usize = headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
            .and_then(|(_, v)| v.parse().ok())
            .unwrap_or(0);
        let mut body = buffer[header_end + 4..].to_vec();
        while body.len() < length {
            let mut chunk = [0u8; 4096];
            let n = stream.read(&mut chunk).await.ok()?;
            if n == 0 {
                break;
            }
            body.extend_from_slice(&chunk[..n]);
        }
        let body = String::from_utf8(body).ok()?;
        Some((
            Seen {
                method,
                target,
                headers,
                body,
            },
            stream,
        ))
    }

    fn answer(status: &str, body: &[u8]) -> Vec<u8> {
        let mut response = format!(
            "HTTP/1.1 {status}\r\nContent-Type: text/xml\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        )
        .into_bytes();
        response.extend_from_slice(body);
        response
    }

    const HANGUP: &str = "<?xml version=\"1.0\"?><Response><Hangup/></Response>";

    fn params() -> Vec<(String, String)> {
        vec![
            ("From".into(), "+1 555".into()),
            ("To".into(), "a&b=c".into()),
            ("CallerName".into(), "Zoë".into()),
        ]
    }

    fn fetcher() -> Fetcher {
        Fetcher::new(Duration::from_secs(5)).unwrap()
    }

    fn errors(purpose: Purpose, kind: &str) -> u64 {
        METRICS
            .rcml_errors
            .with_label_values(&[purpose.as_str(), kind])
            .get()
    }

    fn fetches(purpose: Purpose) -> u64 {
        METRICS
            .rcml_fetch_duration
            .with_label_values(&[purpose.as_str()])
            .get_sample_count()
    }

    #[tokio::test]
    async fn get_appends_params_to_the_query_string() {
        let (base, mut seen) = serve(answer("200 OK", HANGUP.as_bytes())).await;
        let before = fetches(Purpose::Voice);
        let url = format!("{base}/apps/voice.xml?app=1#fragment");
        let fetched = fetcher()
            .fetch(&url, HttpMethod::Get, &params(), Purpose::Voice)
            .await
            .unwrap();
        assert_eq!(fetched.url, format!("{base}/apps/voice.xml?app=1"));
        assert_eq!(fetched.document.verbs, [Verb::Hangup]);
        let request = seen.recv().await.unwrap();
        assert_eq!(request.method, "GET");
        assert_eq!(
            request.target,
            "/apps/voice.xml?app=1&From=%2B1+555&To=a%26b%3Dc&CallerName=Zo%C3%AB"
        );
        assert_eq!(request.body, "");
        assert!(
            request
                .header("user-agent")
                .unwrap()
                .starts_with("switchyard-edge/")
        );
        assert!(fetches(Purpose::Voice) > before);
    }

    #[tokio::test]
    async fn post_sends_params_as_a_form() {
        let (base, mut seen) = serve(answer("200 OK", HANGUP.as_bytes())).await;
        let fetched = fetcher()
            .fetch(
                &format!("{base}/refer"),
                HttpMethod::Post,
                &params(),
                Purpose::Refer,
            )
            .await
            .unwrap();
        assert_eq!(fetched.document.verbs, [Verb::Hangup]);
        let request = seen.recv().await.unwrap();
        assert_eq!(request.method, "POST");
        assert_eq!(request.target, "/refer");
        assert_eq!(
            request.header("content-type"),
            Some("application/x-www-form-urlencoded")
        );
        assert_eq!(
            request.body,
            "From=%2B1+555&To=a%26b%3Dc&CallerName=Zo%C3%AB"
        );
    }

    #[tokio::test]
    async fn non_2xx_is_a_status_error() {
        let (base, _seen) = serve(answer("503 Service Unavailable", b"busy")).await;
        let before = errors(Purpose::Voice, "status");
        let error = fetcher()
            .fetch(&base, HttpMethod::Post, &[], Purpose::Voice)
            .await
            .unwrap_err();
        assert!(
            matches!(error, FetchError::Status { status: 503, .. }),
            "{error:?}"
        );
        assert_eq!(errors(Purpose::Voice, "status"), before + 1);
        let exposed = METRICS.render();
        assert!(
            exposed
                .contains("switchyard_edge_rcml_errors_total{kind=\"status\",purpose=\"voice\"}")
        );
        assert!(
            exposed
                .contains("switchyard_edge_rcml_fetch_duration_seconds_bucket{purpose=\"voice\"")
        );
    }

    #[test]
    fn a_zero_timeout_is_refused() {
        assert!(matches!(
            Fetcher::new(Duration::ZERO),
            Err(FetchError::Client(_))
        ));
    }

    #[tokio::test]
    async fn a_silent_server_times_out() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/slow", listener.local_addr().unwrap());
        // Accept and hold connections without ever answering.
        let holder = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((stream, _)) = listener.accept().await {
                held.push(stream);
            }
        });
        let before = errors(Purpose::VoiceFallback, "timeout");
        let started = Instant::now();
        let error = Fetcher::new(Duration::from_millis(300))
            .unwrap()
            .fetch(&url, HttpMethod::Get, &[], Purpose::VoiceFallback)
            .await
            .unwrap_err();
        assert!(matches!(error, FetchError::Timeout { .. }), "{error:?}");
        assert!(started.elapsed() < Duration::from_secs(3));
        assert_eq!(errors(Purpose::VoiceFallback, "timeout"), before + 1);
        holder.abort();
    }

    #[tokio::test]
    async fn connection_refused() {
        // A port that was just free: nothing listens there.
        let port = TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let before = errors(Purpose::Refer, "refused");
        let error = fetcher()
            .fetch(
                &format!("http://127.0.0.1:{port}/"),
                HttpMethod::Post,
                &[],
                Purpose::Refer,
            )
            .await
            .unwrap_err();
        assert!(
            matches!(error, FetchError::ConnectionRefused { .. }),
            "{error:?}"
        );
        assert_eq!(errors(Purpose::Refer, "refused"), before + 1);
    }

    #[tokio::test]
    async fn oversized_bodies_are_refused() {
        let big = format!(
            "<Response>{}</Response>",
            " ".repeat(MAX_DOCUMENT_BYTES + 10)
        );
        let before = errors(Purpose::Redirect, "too_large");
        // Declared by Content-Length.
        let (declared, _seen) = serve(answer("200 OK", big.as_bytes())).await;
        let error = fetcher()
            .fetch(&declared, HttpMethod::Get, &[], Purpose::Redirect)
            .await
            .unwrap_err();
        assert!(matches!(error, FetchError::TooLarge { .. }), "{error:?}");
        // Undeclared: the body runs until the server closes.
        let mut streamed =
            b"HTTP/1.1 200 OK\r\nContent-Type: text/xml\r\nConnection: close\r\n\r\n".to_vec();
        streamed.extend_from_slice(big.as_bytes());
        let (undeclared, _seen) = serve(streamed).await;
        let error = fetcher()
            .fetch(&undeclared, HttpMethod::Get, &[], Purpose::Redirect)
            .await
            .unwrap_err();
        assert!(matches!(error, FetchError::TooLarge { .. }), "{error:?}");
        assert_eq!(errors(Purpose::Redirect, "too_large"), before + 2);
    }

    #[tokio::test]
    async fn a_body_that_is_not_utf8_is_refused() {
        let (base, _seen) = serve(answer("200 OK", b"<Response>\xff\xfe</Response>")).await;
        let before = errors(Purpose::Voice, "encoding");
        let error = fetcher()
            .fetch(&base, HttpMethod::Get, &[], Purpose::Voice)
            .await
            .unwrap_err();
        assert!(matches!(error, FetchError::NotUtf8 { .. }), "{error:?}");
        assert_eq!(errors(Purpose::Voice, "encoding"), before + 1);
    }

    #[tokio::test]
    async fn parse_errors_wrap_the_rcml_error() {
        let body = b"<Response><Say>hello</Say></Response>";
        let (base, _seen) = serve(answer("200 OK", body)).await;
        let before = errors(Purpose::DialAction, "parse");
        let error = fetcher()
            .fetch(&base, HttpMethod::Post, &[], Purpose::DialAction)
            .await
            .unwrap_err();
        match &error {
            FetchError::Parse { source, .. } => {
                assert_eq!(*source, RcmlError::UnsupportedVerb { verb: "Say".into() })
            }
            other => panic!("expected a parse error, got {other:?}"),
        }
        assert!(error.to_string().contains("<Say>"), "{error}");
        assert_eq!(errors(Purpose::DialAction, "parse"), before + 1);
    }

    #[tokio::test]
    async fn urls_that_cannot_be_fetched() {
        let f = fetcher();
        let error = f
            .fetch(
                "ftp://example.com/a.xml",
                HttpMethod::Get,
                &[],
                Purpose::Voice,
            )
            .await
            .unwrap_err();
        assert!(
            matches!(error, FetchError::UnsupportedScheme { .. }),
            "{error:?}"
        );
        let error = f
            .fetch("not a url", HttpMethod::Get, &[], Purpose::Voice)
            .await
            .unwrap_err();
        assert!(matches!(error, FetchError::InvalidUrl { .. }), "{error:?}");
        let error = f
            .fetch(
                "http://user:secret@127.0.0.1:1/",
                HttpMethod::Get,
                &[],
                Purpose::Voice,
            )
            .await
            .unwrap_err();
        assert!(matches!(error, FetchError::InvalidUrl { .. }), "{error:?}");
        assert!(!error.to_string().contains("secret"), "{error}");
    }

    /// A fresh directory for one test's files.
    fn scratch_dir(test: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("switchyard-rcml-{test}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn file_url(path: &std::path::Path) -> String {
        Url::from_file_path(path).unwrap().to_string()
    }

    #[tokio::test]
    async fn file_documents_get_core_substitution_escaped() {
        let dir = scratch_dir("substitution");
        let path = dir.join("refer.xml");
        std::fs::write(
            &path,
            "<Response><Dial callerId=\"$core_From\">\
               <Number>$core_ReferTarget</Number>\
               <Sip>sip:$core_Missing$core_Transferor@127.0.0.1</Sip>\
             </Dial></Response>",
        )
        .unwrap();
        let params = vec![
            ("From".into(), "\"Bob\" <sip:bob@x>".into()),
            ("ReferTarget".into(), "</Number></Dial><Hangup/>&".into()),
            ("Transferor".into(), "bob".into()),
        ];
        let before = fetches(Purpose::Refer);
        // The method does not matter for files.
        for method in [HttpMethod::Get, HttpMethod::Post] {
            let fetched = fetcher()
                .fetch(&file_url(&path), method, &params, Purpose::Refer)
                .await
                .unwrap();
            assert_eq!(fetched.url, file_url(&path));
            let [Verb::Dial(dial)] = fetched.document.verbs.as_slice() else {
                panic!("expected one Dial: {:?}", fetched.document);
            };
            assert_eq!(dial.caller_id.as_deref(), Some("\"Bob\" <sip:bob@x>"));
            assert_eq!(
                dial.targets,
                [
                    DialTarget::Number("</Number></Dial><Hangup/>&".into()),
                    DialTarget::Sip("sip:bob@127.0.0.1".into()),
                ]
            );
        }
        assert!(fetches(Purpose::Refer) >= before + 2);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[tokio::test]
    async fn file_errors() {
        let dir = scratch_dir("errors");
        let before = errors(Purpose::Redirect, "file");
        let missing = file_url(&dir.join("missing.xml"));
        let error = fetcher()
            .fetch(&missing, HttpMethod::Post, &[], Purpose::Redirect)
            .await
            .unwrap_err();
        assert!(matches!(error, FetchError::File { .. }), "{error:?}");
        assert_eq!(errors(Purpose::Redirect, "file"), before + 1);

        let big = dir.join("big.xml");
        std::fs::write(&big, " ".repeat(MAX_DOCUMENT_BYTES + 1)).unwrap();
        let error = fetcher()
            .fetch(&file_url(&big), HttpMethod::Post, &[], Purpose::Redirect)
            .await
            .unwrap_err();
        assert!(matches!(error, FetchError::TooLarge { .. }), "{error:?}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// The seed's refer application as shipped: `refer.xml` dials what the transferor
    /// typed, and its relative `action` finds `refer-fallback.xml` beside it.
    #[tokio::test]
    async fn the_example_refer_application_runs_from_files() {
        let apps = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples/apps");
        let apps = apps.canonicalize().unwrap();
        let params =
            crate::rcml::Params::call("CA1", "AC1", "alice", "+1000", "in-progress", "inbound")
                .with("Transferor", "bob")
                .with("ReferTarget", "+15550002");
        let f = fetcher();
        let refer = f
            .fetch(
                &file_url(&apps.join("refer.xml")),
                HttpMethod::Post,
                params.as_slice(),
                Purpose::Refer,
            )
            .await
            .unwrap();
        let [Verb::Dial(dial)] = refer.document.verbs.as_slice() else {
            panic!("{:?}", refer.document);
        };
        assert_eq!(dial.targets, [DialTarget::Number("+15550002".into())]);
        let action = resolve(&refer.url, dial.action.as_deref().unwrap()).unwrap();
        assert_eq!(action, file_url(&apps.join("refer-fallback.xml")));
        let fallback = f
            .fetch(
                &action,
                dial.method,
                params.with("DialCallStatus", "no-answer").as_slice(),
                Purpose::DialAction,
            )
            .await
            .unwrap();
        let [Verb::Dial(dial)] = fallback.document.verbs.as_slice() else {
            panic!("{:?}", fallback.document);
        };
        assert_eq!(
            dial.targets,
            [DialTarget::Sip("sip:bob@127.0.0.1:5071".into())]
        );
    }

    #[test]
    fn substitution_edge_cases() {
        let params = vec![("A".into(), "1".into()), ("AB".into(), "2".into())];
        assert_eq!(
            substitute_core("$core_AB $core_A.$core_", &params),
            "2 1.$core_"
        );
        assert_eq!(substitute_core("$core_Nope!", &params), "!");
        assert_eq!(substitute_core("no variables", &params), "no variables");
        assert_eq!(substitute_core("ü$core_Aü", &params), "ü1ü");
    }

    #[test]
    fn relative_urls_resolve_against_the_document() {
        let http = "https://apps.example.com/voice/refer.xml?x=1";
        assert_eq!(
            resolve(http, "fallback.xml").unwrap(),
            "https://apps.example.com/voice/fallback.xml"
        );
        assert_eq!(
            resolve(http, "/dial/action").unwrap(),
            "https://apps.example.com/dial/action"
        );
        assert_eq!(
            resolve(http, "../up?y=2").unwrap(),
            "https://apps.example.com/up?y=2"
        );
        assert_eq!(
            resolve(http, "http://other.example.com/a").unwrap(),
            "http://other.example.com/a"
        );
        let file = "file:///etc/switchyard/apps/refer.xml";
        assert_eq!(
            resolve(file, "refer-fallback.xml").unwrap(),
            "file:///etc/switchyard/apps/refer-fallback.xml"
        );
        assert_eq!(
            resolve(file, "../other/x.xml").unwrap(),
            "file:///etc/switchyard/other/x.xml"
        );
        assert!(matches!(
            resolve(http, "mailto:a@b"),
            Err(FetchError::UnsupportedScheme { .. })
        ));
        assert!(matches!(
            resolve("relative.xml", "x.xml"),
            Err(FetchError::InvalidUrl { .. })
        ));
    }

    #[test]
    fn purpose_labels() {
        let labels = [
            Purpose::Voice,
            Purpose::VoiceFallback,
            Purpose::Refer,
            Purpose::DialAction,
            Purpose::Redirect,
        ]
        .map(Purpose::as_str);
        assert_eq!(
            labels,
            [
                "voice",
                "voice_fallback",
                "refer",
                "dial_action",
                "redirect"
            ]
        );
    }
}
