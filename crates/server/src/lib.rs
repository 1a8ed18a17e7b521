//! The Sluice server: configuration, the engine (catalog, command topic, persistent
//! queries) and the ksqlDB-compatible REST API. The `sluice` binary lives here too.

pub mod cli;
pub mod cluster;
pub mod command;
pub mod config;
pub mod engine;
pub mod entities;
pub mod error;
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
pub async fn serve(config: ServerConfig) -> Result<(), ServerError> {
    std::fs::create_dir_all(&config.state_dir)?;
    let engine = Engine::start(config.clone()).await?;
    let listener = tokio::net::TcpListener::bind(&config.listen).await?;
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
