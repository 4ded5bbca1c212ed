//! Safe on the open internet: each attack from the security review, made the way it was
//! found, against the built server (hostile documents, WebSocket sessions that outlive
//! their session, slow clients, quotas, proxies, look-alike emails, linked files).

use std::time::Duration;

use futures_util::SinkExt as _;
use lectern::entities::session;
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;

use crate::fake_llm::{FakeLlm, Mode};
use crate::helpers::{
    Backend, TestApp, access_token, error_codes, for_each_backend, for_each_backend_with, register,
    spawn_app, spawn_app_with_url,
};
use crate::ws;

const PASSWORD: &str = "correct horse battery";
const LOGIN: &str =
    "mutation($input: LoginInput!) { login(input: $input) { accessToken deviceToken } }";

/// `{ ...F0 } fragment F0 on Query { ...F1 ...F1 } … fragment F{levels} on Query { __typename }`
fn doubling_fragments(levels: usize) -> String {
    let mut query = String::from("{ ...F0 }");
    for i in 0..levels {
        query.push_str(&format!(
            " fragment F{i} on Query {{ ...F{} ...F{} }}",
            i + 1,
            i + 1
        ));
    }
    query.push_str(&format!(" fragment F{levels} on Query {{ __typename }}"));
    query
}

fn refused_as_bad_input(response: &Value, mentions: &str) {
    assert_eq!(error_codes(response), ["BAD_USER_INPUT"], "{response}");
    let message = response["errors"][0]["message"].as_str().unwrap();
    assert!(message.contains(mentions), "{message}");
    assert!(response["data"].is_null(), "{response}");
}

#[tokio::test]
async fn amplifying_documents_are_refused_before_they_run() {
    let app = spawn_app_with_url(Backend::Sqlite, None, &[]).await;
    // The exact document of the report: 840 bytes, 2^23 fields once expanded.
    let report = doubling_fragments(23);
    assert!(report.len() < 1_000);
    refused_as_bad_input(&app.graphql(&report, json!({})).await, "fragments");
    // Shallower, but still over a thousand fields.
    refused_as_bad_input(
        &app.graphql(&doubling_fragments(10), json!({})).await,
        "1000 fields",
    );
    // Aliases multiply fields without fragments.
    let aliases: String = (0..1_001).map(|i| format!("a{i}:__typename ")).collect();
    refused_as_bad_input(
        &app.graphql(&format!("{{ {aliases} }}"), json!({})).await,
        "1000 fields",
    );
    // Directives.
    let directives = "@include(if: true) ".repeat(60);
    refused_as_bad_input(
        &app.graphql(&format!("{{ __typename {directives} }}"), json!({}))
            .await,
        "directives",
    );
    // Nesting deep enough to exhaust the parser's stack.
    let deep = format!("{}{}", "{a".repeat(4_000), "}".repeat(4_000));
    refused_as_bad_input(&app.graphql(&deep, json!({})).await, "nests");
    // Long documents are not parsed at all.
    let long = format!("{}{}", "{a".repeat(60_000), "}".repeat(60_000));
    refused_as_bad_input(&app.graphql(&long, json!({})).await, "bytes long");
    // A request head over 32 KiB is refused (431) and the server goes on.
    let head = app
        .client
        .post(app.url("/graphql"))
        .header("x-padding", "p".repeat(40 * 1024))
        .json(&json!({ "query": "{ __typename }" }))
        .send()
        .await
        .unwrap();
    assert_eq!(head.status(), 431);
    // The server is fine, and ordinary documents with fragments pass.
    let fine = app
        .graphql(
            "{ ...H } fragment H on Query { health { status } a: health { database } }",
            json!({}),
        )
        .await;
    assert!(fine["errors"].is_null(), "{fine}");
    // The same refusal over a WebSocket.
    let mut socket = ws::connect(&app.addr.to_string(), None).await;
    ws::subscribe(&mut socket, "1", &report, json!({})).await;
    let answer = ws::next(&mut socket).await;
    assert_eq!(answer["type"], "error", "{answer}");
    assert_eq!(answer["payload"][0]["extensions"]["code"], "BAD_USER_INPUT");
    app.shutdown().await;
}

#[tokio::test]
async fn production_gives_no_schema_suggestions() {
    let typo = "{ helth { status } }";
    let dev = spawn_app_with_url(Backend::Sqlite, None, &[]).await;
    let answer = dev.graphql(typo, json!({})).await;
    assert!(answer.to_string().contains("Did you mean"), "{answer}");
    dev.shutdown().await;
    let closed =
        spawn_app_with_url(Backend::Sqlite, None, &[("GRAPHQL_INTROSPECTION", "false")]).await;
    let answer = closed.graphql(typo, json!({})).await;
    assert_eq!(error_codes(&answer), ["BAD_USER_INPUT"]);
    assert!(!answer.to_string().contains("Did you mean"), "{answer}");
    assert!(!answer.to_string().contains("health"), "{answer}");
    closed.shutdown().await;
}

/// A WebSocket no longer outlives its session: logout closes it with 4403, and a session
/// revoked behind the server's back (a Better Auth sign-out) is refused on the next
/// operation of the same socket.
#[tokio::test]
async fn websockets_follow_their_session() {
    for_each_backend(|app| async move {
        let address = app.addr.to_string();
        let token = access_token(&app, "ws@example.com", PASSWORD).await;
        let mut socket = ws::connect(&address, Some(&token)).await;
        ws::subscribe(
            &mut socket,
            "1",
            "{ conversations(first: 5) { edges { cursor } } }",
            json!({}),
        )
        .await;
        let first = ws::next(&mut socket).await;
        assert!(first["payload"]["errors"].is_null(), "{first}");
        let logout = app
            .graphql_as(Some(&token), "mutation { logout }", json!({}))
            .await;
        assert_eq!(logout["data"]["logout"], true);
        let (code, reason) = ws::closed(&mut socket, Duration::from_secs(5))
            .await
            .unwrap();
        assert_eq!(
            (code, reason.as_str()),
            (4403, "Forbidden: the session ended")
        );

        // Revoked in the database directly: each operation checks again.
        let token = access_token(&app, "ws2@example.com", PASSWORD).await;
        let chat = app
            .graphql_as(
                Some(&token),
                "mutation { chat(input: {message: \"How do bees dance?\"}) { conversation { id } } }",
                json!({}),
            )
            .await;
        let conversation = chat["data"]["chat"]["conversation"]["id"].clone();
        assert!(conversation.is_string(), "{chat}");
        let mut socket = ws::connect(&address, Some(&token)).await;
        let query = "{ conversations(first: 5) { edges { cursor } } }";
        ws::subscribe(&mut socket, "1", query, json!({})).await;
        assert!(ws::next(&mut socket).await["payload"]["errors"].is_null());
        assert_eq!(ws::next(&mut socket).await["type"], "complete");
        session::Entity::delete_many()
            .exec(app.database.connection())
            .await
            .unwrap();
        if app.backend == Backend::Postgres {
            // PostgreSQL announces the deletion (a trigger and LISTEN/NOTIFY): the
            // socket is closed at once, as after a logout.
            let (code, _) = ws::closed(&mut socket, Duration::from_secs(5))
                .await
                .unwrap();
            assert_eq!(code, 4403);
            app.shutdown().await;
            return;
        }
        ws::subscribe(&mut socket, "2", query, json!({})).await;
        let after = ws::answer(&mut socket, "2").await;
        assert_eq!(
            error_codes(&after["payload"]),
            ["UNAUTHENTICATED"],
            "{after}"
        );
        let rename = "mutation($id: ID!) { renameConversation(id: $id, title: \"t\") { id } }";
        ws::subscribe(&mut socket, "3", rename, json!({ "id": conversation })).await;
        let after = ws::answer(&mut socket, "3").await;
        assert_eq!(
            error_codes(&after["payload"]),
            ["UNAUTHENTICATED"],
            "{after}"
        );
        app.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn an_expired_token_closes_its_websocket() {
    let app = spawn_app_with_url(Backend::Sqlite, None, &[]).await;
    app.database.wait_until_up().await;
    let registered = register(&app, "soon@example.com", PASSWORD).await;
    let keys = lectern::auth::tokens::TokenKeys::new(&lectern::config::Secret::new(
        crate::helpers::JWT_SECRET,
    ));
    let real = keys
        .verify(registered["accessToken"].as_str().unwrap())
        .unwrap();
    let now = chrono::Utc::now().timestamp();
    let short = keys
        .sign(&lectern::auth::tokens::AccessClaims {
            exp: now + 2,
            ..real
        })
        .unwrap();
    let mut socket = ws::connect(&app.addr.to_string(), Some(&short)).await;
    let (code, reason) = ws::closed(&mut socket, Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(
        (code, reason.as_str()),
        (4403, "Forbidden: the access token expired")
    );
    app.shutdown().await;
}

/// Sign-ins over a WebSocket are rate limited by the upgrade's client address, and the
/// sessions they create record that address and user agent.
#[tokio::test]
async fn websocket_logins_are_limited_and_recorded() {
    for_each_backend_with(&[("AUTH_RATE_LIMIT_PER_IP", "3")], |app| async move {
        register(&app, "sock@example.com", PASSWORD).await;
        let mut request = format!("ws://{}/graphql/ws", app.addr)
            .into_client_request()
            .unwrap();
        let headers = request.headers_mut();
        headers.insert(
            "sec-websocket-protocol",
            "graphql-transport-ws".parse().unwrap(),
        );
        headers.insert("user-agent", "SocketReader/1.0".parse().unwrap());
        let (mut socket, _) = tokio_tungstenite::connect_async(request).await.unwrap();
        ws::send(&mut socket, json!({ "type": "connection_init" })).await;
        assert_eq!(ws::next(&mut socket).await["type"], "connection_ack");
        let input = json!({ "input": { "email": "sock@example.com", "password": PASSWORD } });
        let mut codes = Vec::new();
        for id in 0..3 {
            ws::subscribe(&mut socket, &id.to_string(), LOGIN, input.clone()).await;
            let answer = ws::next(&mut socket).await;
            codes.push(error_codes(&answer["payload"]));
            ws::next(&mut socket).await; // complete
        }
        // The registration counted too: the third login is the fourth attempt.
        assert_eq!(codes[0], Vec::<String>::new());
        assert_eq!(codes[2], ["RATE_LIMITED"], "{codes:?}");
        let sessions = session::Entity::find()
            .filter(session::Column::UserAgent.eq("SocketReader/1.0"))
            .all(app.database.connection())
            .await
            .unwrap();
        assert!(!sessions.is_empty());
        assert!(
            sessions
                .iter()
                .all(|s| s.ip_address.as_deref() == Some("127.0.0.1"))
        );
        app.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn graphql_transport_ws_close_codes() {
    let fake = FakeLlm::start(Mode::Stream {
        pieces: vec!["slow ".into(), "answer".into()],
        delay: Duration::from_millis(500),
    })
    .await;
    let llm = fake.llm_settings();
    let mut extra: Vec<(&str, &str)> = llm.iter().map(|(k, v)| (*k, v.as_str())).collect();
    extra.push(("WS_INIT_TIMEOUT_SECS", "1"));
    extra.push(("WS_MAX_SUBSCRIPTIONS", "1"));
    let app = spawn_app(Backend::Sqlite, &extra).await.unwrap();
    let address = app.addr.to_string();
    let chat =
        "subscription { chatStream(input: {message: \"How do bees dance?\"}) { __typename } }";
    let closed = |mut socket: ws::Socket| async move {
        ws::closed(&mut socket, Duration::from_secs(5))
            .await
            .unwrap()
    };

    // 4401: subscribe before connection_init.
    let mut socket = ws::open(&address).await;
    ws::subscribe(&mut socket, "1", chat, json!({})).await;
    assert_eq!(closed(socket).await.0, 4401);
    // 4408: no connection_init at all.
    assert_eq!(closed(ws::open(&address).await).await.0, 4408);
    // 4429: a second connection_init.
    let mut socket = ws::connect(&address, None).await;
    ws::send(&mut socket, json!({ "type": "connection_init" })).await;
    assert_eq!(closed(socket).await.0, 4429);
    // 4400: not the protocol.
    let mut socket = ws::connect(&address, None).await;
    ws::send(&mut socket, json!({ "type": "start", "id": "1" })).await;
    assert_eq!(closed(socket).await.0, 4400);
    // 4409: an id that is still running; past the subscription cap, an error message.
    let mut socket = ws::connect(&address, None).await;
    ws::subscribe(&mut socket, "1", chat, json!({})).await;
    ws::subscribe(&mut socket, "2", chat, json!({})).await;
    let capped = loop {
        let message = ws::next(&mut socket).await;
        if message["id"] == "2" {
            break message;
        }
    };
    assert_eq!(capped["type"], "error", "{capped}");
    assert_eq!(capped["payload"][0]["extensions"]["code"], "RATE_LIMITED");
    ws::subscribe(&mut socket, "1", chat, json!({})).await;
    assert_eq!(closed(socket).await.0, 4409);
    // 1009: a message larger than an HTTP body may be.
    let mut socket = ws::connect(&address, None).await;
    let huge = format!(
        "{{\"type\":\"ping\",\"payload\":\"{}\"}}",
        "x".repeat(300 * 1024)
    );
    let _ = socket.send(Message::text(huge)).await;
    assert_eq!(closed(socket).await.0, 1009);
    // 4406: a client that does not speak graphql-transport-ws.
    let request = format!("ws://{address}/graphql/ws")
        .into_client_request()
        .unwrap();
    let (socket, _) = tokio_tungstenite::connect_async(request).await.unwrap();
    assert_eq!(closed(socket).await.0, 4406);
    app.shutdown().await;
}

#[tokio::test]
async fn websocket_connections_per_address_are_capped() {
    let app =
        spawn_app_with_url(Backend::Sqlite, None, &[("WS_MAX_CONNECTIONS_PER_IP", "2")]).await;
    let address = app.addr.to_string();
    let first = ws::connect(&address, None).await;
    let _second = ws::connect(&address, None).await;
    let request = format!("ws://{address}/graphql/ws")
        .into_client_request()
        .unwrap();
    match tokio_tungstenite::connect_async(request).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), 429);
        }
        other => panic!("the third connection is refused: {other:?}"),
    }
    drop(first);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let _third = ws::connect(&address, None).await;
    app.shutdown().await;
}

/// Reads what the server sends until it closes the connection; panics after `within`.
async fn read_until_closed(stream: &mut TcpStream, within: Duration) -> String {
    let mut received = Vec::new();
    tokio::time::timeout(within, async {
        let mut buffer = [0u8; 4096];
        loop {
            match stream.read(&mut buffer).await {
                Ok(0) | Err(_) => break,
                Ok(n) => received.extend_from_slice(&buffer[..n]),
            }
        }
    })
    .await
    .expect("the server closed the connection in time");
    String::from_utf8_lossy(&received).into_owned()
}

#[tokio::test]
async fn slow_and_idle_clients_are_cut_off() {
    let app = spawn_app_with_url(
        Backend::Sqlite,
        None,
        &[
            ("HTTP_HEADER_TIMEOUT_SECS", "1"),
            ("HTTP_BODY_TIMEOUT_SECS", "1"),
        ],
    )
    .await;
    // Headers that never end.
    let mut slow = TcpStream::connect(app.addr).await.unwrap();
    slow.write_all(b"POST /graphql HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    read_until_closed(&mut slow, Duration::from_secs(5)).await;
    // A body that never arrives.
    let mut slow = TcpStream::connect(app.addr).await.unwrap();
    slow.write_all(
        b"POST /graphql HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"query\":",
    )
    .await
    .unwrap();
    let answer = read_until_closed(&mut slow, Duration::from_secs(5)).await;
    assert!(!answer.starts_with("HTTP/1.1 200"), "{answer}");
    // A keep-alive connection that goes quiet after its request.
    let mut idle = TcpStream::connect(app.addr).await.unwrap();
    idle.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let answer = read_until_closed(&mut idle, Duration::from_secs(5)).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    app.shutdown().await;
}

#[tokio::test]
async fn connections_past_the_cap_wait_their_turn() {
    let app = spawn_app_with_url(Backend::Sqlite, None, &[("MAX_CONNECTIONS", "2")]).await;
    let mut held = vec![
        TcpStream::connect(app.addr).await.unwrap(),
        TcpStream::connect(app.addr).await.unwrap(),
    ];
    tokio::time::sleep(Duration::from_millis(200)).await;
    let url = app.url("/healthz");
    let waiting = tokio::spawn(async move { reqwest::get(url).await.map(|r| r.status().as_u16()) });
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        !waiting.is_finished(),
        "a third connection is not served while two are open"
    );
    held.pop();
    let status = tokio::time::timeout(Duration::from_secs(5), waiting).await;
    assert_eq!(status.unwrap().unwrap().unwrap(), 200);
    app.shutdown().await;
}

/// `HEALTH_BIND_ADDR` serves the probes (and nothing else) on a listener of its own.
#[tokio::test]
async fn probes_have_a_listener_of_their_own() {
    let app = spawn_app_with_url(
        Backend::Sqlite,
        None,
        &[("HEALTH_BIND_ADDR", "127.0.0.1:0")],
    )
    .await;
    let probes = app.health_addr.expect("the probe listener is bound");
    assert_ne!(probes, app.addr);
    let get = |path: &'static str| {
        let client = app.client.clone();
        async move {
            client
                .get(format!("http://{probes}{path}"))
                .send()
                .await
                .unwrap()
        }
    };
    let healthz = get("/healthz").await;
    assert_eq!(healthz.status(), 200);
    assert_eq!(healthz.text().await.unwrap(), "ok");
    let readyz: Value = get("/readyz").await.json().await.unwrap();
    assert!(readyz["database"].is_string(), "{readyz}");
    assert!(
        get("/metrics")
            .await
            .text()
            .await
            .unwrap()
            .contains("lectern_database_up")
    );
    assert_eq!(get("/graphql").await.status(), 404, "only the probes");
    // Its thread runs ahead of the API's workers when the process may have real-time
    // scheduling (CAP_SYS_NICE, as root in CI), and as any other thread when not.
    #[cfg(target_os = "linux")]
    {
        const SCHED_OTHER: u32 = 0;
        const SCHED_FIFO: u32 = 1;
        let expected = if may_have_real_time() {
            SCHED_FIFO
        } else {
            SCHED_OTHER
        };
        assert_eq!(probe_thread_policy(), Some(expected));
    }
    app.shutdown().await;
}

/// The scheduling policy of this process's `lectern-probes` thread (field 41 of its
/// `/proc` stat line).
#[cfg(target_os = "linux")]
fn probe_thread_policy() -> Option<u32> {
    for task in std::fs::read_dir("/proc/self/task").ok()?.flatten() {
        let comm = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
        if comm.trim() != "lectern-probes" {
            continue;
        }
        let stat = std::fs::read_to_string(task.path().join("stat")).ok()?;
        // Fields after the name (which ends with ')') start at field 3.
        let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
        return fields.get(41 - 3)?.parse().ok();
    }
    None
}

/// Whether this process holds CAP_SYS_NICE (bit 23 of its effective capabilities).
#[cfg(target_os = "linux")]
fn may_have_real_time() -> bool {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        .is_some_and(|caps| caps & (1 << 23) != 0)
}

/// A flood from one address is read and checked a few requests at a time: the rest wait,
/// unread, while other addresses are served at once (the client's address through a
/// trusted proxy, as behind a load balancer).
#[tokio::test]
async fn one_address_cannot_take_every_turn_at_reading_requests() {
    let app = spawn_app_with_url(
        Backend::Sqlite,
        None,
        &[
            ("GRAPHQL_ADMISSION_PER_IP", "1"),
            ("TRUSTED_PROXIES", "127.0.0.1"),
        ],
    )
    .await;
    let body = br#"{"query":"{ __typename }"}"#;
    // A request from 10.0.0.1 whose body is still arriving holds that address's turn.
    let mut slow = TcpStream::connect(app.addr).await.unwrap();
    let head = format!(
        "POST /graphql HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nX-Forwarded-For: 10.0.0.1\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    slow.write_all(head.as_bytes()).await.unwrap();
    slow.write_all(&body[..5]).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;

    let from = |ip: &'static str| {
        let client = app.client.clone();
        let url = app.url("/graphql");
        tokio::spawn(async move {
            client
                .post(url)
                .header("x-forwarded-for", ip)
                .json(&json!({ "query": "{ __typename }" }))
                .send()
                .await
                .unwrap()
                .json::<Value>()
                .await
                .unwrap()
        })
    };
    let same = from("10.0.0.1");
    let other = from("10.0.0.2");
    let answered = tokio::time::timeout(Duration::from_secs(5), other)
        .await
        .expect("another address is served at once")
        .unwrap();
    assert_eq!(answered["data"]["__typename"], "Query");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!same.is_finished(), "the same address waits its turn");

    slow.write_all(&body[5..]).await.unwrap();
    let mut answer = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(5), slow.read(&mut answer))
        .await
        .unwrap()
        .unwrap();
    assert!(String::from_utf8_lossy(&answer[..n]).starts_with("HTTP/1.1 200"));
    let waited = tokio::time::timeout(Duration::from_secs(5), same)
        .await
        .expect("then it is served")
        .unwrap();
    assert_eq!(waited["data"]["__typename"], "Query");
    app.shutdown().await;
}

const CHAT: &str = "mutation($m: String!) { chat(input: {message: $m}) { answer } }";

#[tokio::test]
async fn chat_is_rationed_per_address_and_per_reader() {
    let limits = [
        ("CHAT_RATE_LIMIT_PER_IP", "2"),
        ("CHAT_RATE_LIMIT_PER_READER", "3"),
    ];
    for_each_backend_with(&limits, |app| async move {
        let ask = |token: Option<String>| {
            let app = &app;
            async move {
                app.graphql_as(token.as_deref(), CHAT, json!({ "m": "How do bees dance?" }))
                    .await
            }
        };
        // A turn whose client left before the answer still counts.
        let mut socket = ws::connect(&app.addr.to_string(), None).await;
        let stream =
            "subscription { chatStream(input: {message: \"How do bees dance?\"}) { __typename } }";
        ws::subscribe(&mut socket, "1", stream, json!({})).await;
        ws::answer(&mut socket, "1").await; // the turn has started
        drop(socket);
        assert!(ask(None).await["errors"].is_null());
        let third = ask(None).await;
        assert_eq!(error_codes(&third), ["RATE_LIMITED"], "{third}");
        assert!(
            third["errors"][0]["extensions"]["retryAfter"]
                .as_u64()
                .unwrap()
                >= 1
        );
        // A signed-in reader has a quota of their own.
        let token = access_token(&app, "quota@example.com", PASSWORD).await;
        for _ in 0..3 {
            let answer = ask(Some(token.clone())).await;
            assert!(answer["errors"].is_null(), "{answer}");
        }
        assert_eq!(error_codes(&ask(Some(token)).await), ["RATE_LIMITED"]);
        app.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn model_calls_are_capped_server_wide() {
    let fake = FakeLlm::start(Mode::Stream {
        pieces: vec!["slow ".into(), "answer".into()],
        delay: Duration::from_millis(700),
    })
    .await;
    let llm = fake.llm_settings();
    let mut extra: Vec<(&str, &str)> = llm.iter().map(|(k, v)| (*k, v.as_str())).collect();
    extra.push(("LLM_MAX_CONCURRENCY", "1"));
    let app = spawn_app(Backend::Sqlite, &extra).await.unwrap();
    let (a, b) = tokio::join!(
        app.graphql(CHAT, json!({ "m": "How do bees dance?" })),
        async {
            tokio::time::sleep(Duration::from_millis(200)).await;
            app.graphql(CHAT, json!({ "m": "What causes neap tides?" }))
                .await
        }
    );
    assert_eq!(a["data"]["chat"]["answer"], "slow answer", "{a}");
    assert_eq!(error_codes(&b), ["RATE_LIMITED"], "{b}");
    assert_eq!(
        fake.chat_requests().len(),
        1,
        "the refused turn cost no model call"
    );
    app.shutdown().await;
}

#[tokio::test]
async fn client_addresses_come_through_trusted_proxies_only() {
    let login = |app: &TestApp, from: &'static str| {
        let request = app
            .client
            .post(app.url("/graphql"))
            .header("x-forwarded-for", from)
            .json(&json!({ "query": LOGIN, "variables": { "input": { "email": "nobody@example.com", "password": "wrong password" } } }));
        async move { request.send().await.unwrap().json::<Value>().await.unwrap() }
    };
    // Behind a trusted proxy each reader has their own allowance.
    let behind = [
        ("AUTH_RATE_LIMIT_PER_IP", "2"),
        ("TRUSTED_PROXIES", "127.0.0.0/8"),
    ];
    let app = spawn_app(Backend::Sqlite, &behind).await.unwrap();
    for _ in 0..2 {
        assert_eq!(
            error_codes(&login(&app, "203.0.113.1").await),
            ["INVALID_CREDENTIALS"]
        );
    }
    assert_eq!(
        error_codes(&login(&app, "203.0.113.1").await),
        ["RATE_LIMITED"]
    );
    assert_eq!(
        error_codes(&login(&app, "203.0.113.2").await),
        ["INVALID_CREDENTIALS"]
    );
    app.shutdown().await;
    // From anyone else, the header is ignored: it cannot buy a fresh allowance.
    let app = spawn_app(Backend::Sqlite, &[("AUTH_RATE_LIMIT_PER_IP", "2")])
        .await
        .unwrap();
    login(&app, "203.0.113.1").await;
    login(&app, "203.0.113.2").await;
    assert_eq!(
        error_codes(&login(&app, "203.0.113.3").await),
        ["RATE_LIMITED"]
    );
    app.shutdown().await;
}

#[tokio::test]
async fn a_stranger_cannot_lock_the_owner_out() {
    for_each_backend_with(&[("AUTH_RATE_LIMIT_PER_EMAIL", "3")], |app| async move {
        let owner = register(&app, "owner@example.com", PASSWORD).await;
        let device = owner["deviceToken"].as_str().unwrap().to_owned();
        let attempt = |password: &'static str, device: Option<String>| {
            let app = &app;
            async move {
                let input = json!({ "email": "owner@example.com", "password": password, "deviceToken": device });
                app.graphql(LOGIN, json!({ "input": input })).await
            }
        };
        // The stranger's guesses (registration counted as the first attempt).
        let mut codes = Vec::new();
        for _ in 0..3 {
            codes.extend(error_codes(&attempt("guess guess guess", None).await));
        }
        assert_eq!(codes.last().map(String::as_str), Some("RATE_LIMITED"), "{codes:?}");
        // The owner's device still gets in, and is given a fresh token.
        let owner = attempt(PASSWORD, Some(device)).await;
        assert!(owner["errors"].is_null(), "{owner}");
        assert!(owner["data"]["login"]["deviceToken"].is_string());
        // A forged token is a stranger's.
        let forged = attempt(PASSWORD, Some("abc.def".into())).await;
        assert_eq!(error_codes(&forged), ["RATE_LIMITED"]);
        app.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn a_login_storm_is_shed_not_queued() {
    let app = spawn_app(Backend::Sqlite, &[("AUTH_HASH_QUEUE", "2")])
        .await
        .unwrap();
    register(&app, "storm@example.com", PASSWORD).await;
    let input = json!({ "input": { "email": "storm@example.com", "password": PASSWORD } });
    let answers =
        futures_util::future::join_all((0..16).map(|_| app.graphql(LOGIN, input.clone()))).await;
    let codes: Vec<Vec<String>> = answers.iter().map(error_codes).collect();
    let shed = codes.iter().filter(|c| *c == &["RATE_LIMITED"]).count();
    let signed_in = codes.iter().filter(|c| c.is_empty()).count();
    assert_eq!(shed + signed_in, 16, "nothing else: {codes:?}");
    assert!(shed > 0 && signed_in > 0, "{codes:?}");
    for answer in answers.iter().filter(|a| !a["errors"].is_null()) {
        assert_eq!(answer["errors"][0]["extensions"]["retryAfter"], 1);
    }
    app.shutdown().await;
}

#[tokio::test]
async fn look_alike_emails_are_one_account_or_refused() {
    for_each_backend(|app| async move {
        register(&app, "dana@example.com", PASSWORD).await;
        let again = |email: &'static str| {
            let app = &app;
            async move {
                app.graphql(
                    "mutation($input: RegisterInput!) { register(input: $input) { accessToken } }",
                    json!({ "input": { "email": email, "password": PASSWORD, "name": "Dana" } }),
                )
                .await
            }
        };
        assert_eq!(
            error_codes(&again("ｄana@example.com").await),
            ["EMAIL_TAKEN"]
        );
        assert_eq!(
            error_codes(&again("DANA@EXAMPLE.COM").await),
            ["EMAIL_TAKEN"]
        );
        for invisible in [
            "dana\u{200b}@example.com",
            "da\u{00ad}na@example.com",
            "\u{202e}dana@example.com",
            "dana\u{200e}@example.com",
        ] {
            assert_eq!(
                error_codes(&again(invisible).await),
                ["BAD_USER_INPUT"],
                "{invisible:?}"
            );
        }
        let login = app
            .graphql(
                LOGIN,
                json!({ "input": { "email": "ＤＡＮＡ@example.com", "password": PASSWORD } }),
            )
            .await;
        assert!(login["errors"].is_null(), "{login}");
        app.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn ingest_stays_inside_its_root_and_cites_relative_paths() {
    let corpus = tempfile::tempdir().unwrap();
    let private = tempfile::tempdir().unwrap();
    std::fs::write(
        private.path().join("secret.md"),
        "# Secret\nThe vault combination is quixotic-zebra-4471.",
    )
    .unwrap();
    std::fs::write(
        corpus.path().join("bees.md"),
        "# Bees\nHoneybees dance to tell others where the flowers are.",
    )
    .unwrap();
    std::os::unix::fs::symlink(
        private.path().join("secret.md"),
        corpus.path().join("secret.md"),
    )
    .unwrap();
    std::os::unix::fs::symlink(
        corpus.path().join("bees.md"),
        corpus.path().join("alias.md"),
    )
    .unwrap();
    let data = tempfile::tempdir().unwrap();
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_lectern"))
        .current_dir(data.path())
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .args(["ingest", corpus.path().to_str().unwrap()])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(
        stderr.contains("skipped secret.md: a link that leads out of the corpus"),
        "{stderr}"
    );
    assert!(
        stderr.contains("skipped alias.md: a link to bees.md, which is indexed under its own path"),
        "{stderr}"
    );

    let absolute = corpus.path().canonicalize().unwrap();
    let app = spawn_app_with_url(
        Backend::Sqlite,
        None,
        &[("CORPUS_DIR", absolute.to_str().unwrap())],
    )
    .await;
    let chat = app
        .graphql(
            "mutation { chat(input: {message: \"What is the vault combination? How do honeybees dance?\"}) { answer sources { path } } }",
            json!({}),
        )
        .await;
    let text = chat.to_string();
    assert!(
        !text.contains("quixotic"),
        "the linked private file is not quotable: {text}"
    );
    let paths: Vec<&str> = chat["data"]["chat"]["sources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["path"].as_str().unwrap())
        .collect();
    assert!(paths.contains(&"bees.md"), "{paths:?}");
    assert!(
        paths
            .iter()
            .all(|p| !p.starts_with('/') && !p.contains(absolute.to_str().unwrap()))
    );
    app.shutdown().await;
}

/// Bodies over 64 KiB are read a few at a time server-wide, so a flood of large bodies
/// cannot make the server hold them all at once: past the bound a large request waits
/// (at most the body timeout) and is then answered `RATE_LIMITED`, while small requests
/// are served at once.
#[tokio::test]
async fn large_bodies_are_read_a_few_at_a_time() {
    let app = spawn_app_with_url(Backend::Sqlite, None, &[("HTTP_BODY_TIMEOUT_SECS", "2")]).await;
    // A valid request over 64 KiB (its document is over the length limit, so once read
    // it is refused as such).
    let long = json!({ "query": format!("{{ {} }}", "__typename ".repeat(10_000)) }).to_string();
    assert!(long.len() > lectern::http::LARGE_BODY_BYTES);
    let large = || {
        app.client
            .post(app.url("/graphql"))
            .header("content-type", "application/json")
            .body(long.clone())
            .send()
    };
    // Every permit taken by a large body that trickles in, a byte at a time.
    let mut slow = Vec::new();
    for _ in 0..lectern::http::LARGE_BODY_READS {
        let mut socket = TcpStream::connect(app.addr).await.unwrap();
        let head = format!(
            "POST /graphql HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            long.len()
        );
        socket.write_all(head.as_bytes()).await.unwrap();
        slow.push(socket);
    }
    let trickle = tokio::spawn(async move {
        for i in 0..=12 {
            for socket in &mut slow {
                let byte = if i == 0 { b"{" } else { b" " };
                if socket.write_all(byte).await.is_err() {
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        // About 4 s; dropping the sockets frees the permits.
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let waiting = large();
    let small = app.graphql("{ __typename }", json!({}));
    let (waiting, small) = tokio::join!(waiting, small);
    assert_eq!(small["data"]["__typename"], "Query", "small bodies pass");
    let waiting = waiting.unwrap();
    assert_eq!(waiting.status(), 503);
    assert_eq!(waiting.headers()["retry-after"], "1");
    let answer: Value = waiting.json().await.unwrap();
    assert_eq!(error_codes(&answer), ["RATE_LIMITED"], "{answer}");
    assert_eq!(answer["errors"][0]["extensions"]["retryAfter"], 1);
    trickle.await.unwrap();
    // With the permits free again, a large body is read and answered.
    let answer: Value = large().await.unwrap().json().await.unwrap();
    assert_eq!(error_codes(&answer), ["BAD_USER_INPUT"], "{answer}");
    assert!(
        answer["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("bytes long"),
        "{answer}"
    );
    app.shutdown().await;
}
