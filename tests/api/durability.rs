//! Concurrent writers on the default SQLite database and on PostgreSQL: no "database is
//! locked", and concurrent refreshes of one token keep their session.

use std::time::Duration;

use serde_json::{Value, json};

use crate::helpers::{error_codes, for_each_backend, for_each_backend_with, register};
use crate::process::{ServerProcess, database_is};

const PASSWORD: &str = "correct horse battery";
const REFRESH: &str =
    "mutation($t: String!) { refreshSession(refreshToken: $t) { accessToken refreshToken } }";
const ME: &str = "{ me { id } }";

#[tokio::test]
async fn twenty_concurrent_writers_get_no_error() {
    for_each_backend(|app| async move {
        // Registrations: 20 accounts at once.
        let registrations = (0..20).map(|i| {
            let app = &app;
            async move {
                app.graphql(
                    "mutation($input: RegisterInput!) { register(input: $input) { accessToken } }",
                    json!({ "input": { "email": format!("writer{i}@example.com"), "password": PASSWORD, "name": "Writer" } }),
                )
                .await
            }
        });
        let answers = futures_util::future::join_all(registrations).await;
        for answer in &answers {
            assert!(answer["errors"].is_null(), "{:?}: {answer}", app.backend);
        }
        // Chat turns stored for one reader: 20 at once.
        let token = answers[0]["data"]["register"]["accessToken"].as_str().unwrap();
        let turns = (0..20).map(|i| {
            let app = &app;
            async move {
                app.graphql_as(
                    Some(token),
                    "mutation($m: String!) { chat(input: {message: $m}) { conversation { id } } }",
                    json!({ "m": format!("How do bees dance? ({i})") }),
                )
                .await
            }
        });
        for answer in futures_util::future::join_all(turns).await {
            assert!(answer["errors"].is_null(), "{:?}: {answer}", app.backend);
            assert!(answer["data"]["chat"]["conversation"]["id"].is_string());
        }
        // Sign-ins: 20 at once.
        let logins = (0..20).map(|i| {
            let app = &app;
            async move {
                app.graphql(
                    "mutation($input: LoginInput!) { login(input: $input) { accessToken } }",
                    json!({ "input": { "email": format!("writer{i}@example.com"), "password": PASSWORD } }),
                )
                .await
            }
        });
        for answer in futures_util::future::join_all(logins).await {
            assert!(answer["errors"].is_null(), "{:?}: {answer}", app.backend);
        }
        app.shutdown().await;
    })
    .await;
}

async fn refresh(app: &crate::helpers::TestApp, token: &str) -> Value {
    app.graphql(REFRESH, json!({ "t": token })).await
}

/// Twenty refreshes of one token at once (tabs, retries): every caller gets a working
/// pair and the session survives. The same token presented after the grace window still
/// revokes the session.
#[tokio::test]
async fn concurrent_refreshes_keep_their_session() {
    for_each_backend_with(&[("REFRESH_REUSE_GRACE_SECS", "2")], |app| async move {
        let registered = register(&app, "tabs@example.com", PASSWORD).await;
        let token = registered["refreshToken"].as_str().unwrap().to_owned();
        let answers = futures_util::future::join_all((0..20).map(|_| refresh(&app, &token))).await;
        let mut pairs = Vec::new();
        for answer in &answers {
            assert!(answer["errors"].is_null(), "{:?}: {answer}", app.backend);
            let pair = &answer["data"]["refreshSession"];
            pairs.push((
                pair["accessToken"].as_str().unwrap().to_owned(),
                pair["refreshToken"].as_str().unwrap().to_owned(),
            ));
        }
        for (access, _) in &pairs {
            let me = app.graphql_as(Some(access), ME, json!({})).await;
            assert!(me["data"]["me"]["id"].is_string(), "{me}");
        }
        let (access, newest) = pairs.pop().unwrap();
        let next = refresh(&app, &newest).await;
        assert!(next["errors"].is_null(), "the session lives on: {next}");

        // Past the window, presenting the first token again is reuse.
        tokio::time::sleep(Duration::from_millis(2_500)).await;
        let reused = refresh(&app, &token).await;
        assert_eq!(error_codes(&reused), ["UNAUTHENTICATED"], "{reused}");
        let me = app.graphql_as(Some(&access), ME, json!({})).await;
        assert_eq!(error_codes(&me), ["UNAUTHENTICATED"], "revoked: {me}");
        app.shutdown().await;
    })
    .await;
}

/// Runs the `lectern` binary with `args` against `database_url` until it exits (at most
/// 60 s); returns whether it succeeded and its standard error.
async fn lectern(args: &[&str], database_url: &str) -> (bool, String) {
    let dir = tempfile::tempdir().unwrap();
    let run = tokio::process::Command::new(env!("CARGO_BIN_EXE_lectern"))
        .args(args)
        .current_dir(dir.path())
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("DATABASE_URL", database_url)
        .env("BIND_ADDR", "127.0.0.1:0")
        .env("CORPUS_DIR", crate::helpers::CORPUS)
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(Duration::from_secs(60), run)
        .await
        .expect("lectern exits by itself")
        .unwrap();
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// Replicas starting together on an empty PostgreSQL database migrate one at a time
/// (once, two racing creations of the same table failed one with a duplicate key).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_migrating_at_once_take_turns() {
    let Some(source) = crate::pg::shared() else {
        return;
    };
    let url = source.create_database().await;
    let runs = (0..4).map(|_| lectern(&["migrate"], &url));
    for (ok, stderr) in futures_util::future::join_all(runs).await {
        assert!(ok, "{stderr}");
    }
}

/// A database whose tables are in the way (a `user` table with other columns) stops
/// `lectern migrate` and `lectern serve` with one line that names the problem, instead
/// of an endless "database unavailable".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_schema_that_cannot_be_migrated_stops_start_up() {
    let Some(source) = crate::pg::shared() else {
        return;
    };
    let url = source.create_database().await;
    let conn = sea_orm::Database::connect(&url).await.unwrap();
    sea_orm::ConnectionTrait::execute_unprepared(
        &conn,
        "CREATE TABLE \"user\" (id integer PRIMARY KEY, nickname text)",
    )
    .await
    .unwrap();
    conn.close().await.ok();
    for command in ["migrate", "serve"] {
        let (ok, stderr) = lectern(&[command], &url).await;
        assert!(!ok, "{command} refused: {stderr}");
        let last = stderr.lines().last().unwrap_or_default();
        assert!(last.starts_with("error: "), "{command}: {stderr}");
        assert!(
            last.contains("email") || last.contains("user"),
            "{command} names what is in the way: {last}"
        );
    }
}

/// SIGTERM while answers stream: `/readyz` says 503 while new connections are still
/// accepted, the streamed turn and the HTTP turn both complete and are stored, the
/// socket gets its `ChatCompleted` before it is closed, and a restarted server shows
/// both turns in the reader's history.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn shutdown_finishes_the_answers_it_started() {
    use crate::fake_llm::{FakeLlm, Mode};
    let fake = FakeLlm::start(Mode::Stream {
        pieces: ["Bees ", "dance ", "in ", "circles ", "[1]."]
            .map(str::to_owned)
            .to_vec(),
        delay: Duration::from_millis(400),
    })
    .await;
    let data = tempfile::tempdir().unwrap();
    let mut env = fake.llm_settings();
    env.push(("SHUTDOWN_TIMEOUT_SECS", "20".into()));
    let server = ServerProcess::start(data.path(), &env);
    assert!(database_is(&server.address, "UP").await);
    let token = server.register("drain@example.com").await;

    let mut socket = crate::ws::connect(&server.address, Some(&token)).await;
    let stream = "subscription { chatStream(input: {message: \"How do bees dance?\"}) { __typename ... on ChatCompleted { answer conversation { id } } } }";
    crate::ws::subscribe(&mut socket, "1", stream, json!({})).await;
    let http_turn = {
        let (address, token) = (server.address.clone(), token.clone());
        tokio::spawn(async move {
            reqwest::Client::new()
                .post(format!("http://{address}/graphql"))
                .bearer_auth(token)
                .json(&json!({ "query": "mutation { chat(input: {message: \"What causes neap tides?\"}) { answer conversation { id } } }" }))
                .send()
                .await
                .unwrap()
                .json::<Value>()
                .await
                .unwrap()
        })
    };
    // Mid-answer: the first delta is out.
    loop {
        let event = crate::ws::answer(&mut socket, "1").await;
        if event["payload"]["data"]["chatStream"]["__typename"] == "ChatDelta" {
            break;
        }
    }
    server.terminate();
    let readiness = reqwest::get(format!("http://{}/readyz", server.address))
        .await
        .expect("the listener still accepts while draining");
    assert_eq!(readiness.status(), 503);

    let completed = loop {
        let event = crate::ws::answer(&mut socket, "1").await;
        let event = &event["payload"]["data"]["chatStream"];
        if event["__typename"] == "ChatCompleted" {
            break event.clone();
        }
    };
    assert_eq!(completed["answer"], "Bees dance in circles [1].");
    assert!(
        completed["conversation"]["id"].is_string(),
        "stored: {completed}"
    );
    let (code, _) = crate::ws::closed(&mut socket, Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(code, 1001);
    let http = http_turn.await.unwrap();
    assert!(
        http["data"]["chat"]["conversation"]["id"].is_string(),
        "stored: {http}"
    );
    let mut server = server;
    assert!(server.child.wait().unwrap().success());

    let restarted = ServerProcess::start(data.path(), &fake.llm_settings());
    assert!(database_is(&restarted.address, "UP").await);
    let history = restarted
        .graphql(Some(&token), "{ conversations(first: 5) { edges { node { messages(first: 5) { edges { node { role } } } } } } }")
        .await;
    let conversations = history["data"]["conversations"]["edges"]
        .as_array()
        .unwrap();
    assert_eq!(conversations.len(), 2, "{history}");
    for conversation in conversations {
        let messages = conversation["node"]["messages"]["edges"]
            .as_array()
            .unwrap();
        assert_eq!(messages.len(), 2, "question and answer: {history}");
    }
    restarted.terminate();
}

/// Stop the database, chat several times (new conversations and one continued), restart
/// the server, start the database: every turn reaches the reader's history, in the right
/// conversation, none twice. While it is pending the reader is told so.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn turns_answered_during_an_outage_reach_history_once() {
    let Some(cluster) = crate::pg::PgCluster::init() else {
        return;
    };
    cluster.start();
    let data = tempfile::tempdir().unwrap();
    let env = vec![
        ("DATABASE_URL", cluster.url("postgres")),
        ("DATABASE_TIMEOUT_MS", "1000".to_owned()),
    ];
    let server = ServerProcess::start(data.path(), &env);
    assert!(database_is(&server.address, "UP").await);
    let token = server.register("outage@example.com").await;
    let chat = |message: String, conversation: Option<String>| {
        let (address, token) = (server.address.clone(), token.clone());
        async move {
            let input = json!({ "message": message, "conversationId": conversation });
            reqwest::Client::new()
                .post(format!("http://{address}/graphql"))
                .bearer_auth(token)
                .json(&json!({ "query": "mutation($input: ChatInput!) { chat(input: $input) { answer conversation { id } } }", "variables": { "input": input } }))
                .send()
                .await
                .unwrap()
                .json::<Value>()
                .await
                .unwrap()
        }
    };
    let before = chat("How do bees dance?".into(), None).await;
    let continued = before["data"]["chat"]["conversation"]["id"]
        .as_str()
        .unwrap()
        .to_owned();

    cluster.stop("fast");
    assert!(database_is(&server.address, "DOWN").await);
    let mut asked = Vec::new();
    for n in 0..3 {
        asked.push(chat(format!("What causes neap tides? ({n})"), None).await);
    }
    asked.push(chat("And in winter?".into(), Some(continued.clone())).await);
    for answer in &asked {
        assert!(
            !answer["data"]["chat"]["answer"]
                .as_str()
                .unwrap()
                .is_empty()
        );
        assert!(answer["data"]["chat"]["conversation"].is_null(), "{answer}");
        assert_eq!(error_codes(answer), ["DATABASE_UNAVAILABLE"], "{answer}");
        assert_eq!(
            answer["errors"][0]["extensions"]["pending"], true,
            "{answer}"
        );
    }

    // A restart in between: the journal is on disk.
    server.terminate();
    let mut server = server;
    assert!(server.child.wait().unwrap().success());
    let server = ServerProcess::start(data.path(), &env);
    cluster.start();
    assert!(database_is(&server.address, "UP").await);
    let history_query = "{ conversations(first: 10) { edges { node { id messages(first: 10) { edges { node { role content } } } } } } }";
    let complete = |history: &Value| {
        let edges = history["data"]["conversations"]["edges"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        edges.len() == 4
            && edges.iter().all(|edge| {
                let messages = edge["node"]["messages"]["edges"].as_array().unwrap().len();
                let expected = if edge["node"]["id"] == continued.as_str() {
                    4
                } else {
                    2
                };
                messages == expected
            })
    };
    let stored = crate::helpers::eventually(Duration::from_secs(30), || async {
        complete(&server.graphql(Some(&token), history_query).await)
    })
    .await;
    let history = server.graphql(Some(&token), history_query).await;
    assert!(stored, "every turn in history: {history}");
    // None twice, however long the replayer keeps looking.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let history = server.graphql(Some(&token), history_query).await;
    assert!(complete(&history), "{history}");
    assert!(!data.path().join("turn-journal.jsonl").exists());
    server.terminate();
}
