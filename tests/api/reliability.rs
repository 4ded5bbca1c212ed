//! Real faults against a real PostgreSQL under concurrent traffic: connections cut
//! mid-query by a proxy, fast and immediate shutdowns, a slow network, a database that is
//! absent or vanishes during `migrate`. What a client sees must stay within the contract,
//! and nothing acknowledged may be lost.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::sync::Mutex;

use crate::helpers::{
    Backend, TestApp, access_token, error_codes, eventually, register, spawn_app_with_url,
};
use crate::pg::PgCluster;
use crate::proxy::Proxy;

const PASSWORD: &str = "correct horse battery";
const CHAT: &str = "mutation { chat(input: {message: \"What causes neap tides?\"}) { answer conversation { id } } }";
const HISTORY: &str = "{ conversations(first: 5) { edges { node { id } } } }";

/// POSTs a GraphQL request and returns the HTTP status with the body.
async fn post(
    client: &reqwest::Client,
    endpoint: &str,
    token: &str,
    query: &str,
    variables: Value,
) -> (u16, Value) {
    let response = client
        .post(endpoint)
        .bearer_auth(token)
        .json(&json!({ "query": query, "variables": variables }))
        .send()
        .await
        .expect("the server answers");
    let status = response.status().as_u16();
    (status, response.json().await.expect("a JSON body"))
}

/// Starts the server against `cluster` through a fresh proxy.
async fn app_behind_proxy(cluster: &PgCluster, extra: &[(&str, &str)]) -> (TestApp, Proxy) {
    let proxy = Proxy::start(cluster.port).await;
    let url = format!("postgres://postgres@127.0.0.1:{}/postgres", proxy.port);
    let app = spawn_app_with_url(Backend::Postgres, Some(&url), extra).await;
    tokio::time::timeout(Duration::from_secs(30), app.database.wait_until_up())
        .await
        .expect("the database came up");
    (app, proxy)
}

async fn database_status(app: &TestApp) -> String {
    let response = app.graphql("{ health { database } }", json!({})).await;
    response["data"]["health"]["database"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

/// Waits until a history read succeeds again, and says how long that took.
async fn recovers(app: &TestApp, token: &str) -> Duration {
    let started = Instant::now();
    let back = eventually(Duration::from_secs(15), || async {
        let response = app.graphql_as(Some(token), HISTORY, json!({})).await;
        response["errors"].is_null()
    })
    .await;
    assert!(back, "history is served again without a restart");
    started.elapsed()
}

/// While the outage is known, history fields fail at once and health says so.
async fn fails_fast_while_down(app: &TestApp, token: &str) {
    // Probes run every 2 s on a connection of their own and give up after 1 s.
    let known = eventually(Duration::from_secs(5), || async {
        database_status(app).await == "DOWN"
    })
    .await;
    assert!(known, "health reports the database down within seconds");
    let ready = app.readiness().await;
    assert_eq!(ready["database"], "down", "{ready}");
    assert_ne!(ready["status"], "ok", "{ready}");
    for _ in 0..20 {
        let started = Instant::now();
        let response = app.graphql_as(Some(token), HISTORY, json!({})).await;
        let took = started.elapsed();
        assert_eq!(
            error_codes(&response),
            ["DATABASE_UNAVAILABLE"],
            "{response}"
        );
        assert!(
            response["errors"][0]["path"] == json!(["conversations"]),
            "{response}"
        );
        assert!(
            took < Duration::from_millis(50),
            "a known outage is answered without waiting ({took:?})"
        );
    }
}

/// Four readers chat and read history without pause while the proxy cuts every
/// connection, and while PostgreSQL shuts down fast and then immediately. Every response
/// is a 200 within the contract; every chat that came back with a conversation id has
/// both its messages afterwards, and no conversation holds half a turn.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn outages_under_concurrent_traffic_lose_nothing_acknowledged() {
    let Some(cluster) = PgCluster::init() else {
        return;
    };
    cluster.start();
    let (app, proxy) = app_behind_proxy(&cluster, &[("HISTORY_LIMIT", "1000")]).await;
    let mut tokens = Vec::new();
    for n in 0..4 {
        tokens.push(access_token(&app, &format!("reader{n}@example.com"), PASSWORD).await);
    }

    let stop = Arc::new(AtomicBool::new(false));
    let acknowledged = Arc::new(Mutex::new(Vec::<(String, String)>::new()));
    let refused = Arc::new(AtomicUsize::new(0));
    let mut workers = Vec::new();
    for token in tokens.clone() {
        let (client, endpoint) = (app.client.clone(), app.url("/graphql"));
        let (stop, acknowledged, refused) = (stop.clone(), acknowledged.clone(), refused.clone());
        workers.push(tokio::spawn(async move {
            while !stop.load(Ordering::SeqCst) {
                let (status, chat) = post(&client, &endpoint, &token, CHAT, json!({})).await;
                assert_eq!(status, 200, "{chat}");
                let answer = chat["data"]["chat"]["answer"].as_str().unwrap_or_default();
                assert!(!answer.is_empty(), "an answer always comes back: {chat}");
                match chat["data"]["chat"]["conversation"]["id"].as_str() {
                    Some(id) => acknowledged
                        .lock()
                        .await
                        .push((token.clone(), id.to_owned())),
                    None => {
                        assert_eq!(error_codes(&chat), ["DATABASE_UNAVAILABLE"], "{chat}");
                        refused.fetch_add(1, Ordering::SeqCst);
                    }
                }
                let (status, history) = post(&client, &endpoint, &token, HISTORY, json!({})).await;
                assert_eq!(status, 200, "{history}");
                for code in error_codes(&history) {
                    assert_eq!(code, "DATABASE_UNAVAILABLE", "{history}");
                }
            }
        }));
    }

    tokio::time::sleep(Duration::from_millis(700)).await;
    // 1. The network drops every connection, queries in flight included.
    proxy.cut();
    fails_fast_while_down(&app, &tokens[0]).await;
    proxy.restore();
    let took = recovers(&app, &tokens[0]).await;
    assert!(took < Duration::from_secs(5), "recovered in {took:?}");
    tokio::time::sleep(Duration::from_millis(500)).await;

    // 2. and 3. PostgreSQL shuts down, politely and then abruptly.
    for mode in ["fast", "immediate"] {
        cluster.stop(mode);
        fails_fast_while_down(&app, &tokens[0]).await;
        cluster.start();
        let took = recovers(&app, &tokens[0]).await;
        assert!(
            took < Duration::from_secs(5),
            "{mode}: recovered in {took:?}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    stop.store(true, Ordering::SeqCst);
    for worker in workers {
        worker.await.expect("no worker saw a broken contract");
    }
    let acknowledged = acknowledged.lock().await.clone();
    assert!(
        acknowledged.len() >= 8,
        "traffic was stored between outages"
    );
    assert!(
        refused.load(Ordering::SeqCst) > 0,
        "some chats ran into the outages"
    );

    for (token, id) in &acknowledged {
        let response = app
            .graphql_as(
                Some(token),
                "query($id: ID!) { conversation(id: $id) { messages { edges { node { role } } } } }",
                json!({ "id": id }),
            )
            .await;
        assert_eq!(
            roles(&response["data"]["conversation"]),
            ["USER", "ASSISTANT"],
            "acknowledged turn {id} is whole: {response}"
        );
    }
    for token in &tokens {
        let mut after: Option<String> = None;
        loop {
            let response = app
                .graphql_as(
                    Some(token),
                    "query($after: String) { conversations(first: 50, after: $after) { edges { cursor node { messages(first: 4) { edges { node { role } } } } } pageInfo { hasNextPage } } }",
                    json!({ "after": after }),
                )
                .await;
            let page = &response["data"]["conversations"];
            let edges = page["edges"].as_array().expect("a page of conversations");
            for edge in edges {
                assert_eq!(
                    roles(&edge["node"]),
                    ["USER", "ASSISTANT"],
                    "no half-written turn: {response}"
                );
            }
            if page["pageInfo"]["hasNextPage"] != true {
                break;
            }
            after = edges
                .last()
                .and_then(|e| e["cursor"].as_str())
                .map(str::to_owned);
        }
    }
    app.shutdown().await;
}

/// The one line a failed command prints for people, among its logs.
fn error_line(stderr: &str) -> &str {
    stderr
        .lines()
        .find(|l| l.starts_with("error: "))
        .unwrap_or_default()
}

fn roles(conversation: &Value) -> Vec<String> {
    conversation["messages"]["edges"]
        .as_array()
        .map(|edges| {
            edges
                .iter()
                .map(|e| e["node"]["role"].as_str().unwrap_or_default().to_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// A slow network: every request is bounded by DATABASE_TIMEOUT_MS, the work waiting for
/// connections is bounded too (the rest is shed at once with a clear error), and once the
/// latency goes away the pool serves again: nothing deadlocked.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_slow_database_bounds_every_request_and_sheds_the_excess() {
    let Some(cluster) = PgCluster::init() else {
        return;
    };
    cluster.start();
    let (app, proxy) = app_behind_proxy(
        &cluster,
        &[
            ("DATABASE_TIMEOUT_MS", "300"),
            ("DATABASE_MAX_CONNECTIONS", "2"),
        ],
    )
    .await;
    let token = access_token(&app, "slow@example.com", PASSWORD).await;

    proxy.set_latency(Duration::from_millis(800));
    let started = Instant::now();
    let requests = (0..80).map(|_| {
        let (client, endpoint, token) = (app.client.clone(), app.url("/graphql"), token.clone());
        tokio::spawn(async move {
            let began = Instant::now();
            let (status, body) = post(&client, &endpoint, &token, HISTORY, json!({})).await;
            (status, body, began.elapsed())
        })
    });
    let mut busy = 0;
    for request in requests.collect::<Vec<_>>() {
        let (status, body, took) = request.await.unwrap();
        assert_eq!(status, 200, "{body}");
        assert_eq!(error_codes(&body), ["DATABASE_UNAVAILABLE"], "{body}");
        assert!(
            took < Duration::from_secs(3),
            "bounded by the timeout, not by the latency: {took:?}"
        );
        if body["errors"][0]["extensions"]["reason"] == "busy" {
            assert_eq!(body["errors"][0]["extensions"]["retryAfter"], 1, "{body}");
            busy += 1;
        }
    }
    assert!(busy > 0, "slow or excess work is reported as busy");
    assert!(started.elapsed() < Duration::from_secs(5));

    proxy.set_latency(Duration::ZERO);
    recovers(&app, &token).await;
    // And the pool still works under a burst afterwards.
    let burst = (0..20).map(|_| {
        let (client, endpoint, token) = (app.client.clone(), app.url("/graphql"), token.clone());
        tokio::spawn(async move { post(&client, &endpoint, &token, HISTORY, json!({})).await })
    });
    for request in burst.collect::<Vec<_>>() {
        let (status, body) = request.await.unwrap();
        assert_eq!(status, 200);
        assert!(body["errors"].is_null(), "{body}");
    }
    app.shutdown().await;
}

/// `lectern migrate` with no database says so in one line and exits non-zero; when the
/// database vanishes in the middle of migrating, it says so too, and the next run
/// completes to a schema the server uses.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrate_with_the_database_absent_or_vanishing_ends_clearly() {
    let Some(cluster) = PgCluster::init() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let migrate = |url: String| {
        let dir = dir.path().to_owned();
        async move {
            let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_lectern"))
                .arg("migrate")
                .current_dir(dir)
                .env_clear()
                .env("DATABASE_URL", url)
                .env("DATABASE_TIMEOUT_MS", "1000")
                .output()
                .await
                .unwrap();
            (
                output.status.success(),
                String::from_utf8_lossy(&output.stderr).into_owned(),
            )
        }
    };

    // Absent: nothing listens on the cluster's port yet.
    let (ok, stderr) = migrate(cluster.url("postgres")).await;
    assert!(!ok);
    assert!(
        error_line(&stderr).contains("cannot reach the database")
            && error_line(&stderr).contains("nothing was changed"),
        "{stderr}"
    );

    // Vanishing: a slow link, cut while the migrations run.
    cluster.start();
    let proxy = Proxy::start(cluster.port).await;
    proxy.set_latency(Duration::from_millis(100));
    let run = tokio::spawn(migrate(format!(
        "postgres://postgres@127.0.0.1:{}/postgres",
        proxy.port
    )));
    // Cut once the first migration has committed, while the second one runs.
    let observer = sea_orm::Database::connect(cluster.url("postgres"))
        .await
        .unwrap();
    let first_done = eventually(Duration::from_secs(20), || async {
        use sea_orm::ConnectionTrait;
        observer
            .query_one_raw(sea_orm::Statement::from_string(
                sea_orm::DatabaseBackend::Postgres,
                "SELECT count(*)::int AS n FROM seaql_migrations",
            ))
            .await
            .ok()
            .flatten()
            .and_then(|row| row.try_get::<i32>("", "n").ok())
            .is_some_and(|n| n >= 1)
    })
    .await;
    assert!(first_done, "the first migration committed");
    proxy.cut();
    let (ok, stderr) = run.await.unwrap();
    assert!(!ok, "a cut mid-migration is a failure: {stderr}");
    assert!(
        error_line(&stderr).contains("run `lectern migrate` again"),
        "the message says what to do: {stderr}"
    );

    // The schema was left at a migration boundary: the next run finishes it, and the
    // server works on it.
    let (ok, stderr) = migrate(cluster.url("postgres")).await;
    assert!(ok, "{stderr}");
    let app = spawn_app_with_url(Backend::Postgres, Some(&cluster.url("postgres")), &[]).await;
    tokio::time::timeout(Duration::from_secs(30), app.database.wait_until_up())
        .await
        .unwrap();
    register(&app, "after@example.com", PASSWORD).await;
    app.shutdown().await;
}

/// Readers chat and read their history at once right after PostgreSQL stops abruptly,
/// before the outage is known: each chat gets its answer (with `conversation: null` and
/// `DATABASE_UNAVAILABLE`), none fails because its session cannot be checked, and the
/// history reads are told the database is unavailable rather than busy.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn chats_right_after_an_immediate_stop_are_answered() {
    let Some(cluster) = PgCluster::init() else {
        return;
    };
    cluster.start();
    // Straight to PostgreSQL, no proxy: its refused connections are what the server sees.
    let app = spawn_app_with_url(Backend::Postgres, Some(&cluster.url("postgres")), &[]).await;
    tokio::time::timeout(Duration::from_secs(30), app.database.wait_until_up())
        .await
        .expect("the database came up");
    let mut tokens = Vec::new();
    for n in 0..4 {
        tokens.push(access_token(&app, &format!("abrupt{n}@example.com"), PASSWORD).await);
    }
    // Idle long enough for the pool to ping its connections before reuse.
    tokio::time::sleep(Duration::from_millis(600)).await;
    cluster.stop("immediate");
    let chats = tokens.iter().map(|token| {
        let (client, endpoint) = (app.client.clone(), app.url("/graphql"));
        async move { post(&client, &endpoint, token, CHAT, json!({})).await }
    });
    let histories = tokens.iter().map(|token| {
        let (client, endpoint) = (app.client.clone(), app.url("/graphql"));
        async move { post(&client, &endpoint, token, HISTORY, json!({})).await }
    });
    let (chats, histories) = tokio::join!(
        futures_util::future::join_all(chats),
        futures_util::future::join_all(histories)
    );
    // History reads are told the database is down, not that it is busy: the outage is
    // found out while they wait, instead of after DATABASE_TIMEOUT_MS.
    for (status, history) in histories {
        assert_eq!(status, 200);
        assert_eq!(error_codes(&history), ["DATABASE_UNAVAILABLE"], "{history}");
        assert!(
            history["errors"][0]["extensions"]["reason"].is_null(),
            "{history}"
        );
    }
    for (status, chat) in chats {
        assert_eq!(status, 200);
        let answer = chat["data"]["chat"]["answer"].as_str().unwrap_or_default();
        assert!(!answer.is_empty(), "answered: {chat}");
        assert!(chat["data"]["chat"]["conversation"].is_null(), "{chat}");
        assert_eq!(error_codes(&chat), ["DATABASE_UNAVAILABLE"], "{chat}");
    }
    app.shutdown().await;
}

/// A history page costs PostgreSQL one round trip. The connection that has just answered
/// a page is kept warm for the next one instead of going back to the pool, whose release
/// ping (a Sync, then a wait for ReadyForQuery) was a second round trip per page. Counted
/// on the wire, by a proxy in front of the shared cluster. With a pool of two (one may be
/// warm), pages, sign-ups and chats all at once are still all answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_history_page_is_one_round_trip_to_postgresql() {
    let Some(source) = crate::pg::shared() else {
        return;
    };
    let url = reqwest::Url::parse(&source.create_database().await).unwrap();
    let proxy = Proxy::start(url.port().unwrap_or(5432)).await;
    let mut through_proxy = url.clone();
    through_proxy.set_host(Some("127.0.0.1")).unwrap();
    through_proxy.set_port(Some(proxy.port)).unwrap();
    let app = spawn_app_with_url(
        Backend::Postgres,
        Some(through_proxy.as_str()),
        &[("DATABASE_MAX_CONNECTIONS", "2")],
    )
    .await;
    tokio::time::timeout(Duration::from_secs(30), app.database.wait_until_up())
        .await
        .expect("the database came up");
    let token = access_token(&app, "wire@example.com", PASSWORD).await;
    // A page with a conversation on it (an empty page checks the session on its own).
    let chat = app.graphql_as(Some(&token), CHAT, json!({})).await;
    assert!(!chat["data"]["chat"]["conversation"].is_null(), "{chat}");
    let page = || async {
        let response = app.graphql_as(Some(&token), HISTORY, json!({})).await;
        assert_eq!(
            response["data"]["conversations"]["edges"]
                .as_array()
                .map(Vec::len),
            Some(1),
            "{response}"
        );
    };
    // The first pages prepare the statement on the connection.
    for _ in 0..3 {
        page().await;
    }

    const PAGES: u64 = 40;
    let before = proxy.sent_to_server();
    for _ in 0..PAGES {
        page().await;
    }
    let sent = proxy.sent_to_server() - before;
    // The slack is for the supervisor's probe (a ping every 2 s on its own connection).
    assert!(
        sent <= PAGES + 4,
        "{sent} writes to PostgreSQL for {PAGES} history pages (two round trips each would be {})",
        2 * PAGES
    );

    // One of the two connections may be warm: everything else still gets the other.
    let mut work = Vec::new();
    for n in 0..40 {
        let (client, endpoint, token) = (app.client.clone(), app.url("/graphql"), token.clone());
        work.push(tokio::spawn(async move {
            let (query, variables) = match n % 4 {
                0 => (
                    "mutation($input: RegisterInput!) { register(input: $input) { user { id } } }",
                    json!({ "input": { "email": format!("burst{n}@example.com"), "password": PASSWORD, "name": "Burst" } }),
                ),
                1 => (CHAT, json!({})),
                _ => (HISTORY, json!({})),
            };
            post(&client, &endpoint, &token, query, variables).await
        }));
    }
    for request in work {
        let (status, body) = request.await.unwrap();
        assert_eq!(status, 200, "{body}");
        assert!(body["errors"].is_null(), "{body}");
    }
    app.shutdown().await;
}
