//! Logging set-up, in one place: a filter from `RUST_LOG` (sensible default when unset)
//! and either human-readable or JSON lines. Every line inside a request carries its
//! `request_id` through the span opened in `http.rs`.

use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

/// Quiet defaults: our own info, the database driver only when it complains, and the
/// embedded vector engine's chatter filtered out.
const DEFAULT_FILTER: &str = "info,sqlx=warn,sea_orm=warn,qdrant_edge=error";

/// Appended to every filter, whatever `RUST_LOG` says: libraries that log what crosses
/// the wire at trace level, payloads included. The WebSocket library logs every frame,
/// and a `connection_init` frame carries the reader's bearer token.
const NEVER_VERBOSE: &str = "tungstenite=info,tokio_tungstenite=info";

/// The filter for `RUST_LOG` (or the default), with [`NEVER_VERBOSE`] last so it wins.
pub fn filter(rust_log: Option<&str>) -> EnvFilter {
    let base = rust_log.unwrap_or(DEFAULT_FILTER);
    EnvFilter::try_new(format!("{base},{NEVER_VERBOSE}"))
        .unwrap_or_else(|_| EnvFilter::new(format!("{DEFAULT_FILTER},{NEVER_VERBOSE}")))
}

/// Installs the global subscriber. Called once by `main`; tests that want logs install
/// their own capturing subscriber instead.
pub fn init(format: LogFormat) {
    let filter = filter(std::env::var("RUST_LOG").ok().as_deref());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Pretty => builder.init(),
        LogFormat::Json => builder
            .json()
            .with_current_span(true)
            .with_span_list(false)
            .init(),
    }
}
