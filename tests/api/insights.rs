//! For the book's author: ratings, the author role and the insights report; for readers:
//! searching and exporting their conversations. Through GraphQL (and the `lectern admin`
//! and `lectern insights` commands) on SQLite and PostgreSQL.

use std::time::Duration;

use serde_json::{Value, json};

use crate::helpers::{Backend, TestApp, access_token, error_codes, eventually, spawn_app_with_url};

const PASSWORD: &str = "correct horse battery";
const ASK: &str = "mutation($q: String!) { chat(input: {message: $q}) { turnId answer unanswered sources { path } conversation { id messages { edges { node { id role } } } } } }";
const RATE_MESSAGE: &str = "mutation($m: ID!, $r: AnswerRating!, $c: String) { rateAnswer(messageId: $m, rating: $r, comment: $c) { turnId rating comment } }";
const RATE_TURN: &str = "mutation($t: ID!, $r: AnswerRating!, $c: String) { rateAnswer(turnId: $t, rating: $r, comment: $c) { turnId rating comment } }";
const REPORT: &str = "{ insights { questionsPerDay { day questions unanswered } ratings { up down }
  unanswered { question cited { path } } thumbsDown { question comment cited { path } }
  mostCitedPages { page { path } citations } pagesNeverCited frequentQuestions { question count } } }";

/// An app on a database whose URL the test knows (so the `lectern` command can reach it
/// too), for each backend available.
struct Site {
    app: TestApp,
    url: String,
    backend: Backend,
    _dir: tempfile::TempDir,
}

async fn sites(extra: &[(&str, &str)]) -> Vec<Site> {
    let mut sites = Vec::new();
    for backend in [Backend::Sqlite, Backend::Postgres] {
        let dir = tempfile::tempdir().unwrap();
        let url = match backend {
            Backend::Sqlite => format!("sqlite://{}/lectern.db?mode=rwc", dir.path().display()),
            Backend::Postgres => match crate::pg::shared() {
                Some(pg) => pg.create_database().await,
                None => continue,
            },
        };
        sites.push(Site {
            app: start(backend, &url, extra).await,
            url,
            backend,
            _dir: dir,
        });
    }
    sites
}

async fn start(backend: Backend, url: &str, extra: &[(&str, &str)]) -> TestApp {
    let app = spawn_app_with_url(backend, Some(url), extra).await;
    tokio::time::timeout(Duration::from_secs(30), app.database.wait_until_up())
        .await
        .expect("the database came up");
    app
}

/// `lectern ARGS…` against the site's database.
fn lectern(site: &Site, args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_lectern"))
        .args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("DATABASE_URL", &site.url)
        .env("DATA_DIR", site._dir.path())
        .env("CORPUS_DIR", crate::helpers::CORPUS)
        .output()
        .unwrap()
}

async fn ask(app: &TestApp, token: Option<&str>, question: &str) -> Value {
    let answer = app.graphql_as(token, ASK, json!({ "q": question })).await;
    assert!(answer["errors"].is_null(), "{answer}");
    answer["data"]["chat"].clone()
}

/// The id of the answer in a chat payload's conversation.
fn answer_id(chat: &Value) -> String {
    chat["conversation"]["messages"]["edges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| &e["node"])
        .find(|n| n["role"] == "ASSISTANT")
        .and_then(|n| n["id"].as_str())
        .unwrap()
        .to_owned()
}

#[tokio::test]
async fn readers_rate_their_own_answers_and_no_one_elses() {
    for site in sites(&[]).await {
        let app = &site.app;
        let owner = access_token(app, "owner@example.com", PASSWORD).await;
        let chat = ask(app, Some(&owner), "What causes neap tides?").await;
        let message = answer_id(&chat);
        let vars = |r: &str, c: Value| json!({ "m": message, "r": r, "c": c });

        let rated = app
            .graphql_as(Some(&owner), RATE_MESSAGE, vars("UP", json!("clear")))
            .await;
        assert_eq!(rated["data"]["rateAnswer"]["rating"], "UP", "{rated}");
        assert_eq!(rated["data"]["rateAnswer"]["turnId"], chat["turnId"]);
        // One rating per answer: rating again replaces it.
        let changed = app
            .graphql_as(
                Some(&owner),
                RATE_MESSAGE,
                vars("DOWN", json!("wrong tide")),
            )
            .await;
        assert_eq!(changed["data"]["rateAnswer"]["rating"], "DOWN", "{changed}");
        assert_eq!(changed["data"]["rateAnswer"]["comment"], "wrong tide");

        let stranger = access_token(app, "stranger@example.com", PASSWORD).await;
        let theirs = app
            .graphql_as(Some(&stranger), RATE_MESSAGE, vars("UP", Value::Null))
            .await;
        assert_eq!(error_codes(&theirs), ["NOT_FOUND"], "{theirs}");
        // Nor by the turn id, which the owner's rating now holds.
        let by_turn = app
            .graphql_as(
                Some(&stranger),
                RATE_TURN,
                json!({ "t": chat["turnId"], "r": "UP" }),
            )
            .await;
        assert_eq!(error_codes(&by_turn), ["NOT_FOUND"], "{by_turn}");
        let signed_out = app.graphql(RATE_MESSAGE, vars("UP", Value::Null)).await;
        assert_eq!(
            error_codes(&signed_out),
            ["UNAUTHENTICATED"],
            "{signed_out}"
        );

        let neither = app
            .graphql_as(
                Some(&owner),
                "mutation { rateAnswer(rating: UP) { turnId } }",
                json!({}),
            )
            .await;
        assert_eq!(error_codes(&neither), ["BAD_USER_INPUT"], "{neither}");
        let long = app
            .graphql_as(
                Some(&owner),
                RATE_MESSAGE,
                vars("UP", json!("x".repeat(2_001))),
            )
            .await;
        assert_eq!(error_codes(&long), ["BAD_USER_INPUT"], "{long}");
        let question_id = chat["conversation"]["messages"]["edges"][0]["node"]["id"].clone();
        let not_an_answer = app
            .graphql_as(
                Some(&owner),
                RATE_MESSAGE,
                json!({ "m": question_id, "r": "UP" }),
            )
            .await;
        assert_eq!(
            error_codes(&not_an_answer),
            ["NOT_FOUND"],
            "{not_an_answer}"
        );
        site.app.shutdown().await;
    }
}

#[tokio::test]
async fn anonymous_readers_rate_a_turn_by_its_id() {
    for site in sites(&[]).await {
        let app = &site.app;
        let chat = ask(app, None, "How does a Fresnel lens work?").await;
        let rated = app
            .graphql(
                RATE_TURN,
                json!({ "t": chat["turnId"], "r": "DOWN", "c": "too short" }),
            )
            .await;
        assert_eq!(rated["data"]["rateAnswer"]["rating"], "DOWN", "{rated}");
        let again = app
            .graphql(RATE_TURN, json!({ "t": chat["turnId"], "r": "UP" }))
            .await;
        assert_eq!(again["data"]["rateAnswer"]["rating"], "UP", "{again}");
        let unknown = app
            .graphql(
                RATE_TURN,
                json!({ "t": uuid::Uuid::new_v4().to_string(), "r": "UP" }),
            )
            .await;
        assert_eq!(error_codes(&unknown), ["NOT_FOUND"], "{unknown}");
        let garbage = app
            .graphql(RATE_TURN, json!({ "t": "nope", "r": "UP" }))
            .await;
        assert_eq!(error_codes(&garbage), ["NOT_FOUND"], "{garbage}");
        site.app.shutdown().await;
    }
}

/// `insights` is for authors: `ADMIN_EMAILS`, or `lectern admin grant`; others get
/// `FORBIDDEN`, signed-out callers `UNAUTHENTICATED`.
#[tokio::test]
async fn insights_are_for_authors_only() {
    for site in sites(&[("ADMIN_EMAILS", "Author@Example.com")]).await {
        let app = &site.app;
        let author = access_token(app, "author@example.com", PASSWORD).await;
        let reader = access_token(app, "reader@example.com", PASSWORD).await;
        let query = "{ insights { ratings { up down } } viewerIsAdmin }";
        let allowed = app.graphql_as(Some(&author), query, json!({})).await;
        assert!(allowed["errors"].is_null(), "{allowed}");
        assert_eq!(allowed["data"]["viewerIsAdmin"], true);
        let refused = app
            .graphql_as(Some(&reader), "{ insights { ratings { up } } }", json!({}))
            .await;
        assert_eq!(error_codes(&refused), ["FORBIDDEN"], "{refused}");
        let signed_out = app
            .graphql("{ insights { ratings { up } } }", json!({}))
            .await;
        assert_eq!(
            error_codes(&signed_out),
            ["UNAUTHENTICATED"],
            "{signed_out}"
        );

        let granted = lectern(&site, &["admin", "grant", "READER@example.com"]);
        assert!(
            granted.status.success(),
            "{}",
            String::from_utf8_lossy(&granted.stderr)
        );
        let now_allowed = app
            .graphql_as(Some(&reader), "{ insights { ratings { up } } }", json!({}))
            .await;
        assert!(now_allowed["errors"].is_null(), "{now_allowed}");
        let revoked = lectern(&site, &["admin", "revoke", "reader@example.com"]);
        assert!(revoked.status.success());
        let refused = app
            .graphql_as(Some(&reader), "{ insights { ratings { up } } }", json!({}))
            .await;
        assert_eq!(error_codes(&refused), ["FORBIDDEN"], "{refused}");
        let nobody = lectern(&site, &["admin", "grant", "nobody@example.com"]);
        assert!(!nobody.status.success());
        assert!(String::from_utf8_lossy(&nobody.stderr).contains("register first"));

        let window = app
            .graphql_as(Some(&author), "{ insights(from: \"2026-02-01T00:00:00Z\", to: \"2026-01-01T00:00:00Z\") { from } }", json!({}))
            .await;
        assert_eq!(error_codes(&window), ["BAD_USER_INPUT"], "{window}");
        site.app.shutdown().await;
    }
}

/// What readers asked, as the author sees it over GraphQL and from `lectern insights`.
#[tokio::test]
async fn insights_report_what_readers_asked() {
    for site in sites(&[("ADMIN_EMAILS", "author@example.com")]).await {
        let app = &site.app;
        let author = access_token(app, "author@example.com", PASSWORD).await;
        let reader = access_token(app, "reader@example.com", PASSWORD).await;
        let first = ask(app, None, "What causes neap tides?").await;
        ask(app, Some(&reader), "what causes NEAP tides").await;
        let off_topic = ask(app, None, "Which football club won the 1998 league?").await;
        assert_eq!(off_topic["unanswered"], true, "{off_topic}");
        app.graphql(
            RATE_TURN,
            json!({ "t": first["turnId"], "r": "DOWN", "c": "no diagram" }),
        )
        .await;

        let report = app.graphql_as(Some(&author), REPORT, json!({})).await;
        assert!(report["errors"].is_null(), "{report}");
        let insights = &report["data"]["insights"];
        let days = insights["questionsPerDay"].as_array().unwrap();
        assert_eq!(days.len(), 1, "{insights}");
        assert_eq!(
            (
                days[0]["questions"].as_i64(),
                days[0]["unanswered"].as_i64()
            ),
            (Some(3), Some(1))
        );
        assert_eq!(insights["ratings"], json!({ "up": 0, "down": 1 }));
        assert_eq!(
            insights["unanswered"][0]["question"],
            "Which football club won the 1998 league?"
        );
        let down = &insights["thumbsDown"][0];
        assert_eq!(down["question"], "What causes neap tides?");
        assert_eq!(down["comment"], "no diagram");
        assert!(
            down["cited"]
                .as_array()
                .unwrap()
                .iter()
                .any(|c| c["path"] == "tides.html"),
            "{down}"
        );
        let most = insights["mostCitedPages"].as_array().unwrap();
        let tides = most
            .iter()
            .find(|p| p["page"]["path"] == "tides.html")
            .expect("tides.html is cited");
        assert_eq!(tides["citations"], 2, "{insights}");
        assert!(
            most.iter()
                .all(|p| p["citations"].as_i64() <= tides["citations"].as_i64())
        );
        let never: Vec<&str> = insights["pagesNeverCited"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p.as_str().unwrap())
            .collect();
        assert!(!never.contains(&"tides.html"), "{never:?}");
        let cited: Vec<&str> = insights["mostCitedPages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["page"]["path"].as_str().unwrap())
            .collect();
        assert!(
            never.iter().all(|p| !cited.contains(p)),
            "{never:?} {cited:?}"
        );
        assert_eq!(insights["frequentQuestions"][0]["count"], 2, "{insights}");

        let csv = lectern(&site, &["insights", "--csv"]);
        let text = String::from_utf8_lossy(&csv.stdout);
        assert!(
            csv.status.success(),
            "{}",
            String::from_utf8_lossy(&csv.stderr)
        );
        assert!(
            text.contains("# frequent questions\r\ncount,question\r\n2,"),
            "{text}"
        );
        assert!(text.contains("# thumbs down"), "{text}");
        assert!(text.contains("no diagram"), "{text}");
        site.app.shutdown().await;
    }
}

/// `INSIGHTS=off` records nothing; recorded turns older than `INSIGHTS_RETENTION_DAYS`
/// are deleted by the server.
#[tokio::test]
async fn insights_can_be_off_and_are_kept_for_their_retention() {
    for site in sites(&[("INSIGHTS", "off"), ("ADMIN_EMAILS", "author@example.com")]).await {
        let app = &site.app;
        let author = access_token(app, "author@example.com", PASSWORD).await;
        let chat = ask(app, None, "What causes neap tides?").await;
        let report = app
            .graphql_as(
                Some(&author),
                "{ insights { questionsPerDay { questions } } }",
                json!({}),
            )
            .await;
        assert_eq!(
            report["data"]["insights"]["questionsPerDay"],
            json!([]),
            "{report}"
        );
        let unrecorded = app
            .graphql(RATE_TURN, json!({ "t": chat["turnId"], "r": "UP" }))
            .await;
        assert_eq!(error_codes(&unrecorded), ["NOT_FOUND"], "{unrecorded}");

        // A turn recorded 100 days ago and one from yesterday, then a restart with the
        // default retention of 90 days.
        let old = (chrono::Utc::now() - chrono::Duration::days(100)).to_rfc3339();
        let recent = (chrono::Utc::now() - chrono::Duration::days(1)).to_rfc3339();
        let backend = match site.backend {
            Backend::Sqlite => sea_orm::DbBackend::Sqlite,
            Backend::Postgres => sea_orm::DbBackend::Postgres,
        };
        for (id, at) in [
            (uuid::Uuid::new_v4(), &old),
            (uuid::Uuid::new_v4(), &recent),
        ] {
            let at = chrono::DateTime::parse_from_rfc3339(at)
                .unwrap()
                .with_timezone(&chrono::Utc);
            sea_orm::ConnectionTrait::execute_raw(
                app.database.connection(),
                lectern::insights::statement(
                    backend,
                    r#"INSERT INTO insight_turn ("turnId", question, normalized, "bestScore", unanswered, day, "createdAt") VALUES ($1, 'q', 'q', 1.0, false, $2, $3)"#,
                    vec![id.to_string().into(), at.format("%Y-%m-%d").to_string().into(), at.into()],
                ),
            )
            .await
            .unwrap();
        }
        let Site {
            app,
            url,
            backend,
            _dir,
        } = site;
        app.shutdown().await;
        let app = start(backend, &url, &[("ADMIN_EMAILS", "author@example.com")]).await;
        let login = app
            .graphql(
                "mutation($i: LoginInput!) { login(input: $i) { accessToken } }",
                json!({ "i": { "email": "author@example.com", "password": PASSWORD } }),
            )
            .await;
        let author = login["data"]["login"]["accessToken"]
            .as_str()
            .unwrap()
            .to_owned();
        let since = (chrono::Utc::now() - chrono::Duration::days(200)).to_rfc3339();
        let query =
            format!("{{ insights(from: \"{since}\") {{ questionsPerDay {{ questions }} }} }}");
        let swept = eventually(Duration::from_secs(10), || async {
            let report = app.graphql_as(Some(&author), &query, json!({})).await;
            report["data"]["insights"]["questionsPerDay"] == json!([{ "questions": 1 }])
        })
        .await;
        assert!(swept, "the 100-day-old turn is deleted, yesterday's kept");
        app.shutdown().await;
    }
}

/// `conversations(search:)` finds a reader's own conversations by title or message text,
/// stemmed, and follows renames and deletions.
#[tokio::test]
async fn readers_search_their_conversations() {
    for site in sites(&[]).await {
        let app = &site.app;
        let reader = access_token(app, "searcher@example.com", PASSWORD).await;
        let tides = ask(app, Some(&reader), "What causes neap tides?").await;
        let lens = ask(app, Some(&reader), "How does a Fresnel lens work?").await;
        let search = |q: &str| {
            let q = q.to_owned();
            let reader = reader.clone();
            async move {
                let found = app
                    .graphql_as(Some(&reader), "query($q: String!) { conversations(search: $q) { edges { node { id title } } } }", json!({ "q": q }))
                    .await;
                assert!(found["errors"].is_null(), "{found}");
                found["data"]["conversations"]["edges"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|e| e["node"]["id"].as_str().unwrap().to_owned())
                    .collect::<Vec<_>>()
            }
        };
        let tides_id = tides["conversation"]["id"].as_str().unwrap().to_owned();
        let lens_id = lens["conversation"]["id"].as_str().unwrap().to_owned();
        assert_eq!(
            search("tide").await,
            std::slice::from_ref(&tides_id),
            "stemmed"
        );
        assert_eq!(search("fresnel").await, std::slice::from_ref(&lens_id));
        assert_eq!(
            search("neap Fresnel").await,
            Vec::<String>::new(),
            "every word must match"
        );
        let rename =
            "mutation($id: ID!) { renameConversation(id: $id, title: \"Moon and sea\") { id } }";
        app.graphql_as(Some(&reader), rename, json!({ "id": tides_id }))
            .await;
        assert_eq!(
            search("moon").await,
            std::slice::from_ref(&tides_id),
            "the new title"
        );
        assert_eq!(
            search("neap").await,
            std::slice::from_ref(&tides_id),
            "the messages, the title gone"
        );
        let other = access_token(app, "other@example.com", PASSWORD).await;
        let theirs = app
            .graphql_as(
                Some(&other),
                "{ conversations(search: \"tides\") { edges { node { id } } } }",
                json!({}),
            )
            .await;
        assert_eq!(
            theirs["data"]["conversations"]["edges"],
            json!([]),
            "{theirs}"
        );
        let bad = app
            .graphql_as(
                Some(&reader),
                "{ conversations(search: \"?!\") { edges { node { id } } } }",
                json!({}),
            )
            .await;
        assert_eq!(error_codes(&bad), ["BAD_USER_INPUT"], "{bad}");
        app.graphql_as(
            Some(&reader),
            "mutation($id: ID!) { deleteConversation(id: $id) }",
            json!({ "id": lens_id }),
        )
        .await;
        assert_eq!(search("fresnel").await, Vec::<String>::new(), "deleted");
        site.app.shutdown().await;
    }
}

#[tokio::test]
async fn readers_export_a_conversation() {
    for site in sites(&[]).await {
        let app = &site.app;
        let reader = access_token(app, "exporter@example.com", PASSWORD).await;
        let chat = ask(app, Some(&reader), "What causes neap tides?").await;
        let id = chat["conversation"]["id"].clone();
        let export =
            "query($id: ID!, $f: ExportFormat!) { exportConversation(id: $id, format: $f) }";
        let markdown = app
            .graphql_as(Some(&reader), export, json!({ "id": id, "f": "MARKDOWN" }))
            .await;
        let markdown = markdown["data"]["exportConversation"]
            .as_str()
            .unwrap()
            .to_owned();
        assert!(
            markdown.starts_with("# What causes neap tides?\n"),
            "{markdown}"
        );
        assert!(
            markdown.contains("## Question\n\n> What causes neap tides?\n"),
            "{markdown}"
        );
        assert!(markdown.contains("## Answer\n\n"), "{markdown}");
        assert!(markdown.contains("Sources:\n\n1. "), "{markdown}");
        assert!(
            markdown.contains(chat["answer"].as_str().unwrap().trim()),
            "{markdown}"
        );

        let json_export = app
            .graphql_as(Some(&reader), export, json!({ "id": id, "f": "JSON" }))
            .await;
        let document: Value =
            serde_json::from_str(json_export["data"]["exportConversation"].as_str().unwrap())
                .unwrap();
        assert_eq!(document["id"], id);
        let roles: Vec<&str> = document["messages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["role"].as_str().unwrap())
            .collect();
        assert_eq!(roles, ["user", "assistant"]);
        assert_eq!(document["messages"][1]["content"], chat["answer"]);
        assert!(
            document["messages"][1]["sources"][0]["path"].is_string(),
            "{document}"
        );

        let other = access_token(app, "other@example.com", PASSWORD).await;
        let theirs = app
            .graphql_as(Some(&other), export, json!({ "id": id, "f": "JSON" }))
            .await;
        assert_eq!(error_codes(&theirs), ["NOT_FOUND"], "{theirs}");
        site.app.shutdown().await;
    }
}
