//! Logging set-up, in one place: a filter from `RUST_LOG` (sensible default when unset)
//! and either human-readable or JSON lines. Every line inside a request carries its
//! `request_id` through the span opened in `http.rs`.

use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

/// Quiet defaults: our own info, the database driver only when it complains, and the
/// embedded vector engine's chatter filtered out.
const DEFAULT_FILTER: &str = "info,sqlx=warn,sea_orm=warn,qdrant_edge=error";

/// Installs the global subscriber. Called once by `main`; tests that want logs install
/// their own capturing subscriber instead.
pub fn init(format: LogFormat) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(DEFAULT_FILTER));
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
