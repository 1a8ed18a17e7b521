//! The REST API over TLS (`--tls-cert`, `--tls-key`: PEM files), on the OpenSSL that
//! librdkafka links already; HTTP/1.1 and HTTP/2 as over plain TCP.

use crate::ServerError;
use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use openssl::ssl::{Ssl, SslAcceptor, SslFiletype, SslMethod};
use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use tokio::net::TcpListener;

/// An acceptor for the certificate chain and private key in these PEM files, with
/// Mozilla's intermediate settings (TLS 1.2 and 1.3) and HTTP/2 offered by ALPN.
pub fn acceptor(cert: &Path, key: &Path) -> Result<Arc<SslAcceptor>, ServerError> {
    let fail = |what: &str, e: &dyn std::fmt::Display| {
        ServerError::Startup(format!("TLS: cannot use {what}: {e}"))
    };
    let mut builder = SslAcceptor::mozilla_intermediate_v5(SslMethod::tls_server())
        .map_err(|e| fail("OpenSSL", &e))?;
    builder
        .set_certificate_chain_file(cert)
        .map_err(|e| fail(&cert.display().to_string(), &e))?;
    builder
        .set_private_key_file(key, SslFiletype::PEM)
        .map_err(|e| fail(&key.display().to_string(), &e))?;
    builder
        .check_private_key()
        .map_err(|e| fail("the key with the certificate", &e))?;
    builder.set_alpn_select_callback(|_, offered| {
        openssl::ssl::select_next_proto(b"\x02h2\x08http/1.1", offered)
            .ok_or(openssl::ssl::AlpnError::NOACK)
    });
    Ok(Arc::new(builder.build()))
}

/// Serves `router` on `listener` over TLS until `shutdown` completes. A connection whose
/// handshake fails (a plain HTTP client, an untrusted certificate) is dropped; the
/// others are served each on its own task.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    acceptor: Arc<SslAcceptor>,
    shutdown: impl Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            _ = &mut shutdown => return,
            accepted = listener.accept() => accepted,
        };
        let (tcp, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!("cannot accept a connection: {e}");
                continue;
            }
        };
        let (acceptor, router) = (acceptor.clone(), router.clone());
        tokio::spawn(async move {
            let stream = Ssl::new(acceptor.context())
                .and_then(|ssl| tokio_openssl::SslStream::new(ssl, tcp));
            let Ok(mut stream) = stream else {
                return;
            };
            if let Err(e) = Pin::new(&mut stream).accept().await {
                tracing::debug!(%peer, "TLS handshake failed: {e}");
                return;
            }
            let service = TowerToHyperService::new(router);
            if let Err(e) = auto::Builder::new(TokioExecutor::new())
                .serve_connection_with_upgrades(TokioIo::new(stream), service)
                .await
            {
                tracing::debug!(%peer, "connection ended: {e}");
            }
        });
    }
}
