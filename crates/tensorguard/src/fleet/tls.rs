//! Serving the API and dashboard over TLS (rustls), when a certificate is
//! configured.
//!
//! Design decision: plain HTTP stays the default only because the default
//! bind address is 127.0.0.1; anything reachable from another host should
//! be given `--tls-cert/--tls-key`. Certificates are read once at start and
//! a bad file is an error before anything listens.

use std::path::Path;
use std::sync::Arc;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls;

use crate::cli::TlsArgs;
use crate::errors::{CliError, Code};

fn bad(path: &Path, why: impl std::fmt::Display) -> CliError {
    CliError::new(
        Code::ConfigInvalid,
        format!("cannot use TLS file {}", path.display()),
        why.to_string(),
        "give a PEM certificate chain (--tls-cert) and its PEM private key (--tls-key)",
    )
}

/// The rustls acceptor for `args`, or None when TLS is not configured.
pub fn acceptor(args: &TlsArgs) -> Result<Option<tokio_rustls::TlsAcceptor>, CliError> {
    let (Some(cert), Some(key)) = (&args.tls_cert, &args.tls_key) else {
        return Ok(None);
    };
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|e| bad(cert, e))?
        .collect::<Result<_, _>>()
        .map_err(|e| bad(cert, e))?;
    if chain.is_empty() {
        return Err(bad(cert, "no CERTIFICATE block in the file"));
    }
    let key = PrivateKeyDer::from_pem_file(key).map_err(|e| bad(key, e))?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| bad(cert, e))?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| bad(cert, e))?;
    Ok(Some(tokio_rustls::TlsAcceptor::from(Arc::new(config))))
}

/// Serves `app` over TLS on `listener` until the process ends.
pub async fn serve(
    listener: tokio::net::TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
    app: axum::Router,
) {
    loop {
        let (tcp, peer) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                tracing::warn!("TLS listener: accept failed: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
        };
        let acceptor = acceptor.clone();
        let app = app.clone();
        tokio::spawn(async move {
            let tls = match tokio::time::timeout(
                std::time::Duration::from_secs(10),
                acceptor.accept(tcp),
            )
            .await
            {
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
