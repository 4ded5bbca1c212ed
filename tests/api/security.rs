//! Hostile callers: reader B never reaches reader A's conversations by id, cursor or
//! subscription; metrics and logs never carry a secret.

use std::io::{BufRead, BufReader, Read};
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::{Value, json};

use crate::chat::{next_json, subscribe};
use crate::helpers::{TestApp, access_token, error_codes, eventually, for_each_backend};

const PASSWORD: &str = "correct horse battery";

async fn start_conversation(app: &TestApp, token: &str, question: &str) -> String {
    let response = app
        .graphql_as(
            Some(token),
            "mutation($q: String!) { chat(input: {message: $q}) { conversation { id } } }",
            json!({ "q": question }),
        )
        .await;
    response["data"]["chat"]["conversation"]["id"]
        .as_str()
        .unwrap_or_else(|| panic!("{response}"))
        .to_owned()
}

async fn list(app: &TestApp, token: &str, after: Option<&str>) -> Value {
    app.graphql_as(
        Some(token),
        "query($after: String) { conversations(first: 10, after: $after) { edges { cursor node { id } } } }",
        json!({ "after": after }),
    )
    .await
}

fn ids(response: &Value) -> Vec<String> {
    response["data"]["conversations"]["edges"]
        .as_array()
        .map(|edges| {
            edges
                .iter()
                .map(|e| e["node"]["id"].as_str().unwrap().to_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// Ada's conversations stay Ada's: Bob's every attempt, by id, by Ada's cursors and by
/// subscription, reads as NOT_FOUND or shows only his own, and changes nothing.
#[tokio::test]
async fn nobody_reaches_another_readers_conversations() {
    for_each_backend(|app| async move {
        let ada = access_token(&app, "ada@example.com", PASSWORD).await;
        let bob = access_token(&app, "bob@example.com", PASSWORD).await;
        let mut adas = Vec::new();
        for q in ["What causes neap tides?", "Why is the sea salty?", "What is a rip current?"] {
            adas.push(start_conversation(&app, &ada, q).await);
        }
        let bobs = start_conversation(&app, &bob, "How deep is the ocean?").await;

        // By id: read, rename, delete, continue.
        for id in &adas {
            let attempts = [
                ("query($id: ID!) { conversation(id: $id) { id title } }", "conversation"),
                (
                    "mutation($id: ID!) { renameConversation(id: $id, title: \"mine\") { id } }",
                    "renameConversation",
                ),
                ("mutation($id: ID!) { deleteConversation(id: $id) }", "deleteConversation"),
                (
                    "mutation($id: ID!) { chat(input: {message: \"mine?\", conversationId: $id}) { answer } }",
                    "chat",
                ),
            ];
            for (query, field) in attempts {
                let response = app.graphql_as(Some(&bob), query, json!({ "id": id })).await;
                assert_eq!(error_codes(&response), ["NOT_FOUND"], "{field}: {response}");
                assert!(response["data"].is_null() || response["data"][field].is_null());
            }
        }

        // By cursor: Ada's cursors, handed to Bob's lists, show Bob's rows only.
        let adas_page = list(&app, &ada, None).await;
        let adas_cursors: Vec<String> = adas_page["data"]["conversations"]["edges"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["cursor"].as_str().unwrap().to_owned())
            .collect();
        assert_eq!(adas_cursors.len(), 3);
        for cursor in &adas_cursors {
            let response = list(&app, &bob, Some(cursor)).await;
            for id in ids(&response) {
                assert_eq!(id, bobs, "only Bob's own conversations: {response}");
            }
        }
        let adas_messages = app
            .graphql_as(
                Some(&ada),
                "query($id: ID!) { conversation(id: $id) { messages { edges { cursor } } } }",
                json!({ "id": adas[0] }),
            )
            .await;
        let message_cursor = adas_messages["data"]["conversation"]["messages"]["edges"][0]["cursor"]
            .as_str()
            .unwrap()
            .to_owned();
        let response = app
            .graphql_as(
                Some(&bob),
                "query($id: ID!, $after: String) { conversation(id: $id) { messages(after: $after) { edges { node { content } } } } }",
                json!({ "id": bobs, "after": message_cursor }),
            )
            .await;
        let contents = response["data"]["conversation"]["messages"]["edges"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        for edge in &contents {
            let content = edge["node"]["content"].as_str().unwrap();
            assert!(
                !content.contains("neap"),
                "Ada's cursor shows nothing of Ada's: {response}"
            );
        }

        // By subscription.
        let mut socket = subscribe(
            &app,
            Some(&bob),
            json!({ "message": "mine now?", "conversationId": adas[0] }),
        )
        .await;
        let mut refused = false;
        for _ in 0..10 {
            let event = next_json(&mut socket).await;
            let text = event.to_string();
            assert!(!text.contains("ChatCompleted"), "no answer stored for Bob: {event}");
            if text.contains("NOT_FOUND") {
                refused = true;
                break;
            }
            if event["type"] == "complete" {
                break;
            }
        }
        assert!(refused, "the subscription is refused with NOT_FOUND");

        // Nothing of Ada's changed.
        let response = app
            .graphql_as(
                Some(&ada),
                "{ conversations(first: 10) { edges { node { id title messages(first: 10) { edges { node { role } } } } } } }",
                json!({}),
            )
            .await;
        let edges = response["data"]["conversations"]["edges"].as_array().unwrap();
        assert_eq!(edges.len(), 3, "{response}");
        for edge in edges {
            assert_ne!(edge["node"]["title"], "mine");
            assert_eq!(
                edge["node"]["messages"]["edges"].as_array().unwrap().len(),
                2,
                "{response}"
            );
        }
        app.shutdown().await;
    })
    .await;
}

/// `/metrics` speaks the Prometheus text format, labels requests by their root fields,
/// reports the database, the pool, retrieval and answer latencies, and holds no secret.
#[tokio::test]
async fn metrics_are_served_in_prometheus_format() {
    for_each_backend(|app| async move {
        let token = access_token(&app, "metrics@example.com", PASSWORD).await;
        app.graphql("{ health { status } }", json!({})).await;
        app.graphql_as(
            Some(&token),
            "{ me { id } conversations { edges { cursor } } }",
            json!({}),
        )
        .await;
        start_conversation(&app, &token, "What causes neap tides?").await;
        app.graphql("{ nope }", json!({})).await;

        let response = app.client.get(app.url("/metrics")).send().await.unwrap();
        assert_eq!(response.status(), 200);
        assert!(
            response.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with("text/plain")
        );
        let body = response.text().await.unwrap();
        for expected in [
            "# TYPE lectern_graphql_requests_total counter",
            "lectern_graphql_requests_total{operation=\"health\",outcome=\"ok\"}",
            "lectern_graphql_requests_total{operation=\"conversations+me\",outcome=\"ok\"}",
            "lectern_graphql_requests_total{operation=\"invalid\",outcome=\"error\"}",
            "# TYPE lectern_graphql_request_duration_seconds histogram",
            "lectern_graphql_request_duration_seconds_bucket{operation=\"chat\",le=\"0.1\"}",
            "lectern_database_up 1",
            "lectern_database_pool_connections{state=\"idle\"}",
            "lectern_retrieval_duration_seconds_count",
            "lectern_answer_duration_seconds_count{kind=\"extractive\"}",
        ] {
            assert!(body.contains(expected), "{expected} missing from:\n{body}");
        }
        assert!(!body.contains(&token));
        assert!(!body.contains("metrics@example.com"));
        app.shutdown().await;
    })
    .await;
}

/// The logs of a whole session (register, failed and good logins, me, refresh, chat over
/// HTTP and over a WebSocket, logout), at trace level, in JSON, hold no password, hash,
/// token or secret.
#[test]
fn logs_of_a_full_session_hold_no_secret() {
    const SECRET: &str = "a-jwt-secret-that-is-long-enough-for-production-use";
    const WRONG: &str = "wrong horse battery staple";
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_lectern"))
        .current_dir(dir.path())
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("BIND_ADDR", "127.0.0.1:0")
        .env("LOG_FORMAT", "json")
        .env("RUST_LOG", "trace")
        .env("JWT_SECRET", SECRET)
        .env("CORPUS_DIR", crate::helpers::CORPUS)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut logs = String::new();
    let address = loop {
        let mut line = String::new();
        assert!(
            stderr.read_line(&mut line).unwrap() > 0,
            "server exited: {logs}"
        );
        logs.push_str(&line);
        if let Ok(entry) = serde_json::from_str::<Value>(&line)
            && let Some(address) = entry["fields"]["address"].as_str()
        {
            break address.to_owned();
        }
    };
    let drain = std::thread::spawn(move || {
        let mut rest = String::new();
        stderr.read_to_string(&mut rest).unwrap();
        rest
    });

    let runtime = tokio::runtime::Runtime::new().unwrap();
    let secrets = runtime.block_on(async {
        let client = reqwest::Client::new();
        let endpoint = format!("http://{address}/graphql");
        let call = |token: Option<String>, query: &'static str, variables: Value| {
            let (client, endpoint) = (client.clone(), endpoint.clone());
            async move {
                let mut request = client.post(endpoint).json(&json!({ "query": query, "variables": variables }));
                if let Some(token) = token {
                    request = request.bearer_auth(token);
                }
                request.send().await.unwrap().json::<Value>().await.unwrap()
            }
        };
        let up = eventually(Duration::from_secs(15), || async {
            call(None, "{ health { database } }", json!({})).await["data"]["health"]["database"] == "UP"
        })
        .await;
        assert!(up);
        let input = json!({ "email": "logs@example.com", "password": PASSWORD, "name": "Logs" });
        let registered = call(None, "mutation($i: RegisterInput!) { register(input: $i) { accessToken refreshToken deviceToken } }", json!({ "i": input })).await;
        let wrong = call(None, "mutation { login(input: {email: \"logs@example.com\", password: \"wrong horse battery staple\"}) { accessToken } }", json!({})).await;
        assert_eq!(error_codes(&wrong), ["INVALID_CREDENTIALS"]);
        let login = call(None, "mutation { login(input: {email: \"logs@example.com\", password: \"correct horse battery\"}) { accessToken refreshToken deviceToken } }", json!({})).await;
        let access = login["data"]["login"]["accessToken"].as_str().unwrap().to_owned();
        let refresh = login["data"]["login"]["refreshToken"].as_str().unwrap().to_owned();
        call(Some(access.clone()), "{ me { id } }", json!({})).await;
        let refreshed = call(None, "mutation($t: String!) { refreshSession(refreshToken: $t) { accessToken refreshToken } }", json!({ "t": refresh })).await;
        let chat = call(Some(access.clone()), "mutation { chat(input: {message: \"What causes neap tides?\"}) { conversation { id } } }", json!({})).await;
        assert!(chat["data"]["chat"]["conversation"]["id"].is_string(), "{chat}");
        let mut socket = crate::ws::connect(&address, Some(&access)).await;
        crate::ws::send(&mut socket, json!({ "id": "1", "type": "subscribe", "payload": { "query": "subscription { chatStream(input: {message: \"What causes neap tides?\"}) { __typename } }" } })).await;
        while crate::ws::next(&mut socket).await["type"] != "complete" {}
        call(Some(access.clone()), "mutation { logout }", json!({})).await;
        let mut secrets = vec![access, refresh];
        for payload in [&registered["data"]["register"], &login["data"]["login"]] {
            secrets.push(payload["deviceToken"].as_str().unwrap().to_owned());
        }
        for payload in [&registered["data"]["register"], &refreshed["data"]["refreshSession"]] {
            for key in ["accessToken", "refreshToken"] {
                secrets.push(payload[key].as_str().unwrap().to_owned());
            }
        }
        secrets
    });

    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    let mut stdout = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut stdout)
        .unwrap();
    child.wait().unwrap();
    logs.push_str(&drain.join().unwrap());
    logs.push_str(&stdout);

    assert!(
        logs.contains("logged in") || logs.contains("login"),
        "the flow was logged: {logs}"
    );
    for forbidden in [PASSWORD, WRONG, SECRET, "$argon2", "Bearer "] {
        assert!(
            !logs.contains(forbidden),
            "{forbidden:?} appears in the logs"
        );
    }
    for secret in &secrets {
        assert!(
            !logs.contains(secret.as_str()),
            "a token appears in the logs"
        );
        // Not even a JWT's signature part alone.
        if let Some(signature) = secret.rsplit('.').next().filter(|s| s.len() > 20) {
            assert!(
                !logs.contains(signature),
                "a token signature appears in the logs"
            );
        }
    }
}
