//! Load scenarios for a running Lectern server, driven by goose.
//!
//! `bench/run.sh` starts PostgreSQL and the release server, seeds the data and calls this
//! binary once per scenario:
//!
//! ```text
//! lectern-bench history|saturation|login|chat|down
//! ```
//!
//! Settings come from the environment: `LECTERN_URL` (default `http://127.0.0.1:8088`),
//! `JWT_SECRET` (the server's, to mint access tokens for the seeded sessions),
//! `BENCH_READERS` (seeded readers, default 10000), `BENCH_SECONDS` (run time, default 30).
//!
//! Each scenario prints one Markdown table row per request kind: requests, requests/s,
//! p50/p95/p99 and unexpected errors. A GraphQL error counts as unexpected unless the
//! scenario expects it (`DATABASE_UNAVAILABLE` while the database is down).

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use goose::config::GooseConfiguration;
use goose::metrics::GooseRequestMetricTimingData;
use goose::prelude::*;
use rand::Rng;
use serde_json::{Value, json};

use lectern::auth::tokens::TokenKeys;
use lectern::config::Secret;

/// The server's allocator, so the login ceiling measured here hashes as fast as the
/// server does (glibc malloc maps and zeroes argon2's 19 MiB afresh for every hash).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const PASSWORD: &str = "bench-password-1";

struct Settings {
    readers: usize,
    tokens: Vec<String>,
    expect_outage: bool,
    /// `login-shed`: a login answered `RATE_LIMITED` (the hashing queue is full) is the
    /// expected answer to a storm, counted in [`SHED`] rather than as a failure.
    expect_shedding: bool,
}

/// Logins answered `RATE_LIMITED`, and logins answered at all (`login-shed`).
static SHED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
static LOGINS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

static SETTINGS: OnceLock<Settings> = OnceLock::new();

fn settings() -> &'static Settings {
    SETTINGS
        .get()
        .expect("settings are set before the attack starts")
}

fn user_id(n: usize) -> String {
    format!("00000000-0000-7000-8000-{n:012x}")
}

fn session_id(n: usize) -> String {
    format!("00000000-0000-7000-8002-{n:012x}")
}

/// Who a goose user is: one seeded reader and their access token.
struct Reader {
    token: String,
    conversation: Option<String>,
}

fn random_reader() -> usize {
    rand::rng().random_range(1..=settings().readers)
}

/// POSTs one GraphQL request, names it for the metrics, and marks the request failed when
/// the answer carries an error the scenario does not expect.
async fn graphql(
    user: &mut GooseUser,
    name: &str,
    token: Option<&str>,
    body: Value,
    answered: fn(&Value) -> bool,
) -> Result<Value, Box<TransactionError>> {
    let mut builder = user.get_request_builder(&GooseMethod::Post, "/graphql")?;
    if let Some(token) = token {
        builder = builder.bearer_auth(token);
    }
    let request = GooseRequest::builder()
        .set_request_builder(builder.json(&body))
        .name(name)
        .build();
    let mut goose = user.request(request).await?;
    let answer: Value = match goose.response {
        Ok(response) => response.json().await.unwrap_or(Value::Null),
        Err(_) => return Ok(Value::Null),
    };
    // Success is an answer with the data asked for, or (database down) the promised error.
    let shed = settings().expect_shedding
        && answer["errors"].as_array().is_some_and(|errors| {
            errors
                .iter()
                .all(|e| e["extensions"]["code"] == "RATE_LIMITED")
        });
    if shed {
        SHED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
    let unexpected = match answer["errors"].as_array() {
        None => !answered(&answer["data"]),
        Some(_) if shed => false,
        Some(errors) => !errors
            .iter()
            .all(|e| settings().expect_outage && e["extensions"]["code"] == "DATABASE_UNAVAILABLE"),
    };
    if unexpected {
        let body = answer.to_string();
        user.set_failure("GraphQL error", &mut goose.request, None, Some(&body))?;
    }
    Ok(answer)
}

async fn become_reader(user: &mut GooseUser) -> TransactionResult {
    let n = random_reader();
    user.set_session_data(Reader {
        token: settings().tokens[n - 1].clone(),
        conversation: None,
    });
    Ok(())
}

const LIST: &str = "{ conversations(first: 20) { edges { cursor node { id title updatedAt } } pageInfo { hasNextPage endCursor } } }";
const OPEN: &str = "query($id: ID!) { conversation(id: $id) { id title messages(first: 20) { edges { node { role content sources { title path } createdAt } } } } }";
const ME: &str = "{ me { id email name } }";

/// A reader's 20 newest conversations; all 20 must come back.
async fn first_page(user: &mut GooseUser, token: &str) -> Result<Value, Box<TransactionError>> {
    graphql(
        user,
        "conversations(first: 20)",
        Some(token),
        json!({ "query": LIST }),
        |d| {
            d["conversations"]["edges"]
                .as_array()
                .is_some_and(|e| e.len() == 20)
        },
    )
    .await
}

async fn list_conversations(user: &mut GooseUser) -> TransactionResult {
    let token = user.get_session_data_unchecked::<Reader>().token.clone();
    let answer = first_page(user, &token).await?;
    if let Some(edges) = answer["data"]["conversations"]["edges"].as_array()
        && !edges.is_empty()
    {
        let pick = rand::rng().random_range(0..edges.len());
        let id = edges[pick]["node"]["id"].as_str().map(str::to_owned);
        user.get_session_data_unchecked_mut::<Reader>().conversation = id;
    }
    Ok(())
}

async fn open_conversation(user: &mut GooseUser) -> TransactionResult {
    let reader = user.get_session_data_unchecked::<Reader>();
    let token = reader.token.clone();
    // Before the first list (or while the database is down) there is no id yet: the
    // reader opens the conversation seeded first for them.
    let id = reader
        .conversation
        .clone()
        .unwrap_or_else(|| format!("{:08x}-0001-7000-8003-000000000000", random_reader()));
    graphql(
        user,
        "conversation(id) with messages",
        Some(&token),
        json!({ "query": OPEN, "variables": { "id": id } }),
        |d| {
            d["conversation"]["messages"]["edges"]
                .as_array()
                .is_some_and(|e| e.len() == 4)
        },
    )
    .await?;
    Ok(())
}

async fn read_me(user: &mut GooseUser) -> TransactionResult {
    let token = user.get_session_data_unchecked::<Reader>().token.clone();
    graphql(user, "me", Some(&token), json!({ "query": ME }), |d| {
        d["me"]["id"].is_string()
    })
    .await?;
    Ok(())
}

/// Closed loop: a random reader's first page, no think time.
async fn random_list(user: &mut GooseUser) -> TransactionResult {
    let token = settings().tokens[random_reader() - 1].clone();
    first_page(user, &token).await?;
    Ok(())
}

async fn login(user: &mut GooseUser) -> TransactionResult {
    LOGINS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let email = format!("reader{}@bench.lectern", random_reader());
    let answer = graphql(
        user,
        "login",
        None,
        json!({
            "query": "mutation($i: LoginInput!) { login(input: $i) { accessToken } }",
            "variables": { "i": { "email": email, "password": PASSWORD } }
        }),
        |d| d["login"]["accessToken"].is_string(),
    )
    .await?;
    // A well-behaved client waits the `retryAfter` it was given before trying again.
    if settings().expect_shedding
        && let Some(wait) = answer["errors"][0]["extensions"]["retryAfter"].as_u64()
    {
        tokio::time::sleep(Duration::from_secs(wait)).await;
    }
    Ok(())
}

const QUESTIONS: [&str; 8] = [
    "How do I stay signed in?",
    "How are passwords stored?",
    "What happens when the database is down?",
    "How do I use Neon?",
    "How many conversations are kept?",
    "How do I configure a model?",
    "What does DATABASE_URL select?",
    "What happens when a refresh token is used twice?",
];

async fn ask(user: &mut GooseUser) -> TransactionResult {
    let question = QUESTIONS[rand::rng().random_range(0..QUESTIONS.len())];
    graphql(
        user,
        "chat (anonymous)",
        None,
        json!({
            "query": "mutation($q: String!) { chat(input: {message: $q}) { answer sources { title path score } } }",
            "variables": { "q": question }
        }),
        |d| {
            d["chat"]["answer"].as_str().is_some_and(|a| !a.is_empty())
                && d["chat"]["sources"].as_array().is_some_and(|s| !s.is_empty())
        },
    )
    .await?;
    Ok(())
}

fn history_mix(think: (u64, u64)) -> Result<Scenario, GooseError> {
    Ok(scenario!("HistoryMix")
        .set_wait_time(
            Duration::from_millis(think.0),
            Duration::from_millis(think.1),
        )?
        .register_transaction(transaction!(become_reader).set_on_start())
        .register_transaction(transaction!(list_conversations).set_sequence(1))
        .register_transaction(transaction!(open_conversation).set_sequence(2))
        .register_transaction(transaction!(read_me).set_sequence(3)))
}

/// The documents of the security review, each of which once cost seconds of CPU or
/// gigabytes of memory, by name: nested fragment spreads (the report's exact 840 bytes,
/// and a shallower 1,024-field one), 1,500 aliases, and brackets nested 60,000 deep.
fn hostile_documents() -> &'static [(&'static str, Value)] {
    static DOCUMENTS: OnceLock<Vec<(&'static str, Value)>> = OnceLock::new();
    DOCUMENTS.get_or_init(|| {
        let doubling = |levels: usize| {
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
        };
        let aliases: String = (0..1_500).map(|i| format!("a{i}: __typename ")).collect();
        let deep = format!("{}{}", "{a".repeat(60_000), "}".repeat(60_000));
        [
            ("hostile: 23 doubling fragments", doubling(23)),
            ("hostile: 10 doubling fragments", doubling(10)),
            ("hostile: 1,500 aliases", format!("{{ {aliases} }}")),
            ("hostile: 60,000 nested braces", deep),
        ]
        .into_iter()
        .map(|(name, query)| (name, json!({ "query": query })))
        .collect()
    })
}

/// One hostile document; the answer must be the refusal, `BAD_USER_INPUT`.
async fn refuse(user: &mut GooseUser, which: usize) -> TransactionResult {
    let (name, body) = &hostile_documents()[which];
    let builder = user.get_request_builder(&GooseMethod::Post, "/graphql")?;
    let request = GooseRequest::builder()
        .set_request_builder(builder.json(body))
        .name(*name)
        .build();
    let mut goose = user.request(request).await?;
    let answer: Value = match goose.response {
        Ok(response) => response.json().await.unwrap_or(Value::Null),
        Err(_) => return Ok(()),
    };
    if answer["errors"][0]["extensions"]["code"] != "BAD_USER_INPUT" {
        let body = answer.to_string();
        user.set_failure("not refused", &mut goose.request, None, Some(&body))?;
    }
    Ok(())
}

async fn hostile(user: &mut GooseUser) -> TransactionResult {
    let which = rand::rng().random_range(0..hostile_documents().len());
    refuse(user, which).await
}

async fn fragments_23(user: &mut GooseUser) -> TransactionResult {
    refuse(user, 0).await
}
async fn fragments_10(user: &mut GooseUser) -> TransactionResult {
    refuse(user, 1).await
}
async fn aliases(user: &mut GooseUser) -> TransactionResult {
    refuse(user, 2).await
}
async fn nesting(user: &mut GooseUser) -> TransactionResult {
    refuse(user, 3).await
}

async fn healthz(user: &mut GooseUser) -> TransactionResult {
    user.get("/healthz").await?;
    Ok(())
}

/// Readers of `/healthz`, one request every 50 ms each: the latency the flood must not move.
fn health_probe() -> Result<Scenario, GooseError> {
    Ok(scenario!("Healthz")
        .set_wait_time(Duration::from_millis(50), Duration::from_millis(50))?
        .register_transaction(transaction!(healthz)))
}

fn percentile(data: &GooseRequestMetricTimingData, q: f64) -> usize {
    let total: usize = data.times.values().sum();
    let wanted = ((total as f64) * q).ceil() as usize;
    let mut seen = 0;
    for (ms, count) in &data.times {
        seen += count;
        if seen >= wanted.max(1) {
            return *ms;
        }
    }
    data.maximum_time
}

fn print_report(scenario: &str, metrics: &GooseMetrics) {
    let seconds = metrics.duration.max(1) as f64;
    println!(
        "\n{scenario}: {} users, {} s",
        metrics.maximum_users, metrics.duration
    );
    println!(
        "| request | requests | req/s | p50 ms | p95 ms | p99 ms | max ms | unexpected errors |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|");
    let mut names: Vec<&String> = metrics.requests.keys().collect();
    names.sort();
    for name in names {
        let aggregate = &metrics.requests[name];
        let data = &aggregate.raw_data;
        let requests = aggregate.success_count + aggregate.fail_count;
        println!(
            "| {} | {} | {:.0} | {} | {} | {} | {} | {} |",
            name.trim_start_matches("POST "),
            requests,
            requests as f64 / seconds,
            percentile(data, 0.50),
            percentile(data, 0.95),
            percentile(data, 0.99),
            data.maximum_time,
            aggregate.fail_count
        );
    }
}

/// The login ceiling, measured here with the server's own hashing function: one thread
/// per core hashing back to back, i.e. cores ÷ the time of one argon2id hash.
fn login_ceiling() -> (f64, usize) {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let (warm_up, measured) = (10, 20);
    let barrier = std::sync::Arc::new(std::sync::Barrier::new(cores));
    let threads: Vec<_> = (0..cores)
        .map(|_| {
            let barrier = barrier.clone();
            std::thread::spawn(move || {
                // Warm up first, as the server's hashing threads are: the allocator
                // settles into reusing argon2's 19 MiB instead of faulting it in anew.
                for _ in 0..warm_up {
                    lectern::auth::password::hash_now(PASSWORD).expect("a hash");
                }
                barrier.wait();
                let started = Instant::now();
                for _ in 0..measured {
                    lectern::auth::password::hash_now(PASSWORD).expect("a hash");
                }
                started.elapsed().as_secs_f64() / measured as f64
            })
        })
        .collect();
    let per_hash = threads
        .into_iter()
        .map(|t| t.join().expect("a hashing thread"))
        .fold(0.0, f64::max);
    (per_hash, cores)
}

/// Successful logins so far, from the server's own `/metrics`.
async fn logins_at_server(host: &str) -> f64 {
    let text = reqwest::get(format!("{host}/metrics"))
        .await
        .expect("/metrics answers")
        .text()
        .await
        .expect("a metrics body");
    text.lines()
        .filter(|l| {
            l.starts_with("lectern_graphql_requests_total{")
                && l.contains("operation=\"login\"")
                && l.contains("outcome=\"ok\"")
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::main]
async fn main() -> Result<(), GooseError> {
    let scenario = std::env::args().nth(1).unwrap_or_else(|| "history".into());
    let env = |k: &str, default: &str| std::env::var(k).unwrap_or_else(|_| default.into());
    let host = env("LECTERN_URL", "http://127.0.0.1:8088");
    let seconds: usize = env("BENCH_SECONDS", "30").parse().expect("BENCH_SECONDS");
    let readers: usize = env("BENCH_READERS", "10000")
        .parse()
        .expect("BENCH_READERS");
    let secret = std::env::var("JWT_SECRET").expect("JWT_SECRET: the server's secret");
    let keys = TokenKeys::new(&Secret::new(secret));
    let tokens: Vec<String> = (1..=readers)
        .map(|n| keys.issue(&user_id(n), &session_id(n)).0)
        .collect();
    // For other load tools (bench/wrk/history.lua): each seeded reader's id and token.
    if scenario == "tokens" {
        for (n, token) in tokens.iter().enumerate() {
            println!("{}\t{token}", user_id(n + 1));
        }
        return Ok(());
    }
    let expect_outage = scenario == "down";
    SETTINGS
        .set(Settings {
            readers,
            tokens,
            expect_outage,
            expect_shedding: scenario == "login-shed",
        })
        .ok()
        .expect("set once");

    let think = (1_000, 2_000);
    let mut ceiling = None;
    let (users, hatch, attack) = match scenario.as_str() {
        "history" | "down" => (1000, 200, vec![history_mix(think)?]),
        "saturation" => (
            1000,
            500,
            vec![scenario!("Saturation").register_transaction(transaction!(random_list))],
        ),
        "login" | "login-shed" => {
            if scenario == "login" {
                let (hash, cores) = login_ceiling();
                ceiling = Some(cores as f64 / hash);
                println!(
                    "\nlogin ceiling: {cores} cores / {:.1} ms per argon2id hash = {:.1} logins/s",
                    hash * 1e3,
                    cores as f64 / hash
                );
            }
            // login-shed: the same storm against the default bounded hashing queue
            // (bench/run.sh with BENCH_HASH_QUEUE=32): logins past it are answered
            // RATE_LIMITED at once.
            (
                1100,
                550,
                vec![
                    scenario!("LoginStorm")
                        .set_weight(10)?
                        .register_transaction(transaction!(login)),
                    history_mix(think)?.set_weight(1)?,
                ],
            )
        }
        "chat" => (
            100,
            100,
            vec![
                scenario!("Chat")
                    .set_wait_time(
                        Duration::from_millis(think.0),
                        Duration::from_millis(think.1),
                    )?
                    .register_transaction(transaction!(ask)),
            ],
        ),
        // `/healthz` alone, then with a flood of hostile documents beside it.
        "healthz" => (10, 10, vec![health_probe()?]),
        // One client sending each document in turn: what one costs, without queueing.
        "hostile-each" => (
            1,
            1,
            vec![
                scenario!("HostileEach")
                    .register_transaction(transaction!(fragments_23))
                    .register_transaction(transaction!(fragments_10))
                    .register_transaction(transaction!(aliases))
                    .register_transaction(transaction!(nesting)),
            ],
        ),
        // 50 clients sending hostile documents as fast as they are answered, beside the
        // 10 `/healthz` readers of the `healthz` scenario. `hostile-rate`: the same, at
        // most BENCH_RATE requests a second in all (a flood that leaves the cores some
        // room, where `hostile` takes them all).
        "hostile" | "hostile-rate" => (
            60,
            60,
            vec![
                scenario!("Hostile")
                    .set_weight(5)?
                    .register_transaction(transaction!(hostile)),
                health_probe()?.set_weight(1)?,
            ],
        ),
        other => {
            panic!(
                "unknown scenario {other}: history|saturation|login|login-shed|chat|down|healthz|hostile-each|hostile|hostile-rate|tokens"
            )
        }
    };

    // A login storm keeps a deep queue, so goose's own count includes the logins that
    // finish while it drains after the run. The rate that counts is the server's, over
    // the steady middle of the run.
    let monitor = (scenario == "login").then(|| {
        let host = host.clone();
        let ramp = Duration::from_secs_f64(users as f64 / hatch as f64 + 1.0);
        let window = Duration::from_secs(seconds.saturating_sub(2).max(1) as u64);
        tokio::spawn(async move {
            tokio::time::sleep(ramp).await;
            let before = logins_at_server(&host).await;
            tokio::time::sleep(window).await;
            (logins_at_server(&host).await - before) / window.as_secs_f64()
        })
    });
    let ceiling = ceiling;
    let mut goose = GooseAttack::initialize_with_config(GooseConfiguration::default())?;
    if scenario == "hostile-rate" {
        let rate: usize = env("BENCH_RATE", "2200").parse().expect("BENCH_RATE");
        goose = *goose.set_default(GooseDefault::ThrottleRequests, rate)?;
    }
    for s in attack {
        goose = goose.register_scenario(s);
    }
    let metrics = goose
        .set_default(GooseDefault::Host, host.as_str())?
        .set_default(GooseDefault::Users, users)?
        .set_default(GooseDefault::HatchRate, hatch.to_string().as_str())?
        .set_default(GooseDefault::RunTime, seconds)?
        .set_default(GooseDefault::Quiet, 1)?
        .set_default(GooseDefault::NoPrintMetrics, true)?
        // A login storm queues far beyond the hashing capacity on purpose; its logins
        // wait their turn rather than time out.
        .set_default(
            GooseDefault::Timeout,
            if scenario == "login" { "120" } else { "10" },
        )?
        .execute()
        .await?;
    print_report(&scenario, &metrics);
    if scenario == "login-shed" {
        let (shed, logins) = (
            SHED.load(std::sync::atomic::Ordering::Relaxed),
            LOGINS.load(std::sync::atomic::Ordering::Relaxed).max(1),
        );
        println!(
            "\nlogins answered RATE_LIMITED (hashing queue full): {shed} of {logins} = {:.1}%",
            100.0 * shed as f64 / logins as f64
        );
    }
    if let (Some(monitor), Some(ceiling)) = (monitor, ceiling) {
        let rate = monitor.await.expect("the monitor task");
        println!(
            "\nlogins completed at the server, steady state: {rate:.1}/s = {:.0}% of the {ceiling:.1}/s ceiling",
            100.0 * rate / ceiling
        );
    }
    Ok(())
}
