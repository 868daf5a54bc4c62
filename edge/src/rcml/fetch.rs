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

const USER_AGENT_VALUE: &str = concat!("switchyard-edge/", env!("CARGO_PKG_VERSION"));

impl Fetcher {
    /// `timeout` bounds a whole HTTP fetch: connecting, the answer and its body.
    pub fn new(timeout: Duration) -> Result<Self, FetchError> {
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
