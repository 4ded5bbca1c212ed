//! An OpenAI-compatible chat completions client that streams (`stream: true`, Server-Sent
//! Events), bounds every wait, and retries 429 and 5xx answers with backoff, honouring
//! `Retry-After`. Retries happen only before the first token: a half-streamed answer is
//! never started over.

use std::time::Duration;

use eventsource_stream::{EventStreamError, Eventsource as _};
use futures_util::StreamExt;
use serde::Deserialize;

use crate::config::ModelService;

/// Attempts per completion, the first included.
const ATTEMPTS: u32 = 3;
const BACKOFF_START: Duration = Duration::from_millis(250);
/// Idle connections to the model kept for reuse.
const IDLE_CONNECTIONS: usize = 32;
/// Longest wait between attempts, whatever `Retry-After` asks for.
const BACKOFF_CAP: Duration = Duration::from_secs(5);

#[derive(Debug, Clone, serde::Serialize)]
pub struct ChatMessage {
    pub role: &'static str,
    pub content: String,
}

/// The body of a chat completion request.
#[derive(serde::Serialize)]
struct CompletionRequest<'a> {
    model: &'a str,
    messages: &'a [ChatMessage],
    stream: bool,
    temperature: f32,
}

#[derive(Debug, thiserror::Error)]
pub enum LlmError {
    #[error("model request failed: {0}")]
    Request(String),
    #[error("model answered {status}")]
    Status { status: u16 },
    #[error("model did not answer within {0:?}")]
    Timeout(Duration),
    #[error("model stream was malformed: {0}")]
    Protocol(String),
}

pub struct ChatModel {
    http: reqwest::Client,
    service: ModelService,
}

#[derive(Deserialize)]
struct StreamChunk {
    #[serde(default)]
    choices: Vec<StreamChoice>,
}

#[derive(Deserialize)]
struct StreamChoice {
    #[serde(default)]
    delta: Delta,
}

#[derive(Deserialize, Default)]
struct Delta {
    #[serde(default)]
    content: Option<String>,
}

impl ChatModel {
    pub fn new(service: ModelService) -> Self {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            // After a burst of answers, keep a few connections for the next questions,
            // not one per stream of the burst (each holds ~25 KB of buffers, more with
            // TLS) for reqwest's default 90 s.
            .pool_max_idle_per_host(IDLE_CONNECTIONS)
            .pool_idle_timeout(Duration::from_secs(30))
            .build()
            .expect("a TLS-capable HTTP client builds");
        Self { http, service }
    }

    /// Streams a completion, calling `on_delta` for every piece of text, and returns the
    /// whole text. An error after some text has streamed is returned with that text, so
    /// the caller can keep what the reader already saw.
    ///
    /// The messages are dropped once the model has answered, not held while the answer
    /// streams (the passages in them are a few KB per open stream).
    pub async fn complete(
        &self,
        messages: Vec<ChatMessage>,
        mut on_delta: impl FnMut(&str),
    ) -> Result<String, (LlmError, String)> {
        let body = CompletionRequest {
            model: &self.service.model,
            messages: &messages,
            stream: true,
            temperature: 0.2,
        };
        let body = match serde_json::to_vec(&body) {
            Ok(body) => hyper::body::Bytes::from(body),
            Err(e) => return Err((LlmError::Protocol(e.to_string()), String::new())),
        };
        drop(messages);
        let response = Box::pin(self.send_with_retries(body))
            .await
            .map_err(|e| (e, String::new()))?;
        // A maintained SSE parser: events split across network chunks (a character's
        // bytes included) are put back together before they are decoded.
        let mut events = response.bytes_stream().eventsource();
        let mut text = String::new();
        loop {
            let next = match tokio::time::timeout(self.service.timeout, events.next()).await {
                Ok(next) => next,
                Err(_) => return Err((LlmError::Timeout(self.service.timeout), text)),
            };
            let Some(event) = next else {
                // The server closed the stream without [DONE]; keep what arrived.
                return if text.is_empty() {
                    Err((
                        LlmError::Protocol("stream ended before any text".into()),
                        text,
                    ))
                } else {
                    Ok(text)
                };
            };
            let event = match event {
                Ok(event) => event,
                Err(EventStreamError::Transport(e)) => {
                    return Err((LlmError::Request(e.without_url().to_string()), text));
                }
                Err(e) => return Err((LlmError::Protocol(e.to_string()), text)),
            };
            let data = event.data.trim();
            if data == "[DONE]" {
                return Ok(text);
            }
            let chunk: StreamChunk = match serde_json::from_str(data) {
                Ok(c) => c,
                Err(e) => return Err((LlmError::Protocol(e.to_string()), text)),
            };
            for choice in chunk.choices {
                if let Some(piece) = choice.delta.content.filter(|p| !p.is_empty()) {
                    on_delta(&piece);
                    text.push_str(&piece);
                }
            }
        }
    }

    async fn send_with_retries(
        &self,
        body: hyper::body::Bytes,
    ) -> Result<reqwest::Response, LlmError> {
        let mut backoff = BACKOFF_START;
        let mut last_error = LlmError::Request("no attempt made".into());
        for attempt in 1..=ATTEMPTS {
            let mut request = self
                .http
                .post(format!("{}/chat/completions", self.service.base_url))
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(body.clone());
            if let Some(key) = &self.service.api_key {
                request = request.bearer_auth(key.expose());
            }
            let wait = match tokio::time::timeout(self.service.timeout, request.send()).await {
                Err(_) => {
                    last_error = LlmError::Timeout(self.service.timeout);
                    backoff
                }
                Ok(Err(e)) => {
                    last_error = LlmError::Request(e.without_url().to_string());
                    backoff
                }
                Ok(Ok(response)) if response.status().is_success() => return Ok(response),
                Ok(Ok(response)) => {
                    let status = response.status();
                    last_error = LlmError::Status {
                        status: status.as_u16(),
                    };
                    if !(status.as_u16() == 429 || status.is_server_error()) {
                        return Err(last_error);
                    }
                    retry_after(&response).unwrap_or(backoff)
                }
            };
            if attempt < ATTEMPTS {
                tracing::warn!(attempt, error = %last_error, retry_in = ?wait.min(BACKOFF_CAP), "model request failed, retrying");
                tokio::time::sleep(wait.min(BACKOFF_CAP)).await;
                backoff = (backoff * 2).min(BACKOFF_CAP);
            }
        }
        Err(last_error)
    }
}

/// `Retry-After` in seconds (the HTTP-date form is rare from model APIs and ignored).
fn retry_after(response: &reqwest::Response) -> Option<Duration> {
    let value = response
        .headers()
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?;
    let seconds: f64 = value.trim().parse().ok()?;
    (seconds.is_finite() && seconds >= 0.0).then(|| Duration::from_secs_f64(seconds))
}
