//! The foundation: start-up anywhere, health, readiness, configuration errors, request
//! hygiene, the SDL file, and a database that is not there yet.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use sea_orm::{ConnectionTrait, Statement};
use serde_json::{Value, json};

use crate::helpers::{Backend, error_codes, eventually, for_each_backend, spawn_app_with_url};
use crate::pg::PgCluster;

const HEALTH: &str = "{ health { status database vectorStore llm } }";

#[tokio::test]
async fn health_reports_each_component() {
    for_each_backend(|app| async move {
        let response = app.graphql(HEALTH, json!({})).await;
        assert_eq!(
            response["data"]["health"],
            json!({ "status": "OK", "database": "UP", "vectorStore": "UP", "llm": "NOT_CONFIGURED" }),
            "{:?}: {response}",
            app.backend
        );
        app.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn liveness_and_readiness_endpoints() {
    for_each_backend(|app| async move {
        let live = app.client.get(app.url("/healthz")).send().await.unwrap();
        assert_eq!(live.status(), 200);
        let ready = app.client.get(app.url("/readyz")).send().await.unwrap();
        assert_eq!(ready.status(), 200);
        let body: Value = ready.json().await.unwrap();
        assert_eq!(body["status"], "ok");
        assert_eq!(body["database"], "up");
        assert_eq!(body["vectorStore"], "up");
        app.shutdown().await;
    })
    .await;
}

/// The server boots with PostgreSQL absent, says so, and connects and migrates by itself
/// once PostgreSQL starts, without a restart.
#[tokio::test]
async fn starts_without_the_database_and_connects_when_it_appears() {
    let Some(cluster) = PgCluster::init() else {
        return;
    };
    let url = cluster.url("postgres");
    let app = spawn_app_with_url(Backend::Postgres, Some(&url), &[]).await;

    let reported_down = eventually(Duration::from_secs(10), || async {
        app.graphql(HEALTH, json!({})).await["data"]["health"]["database"] == "DOWN"
    })
    .await;
    assert!(reported_down, "health says the database is down");
    let health = app.graphql(HEALTH, json!({})).await;
    assert_eq!(health["data"]["health"]["status"], "DEGRADED");
    let ready = app.readiness().await;
    assert_eq!(ready["status"], "degraded");
    assert_eq!(ready["database"], "down");

    cluster.start();
    let came_up = eventually(Duration::from_secs(15), || async {
        app.graphql(HEALTH, json!({})).await["data"]["health"]["database"] == "UP"
    })
    .await;
    assert!(came_up, "the server noticed the database within 15 s");

    let conn = sea_orm::Database::connect(&url).await.unwrap();
    let row = conn
        .query_one_raw(Statement::from_string(
            conn.get_database_backend(),
            "SELECT to_regclass('public.seaql_migrations') IS NOT NULL AS migrated",
        ))
        .await
        .unwrap()
        .expect("one row");
    assert!(
        row.try_get::<bool>("", "migrated").unwrap(),
        "migrations ran on first contact"
    );
    conn.close().await.ok();
    app.shutdown().await;
}

#[test]
fn schema_graphql_is_current() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/schema.graphql");
    let committed = std::fs::read_to_string(path).unwrap_or_default();
    assert!(
        committed == lectern::graphql::sdl(),
        "schema.graphql is stale; regenerate it with: cargo run -- schema > schema.graphql"
    );
}

fn lectern_command(dir: &std::path::Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_lectern"));
    // A directory of its own, so no developer `.env` leaks in.
    command
        .current_dir(dir)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .stdin(Stdio::null());
    command
}

#[test]
fn bad_configuration_stops_start_up_with_one_clear_line() {
    let dir = tempfile::tempdir().unwrap();
    for (variable, value, expected) in [
        ("BIND_ADDR", "nonsense", "127.0.0.1:8000"),
        (
            "DATABASE_URL",
            "mysql://root:pw@localhost/app",
            "postgres://",
        ),
        ("HISTORY_LIMIT", "-3", "1 to 1000"),
        ("LOG_FORMAT", "xml", "pretty | json"),
    ] {
        let output = lectern_command(dir.path())
            .env(variable, value)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{variable}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
        assert!(
            stderr.starts_with(&format!("configuration error: {variable} ")),
            "{stderr}"
        );
        assert!(stderr.contains(expected), "says what it accepts: {stderr}");
        assert!(
            !stderr.contains("panicked") && !stderr.contains(":pw@"),
            "{stderr}"
        );
    }
}

#[test]
fn production_without_a_jwt_secret_refuses_to_start() {
    let dir = tempfile::tempdir().unwrap();
    let output = lectern_command(dir.path())
        .env("APP_ENV", "production")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.starts_with("configuration error: JWT_SECRET "),
        "{stderr}"
    );
}

/// The README's first command in miniature: no configuration but a free port, a SQLite
/// file appears under DATA_DIR, and SIGTERM stops the server cleanly.
#[test]
fn serves_with_no_configuration_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = lectern_command(dir.path())
        .env("BIND_ADDR", "127.0.0.1:0")
        .env("LOG_FORMAT", "json")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let address = lines
        .by_ref()
        .map_while(Result::ok)
        .find_map(|line| {
            let entry: Value = serde_json::from_str(&line).ok()?;
            entry["fields"]["address"].as_str().map(str::to_owned)
        })
        .expect("the server logs the address it listens on");

    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let client = reqwest::Client::new();
        let ok = eventually(Duration::from_secs(10), || async {
            let response: Value = client
                .post(format!("http://{address}/graphql"))
                .json(&json!({ "query": HEALTH }))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            response["data"]["health"]["database"] == "UP"
        })
        .await;
        assert!(ok, "the SQLite default comes up");
    });
    assert!(dir.path().join("data/lectern.db").is_file());

    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    let status = child.wait().unwrap();
    assert!(status.success(), "clean exit after SIGTERM: {rest:?}");
    assert!(
        rest.iter().any(|l| l.contains("database pool closed")),
        "the pool is closed on the way out: {rest:?}"
    );
}

#[tokio::test]
async fn graphiql_in_development_only_and_introspection_off_in_production() {
    let dev = spawn_app_with_url(Backend::Sqlite, None, &[]).await;
    let page = dev.client.get(dev.url("/graphql")).send().await.unwrap();
    assert_eq!(page.status(), 200);
    assert!(page.text().await.unwrap().contains("graphiql"));
    let introspection = dev
        .graphql("{ __schema { queryType { name } } }", json!({}))
        .await;
    assert_eq!(
        introspection["data"]["__schema"]["queryType"]["name"],
        "Query"
    );
    dev.shutdown().await;

    let prod = spawn_app_with_url(Backend::Sqlite, None, &[("APP_ENV", "production")]).await;
    let page = prod.client.get(prod.url("/graphql")).send().await.unwrap();
    assert_eq!(page.status(), 405, "no GraphiQL page in production");
    let introspection = prod
        .graphql("{ __schema { queryType { name } } }", json!({}))
        .await;
    assert!(
        introspection["data"]["__schema"].is_null(),
        "{introspection}"
    );
    prod.shutdown().await;
}

#[tokio::test]
async fn request_hygiene() {
    let app = spawn_app_with_url(
        Backend::Sqlite,
        None,
        &[("CORS_ORIGINS", "https://book.example.com")],
    )
    .await;

    // Every response names its request, and a caller's own id is kept.
    let response = app.client.get(app.url("/healthz")).send().await.unwrap();
    assert!(response.headers().contains_key("x-request-id"));
    let response = app
        .client
        .get(app.url("/healthz"))
        .header("x-request-id", "abc-123")
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["x-request-id"], "abc-123");

    // Bodies over the limit are refused before parsing, with a code: those that say their
    // length unread, and those that do not once they pass it.
    let huge = "x".repeat(lectern::http::MAX_BODY_BYTES + 1);
    let chunks =
        futures_util::stream::iter((0..20).map(|_| Ok::<_, std::io::Error>(vec![b' '; 16 * 1024])));
    for body in [
        reqwest::Body::from(json!({ "query": huge }).to_string()),
        reqwest::Body::wrap_stream(chunks),
    ] {
        let response = app
            .client
            .post(app.url("/graphql"))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 413);
        let refusal: Value = response.json().await.unwrap();
        assert_eq!(error_codes(&refusal), ["BAD_USER_INPUT"], "{refusal}");
    }

    // Too deep is refused before execution.
    let mut deep = String::from("__typename");
    for _ in 0..lectern::graphql::MAX_DEPTH + 2 {
        deep =
            format!("__schema {{ queryType {{ fields {{ type {{ ofType {{ {deep} }} }} }} }} }}");
    }
    let response = app.graphql(&format!("{{ {deep} }}"), json!({})).await;
    assert!(response["data"].is_null(), "{response}");
    assert!(!error_codes(&response).is_empty() || response["errors"].is_array());

    // CORS: the configured origin is allowed, another is not.
    let allowed = app
        .client
        .request(reqwest::Method::OPTIONS, app.url("/graphql"))
        .header("origin", "https://book.example.com")
        .header("access-control-request-method", "POST")
        .send()
        .await
        .unwrap();
    assert_eq!(
        allowed.headers()["access-control-allow-origin"],
        "https://book.example.com"
    );
    let refused = app
        .client
        .request(reqwest::Method::OPTIONS, app.url("/graphql"))
        .header("origin", "https://evil.example.com")
        .header("access-control-request-method", "POST")
        .send()
        .await
        .unwrap();
    assert!(
        !refused
            .headers()
            .contains_key("access-control-allow-origin")
    );
    app.shutdown().await;
}
