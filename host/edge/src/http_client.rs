//! A small HTTP/1.1 client (hyper) for edges' calls to their peers and for the commands that
//! talk to edges: audit, deploy, load. `https://` URLs go over TLS (see [`crate::tls`]).

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::{Method, Request, StatusCode};
use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use rustls::ClientConfig;

/// A pooled keep-alive client.
#[derive(Clone)]
pub struct HttpClient {
    inner: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
    timeout: Duration,
}

/// A whole response.
#[derive(Debug)]
pub struct HttpResponse {
    pub status: StatusCode,
    pub headers: hyper::HeaderMap,
    pub body: Bytes,
}

impl HttpResponse {
    pub fn json(&self) -> anyhow::Result<serde_json::Value> {
        serde_json::from_slice(&self.body).with_context(|| {
            format!(
                "a {} response that is not JSON: {}",
                self.status,
                String::from_utf8_lossy(&self.body)
            )
        })
    }
}

impl Default for HttpClient {
    fn default() -> Self {
        Self::new(Duration::from_secs(10))
    }
}

impl HttpClient {
    /// A client that checks `https://` servers against the system's roots.
    #[allow(clippy::expect_used)] // ring has the default protocol versions: it cannot fail
    pub fn new(timeout: Duration) -> Self {
        static SYSTEM: std::sync::OnceLock<Arc<ClientConfig>> = std::sync::OnceLock::new();
        let tls = SYSTEM
            .get_or_init(|| crate::tls::client_config(None).expect("TLS with the system's roots"));
        Self::with_tls(timeout, Arc::clone(tls))
    }

    /// A client that checks `https://` servers against `ca` (a PEM file), or the system's roots
    /// without one, and presents no certificate.
    pub fn trusting(timeout: Duration, ca: Option<&std::path::Path>) -> anyhow::Result<Self> {
        Ok(match ca {
            // Its error names the file.
            Some(ca) => Self::with_tls(timeout, crate::tls::client_config(Some(ca))?),
            None => Self::new(timeout),
        })
    }

    /// A client whose `https://` connections use `tls`.
    pub fn with_tls(timeout: Duration, tls: Arc<ClientConfig>) -> Self {
        let mut http = HttpConnector::new();
        http.set_nodelay(true);
        http.enforce_http(false);
        let connector = HttpsConnectorBuilder::new()
            .with_tls_config(Arc::unwrap_or_clone(tls))
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        let inner = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .build(connector);
        Self { inner, timeout }
    }

    /// Sends one request and reads the whole response.
    pub async fn send(
        &self,
        method: Method,
        url: &str,
        headers: &[(&str, &str)],
        body: impl Into<Bytes>,
    ) -> anyhow::Result<HttpResponse> {
        let mut req = Request::builder().method(method.clone()).uri(url);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let req = req.body(Full::new(body.into()))?;
        let response = tokio::time::timeout(self.timeout, async {
            let response = self.inner.request(req).await?;
            let (parts, body) = response.into_parts();
            let body = body.collect().await?.to_bytes();
            anyhow::Ok(HttpResponse {
                status: parts.status,
                headers: parts.headers,
                body,
            })
        })
        .await
        .with_context(|| format!("{method} {url} timed out"))?
        .with_context(|| format!("{method} {url}"))?;
        Ok(response)
    }

    /// GET with an optional bearer token.
    pub async fn get(&self, url: &str, token: Option<&str>) -> anyhow::Result<HttpResponse> {
        let auth = token.map(|t| format!("Bearer {t}"));
        let headers: Vec<(&str, &str)> =
            auth.iter().map(|a| ("authorization", a.as_str())).collect();
        self.send(Method::GET, url, &headers, Bytes::new()).await
    }
}

/// `base` (an edge's URL, with or without a trailing `/`) followed by `path` (starting with `/`).
pub fn join(base: &str, path: &str) -> String {
    format!("{}{path}", base.trim_end_matches('/'))
}
