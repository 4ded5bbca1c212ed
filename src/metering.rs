//! Metrics in the Prometheus text format at `/metrics`, through the `metrics` facade and
//! `metrics-exporter-prometheus`.
//!
//! What is measured:
//! - `lectern_graphql_requests_total{operation, outcome}` and
//!   `lectern_graphql_request_duration_seconds{operation}`: per GraphQL request over HTTP,
//!   labelled by its root fields (see [`operation_label`]). Recorded by the HTTP handler
//!   rather than a schema extension: an extension hooks every field resolution, which
//!   cost 12% of the throughput of a history page (docs/benchmarks.md).
//! - `lectern_database_up`, `lectern_database_pool_connections{state}`: read at scrape time.
//! - `lectern_database_shed_total{reason}`: database work refused rather than queued.
//! - `lectern_retrieval_duration_seconds`, `lectern_answer_duration_seconds{kind}`: the two
//!   halves of a chat turn.
//!
//! The recorder is process-wide (the `metrics` facade has one global recorder), so every
//! server in a process, as in the test suite, reports into the same registry.

use std::sync::OnceLock;
use std::time::Duration;

use async_graphql::parser::types::{DocumentOperations, ExecutableDocument, Selection};
use async_graphql::{Request, Response};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

use crate::db::{Availability, Database};

/// Latency buckets in seconds: fine below 100 ms where history reads live, coarse above
/// where model answers do.
const BUCKETS: [f64; 14] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// Histograms are drained this often even when nobody scrapes, so memory stays bounded.
const UPKEEP_EVERY: Duration = Duration::from_secs(5);

/// Requests with more distinct root fields than this share the label `multiple`, so a
/// client cannot mint label values.
const MAX_LABELLED_ROOT_FIELDS: usize = 3;

static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// Installs the process-wide recorder on first use and returns its handle; `None` only
/// if another recorder was installed first (then metrics are not served).
pub fn handle() -> Option<&'static PrometheusHandle> {
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets(&BUCKETS)
                .expect("the bucket list is not empty");
            match builder.install_recorder() {
                Ok(handle) => {
                    describe();
                    let upkeep = handle.clone();
                    std::thread::Builder::new()
                        .name("metrics-upkeep".into())
                        .spawn(move || {
                            loop {
                                std::thread::sleep(UPKEEP_EVERY);
                                upkeep.run_upkeep();
                            }
                        })
                        .ok()?;
                    Some(handle)
                }
                Err(e) => {
                    tracing::warn!(error = %e, "metrics recorder not installed; /metrics is empty");
                    None
                }
            }
        })
        .as_ref()
}

fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram};
    describe_counter!(
        "lectern_graphql_requests_total",
        "GraphQL requests by root fields and outcome"
    );
    describe_histogram!(
        "lectern_graphql_request_duration_seconds",
        metrics::Unit::Seconds,
        "GraphQL request latency by root fields"
    );
    describe_gauge!(
        "lectern_database_up",
        "1 while the database is reachable and migrated"
    );
    describe_gauge!(
        "lectern_database_pool_connections",
        "Pooled database connections, by state (idle or in_use)"
    );
    describe_counter!(
        "lectern_database_shed_total",
        "Database work refused instead of queued: too many pending, or past the timeout"
    );
    describe_counter!(
        "lectern_database_read_batches_total",
        "Round trips that answered several reads at once (reads that gathered while waiting for a connection)"
    );
    describe_counter!(
        "lectern_database_batched_reads_total",
        "Reads answered in a batch with others"
    );
    describe_histogram!(
        "lectern_retrieval_duration_seconds",
        metrics::Unit::Seconds,
        "Passage retrieval latency per chat turn"
    );
    describe_histogram!(
        "lectern_answer_duration_seconds",
        metrics::Unit::Seconds,
        "Answer writing latency per chat turn, by kind (model or extractive)"
    );
}

/// The exposition text, with the gauges that are read rather than counted refreshed.
pub fn render(db: &Database) -> String {
    let Some(handle) = handle() else {
        return String::new();
    };
    let up = db.availability() == Availability::Up;
    metrics::gauge!("lectern_database_up").set(if up { 1.0 } else { 0.0 });
    let (size, idle) = db.pool_usage();
    let idle = idle.min(size as usize) as f64;
    metrics::gauge!("lectern_database_pool_connections", "state" => "idle").set(idle);
    metrics::gauge!("lectern_database_pool_connections", "state" => "in_use")
        .set(f64::from(size) - idle);
    handle.render()
}

/// The `operation` label of a GraphQL request: its root fields, sorted and joined by `+`
/// (e.g. `conversations+me`), `multiple` beyond [`MAX_LABELLED_ROOT_FIELDS`]. The request
/// is parsed here once and keeps its parsed document, so execution does not parse again.
/// `None` when the document does not parse.
pub fn operation_label(request: &mut Request) -> Option<String> {
    let operation_name = request.operation_name.clone();
    let document = request.parsed_query().ok()?;
    root_fields_label(document, operation_name.as_deref())
}

/// Counts one GraphQL request and records its latency. Requests that failed before
/// execution (errors without a `path`: parse or validation) are labelled `invalid`, so
/// label values are always the schema's own field names.
pub fn record_request(label: Option<String>, response: &Response, elapsed: Duration) {
    let rejected = response.data == async_graphql::Value::Null
        && !response.errors.is_empty()
        && response.errors.iter().all(|e| e.path.is_empty());
    let label = match label {
        Some(label) if !rejected => label,
        _ => "invalid".to_owned(),
    };
    let outcome = if response.errors.is_empty() {
        "ok"
    } else {
        "error"
    };
    metrics::counter!(
        "lectern_graphql_requests_total",
        "operation" => label.clone(),
        "outcome" => outcome
    )
    .increment(1);
    metrics::histogram!("lectern_graphql_request_duration_seconds", "operation" => label)
        .record(elapsed);
}

fn root_fields_label(
    document: &ExecutableDocument,
    operation_name: Option<&str>,
) -> Option<String> {
    let operation = match (&document.operations, operation_name) {
        (DocumentOperations::Single(op), _) => op,
        (DocumentOperations::Multiple(ops), Some(name)) => ops.get(name)?,
        (DocumentOperations::Multiple(_), None) => return None,
    };
    let mut names: Vec<&str> = operation
        .node
        .selection_set
        .node
        .items
        .iter()
        .map(|item| match &item.node {
            Selection::Field(field) => field.node.name.node.as_str(),
            Selection::FragmentSpread(_) | Selection::InlineFragment(_) => "fragment",
        })
        .collect();
    names.sort_unstable();
    names.dedup();
    if names.len() > MAX_LABELLED_ROOT_FIELDS {
        return Some("multiple".into());
    }
    Some(names.join("+"))
}
