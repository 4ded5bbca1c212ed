//! A stand-in for an OpenAI-compatible API, speaking its wire format: streamed chat
//! completions as Server-Sent Events, error statuses with `Retry-After`, and embeddings.
//! It records every request so tests can look at the prompts.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use serde_json::{Value, json};

/// How the fake answers chat completions.
#[derive(Clone)]
pub enum Mode {
    /// Streams these pieces, waiting `delay` before each.
    Stream {
        pieces: Vec<String>,
        delay: Duration,
    },
    /// Answers the first `failures` requests with `status` (and `Retry-After: 0`), then
    /// streams `pieces`.
    FailFirst {
        failures: usize,
        status: u16,
        pieces: Vec<String>,
    },
    /// Always answers with this status.
    Fail(u16),
    /// Streams `pieces` as usual, but cuts the bytes of the whole body into chunks of
    /// `chunk` bytes, each sent on its own: characters and lines split across chunks, as
    /// real networks deliver them.
    Split { pieces: Vec<String>, chunk: usize },
}

#[derive(Clone)]
struct Shared {
    mode: Arc<Mutex<Mode>>,
    requests: Arc<Mutex<Vec<Value>>>,
}

pub struct FakeLlm {
    pub base_url: String,
    shared: Shared,
}

/// Dimensions of the fake embeddings.
pub const DIMS: usize = 64;

impl FakeLlm {
    pub async fn start(mode: Mode) -> Self {
        let shared = Shared {
            mode: Arc::new(Mutex::new(mode)),
            requests: Arc::default(),
        };
        let app = Router::new()
            .route("/v1/chat/completions", post(completions))
            .route("/v1/embeddings", post(embeddings))
            .with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base_url = format!("http://{}/v1", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self { base_url, shared }
    }

    /// The chat completion requests received so far.
    pub fn chat_requests(&self) -> Vec<Value> {
        self.shared
            .requests
            .lock()
            .unwrap()
            .iter()
            .filter(|r| r.get("messages").is_some())
            .cloned()
            .collect()
    }

    /// The bodies of the embedding requests received so far.
    pub fn embedding_requests(&self) -> Vec<Value> {
        self.shared
            .requests
            .lock()
            .unwrap()
            .iter()
            .filter_map(|r| r.get("embeddings").cloned())
            .collect()
    }

    /// Settings that point Lectern's model at this fake.
    pub fn llm_settings(&self) -> Vec<(&'static str, String)> {
        vec![
            ("LLM_BASE_URL", self.base_url.clone()),
            ("LLM_MODEL", "fake-model".into()),
            ("LLM_API_KEY", "sk-fake-key-for-tests".into()),
        ]
    }

    pub fn embedding_settings(&self) -> Vec<(&'static str, String)> {
        vec![
            ("EMBEDDING_BASE_URL", self.base_url.clone()),
            ("EMBEDDING_MODEL", "fake-embedder".into()),
            ("EMBEDDING_DIMENSIONS", DIMS.to_string()),
        ]
    }
}

async fn completions(State(shared): State<Shared>, Json(body): Json<Value>) -> Response {
    let count = {
        let mut requests = shared.requests.lock().unwrap();
        requests.push(body.clone());
        requests
            .iter()
            .filter(|r| r.get("messages").is_some())
            .count()
    };
    assert_eq!(body["stream"], true, "Lectern always streams");
    let mode = shared.mode.lock().unwrap().clone();
    let (pieces, delay) = match mode {
        Mode::Split { pieces, chunk } => return split_stream(&pieces, chunk),
        Mode::Fail(status) => return failure(status),
        Mode::FailFirst {
            failures, status, ..
        } if count <= failures => return failure(status),
        Mode::FailFirst { pieces, .. } => (pieces, Duration::ZERO),
        Mode::Stream { pieces, delay } => (pieces, delay),
    };
    let events = futures_util::stream::unfold(pieces.into_iter(), move |mut rest| async move {
        tokio::time::sleep(delay).await;
        let event = sse_event(&rest.next()?);
        Some((Ok::<_, std::io::Error>(event), rest))
    });
    let done = futures_util::stream::once(async { Ok("data: [DONE]\n\n".to_owned()) });
    let body = Body::from_stream(futures_util::StreamExt::chain(events, done));
    Response::builder()
        .header("content-type", "text/event-stream")
        .body(body)
        .unwrap()
}

fn sse_event(piece: &str) -> String {
    let chunk = json!({ "id": "c", "object": "chat.completion.chunk",
        "choices": [{ "index": 0, "delta": { "content": piece } }] });
    format!("data: {chunk}\n\n")
}

fn split_stream(pieces: &[String], chunk: usize) -> Response {
    let mut body: Vec<u8> = pieces
        .iter()
        .flat_map(|p| sse_event(p).into_bytes())
        .collect();
    body.extend_from_slice(b"data: [DONE]\n\n");
    let chunks: Vec<Vec<u8>> = body.chunks(chunk).map(<[u8]>::to_vec).collect();
    let stream = futures_util::stream::unfold(chunks.into_iter(), |mut rest| async move {
        let next = rest.next()?;
        tokio::time::sleep(Duration::from_millis(2)).await;
        Some((Ok::<_, std::io::Error>(next), rest))
    });
    Response::builder()
        .header("content-type", "text/event-stream")
        .body(Body::from_stream(stream))
        .unwrap()
}

fn failure(status: u16) -> Response {
    let status = StatusCode::from_u16(status).unwrap();
    (
        status,
        [("retry-after", "0")],
        Json(json!({ "error": { "message": "fake failure", "type": "server_error" } })),
    )
        .into_response()
}

/// Bag-of-words hashed into `DIMS` dimensions: texts sharing words point the same way.
async fn embeddings(State(shared): State<Shared>, Json(body): Json<Value>) -> Json<Value> {
    shared
        .requests
        .lock()
        .unwrap()
        .push(json!({ "embeddings": body.clone() }));
    let inputs: Vec<String> = match &body["input"] {
        Value::Array(items) => items
            .iter()
            .map(|i| i.as_str().unwrap_or_default().to_owned())
            .collect(),
        Value::String(s) => vec![s.clone()],
        _ => vec![],
    };
    let data: Vec<Value> = inputs
        .iter()
        .enumerate()
        .map(|(index, text)| json!({ "object": "embedding", "index": index, "embedding": embed(text) }))
        .collect();
    Json(json!({ "object": "list", "data": data, "model": "fake-embedder" }))
}

fn embed(text: &str) -> Vec<f32> {
    let mut v = vec![0f32; DIMS];
    for word in text
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| w.len() > 3)
    {
        let hash = word
            .to_lowercase()
            .bytes()
            .fold(1469598103934665603u64, |h, b| {
                (h ^ u64::from(b)).wrapping_mul(1099511628211)
            });
        v[(hash % DIMS as u64) as usize] += 1.0;
    }
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-6);
    v.iter().map(|x| x / norm).collect()
}
