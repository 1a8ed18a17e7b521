//! The Sluice server: configuration, the engine (catalog, command topic, persistent
//! queries) and the ksqlDB-compatible REST API. The `sluice` binary lives here too.

pub mod cli;
pub mod cluster;
pub mod command;
pub mod config;
pub mod engine;
pub mod entities;
pub mod error;
mod forward;
pub mod metrics;
pub mod migrate;
pub mod rest;
pub mod rest_qtt;
pub mod shell;
mod tls;

pub use engine::{Engine, ServerConfig};
pub use error::{ServerError, StatementError};

/// Runs the server until the process is asked to stop (SIGINT or SIGTERM), then stops
/// every query after its last commit.
pub async fn serve(mut config: ServerConfig) -> Result<(), ServerError> {
    std::fs::create_dir_all(&config.state_dir)?;
    // Bound first: the queries name the address in their lease consumers' client ids.
    let listener = tokio::net::TcpListener::bind(&config.listen).await?;
    let tls = config.tls_cert.is_some();
    if config.advertised_listener.is_none() {
        config.advertised_listener = Some(advertised_url(listener.local_addr()?, tls));
    }
    let engine = Engine::start(config.clone()).await?;
    let router = rest::router(engine.clone());
    match (&config.tls_cert, &config.tls_key) {
        (Some(cert), Some(key)) => {
            let acceptor = tls::acceptor(cert, key)?;
            tracing::info!("sluice is listening on https://{}", listener.local_addr()?);
            tls::serve(listener, router, acceptor, shutdown_signal()).await;
        }
        (None, None) => {
            tracing::info!("sluice is listening on http://{}", listener.local_addr()?);
            axum::serve(listener, router)
                .with_graceful_shutdown(shutdown_signal())
                .await?;
        }
        _ => {
            return Err(ServerError::Startup(
                "TLS needs both --tls-cert and --tls-key".into(),
            ));
        }
    }
    tracing::info!("stopping queries");
    tokio::task::spawn_blocking(move || engine.shutdown())
        .await
        .map_err(|e| ServerError::Startup(e.to_string()))?;
    Ok(())
}

/// The URL other servers reach this one at: the listener's address, or the host's
/// name when it listens on every interface.
fn advertised_url(addr: std::net::SocketAddr, tls: bool) -> String {
    let scheme = if tls { "https" } else { "http" };
    let host = if addr.ip().is_unspecified() {
        host_name().unwrap_or_else(|| "localhost".into())
    } else {
        match addr.ip() {
            std::net::IpAddr::V6(ip) => format!("[{ip}]"),
            ip => ip.to_string(),
        }
    };
    format!("{scheme}://{host}:{}", addr.port())
}

fn host_name() -> Option<String> {
    let mut buf = [0u8; 256];
    // SAFETY: gethostname writes at most `buf.len()` bytes into the buffer.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return None;
    }
    let end = buf.iter().position(|b| *b == 0).unwrap_or(buf.len());
    String::from_utf8(buf[..end].to_vec())
        .ok()
        .filter(|h| !h.is_empty())
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("a SIGTERM handler");
        tokio::select! {
            _ = ctrl_c => {},
            _ = term.recv() => {},
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}
