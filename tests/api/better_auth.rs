//! Sharing PostgreSQL with a real Better Auth server: npm `better-auth`, pinned by
//! `tests/better-auth/package-lock.json`, run by the machine's Node.js against the same
//! database as Lectern, checked in every direction: sign-up there and login here,
//! register here and sign-in there, cookies both ways, sign-out, revocation and deletion
//! there seen here, logout here seen there, argon2id on both sides, and Lectern joining a
//! database whose tables Better Auth created first.
//!
//! Node packages are installed once per lockfile with `npm ci` under
//! `$LECTERN_NPM_CACHE` (default `/var/tmp/lectern-better-auth`), outside the clone.
//! Without Node.js these tests print a notice and pass, unless
//! `LECTERN_REQUIRE_BETTER_AUTH=1` (CI sets it).

use std::io::{BufRead as _, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use reqwest::header::{COOKIE, HeaderMap, ORIGIN, SET_COOKIE};
use serde_json::{Value, json};

use crate::helpers::{Backend, TestApp, error_codes, spawn_app_with_url};
use crate::pg;

const SECRET: &str = "better-auth-secret-shared-with-lectern-0123456789";
const PASSWORD: &str = "correct horse battery";
const PEER: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/better-auth");

/// Where the pinned packages are installed: one folder per lockfile.
fn installed() -> Option<PathBuf> {
    static INSTALLED: std::sync::OnceLock<Option<PathBuf>> = std::sync::OnceLock::new();
    INSTALLED.get_or_init(install).clone()
}

fn install() -> Option<PathBuf> {
    let required = std::env::var("LECTERN_REQUIRE_BETTER_AUTH").as_deref() == Ok("1");
    let node = Command::new("node").arg("--version").output();
    if !node.is_ok_and(|o| o.status.success()) {
        assert!(
            !required,
            "LECTERN_REQUIRE_BETTER_AUTH=1 but Node.js (node, npm) is not installed"
        );
        eprintln!("notice: Node.js is not installed; the Better Auth server tests are skipped");
        return None;
    }
    let lock = std::fs::read(format!("{PEER}/package-lock.json")).expect("the lockfile");
    let digest = {
        use std::hash::{Hash as _, Hasher as _};
        let mut hasher = std::hash::DefaultHasher::new();
        lock.hash(&mut hasher);
        format!("{:016x}", hasher.finish())
    };
    let cache = std::env::var("LECTERN_NPM_CACHE")
        .unwrap_or_else(|_| "/var/tmp/lectern-better-auth".to_owned());
    let dir = PathBuf::from(cache).join(digest);
    if !dir.join("node_modules/.package-lock.json").exists() {
        std::fs::create_dir_all(&dir).expect("the npm cache folder");
        for file in ["package.json", "package-lock.json"] {
            std::fs::copy(format!("{PEER}/{file}"), dir.join(file)).expect("copy");
        }
        let status = Command::new("npm")
            .args(["ci", "--no-audit", "--no-fund", "--loglevel=error"])
            .current_dir(&dir)
            .status()
            .expect("npm runs");
        assert!(status.success(), "npm ci failed in {}", dir.display());
    }
    // The server script sits beside its node_modules, where its imports resolve.
    std::fs::copy(format!("{PEER}/server.mjs"), dir.join("server.mjs")).expect("copy");
    Some(dir)
}

/// A running Better Auth server on one database.
pub struct BetterAuth {
    child: Child,
    base: String,
    http: reqwest::Client,
}

impl Drop for BetterAuth {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn node(dir: &PathBuf, database_url: &str, options: &[(&str, &str)], port: u16) -> Command {
    let mut command = Command::new("node");
    command
        .arg("server.mjs")
        .current_dir(dir)
        .env("DATABASE_URL", database_url)
        .env("BETTER_AUTH_SECRET", SECRET)
        .env("PORT", port.to_string());
    for (k, v) in options {
        command.env(k, v);
    }
    command
}

impl BetterAuth {
    /// Runs Better Auth's own migrations on the database.
    pub fn migrate(database_url: &str) -> Option<String> {
        let dir = installed()?;
        let output = node(&dir, database_url, &[], 0)
            .arg("--migrate")
            .output()
            .expect("node runs");
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        assert!(
            output.status.success(),
            "Better Auth's migration failed: {stdout}{}",
            String::from_utf8_lossy(&output.stderr)
        );
        Some(stdout)
    }

    /// Starts the server; `None` where Node.js is absent (a notice was printed).
    pub async fn start(database_url: &str, options: &[(&str, &str)]) -> Option<Self> {
        let dir = installed()?;
        let port = pg::free_port();
        let mut child = node(&dir, database_url, options, port)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("node starts");
        let stdout = child.stdout.take().expect("piped stdout");
        let line = tokio::task::spawn_blocking(move || {
            let mut line = String::new();
            BufReader::new(stdout).read_line(&mut line).map(|_| line)
        })
        .await
        .unwrap()
        .expect("the server prints its port");
        assert_eq!(
            line.trim(),
            format!("listening {port}"),
            "Better Auth started"
        );
        Some(Self {
            child,
            base: format!("http://127.0.0.1:{port}"),
            // Node closes a keep-alive connection after 5 s idle; a request that reuses it
            // at that moment fails with "incomplete message" on a loaded machine, so
            // pooled connections are dropped well before.
            http: reqwest::Client::builder()
                .pool_idle_timeout(Duration::from_secs(1))
                .build()
                .unwrap(),
        })
    }

    /// Calls one of Better Auth's endpoints, as its browser client does (same origin,
    /// with the session cookie when given); answers the status, the JSON body and the
    /// session cookie it set, if any.
    pub async fn call(
        &self,
        path: &str,
        cookie: Option<&str>,
        body: Option<Value>,
    ) -> (u16, Value, Option<String>) {
        let url = format!("{}/api/auth{path}", self.base);
        let mut request = match &body {
            Some(body) => self.http.post(url).json(body),
            None => self.http.get(url),
        };
        request = request.header(ORIGIN, &self.base);
        if let Some(cookie) = cookie {
            request = request.header(COOKIE, cookie);
        }
        let response = request.send().await.expect("Better Auth answers");
        let status = response.status().as_u16();
        let cookie = session_cookie(response.headers());
        let text = response.text().await.unwrap_or_default();
        let json = serde_json::from_str(&text).unwrap_or(Value::String(text));
        (status, json, cookie)
    }

    pub async fn sign_up(&self, email: &str, password: &str) -> (u16, Value, Option<String>) {
        self.call(
            "/sign-up/email",
            None,
            Some(json!({ "email": email, "password": password, "name": "From Better Auth" })),
        )
        .await
    }

    pub async fn sign_in(&self, email: &str, password: &str) -> (u16, Value, Option<String>) {
        self.call(
            "/sign-in/email",
            None,
            Some(json!({ "email": email, "password": password })),
        )
        .await
    }

    /// The signed-in user's email per `get-session`, `None` when signed out.
    pub async fn session_email(&self, cookie: &str) -> Option<String> {
        let (status, body, _) = self.call("/get-session", Some(cookie), None).await;
        assert_eq!(status, 200, "{body}");
        body["user"]["email"].as_str().map(str::to_owned)
    }
}

/// The cookies a response set (`name=value; …`, as a browser sends them back), when
/// the session cookie is among them.
fn session_cookie(headers: &HeaderMap) -> Option<String> {
    let pairs: Vec<&str> = headers
        .get_all(SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .filter_map(|v| v.split(';').next())
        .filter(|pair| !pair.ends_with('='))
        .collect();
    pairs
        .iter()
        .any(|pair| pair.contains("session_token="))
        .then(|| pairs.join("; "))
}

/// Lectern on the same PostgreSQL database as Better Auth, sharing its secret.
async fn lectern_beside(database_url: &str, extra: &[(&str, &str)]) -> TestApp {
    let mut settings = vec![("BETTER_AUTH_SECRET", SECRET)];
    settings.extend_from_slice(extra);
    let app = spawn_app_with_url(Backend::Postgres, Some(database_url), &settings).await;
    tokio::time::timeout(Duration::from_secs(30), app.database.wait_until_up())
        .await
        .expect("Lectern's database came up within 30 s");
    app
}

async fn login_here(app: &TestApp, email: &str, password: &str) -> Value {
    app.graphql(
        "mutation($input: LoginInput!) { login(input: $input) { accessToken user { email } } }",
        json!({ "input": { "email": email, "password": password } }),
    )
    .await
}

async fn register_here(app: &TestApp, email: &str, password: &str) -> Value {
    app.graphql(
        "mutation($input: RegisterInput!) { register(input: $input) { accessToken user { email } } }",
        json!({ "input": { "email": email, "password": password, "name": "From Lectern" } }),
    )
    .await
}

/// `me` for a Better Auth session cookie.
async fn me_with_cookie(app: &TestApp, cookie: &str) -> Value {
    app.client
        .post(app.url("/graphql"))
        .header(COOKIE, cookie)
        .json(&json!({ "query": "{ me { email } }" }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// A fresh PostgreSQL database for one test, or `None` without PostgreSQL.
async fn database() -> Option<String> {
    Some(pg::shared()?.create_database().await)
}

#[tokio::test]
async fn readers_sign_up_and_sign_in_on_either_side() {
    let Some(url) = database().await else { return };
    let app = lectern_beside(&url, &[]).await;
    let Some(peer) = BetterAuth::start(&url, &[]).await else {
        return;
    };

    // Signed up there: logs in here, and its cookie is a session here.
    let (status, body, cookie) = peer.sign_up("ada@example.com", PASSWORD).await;
    assert_eq!(status, 200, "{body}");
    let cookie = cookie.expect("Better Auth set its session cookie");
    let login = login_here(&app, "ada@example.com", PASSWORD).await;
    assert!(login["errors"].is_null(), "{login}");
    let me = me_with_cookie(&app, &cookie).await;
    assert_eq!(me["data"]["me"]["email"], "ada@example.com", "{me}");

    // A login here leaves the hash Better Auth verifies: it still signs in there.
    let (status, body, _) = peer.sign_in("ada@example.com", PASSWORD).await;
    assert_eq!(
        status, 200,
        "Better Auth sign-in after a Lectern login: {body}"
    );

    // Registered here: signs in there.
    let registered = register_here(&app, "grace@example.com", PASSWORD).await;
    assert!(registered["errors"].is_null(), "{registered}");
    let (status, body, cookie) = peer.sign_in("grace@example.com", PASSWORD).await;
    assert_eq!(
        status, 200,
        "Better Auth sign-in of a Lectern reader: {body}"
    );
    assert_eq!(
        peer.session_email(&cookie.unwrap()).await.as_deref(),
        Some("grace@example.com")
    );
    let (status, _, _) = peer
        .sign_in("grace@example.com", "wrong horse battery")
        .await;
    assert_eq!(status, 401);

    // A password typed in another Unicode form (composed "é" there, "e" + combining
    // accent here, and the other way round) works on both sides: both hash its NFKC form.
    let (composed, decomposed) = (
        "café crème brûlée",
        "cafe\u{301} cre\u{300}me bru\u{302}le\u{301}e",
    );
    let (status, body, _) = peer.sign_up("uni@example.com", composed).await;
    assert_eq!(status, 200, "{body}");
    let login = login_here(&app, "uni@example.com", decomposed).await;
    assert!(login["errors"].is_null(), "{login}");
    let registered = register_here(&app, "code@example.com", decomposed).await;
    assert!(registered["errors"].is_null(), "{registered}");
    let (status, body, _) = peer.sign_in("code@example.com", composed).await;
    assert_eq!(status, 200, "{body}");
    app.shutdown().await;
}

#[tokio::test]
async fn sign_outs_revocations_and_deletions_reach_the_other_side() {
    let Some(url) = database().await else { return };
    let app = lectern_beside(&url, &[]).await;
    let Some(peer) = BetterAuth::start(&url, &[]).await else {
        return;
    };
    peer.sign_up("lin@example.com", PASSWORD).await;
    let (_, _, first) = peer.sign_in("lin@example.com", PASSWORD).await;
    let (_, _, second) = peer.sign_in("lin@example.com", PASSWORD).await;
    let (first, second) = (first.unwrap(), second.unwrap());
    assert_eq!(
        me_with_cookie(&app, &first).await["data"]["me"]["email"],
        "lin@example.com"
    );

    // Signed out there: the cookie signs nobody in here.
    let (status, body, _) = peer.call("/sign-out", Some(&first), Some(json!({}))).await;
    assert_eq!(status, 200, "{body}");
    let me = me_with_cookie(&app, &first).await;
    assert!(me["data"]["me"].is_null(), "{me}");

    // A session made here is one of the reader's sessions there.
    let here = login_here(&app, "lin@example.com", PASSWORD).await;
    let token = here["data"]["login"]["accessToken"]
        .as_str()
        .unwrap()
        .to_owned();
    let (status, listed, _) = peer.call("/list-sessions", Some(&second), None).await;
    assert_eq!(status, 200, "{listed}");
    // Sign-up's own session, the second sign-in's, and the login here.
    assert_eq!(listed.as_array().map(Vec::len), Some(3), "{listed}");

    // Other sessions revoked there, the Lectern one among them.
    let (status, body, _) = peer
        .call("/revoke-other-sessions", Some(&second), Some(json!({})))
        .await;
    assert_eq!(status, 200, "{body}");
    let me = app
        .graphql_as(Some(&token), "{ me { email } }", json!({}))
        .await;
    assert_eq!(error_codes(&me), ["UNAUTHENTICATED"], "{me}");

    // Deleted there: gone here.
    let (status, body, _) = peer
        .call(
            "/delete-user",
            Some(&second),
            Some(json!({ "password": PASSWORD })),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let login = login_here(&app, "lin@example.com", PASSWORD).await;
    assert_eq!(error_codes(&login), ["INVALID_CREDENTIALS"], "{login}");
    app.shutdown().await;
}

async fn logout_with_cookie(app: &TestApp, cookie: &str) {
    let logout = app
        .client
        .post(app.url("/graphql"))
        .header(COOKIE, cookie)
        .json(&json!({ "query": "mutation { logout }" }))
        .send()
        .await
        .unwrap()
        .json::<Value>()
        .await
        .unwrap();
    assert_eq!(logout["data"]["logout"], true, "{logout}");
}

/// A logout here ends the Better Auth session there. With Better Auth's `cookieCache`
/// on, its `get-session` answers from the signed cookie until the cache's `maxAge`
/// passes, so it keeps showing the session; `?disableCookieCache=true` asks the database.
#[tokio::test]
async fn a_logout_here_ends_the_session_there() {
    let Some(url) = database().await else { return };
    let app = lectern_beside(&url, &[]).await;
    let Some(peer) = BetterAuth::start(&url, &[]).await else {
        return;
    };
    peer.sign_up("mo@example.com", PASSWORD).await;
    let (_, _, cookie) = peer.sign_in("mo@example.com", PASSWORD).await;
    let cookie = cookie.unwrap();
    logout_with_cookie(&app, &cookie).await;
    assert_eq!(
        peer.session_email(&cookie).await,
        None,
        "signed out there too"
    );
    drop(peer);

    let cached = BetterAuth::start(&url, &[("COOKIE_CACHE", "true")])
        .await
        .unwrap();
    let (_, _, cookie) = cached.sign_in("mo@example.com", PASSWORD).await;
    let cookie = cookie.unwrap();
    assert!(
        cookie.contains("session_data="),
        "the cache cookie: {cookie}"
    );
    logout_with_cookie(&app, &cookie).await;
    assert_eq!(
        cached.session_email(&cookie).await.as_deref(),
        Some("mo@example.com"),
        "the cookie cache still answers for the ended session"
    );
    let (_, fresh, _) = cached
        .call("/get-session?disableCookieCache=true", Some(&cookie), None)
        .await;
    assert!(fresh.is_null(), "the database says it ended: {fresh}");
    app.shutdown().await;
}

/// Better Auth's `advanced.cookiePrefix` and `requireEmailVerification`, set on both
/// sides as the README says.
#[tokio::test]
async fn cookie_prefix_and_email_verification_match_better_auths_options() {
    let Some(url) = database().await else { return };
    let app = lectern_beside(
        &url,
        &[
            ("BETTER_AUTH_COOKIE_PREFIX", "harbour"),
            ("REQUIRE_EMAIL_VERIFICATION", "true"),
        ],
    )
    .await;
    let Some(peer) = BetterAuth::start(
        &url,
        &[
            ("COOKIE_PREFIX", "harbour"),
            ("REQUIRE_EMAIL_VERIFICATION", "true"),
        ],
    )
    .await
    else {
        return;
    };
    let (status, body, cookie) = peer.sign_up("nova@example.com", PASSWORD).await;
    assert_eq!(status, 200, "{body}");
    assert!(cookie.is_none(), "no session before the email is verified");
    let (status, _, _) = peer.sign_in("nova@example.com", PASSWORD).await;
    assert_eq!(status, 403, "Better Auth refuses the unverified email");
    let login = login_here(&app, "nova@example.com", PASSWORD).await;
    assert_eq!(error_codes(&login), ["EMAIL_NOT_VERIFIED"], "{login}");

    // Verified (as Better Auth's verification flow would mark it): both sides sign in,
    // and the prefixed cookie is a session here.
    let conn = sea_orm::Database::connect(&url).await.unwrap();
    sea_orm::ConnectionTrait::execute_unprepared(
        &conn,
        "UPDATE \"user\" SET \"emailVerified\" = true WHERE email = 'nova@example.com'",
    )
    .await
    .unwrap();
    conn.close().await.ok();
    let (status, body, cookie) = peer.sign_in("nova@example.com", PASSWORD).await;
    assert_eq!(status, 200, "{body}");
    let cookie = cookie.unwrap();
    assert!(cookie.starts_with("harbour.session_token="), "{cookie}");
    let me = me_with_cookie(&app, &cookie).await;
    assert_eq!(me["data"]["me"]["email"], "nova@example.com", "{me}");
    let login = login_here(&app, "nova@example.com", PASSWORD).await;
    assert!(login["errors"].is_null(), "{login}");
    app.shutdown().await;
}

/// Better Auth tables Lectern cannot share (a plugin's required column, a column of
/// another type) stop `lectern migrate` with one line naming each problem, before
/// anything is created.
#[tokio::test]
async fn an_incompatible_better_auth_schema_is_named_in_one_line() {
    let Some(url) = database().await else { return };
    if BetterAuth::migrate(&url).is_none() {
        return;
    }
    let conn = sea_orm::Database::connect(&url).await.unwrap();
    sea_orm::ConnectionTrait::execute_unprepared(
        &conn,
        "ALTER TABLE \"user\" ADD COLUMN username text NOT NULL; \
         ALTER TABLE session ALTER COLUMN \"ipAddress\" TYPE integer USING NULL",
    )
    .await
    .unwrap();
    conn.close().await.ok();
    let url_owned = url.clone();
    let output = tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_lectern"))
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("DATABASE_URL", &url_owned)
            .arg("migrate")
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{stderr}");
    let last = stderr.lines().last().unwrap_or_default();
    assert!(last.starts_with("error: "), "{stderr}");
    for problem in [
        "the existing Better Auth tables cannot be shared with Lectern",
        "user.username is required (NOT NULL, no default) but Lectern does not write it",
        "session.ipAddress is integer, Lectern needs text",
    ] {
        assert!(last.contains(problem), "{problem} in {last}");
    }
    let conn = sea_orm::Database::connect(&url).await.unwrap();
    let tables = sea_orm::ConnectionTrait::query_all_raw(
        &conn,
        sea_orm::Statement::from_string(
            sea_orm::DatabaseBackend::Postgres,
            "SELECT 1 FROM information_schema.tables WHERE table_name IN ('refresh_token', 'conversation')",
        ),
    )
    .await
    .unwrap();
    assert!(tables.is_empty(), "nothing was created");
    conn.close().await.ok();
}

/// Most teams adopt Lectern beside a Better Auth application that already runs: its
/// tables exist first. Lectern's migrations add only what it needs; Better Auth's own
/// migration run afterwards finds nothing to do; both keep working.
#[tokio::test]
async fn lectern_joins_a_database_better_auth_created_first() {
    let Some(url) = database().await else { return };
    let Some(first) = BetterAuth::migrate(&url) else {
        return;
    };
    assert!(first.contains("tables to create"), "{first}");
    let peer = BetterAuth::start(&url, &[]).await.unwrap();
    peer.sign_up("early@example.com", PASSWORD).await;

    let app = lectern_beside(&url, &[]).await;
    let login = login_here(&app, "early@example.com", PASSWORD).await;
    assert!(login["errors"].is_null(), "{login}");
    let registered = register_here(&app, "later@example.com", PASSWORD).await;
    assert!(registered["errors"].is_null(), "{registered}");
    let again = BetterAuth::migrate(&url).unwrap();
    assert!(
        again.starts_with("migrate: 0 tables to create, 0 to alter"),
        "Better Auth finds Lectern's schema up to date: {again}"
    );
    let (status, body, _) = peer.sign_in("later@example.com", PASSWORD).await;
    assert_eq!(status, 200, "{body}");
    app.shutdown().await;
}

/// Lectern first, Better Auth's migration after: nothing to create or alter.
#[tokio::test]
async fn better_auth_finds_lecterns_schema_up_to_date() {
    let Some(url) = database().await else { return };
    let app = lectern_beside(&url, &[]).await;
    let Some(out) = BetterAuth::migrate(&url) else {
        return;
    };
    assert!(
        out.starts_with("migrate: 0 tables to create, 0 to alter"),
        "{out}"
    );
    app.shutdown().await;
}

/// With `PASSWORD_HASH=argon2id` here and the README's hash/verify pair there, both
/// sides write argon2id and verify both formats.
#[tokio::test]
async fn argon2id_works_on_both_sides_with_the_readme_configuration() {
    let Some(url) = database().await else { return };
    let app = lectern_beside(&url, &[("PASSWORD_HASH", "argon2id")]).await;
    let Some(peer) = BetterAuth::start(&url, &[("PASSWORD_HASH", "argon2id")]).await else {
        return;
    };
    let registered = register_here(&app, "argon@example.com", PASSWORD).await;
    assert!(registered["errors"].is_null(), "{registered}");
    let (status, body, _) = peer.sign_in("argon@example.com", PASSWORD).await;
    assert_eq!(status, 200, "{body}");
    peer.sign_up("there@example.com", PASSWORD).await;
    let login = login_here(&app, "there@example.com", PASSWORD).await;
    assert!(login["errors"].is_null(), "{login}");
    let (status, body, _) = peer.sign_in("there@example.com", PASSWORD).await;
    assert_eq!(status, 200, "{body}");
    app.shutdown().await;
}
