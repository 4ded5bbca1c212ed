//! Accounts through GraphQL: register, log in, `me`, refresh with rotation and reuse
//! detection, logout, bad input, bad tokens, Better Auth compatibility, rate limits, and
//! the database guard on `me`.

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::Utc;
use lectern::auth::better_auth::{BetterAuthVerifier, DEFAULT_COOKIE_PREFIX};
use lectern::auth::password::better_auth_scrypt_hash;
use lectern::auth::tokens::{AccessClaims, TokenKeys};
use lectern::config::Secret;
use lectern::entities::{account, session, user};
use sea_orm::{ActiveValue::Set, ColumnTrait, EntityTrait, QueryFilter};
use serde_json::{Value, json};

use crate::helpers::{
    Backend, JWT_SECRET, TestApp, error_codes, eventually, for_each_backend, for_each_backend_with,
    register, spawn_app_with_url,
};
use crate::pg::PgCluster;

const ME: &str = "{ me { id email name } }";
const LOGIN: &str = "mutation($input: LoginInput!) { login(input: $input) { accessToken refreshToken expiresAt user { id email } } }";
const REFRESH: &str = "mutation($t: String!) { refreshSession(refreshToken: $t) { accessToken refreshToken user { id } } }";
const PASSWORD: &str = "correct horse battery";

async fn login(app: &TestApp, email: &str, password: &str) -> Value {
    app.graphql(
        LOGIN,
        json!({ "input": { "email": email, "password": password } }),
    )
    .await
}

async fn refresh(app: &TestApp, token: &str) -> Value {
    app.graphql(REFRESH, json!({ "t": token })).await
}

fn str_of<'a>(v: &'a Value, pointer: &str) -> &'a str {
    v.pointer(pointer)
        .and_then(Value::as_str)
        .unwrap_or_else(|| panic!("{pointer} missing in {v}"))
}

#[tokio::test]
async fn register_login_me_refresh_reuse_and_logout() {
    // Reuse at once counts as reuse here; the grace window has a test of its own.
    for_each_backend_with(&[("REFRESH_REUSE_GRACE_SECS", "0")], |app| async move {
        let registered = register(&app, "  Ada@Example.COM ", PASSWORD).await;
        assert_eq!(registered["user"]["email"], "ada@example.com");
        let user_id = str_of(&registered, "/user/id").to_owned();

        // Anonymous: null, no error.
        let anonymous = app.graphql(ME, json!({})).await;
        assert_eq!(anonymous, json!({ "data": { "me": null } }));

        let me = app
            .graphql_as(Some(str_of(&registered, "/accessToken")), ME, json!({}))
            .await;
        assert_eq!(me["data"]["me"]["id"], user_id.as_str());

        // Login is case-insensitive on the email.
        let logged_in = login(&app, "ADA@example.com", PASSWORD).await;
        assert!(logged_in["errors"].is_null(), "{logged_in}");
        let first_refresh = str_of(&logged_in, "/data/login/refreshToken").to_owned();

        // Rotation: a new pair; the old refresh token stops working.
        let rotated = refresh(&app, &first_refresh).await;
        assert!(rotated["errors"].is_null(), "{rotated}");
        let second_refresh = str_of(&rotated, "/data/refreshSession/refreshToken").to_owned();
        let second_access = str_of(&rotated, "/data/refreshSession/accessToken").to_owned();
        assert_ne!(second_refresh, first_refresh);
        let me = app.graphql_as(Some(&second_access), ME, json!({})).await;
        assert_eq!(me["data"]["me"]["id"], user_id.as_str());

        // Reuse of the rotated token is refused and revokes the session...
        let reused = refresh(&app, &first_refresh).await;
        assert_eq!(error_codes(&reused), ["UNAUTHENTICATED"], "{reused}");
        // ...so the newest token of that session and its access token die too.
        let after_reuse = refresh(&app, &second_refresh).await;
        assert_eq!(error_codes(&after_reuse), ["UNAUTHENTICATED"]);
        let me = app.graphql_as(Some(&second_access), ME, json!({})).await;
        assert_eq!(error_codes(&me), ["UNAUTHENTICATED"], "{me}");

        // Logout ends the current session only.
        let other_session = login(&app, "ada@example.com", PASSWORD).await;
        let third = login(&app, "ada@example.com", PASSWORD).await;
        let third_access = str_of(&third, "/data/login/accessToken");
        let logout = app
            .graphql_as(Some(third_access), "mutation { logout }", json!({}))
            .await;
        assert_eq!(logout["data"]["logout"], true, "{logout}");
        let refused = refresh(&app, str_of(&third, "/data/login/refreshToken")).await;
        assert_eq!(error_codes(&refused), ["UNAUTHENTICATED"]);
        let me = app.graphql_as(Some(third_access), ME, json!({})).await;
        assert_eq!(error_codes(&me), ["UNAUTHENTICATED"]);
        let still_fine = refresh(&app, str_of(&other_session, "/data/login/refreshToken")).await;
        assert!(still_fine["errors"].is_null(), "{still_fine}");

        // Logout needs a session.
        let anonymous_logout = app.graphql("mutation { logout }", json!({})).await;
        assert_eq!(error_codes(&anonymous_logout), ["UNAUTHENTICATED"]);

        // Only digests of refresh tokens are stored.
        let sessions = session::Entity::find()
            .all(app.database.connection())
            .await
            .unwrap();
        for s in &sessions {
            assert_ne!(s.token, second_refresh);
        }
        app.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn duplicate_and_concurrent_registrations_keep_one_account() {
    for_each_backend(|app| async move {
        register(&app, "dup@example.com", PASSWORD).await;
        let again = app
            .graphql(
                "mutation($input: RegisterInput!) { register(input: $input) { accessToken } }",
                json!({ "input": { "email": " DUP@example.com", "password": PASSWORD, "name": "Other" } }),
            )
            .await;
        assert_eq!(error_codes(&again), ["EMAIL_TAKEN"], "{again}");

        let attempts = (0..20).map(|i| {
            let app = &app;
            async move {
                app.graphql(
                    "mutation($input: RegisterInput!) { register(input: $input) { user { id } } }",
                    json!({ "input": { "email": "race@example.com", "password": PASSWORD, "name": format!("Racer {i}") } }),
                )
                .await
            }
        });
        let results = futures_util::future::join_all(attempts).await;
        let winners = results.iter().filter(|r| r["errors"].is_null()).count();
        let taken = results
            .iter()
            .filter(|r| error_codes(r) == ["EMAIL_TAKEN"])
            .count();
        assert_eq!((winners, taken), (1, 19), "{results:?}");
        let users = user::Entity::find()
            .filter(user::Column::Email.eq("race@example.com"))
            .all(app.database.connection())
            .await
            .unwrap();
        assert_eq!(users.len(), 1);
        app.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn bad_input_says_what_is_accepted_and_stores_nothing() {
    for_each_backend(|app| async move {
        let cases = [
            ("not-an-email", PASSWORD, "Reader", "email"),
            ("a@example.com", "short", "Reader", "8 to 128"),
            ("b@example.com", &"x".repeat(129), "Reader", "8 to 128"),
            ("c@example.com", PASSWORD, "   ", "name"),
        ];
        for (email, password, name, says) in cases {
            let response = app
                .graphql(
                    "mutation($input: RegisterInput!) { register(input: $input) { accessToken } }",
                    json!({ "input": { "email": email, "password": password, "name": name } }),
                )
                .await;
            assert_eq!(error_codes(&response), ["BAD_USER_INPUT"], "{response}");
            let message = response["errors"][0]["message"].as_str().unwrap();
            assert!(message.contains(says), "{message}");
        }
        let users = user::Entity::find()
            .all(app.database.connection())
            .await
            .unwrap();
        assert!(users.is_empty(), "nothing stored");

        let bad_login = login(&app, "nope", PASSWORD).await;
        assert_eq!(error_codes(&bad_login), ["BAD_USER_INPUT"]);
        app.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn unknown_email_and_wrong_password_look_the_same() {
    for_each_backend(|app| async move {
        register(&app, "known@example.com", PASSWORD).await;
        let wrong = login(&app, "known@example.com", "wrong password!").await;
        let unknown = login(&app, "unknown@example.com", PASSWORD).await;
        assert_eq!(error_codes(&wrong), ["INVALID_CREDENTIALS"]);
        assert_eq!(error_codes(&unknown), ["INVALID_CREDENTIALS"]);
        assert_eq!(
            wrong["errors"][0]["message"],
            unknown["errors"][0]["message"]
        );
        app.shutdown().await;
    })
    .await;
}

fn jwt_with(header: &Value, claims: &Value, signature: &str) -> String {
    let part = |v: &Value| URL_SAFE_NO_PAD.encode(v.to_string());
    format!("{}.{}.{signature}", part(header), part(claims))
}

#[tokio::test]
async fn expired_tampered_unsigned_and_foreign_tokens_are_unauthenticated() {
    for_each_backend(|app| async move {
        let registered = register(&app, "tokens@example.com", PASSWORD).await;
        let good = str_of(&registered, "/accessToken");
        let claims: AccessClaims = {
            let payload = good.split('.').nth(1).unwrap();
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap()
        };
        let keys = TokenKeys::new(&Secret::new(JWT_SECRET));
        let now = Utc::now().timestamp();
        let expired = keys
            .sign(&AccessClaims {
                iat: now - 7200,
                nbf: now - 7200,
                exp: now - 3600,
                ..claims.clone()
            })
            .unwrap();
        let not_yet_valid = keys
            .sign(&AccessClaims {
                nbf: now + 3600,
                exp: now + 7200,
                ..claims.clone()
            })
            .unwrap();
        let other_secret = TokenKeys::new(&Secret::new("some-other-secret-some-other-secret"))
            .issue(&claims.sub, &claims.sid)
            .0;
        let claims_json = serde_json::to_value(&claims).unwrap();
        let alg_none = jwt_with(&json!({ "alg": "none", "typ": "JWT" }), &claims_json, "");
        let hs512 = jsonwebtoken::encode(
            &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS512),
            &claims,
            &jsonwebtoken::EncodingKey::from_secret(JWT_SECRET.as_bytes()),
        )
        .unwrap();
        let mut parts: Vec<String> = good.split('.').map(str::to_owned).collect();
        let mut forged = claims_json.clone();
        forged["sub"] = json!("someone-else");
        parts[1] = URL_SAFE_NO_PAD.encode(forged.to_string());
        let tampered = parts.join(".");
        let garbage = "x".repeat(8000);

        for (what, token) in [
            ("expired", expired.as_str()),
            ("not yet valid", &not_yet_valid),
            ("other secret", &other_secret),
            ("alg none", &alg_none),
            ("HS512", &hs512),
            ("tampered", &tampered),
            ("garbage", &garbage),
        ] {
            let response = app.graphql_as(Some(token), ME, json!({})).await;
            assert_eq!(
                error_codes(&response),
                ["UNAUTHENTICATED"],
                "{what}: {response}"
            );
            assert!(response["data"]["me"].is_null());
        }
        let response = app.graphql_as(Some(good), ME, json!({})).await;
        assert!(
            response["errors"].is_null(),
            "the untouched token still works"
        );
        app.shutdown().await;
    })
    .await;
}

/// A reader as a Better Auth server writes one: its user row and its credential account
/// with `hash` (an id of its shape, the account's id derived from it).
async fn insert_better_auth_user(
    conn: &sea_orm::DatabaseConnection,
    user_id: &str,
    email: &str,
    hash: String,
) {
    let now = Utc::now();
    user::Entity::insert(user::ActiveModel {
        id: Set(user_id.into()),
        name: Set("From Better Auth".into()),
        email: Set(email.into()),
        email_verified: Set(true),
        image: Set(None),
        created_at: Set(now),
        updated_at: Set(now),
    })
    .exec_without_returning(conn)
    .await
    .unwrap();
    account::Entity::insert(account::ActiveModel {
        id: Set(format!("acc-{user_id}")),
        account_id: Set(user_id.into()),
        provider_id: Set("credential".into()),
        user_id: Set(user_id.into()),
        password: Set(Some(hash)),
        created_at: Set(now),
        updated_at: Set(now),
        ..Default::default()
    })
    .exec_without_returning(conn)
    .await
    .unwrap();
}

/// A reader created by a Better Auth server (its ids, its scrypt hash) signs in here; the
/// hash is upgraded to argon2id on that login and keeps working.
#[tokio::test]
async fn better_auth_scrypt_hash_verifies_and_is_upgraded() {
    for_each_backend(|app| async move {
        let conn = app.database.connection();
        let hash = better_auth_scrypt_hash(PASSWORD, "9f1c2b7e4d3a6f5e8b0c1d2e3f4a5b6c");
        insert_better_auth_user(conn, "Xb2kQ9vLm3TzR8wP1yHn6cJd", "ba@example.com", hash).await;

        let wrong = login(&app, "ba@example.com", "not the password").await;
        assert_eq!(error_codes(&wrong), ["INVALID_CREDENTIALS"]);
        let stored = |conn| async move {
            account::Entity::find()
                .filter(account::Column::UserId.eq("Xb2kQ9vLm3TzR8wP1yHn6cJd"))
                .one(conn)
                .await
                .unwrap()
                .unwrap()
                .password
                .unwrap()
        };
        assert!(
            !stored(conn).await.starts_with("$argon2id$"),
            "a failed login changes nothing"
        );

        let first = login(&app, "ba@example.com", PASSWORD).await;
        assert!(first["errors"].is_null(), "{first}");
        assert_eq!(
            first["data"]["login"]["user"]["id"],
            "Xb2kQ9vLm3TzR8wP1yHn6cJd"
        );
        assert!(stored(conn).await.starts_with("$argon2id$"), "upgraded");
        let second = login(&app, "ba@example.com", PASSWORD).await;
        assert!(
            second["errors"].is_null(),
            "the upgraded hash verifies: {second}"
        );
        app.shutdown().await;
    })
    .await;
}

const BETTER_AUTH_SECRET: &str = "better-auth-secret-for-tests-0123456789";

/// With a Better Auth server sharing the database (`BETTER_AUTH_SECRET` set), passwords
/// stay in the format Better Auth verifies: a reader registered here gets a scrypt hash
/// Better Auth's algorithm reproduces, and a Better Auth reader's hash is left as it is
/// after signing in here (rewriting it as argon2id locked them out of Better Auth).
/// Passwords match in any Unicode form of the same text.
#[tokio::test]
async fn sharing_with_better_auth_keeps_its_password_format() {
    let shared = [("BETTER_AUTH_SECRET", BETTER_AUTH_SECRET)];
    for_each_backend_with(&shared, |app| async move {
        let conn = app.database.connection();
        let stored = |user_id: String| async move {
            account::Entity::find()
                .filter(account::Column::UserId.eq(user_id))
                .one(conn)
                .await
                .unwrap()
                .unwrap()
                .password
                .unwrap()
        };
        // Registered here, with a ligature in the password.
        let registered = register(&app, "here@example.com", "ﬁne horse battery").await;
        let id = registered["user"]["id"].as_str().unwrap().to_owned();
        let hash = stored(id.clone()).await;
        let (salt, _) = hash.split_once(':').expect("Better Auth's salt:key format");
        assert_eq!(better_auth_scrypt_hash("fine horse battery", salt), hash);
        let typed_otherwise = login(&app, "here@example.com", "fine horse battery").await;
        assert!(typed_otherwise["errors"].is_null(), "{typed_otherwise}");
        assert_eq!(stored(id).await, hash, "unchanged by signing in");

        // Written by Better Auth, signed in here: left as it is.
        let theirs = better_auth_scrypt_hash(PASSWORD, "0123456789abcdef0123456789abcdef");
        insert_better_auth_user(
            conn,
            "BaUser0000000000000000001",
            "there@example.com",
            theirs.clone(),
        )
        .await;
        let signed_in = login(&app, "there@example.com", PASSWORD).await;
        assert!(signed_in["errors"].is_null(), "{signed_in}");
        assert_eq!(stored("BaUser0000000000000000001".into()).await, theirs);
        app.shutdown().await;
    })
    .await;
}

/// With `BETTER_AUTH_SECRET` set, a session Better Auth wrote (cookie or bearer, signed)
/// signs the reader in; unsigned, wrongly signed or expired ones do not.
#[tokio::test]
async fn better_auth_session_cookie_is_accepted() {
    for_each_backend_with(
        &[("BETTER_AUTH_SECRET", BETTER_AUTH_SECRET)],
        |app| async move {
            let registered = register(&app, "cookie@example.com", PASSWORD).await;
            let user_id = str_of(&registered, "/user/id").to_owned();
            let now = Utc::now();
            for (id, token, expires_at) in [
                (
                    "ba-live",
                    "k3Jd8sQpXzVb1nLm0aR7tYw2eUcH5gFi",
                    now + chrono::Duration::days(1),
                ),
                (
                    "ba-expired",
                    "Zz9Jd8sQpXzVb1nLm0aR7tYw2eUcH5gF",
                    now - chrono::Duration::days(1),
                ),
            ] {
                session::Entity::insert(session::ActiveModel {
                    id: Set(id.into()),
                    expires_at: Set(expires_at),
                    token: Set(token.into()),
                    created_at: Set(now),
                    updated_at: Set(now),
                    ip_address: Set(None),
                    user_agent: Set(None),
                    user_id: Set(user_id.clone()),
                })
                .exec_without_returning(app.database.connection())
                .await
                .unwrap();
            }
            let verifier =
                BetterAuthVerifier::new(Secret::new(BETTER_AUTH_SECRET), DEFAULT_COOKIE_PREFIX);
            let signed = verifier.sign("k3Jd8sQpXzVb1nLm0aR7tYw2eUcH5gFi");
            let me_with_cookie = |cookie: String| {
                let app = &app;
                async move {
                    app.client
                        .post(app.url("/graphql"))
                        .header("cookie", cookie)
                        .json(&json!({ "query": ME }))
                        .send()
                        .await
                        .unwrap()
                        .json::<Value>()
                        .await
                        .unwrap()
                }
            };
            let me =
                me_with_cookie(format!("theme=dark; better-auth.session_token={signed}")).await;
            assert_eq!(me["data"]["me"]["id"], user_id.as_str(), "{me}");
            let bearer = app.graphql_as(Some(&signed), ME, json!({})).await;
            assert_eq!(bearer["data"]["me"]["id"], user_id.as_str(), "{bearer}");

            let unsigned =
                me_with_cookie("better-auth.session_token=k3Jd8sQpXzVb1nLm0aR7tYw2eUcH5gFi".into())
                    .await;
            assert_eq!(
                error_codes(&unsigned),
                ["UNAUTHENTICATED"],
                "a leaked table is not enough"
            );
            let foreign =
                BetterAuthVerifier::new(Secret::new("not-the-secret"), DEFAULT_COOKIE_PREFIX)
                    .sign("k3Jd8sQpXzVb1nLm0aR7tYw2eUcH5gFi");
            let wrong = me_with_cookie(format!("better-auth.session_token={foreign}")).await;
            assert_eq!(error_codes(&wrong), ["UNAUTHENTICATED"]);
            let expired = me_with_cookie(format!(
                "better-auth.session_token={}",
                verifier.sign("Zz9Jd8sQpXzVb1nLm0aR7tYw2eUcH5gF")
            ))
            .await;
            assert_eq!(error_codes(&expired), ["UNAUTHENTICATED"]);
            app.shutdown().await;
        },
    )
    .await;
}

#[tokio::test]
async fn login_attempts_are_rate_limited_and_released() {
    let Some(app) = crate::helpers::spawn_app(
        Backend::Sqlite,
        &[
            ("AUTH_RATE_LIMIT_PER_EMAIL", "3"),
            ("AUTH_RATE_LIMIT_PER_IP", "100"),
        ],
    )
    .await
    else {
        unreachable!("SQLite is always available")
    };
    for _ in 0..3 {
        let attempt = login(&app, "limited@example.com", "wrong password").await;
        assert_eq!(error_codes(&attempt), ["INVALID_CREDENTIALS"]);
    }
    let limited = login(&app, "limited@example.com", "wrong password").await;
    assert_eq!(error_codes(&limited), ["RATE_LIMITED"], "{limited}");
    let retry_after = limited["errors"][0]["extensions"]["retryAfter"]
        .as_u64()
        .expect("a retry-after hint in seconds");
    assert!((1..=10).contains(&retry_after), "{retry_after}");
    let other_email = login(&app, "other@example.com", "wrong password").await;
    assert_eq!(
        error_codes(&other_email),
        ["INVALID_CREDENTIALS"],
        "limits are per email"
    );

    tokio::time::sleep(Duration::from_secs(retry_after)).await;
    let released = login(&app, "limited@example.com", "wrong password").await;
    assert_eq!(
        error_codes(&released),
        ["INVALID_CREDENTIALS"],
        "released after the wait"
    );
    app.shutdown().await;
}

/// The database guard: with PostgreSQL stopped, `me` and `conversations` fail with `DATABASE_UNAVAILABLE`
/// at its path while `health` in the same query still answers; when PostgreSQL is back,
/// `me` works again without a restart.
#[tokio::test]
async fn signed_in_fields_are_partial_data_errors_while_the_database_is_down() {
    let Some(cluster) = PgCluster::init() else {
        return;
    };
    cluster.start();
    let app = spawn_app_with_url(Backend::Postgres, Some(&cluster.url("postgres")), &[]).await;
    tokio::time::timeout(Duration::from_secs(30), app.database.wait_until_up())
        .await
        .unwrap();
    let token = str_of(
        &register(&app, "outage@example.com", PASSWORD).await,
        "/accessToken",
    )
    .to_owned();
    let query = "{ health { database } me { email } conversations { edges { cursor } } }";

    cluster.stop("fast");
    let refused = eventually(Duration::from_secs(10), || async {
        let r = app.graphql_as(Some(&token), query, json!({})).await;
        error_codes(&r) == ["DATABASE_UNAVAILABLE", "DATABASE_UNAVAILABLE"]
    })
    .await;
    assert!(
        refused,
        "me answers DATABASE_UNAVAILABLE once the outage is known"
    );
    // Known outage: refused by the guard without touching the pool.
    let last = app.graphql_as(Some(&token), query, json!({})).await;
    assert_eq!(
        error_codes(&last),
        ["DATABASE_UNAVAILABLE", "DATABASE_UNAVAILABLE"],
        "{last}"
    );
    assert_eq!(last["data"]["health"]["database"], "DOWN", "{last}");
    assert!(last["data"]["me"].is_null());
    assert!(last["data"]["conversations"].is_null());
    let paths: Vec<&Value> = last["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| &e["path"])
        .collect();
    assert!(
        paths.contains(&&json!(["me"])) && paths.contains(&&json!(["conversations"])),
        "{last}"
    );

    cluster.start();
    let recovered = eventually(Duration::from_secs(15), || async {
        let r = app.graphql_as(Some(&token), query, json!({})).await;
        r["data"]["me"]["email"] == "outage@example.com"
    })
    .await;
    assert!(recovered, "me works again once PostgreSQL is back");
    app.shutdown().await;
}

/// `BETTER_AUTH_COOKIE_PREFIX` follows Better Auth's `advanced.cookiePrefix`: the session
/// cookie under that name (plain or `__Secure-`) signs the reader in; the default name no
/// longer does.
#[tokio::test]
async fn a_custom_better_auth_cookie_prefix_is_recognised() {
    let extra = [
        ("BETTER_AUTH_SECRET", BETTER_AUTH_SECRET),
        ("BETTER_AUTH_COOKIE_PREFIX", "my-app"),
    ];
    let app = crate::helpers::spawn_app(Backend::Sqlite, &extra)
        .await
        .unwrap();
    let registered = register(&app, "prefix@example.com", PASSWORD).await;
    let now = Utc::now();
    session::Entity::insert(session::ActiveModel {
        id: Set("ba-prefixed".into()),
        expires_at: Set(now + chrono::Duration::days(1)),
        token: Set("Pr3Jd8sQpXzVb1nLm0aR7tYw2eUcH5gF".into()),
        created_at: Set(now),
        updated_at: Set(now),
        ip_address: Set(None),
        user_agent: Set(None),
        user_id: Set(str_of(&registered, "/user/id").to_owned()),
    })
    .exec_without_returning(app.database.connection())
    .await
    .unwrap();
    let signed = BetterAuthVerifier::new(Secret::new(BETTER_AUTH_SECRET), "my-app")
        .sign("Pr3Jd8sQpXzVb1nLm0aR7tYw2eUcH5gF");
    let me_with = |cookie: String| {
        let app = &app;
        async move {
            let response = app
                .client
                .post(app.url("/graphql"))
                .header("cookie", cookie)
                .json(&json!({ "query": ME }))
                .send()
                .await
                .unwrap();
            response.json::<Value>().await.unwrap()
        }
    };
    for name in ["my-app.session_token", "__Secure-my-app.session_token"] {
        let me = me_with(format!("{name}={signed}")).await;
        assert_eq!(
            me["data"]["me"]["email"], "prefix@example.com",
            "{name}: {me}"
        );
    }
    let default_name = me_with(format!("better-auth.session_token={signed}")).await;
    assert_eq!(default_name["data"]["me"], Value::Null, "{default_name}");
    app.shutdown().await;
}

/// `REQUIRE_EMAIL_VERIFICATION` refuses, as Better Auth's `requireEmailVerification` does,
/// the sign-in of an account whose email is not verified (`EMAIL_NOT_VERIFIED`, and only
/// for the right password); once verified, it signs in.
#[tokio::test]
async fn unverified_emails_are_refused_when_verification_is_required() {
    for_each_backend_with(&[("REQUIRE_EMAIL_VERIFICATION", "true")], |app| async move {
        let registration = app
            .graphql(
                "mutation($input: RegisterInput!) { register(input: $input) { accessToken } }",
                json!({ "input": { "email": "unverified@example.com", "password": PASSWORD, "name": "U" } }),
            )
            .await;
        assert_eq!(error_codes(&registration), ["EMAIL_NOT_VERIFIED"], "{registration}");
        let wrong = login(&app, "unverified@example.com", "not the password").await;
        assert_eq!(error_codes(&wrong), ["INVALID_CREDENTIALS"]);
        let right = login(&app, "unverified@example.com", PASSWORD).await;
        assert_eq!(error_codes(&right), ["EMAIL_NOT_VERIFIED"], "{right}");
        user::Entity::update_many()
            .col_expr(
                user::Column::EmailVerified,
                sea_orm::sea_query::Expr::value(true),
            )
            .filter(user::Column::Email.eq("unverified@example.com"))
            .exec(app.database.connection())
            .await
            .unwrap();
        let verified = login(&app, "unverified@example.com", PASSWORD).await;
        assert!(verified["errors"].is_null(), "{verified}");
        app.shutdown().await;
    })
    .await;
}
