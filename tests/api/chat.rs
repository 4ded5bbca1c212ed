//! Chat: retrieval from a fixture corpus (BM25 and hybrid), extractive and model answers,
//! history for signed-in readers, the streamed subscription, outages, and ingest.

use std::time::Duration;

use lectern::entities::{conversation, message};
use sea_orm::{ColumnTrait, EntityTrait, PaginatorTrait, QueryFilter, QueryOrder};
use serde_json::{Value, json};

use crate::fake_llm::{FakeLlm, Mode};
use crate::helpers::{
    Backend, TestApp, error_codes, eventually, for_each_backend, register, spawn_app,
    spawn_app_with_url,
};
use crate::pg::PgCluster;

const CHAT: &str = "mutation($input: ChatInput!) { chat(input: $input) {
  answer sources { title path snippet score } conversation { id title } } }";
const PASSWORD: &str = "correct horse battery";

/// Questions and the fixture file that answers each.
const KNOWN: [(&str, &str); 4] = [
    (
        "How do honeybees tell others where the flowers are?",
        "bees.txt",
    ),
    (
        "What does a Fresnel lens do in a lighthouse?",
        "lighthouse.mdx",
    ),
    ("What causes neap tides?", "tides.html"),
    (
        "What happens to a value when its owner goes out of scope?",
        "ownership.md",
    ),
];

fn settings<'a>(pairs: &'a [(&'static str, String)]) -> Vec<(&'a str, &'a str)> {
    pairs.iter().map(|(k, v)| (*k, v.as_str())).collect()
}

async fn ask(app: &TestApp, token: Option<&str>, input: Value) -> Value {
    app.graphql_as(token, CHAT, json!({ "input": input })).await
}

async fn assert_known_questions_find_their_sources(app: &TestApp) {
    for (question, file) in KNOWN {
        let response = ask(app, None, json!({ "message": question })).await;
        assert!(response["errors"].is_null(), "{response}");
        let paths: Vec<&str> = response["data"]["chat"]["sources"]
            .as_array()
            .unwrap()
            .iter()
            .take(3)
            .map(|s| s["path"].as_str().unwrap())
            .collect();
        assert!(
            paths.iter().any(|p| p.ends_with(file)),
            "{question} → {paths:?}"
        );
    }
}

#[tokio::test]
async fn known_questions_retrieve_their_sources_with_bm25() {
    let app = spawn_app(Backend::Sqlite, &[]).await.unwrap();
    assert_known_questions_find_their_sources(&app).await;
    let health = app
        .graphql("{ health { vectorStore llm } }", json!({}))
        .await;
    assert_eq!(
        health["data"]["health"],
        json!({ "vectorStore": "UP", "llm": "NOT_CONFIGURED" })
    );
    app.shutdown().await;
}

#[tokio::test]
async fn known_questions_retrieve_their_sources_with_hybrid_search() {
    let fake = FakeLlm::start(Mode::Fail(500)).await;
    let extra = fake.embedding_settings();
    let app = spawn_app(Backend::Sqlite, &settings(&extra)).await.unwrap();
    assert_known_questions_find_their_sources(&app).await;
    app.shutdown().await;
}

#[tokio::test]
async fn extractive_answers_quote_and_cite_the_book() {
    let app = spawn_app(Backend::Sqlite, &[]).await.unwrap();
    let response = ask(&app, None, json!({ "message": "What causes neap tides?" })).await;
    let answer = response["data"]["chat"]["answer"].as_str().unwrap();
    assert!(
        answer.starts_with(lectern::llm::extractive::NOTICE),
        "{answer}"
    );
    assert!(
        answer.contains("Neap tides happen when the sun and moon pull at right angles"),
        "{answer}"
    );
    assert!(answer.contains("[1]"), "cited: {answer}");
    let nothing = ask(&app, None, json!({ "message": "zyxxy qwerty plover?" })).await;
    assert!(
        !nothing["data"]["chat"]["answer"]
            .as_str()
            .unwrap()
            .is_empty()
    );
    app.shutdown().await;
}

#[tokio::test]
async fn anonymous_turns_are_not_kept_and_signed_in_turns_are() {
    for_each_backend(|app| async move {
        let anonymous = ask(&app, None, json!({ "message": "What causes neap tides?" })).await;
        assert!(anonymous["errors"].is_null(), "{anonymous}");
        assert!(anonymous["data"]["chat"]["conversation"].is_null());
        let stored = conversation::Entity::find()
            .count(app.database.connection())
            .await
            .unwrap();
        assert_eq!(stored, 0, "nothing stored for anonymous readers");

        let token = register(&app, "ada@example.com", PASSWORD).await["accessToken"]
            .as_str()
            .unwrap()
            .to_owned();
        let first = ask(
            &app,
            Some(&token),
            json!({ "message": "What causes neap tides?" }),
        )
        .await;
        assert!(first["errors"].is_null(), "{first}");
        let conversation = &first["data"]["chat"]["conversation"];
        assert_eq!(conversation["title"], "What causes neap tides?");
        let id = conversation["id"].as_str().unwrap().to_owned();

        let second = ask(
            &app,
            Some(&token),
            json!({ "message": "And what about spring tides?", "conversationId": id }),
        )
        .await;
        assert_eq!(
            second["data"]["chat"]["conversation"]["id"],
            id.as_str(),
            "{second}"
        );

        let messages = message::Entity::find()
            .filter(message::Column::ConversationId.eq(&id))
            .order_by_asc(message::Column::Id)
            .all(app.database.connection())
            .await
            .unwrap();
        let roles: Vec<&str> = messages.iter().map(|m| m.role.as_str()).collect();
        assert_eq!(roles, ["user", "assistant", "user", "assistant"]);
        assert_eq!(messages[2].content, "And what about spring tides?");
        assert_eq!(
            messages[1].content,
            first["data"]["chat"]["answer"].as_str().unwrap()
        );
        assert_eq!(
            messages[1].sources.as_array().unwrap().len(),
            first["data"]["chat"]["sources"].as_array().unwrap().len(),
            "sources are stored with the answer"
        );
        app.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn nobody_continues_someone_elses_conversation() {
    for_each_backend(|app| async move {
        let ada = register(&app, "ada@example.com", PASSWORD).await["accessToken"]
            .as_str()
            .unwrap()
            .to_owned();
        let bob = register(&app, "bob@example.com", PASSWORD).await["accessToken"]
            .as_str()
            .unwrap()
            .to_owned();
        let first = ask(
            &app,
            Some(&ada),
            json!({ "message": "What causes neap tides?" }),
        )
        .await;
        let id = first["data"]["chat"]["conversation"]["id"]
            .as_str()
            .unwrap()
            .to_owned();

        let intruder = ask(
            &app,
            Some(&bob),
            json!({ "message": "mine now?", "conversationId": id }),
        )
        .await;
        assert_eq!(error_codes(&intruder), ["NOT_FOUND"], "{intruder}");
        let anonymous = ask(
            &app,
            None,
            json!({ "message": "mine now?", "conversationId": id }),
        )
        .await;
        assert_eq!(error_codes(&anonymous), ["UNAUTHENTICATED"]);
        let count = message::Entity::find()
            .filter(message::Column::ConversationId.eq(&id))
            .count(app.database.connection())
            .await
            .unwrap();
        assert_eq!(count, 2, "nothing was added to Ada's conversation");
        app.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn bad_chat_input_is_refused() {
    let app = spawn_app(Backend::Sqlite, &[]).await.unwrap();
    for input in [
        json!({ "message": "" }),
        json!({ "message": "   " }),
        json!({ "message": "x".repeat(4001) }),
        json!({ "message": "ok", "selectedText": "y".repeat(10_001) }),
    ] {
        let response = ask(&app, None, input).await;
        assert_eq!(error_codes(&response), ["BAD_USER_INPUT"], "{response}");
    }
    app.shutdown().await;
}

#[tokio::test]
async fn a_model_writes_grounded_answers_from_passages_history_and_selection() {
    let fake = FakeLlm::start(Mode::Stream {
        pieces: vec!["Neap tides ".into(), "come from right angles [1].".into()],
        delay: Duration::ZERO,
    })
    .await;
    let extra = fake.llm_settings();
    let app = spawn_app(Backend::Sqlite, &settings(&extra)).await.unwrap();
    let token = register(&app, "ada@example.com", PASSWORD).await["accessToken"]
        .as_str()
        .unwrap()
        .to_owned();

    let first = ask(
        &app,
        Some(&token),
        json!({ "message": "What causes neap tides?" }),
    )
    .await;
    assert_eq!(
        first["data"]["chat"]["answer"],
        "Neap tides come from right angles [1]."
    );
    let id = first["data"]["chat"]["conversation"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let second = ask(
        &app,
        Some(&token),
        json!({ "message": "Explain this sentence", "conversationId": id, "selectedText": "The keepers wound the clockwork." }),
    )
    .await;
    assert!(second["errors"].is_null(), "{second}");

    let requests = fake.chat_requests();
    assert_eq!(requests.len(), 2);
    let prompt = requests[0]["messages"].to_string();
    assert!(
        prompt.contains("Neap tides happen when the sun and moon pull at right angles"),
        "passages in the prompt"
    );
    assert!(prompt.contains("Cite"), "asks for citations");
    assert_eq!(requests[0]["model"], "fake-model");
    let follow_up = requests[1]["messages"].as_array().unwrap();
    let follow_up_text = requests[1]["messages"].to_string();
    assert!(
        follow_up_text.contains("The keepers wound the clockwork."),
        "selected text in the prompt"
    );
    assert!(
        follow_up.iter().any(|m| m["role"] == "assistant"
            && m["content"] == "Neap tides come from right angles [1]."),
        "earlier turns in the prompt"
    );
    assert_eq!(
        follow_up.last().unwrap()["content"],
        "Explain this sentence"
    );
    // Reader text travels in user messages only.
    for message in follow_up.iter().filter(|m| m["role"] == "system") {
        let content = message["content"].as_str().unwrap();
        assert!(!content.contains("The keepers wound") && !content.contains("Explain this"));
    }
    let health = app.graphql("{ health { llm } }", json!({})).await;
    assert_eq!(health["data"]["health"]["llm"], "UP");
    app.shutdown().await;
}

/// A model whose stream arrives one byte at a time, so every multi-byte character and
/// every event is split across network chunks: the answer arrives intact, over HTTP and
/// as the deltas of a stream.
#[tokio::test]
async fn answers_split_mid_character_arrive_intact() {
    let pieces = ["Größe ", "und 日本語 ", "✓ — ", "🐝 [1]."];
    let fake = FakeLlm::start(Mode::Split {
        pieces: pieces.iter().map(|p| (*p).to_owned()).collect(),
        chunk: 1,
    })
    .await;
    let extra = fake.llm_settings();
    let app = spawn_app(Backend::Sqlite, &settings(&extra)).await.unwrap();
    let whole = pieces.concat();
    let answer = ask(&app, None, json!({ "message": "How do bees dance?" })).await;
    assert_eq!(answer["data"]["chat"]["answer"], whole.as_str(), "{answer}");
    let mut socket = subscribe(&app, None, json!({ "message": "How do bees dance?" })).await;
    let mut deltas = String::new();
    loop {
        let message = next_json(&mut socket).await;
        if message["type"] == "complete" {
            break;
        }
        if let Some(delta) = message["payload"]["data"]["chatStream"]["delta"].as_str() {
            deltas.push_str(delta);
        }
    }
    assert_eq!(deltas, whole);
    app.shutdown().await;
}

#[tokio::test]
async fn rate_limited_models_are_retried_and_failing_ones_replaced_by_extracts() {
    let flaky = FakeLlm::start(Mode::FailFirst {
        failures: 2,
        status: 429,
        pieces: vec!["Answer after retries.".into()],
    })
    .await;
    let extra = flaky.llm_settings();
    let app = spawn_app(Backend::Sqlite, &settings(&extra)).await.unwrap();
    let response = ask(&app, None, json!({ "message": "What causes neap tides?" })).await;
    assert_eq!(
        response["data"]["chat"]["answer"], "Answer after retries.",
        "{response}"
    );
    assert_eq!(flaky.chat_requests().len(), 3);
    app.shutdown().await;

    let broken = FakeLlm::start(Mode::Fail(500)).await;
    let extra = broken.llm_settings();
    let app = spawn_app(Backend::Sqlite, &settings(&extra)).await.unwrap();
    let response = ask(&app, None, json!({ "message": "What causes neap tides?" })).await;
    assert!(response["errors"].is_null(), "{response}");
    let answer = response["data"]["chat"]["answer"].as_str().unwrap();
    assert!(
        answer.starts_with(lectern::llm::extractive::NOTICE),
        "{answer}"
    );
    assert!(answer.contains("right angles"));
    app.shutdown().await;
}

#[tokio::test]
async fn a_model_that_stalls_is_timed_out_and_replaced_by_the_extract() {
    let stalled = FakeLlm::start(Mode::Stream {
        pieces: vec!["too late".into()],
        delay: Duration::from_secs(5),
    })
    .await;
    let mut extra = stalled.llm_settings();
    extra.push(("LLM_TIMEOUT_SECONDS", "1".into()));
    let app = spawn_app(Backend::Sqlite, &settings(&extra)).await.unwrap();
    let response = ask(&app, None, json!({ "message": "What causes neap tides?" })).await;
    let answer = response["data"]["chat"]["answer"].as_str().unwrap();
    assert!(
        answer.starts_with(lectern::llm::extractive::NOTICE),
        "{answer}"
    );
    app.shutdown().await;
}

/// Connects over graphql-transport-ws (with a token when given) and subscribes to
/// `chatStream` under id 1.
pub(crate) async fn subscribe(
    app: &TestApp,
    token: Option<&str>,
    input: Value,
) -> crate::ws::Socket {
    let mut socket = crate::ws::connect(&app.addr.to_string(), token).await;
    let query = "subscription($input: ChatInput!) { chatStream(input: $input) {
        __typename
        ... on ChatSources { sources { path } }
        ... on ChatDelta { delta }
        ... on ChatCompleted { answer conversation { id } } } }";
    crate::ws::subscribe(&mut socket, "1", query, json!({ "input": input })).await;
    socket
}

pub(crate) use crate::ws::next as next_json;

#[tokio::test]
async fn chat_stream_sends_sources_then_deltas_then_completed() {
    let fake = FakeLlm::start(Mode::Stream {
        pieces: vec!["Bees ".into(), "dance ".into(), "[1].".into()],
        delay: Duration::from_millis(20),
    })
    .await;
    let extra = fake.llm_settings();
    let app = spawn_app(Backend::Sqlite, &settings(&extra)).await.unwrap();
    let token = register(&app, "ada@example.com", PASSWORD).await["accessToken"]
        .as_str()
        .unwrap()
        .to_owned();
    let mut socket = subscribe(
        &app,
        Some(&token),
        json!({ "message": "How do honeybees find flowers?" }),
    )
    .await;

    let mut kinds = Vec::new();
    let mut deltas = String::new();
    loop {
        let message = next_json(&mut socket).await;
        if message["type"] == "complete" {
            break;
        }
        assert_eq!(message["type"], "next", "{message}");
        let event = &message["payload"]["data"]["chatStream"];
        let kind = event["__typename"].as_str().unwrap().to_owned();
        match kind.as_str() {
            "ChatSources" => assert!(
                event["sources"][0]["path"]
                    .as_str()
                    .unwrap()
                    .ends_with("bees.txt")
            ),
            "ChatDelta" => deltas.push_str(event["delta"].as_str().unwrap()),
            "ChatCompleted" => {
                assert_eq!(event["answer"], "Bees dance [1].");
                assert!(
                    event["conversation"]["id"].is_string(),
                    "stored for the signed-in reader"
                );
            }
            other => panic!("unexpected event {other}"),
        }
        kinds.push(kind);
    }
    assert_eq!(kinds.first().map(String::as_str), Some("ChatSources"));
    assert_eq!(kinds.last().map(String::as_str), Some("ChatCompleted"));
    assert!(kinds[1..kinds.len() - 1].iter().all(|k| k == "ChatDelta"));
    assert_eq!(deltas, "Bees dance [1].");
    app.shutdown().await;
}

#[tokio::test]
async fn an_answer_is_finished_and_stored_after_the_client_disconnects() {
    let fake = FakeLlm::start(Mode::Stream {
        pieces: (0..10).map(|i| format!("part{i} ")).collect(),
        delay: Duration::from_millis(100),
    })
    .await;
    let extra = fake.llm_settings();
    for_each_backend_with_fake(&settings(&extra), |app| async move {
        let payload = register(&app, "ada@example.com", PASSWORD).await;
        let token = payload["accessToken"].as_str().unwrap().to_owned();
        let mut socket = subscribe(
            &app,
            Some(&token),
            json!({ "message": "How do honeybees find flowers?" }),
        )
        .await;
        // Read until the first delta, then hang up.
        loop {
            let message = next_json(&mut socket).await;
            if message["payload"]["data"]["chatStream"]["__typename"] == "ChatDelta" {
                break;
            }
        }
        drop(socket);

        let expected: String = (0..10).map(|i| format!("part{i} ")).collect();
        let conn = app.database.connection().clone();
        let stored = eventually(Duration::from_secs(10), || {
            let (conn, expected) = (conn.clone(), expected.clone());
            async move {
                message::Entity::find()
                    .filter(message::Column::Role.eq("assistant"))
                    .all(&conn)
                    .await
                    .unwrap()
                    .iter()
                    .any(|m| m.content == expected)
            }
        })
        .await;
        assert!(stored, "the whole answer was stored after the disconnect");
        app.shutdown().await;
    })
    .await;
}

async fn for_each_backend_with_fake<F, Fut>(extra: &[(&str, &str)], test: F)
where
    F: Fn(TestApp) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    crate::helpers::for_each_backend_with(extra, test).await
}

/// With PostgreSQL stopped, chat still answers with its sources; `conversation` is null
/// with `DATABASE_UNAVAILABLE` at its path. Once PostgreSQL is back, turns are stored again.
#[tokio::test]
async fn chat_answers_during_a_database_outage() {
    let Some(cluster) = PgCluster::init() else {
        return;
    };
    cluster.start();
    let app = spawn_app_with_url(Backend::Postgres, Some(&cluster.url("postgres")), &[]).await;
    tokio::time::timeout(Duration::from_secs(30), app.database.wait_until_up())
        .await
        .unwrap();
    let token = register(&app, "ada@example.com", PASSWORD).await["accessToken"]
        .as_str()
        .unwrap()
        .to_owned();

    cluster.stop("immediate");
    let mut last = Value::Null;
    for _ in 0..100 {
        last = ask(
            &app,
            Some(&token),
            json!({ "message": "What causes neap tides?" }),
        )
        .await;
        if error_codes(&last) == ["DATABASE_UNAVAILABLE"] {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(error_codes(&last), ["DATABASE_UNAVAILABLE"], "{last}");
    assert_eq!(last["errors"][0]["path"], json!(["chat", "conversation"]));
    assert!(last["data"]["chat"]["conversation"].is_null());
    assert!(
        last["data"]["chat"]["answer"]
            .as_str()
            .unwrap()
            .contains("right angles")
    );
    assert!(
        !last["data"]["chat"]["sources"]
            .as_array()
            .unwrap()
            .is_empty()
    );

    cluster.start();
    let mut last = Value::Null;
    for _ in 0..100 {
        last = ask(
            &app,
            Some(&token),
            json!({ "message": "What causes neap tides?" }),
        )
        .await;
        if last["data"]["chat"]["conversation"]["id"].is_string() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        last["data"]["chat"]["conversation"]["id"].is_string(),
        "turns are stored again after recovery: {last}"
    );
    app.shutdown().await;
}

/// The conformance checks every vector store passes: idempotent ingest, changed files
/// replaced, deleted files removed, search finds the current text only.
async fn store_conformance(retriever: &lectern::retrieval::Retriever) {
    let corpus = tempfile::tempdir().unwrap();
    std::fs::write(
        corpus.path().join("a.md"),
        "# Alpha\nAardvarks eat ants at night.",
    )
    .unwrap();
    std::fs::write(
        corpus.path().join("b.txt"),
        "Beavers build dams from branches.",
    )
    .unwrap();
    std::fs::write(corpus.path().join("ignored.png"), [0u8, 1, 2]).unwrap();
    let roots = [lectern::retrieval::site::Location::Folder(
        corpus.path().to_owned(),
    )];
    let quiet = lectern::retrieval::Quiet;

    let first = retriever.ingest(&roots, &quiet).await.unwrap();
    assert_eq!((first.pages, first.indexed, first.chunks), (2, 2, 2));
    let again = retriever.ingest(&roots, &quiet).await.unwrap();
    assert_eq!(
        (again.indexed, again.unchanged, again.chunks),
        (0, 2, 0),
        "nothing rewritten"
    );

    std::fs::write(
        corpus.path().join("a.md"),
        "# Alpha\nAardvarks now eat termites.",
    )
    .unwrap();
    std::fs::remove_file(corpus.path().join("b.txt")).unwrap();
    let changed = retriever.ingest(&roots, &quiet).await.unwrap();
    assert_eq!((changed.indexed, changed.removed), (1, 1));
    let hits = retriever
        .search("what do aardvarks eat", None, 5)
        .await
        .unwrap()
        .passages;
    assert_eq!(
        hits.len(),
        1,
        "one chunk per file, no stale copies: {hits:?}"
    );
    assert!(hits[0].text.contains("termites"));
    assert!(
        retriever
            .search("beavers dams", None, 5)
            .await
            .unwrap()
            .passages
            .is_empty(),
        "deleted file is gone"
    );
}

#[tokio::test]
async fn the_embedded_store_conforms_and_is_locked_to_one_process() {
    let data = tempfile::tempdir().unwrap();
    let retriever =
        lectern::retrieval::Retriever::embedded(data.path(), None, &Default::default()).unwrap();
    store_conformance(&retriever).await;
    let second = lectern::retrieval::Retriever::embedded(data.path(), None, &Default::default());
    assert!(matches!(
        second,
        Err(lectern::retrieval::RetrievalError::Store(
            lectern::retrieval::store::StoreError::Locked(_)
        ))
    ));
}

/// The same conformance against a real Qdrant server (`crate::qdrant`).
#[tokio::test]
async fn a_qdrant_server_conforms_too() {
    let Some(server) = crate::qdrant::server() else {
        return;
    };
    let service = crate::qdrant::service(&server.grpc);
    let retriever = lectern::retrieval::Retriever::remote(
        &service,
        &crate::qdrant::collection(),
        None,
        &Default::default(),
    )
    .await
    .unwrap();
    store_conformance(&retriever).await;
}

/// Chat retrieves from a Qdrant server as it does from the embedded store, BM25 and
/// hybrid, the corpus indexed there on first start.
#[tokio::test]
async fn known_questions_retrieve_their_sources_from_a_qdrant_server() {
    let Some(server) = crate::qdrant::server() else {
        return;
    };
    let fake = FakeLlm::start(Mode::Fail(500)).await;
    for hybrid in [false, true] {
        let collection = crate::qdrant::collection();
        let mut pairs = vec![
            ("QDRANT_URL", server.grpc.clone()),
            ("QDRANT_COLLECTION", collection),
        ];
        if hybrid {
            pairs.extend(fake.embedding_settings());
        }
        let app = spawn_app(Backend::Sqlite, &settings(&pairs)).await.unwrap();
        assert_known_questions_find_their_sources(&app).await;
        app.shutdown().await;
    }
}

#[test]
fn ingest_command_summarises_and_refuses_a_store_in_use() {
    let dir = tempfile::tempdir().unwrap();
    let corpus = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/corpus");
    let run = || {
        std::process::Command::new(env!("CARGO_BIN_EXE_lectern"))
            .current_dir(dir.path())
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .args(["ingest", corpus])
            .output()
            .unwrap()
    };
    let output = run();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        stdout.contains("indexed 4 pages (4 changed, 0 unchanged, 0 removed, 0 skipped)"),
        "{stdout}"
    );
    let output = run();
    assert!(
        String::from_utf8_lossy(&output.stdout)
            .contains("(0 changed, 4 unchanged, 0 removed, 0 skipped), 0 chunks")
    );

    let _held = lectern::retrieval::Retriever::embedded(
        &dir.path().join("data"),
        None,
        &Default::default(),
    )
    .unwrap();
    let output = run();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(stderr.contains("in use by another process"), "{stderr}");
}

/// A client whose connection drops mid-answer resumes with the turn id and the last
/// delta it saw, gets the rest and `ChatCompleted`; the finished answer stays readable by
/// its id (anonymous readers' too) until `TURN_RETENTION_SECS` have passed, and the
/// stored conversation is shown to its own reader only.
#[tokio::test]
async fn dropped_streams_resume_where_they_left_off() {
    let pieces = ["Bees ", "dance ", "in ", "figure ", "eights [1]."];
    let fake = FakeLlm::start(Mode::Stream {
        pieces: pieces.iter().map(|p| (*p).to_owned()).collect(),
        delay: Duration::from_millis(300),
    })
    .await;
    let mut extra = fake.llm_settings();
    extra.push(("TURN_RETENTION_SECS", "2".into()));
    let app = spawn_app(Backend::Sqlite, &settings(&extra)).await.unwrap();
    let address = app.addr.to_string();
    let ada = register(&app, "ada@example.com", PASSWORD).await["accessToken"]
        .as_str()
        .unwrap()
        .to_owned();
    let stream = "subscription($input: ChatInput!) { chatStream(input: $input) {
        __typename ... on ChatSources { turnId } ... on ChatDelta { delta seq } } }";
    let resume = "subscription($id: ID!, $after: Int) { resumeChat(turnId: $id, afterSeq: $after) {
        __typename ... on ChatSources { turnId } ... on ChatDelta { delta seq }
        ... on ChatCompleted { turnId answer conversation { id } } } }";

    let mut socket = crate::ws::connect(&address, Some(&ada)).await;
    crate::ws::subscribe(
        &mut socket,
        "1",
        stream,
        json!({ "input": { "message": "How do bees dance?" } }),
    )
    .await;
    let first = crate::ws::answer(&mut socket, "1").await;
    let turn_id = first["payload"]["data"]["chatStream"]["turnId"]
        .as_str()
        .unwrap()
        .to_owned();
    let delta = crate::ws::answer(&mut socket, "1").await["payload"]["data"]["chatStream"].clone();
    assert_eq!(
        (delta["delta"].as_str(), delta["seq"].as_i64()),
        (Some("Bees "), Some(1))
    );
    // Read while it streams: the answer so far, not completed.
    let so_far = app
        .graphql(
            "query($id: ID!) { chatTurn(turnId: $id) { answer completed } }",
            json!({ "id": turn_id }),
        )
        .await;
    let answer = so_far["data"]["chatTurn"]["answer"]
        .as_str()
        .unwrap_or_default();
    assert!(
        answer.starts_with("Bees ") && answer.len() < pieces.concat().len(),
        "{so_far}"
    );
    assert!(pieces.concat().starts_with(answer), "{so_far}");
    assert_eq!(so_far["data"]["chatTurn"]["completed"], false);
    drop(socket); // the connection drops mid-answer

    // Someone else (here: anonymous) resumes: the rest, but not the conversation.
    let mut socket = crate::ws::connect(&address, None).await;
    crate::ws::subscribe(
        &mut socket,
        "r",
        resume,
        json!({ "id": turn_id, "after": 1 }),
    )
    .await;
    let mut text = String::from("Bees ");
    let mut seqs = Vec::new();
    let completed = loop {
        let event =
            crate::ws::answer(&mut socket, "r").await["payload"]["data"]["resumeChat"].clone();
        match event["__typename"].as_str().unwrap() {
            "ChatSources" => assert_eq!(event["turnId"], turn_id.as_str()),
            "ChatDelta" => {
                text.push_str(event["delta"].as_str().unwrap());
                seqs.push(event["seq"].as_i64().unwrap());
            }
            _ => break event,
        }
    };
    assert_eq!(seqs, [2, 3, 4, 5], "only what was missed");
    assert_eq!(text, pieces.concat());
    assert_eq!(completed["answer"], pieces.concat().as_str());
    assert!(
        completed["conversation"].is_null(),
        "not the stranger's: {completed}"
    );

    // Its own reader, over HTTP, after it finished: the stored conversation too.
    let mut socket = crate::ws::connect(&address, Some(&ada)).await;
    crate::ws::subscribe(&mut socket, "o", resume, json!({ "id": turn_id })).await;
    let mut owner_deltas = 0;
    let completed = loop {
        let message = crate::ws::answer(&mut socket, "o").await;
        let event = message["payload"]["data"]["resumeChat"].clone();
        match event["__typename"]
            .as_str()
            .unwrap_or_else(|| panic!("{message}"))
        {
            "ChatDelta" => owner_deltas += 1,
            "ChatCompleted" => break event,
            _ => {}
        }
    };
    assert_eq!(owner_deltas, 5, "afterSeq defaults to all of them");
    assert!(completed["conversation"]["id"].is_string(), "{completed}");
    let turn = "query($id: ID!) { chatTurn(turnId: $id) { answer completed sources { path } } }";
    let read = app.graphql(turn, json!({ "id": turn_id })).await;
    assert_eq!(
        read["data"]["chatTurn"]["answer"],
        pieces.concat().as_str(),
        "{read}"
    );
    assert_eq!(read["data"]["chatTurn"]["completed"], true);

    // Unknown ids, and finished turns past their retention, are NOT_FOUND.
    let unknown = app
        .graphql(turn, json!({ "id": uuid::Uuid::new_v4().to_string() }))
        .await;
    assert_eq!(error_codes(&unknown), ["NOT_FOUND"]);
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    let expired = app.graphql(turn, json!({ "id": turn_id })).await;
    assert_eq!(error_codes(&expired), ["NOT_FOUND"], "{expired}");
    app.shutdown().await;
}

/// After a burst of answers, the server keeps a few connections to the model for the
/// next questions, not one per answer of the burst (each holds buffers, more with TLS).
#[tokio::test]
async fn a_burst_of_answers_leaves_a_few_model_connections_open() {
    let fake = FakeLlm::start(Mode::Stream {
        pieces: vec!["Neap tides ".into(), "come from right angles [1].".into()],
        delay: Duration::from_millis(300),
    })
    .await;
    let port = fake
        .base_url
        .trim_start_matches("http://127.0.0.1:")
        .trim_end_matches("/v1")
        .parse::<u16>()
        .unwrap();
    let mut extra = fake.llm_settings();
    extra.extend([
        ("CHAT_RATE_LIMIT_PER_IP", "0".to_owned()),
        ("LLM_MAX_CONCURRENCY", "100".to_owned()),
    ]);
    let app = spawn_app(Backend::Sqlite, &settings(&extra)).await.unwrap();
    let burst = (0..48).map(|_| ask(&app, None, json!({ "message": "What causes neap tides?" })));
    // Mid-answer (each waits 300 ms for its first piece), every answer has its own: the
    // most connections seen at once while the burst runs, however slow the machine.
    let done = std::sync::atomic::AtomicBool::new(false);
    let answers = async {
        let answers = futures_util::future::join_all(burst).await;
        done.store(true, std::sync::atomic::Ordering::Relaxed);
        answers
    };
    let during = async {
        let mut most = 0;
        while !done.load(std::sync::atomic::Ordering::Relaxed) {
            most = most.max(established_to(port));
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        most
    };
    let (answers, during) = tokio::join!(answers, during);
    assert!(
        during >= 48,
        "the answers run side by side, each on a connection of its own: {during}"
    );
    for answer in answers {
        assert_eq!(
            answer["data"]["chat"]["answer"], "Neap tides come from right angles [1].",
            "{answer}"
        );
    }
    assert!(
        eventually(Duration::from_secs(5), || async {
            established_to(port) <= 32
        })
        .await,
        "the connections beyond 32 are closed once the burst is over: {} open",
        established_to(port)
    );
    app.shutdown().await;
}

/// Established TCP connections (IPv4) whose local port is `port`: the model's side of
/// the connections made to it.
fn established_to(port: u16) -> usize {
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap_or_default();
    table
        .lines()
        .skip(1)
        .filter(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let local_port = fields
                .get(1)
                .and_then(|a| a.rsplit_once(':'))
                .and_then(|(_, p)| u16::from_str_radix(p, 16).ok());
            local_port == Some(port) && fields.get(3) == Some(&"01")
        })
        .count()
}
