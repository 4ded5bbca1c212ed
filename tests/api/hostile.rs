//! Hostile and malformed input: every request gets a clear error with a code, nothing is
//! stored or corrupted, and production mode closes what development leaves open.

use serde_json::{Value, json};

use crate::helpers::{Backend, error_codes, for_each_backend, register, spawn_app_with_url};

const PASSWORD: &str = "correct horse battery";

/// Builds the variables of an operation around one hostile string.
type Variables = Box<dyn Fn(&str) -> Value>;

/// Sends a raw body with a content type and returns the status and the JSON answer.
async fn post_raw(
    app: &crate::helpers::TestApp,
    content_type: Option<&str>,
    body: &str,
) -> (u16, Value) {
    let mut request = app.client.post(app.url("/graphql")).body(body.to_owned());
    if let Some(content_type) = content_type {
        request = request.header("content-type", content_type);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    let body = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("status {status}: the body is JSON ({e}): {text}"));
    (status, body)
}

#[tokio::test]
async fn malformed_requests_are_refused_with_a_code() {
    let app = spawn_app_with_url(Backend::Sqlite, None, &[]).await;
    let json = Some("application/json");
    let cases: [(&str, Option<&str>, &str, u16); 7] = [
        (
            "malformed JSON",
            json,
            r#"{"query": "{ health { status } }""#,
            400,
        ),
        ("empty body", json, "", 400),
        ("a JSON value that is not a request", json, "42", 400),
        // An absent query is an empty document: a GraphQL error, so 200 over application/json.
        ("no query", json, r#"{"variables": {}}"#, 200),
        (
            "wrong content type",
            Some("text/plain"),
            r#"{"query":"{ __typename }"}"#,
            415,
        ),
        (
            "no content type",
            None,
            r#"{"query":"{ __typename }"}"#,
            415,
        ),
        (
            "a batch",
            json,
            r#"[{"query":"{ __typename }"},{"query":"{ __typename }"}]"#,
            400,
        ),
    ];
    for (what, content_type, body, status) in cases {
        let (got, response) = post_raw(&app, content_type, body).await;
        assert_eq!(got, status, "{what}: {response}");
        assert_eq!(
            error_codes(&response),
            ["BAD_USER_INPUT"],
            "{what}: {response}"
        );
        let message = response["errors"][0]["message"].as_str().unwrap();
        assert!(!message.is_empty(), "{what}: a message says what is wrong");
    }

    // Documents that parse as JSON but not as GraphQL, or do not fit the schema.
    let documents: [(&str, &str, Value); 7] = [
        ("syntax error", "{ health { status ", json!({})),
        ("unknown field", "{ nope }", json!({})),
        (
            "unknown argument",
            "{ conversations(last: 3) { edges { cursor } } }",
            json!({}),
        ),
        (
            "variable of the wrong type",
            "query($first: Int) { conversations(first: $first) { edges { cursor } } }",
            json!({ "first": "ten" }),
        ),
        (
            "missing required variable",
            "query($id: ID!) { conversation(id: $id) { id } }",
            json!({}),
        ),
        (
            "input object with an unknown field",
            "mutation($input: LoginInput!) { login(input: $input) { accessToken } }",
            json!({ "input": { "email": "a@example.com", "password": PASSWORD, "admin": true } }),
        ),
        (
            "integer out of range",
            "{ conversations(first: 99999999999) { edges { cursor } } }",
            json!({}),
        ),
    ];
    for (what, query, variables) in documents {
        let response = app.graphql(query, variables).await;
        assert!(response["data"].is_null(), "{what}: {response}");
        let codes = error_codes(&response);
        assert!(!codes.is_empty(), "{what}: {response}");
        assert!(
            codes.iter().all(|c| c == "BAD_USER_INPUT"),
            "{what}: {response}"
        );
    }

    // An operation name that is not in the document.
    let (status, response) = post_raw(
        &app,
        json,
        &json!({ "query": "query A { __typename }", "operationName": "B" }).to_string(),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(error_codes(&response), ["BAD_USER_INPUT"], "{response}");

    app.shutdown().await;
}

#[tokio::test]
async fn expensive_fields_cannot_be_multiplied_by_aliases() {
    let app = spawn_app_with_url(Backend::Sqlite, None, &[]).await;

    // Four chat turns in one request exceed the complexity limit before anything runs.
    let aliases: String = (0..4)
        .map(|i| format!("a{i}: chat(input: {{message: \"tides\"}}) {{ answer }} "))
        .collect();
    let response = app
        .graphql(&format!("mutation {{ {aliases} }}"), json!({}))
        .await;
    assert!(response["data"].is_null(), "{response}");
    assert_eq!(error_codes(&response), ["BAD_USER_INPUT"], "{response}");
    assert!(
        response["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("complex"),
        "{response}"
    );

    // The same for password hashing: many logins in one request never reach argon2.
    let aliases: String = (0..10)
        .map(|i| {
            format!("l{i}: login(input: {{email: \"x{i}@example.com\", password: \"{PASSWORD}\"}}) {{ accessToken }} ")
        })
        .collect();
    let response = app
        .graphql(&format!("mutation {{ {aliases} }}"), json!({}))
        .await;
    assert_eq!(error_codes(&response), ["BAD_USER_INPUT"], "{response}");

    // A page of pages: 100 conversations × 100 messages each is refused as too complex.
    let response = app
        .graphql(
            "{ conversations(first: 100) { edges { node { messages(first: 100) { edges { node { content } } } } } } }",
            json!({}),
        )
        .await;
    assert_eq!(error_codes(&response), ["BAD_USER_INPUT"], "{response}");

    // One chat turn is fine.
    let response = app
        .graphql(
            "mutation { chat(input: {message: \"tides\"}) { answer } }",
            json!({}),
        )
        .await;
    assert!(response["errors"].is_null(), "{response}");
    app.shutdown().await;
}

/// Strings no form would send: NUL and other control characters, bidi overrides, lone
/// combining marks, zero-width characters, emoji, and far too much of them.
fn nasty_strings() -> Vec<String> {
    vec![
        "nul\0byte".into(),
        "\0".into(),
        "bell\u{7}and escape\u{1b}[31m".into(),
        "x".repeat(20_000),
        "\u{202e}evil\u{202c}".into(),
        "\u{200b}\u{feff}".into(),
        "\u{301}".into(),
        "🦀".repeat(5_000),
        "\u{10ffff}".into(),
    ]
}

#[tokio::test]
async fn nasty_strings_in_every_argument_never_break_anything() {
    for_each_backend(|app| async move {
        let reader = register(&app, "reader@example.com", PASSWORD).await;
        let token = reader["accessToken"].as_str().unwrap().to_owned();
        let refresh = reader["refreshToken"].as_str().unwrap().to_owned();
        let chat = app
            .graphql_as(
                Some(&token),
                "mutation { chat(input: {message: \"How do tides work?\"}) { conversation { id } } }",
                json!({}),
            )
            .await;
        let conversation = chat["data"]["chat"]["conversation"]["id"]
            .as_str()
            .unwrap()
            .to_owned();

        // Every string argument of the schema, each with each nasty string.
        let operations: Vec<(&str, Variables)> = vec![
            (
                "mutation($v: String!) { register(input: {email: $v, password: $v, name: $v}) { accessToken } }",
                Box::new(|v| json!({ "v": v })),
            ),
            (
                "mutation($v: String!) { register(input: {email: \"new@example.com\", password: \"correct horse battery\", name: $v}) { accessToken } }",
                Box::new(|v| json!({ "v": v })),
            ),
            (
                "mutation($v: String!) { login(input: {email: $v, password: $v}) { accessToken } }",
                Box::new(|v| json!({ "v": v })),
            ),
            (
                "mutation($v: String!) { login(input: {email: \"reader@example.com\", password: $v}) { accessToken } }",
                Box::new(|v| json!({ "v": v })),
            ),
            (
                "mutation($v: String!) { refreshSession(refreshToken: $v) { accessToken } }",
                Box::new(|v| json!({ "v": v })),
            ),
            (
                "query($v: ID!) { conversation(id: $v) { id } }",
                Box::new(|v| json!({ "v": v })),
            ),
            (
                "query($v: String!) { conversations(after: $v) { edges { cursor } } }",
                Box::new(|v| json!({ "v": v })),
            ),
            (
                "query($id: ID!, $v: String!) { conversation(id: $id) { messages(after: $v) { edges { cursor } } } }",
                Box::new({
                    let id = conversation.clone();
                    move |v| json!({ "id": id, "v": v })
                }),
            ),
            (
                "mutation($v: ID!) { renameConversation(id: $v, title: \"t\") { id } }",
                Box::new(|v| json!({ "v": v })),
            ),
            (
                "mutation($id: ID!, $v: String!) { renameConversation(id: $id, title: $v) { id } }",
                Box::new({
                    let id = conversation.clone();
                    move |v| json!({ "id": id, "v": v })
                }),
            ),
            (
                "mutation($v: ID!) { deleteConversation(id: $v) }",
                Box::new(|v| json!({ "v": v })),
            ),
            (
                "mutation($v: String!) { chat(input: {message: $v}) { answer conversation { id } } }",
                Box::new(|v| json!({ "v": v })),
            ),
            (
                "mutation($v: String!) { chat(input: {message: \"tides\", selectedText: $v}) { answer conversation { id } } }",
                Box::new(|v| json!({ "v": v })),
            ),
            (
                "mutation($v: ID!) { chat(input: {message: \"tides\", conversationId: $v}) { answer } }",
                Box::new(|v| json!({ "v": v })),
            ),
        ];
        let acceptable = [
            "BAD_USER_INPUT",
            "NOT_FOUND",
            "INVALID_CREDENTIALS",
            "UNAUTHENTICATED",
            // A printable-but-odd name registers once; the next attempt finds the email taken.
            "EMAIL_TAKEN",
        ];
        for (query, variables) in &operations {
            for nasty in nasty_strings() {
                let response = app.graphql_as(Some(&token), query, variables(&nasty)).await;
                for code in error_codes(&response) {
                    assert!(
                        acceptable.contains(&code.as_str()),
                        "{query} with {:?}: {code}: {response}",
                        nasty.chars().take(20).collect::<String>()
                    );
                }
            }
        }

        // Nothing was corrupted by any of that. Chats whose odd-but-printable input was
        // accepted started conversations of their own; every conversation holds a whole turn
        // (question and answer), the first one is still there, and the refresh token works.
        let response = app
            .graphql_as(
                Some(&token),
                "{ conversations(first: 40) { edges { node { id messages(first: 10) { edges { node { role } } } } } } }",
                json!({}),
            )
            .await;
        let edges = response["data"]["conversations"]["edges"]
            .as_array()
            .unwrap_or_else(|| panic!("{response}"));
        assert!(
            edges.iter().any(|e| e["node"]["id"] == conversation.as_str()),
            "{response}"
        );
        for edge in edges {
            let roles: Vec<&str> = edge["node"]["messages"]["edges"]
                .as_array()
                .unwrap()
                .iter()
                .map(|m| m["node"]["role"].as_str().unwrap())
                .collect();
            assert_eq!(roles, ["USER", "ASSISTANT"], "{response}");
        }
        let response = app
            .graphql(
                "mutation($t: String!) { refreshSession(refreshToken: $t) { accessToken } }",
                json!({ "t": refresh }),
            )
            .await;
        assert!(response["errors"].is_null(), "{response}");
        let response = app
            .graphql(
                "mutation($input: LoginInput!) { login(input: $input) { user { email name } } }",
                json!({ "input": { "email": "new@example.com", "password": PASSWORD } }),
            )
            .await;
        // The only registration that could succeed used a printable-but-unusual name.
        if response["errors"].is_null() {
            let name = response["data"]["login"]["user"]["name"].as_str().unwrap();
            assert!(!name.chars().any(char::is_control), "{name:?}");
        }
    })
    .await;
}

#[tokio::test]
async fn unusual_unicode_round_trips_exactly() {
    for_each_backend(|app| async move {
        let name = "Zoë ✨ 山田 \u{200d}👩‍👩‍👧";
        let response = app
            .graphql(
                "mutation($input: RegisterInput!) { register(input: $input) { accessToken user { name } } }",
                json!({ "input": { "email": "ZOË@Example.com", "password": "pässwörd ✨ 🦀", "name": name } }),
            )
            .await;
        assert!(response["errors"].is_null(), "{response}");
        assert_eq!(response["data"]["register"]["user"]["name"], name);
        let token = response["data"]["register"]["accessToken"].as_str().unwrap().to_owned();

        // The same password logs in; the email compares case-insensitively.
        let response = app
            .graphql(
                "mutation($input: LoginInput!) { login(input: $input) { user { name } } }",
                json!({ "input": { "email": "zoë@example.com", "password": "pässwörd ✨ 🦀" } }),
            )
            .await;
        assert!(response["errors"].is_null(), "{response}");

        let question = "Was bedeutet „Ebbe“? 潮汐とは？ \u{202e}RTL";
        let response = app
            .graphql_as(
                Some(&token),
                "mutation($m: String!) { chat(input: {message: $m}) { conversation { id messages { edges { node { content } } } } } }",
                json!({ "m": question }),
            )
            .await;
        assert!(response["errors"].is_null(), "{response}");
        let conversation = &response["data"]["chat"]["conversation"];
        assert_eq!(conversation["messages"]["edges"][0]["node"]["content"], question);

        let title = "🌊 Tides — 潮汐";
        let response = app
            .graphql_as(
                Some(&token),
                "mutation($id: ID!, $t: String!) { renameConversation(id: $id, title: $t) { title } }",
                json!({ "id": conversation["id"], "t": title }),
            )
            .await;
        assert_eq!(response["data"]["renameConversation"]["title"], title, "{response}");
    })
    .await;
}

#[tokio::test]
async fn garbage_and_oversized_tokens_are_unauthenticated() {
    let app = spawn_app_with_url(Backend::Sqlite, None, &[]).await;
    let garbage = [
        "garbage".to_owned(),
        "a.b.c".to_owned(),
        "🦀.🦀.🦀".to_owned(),
        format!("eyJ{}", "A".repeat(8_000)),
        ".".repeat(4_000),
    ];
    for token in &garbage {
        let response = app
            .graphql_as(
                Some(token),
                "{ me { id } conversations { edges { cursor } } }",
                json!({}),
            )
            .await;
        // A token that does not verify is never a user; the client is told to sign in again.
        assert!(response["data"]["me"].is_null(), "{response}");
        assert_eq!(
            error_codes(&response),
            ["UNAUTHENTICATED", "UNAUTHENTICATED"],
            "{response}"
        );
    }
    // A header far beyond any real token is refused by the HTTP layer, not by a crash.
    let response = app
        .client
        .post(app.url("/graphql"))
        .bearer_auth("A".repeat(1_000_000))
        .json(&json!({ "query": "{ me { id } }" }))
        .send()
        .await;
    if let Ok(response) = response {
        assert!(response.status().is_client_error(), "{}", response.status());
    }
    // The server is still there.
    let response = app.graphql("{ health { status } }", json!({})).await;
    assert!(response["errors"].is_null(), "{response}");
    app.shutdown().await;
}

#[tokio::test]
async fn production_mode_closes_what_development_leaves_open() {
    let prod = spawn_app_with_url(Backend::Sqlite, None, &[("APP_ENV", "production")]).await;
    let response = prod.client.get(prod.url("/healthz")).send().await.unwrap();
    let headers = response.headers();
    assert_eq!(headers["x-content-type-options"], "nosniff");
    assert_eq!(headers["x-frame-options"], "DENY");
    assert_eq!(headers["referrer-policy"], "no-referrer");
    assert!(headers.contains_key("strict-transport-security"));
    assert!(
        headers["content-security-policy"]
            .to_str()
            .unwrap()
            .contains("default-src 'none'")
    );
    // No CORS origin is allowed unless listed.
    let preflight = prod
        .client
        .request(reqwest::Method::OPTIONS, prod.url("/graphql"))
        .header("origin", "https://anywhere.example.com")
        .header("access-control-request-method", "POST")
        .send()
        .await
        .unwrap();
    assert!(
        !preflight
            .headers()
            .contains_key("access-control-allow-origin")
    );
    prod.shutdown().await;

    // Introspection and GraphiQL can be switched back on explicitly.
    let open = spawn_app_with_url(
        Backend::Sqlite,
        None,
        &[("APP_ENV", "production"), ("GRAPHQL_INTROSPECTION", "true")],
    )
    .await;
    let response = open
        .graphql("{ __schema { queryType { name } } }", json!({}))
        .await;
    assert_eq!(response["data"]["__schema"]["queryType"]["name"], "Query");
    let page = open.client.get(open.url("/graphql")).send().await.unwrap();
    assert_eq!(page.status(), 200);
    open.shutdown().await;

    // And switched off in development.
    let closed =
        spawn_app_with_url(Backend::Sqlite, None, &[("GRAPHQL_INTROSPECTION", "false")]).await;
    let response = closed
        .graphql("{ __schema { queryType { name } } }", json!({}))
        .await;
    assert!(response["data"]["__schema"].is_null(), "{response}");
    closed.shutdown().await;
}
