//! Conversation history through GraphQL (reads, rename, delete) and through the service
//! the chat flow uses (writes), on SQLite and PostgreSQL.

use std::collections::HashSet;

use lectern::entities::{conversation, message};
use lectern::history::{self, NewTurn, RecordedTurn};
use sea_orm::{ColumnTrait, EntityTrait, PaginatorTrait, QueryFilter};
use serde_json::{Value, json};

use crate::helpers::{TestApp, error_codes, for_each_backend, register};

const PASSWORD: &str = "correct horse battery";
const LIMIT: u32 = 50;

const LIST: &str = "query($first: Int, $after: String) {
  conversations(first: $first, after: $after) {
    edges { cursor node { id title latestMessage { role content } } }
    pageInfo { hasNextPage endCursor }
  } }";
const ONE: &str = "query($id: ID!) { conversation(id: $id) { id title updatedAt
  messages(first: 10) { edges { node { role content sources { title path snippet score } } } } } }";
const RENAME: &str = "mutation($id: ID!, $title: String!) { renameConversation(id: $id, title: $title) { id title } }";
const DELETE: &str = "mutation($id: ID!) { deleteConversation(id: $id) }";

struct Reader {
    id: String,
    token: String,
}

async fn reader(app: &TestApp, email: &str) -> Reader {
    let payload = register(app, email, PASSWORD).await;
    Reader {
        id: payload["user"]["id"].as_str().unwrap().to_owned(),
        token: payload["accessToken"].as_str().unwrap().to_owned(),
    }
}

fn turn(n: usize) -> NewTurn {
    NewTurn {
        turn_id: uuid::Uuid::new_v4().to_string(),
        question: format!("Question number {n}?"),
        answer: format!("Answer number {n}."),
        sources: json!([{ "title": "Chapter 1", "path": "docs/ch1.md", "snippet": "…", "score": 0.5 }]),
        unanswered: false,
    }
}

async fn start(app: &TestApp, reader: &Reader, n: usize) -> RecordedTurn {
    history::record_turn(app.database.connection(), &reader.id, None, turn(n), LIMIT)
        .await
        .expect("a turn is recorded")
}

async fn conversation_ids(app: &TestApp, reader: &Reader) -> Vec<String> {
    conversation::Entity::find()
        .filter(conversation::Column::UserId.eq(&reader.id))
        .all(app.database.connection())
        .await
        .unwrap()
        .into_iter()
        .map(|c| c.id)
        .collect()
}

#[tokio::test]
async fn pages_forward_through_fifty_without_gaps_or_duplicates() {
    for_each_backend(|app| async move {
        let ada = reader(&app, "ada@example.com").await;
        let mut created = Vec::new();
        for n in 0..50 {
            created.push(start(&app, &ada, n).await.conversation.id);
        }
        let newest_first: Vec<String> = created.iter().rev().cloned().collect();

        let mut seen = Vec::new();
        let mut after = Value::Null;
        loop {
            let page = app
                .graphql_as(
                    Some(&ada.token),
                    LIST,
                    json!({ "first": 7, "after": after }),
                )
                .await;
            assert!(page["errors"].is_null(), "{page}");
            let connection = &page["data"]["conversations"];
            for edge in connection["edges"].as_array().unwrap() {
                seen.push(edge["node"]["id"].as_str().unwrap().to_owned());
                assert_eq!(edge["node"]["latestMessage"]["role"], "ASSISTANT");
            }
            if connection["pageInfo"]["hasNextPage"] == false {
                break;
            }
            after = connection["pageInfo"]["endCursor"].clone();
        }
        assert_eq!(seen, newest_first, "newest activity first, every one once");

        // Activity reorders: a turn on the oldest conversation makes it the newest.
        let oldest = created[0].clone();
        history::record_turn(
            app.database.connection(),
            &ada.id,
            Some(&oldest),
            turn(99),
            LIMIT,
        )
        .await
        .unwrap();
        let page = app
            .graphql_as(Some(&ada.token), LIST, json!({ "first": 1 }))
            .await;
        assert_eq!(
            page["data"]["conversations"]["edges"][0]["node"]["id"],
            oldest.as_str()
        );
        assert_eq!(
            page["data"]["conversations"]["edges"][0]["node"]["latestMessage"]["content"],
            "Answer number 99."
        );

        // Opening one shows its messages in order with their sources.
        let one = app
            .graphql_as(Some(&ada.token), ONE, json!({ "id": oldest }))
            .await;
        let messages = one["data"]["conversation"]["messages"]["edges"]
            .as_array()
            .unwrap();
        let contents: Vec<&str> = messages
            .iter()
            .map(|e| e["node"]["content"].as_str().unwrap())
            .collect();
        assert_eq!(
            contents,
            [
                "Question number 0?",
                "Answer number 0.",
                "Question number 99?",
                "Answer number 99."
            ]
        );
        assert_eq!(messages[1]["node"]["sources"][0]["path"], "docs/ch1.md");
        assert_eq!(messages[0]["node"]["sources"], json!([]));
        app.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn the_fifty_first_conversation_removes_the_least_recently_active() {
    for_each_backend(|app| async move {
        let ada = reader(&app, "ada@example.com").await;
        let mut created = Vec::new();
        for n in 0..50 {
            created.push(start(&app, &ada, n).await.conversation.id);
        }
        // Keep the oldest alive by writing to it: the second oldest becomes the victim.
        history::record_turn(
            app.database.connection(),
            &ada.id,
            Some(&created[0]),
            turn(50),
            LIMIT,
        )
        .await
        .unwrap();
        let newest = start(&app, &ada, 51).await.conversation.id;

        let remaining: HashSet<String> = conversation_ids(&app, &ada).await.into_iter().collect();
        assert_eq!(remaining.len(), 50);
        assert!(remaining.contains(&newest));
        assert!(
            remaining.contains(&created[0]),
            "written to just now, so kept"
        );
        assert!(
            !remaining.contains(&created[1]),
            "least recently active, so pruned"
        );
        let orphans = message::Entity::find()
            .filter(message::Column::ConversationId.eq(&created[1]))
            .count(app.database.connection())
            .await
            .unwrap();
        assert_eq!(orphans, 0, "its messages went with it");
        app.shutdown().await;
    })
    .await;
}

/// 45 conversations exist; 20 are created at once. Exactly 50 remain, and all 20 new ones
/// are among them. The mechanism is the per-reader lock in `history::record_turn`.
#[tokio::test]
async fn concurrent_creations_never_exceed_the_limit() {
    for_each_backend(|app| async move {
        let ada = reader(&app, "ada@example.com").await;
        for n in 0..45 {
            start(&app, &ada, n).await;
        }
        let creations = (0..20).map(|n| {
            let (app, ada) = (&app, &ada);
            async move { start(app, ada, 100 + n).await.conversation.id }
        });
        let new_ids = futures_util::future::join_all(creations).await;

        let remaining: HashSet<String> = conversation_ids(&app, &ada).await.into_iter().collect();
        assert_eq!(remaining.len(), 50, "{:?}", app.backend);
        for id in &new_ids {
            assert!(remaining.contains(id), "a new conversation was pruned");
        }
        app.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn another_readers_conversations_read_as_not_found() {
    for_each_backend(|app| async move {
        let ada = reader(&app, "ada@example.com").await;
        let bob = reader(&app, "bob@example.com").await;
        let adas = start(&app, &ada, 1).await.conversation.id;

        let read = app
            .graphql_as(Some(&bob.token), ONE, json!({ "id": adas }))
            .await;
        assert_eq!(error_codes(&read), ["NOT_FOUND"], "{read}");
        assert!(read["data"]["conversation"].is_null());
        let renamed = app
            .graphql_as(
                Some(&bob.token),
                RENAME,
                json!({ "id": adas, "title": "mine now" }),
            )
            .await;
        assert_eq!(error_codes(&renamed), ["NOT_FOUND"]);
        let deleted = app
            .graphql_as(Some(&bob.token), DELETE, json!({ "id": adas }))
            .await;
        assert_eq!(error_codes(&deleted), ["NOT_FOUND"]);
        let listed = app.graphql_as(Some(&bob.token), LIST, json!({})).await;
        assert_eq!(listed["data"]["conversations"]["edges"], json!([]));
        let continued = history::record_turn(
            app.database.connection(),
            &bob.id,
            Some(&adas),
            turn(2),
            LIMIT,
        )
        .await;
        assert!(matches!(continued, Err(history::HistoryError::NotFound)));

        // Ada's conversation is untouched.
        let still = app
            .graphql_as(Some(&ada.token), ONE, json!({ "id": adas }))
            .await;
        assert_eq!(still["data"]["conversation"]["title"], "Question number 1?");
        let messages = still["data"]["conversation"]["messages"]["edges"]
            .as_array()
            .unwrap();
        assert_eq!(messages.len(), 2);

        // Nobody signed in: UNAUTHENTICATED, not an empty list.
        let anonymous = app.graphql(LIST, json!({})).await;
        assert_eq!(error_codes(&anonymous), ["UNAUTHENTICATED"]);
        app.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn rename_trims_and_delete_cascades() {
    for_each_backend(|app| async move {
        let ada = reader(&app, "ada@example.com").await;
        let recorded = start(&app, &ada, 1).await;
        let id = recorded.conversation.id.clone();
        let before = app
            .graphql_as(Some(&ada.token), ONE, json!({ "id": id }))
            .await;

        let renamed = app
            .graphql_as(
                Some(&ada.token),
                RENAME,
                json!({ "id": id, "title": "  Borrowing  " }),
            )
            .await;
        assert_eq!(
            renamed["data"]["renameConversation"]["title"], "Borrowing",
            "{renamed}"
        );
        let after = app
            .graphql_as(Some(&ada.token), ONE, json!({ "id": id }))
            .await;
        assert_eq!(after["data"]["conversation"]["title"], "Borrowing");
        assert_eq!(
            after["data"]["conversation"]["updatedAt"], before["data"]["conversation"]["updatedAt"],
            "renaming is not activity"
        );

        let deleted = app
            .graphql_as(Some(&ada.token), DELETE, json!({ "id": id }))
            .await;
        assert_eq!(deleted["data"]["deleteConversation"], true);
        let gone = app
            .graphql_as(Some(&ada.token), ONE, json!({ "id": id }))
            .await;
        assert_eq!(error_codes(&gone), ["NOT_FOUND"]);
        let again = app
            .graphql_as(Some(&ada.token), DELETE, json!({ "id": id }))
            .await;
        assert_eq!(error_codes(&again), ["NOT_FOUND"]);
        let messages = message::Entity::find()
            .filter(message::Column::ConversationId.eq(&id))
            .count(app.database.connection())
            .await
            .unwrap();
        assert_eq!(messages, 0);
        app.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn bad_arguments_are_bad_user_input() {
    for_each_backend(|app| async move {
        let ada = reader(&app, "ada@example.com").await;
        let id = start(&app, &ada, 1).await.conversation.id;
        for (first, after) in [
            (json!(0), Value::Null),
            (json!(101), Value::Null),
            (json!(-1), Value::Null),
            (json!(5), json!("not-a-cursor")),
            (json!(5), json!("")),
        ] {
            let response = app
                .graphql_as(Some(&ada.token), LIST, json!({ "first": first, "after": after }))
                .await;
            assert_eq!(error_codes(&response), ["BAD_USER_INPUT"], "{first} {after}: {response}");
        }
        let messages = app
            .graphql_as(
                Some(&ada.token),
                "query($id: ID!) { conversation(id: $id) { messages(first: 0) { edges { cursor } } } }",
                json!({ "id": id }),
            )
            .await;
        assert_eq!(error_codes(&messages), ["BAD_USER_INPUT"]);
        for title in ["", "   ", &"x".repeat(201)] {
            let response = app
                .graphql_as(Some(&ada.token), RENAME, json!({ "id": id, "title": title }))
                .await;
            assert_eq!(error_codes(&response), ["BAD_USER_INPUT"]);
        }
        for malformed in ["", "not-an-id", "'; DROP TABLE conversation; --"] {
            let response = app
                .graphql_as(Some(&ada.token), ONE, json!({ "id": malformed }))
                .await;
            assert_eq!(error_codes(&response), ["NOT_FOUND"], "{malformed}");
        }
        let title = app.graphql_as(Some(&ada.token), ONE, json!({ "id": id })).await;
        assert_eq!(title["data"]["conversation"]["title"], "Question number 1?");
        app.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn every_page_field_answers_and_cursors_from_before_an_upgrade_still_read() {
    use base64::Engine as _;
    const PAGE: &str = "{ conversations(first: 2) {
      edges { cursor node { id } } nodes { id }
      pageInfo { hasPreviousPage hasNextPage startCursor endCursor } } }";
    for_each_backend(|app| async move {
        let ada = reader(&app, "ada@example.com").await;
        let mut created = Vec::new();
        for n in 0..3 {
            created.push(start(&app, &ada, n).await.conversation);
        }

        // The same document twice: the second time it is known to be valid and skips
        // the validation rules; the answer is the same.
        let first = app.graphql_as(Some(&ada.token), PAGE, json!({})).await;
        let again = app.graphql_as(Some(&ada.token), PAGE, json!({})).await;
        assert_eq!(first, again);
        assert!(first["errors"].is_null(), "{first}");
        let page = &first["data"]["conversations"];
        let edges = page["edges"].as_array().unwrap();
        let ids: Vec<&Value> = edges.iter().map(|e| &e["node"]["id"]).collect();
        assert_eq!(ids, [created[2].id.as_str(), created[1].id.as_str()]);
        let nodes: Vec<&Value> = page["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| &n["id"])
            .collect();
        assert_eq!(nodes, ids);
        assert_eq!(
            page["pageInfo"],
            json!({
                "hasPreviousPage": false,
                "hasNextPage": true,
                "startCursor": edges[0]["cursor"],
                "endCursor": edges[1]["cursor"],
            })
        );

        // A cursor as it was written before (RFC 3339 time) still pages on.
        let middle = &created[1];
        let stored = conversation::Entity::find_by_id(&middle.id)
            .one(app.database.connection())
            .await
            .unwrap()
            .unwrap();
        let old = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!(
            "c1|{}|{}",
            stored
                .updated_at
                .to_rfc3339_opts(chrono::SecondsFormat::Nanos, true),
            stored.id
        ));
        let rest = app
            .graphql_as(Some(&ada.token), LIST, json!({ "first": 5, "after": old }))
            .await;
        assert!(rest["errors"].is_null(), "{rest}");
        assert_eq!(
            rest["data"]["conversations"]["edges"][0]["node"]["id"],
            created[0].id.as_str()
        );
        assert_eq!(
            rest["data"]["conversations"]["pageInfo"]["hasNextPage"],
            false
        );

        // A document known to be valid without variables is still checked in full when
        // variables come: a value of the wrong type is refused before anything runs.
        let sized = "query($first: Int) { conversations(first: $first) { edges { cursor } } }";
        for _ in 0..2 {
            let fine = app.graphql_as(Some(&ada.token), sized, json!({})).await;
            assert!(fine["errors"].is_null(), "{fine}");
        }
        let wrong = app
            .graphql_as(Some(&ada.token), sized, json!({ "first": "many" }))
            .await;
        assert!(
            wrong["data"].is_null(),
            "refused whole, not field by field: {wrong}"
        );
        let codes = error_codes(&wrong);
        assert!(
            !codes.is_empty() && codes.iter().all(|c| c == "BAD_USER_INPUT"),
            "{wrong}"
        );
        assert!(
            wrong["errors"][0]["message"]
                .as_str()
                .unwrap()
                .contains("Invalid value for argument"),
            "{wrong}"
        );
        app.shutdown().await;
    })
    .await;
}

/// A page of plain fields is resolved in one pass (`graphql::connection`), anything else
/// field by field through async-graphql: the two must answer byte for byte alike, in
/// the order asked, aliases, `__typename` and all.
#[tokio::test]
async fn a_plain_page_answers_exactly_as_one_resolved_field_by_field() {
    const FIELDS: &str = "a: edges { c: cursor node { __typename id title createdAt updatedAt } }
      pageInfo { endCursor hasNextPage startCursor hasPreviousPage __typename }
      nodes { title id } __typename";
    for_each_backend(|app| async move {
        let ada = reader(&app, "ada@example.com").await;
        let mut ids = Vec::new();
        for n in 0..3 {
            ids.push(start(&app, &ada, n).await.conversation.id);
        }
        // A title with bytes JSON escapes, and beyond ASCII.
        let renamed = app
            .graphql_as(
                Some(&ada.token),
                RENAME,
                json!({ "id": ids[2], "title": r#"The "tides" \ é ✓"# }),
            )
            .await;
        assert!(renamed.get("errors").is_none(), "{renamed}");
        let ask = |query: String| {
            let app = &app;
            let token = ada.token.clone();
            async move { app.graphql_text_as(&token, &query).await }
        };
        let plain = ask(format!("{{ conversations(first: 2) {{ {FIELDS} }} }}")).await;
        assert!(plain.contains(r#""a":[{"c":""#), "{plain}");
        assert!(!plain.contains("errors"), "{plain}");
        // Through a fragment, and with a directive: async-graphql resolves these.
        let fragment = ask(format!(
            "{{ conversations(first: 2) {{ ... on ConversationConnection {{ {FIELDS} }} }} }}"
        ))
        .await;
        assert_eq!(plain, fragment);
        let directive = ask(format!(
            "{{ conversations(first: 2) {{ {} }} }}",
            FIELDS.replace("nodes {", "nodes @include(if: true) {")
        ))
        .await;
        assert_eq!(plain, directive);
        assert!(plain.contains(r#"The \"tides\" \\ é ✓"#), "{plain}");
        // Beside a field that fails, in a response with errors (the failing field first, so
        // that its error's location is the same in both).
        let failing = "bad: conversations(first: 0) { __typename }";
        let plain = ask(format!(
            "{{ {failing} conversations(first: 2) {{ {FIELDS} }} }}"
        ))
        .await;
        assert!(plain.contains("BAD_USER_INPUT"), "{plain}");
        let fragment = ask(format!(
            "{{ {failing} conversations(first: 2) {{ ... on ConversationConnection {{ {FIELDS} }} }} }}"
        ))
        .await;
        assert_eq!(plain, fragment);
        // A response key asked twice is merged, as the field-by-field resolution does.
        let twice =
            ask("{ conversations(first: 2) { edges { cursor } edges { node { id } } } }".into())
                .await;
        let once = ask("{ conversations(first: 2) { edges { cursor node { id } } } }".into()).await;
        assert_eq!(twice, once);
        // Over a WebSocket, whose messages serde_json writes: the same data.
        let query = format!("{{ conversations(first: 2) {{ {FIELDS} }} }}");
        let mut socket = crate::ws::connect(&app.addr.to_string(), Some(&ada.token)).await;
        crate::ws::subscribe(&mut socket, "1", &query, json!({})).await;
        let over_ws = crate::ws::answer(&mut socket, "1").await;
        let over_http: Value = serde_json::from_str(&ask(query.clone()).await).unwrap();
        assert_eq!(over_ws["payload"], over_http, "{over_ws}");
        app.shutdown().await;
    })
    .await;
}

/// A page's times are the stored ones to the microsecond, before 2000 (PostgreSQL's
/// epoch) and 1970 too: on PostgreSQL every row after the first is read from the
/// column's binary form by hand (`db::pg_time`), the first through sqlx.
#[tokio::test]
async fn a_page_shows_the_stored_times() {
    use sea_orm::{ActiveModelTrait, ActiveValue::Set};
    for_each_backend(|app| async move {
        let ada = reader(&app, "ada@example.com").await;
        let conn = app.database.connection();
        let times = [
            "1969-07-20T20:17:40.5Z",
            "1999-12-31T23:59:59.999999Z",
            "2000-01-01T00:00:00Z",
            "2038-01-19T03:14:08.000001Z",
        ];
        for (n, time) in times.iter().enumerate() {
            let id = start(&app, &ada, n).await.conversation.id;
            let at: chrono::DateTime<chrono::Utc> = time.parse().unwrap();
            conversation::ActiveModel {
                id: Set(id),
                created_at: Set(at - chrono::Duration::microseconds(1)),
                updated_at: Set(at),
                ..Default::default()
            }
            .update(conn)
            .await
            .unwrap();
        }
        let page = app
            .graphql_as(
                Some(&ada.token),
                "{ conversations(first: 10) { nodes { id createdAt updatedAt } } }",
                json!({}),
            )
            .await;
        let shown: Vec<(String, String, String)> = page["data"]["conversations"]["nodes"]
            .as_array()
            .unwrap_or_else(|| panic!("{page}"))
            .iter()
            .map(|n| {
                let field = |f: &str| n[f].as_str().unwrap().to_owned();
                (field("id"), field("createdAt"), field("updatedAt"))
            })
            .collect();
        let mut stored: Vec<conversation::Model> = conversation::Entity::find()
            .filter(conversation::Column::UserId.eq(&ada.id))
            .all(conn)
            .await
            .unwrap();
        stored.sort_by_key(|c| std::cmp::Reverse(c.updated_at));
        let stored: Vec<(String, String, String)> = stored
            .into_iter()
            .map(|c| (c.id, c.created_at.to_rfc3339(), c.updated_at.to_rfc3339()))
            .collect();
        assert_eq!(shown, stored);
        assert_eq!(shown[0].2, "2038-01-19T03:14:08.000001+00:00");
        assert_eq!(shown[3].2, "1969-07-20T20:17:40.500+00:00");
        app.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn logout_closes_history_to_the_old_access_token() {
    for_each_backend(|app| async move {
        let ada = reader(&app, "ada@example.com").await;
        start(&app, &ada, 1).await;
        let listed = app.graphql_as(Some(&ada.token), LIST, json!({})).await;
        assert_eq!(
            listed["data"]["conversations"]["edges"]
                .as_array()
                .unwrap()
                .len(),
            1
        );
        let out = app
            .graphql_as(Some(&ada.token), "mutation { logout }", json!({}))
            .await;
        assert_eq!(out["data"]["logout"], true);
        let after = app.graphql_as(Some(&ada.token), LIST, json!({})).await;
        assert_eq!(error_codes(&after), ["UNAUTHENTICATED"]);
        app.shutdown().await;
    })
    .await;
}

/// Pages asked at once while the database is slow share round trips (one statement for
/// many readers), and each reader still gets exactly their own page: their own
/// conversations in their own order, their own `first` and `after`, and
/// `UNAUTHENTICATED` for a logged-out session among them. The table is held locked meanwhile, so the first page
/// holds the one read permit (a pool of two) and the others gather behind it.
#[tokio::test]
async fn pages_asked_together_share_round_trips_and_stay_each_readers_own() {
    use sea_orm::{ConnectionTrait, TransactionTrait};

    let Some(pg) = crate::pg::shared() else {
        return;
    };
    let url = pg.create_database().await;
    let app = crate::helpers::spawn_app_with_url(
        crate::helpers::Backend::Postgres,
        Some(&url),
        &[("DATABASE_MAX_CONNECTIONS", "2")],
    )
    .await;
    tokio::time::timeout(
        std::time::Duration::from_secs(30),
        app.database.wait_until_up(),
    )
    .await
    .expect("the database came up");
    let mut readers = Vec::new();
    for n in 0..8 {
        let reader = reader(&app, &format!("batch{n}@example.com")).await;
        for k in 0..=n {
            start(&app, &reader, k).await;
        }
        readers.push(reader);
    }
    // The last reader has logged out: their page must not come back.
    let out = app
        .graphql_as(Some(&readers[7].token), "mutation { logout }", json!({}))
        .await;
    assert_eq!(out["data"]["logout"], true);
    // Odd readers ask for the page after their newest conversation: a statement of
    // another shape, batched apart.
    let mut cursors = Vec::new();
    for reader in &readers {
        let page = app
            .graphql_as(Some(&reader.token), LIST, json!({ "first": 1 }))
            .await;
        cursors.push(page["data"]["conversations"]["pageInfo"]["endCursor"].clone());
    }
    let batched_before = batched_reads(&app).await;

    let other = sea_orm::Database::connect(&url).await.unwrap();
    let lock = other.begin().await.unwrap();
    lock.execute_unprepared("LOCK TABLE conversation IN ACCESS EXCLUSIVE MODE")
        .await
        .unwrap();
    let pages = futures_util::future::join_all(readers.iter().enumerate().map(|(n, r)| {
        let (app, cursors) = (&app, &cursors);
        async move {
            // Reader 0 first, so theirs is the read that waits on the lock.
            tokio::time::sleep(std::time::Duration::from_millis(if n == 0 {
                0
            } else {
                200
            }))
            .await;
            let first = 1 + n % 3;
            let variables = if n % 2 == 1 {
                json!({ "first": first, "after": cursors[n] })
            } else {
                json!({ "first": first })
            };
            app.graphql_as(Some(&r.token), LIST, variables).await
        }
    }));
    let release = async {
        // Long enough for the others to gather on a busy machine, well inside the
        // database timeout (5 s) that reader 0's wait counts against.
        tokio::time::sleep(std::time::Duration::from_millis(2_000)).await;
        lock.rollback().await.unwrap();
    };
    let (pages, ()) = tokio::join!(pages, release);

    for (n, (page, reader)) in pages.iter().zip(&readers).enumerate() {
        if n == 7 {
            assert_eq!(error_codes(page), ["UNAUTHENTICATED"], "{page}");
            continue;
        }
        let first = 1 + n % 3;
        let titles: Vec<&str> = page["data"]["conversations"]["edges"]
            .as_array()
            .unwrap_or_else(|| panic!("reader {n}: {page}"))
            .iter()
            .map(|e| e["node"]["title"].as_str().unwrap())
            .collect();
        // Newest first: question n, n-1, ... of this reader's own (after the newest for
        // odd readers).
        let skip = n % 2;
        let expected: Vec<String> = (0..=n)
            .rev()
            .skip(skip)
            .take(first)
            .map(|k| format!("Question number {k}?"))
            .collect();
        assert_eq!(titles, expected, "reader {n}: {page}");
        assert_eq!(
            page["data"]["conversations"]["pageInfo"]["hasNextPage"],
            n + 1 - skip > first,
            "reader {n}"
        );
        let ids = conversation_ids(&app, reader).await;
        for edge in page["data"]["conversations"]["edges"].as_array().unwrap() {
            assert!(ids.contains(&edge["node"]["id"].as_str().unwrap().to_owned()));
        }
    }
    // Readers 1 to 7 waited behind reader 0: they went in batches, not one by one.
    let batched = batched_reads(&app).await - batched_before;
    assert!(batched >= 7, "{batched} reads were batched");
    app.shutdown().await;
}

/// `lectern_database_batched_reads_total` from `/metrics` (0 before the first batch).
async fn batched_reads(app: &TestApp) -> u64 {
    let body = app
        .client
        .get(app.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    body.lines()
        .find_map(|line| line.strip_prefix("lectern_database_batched_reads_total "))
        .map_or(0, |v| v.trim().parse().unwrap())
}
