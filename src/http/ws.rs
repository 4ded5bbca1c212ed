//! GraphQL over WebSocket at `/graphql/ws`, speaking graphql-transport-ws
//! (<https://github.com/enisdenjo/graphql-ws/blob/master/PROTOCOL.md>).
//!
//! A socket is held to the rules of HTTP on every operation, not once per connection: each
//! `subscribe` works out its viewer anew from the credentials sent in `connection_init`
//! (so an expired token is refused exactly as over HTTP), checks the session through the
//! same per-request memo, carries the client address of the upgrade request (so rate
//! limits and sessions see it), and passes the same document limits. The connection
//! itself is closed when its session ends:
//!
//! | code | when |
//! |---|---|
//! | 4400 | a message that is not graphql-transport-ws (bad JSON, unknown type, binary) |
//! | 4401 | `subscribe` before the connection was acknowledged |
//! | 4403 | the access token expired, or the session was logged out or revoked (on PostgreSQL, on any replica or in Better Auth) |
//! | 4406 | the client did not offer the `graphql-transport-ws` subprotocol |
//! | 4408 | no `connection_init` within `WS_INIT_TIMEOUT_SECS` |
//! | 4409 | `subscribe` with the id of a subscription still running |
//! | 4429 | a second `connection_init` |
//! | 1001 | the server is shutting down (after the answers in flight were sent) |
//! | 1009 | a message larger than the HTTP body limit |
//!
//! Past `WS_MAX_SUBSCRIPTIONS` running at once, a `subscribe` is answered with an `error`
//! message (`RATE_LIMITED`) and the connection stays open; past
//! `WS_MAX_CONNECTIONS_PER_IP`, the upgrade is refused with HTTP 429.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, WebSocket};
use axum::extract::{ConnectInfo, State, WebSocketUpgrade};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures_util::{SinkExt as _, StreamExt as _};
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::AppState;
use super::client::client_info;
use crate::auth::viewer::Viewer;
use crate::auth::{ClientInfo, SessionRef};
use crate::graphql::auth::SessionCheck;
use crate::graphql::error::ErrorCode;

pub const PROTOCOL: &str = "graphql-transport-ws";
/// How often a signed-in connection re-checks that its session is still live. Ended
/// sessions are announced at once (by this process, and on PostgreSQL by every replica
/// and Better Auth through `LISTEN/NOTIFY`); the re-check covers announcements missed
/// while the listener was reconnecting.
const SESSION_RECHECK: Duration = Duration::from_secs(60);
/// The read buffer each connection starts with. The library's default, 128 KiB, made an
/// idle socket cost about 110 KB of resident memory (bench/run.sh streams); GraphQL
/// messages are a few hundred bytes, and a larger one grows the buffer as it arrives.
const READ_BUFFER_BYTES: usize = 4 * 1024;
/// How long operations still running when the server stops may take to send their last
/// events (their turns are already finished by then: shutdown waited for them).
const LAST_CALL: Duration = Duration::from_secs(2);

/// Open WebSocket connections per client address, shared by every upgrade.
#[derive(Clone, Default)]
pub struct ConnectionCounts(Arc<Mutex<HashMap<IpAddr, u32>>>);

/// One counted connection; uncounted when dropped.
pub struct CountedConnection {
    counts: ConnectionCounts,
    ip: IpAddr,
}

impl ConnectionCounts {
    fn admit(&self, ip: IpAddr, limit: u32) -> Option<CountedConnection> {
        let mut counts = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let count = counts.entry(ip).or_default();
        if limit != 0 && *count >= limit {
            return None;
        }
        *count += 1;
        Some(CountedConnection {
            counts: self.clone(),
            ip,
        })
    }
}

impl Drop for CountedConnection {
    fn drop(&mut self) {
        let mut counts = self.counts.0.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(count) = counts.get_mut(&self.ip) {
            *count -= 1;
            if *count == 0 {
                counts.remove(&self.ip);
            }
        }
    }
}

pub async fn handler(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    upgrade: WebSocketUpgrade,
) -> Response {
    let limits = &state.settings.limits;
    let client = client_info(peer, &headers, &limits.trusted_proxies);
    let ip = client.ip.unwrap_or(peer.ip());
    let Some(counted) = state.ws_connections.admit(ip, limits.ws_connections_per_ip) else {
        return too_many_connections();
    };
    let max = super::MAX_BODY_BYTES;
    let upgrade = upgrade
        .read_buffer_size(READ_BUFFER_BYTES)
        .max_message_size(max)
        .max_frame_size(max)
        .protocols([PROTOCOL]);
    let offered = upgrade.selected_protocol().is_some();
    let tracker = state.websockets.clone();
    upgrade.on_upgrade(move |socket| {
        tracker.track_future(async move {
            if offered {
                serve(state, client, socket).await;
            } else {
                close(socket, 4406, "Subprotocol not acceptable").await;
            }
            drop(counted);
        })
    })
}

fn too_many_connections() -> Response {
    let body = json!({
        "errors": [{
            "message": "too many WebSocket connections from this address",
            "extensions": { "code": ErrorCode::RateLimited.as_str(), "retryAfter": 10 },
        }],
    });
    let mut response = (StatusCode::TOO_MANY_REQUESTS, axum::Json(body)).into_response();
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("10"));
    response
}

async fn close(mut socket: WebSocket, code: u16, reason: &str) {
    let frame = CloseFrame {
        code,
        reason: reason.into(),
    };
    let _ = socket.send(Message::Close(Some(frame))).await;
}

/// What subscription tasks hand back to the connection.
enum Outgoing {
    Message(Value),
    /// The subscription with this id ended (after its last message).
    Done(String),
}

/// Why the server closes a connection.
struct Closing(u16, &'static str);

struct Connection {
    state: AppState,
    client: ClientInfo,
    /// The `Authorization` the client sent in `connection_init`, verified anew for every
    /// operation.
    credentials: Option<HeaderMap>,
    /// The session those credentials named at `connection_init`, worked out once: the
    /// select loop asks for it on every turn, and which session it is never changes
    /// (whether it is still live is what the checks find out).
    session: Option<SessionRef>,
    /// That session's id, once known (at once for our tokens, after the first check for a
    /// Better Auth token): ended sessions are announced by id.
    session_id: Option<String>,
    running: HashMap<String, JoinHandle<()>>,
    outgoing: mpsc::Sender<Outgoing>,
}

/// Runs one acknowledged-or-not connection until either side closes it.
async fn serve(state: AppState, client: ClientInfo, socket: WebSocket) {
    let (outgoing_tx, mut outgoing) = mpsc::channel(64);
    let mut connection = Connection {
        state,
        client,
        credentials: None,
        session: None,
        session_id: None,
        running: HashMap::new(),
        outgoing: outgoing_tx,
    };
    let (mut sink, mut incoming) = socket.split();
    let mut ended = connection.state.auth.sessions.subscribe();
    let init_deadline = tokio::time::sleep(connection.state.settings.limits.ws_init_timeout);
    tokio::pin!(init_deadline);
    // Set at `connection_init` for a connection signed in with an access token.
    let mut expiry: Option<std::pin::Pin<Box<tokio::time::Sleep>>> = None;
    let mut recheck = tokio::time::interval(SESSION_RECHECK);
    recheck.reset();
    // Set when the server stops: the operations still running get this long to send
    // their last events, then the connection closes with 1001.
    let mut last_call: Option<std::pin::Pin<Box<tokio::time::Sleep>>> = None;
    let stopping = connection.state.stopping.clone();
    let closing = loop {
        if last_call.is_some() && connection.running.is_empty() {
            break Closing(1001, "the server is restarting");
        }
        tokio::select! {
            biased;
            Some(out) = outgoing.recv() => {
                let message = match out {
                    Outgoing::Message(message) => message,
                    Outgoing::Done(id) => {
                        connection.running.remove(&id);
                        continue;
                    }
                };
                if sink.send(Message::Text(message.to_string().into())).await.is_err() {
                    break Closing(1000, "");
                }
            }
            () = stopping.cancelled(), if last_call.is_none() => {
                last_call = Some(Box::pin(tokio::time::sleep(LAST_CALL)));
            }
            () = async { if let Some(last_call) = last_call.as_mut() { last_call.await } }, if last_call.is_some() => {
                break Closing(1001, "the server is restarting");
            }
            message = incoming.next() => {
                let text = match message {
                    Some(Ok(Message::Text(text))) => text,
                    Some(Ok(Message::Binary(_))) => break Closing(4400, "binary messages are not accepted"),
                    Some(Ok(Message::Close(_))) | None => break Closing(1000, ""),
                    Some(Ok(_)) => continue, // ping and pong frames: answered by the library
                    Some(Err(e)) if e.to_string().contains("too long") => {
                        break Closing(1009, "message too big");
                    }
                    Some(Err(_)) => break Closing(1002, "protocol error"),
                };
                let reply = match connection.handle(&text).await {
                    Ok(reply) => reply,
                    Err(closing) => break closing,
                };
                if let Some(reply) = reply {
                    if reply["type"] == "connection_ack" {
                        expiry = connection.expires_in().map(|d| Box::pin(tokio::time::sleep(d)));
                    }
                    if sink.send(Message::Text(reply.to_string().into())).await.is_err() {
                        break Closing(1000, "");
                    }
                }
            }
            () = &mut init_deadline, if connection.credentials.is_none() => {
                break Closing(4408, "Connection initialisation timeout");
            }
            () = async { if let Some(expiry) = expiry.as_mut() { expiry.await } }, if expiry.is_some() => {
                break Closing(4403, "Forbidden: the access token expired");
            }
            announced = ended.recv() => match announced {
                Ok(id) if connection.session_id.as_deref() == Some(id.as_str()) => {
                    break Closing(4403, "Forbidden: the session ended");
                }
                Ok(_) => {}
                // Announcements were missed: look the session up instead.
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                    if connection.session_ended().await {
                        break Closing(4403, "Forbidden: the session ended");
                    }
                }
                // The sender lives as long as the server.
                Err(tokio::sync::broadcast::error::RecvError::Closed) => break Closing(1001, "the server is restarting"),
            },
            _ = recheck.tick(), if connection.session.is_some() => {
                if connection.session_ended().await {
                    break Closing(4403, "Forbidden: the session ended");
                }
            }
        }
    };
    for (_, task) in connection.running.drain() {
        task.abort();
    }
    let Closing(code, reason) = closing;
    let frame = CloseFrame {
        code,
        reason: reason.into(),
    };
    let _ = sink.send(Message::Close(Some(frame))).await;
}

impl Connection {
    /// Answers one client message: `Ok(Some(reply))` to send, `Ok(None)` for nothing, or
    /// the reason to close.
    async fn handle(&mut self, text: &str) -> Result<Option<Value>, Closing> {
        let Ok(message) = serde_json::from_str::<Value>(text) else {
            return Err(Closing(4400, "Invalid message: not JSON"));
        };
        match message["type"].as_str() {
            Some("connection_init") => {
                if self.credentials.is_some() {
                    return Err(Closing(4429, "Too many initialisation requests"));
                }
                let credentials = credential_headers(&message["payload"]);
                self.credentials = Some(credentials);
                let viewer = self.viewer();
                self.session = SessionRef::of(&viewer);
                if let Some(SessionRef::Id { id, .. }) = &self.session {
                    self.session_id = Some(id.clone());
                }
                match viewer {
                    Viewer::Rejected => Err(Closing(4403, "Forbidden: invalid credentials")),
                    _ if self.session_ended().await => {
                        Err(Closing(4403, "Forbidden: the session ended"))
                    }
                    _ => Ok(Some(json!({ "type": "connection_ack" }))),
                }
            }
            Some("ping") => Ok(Some(json!({ "type": "pong" }))),
            Some("pong") => Ok(None),
            Some("subscribe") => {
                if self.credentials.is_none() {
                    return Err(Closing(4401, "Unauthorized"));
                }
                let Some(id) = message["id"].as_str().filter(|id| !id.is_empty()) else {
                    return Err(Closing(4400, "Invalid message: subscribe needs an id"));
                };
                let id = id.to_owned();
                if self.running.contains_key(&id) {
                    // The protocol's wording, with the id it names.
                    return Err(Closing(4409, "Subscriber for this id already exists"));
                }
                let Ok(request) =
                    serde_json::from_value::<async_graphql::Request>(message["payload"].clone())
                else {
                    return Err(Closing(
                        4400,
                        "Invalid message: the payload is not a GraphQL request",
                    ));
                };
                Ok(self.subscribe(id, request))
            }
            Some("complete") => {
                if let Some(task) = message["id"]
                    .as_str()
                    .and_then(|id| self.running.remove(id))
                {
                    task.abort();
                }
                Ok(None)
            }
            _ => Err(Closing(4400, "Invalid message: unknown type")),
        }
    }

    /// Starts one operation; `Some(error message)` when it is refused before it starts.
    fn subscribe(&mut self, id: String, request: async_graphql::Request) -> Option<Value> {
        let limits = &self.state.settings.limits;
        if self.running.len() >= limits.ws_subscriptions {
            let error = json!({
                "message": format!("at most {} operations may run at once on one connection", limits.ws_subscriptions),
                "extensions": { "code": ErrorCode::RateLimited.as_str(), "retryAfter": 1 },
            });
            return Some(json!({ "id": id, "type": "error", "payload": [error] }));
        }
        let mut request = request
            .data(self.viewer())
            .data(self.client.clone())
            .data(SessionCheck::default());
        if let Err(error) = self.state.documents.prepare(&mut request) {
            return Some(json!({ "id": id, "type": "error", "payload": [error] }));
        }
        let schema = self.state.schema.clone();
        let outgoing = self.outgoing.clone();
        let task_id = id.clone();
        let task = tokio::spawn(async move {
            let mut responses = std::pin::pin!(schema.execute_stream(request));
            while let Some(mut response) = responses.next().await {
                super::give_errors_a_code(&mut response);
                let message = json!({ "id": task_id, "type": "next", "payload": response });
                if outgoing.send(Outgoing::Message(message)).await.is_err() {
                    return;
                }
            }
            let complete = json!({ "id": task_id, "type": "complete" });
            let _ = outgoing.send(Outgoing::Message(complete)).await;
            let _ = outgoing.send(Outgoing::Done(task_id)).await;
        });
        self.running.insert(id, task);
        None
    }

    /// The viewer by the same rule as an HTTP request with these headers, at this moment.
    fn viewer(&self) -> Viewer {
        match &self.credentials {
            Some(headers) => Viewer::from_headers(
                headers,
                &self.state.auth.keys,
                self.state.better_auth.as_deref(),
            ),
            None => Viewer::Anonymous,
        }
    }

    /// How long until the access token expires, for a signed-in connection with one.
    fn expires_in(&self) -> Option<Duration> {
        match self.viewer() {
            Viewer::Token(claims) => {
                let left = claims.exp - chrono::Utc::now().timestamp();
                Some(Duration::from_secs(left.max(0) as u64))
            }
            _ => None,
        }
    }

    /// Whether the connection's session is known to be gone (and, while it is live, which
    /// session it is). An unreachable database leaves it open: the fields that need the
    /// session answer for themselves.
    async fn session_ended(&mut self) -> bool {
        let Some(session) = self.session.clone() else {
            return false;
        };
        let found = self
            .state
            .db
            .run(|conn| async move { crate::auth::live_session_id(&conn, &session).await })
            .await;
        match found {
            Ok(None) => true,
            Ok(Some(id)) => {
                self.session_id = Some(id);
                false
            }
            Err(_) => false,
        }
    }
}

/// `{"Authorization": "Bearer …"}` (any case, or nested under `headers`) as a header map.
fn credential_headers(payload: &Value) -> HeaderMap {
    let mut headers = HeaderMap::new();
    let objects = [Some(payload), payload.get("headers")];
    for object in objects.into_iter().flatten().filter_map(|v| v.as_object()) {
        for (key, value) in object {
            if key.eq_ignore_ascii_case("authorization")
                && let Some(value) = value.as_str().and_then(|v| HeaderValue::from_str(v).ok())
            {
                headers.insert(header::AUTHORIZATION, value);
            }
        }
    }
    headers
}
