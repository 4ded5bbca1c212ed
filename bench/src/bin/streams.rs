//! Streaming at scale, run by `bench/run.sh streams` (which starts a Lectern server whose
//! model is the fake started here):
//!
//! 1. `STREAMS` (1000) concurrent `chatStream` subscriptions over graphql-transport-ws, one
//!    socket each, started evenly over `RAMP` seconds (5; 0 starts them all at once, so
//!    all 1000 run together from then to the first one's end), against a fake
//!    OpenAI-compatible model that streams `TOKENS` (300) tokens at `RATE` (30) tokens/s: time to first delta beyond the model's own delay
//!    (one token interval), server CPU per delta, server RSS per open stream, errors.
//! 2. `IDLE` (10000) idle signed-in WebSocket connections (acknowledged, with a seeded
//!    reader's access token): server RSS per connection.
//!
//! Environment: `LECTERN_ADDR` (127.0.0.1:8089), `LECTERN_PID`, `FAKE_MODEL_ADDR`
//! (127.0.0.1:8099), `READERS` (the `lectern-bench tokens` file).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::response::Response;
use axum::routing::post;
use futures_util::{SinkExt as _, StreamExt as _};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

fn env(key: &str, default: &str) -> String {
    std::env::var(key).unwrap_or_else(|_| default.to_owned())
}

fn number(key: &str, default: u64) -> u64 {
    env(key, &default.to_string()).parse().expect(key)
}

/// Resident memory of a process, in bytes.
fn rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse::<u64>().ok())
        .unwrap_or(0)
        * 1024
}

/// CPU seconds (user + system) of a process.
fn cpu(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after_name = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // Fields 14 and 15 of stat, counted after the name: indexes 11 and 12 here.
    (ticks(11) + ticks(12)) / 100.0
}

/// The fake model: every chat completion streams `tokens` tokens, one every `interval`.
async fn fake_model(addr: &str, tokens: u64, interval: Duration) {
    let app = axum::Router::new().route(
        "/v1/chat/completions",
        post(move || async move {
            let events = futures_util::stream::unfold(0u64, move |n| async move {
                if n > tokens {
                    return None;
                }
                tokio::time::sleep(interval).await;
                let event = if n == tokens {
                    "data: [DONE]\n\n".to_owned()
                } else {
                    let chunk = json!({ "id": "c", "object": "chat.completion.chunk",
                        "choices": [{ "index": 0, "delta": { "content": format!("w{n} ") } }] });
                    format!("data: {chunk}\n\n")
                };
                Some((Ok::<_, std::io::Error>(event), n + 1))
            });
            Response::builder()
                .header("content-type", "text/event-stream")
                .body(Body::from_stream(events))
                .unwrap()
        }),
    );
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .expect("the fake model's address");
    axum::serve(listener, app)
        .await
        .expect("the fake model serves");
}

async fn connect(addr: &str, token: Option<&str>) -> Result<Socket, String> {
    let mut request = format!("ws://{addr}/graphql/ws")
        .into_client_request()
        .unwrap();
    request.headers_mut().insert(
        "Sec-WebSocket-Protocol",
        "graphql-transport-ws".parse().unwrap(),
    );
    let (mut socket, _) = tokio_tungstenite::connect_async(request)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let payload = match token {
        Some(t) => json!({ "Authorization": format!("Bearer {t}") }),
        None => json!({}),
    };
    socket
        .send(Message::text(
            json!({ "type": "connection_init", "payload": payload }).to_string(),
        ))
        .await
        .map_err(|e| format!("init: {e}"))?;
    loop {
        match socket.next().await {
            Some(Ok(Message::Text(text))) if text.contains("connection_ack") => return Ok(socket),
            Some(Ok(Message::Text(_) | Message::Ping(_) | Message::Pong(_))) => {}
            other => return Err(format!("no ack: {other:?}")),
        }
    }
}

/// What one stream saw.
struct Outcome {
    first_delta: Option<Duration>,
    deltas: u64,
    completed: bool,
    error: Option<String>,
}

async fn stream_one(
    mut socket: Socket,
    start: Arc<tokio::sync::Barrier>,
    delay: Duration,
) -> Outcome {
    let mut outcome = Outcome {
        first_delta: None,
        deltas: 0,
        completed: false,
        error: None,
    };
    start.wait().await;
    tokio::time::sleep(delay).await;
    let query = "subscription { chatStream(input: {message: \"How do I stay signed in?\"}) { __typename ... on ChatDelta { delta } } }";
    let began = Instant::now();
    if let Err(e) = socket
        .send(Message::text(
            json!({ "id": "1", "type": "subscribe", "payload": { "query": query } }).to_string(),
        ))
        .await
    {
        outcome.error = Some(format!("subscribe: {e}"));
        return outcome;
    }
    while let Some(message) = socket.next().await {
        let text = match message {
            Ok(Message::Text(text)) => text,
            Ok(Message::Close(frame)) => {
                outcome.error = Some(format!("closed: {frame:?}"));
                break;
            }
            Ok(_) => continue,
            Err(e) => {
                outcome.error = Some(format!("socket: {e}"));
                break;
            }
        };
        let message: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        match message["type"].as_str() {
            Some("next") => {
                if !message["payload"]["errors"].is_null() {
                    outcome.error = Some(message["payload"]["errors"].to_string());
                    break;
                }
                if message["payload"]["data"]["chatStream"]["__typename"] == "ChatDelta" {
                    outcome.deltas += 1;
                    outcome.first_delta.get_or_insert_with(|| began.elapsed());
                }
            }
            Some("complete") => {
                outcome.completed = true;
                break;
            }
            Some("error") => {
                outcome.error = Some(message["payload"].to_string());
                break;
            }
            _ => {}
        }
    }
    let _ = socket.close(None).await;
    outcome
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1]
}

#[tokio::main]
async fn main() {
    let addr = env("LECTERN_ADDR", "127.0.0.1:8089");
    let pid: u32 = env("LECTERN_PID", "0").parse().expect("LECTERN_PID");
    let model_addr = env("FAKE_MODEL_ADDR", "127.0.0.1:8099");
    let streams = number("STREAMS", 1000) as usize;
    let tokens = number("TOKENS", 300);
    let rate = number("RATE", 30);
    let idle = number("IDLE", 10_000) as usize;
    let interval = Duration::from_secs_f64(1.0 / rate as f64);
    tokio::spawn({
        let model_addr = model_addr.clone();
        async move { fake_model(&model_addr, tokens, interval).await }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;

    // 1. Streams.
    let rss_before = rss(pid);
    let connects = Arc::new(tokio::sync::Semaphore::new(64));
    let opened = futures_util::future::join_all((0..streams).map(|_| {
        let (addr, connects) = (addr.clone(), connects.clone());
        async move {
            let _permit = connects.acquire().await.unwrap();
            connect(&addr, None).await
        }
    }))
    .await;
    let (sockets, failed): (Vec<_>, Vec<_>) = opened.into_iter().partition(Result::is_ok);
    let rss_connected = rss(pid);
    println!(
        "streams: {} sockets open ({} failed to open); server RSS {:.1} MiB before, {:.1} MiB with them open",
        sockets.len(),
        failed.len(),
        rss_before as f64 / 1048576.0,
        rss_connected as f64 / 1048576.0
    );
    let start = Arc::new(tokio::sync::Barrier::new(sockets.len() + 1));
    let cpu_before = cpu(pid);
    let peak = Arc::new(AtomicU64::new(0));
    let sampler = tokio::spawn({
        let peak = peak.clone();
        async move {
            loop {
                peak.fetch_max(rss(pid), Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    });
    // Started evenly over RAMP seconds (0: all at the same instant).
    let ramp = Duration::from_secs_f64(env("RAMP", "5").parse().expect("RAMP"));
    let count = sockets.len().max(1) as u32;
    let tasks: Vec<_> = sockets
        .into_iter()
        .enumerate()
        .map(|(i, s)| {
            let delay = ramp * i as u32 / count;
            tokio::spawn(stream_one(s.unwrap(), start.clone(), delay))
        })
        .collect();
    start.wait().await;
    let began = Instant::now();
    let mut outcomes = Vec::with_capacity(tasks.len());
    for task in tasks {
        outcomes.push(task.await.expect("a stream task"));
    }
    let took = began.elapsed();
    sampler.abort();
    let cpu_used = cpu(pid) - cpu_before;
    let deltas: u64 = outcomes.iter().map(|o| o.deltas).sum();
    let completed = outcomes
        .iter()
        .filter(|o| o.completed && o.error.is_none())
        .count();
    let errors: Vec<&String> = outcomes.iter().filter_map(|o| o.error.as_ref()).collect();
    let mut firsts: Vec<Duration> = outcomes.iter().filter_map(|o| o.first_delta).collect();
    firsts.sort();
    let beyond = |d: Duration| d.saturating_sub(interval).as_secs_f64() * 1e3;
    println!(
        "streams: {completed} of {streams} completed in {:.1} s, {deltas} deltas ({:.0} per stream), {} errors{}",
        took.as_secs_f64(),
        deltas as f64 / streams.max(1) as f64,
        errors.len(),
        errors
            .first()
            .map(|e| format!(" (first: {e})"))
            .unwrap_or_default()
    );
    println!(
        "streams: time to first delta p50 {:.1} ms, p95 {:.1} ms, max {:.1} ms; beyond the model's own {:.1} ms: p50 {:.1} ms, p95 {:.1} ms",
        percentile(&firsts, 0.5).as_secs_f64() * 1e3,
        percentile(&firsts, 0.95).as_secs_f64() * 1e3,
        firsts.last().copied().unwrap_or_default().as_secs_f64() * 1e3,
        interval.as_secs_f64() * 1e3,
        beyond(percentile(&firsts, 0.5)),
        beyond(percentile(&firsts, 0.95)),
    );
    let peak = peak.load(Ordering::Relaxed);
    println!(
        "streams: server CPU {:.2} s = {:.1} us per delta; server RSS peak {:.1} MiB = {:.1} KB per open stream above the connected sockets ({:.1} KB per stream above idle)",
        cpu_used,
        cpu_used * 1e6 / deltas.max(1) as f64,
        peak as f64 / 1048576.0,
        peak.saturating_sub(rss_connected) as f64 / 1024.0 / streams.max(1) as f64,
        peak.saturating_sub(rss_before) as f64 / 1024.0 / streams.max(1) as f64,
    );

    // 2. Idle signed-in connections.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let readers = std::fs::read_to_string(env("READERS", "/var/tmp/lectern-bench/readers.tsv"))
        .expect("READERS: the `lectern-bench tokens` file");
    let tokens: Vec<String> = readers
        .lines()
        .filter_map(|l| l.split_once('\t').map(|(_, t)| t.to_owned()))
        .collect();
    let rss_idle_before = rss(pid);
    let opened = futures_util::future::join_all((0..idle).map(|i| {
        let (addr, connects, token) = (
            addr.clone(),
            connects.clone(),
            tokens[i % tokens.len()].clone(),
        );
        async move {
            let _permit = connects.acquire().await.unwrap();
            connect(&addr, Some(&token)).await
        }
    }))
    .await;
    let open = opened.iter().filter(|o| o.is_ok()).count();
    let first_error = opened.iter().find_map(|o| o.as_ref().err().cloned());
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss_idle = rss(pid);
    println!(
        "idle: {open} of {idle} signed-in connections acknowledged{}; server RSS {:.1} → {:.1} MiB = {:.1} KB per connection",
        first_error
            .map(|e| format!(" (first failure: {e})"))
            .unwrap_or_default(),
        rss_idle_before as f64 / 1048576.0,
        rss_idle as f64 / 1048576.0,
        rss_idle.saturating_sub(rss_idle_before) as f64 / 1024.0 / open.max(1) as f64
    );
    drop(opened);
}
