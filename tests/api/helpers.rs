//! Spawning the app for a test and talking to it like a frontend would.

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use lectern::config::Settings;
use lectern::db::Database;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use crate::pg;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// The small corpus every test app indexes on start.
pub const CORPUS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/corpus");

pub const JWT_SECRET: &str = "test-secret-that-is-long-enough-for-hs256";

/// A running server on a random port with a database of its own.
pub struct TestApp {
    pub addr: SocketAddr,
    /// `HEALTH_BIND_ADDR`'s listener, when the test set one.
    pub health_addr: Option<SocketAddr>,
    pub backend: Backend,
    pub client: reqwest::Client,
    pub database: Database,
    stop: CancellationToken,
    server: tokio::task::JoinHandle<std::io::Result<()>>,
    /// Keeps the SQLite file (and anything else under DATA_DIR) alive for the test.
    _data_dir: tempfile::TempDir,
}

/// Runs `test` against SQLite, then against PostgreSQL when it is available.
pub async fn for_each_backend<F, Fut>(test: F)
where
    F: Fn(TestApp) -> Fut,
    Fut: Future<Output = ()>,
{
    for_each_backend_with(&[], test).await
}

/// Like [`for_each_backend`] with extra settings (say `HISTORY_LIMIT`).
pub async fn for_each_backend_with<F, Fut>(extra: &[(&str, &str)], test: F)
where
    F: Fn(TestApp) -> Fut,
    Fut: Future<Output = ()>,
{
    for backend in [Backend::Sqlite, Backend::Postgres] {
        if let Some(app) = spawn_app(backend, extra).await {
            test(app).await;
        }
    }
}

/// Builds and starts the app with test settings; waits until its database is up.
/// `None` for PostgreSQL when it is not installed (the harness printed why).
pub async fn spawn_app(backend: Backend, extra: &[(&str, &str)]) -> Option<TestApp> {
    let url = match backend {
        Backend::Sqlite => None,
        Backend::Postgres => Some(pg::shared()?.create_database().await),
    };
    let app = spawn_app_with_url(backend, url.as_deref(), extra).await;
    tokio::time::timeout(Duration::from_secs(30), app.database.wait_until_up())
        .await
        .expect("the test database came up within 30 s");
    Some(app)
}

/// Starts the app without waiting for its database, which may not exist yet.
pub async fn spawn_app_with_url(
    backend: Backend,
    database_url: Option<&str>,
    extra: &[(&str, &str)],
) -> TestApp {
    let data_dir = tempfile::tempdir().expect("a temporary DATA_DIR");
    let mut env: HashMap<String, String> = HashMap::from([
        ("BIND_ADDR".into(), "127.0.0.1:0".into()),
        ("DATA_DIR".into(), data_dir.path().display().to_string()),
        ("JWT_SECRET".into(), JWT_SECRET.into()),
        ("CORPUS_DIR".into(), CORPUS.into()),
        // Every test comes from 127.0.0.1 at once; the rate-limit and quota tests turn
        // these on.
        ("AUTH_RATE_LIMIT_PER_IP".into(), "0".into()),
        ("AUTH_RATE_LIMIT_PER_EMAIL".into(), "0".into()),
        ("CHAT_RATE_LIMIT_PER_IP".into(), "0".into()),
        ("CHAT_RATE_LIMIT_PER_READER".into(), "0".into()),
    ]);
    if let Some(url) = database_url {
        env.insert("DATABASE_URL".into(), url.into());
    }
    for (k, v) in extra {
        env.insert((*k).into(), (*v).into());
    }
    let settings = Settings::from_lookup(|k| env.get(k).cloned()).expect("valid test settings");
    let app = lectern::Application::build(settings)
        .await
        .expect("the app builds");
    let addr = app.local_addr();
    let health_addr = app.health_addr();
    let database = app.database();
    let stop = CancellationToken::new();
    let server = tokio::spawn(app.run_until(stop.clone().cancelled_owned()));
    TestApp {
        addr,
        health_addr,
        backend,
        client: reqwest::Client::new(),
        database,
        stop,
        server,
        _data_dir: data_dir,
    }
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// POSTs a GraphQL operation and returns the whole JSON response.
    pub async fn graphql(&self, query: &str, variables: Value) -> Value {
        self.graphql_as(None, query, variables).await
    }

    /// The body of a GraphQL answer as sent (key order and all), for `token`'s reader.
    pub async fn graphql_text_as(&self, token: &str, query: &str) -> String {
        let response = self
            .client
            .post(self.url("/graphql"))
            .json(&json!({ "query": query }))
            .bearer_auth(token)
            .send()
            .await
            .expect("the server answers");
        assert_eq!(response.status(), 200);
        response.text().await.expect("a body")
    }

    /// Same, with `Authorization: Bearer <token>` when a token is given.
    pub async fn graphql_as(&self, token: Option<&str>, query: &str, variables: Value) -> Value {
        let mut request = self
            .client
            .post(self.url("/graphql"))
            .json(&json!({ "query": query, "variables": variables }));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.expect("the server answers");
        assert_eq!(
            response.status(),
            200,
            "GraphQL answers with 200 even for field errors"
        );
        response.json().await.expect("a JSON body")
    }

    /// Stops the server gracefully and waits for it to finish.
    /// `GET /readyz`, parsed.
    pub async fn readiness(&self) -> Value {
        self.client
            .get(self.url("/readyz"))
            .send()
            .await
            .expect("/readyz answers")
            .json()
            .await
            .expect("/readyz is JSON")
    }

    pub async fn shutdown(self) {
        self.stop.cancel();
        self.server
            .await
            .expect("the server task ended without panicking")
            .expect("the server stopped cleanly");
    }
}

/// Registers a reader and returns the `AuthPayload` (panics if registration failed).
pub async fn register(app: &TestApp, email: &str, password: &str) -> Value {
    let response = app
        .graphql(
            "mutation($input: RegisterInput!) { register(input: $input) { accessToken refreshToken expiresAt deviceToken user { id email name } } }",
            json!({ "input": { "email": email, "password": password, "name": "Reader" } }),
        )
        .await;
    assert!(
        response["errors"].is_null(),
        "registration failed: {response}"
    );
    response["data"]["register"].clone()
}

/// Registers a reader and returns just their access token.
pub async fn access_token(app: &TestApp, email: &str, password: &str) -> String {
    register(app, email, password).await["accessToken"]
        .as_str()
        .expect("an access token")
        .to_owned()
}

/// The `extensions.code` of every error in a response, in order.
pub fn error_codes(response: &Value) -> Vec<String> {
    response["errors"]
        .as_array()
        .map(|errors| {
            errors
                .iter()
                .map(|e| e["extensions"]["code"].as_str().unwrap_or("").to_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// Polls `check` every 50 ms until it returns true or `within` passes.
pub async fn eventually<F, Fut>(within: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if check().await {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
