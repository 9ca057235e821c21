//! Serving HTTP: the API, the dashboard and `/metrics`, over plain HTTP or
//! TLS (rustls, aws-lc-rs).
//!
//! Design decision: this crate is the only one that speaks HTTP (axum,
//! hyper and tokio-rustls are its dependencies alone, a rule `deny.toml`
//! enforces); the binary decides *whether* and *where* to serve — flags,
//! refusals, messages — and calls these. Certificates are read once at start,
//! so a bad file is an error before anything listens. A TLS handshake that
//! does not finish in 10 s is dropped.

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
pub fn metrics_router(metrics: Arc<tg_metrics::Metrics>, token: Option<String>) -> Router {
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

/// Serves `app` on `listener` in the background, over TLS when an acceptor
/// is given, until the process ends.
pub fn spawn(listener: tokio::net::TcpListener, app: Router, tls: Option<TlsAcceptor>) {
    match tls {
        Some(acceptor) => {
            tokio::spawn(serve_tls(listener, acceptor, app));
        }
        None => {
            tokio::spawn(async move {
                if let Err(e) = axum::serve(listener, app).await {
                    tracing::error!("HTTP server stopped: {e}");
                }
            });
        }
    }
}

async fn serve_tls(listener: tokio::net::TcpListener, acceptor: TlsAcceptor, app: Router) {
    loop {
        let (tcp, peer) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                tracing::warn!("TLS listener: accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let acceptor = acceptor.clone();
        let app = app.clone();
        tokio::spawn(async move {
            let tls =
                match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp)).await {
                    Ok(Ok(s)) => s,
                    Ok(Err(e)) => {
                        tracing::debug!(%peer, "TLS handshake failed: {e}");
                        return;
                    }
                    Err(_) => return,
                };
            let io = hyper_util::rt::TokioIo::new(tls);
            let service = hyper_util::service::TowerToHyperService::new(app);
            if let Err(e) = hyper::server::conn::http1::Builder::new()
                .serve_connection(io, service)
                .await
            {
                tracing::debug!(%peer, "TLS connection ended: {e}");
            }
        });
    }
}
