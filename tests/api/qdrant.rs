//! A real Qdrant server for the tests: `TEST_QDRANT_URL` when set, else one started from
//! `../shared/qdrant/run-qdrant` (Qdrant 1.18.3) on free ports with temporary storage,
//! shared by every test of the binary (each in a collection of its own) and stopped and
//! removed when the test process ends. Where neither is available the tests that need it
//! print a notice and pass, unless `LECTERN_REQUIRE_QDRANT=1` (CI sets it).

use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use lectern::config::RemoteService;
use lectern::retrieval::remote::RemoteStore;
use lectern::retrieval::store::StoreError;

use serde_json::json;

use crate::helpers::{Backend, error_codes, eventually, spawn_app};
use crate::pg::free_port;

const RUN_QDRANT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/qdrant/run-qdrant");

/// The shared server: its gRPC URL (what `QDRANT_URL` takes) and its REST URL.
pub struct Server {
    pub grpc: String,
    pub rest: String,
}

pub fn server() -> Option<&'static Server> {
    static SERVER: OnceLock<Option<Server>> = OnceLock::new();
    SERVER.get_or_init(start).as_ref()
}

fn start() -> Option<Server> {
    if let Ok(url) = std::env::var("TEST_QDRANT_URL") {
        return Some(Server {
            grpc: url,
            rest: String::new(),
        });
    }
    if !std::path::Path::new(RUN_QDRANT).exists() {
        assert!(
            std::env::var("LECTERN_REQUIRE_QDRANT").as_deref() != Ok("1"),
            "LECTERN_REQUIRE_QDRANT=1 but neither TEST_QDRANT_URL nor {RUN_QDRANT} is there"
        );
        eprintln!(
            "notice: no Qdrant server (TEST_QDRANT_URL unset, no ../shared/qdrant); the tests against one are skipped"
        );
        return None;
    }
    let (grpc, rest) = (free_port(), free_port());
    let storage = std::env::temp_dir().join(format!("lectern-qdrant-{}", std::process::id()));
    // A watchdog that nobody waits for runs the server and, once this process is gone,
    // stops it and removes its storage.
    let script = format!(
        "{RUN_QDRANT} {grpc} {rest} {dir} & server=$!; while kill -0 {pid} 2>/dev/null; do sleep 0.5; done; kill $server; sleep 1; rm -rf {dir}",
        dir = storage.display(),
        pid = std::process::id(),
    );
    let status = Command::new("sh")
        .args(["-c", &format!("({script}) >/dev/null 2>&1 &")])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("start the Qdrant server");
    assert!(status.success());
    let rest = format!("http://127.0.0.1:{rest}");
    let ready = format!("{rest}/readyz");
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    loop {
        let up = std::process::Command::new("curl")
            .args(["-fs", "-o", "/dev/null", &ready])
            .status()
            .is_ok_and(|s| s.success())
            // REST can answer before the gRPC listener is bound (a test once found it
            // refusing connections right after `/readyz` said ready).
            && std::net::TcpStream::connect(("127.0.0.1", grpc)).is_ok();
        if up {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the Qdrant server did not come up within 120 s"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    Some(Server {
        grpc: format!("http://127.0.0.1:{grpc}"),
        rest,
    })
}

/// A collection name no other test uses.
pub fn collection() -> String {
    format!("lectern_test_{}", uuid::Uuid::now_v7().simple())
}

pub fn service(url: &str) -> RemoteService {
    RemoteService {
        url: url.to_owned(),
        api_key: std::env::var("TEST_QDRANT_API_KEY")
            .ok()
            .map(lectern::config::Secret::new),
        timeout: Duration::from_secs(5),
    }
}

/// Replicas starting at the same moment against a new collection all come up (the
/// check-then-create race made most of them exit with "already exists").
#[tokio::test]
async fn replicas_set_up_one_collection_at_once() {
    let Some(server) = server() else { return };
    let collection = collection();
    let service = service(&server.grpc);
    let opened = futures_util::future::join_all(
        (0..4).map(|_| RemoteStore::open(&service, &collection, Some(8))),
    )
    .await;
    for store in opened {
        store.expect("every replica sets up the collection");
    }
}

/// A collection made for other settings stops start-up with one line saying what differs.
#[tokio::test]
async fn a_collection_that_does_not_match_the_settings_is_refused() {
    let Some(server) = server() else { return };
    let collection = collection();
    let service = service(&server.grpc);
    RemoteStore::open(&service, &collection, Some(64))
        .await
        .expect("created");
    let layout = |e: StoreError| match e {
        StoreError::Layout(line) => line,
        other => panic!("not a layout error: {other}"),
    };
    let smaller = layout(
        RemoteStore::open(&service, &collection, Some(32))
            .await
            .err()
            .unwrap(),
    );
    assert_eq!(
        smaller,
        format!(
            "the Qdrant collection `{collection}` does not match the settings: its `dense` vectors have 64 dimensions, EMBEDDING_DIMENSIONS is 32; use another QDRANT_COLLECTION, or delete it and run `lectern ingest` again"
        )
    );
    let none = layout(
        RemoteStore::open(&service, &collection, None)
            .await
            .err()
            .unwrap(),
    );
    assert!(
        none.contains("it has 64-dimension `dense` vectors, but no EMBEDDING_BASE_URL is set"),
        "{none}"
    );
}

/// `QDRANT_URL` pointing at the REST port gets an error that says so.
#[tokio::test]
async fn the_rest_port_is_named_as_such() {
    let Some(server) = server() else { return };
    if server.rest.is_empty() {
        return;
    }
    let error = RemoteStore::open(&service(&server.rest), &collection(), None)
        .await
        .err()
        .expect("a REST port cannot be used")
        .to_string();
    assert!(
        error.starts_with(&format!(
            "vector store error: QDRANT_URL {} is Qdrant's REST port; Lectern speaks gRPC: use the gRPC port (6334 by default)",
            server.rest
        )),
        "{error}"
    );
}

/// A Qdrant server run by one test, stopped when it ends (its storage removed after).
struct OwnServer {
    process: std::process::Child,
    _storage: tempfile::TempDir,
}

impl Drop for OwnServer {
    fn drop(&mut self) {
        let _ = self.process.kill();
        let _ = self.process.wait();
    }
}

/// `lectern serve` starts and serves while Qdrant is down: chat answers
/// `UPSTREAM_UNAVAILABLE` and health says so. When Qdrant comes up, the server sets the
/// collection up, indexes its corpus and answers, without a restart.
#[tokio::test]
async fn the_server_serves_while_qdrant_is_down_and_recovers_by_itself() {
    if server().is_none() || !std::path::Path::new(RUN_QDRANT).exists() {
        return;
    }
    let (grpc, rest) = (free_port(), free_port());
    let url = format!("http://127.0.0.1:{grpc}");
    let collection = collection();
    let app = spawn_app(
        Backend::Sqlite,
        &[
            ("QDRANT_URL", url.as_str()),
            ("QDRANT_COLLECTION", collection.as_str()),
            ("QDRANT_TIMEOUT_MS", "500"),
        ],
    )
    .await
    .expect("the server starts without Qdrant");
    let ask = || {
        app.graphql(
            "mutation { chat(input: {message: \"What causes neap tides?\"}) { sources { path } } }",
            json!({}),
        )
    };
    let vector_store = || async {
        app.graphql("{ health { vectorStore } }", json!({})).await["data"]["health"]["vectorStore"]
            .clone()
    };
    assert_eq!(error_codes(&ask().await), ["UPSTREAM_UNAVAILABLE"]);
    assert_eq!(vector_store().await, "DOWN");

    let storage = tempfile::tempdir().unwrap();
    let _qdrant = OwnServer {
        process: Command::new(RUN_QDRANT)
            .args([grpc.to_string(), rest.to_string()])
            .arg(storage.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("run-qdrant starts"),
        _storage: storage,
    };
    let recovered = eventually(Duration::from_secs(90), || async {
        vector_store().await == "UP"
            && ask().await["data"]["chat"]["sources"]
                .as_array()
                .is_some_and(|s| s.iter().any(|s| s["path"] == "tides.html"))
    })
    .await;
    assert!(recovered, "answers from Qdrant once it is up");
    app.shutdown().await;
}

/// A Qdrant that hangs (SIGSTOP) costs a chat at most `QDRANT_TIMEOUT_MS` per call, not
/// the client library's default 5 s retried: the chat answers `UPSTREAM_UNAVAILABLE`
/// well within a reader's patience, and answers again once Qdrant resumes.
#[tokio::test]
async fn a_hung_qdrant_costs_a_chat_its_deadline_only() {
    if server().is_none() || !std::path::Path::new(RUN_QDRANT).exists() {
        return;
    }
    let (grpc, rest) = (free_port(), free_port());
    let storage = tempfile::tempdir().unwrap();
    let qdrant = OwnServer {
        process: Command::new(RUN_QDRANT)
            .args([grpc.to_string(), rest.to_string()])
            .arg(storage.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("run-qdrant starts"),
        _storage: storage,
    };
    let ready = format!("http://127.0.0.1:{rest}/readyz");
    assert!(
        eventually(Duration::from_secs(60), || async {
            reqwest::get(&ready).await.is_ok_and(|r| r.status() == 200)
        })
        .await
    );
    let url = format!("http://127.0.0.1:{grpc}");
    let collection = collection();
    let app = spawn_app(
        Backend::Sqlite,
        &[
            ("QDRANT_URL", url.as_str()),
            ("QDRANT_COLLECTION", collection.as_str()),
            ("QDRANT_TIMEOUT_MS", "300"),
        ],
    )
    .await
    .unwrap();
    let ask = |within: Duration| {
        let client = reqwest::Client::builder().timeout(within).build().unwrap();
        let url = app.url("/graphql");
        async move {
            client
                .post(url)
                .json(&json!({ "query": "mutation { chat(input: {message: \"What causes neap tides?\"}) { answer } }" }))
                .send()
                .await
                .expect("answered before the client gave up")
                .json::<serde_json::Value>()
                .await
                .unwrap()
        }
    };
    let before = ask(Duration::from_secs(30)).await;
    assert!(before["errors"].is_null(), "{before}");

    let pid = qdrant.process.id().to_string();
    let signal = |name: &str| {
        let status = Command::new("kill").args([name, &pid]).status().unwrap();
        assert!(status.success());
    };
    signal("-STOP");
    let hung = ask(Duration::from_secs(5)).await;
    signal("-CONT");
    assert_eq!(error_codes(&hung), ["UPSTREAM_UNAVAILABLE"], "{hung}");
    assert!(
        eventually(Duration::from_secs(30), || async {
            ask(Duration::from_secs(30)).await["errors"].is_null()
        })
        .await,
        "answers again once Qdrant resumes"
    );
    app.shutdown().await;
}
