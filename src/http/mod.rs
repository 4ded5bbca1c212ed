//! The HTTP surface: routes, the middleware every request passes through (request id,
//! tracing span, body size and time limits, CORS), and graceful shutdown.
//!
//! - [`serve`]: the accept loop (connection cap, header and idle timeouts).
//! - [`admission`]: how many of one client's requests are read and checked at once.
//! - [`probes`]: `/healthz`, `/readyz` and `/metrics` on a listener and thread of their own.
//! - [`respond`]: a GraphQL response of plain data, written as JSON without serde's
//!   byte-at-a-time escaping.
//! - [`client`]: the client's address through trusted proxies.
//! - [`ws`]: GraphQL over WebSocket (graphql-transport-ws).
//! - [`graphiql`]: the GraphiQL page and its embedded assets.

pub mod admission;
pub mod client;
pub mod graphiql;
pub mod probes;
pub mod respond;
pub mod serve;
pub mod ws;

use std::sync::Arc;
use std::time::Duration;

use async_graphql_axum::GraphQLResponse;
use axum::Router;
use std::net::SocketAddr;

use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, Request, StatusCode, header};
use axum::response::{IntoResponse, Json, Response};
use axum::routing::get;
use tokio_util::sync::CancellationToken;
use tower_http::cors::{AllowOrigin, CorsLayer};
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::set_header::SetResponseHeaderLayer;
use tower_http::timeout::RequestBodyTimeoutLayer;
use tower_http::trace::TraceLayer;

use crate::auth::AuthService;
use crate::auth::better_auth::BetterAuthVerifier;
use crate::auth::viewer::Viewer;
use crate::chat::ChatService;
use crate::config::Settings;
use crate::db::Database;
use crate::graphql::LecternSchema;
use crate::graphql::auth::SessionCheck;
use crate::graphql::documents::Prepared;
use crate::graphql::error::ErrorCode;
use crate::graphql::health::Health;

/// Largest request body accepted. A chat input is at most 4,000 + 10,000 characters, which
/// stays well under this even with JSON escaping; anything bigger is refused with 413
/// (unread when its `Content-Length` says so).
pub const MAX_BODY_BYTES: usize = 256 * 1024;

/// A body over this size is read only with one of [`LARGE_BODY_READS`] permits: a
/// legitimate request stays under it (a 4,000-character question with a 10,000-character
/// selection is at most 40 KB of UTF-8), so the permits bound what a flood of large
/// bodies makes the server hold at once, whatever `MAX_CONNECTIONS` allows.
pub const LARGE_BODY_BYTES: usize = 64 * 1024;
/// Requests that may be past [`LARGE_BODY_BYTES`] of body at once, server-wide.
pub const LARGE_BODY_READS: usize = 4;
/// The most set aside for a body before it arrives, without a large-body permit.
const PRESIZE_BYTES: usize = 4 * 1024;

const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    pub schema: LecternSchema,
    /// The same schema, for documents that passed every validation rule before and come
    /// without variables (`graphql::build_schema_for_validated_documents`).
    pub validated_schema: LecternSchema,
    pub db: Database,
    pub settings: Arc<Settings>,
    /// For readiness: the vector store's and the model's last outcomes.
    pub chat: Arc<ChatService>,
    /// Verifies access tokens when the viewer of a request is worked out.
    /// (Shared behind `Arc`s: axum clones the state for every request.)
    pub auth: Arc<AuthService>,
    /// Present when `BETTER_AUTH_SECRET` is set.
    pub better_auth: Option<Arc<BetterAuthVerifier>>,
    /// Fired when shutdown starts, so `/readyz` stops attracting traffic while in-flight
    /// requests and chat turns drain.
    pub shutdown: CancellationToken,
    /// Fired when the drain is over: WebSockets close once their last event is out.
    pub stopping: CancellationToken,
    /// Open WebSocket connections per client address.
    pub ws_connections: ws::ConnectionCounts,
    /// Documents parsed and checked before, by their text.
    pub documents: Arc<crate::graphql::documents::DocumentCache>,
    /// GraphQL requests of one client address read and checked at once (`None`: no
    /// bound).
    pub admission: Option<Arc<admission::Admission>>,
    /// Requests allowed to hold more than [`LARGE_BODY_BYTES`] of body at once.
    pub large_bodies: Arc<tokio::sync::Semaphore>,
    /// Open WebSocket connections, so shutdown can wait for them to close.
    pub websockets: tokio_util::task::TaskTracker,
}

pub fn router(state: AppState) -> Router {
    // GraphiQL needs introspection, so the one setting governs both.
    let graphiql = state.settings.introspection;
    let production = state.settings.is_production();
    let cors = cors_layer(&state.settings);
    let body_timeout = state.settings.limits.body_timeout;
    let mut graphql = axum::routing::post(graphql_handler);
    let mut router = Router::new();
    if graphiql {
        graphql = graphql.get(graphiql::page);
        router = router.route(
            &format!("{}/{{file}}", graphiql::ASSETS),
            get(graphiql::asset),
        );
    }
    let router = router
        .route("/graphql", graphql)
        .route("/graphql/ws", get(ws::handler))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(state);
    // One layer of the whole stack, not one `Router::layer` per middleware: axum boxes
    // every route's service once per `layer` call, and clones the boxes for every
    // request, so ten calls cost about sixty allocations a request (docs/benchmarks.md
    // §8). Outermost first.
    let optional = |on: bool, value: &'static str| on.then(|| HeaderValue::from_static(value));
    router.layer(
        tower::ServiceBuilder::new()
            // Headers that keep browsers from sniffing, framing or leaking referrers;
            // HSTS in production (served over HTTPS behind a proxy); a closed CSP on
            // everything but the GraphiQL page, which sets its own (scripts from this
            // origin only).
            .layer(SetResponseHeaderLayer::if_not_present(
                header::CONTENT_SECURITY_POLICY,
                HeaderValue::from_static("default-src 'none'; frame-ancestors 'none'"),
            ))
            .layer(SetResponseHeaderLayer::if_not_present(
                header::STRICT_TRANSPORT_SECURITY,
                optional(production, "max-age=31536000; includeSubDomains"),
            ))
            .layer(SetResponseHeaderLayer::if_not_present(
                header::REFERRER_POLICY,
                HeaderValue::from_static("no-referrer"),
            ))
            .layer(SetResponseHeaderLayer::if_not_present(
                header::X_FRAME_OPTIONS,
                HeaderValue::from_static("DENY"),
            ))
            .layer(SetResponseHeaderLayer::if_not_present(
                header::X_CONTENT_TYPE_OPTIONS,
                HeaderValue::from_static("nosniff"),
            ))
            .layer(SetRequestIdLayer::new(REQUEST_ID, MakeRequestUuid))
            .layer(
                TraceLayer::new_for_http().make_span_with(|request: &Request<_>| {
                    let request_id = request
                        .headers()
                        .get(&REQUEST_ID)
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or_default();
                    tracing::info_span!(
                        "request",
                        method = %request.method(),
                        path = %request.uri().path(),
                        request_id = %request_id,
                    )
                }),
            )
            .layer(PropagateRequestIdLayer::new(REQUEST_ID))
            .layer(cors)
            .layer(RequestBodyTimeoutLayer::new(body_timeout)),
    )
}

/// Prometheus text exposition. Aggregates only: no user, id or content in any label.
pub(crate) async fn metrics(State(state): State<AppState>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
        )],
        crate::metering::render(&state.db),
    )
        .into_response()
}

/// A request error in the GraphQL response shape, so clients parse one format.
fn request_error(status: StatusCode, message: String) -> Response {
    let body = serde_json::json!({
        "data": null,
        "errors": [{ "message": message, "extensions": { "code": ErrorCode::BadUserInput.as_str() } }],
    });
    (status, Json(body)).into_response()
}

/// `RATE_LIMITED` (503, retry in a second): too many large bodies are being read.
fn busy() -> Response {
    let body = serde_json::json!({
        "data": null,
        "errors": [{
            "message": "too many large requests at once; retry in 1 s",
            "extensions": { "code": ErrorCode::RateLimited.as_str(), "retryAfter": 1 },
        }],
    });
    (
        StatusCode::SERVICE_UNAVAILABLE,
        [(header::RETRY_AFTER, HeaderValue::from_static("1"))],
        Json(body),
    )
        .into_response()
}

async fn graphql_handler(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: axum::extract::Request,
) -> Response {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if !content_type.starts_with("application/json") {
        return request_error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "send GraphQL requests as application/json".into(),
        );
    }
    let client = client::client_info(peer, &headers, &state.settings.limits.trusted_proxies);
    let pass = match (&state.admission, client.ip) {
        (Some(admission), Some(ip)) => Some(admission.enter(ip).await),
        _ => None,
    };
    let wait = state.settings.limits.body_timeout;
    let read = read_request(&headers, body, &state.large_bodies, wait).await;
    // Timed from here, as before: a slow client's upload is not the server's latency.
    let started = std::time::Instant::now();
    let request = match read {
        Ok(request) => request,
        Err(Unread::Refused(refused)) => {
            let response = async_graphql::Response::from_errors(vec![refused]);
            crate::metering::record_request(None, &response, started.elapsed());
            return GraphQLResponse::from(response).into_response();
        }
        Err(Unread::Error(status, why)) => return request_error(status, why),
        Err(Unread::Busy) => return busy(),
    };
    let viewer = Viewer::from_headers(&headers, &state.auth.keys, state.better_auth.as_deref());
    let mut request = request
        .data(viewer)
        .data(client)
        .data(SessionCheck::default())
        // Written by `respond::graphql`, which copies JSON text resolvers wrote.
        .data(crate::json::JsonText);
    let prepared = match state.documents.prepare(&mut request) {
        Ok(prepared) => prepared,
        Err(refused) => {
            let response = async_graphql::Response::from_errors(vec![refused]);
            crate::metering::record_request(None, &response, started.elapsed());
            return GraphQLResponse::from(response).into_response();
        }
    };
    drop(pass);
    let label = crate::metering::operation_label(&mut request);
    let (schema, to_mark) = match prepared {
        Prepared::Validated => (&state.validated_schema, None),
        Prepared::Unvalidated(to_mark) => (&state.schema, to_mark),
    };
    let mut response = schema.execute(request).await;
    if let Some(query) = to_mark
        && response.errors.is_empty()
    {
        state.documents.validated(&query);
    }
    crate::metering::record_request(label, &response, started.elapsed());
    give_errors_a_code(&mut response);
    respond::graphql(response)
}

/// Why a body did not become a request.
enum Unread {
    /// Not a readable GraphQL request: answered with this status.
    Error(StatusCode, String),
    /// A request whose document the limits refuse: answered like any refused document.
    Refused(async_graphql::ServerError),
    /// No large-body permit came free in time.
    Busy,
}

/// Reads a GraphQL request body: refused unread when it declares more than
/// [`MAX_BODY_BYTES`]; past [`LARGE_BODY_BYTES`] read only with a large-body permit
/// (waited for at most `wait`, then `RATE_LIMITED`); and a document over the length limit
/// is refused from a borrowed look at the body, before it is copied into a request.
async fn read_request(
    headers: &HeaderMap,
    body: axum::extract::Request,
    large_bodies: &tokio::sync::Semaphore,
    wait: Duration,
) -> Result<async_graphql::Request, Unread> {
    use http_body_util::BodyExt as _;
    let too_large = || {
        Unread::Error(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("the request body is over {} KiB", MAX_BODY_BYTES / 1024),
        )
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_BODY_BYTES as u64) {
        return Err(too_large());
    }
    let large_permit = || async {
        match tokio::time::timeout(wait, large_bodies.acquire()).await {
            Ok(Ok(permit)) => Ok(permit),
            _ => Err(Unread::Busy),
        }
    };
    let mut permit = None;
    if declared.is_some_and(|n| n > LARGE_BODY_BYTES as u64) {
        permit = Some(large_permit().await?);
    }
    let mut body = body.into_body();
    // Sized from the declared length only once a large body holds its permit: otherwise
    // many connections could each make the server set aside 64 KiB before sending a byte.
    let presize = match permit {
        Some(_) => declared.map_or(0, |n| n as usize),
        None => declared.map_or(0, |n| (n as usize).min(PRESIZE_BYTES)),
    };
    let mut bytes = Vec::with_capacity(presize);
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| {
            Unread::Error(
                StatusCode::BAD_REQUEST,
                format!("the request could not be read: {e}"),
            )
        })?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        let length = bytes.len() + data.len();
        if length > MAX_BODY_BYTES {
            return Err(too_large());
        }
        if length > LARGE_BODY_BYTES && permit.is_none() {
            permit = Some(large_permit().await?);
        }
        bytes.extend_from_slice(&data);
    }
    if bytes.len() > crate::graphql::limits::MAX_QUERY_BYTES {
        #[derive(serde::Deserialize)]
        struct Peek<'a> {
            #[serde(borrow)]
            query: Option<std::borrow::Cow<'a, str>>,
        }
        if let Ok(Peek { query: Some(query) }) = serde_json::from_slice(&bytes)
            && let Some(refused) = crate::graphql::limits::length_refusal(&query)
        {
            return Err(Unread::Refused(refused));
        }
    }
    serde_json::from_slice::<async_graphql::Request>(&bytes).map_err(|e| {
        let batch = bytes.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'[');
        let why = if batch {
            "batched requests are not accepted; send one operation per request".to_owned()
        } else {
            format!("the body is not a GraphQL request: {e}")
        };
        Unread::Error(StatusCode::BAD_REQUEST, why)
    })
}

/// Every error our resolvers raise has a code; the ones without are async-graphql's
/// parse, validation and limit errors: all the client's to fix.
pub(crate) fn give_errors_a_code(response: &mut async_graphql::Response) {
    for error in &mut response.errors {
        let extensions = error.extensions.get_or_insert_with(Default::default);
        if extensions.get("code").is_none() {
            extensions.set("code", ErrorCode::BadUserInput.as_str());
        }
    }
}

/// Readiness with per-component status. A degraded server still answers chats, so it
/// stays ready (200); only a server that is shutting down says 503.
pub(crate) async fn readyz(State(state): State<AppState>) -> Response {
    let health = Health::of(&state.db, &state.chat);
    let code = if state.shutdown.is_cancelled() {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::OK
    };
    (code, Json(health)).into_response()
}

/// Browsers may call from `CORS_ORIGINS`. With none configured, development allows any
/// origin (no credentials) and production sends no CORS headers: same-origin only.
fn cors_layer(settings: &Settings) -> CorsLayer {
    let origins: Vec<HeaderValue> = settings
        .cors_origins
        .iter()
        .filter_map(|o| HeaderValue::from_str(o).ok())
        .collect();
    let allow_origin = if !origins.is_empty() {
        AllowOrigin::list(origins)
    } else if settings.is_production() {
        AllowOrigin::list(Vec::<HeaderValue>::new())
    } else {
        AllowOrigin::any()
    };
    CorsLayer::new()
        .allow_origin(allow_origin)
        .allow_methods([Method::GET, Method::POST, Method::OPTIONS])
        .allow_headers([header::AUTHORIZATION, header::CONTENT_TYPE, REQUEST_ID])
        .max_age(Duration::from_secs(600))
}

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %e, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = terminate => {},
    }
    tracing::info!("shutdown requested; finishing in-flight requests");
}
