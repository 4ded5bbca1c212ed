//! Several `lectern serve` processes on one PostgreSQL database and one Qdrant server,
//! as they run behind a load balancer: started at the same moment on a fresh database and
//! collection, requests spread across them, and they behave as one server.

use std::time::Duration;

use serde_json::{Value, json};

use crate::helpers::{error_codes, eventually};
use crate::process::{ServerProcess, database_is};

const REPLICAS: usize = 3;

/// Three replicas started at once on a new database and a new collection.
struct Cluster {
    replicas: Vec<ServerProcess>,
    env: Vec<(&'static str, String)>,
    _dirs: Vec<tempfile::TempDir>,
}

impl Cluster {
    /// `None` (after a notice) where PostgreSQL or a Qdrant server is missing.
    async fn start(extra: &[(&'static str, &str)]) -> Option<Self> {
        let pg = crate::pg::shared()?;
        let qdrant = crate::qdrant::server()?;
        let mut env: Vec<(&'static str, String)> = vec![
            ("DATABASE_URL", pg.create_database().await),
            ("QDRANT_URL", qdrant.grpc.clone()),
            ("QDRANT_COLLECTION", crate::qdrant::collection()),
            ("RETRIEVAL_MIN_SCORE", "0".into()),
            ("AUTH_RATE_LIMIT_PER_IP", "0".into()),
            ("AUTH_RATE_LIMIT_PER_EMAIL", "0".into()),
            ("CHAT_RATE_LIMIT_PER_IP", "0".into()),
            ("CHAT_RATE_LIMIT_PER_READER", "0".into()),
        ];
        for (key, value) in extra {
            env.retain(|(k, _)| k != key);
            env.push((key, (*value).to_owned()));
        }
        let dirs: Vec<tempfile::TempDir> = (0..REPLICAS)
            .map(|_| tempfile::tempdir().unwrap())
            .collect();
        // All at the same moment: migrations, collection set-up and first-start indexing
        // race each other.
        let replicas = std::thread::scope(|scope| {
            let started: Vec<_> = dirs
                .iter()
                .map(|dir| {
                    let env = &env;
                    scope.spawn(move || ServerProcess::start(dir.path(), env))
                })
                .collect();
            started
                .into_iter()
                .map(|s| s.join().expect("every replica starts"))
                .collect::<Vec<_>>()
        });
        for replica in &replicas {
            assert!(database_is(&replica.address, "UP").await);
        }
        Some(Self {
            replicas,
            env,
            _dirs: dirs,
        })
    }

    /// `lectern ingest PATH` into the replicas' collection.
    async fn ingest(&self, path: &std::path::Path) -> std::process::Output {
        tokio::process::Command::new(env!("CARGO_BIN_EXE_lectern"))
            .arg("ingest")
            .arg(path)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("DATA_DIR", self._dirs[0].path())
            .envs(self.env.iter().map(|(k, v)| (*k, v.as_str())))
            .output()
            .await
            .unwrap()
    }

    /// The replica for the `i`-th request: round robin, as a load balancer spreads them.
    fn at(&self, i: usize) -> &ServerProcess {
        &self.replicas[i % self.replicas.len()]
    }
}

const ASK: &str = "mutation($q: String!) { chat(input: {message: $q}) { turnId answer sources { path } conversation { id } } }";

async fn chat(replica: &ServerProcess, token: Option<&str>, question: &str) -> Value {
    let mut request = reqwest::Client::new()
        .post(format!("http://{}/graphql", replica.address))
        .json(&json!({ "query": ASK, "variables": { "q": question } }));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    request.send().await.unwrap().json().await.unwrap()
}

/// Concurrent start-up on a fresh database and collection: every replica comes up and
/// answers from the corpus, and the collection is as one indexing would leave it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn replicas_start_together_on_a_fresh_database_and_collection() {
    let Some(cluster) = Cluster::start(&[]).await else {
        return;
    };
    for replica in &cluster.replicas {
        let health = replica
            .graphql(None, "{ health { database vectorStore } }")
            .await;
        assert_eq!(health["data"]["health"]["database"], "UP", "{health}");
        let last = std::sync::Mutex::new(Value::Null);
        let answered = eventually(Duration::from_secs(30), || async {
            let answer = chat(replica, None, "How does a Fresnel lens work?").await;
            let found = answer["data"]["chat"]["sources"]
                .as_array()
                .is_some_and(|s| !s.is_empty());
            *last.lock().unwrap() = answer;
            found
        })
        .await;
        assert!(
            answered,
            "replica {} answers from the corpus: {}",
            replica.address,
            last.lock().unwrap()
        );
    }
    // The three first-start indexings raced on one collection and left it as one run
    // would: indexing the corpus again finds nothing to change.
    let again = cluster.ingest(crate::helpers::CORPUS.as_ref()).await;
    let report = String::from_utf8_lossy(&again.stdout);
    assert!(again.status.success(), "{report}");
    assert!(
        report.contains("(0 changed,") && report.contains(", 0 removed,"),
        "{report}"
    );
}

/// Sign-in limits and chat quotas are counted once for all replicas: requests spread
/// round robin do not get three times the limit.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn limits_are_counted_once_across_replicas() {
    let Some(cluster) = Cluster::start(&[
        ("AUTH_RATE_LIMIT_PER_EMAIL", "3"),
        ("CHAT_RATE_LIMIT_PER_READER", "2"),
    ])
    .await
    else {
        return;
    };
    // A stranger guessing at one account: three wrong guesses across three replicas,
    // then the fourth (on the first replica again, which saw only one) is refused.
    let guess = "mutation { login(input: {email: \"target@example.com\", password: \"guess\"}) { accessToken } }";
    for i in 0..3 {
        let answer = cluster.at(i).graphql(None, guess).await;
        assert_eq!(error_codes(&answer), ["INVALID_CREDENTIALS"], "{answer}");
    }
    let fourth = cluster.at(3).graphql(None, guess).await;
    assert_eq!(error_codes(&fourth), ["RATE_LIMITED"], "{fourth}");
    assert!(
        fourth["errors"][0]["extensions"]["retryAfter"]
            .as_u64()
            .is_some()
    );

    // A reader's chat quota: two turns on two replicas, the third turn anywhere waits.
    let token = cluster.at(0).register("quota@example.com").await;
    for i in 0..2 {
        let answer = chat(cluster.at(i), Some(&token), "How does a Fresnel lens work?").await;
        assert!(answer["errors"].is_null(), "{answer}");
    }
    let third = chat(cluster.at(2), Some(&token), "How does a Fresnel lens work?").await;
    assert_eq!(error_codes(&third), ["RATE_LIMITED"], "{third}");
}

/// A logout on one replica closes that session's WebSockets on the others at once (not
/// at the next periodic re-check, a minute later), and a session deleted in the
/// database by anyone else (Better Auth's sign-out) does the same.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_logout_on_one_replica_ends_sockets_on_the_others() {
    let Some(cluster) = Cluster::start(&[]).await else {
        return;
    };
    let token = cluster.at(0).register("sockets@example.com").await;
    let mut on_second = crate::ws::connect(&cluster.at(1).address, Some(&token)).await;
    let mut on_third = crate::ws::connect(&cluster.at(2).address, Some(&token)).await;
    let logout = cluster
        .at(0)
        .graphql(Some(&token), "mutation { logout }")
        .await;
    assert_eq!(logout["data"]["logout"], true, "{logout}");
    for socket in [&mut on_second, &mut on_third] {
        let (code, _) = crate::ws::closed(socket, Duration::from_secs(5))
            .await
            .expect("a close frame");
        assert_eq!(code, 4403);
    }

    // Deleted behind Lectern's back, as Better Auth signs out.
    let other = cluster.at(0).register("deleted@example.com").await;
    let mut socket = crate::ws::connect(&cluster.at(2).address, Some(&other)).await;
    let database_url = &cluster
        .env
        .iter()
        .find(|(k, _)| *k == "DATABASE_URL")
        .unwrap()
        .1;
    let admin = sea_orm::Database::connect(database_url.as_str())
        .await
        .unwrap();
    sea_orm::ConnectionTrait::execute_unprepared(
        &admin,
        "DELETE FROM session WHERE \"userId\" = (SELECT id FROM \"user\" WHERE email = 'deleted@example.com')",
    )
    .await
    .unwrap();
    let (code, _) = crate::ws::closed(&mut socket, Duration::from_secs(5))
        .await
        .expect("a close frame");
    assert_eq!(code, 4403);
}

/// A finished turn is found on every replica: `chatTurn` over HTTP and `resumeChat` over
/// WebSocket, with the conversation shown to its own reader only.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_finished_turn_can_be_fetched_from_any_replica() {
    let Some(cluster) = Cluster::start(&[]).await else {
        return;
    };
    let anonymous = chat(cluster.at(0), None, "How does a Fresnel lens work?").await;
    let turn_id = anonymous["data"]["chat"]["turnId"]
        .as_str()
        .unwrap()
        .to_owned();
    let answer = anonymous["data"]["chat"]["answer"]
        .as_str()
        .unwrap()
        .to_owned();
    let fetched = eventually(Duration::from_secs(5), || async {
        let turn = cluster
            .at(1)
            .graphql(
                None,
                &format!("{{ chatTurn(turnId: \"{turn_id}\") {{ answer completed sources {{ path }} }} }}"),
            )
            .await;
        turn["data"]["chatTurn"]["completed"] == true
            && turn["data"]["chatTurn"]["answer"] == answer.as_str()
    })
    .await;
    assert!(fetched, "another replica has the finished turn");

    let token = cluster.at(0).register("resume@example.com").await;
    let mine = chat(cluster.at(0), Some(&token), "What causes neap tides?").await;
    let turn_id = mine["data"]["chat"]["turnId"].as_str().unwrap().to_owned();
    let conversation = mine["data"]["chat"]["conversation"]["id"].clone();
    assert!(conversation.is_string(), "{mine}");
    let resume = "subscription($t: ID!) { resumeChat(turnId: $t) { __typename ... on ChatCompleted { answer conversation { id } } } }";
    let mut socket = crate::ws::connect(&cluster.at(2).address, Some(&token)).await;
    crate::ws::subscribe(&mut socket, "1", resume, json!({ "t": turn_id })).await;
    let completed = loop {
        let message = crate::ws::answer(&mut socket, "1").await;
        assert_eq!(message["type"], "next", "{message}");
        let event = &message["payload"]["data"]["resumeChat"];
        if event["__typename"] == "ChatCompleted" {
            break event.clone();
        }
    };
    assert_eq!(completed["answer"], mine["data"]["chat"]["answer"]);
    assert_eq!(
        completed["conversation"]["id"], conversation,
        "its reader sees it"
    );

    // Another reader resuming it gets the answer, not the conversation.
    let stranger = cluster.at(1).register("stranger@example.com").await;
    let mut socket = crate::ws::connect(&cluster.at(1).address, Some(&stranger)).await;
    crate::ws::subscribe(&mut socket, "1", resume, json!({ "t": turn_id })).await;
    let completed = loop {
        let message = crate::ws::answer(&mut socket, "1").await;
        let event = &message["payload"]["data"]["resumeChat"];
        if event["__typename"] == "ChatCompleted" {
            break event.clone();
        }
    };
    assert!(completed["conversation"].is_null(), "{completed}");

    // An id no replica ran is still NOT_FOUND.
    let unknown = cluster
        .at(2)
        .graphql(
            None,
            &format!(
                "{{ chatTurn(turnId: \"{}\") {{ answer }} }}",
                uuid::Uuid::new_v4()
            ),
        )
        .await;
    assert_eq!(error_codes(&unknown), ["NOT_FOUND"], "{unknown}");
}

/// `lectern ingest` into the shared collection while the replicas serve: questions keep
/// being answered throughout, and afterwards every replica answers from the new pages.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ingest_while_replicas_serve() {
    let Some(cluster) = Cluster::start(&[]).await else {
        return;
    };
    let site = tempfile::tempdir().unwrap();
    for i in 0..40 {
        std::fs::write(
            site.path().join(format!("axolotl-{i}.md")),
            format!(
                "# Axolotl chapter {i}\n\nThe axolotl regrows a lost limb within weeks; chapter {i} follows the blastema that forms at the wound.\n"
            ),
        )
        .unwrap();
    }
    let stop = tokio_util::sync::CancellationToken::new();
    let traffic = {
        let addresses: Vec<String> = cluster.replicas.iter().map(|r| r.address.clone()).collect();
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut answered = 0usize;
            let mut i = 0;
            while !stop.is_cancelled() {
                let address = &addresses[i % addresses.len()];
                i += 1;
                let answer = crate::process::graphql_at(
                    address,
                    None,
                    "mutation { chat(input: {message: \"How does a Fresnel lens work?\"}) { answer } }",
                )
                .await;
                assert!(
                    answer["errors"].is_null(),
                    "answered during the ingest: {answer}"
                );
                answered += 1;
            }
            answered
        })
    };
    let ingest = cluster.ingest(site.path()).await;
    assert!(
        ingest.status.success(),
        "{}",
        String::from_utf8_lossy(&ingest.stderr)
    );
    stop.cancel();
    let answered = traffic.await.expect("no question failed during the ingest");
    assert!(answered > 0);
    for replica in &cluster.replicas {
        let answer = chat(replica, None, "How does the axolotl regrow a limb?").await;
        let cites_new_pages = answer["data"]["chat"]["sources"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["path"].as_str().unwrap().starts_with("axolotl-"));
        assert!(cites_new_pages, "{answer}");
    }
}
