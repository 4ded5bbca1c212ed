//! `HEALTH_BIND_ADDR`: the probes on a listener of their own, served by one thread with a
//! runtime of its own. Under a flood the API's workers are busy and a probe on the main
//! port waits behind the flood's requests; here it waits only for the operating system to
//! wake an idle thread, so an orchestrator's liveness probe keeps answering and does not
//! restart a server that is merely busy (`docs/benchmarks.md`, hostile documents).
//!
//! When the process may (Linux, `CAP_SYS_NICE`), that thread runs under real-time
//! scheduling at the lowest priority, ahead of every ordinary thread: with the cores
//! saturated, an ordinary thread still waits a few milliseconds for one (p99 0.9 → 5 ms);
//! a real-time one does not (0.9 → 0.6 ms). Without the capability it runs as any other
//! thread, and says so in the log.

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
            ask_for_real_time();
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

/// `SCHED_FIFO` at priority 1 for the calling thread, if the process may have it.
#[cfg(target_os = "linux")]
fn ask_for_real_time() {
    let param = libc::sched_param { sched_priority: 1 };
    // Threads this one starts (a runtime's blocking pool, say) get ordinary scheduling.
    let policy = libc::SCHED_FIFO | libc::SCHED_RESET_ON_FORK;
    // SAFETY: sched_setscheduler(2) on the calling thread (pid 0), reading `param`,
    // which lives across the call.
    let outcome = unsafe { libc::sched_setscheduler(0, policy, &param) };
    if outcome == 0 {
        tracing::info!("the probe thread runs ahead of the API's workers (real-time scheduling)");
    } else {
        tracing::info!(
            error = %std::io::Error::last_os_error(),
            "the probe thread runs with ordinary scheduling; grant CAP_SYS_NICE for real-time"
        );
    }
}

#[cfg(not(target_os = "linux"))]
fn ask_for_real_time() {}
