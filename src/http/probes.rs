//! `HEALTH_BIND_ADDR`: the probes on a listener of their own, served by one thread with a
//! runtime of its own. Under a flood the API's workers are busy and a probe on the main
//! port waits behind the flood's requests; here it waits only for the operating system to
//! wake an idle thread, so an orchestrator's liveness probe keeps answering and does not
//! restart a server that is merely busy (`docs/benchmarks.md`, hostile documents).

use axum::Router;
use axum::routing::get;
use tokio_util::sync::CancellationToken;

use super::AppState;

/// Starts the thread; it serves until `stop` fires.
pub fn serve_on_own_thread(
    listener: std::net::TcpListener,
    state: AppState,
    stop: CancellationToken,
) -> std::io::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let app = Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(super::readyz))
        .route("/metrics", get(super::metrics))
        .with_state(state);
    std::thread::Builder::new()
        .name("lectern-probes".into())
        .spawn(move || {
            let served: std::io::Result<()> = runtime.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener)?;
                axum::serve(listener, app)
                    .with_graceful_shutdown(stop.cancelled_owned())
                    .await
            });
            if let Err(e) = served {
                tracing::error!(error = %e, "the HEALTH_BIND_ADDR listener stopped");
            }
        })?;
    Ok(())
}
