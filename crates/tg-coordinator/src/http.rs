//! Serving HTTP: the API, the dashboard and `/metrics`, over plain HTTP or
//! TLS (rustls, aws-lc-rs).
//!
//! Design decision: this crate is the only one that speaks HTTP (axum,
//! hyper and tokio-rustls are its dependencies alone, a rule `deny.toml`
//! enforces), and it holds the serving rules too ([`serve`]): the API is
//! never served over plain HTTP on an address other hosts can reach unless
//! the caller says so knowingly, and a metrics token is long enough to
//! guess at no faster than the network allows. Callers decide *where* and
//! print what happened. Certificates are read once at start,
//! so a bad file is an error before anything listens. Plain HTTP and TLS
//! share one accept loop: at most 256 connections at once, and a TLS
//! handshake or a request's headers that take over 10 s close the connection
//! (slow-header clients cannot hold the server).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use axum::http::{HeaderMap, StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls;

pub use axum::Router;
pub use tokio_rustls::TlsAcceptor;

/// Errors setting up a server.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HttpError {
    /// A TLS certificate or key file is unreadable or unusable.
    #[error("cannot use TLS file {path}: {why}")]
    Tls {
        /// The file.
        path: PathBuf,
        /// Why.
        why: String,
    },
    /// The address cannot be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
    /// The API would be served over plain HTTP where other hosts can reach it.
    #[error("the API would be served over plain HTTP on {0}")]
    PlainHttpExposed(SocketAddr),
    /// The metrics token file is unreadable or its token too short.
    #[error("metrics token file {path}: {why}")]
    Token {
        /// The file.
        path: PathBuf,
        /// Why.
        why: String,
    },
}

/// Where and how to serve `/metrics` (and the API, when given).
#[derive(Clone, Debug)]
pub struct Serve<'a> {
    /// The address (port 0: any free port).
    pub addr: SocketAddr,
    /// A PEM certificate chain and its PEM private key: TLS.
    pub tls: Option<(&'a Path, &'a Path)>,
    /// Serve the API over plain HTTP on a reachable address anyway.
    pub insecure_http: bool,
    /// A file whose first line is the token `/metrics` requires.
    pub metrics_token_file: Option<&'a Path>,
}

/// What is being served.
#[derive(Clone, Copy, Debug)]
pub struct Served {
    /// The bound address.
    pub addr: SocketAddr,
    /// Over TLS.
    pub https: bool,
    /// The API is reachable from other hosts without TLS (only with
    /// `insecure_http`).
    pub exposed_plain: bool,
}

/// Shortest metrics token accepted.
const MIN_TOKEN: usize = 16;

/// Serves `/metrics`, and `api` beside it, in the background: refused
/// (`PlainHttpExposed`) when the API would go over plain HTTP on an address
/// other than loopback without `insecure_http`.
pub async fn serve(
    how: &Serve<'_>,
    metrics: Arc<dyn tg_metrics::Exposition>,
    api: Option<Router>,
) -> Result<Served, HttpError> {
    let acceptor = how.tls.map(|(c, k)| tls_acceptor(c, k)).transpose()?;
    if api.is_some() && acceptor.is_none() && !how.addr.ip().is_loopback() && !how.insecure_http {
        return Err(HttpError::PlainHttpExposed(how.addr));
    }
    let token = how.metrics_token_file.map(read_token).transpose()?;
    let listener = bind(how.addr).await?;
    let addr = listener.local_addr().map_or(how.addr, |a| a);
    let served = Served {
        addr,
        https: acceptor.is_some(),
        exposed_plain: api.is_some() && acceptor.is_none() && !addr.ip().is_loopback(),
    };
    let app = metrics_router(metrics, token);
    let app = match api {
        Some(api) => app.merge(api),
        None => app,
    };
    spawn(listener, app, acceptor);
    Ok(served)
}

/// The metrics token: the file's first line, at least [`MIN_TOKEN`] characters.
fn read_token(path: &Path) -> Result<String, HttpError> {
    let bad = |why: String| HttpError::Token {
        path: path.to_owned(),
        why,
    };
    let text = std::fs::read_to_string(path).map_err(|e| bad(e.to_string()))?;
    let token = text.lines().next().unwrap_or("").trim().to_owned();
    if token.len() < MIN_TOKEN {
        return Err(bad(format!(
            "the token is shorter than {MIN_TOKEN} characters"
        )));
    }
    Ok(token)
}

/// A TLS acceptor from a PEM certificate chain and its PEM private key.
pub fn tls_acceptor(cert: &Path, key: &Path) -> Result<TlsAcceptor, HttpError> {
    let bad = |path: &Path, why: &dyn std::fmt::Display| HttpError::Tls {
        path: path.to_owned(),
        why: why.to_string(),
    };
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|e| bad(cert, &e))?
        .collect::<Result<_, _>>()
        .map_err(|e| bad(cert, &e))?;
    if chain.is_empty() {
        return Err(bad(cert, &"no CERTIFICATE block in the file"));
    }
    let key_der = PrivateKeyDer::from_pem_file(key).map_err(|e| bad(key, &e))?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| bad(cert, &e))?
        .with_no_client_auth()
        .with_single_cert(chain, key_der)
        .map_err(|e| bad(cert, &e))?;
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// Binds `addr` (port 0: any free port).
pub async fn bind(addr: SocketAddr) -> Result<tokio::net::TcpListener, HttpError> {
    tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| HttpError::Bind { addr, source })
}

/// `GET /metrics` in the OpenMetrics text format; with a token, only for a
/// request bearing it (compared in constant time).
pub fn metrics_router(metrics: Arc<dyn tg_metrics::Exposition>, token: Option<String>) -> Router {
    Router::new().route(
        "/metrics",
        get(move |headers: HeaderMap| {
            let m = metrics.clone();
            let want = token.clone();
            async move {
                if let Some(want) = want {
                    let given = headers
                        .get(header::AUTHORIZATION)
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.strip_prefix("Bearer "))
                        .unwrap_or("");
                    let ok: bool =
                        subtle::ConstantTimeEq::ct_eq(given.as_bytes(), want.as_bytes()).into();
                    if !ok {
                        return (
                            StatusCode::UNAUTHORIZED,
                            "error: /metrics requires the bearer token from --metrics-token-file\n",
                        )
                            .into_response();
                    }
                }
                (
                    [(
                        header::CONTENT_TYPE,
                        "application/openmetrics-text; version=1.0.0; charset=utf-8",
                    )],
                    m.encode(),
                )
                    .into_response()
            }
        }),
    )
}

/// Connections served at once; more wait in the kernel's accept queue.
const MAX_CONNECTIONS: usize = 256;
/// A request's headers must arrive within this (slow-header clients are
/// dropped), as must a TLS handshake.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves `app` on `listener` in the background, over TLS when an acceptor
/// is given, until the process ends: at most [`MAX_CONNECTIONS`] at once,
/// each dropped if a handshake or a request's headers take over 10 s.
pub fn spawn(listener: tokio::net::TcpListener, app: Router, tls: Option<TlsAcceptor>) {
    tokio::spawn(accept_loop(listener, app, tls, HEADER_TIMEOUT));
}

async fn accept_loop(
    listener: tokio::net::TcpListener,
    app: Router,
    tls: Option<TlsAcceptor>,
    header_timeout: Duration,
) {
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    loop {
        let Ok(permit) = slots.clone().acquire_owned().await else {
            return;
        };
        let (tcp, peer) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                tracing::warn!("HTTP listener: accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let app = app.clone();
        let tls = tls.clone();
        tokio::spawn(async move {
            let _slot = permit;
            let service = hyper_util::service::TowerToHyperService::new(app);
            let mut http = hyper::server::conn::http1::Builder::new();
            http.timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(header_timeout);
            let served = match tls {
                None => {
                    http.serve_connection(hyper_util::rt::TokioIo::new(tcp), service)
                        .await
                }
                Some(acceptor) => {
                    let stream =
                        match tokio::time::timeout(header_timeout, acceptor.accept(tcp)).await {
                            Ok(Ok(s)) => s,
                            Ok(Err(e)) => {
                                tracing::debug!(%peer, "TLS handshake failed: {e}");
                                return;
                            }
                            Err(_) => return,
                        };
                    http.serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                        .await
                }
            };
            if let Err(e) = served {
                tracing::debug!(%peer, "HTTP connection ended: {e}");
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn the_api_is_not_exposed_in_the_clear_and_short_tokens_are_refused() {
        let metrics = tg_metrics::Metrics::new("test");
        let how = |addr: &str, insecure_http, token| Serve {
            addr: addr.parse().unwrap(),
            tls: None,
            insecure_http,
            metrics_token_file: token,
        };
        // The API on every interface over plain HTTP: refused…
        let api = || Some(Router::new());
        assert!(matches!(
            serve(&how("0.0.0.0:0", false, None), metrics.clone(), api()).await,
            Err(HttpError::PlainHttpExposed(_))
        ));
        // …unless asked for knowingly, and then flagged.
        let served = serve(&how("0.0.0.0:0", true, None), metrics.clone(), api())
            .await
            .unwrap();
        assert!(served.exposed_plain && !served.https);
        // Metrics alone, or the API on loopback, are fine.
        assert!(
            serve(&how("0.0.0.0:0", false, None), metrics.clone(), None)
                .await
                .is_ok()
        );
        let local = serve(&how("127.0.0.1:0", false, None), metrics.clone(), api())
            .await
            .unwrap();
        assert!(!local.exposed_plain);
        // A guessable metrics token is refused.
        let dir = tempfile::tempdir().unwrap();
        let short = dir.path().join("token");
        std::fs::write(&short, "abc\n").unwrap();
        assert!(matches!(
            serve(&how("127.0.0.1:0", false, Some(&short)), metrics, None).await,
            Err(HttpError::Token { .. })
        ));
    }

    #[tokio::test]
    async fn a_client_that_never_finishes_its_headers_is_dropped() {
        let listener = bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = Router::new().route("/", get(|| async { "ok" }));
        tokio::spawn(accept_loop(listener, app, None, Duration::from_millis(200)));
        // A complete request is served.
        let mut ok = tokio::net::TcpStream::connect(addr).await.unwrap();
        ok.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut reply = String::new();
        ok.read_to_string(&mut reply).await.unwrap();
        assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
        // Half a request line, then silence: the server closes the connection.
        let mut slow = tokio::net::TcpStream::connect(addr).await.unwrap();
        slow.write_all(b"GET / HTTP/1.1\r\nHost:").await.unwrap();
        let mut rest = Vec::new();
        let closed =
            tokio::time::timeout(Duration::from_secs(30), slow.read_to_end(&mut rest)).await;
        assert!(
            closed.is_ok(),
            "the slow client was still connected after 30 s"
        );
    }
}
