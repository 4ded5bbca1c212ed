//! Accounts: registration, sign-in, sessions and their tokens, compatible with Better Auth.
//!
//! - [`domain`]: the accepted shapes of email, password and name.
//! - [`password`]: argon2id hashing on the blocking pool (and Better Auth's scrypt).
//! - [`tokens`]: access JWTs and refresh tokens.
//! - [`better_auth`]: signed Better Auth session tokens.
//! - [`viewer`]: who is calling, per request.
//! - [`rate_limit`]: attempts per address and per email.
//!
//! The service functions below take the connection they need and return [`AuthError`].

pub mod better_auth;
pub mod domain;
pub mod password;
pub mod rate_limit;
pub mod tokens;
pub mod viewer;

use std::net::IpAddr;
use std::time::Duration;

use chrono::{DateTime, Utc};
use sea_orm::sea_query::{Expr, OnConflict};
use sea_orm::{
    ActiveValue::Set, ColumnTrait, ConnectionTrait, DatabaseConnection, DbErr, EntityTrait,
    QueryFilter, QuerySelect, SqlErr,
};

use crate::entities::{account, refresh_token, session, user};
use domain::{DisplayName, Email, Password};
use password::{PasswordHasher, Verified};
use rate_limit::AuthRateLimits;
use tokens::TokenKeys;

/// Better Auth's provider id for email and password accounts.
const CREDENTIAL_PROVIDER: &str = "credential";

/// Failures of the account flows; each maps to one client-facing code.
#[derive(Debug)]
pub enum AuthError {
    /// `BAD_USER_INPUT`, with what is accepted.
    InvalidInput(String),
    /// `EMAIL_TAKEN`.
    EmailTaken,
    /// `INVALID_CREDENTIALS`: unknown email or wrong password, indistinguishable.
    InvalidCredentials,
    /// `UNAUTHENTICATED`: a refresh token that is unknown, expired, rotated or revoked.
    InvalidSession,
    /// `RATE_LIMITED`, with how long to wait.
    RateLimited(Duration),
    /// `EMAIL_NOT_VERIFIED`: right password, but `REQUIRE_EMAIL_VERIFICATION` is on and the
    /// address has not been verified (through Better Auth's verification flow).
    EmailNotVerified,
    /// `INTERNAL_SERVER_ERROR` or `DATABASE_UNAVAILABLE`, decided by the guard.
    Database(DbErr),
    /// `INTERNAL_SERVER_ERROR`: hashing failed.
    Hashing(password::HashError),
}

impl From<DbErr> for AuthError {
    fn from(err: DbErr) -> Self {
        Self::Database(err)
    }
}

/// Everything the account flows need besides a connection; one per process, in schema
/// data.
#[derive(Clone)]
pub struct AuthService {
    pub hasher: PasswordHasher,
    pub keys: TokenKeys,
    pub limits: AuthRateLimits,
    /// Announces sessions this process ended, so WebSockets riding on them close.
    pub sessions: SessionEvents,
    /// How long after a refresh the same refresh token may be presented again without
    /// revoking the session (`REFRESH_REUSE_GRACE_SECS`).
    pub reuse_grace: Duration,
    /// Sign in only accounts whose email is verified (`REQUIRE_EMAIL_VERIFICATION`).
    pub require_email_verification: bool,
}

/// Sessions that ended, announced by session id so that the WebSocket connections riding
/// on them close at once: by this process (logout, refresh-token reuse) and, on
/// PostgreSQL, by any replica or Better Auth ([`crate::replicas`]).
#[derive(Clone)]
pub struct SessionEvents(tokio::sync::broadcast::Sender<String>);

impl Default for SessionEvents {
    fn default() -> Self {
        Self(tokio::sync::broadcast::channel(256).0)
    }
}

impl SessionEvents {
    pub fn ended(&self, key: String) {
        // No receiver (no WebSocket open) is the common case, not an error.
        let _ = self.0.send(key);
    }

    pub fn subscribe(&self) -> tokio::sync::broadcast::Receiver<String> {
        self.0.subscribe()
    }
}

/// Where a sign-in came from, recorded on the session as Better Auth does.
#[derive(Debug, Clone, Default)]
pub struct ClientInfo {
    pub ip: Option<IpAddr>,
    pub user_agent: Option<String>,
}

/// A new or refreshed session, as handed to the client.
pub struct Issued {
    pub access_token: String,
    pub refresh_token: String,
    pub expires_at: DateTime<Utc>,
    pub user: user::Model,
    /// After a sign-in or registration: the device token that keeps this client out of
    /// the lockout strangers can cause (see [`rate_limit`]).
    pub device_token: Option<String>,
}

impl AuthService {
    pub async fn register(
        &self,
        conn: &DatabaseConnection,
        email: &str,
        password: &str,
        name: &str,
        client: ClientInfo,
    ) -> Result<Issued, AuthError> {
        let email = Email::parse(email).map_err(AuthError::InvalidInput)?;
        let password = Password::parse(password).map_err(AuthError::InvalidInput)?;
        let name = DisplayName::parse(name).map_err(AuthError::InvalidInput)?;
        self.limits
            .check(client.ip, email.as_str(), None)
            .await
            .map_err(AuthError::RateLimited)?;
        // Saves a hash for the common case; the unique constraint below still decides.
        if find_user_by_email(conn, &email).await?.is_some() {
            return Err(AuthError::EmailTaken);
        }
        let hash = self
            .hasher
            .hash(password.expose())
            .await
            .map_err(AuthError::Hashing)?;

        let now = Utc::now();
        let user = user::Model {
            id: new_id(),
            name: name.into_inner(),
            email: email.as_str().to_owned(),
            email_verified: false,
            image: None,
            created_at: now,
            updated_at: now,
        };
        let txn = crate::db::begin_write(conn).await?;
        let inserted = user::Entity::insert(user::ActiveModel::from(user.clone()))
            .exec_without_returning(&txn)
            .await;
        if let Err(e) = inserted {
            return Err(match e.sql_err() {
                Some(SqlErr::UniqueConstraintViolation(_)) => AuthError::EmailTaken,
                _ => AuthError::Database(e),
            });
        }
        account::Entity::insert(account::ActiveModel {
            id: Set(new_id()),
            account_id: Set(user.id.clone()),
            provider_id: Set(CREDENTIAL_PROVIDER.to_owned()),
            user_id: Set(user.id.clone()),
            password: Set(Some(hash)),
            created_at: Set(now),
            updated_at: Set(now),
            ..Default::default()
        })
        .exec_without_returning(&txn)
        .await?;
        if self.require_email_verification {
            // The account exists; it signs in once its address is verified.
            txn.commit().await?;
            tracing::info!(user_id = %user.id, "account registered; email to be verified");
            return Err(AuthError::EmailNotVerified);
        }
        let mut issued = self.start_session(&txn, user, &client).await?;
        txn.commit().await?;
        issued.device_token = Some(self.limits.device_token(email.as_str()));
        tracing::info!(user_id = %issued.user.id, "account registered");
        Ok(issued)
    }

    /// Signs in; `device` is the device token an earlier sign-in gave this client.
    pub async fn login(
        &self,
        conn: &DatabaseConnection,
        email: &str,
        password: &str,
        device: Option<&str>,
        client: ClientInfo,
    ) -> Result<Issued, AuthError> {
        let email = Email::parse(email).map_err(AuthError::InvalidInput)?;
        if password.is_empty() || password.chars().count() > domain::PASSWORD_MAX_CHARS {
            return Err(AuthError::InvalidInput(format!(
                "password must be 1 to {} characters long",
                domain::PASSWORD_MAX_CHARS
            )));
        }
        self.limits
            .check(client.ip, email.as_str(), device)
            .await
            .map_err(AuthError::RateLimited)?;

        let found = find_user_by_email(conn, &email).await?;
        let credential = match &found {
            Some(user) => {
                account::Entity::find()
                    .filter(account::Column::UserId.eq(&user.id))
                    .filter(account::Column::ProviderId.eq(CREDENTIAL_PROVIDER))
                    .one(conn)
                    .await?
            }
            None => None,
        };
        let stored = credential.as_ref().and_then(|a| a.password.as_deref());
        let verdict = self
            .hasher
            .verify(password, stored)
            .await
            .map_err(AuthError::Hashing)?;
        let (Some(user), Some(credential)) = (found, credential) else {
            tracing::info!("login failed: unknown email");
            return Err(AuthError::InvalidCredentials);
        };
        if verdict != Verified::No && self.require_email_verification && !user.email_verified {
            tracing::info!(user_id = %user.id, "login refused: email not verified");
            return Err(AuthError::EmailNotVerified);
        }
        match verdict {
            Verified::No => {
                tracing::info!(user_id = %user.id, "login failed: wrong password");
                return Err(AuthError::InvalidCredentials);
            }
            Verified::Upgrade => {
                let hash = self
                    .hasher
                    .hash(password)
                    .await
                    .map_err(AuthError::Hashing)?;
                account::Entity::update_many()
                    .col_expr(account::Column::Password, Expr::value(hash))
                    .col_expr(account::Column::UpdatedAt, Expr::value(Utc::now()))
                    .filter(account::Column::Id.eq(&credential.id))
                    .exec(conn)
                    .await?;
                tracing::info!(user_id = %user.id, "password hash rewritten in the configured format");
            }
            Verified::Yes => {}
        }
        let txn = crate::db::begin_write(conn).await?;
        let mut issued = self.start_session(&txn, user, &client).await?;
        txn.commit().await?;
        issued.device_token = Some(self.limits.device_token(email.as_str()));
        tracing::info!(user_id = %issued.user.id, "login succeeded");
        Ok(issued)
    }

    /// Exchanges a refresh token for a new pair. The old token stops working; presenting
    /// an already exchanged token again means it was copied, so the whole session is
    /// revoked.
    pub async fn refresh(
        &self,
        conn: &DatabaseConnection,
        refresh_token: &str,
    ) -> Result<Issued, AuthError> {
        if refresh_token.is_empty() || refresh_token.len() > 256 {
            return Err(AuthError::InvalidSession);
        }
        let digest = tokens::digest(refresh_token);
        let txn = crate::db::begin_write(conn).await?;
        let Some(record) = refresh_token::Entity::find_by_id(digest.clone())
            .one(&txn)
            .await?
        else {
            return Err(AuthError::InvalidSession);
        };
        // Conditional update: of two concurrent exchanges of one token, one wins and the
        // other is treated as reuse.
        let claimed = refresh_token::Entity::update_many()
            .col_expr(refresh_token::Column::RotatedAt, Expr::value(Utc::now()))
            .filter(refresh_token::Column::Digest.eq(&digest))
            .filter(refresh_token::Column::RotatedAt.is_null())
            .exec(&txn)
            .await?
            .rows_affected
            == 1;
        if !claimed && !self.rotated_within_grace(&txn, &digest).await? {
            session::Entity::delete_by_id(record.session_id.clone())
                .exec(&txn)
                .await?;
            txn.commit().await?;
            self.sessions.ended(record.session_id.clone());
            tracing::warn!(session_id = %record.session_id, "refresh token reused; session revoked");
            return Err(AuthError::InvalidSession);
        }
        let now = Utc::now();
        let live = session::Entity::find_by_id(record.session_id.clone())
            .filter(session::Column::ExpiresAt.gt(now))
            .one(&txn)
            .await?;
        let Some(live) = live else {
            return Err(AuthError::InvalidSession);
        };
        let Some(user) = user::Entity::find_by_id(live.user_id.clone())
            .one(&txn)
            .await?
        else {
            return Err(AuthError::InvalidSession);
        };
        session::Entity::update_many()
            .col_expr(
                session::Column::ExpiresAt,
                Expr::value(now + tokens::SESSION_TTL),
            )
            .col_expr(session::Column::UpdatedAt, Expr::value(now))
            .filter(session::Column::Id.eq(&live.id))
            .exec(&txn)
            .await?;
        let refresh = self.new_refresh_token(&txn, &live.id).await?;
        txn.commit().await?;
        let (access_token, expires_at) = self.keys.issue(&user.id, &live.id);
        tracing::info!(user_id = %user.id, session_id = %live.id, "session refreshed");
        Ok(Issued {
            access_token,
            refresh_token: refresh,
            expires_at,
            user,
            device_token: None,
        })
    }

    /// Whether the token was exchanged moments ago: a client that refreshed twice at
    /// once (two tabs, a retried request) is given a pair of its own for the same session
    /// instead of having it revoked, as Auth0's reuse interval does. Later reuse still
    /// means the token was copied.
    async fn rotated_within_grace(
        &self,
        txn: &impl ConnectionTrait,
        digest: &str,
    ) -> Result<bool, DbErr> {
        if self.reuse_grace.is_zero() {
            return Ok(false);
        }
        let rotated_at = refresh_token::Entity::find_by_id(digest.to_owned())
            .one(txn)
            .await?
            .and_then(|token| token.rotated_at);
        let grace = chrono::Duration::from_std(self.reuse_grace).unwrap_or_default();
        Ok(rotated_at.is_some_and(|at| Utc::now() - at <= grace))
    }

    async fn start_session(
        &self,
        txn: &impl ConnectionTrait,
        user: user::Model,
        client: &ClientInfo,
    ) -> Result<Issued, DbErr> {
        let now = Utc::now();
        let session_id = new_id();
        session::Entity::insert(session::ActiveModel {
            id: Set(session_id.clone()),
            expires_at: Set(now + tokens::SESSION_TTL),
            // Better Auth's column; random and never handed out for our own sessions.
            token: Set(tokens::new_refresh_token()),
            created_at: Set(now),
            updated_at: Set(now),
            ip_address: Set(client.ip.map(|ip| ip.to_string())),
            user_agent: Set(client.user_agent.clone()),
            user_id: Set(user.id.clone()),
        })
        .exec_without_returning(txn)
        .await?;
        let refresh_token = self.new_refresh_token(txn, &session_id).await?;
        let (access_token, expires_at) = self.keys.issue(&user.id, &session_id);
        Ok(Issued {
            access_token,
            refresh_token,
            expires_at,
            user,
            device_token: None,
        })
    }

    async fn new_refresh_token(
        &self,
        txn: &impl ConnectionTrait,
        session_id: &str,
    ) -> Result<String, DbErr> {
        let token = tokens::new_refresh_token();
        refresh_token::Entity::insert(refresh_token::ActiveModel {
            digest: Set(tokens::digest(&token)),
            session_id: Set(session_id.to_owned()),
            created_at: Set(Utc::now()),
            rotated_at: Set(None),
        })
        .on_conflict(
            OnConflict::column(refresh_token::Column::Digest)
                .do_nothing()
                .to_owned(),
        )
        .exec_without_returning(txn)
        .await?;
        Ok(token)
    }
}

/// Ends a session. Returns the id of the session it ended, if there was one.
pub async fn logout(
    conn: &DatabaseConnection,
    session: &SessionRef,
) -> Result<Option<String>, DbErr> {
    let query = session::Entity::delete_many();
    let query = match session {
        SessionRef::Id { id, user_id } => query
            .filter(session::Column::Id.eq(id))
            .filter(session::Column::UserId.eq(user_id)),
        SessionRef::BetterAuthToken(token) => query.filter(session::Column::Token.eq(token)),
    };
    let ended = query.exec_with_returning(conn).await?.pop().map(|s| s.id);
    if ended.is_some() {
        match session {
            SessionRef::Id { user_id, .. } => tracing::info!(user_id, "logged out"),
            SessionRef::BetterAuthToken(_) => tracing::info!("logged out of a Better Auth session"),
        }
    }
    Ok(ended)
}

/// A session as a request names it: by id (our access tokens) or by Better Auth token.
#[derive(Debug, Clone)]
pub enum SessionRef {
    Id { id: String, user_id: String },
    BetterAuthToken(String),
}

impl SessionRef {
    /// The session a viewer's credentials name, if they name one.
    pub fn of(viewer: &viewer::Viewer) -> Option<Self> {
        match viewer {
            viewer::Viewer::Token(claims) => Some(SessionRef::Id {
                id: claims.sid.clone(),
                user_id: claims.sub.clone(),
            }),
            viewer::Viewer::BetterAuth(token) => Some(SessionRef::BetterAuthToken(token.clone())),
            viewer::Viewer::Anonymous | viewer::Viewer::Rejected => None,
        }
    }

    /// The one rule for "this session is live": it exists, is unexpired, and (for our
    /// tokens) belongs to the user the token names. Every session check builds on it.
    pub fn live(&self) -> sea_orm::Select<session::Entity> {
        self.live_at(Utc::now())
    }

    /// [`SessionRef::live`] as of `now`.
    pub fn live_at(&self, now: DateTime<Utc>) -> sea_orm::Select<session::Entity> {
        let query = session::Entity::find().filter(session::Column::ExpiresAt.gt(now));
        match self {
            SessionRef::Id { id, user_id } => query
                .filter(session::Column::Id.eq(id))
                .filter(session::Column::UserId.eq(user_id)),
            SessionRef::BetterAuthToken(token) => query.filter(session::Column::Token.eq(token)),
        }
    }

    /// The values [`SessionRef::live_at`] binds after `now`, in order.
    pub fn live_values(&self) -> Vec<sea_orm::Value> {
        match self {
            SessionRef::Id { id, user_id } => vec![id.as_str().into(), user_id.as_str().into()],
            SessionRef::BetterAuthToken(token) => vec![token.as_str().into()],
        }
    }
}

/// The id of the user behind a live session, if any: one indexed lookup.
pub async fn user_id_of_session(
    conn: &DatabaseConnection,
    session: &SessionRef,
) -> Result<Option<String>, DbErr> {
    live_column(conn, session, session::Column::UserId).await
}

/// The id of a live session, if it is one (a Better Auth token names its session by
/// token, and ended sessions are announced by id).
pub async fn live_session_id(
    conn: &DatabaseConnection,
    session: &SessionRef,
) -> Result<Option<String>, DbErr> {
    live_column(conn, session, session::Column::Id).await
}

async fn live_column(
    conn: &DatabaseConnection,
    session: &SessionRef,
    column: session::Column,
) -> Result<Option<String>, DbErr> {
    session
        .live()
        .select_only()
        .column(column)
        .into_tuple::<String>()
        .one(conn)
        .await
}

/// The user behind a live (unexpired, not revoked) session, if any.
pub async fn user_of_session(
    conn: &DatabaseConnection,
    session: &SessionRef,
) -> Result<Option<user::Model>, DbErr> {
    let Some(live) = session.live().one(conn).await? else {
        return Ok(None);
    };
    user::Entity::find_by_id(live.user_id).one(conn).await
}

async fn find_user_by_email(
    conn: &impl ConnectionTrait,
    email: &Email,
) -> Result<Option<user::Model>, DbErr> {
    user::Entity::find()
        .filter(user::Column::Email.eq(email.as_str()))
        .one(conn)
        .await
}

/// Ids are UUIDv7 strings: unique without coordination and in creation order, which keeps
/// index inserts local.
pub fn new_id() -> String {
    uuid::Uuid::now_v7().to_string()
}
