//! `me`, `register`, `login`, `refreshSession`, `logout`, and the helpers other roots use
//! to learn who is calling.

use async_graphql::{Context, ID, InputObject, Object, SimpleObject};
use chrono::{DateTime, Utc};

use super::error::ApiError;
use super::guard::{with_database, with_database_unbounded};
use crate::auth::viewer::Viewer;
use crate::auth::{self, AuthService, ClientInfo, Issued, SessionRef};
use crate::entities::user;

/// A reader with an account. Only ever shown to that reader.
#[derive(SimpleObject, Clone, Debug)]
pub struct User {
    pub id: ID,
    pub email: String,
    pub name: String,
    pub created_at: DateTime<Utc>,
}

impl From<user::Model> for User {
    fn from(m: user::Model) -> Self {
        Self {
            id: ID(m.id),
            email: m.email,
            name: m.name,
            created_at: m.created_at,
        }
    }
}

/// A signed-in session: send `accessToken` as `Authorization: Bearer …` until
/// `expiresAt`, then exchange `refreshToken` with `refreshSession` for a new pair.
#[derive(SimpleObject)]
pub struct AuthPayload {
    pub access_token: String,
    pub refresh_token: String,
    pub expires_at: DateTime<Utc>,
    pub user: User,
    /// After `login` and `register`: keep it and send it with the next `login` for this
    /// email. Attempts that carry it are counted apart from everyone else's, so nobody
    /// can lock this device out of the account by guessing its password. Null after
    /// `refreshSession`.
    pub device_token: Option<String>,
}

impl From<Issued> for AuthPayload {
    fn from(i: Issued) -> Self {
        Self {
            access_token: i.access_token,
            refresh_token: i.refresh_token,
            expires_at: i.expires_at,
            user: i.user.into(),
            device_token: i.device_token,
        }
    }
}

#[derive(InputObject)]
pub struct RegisterInput {
    /// Trimmed and compared case-insensitively.
    pub email: String,
    /// 8 to 128 characters.
    pub password: String,
    /// 1 to 100 characters.
    pub name: String,
}

#[derive(InputObject)]
pub struct LoginInput {
    pub email: String,
    pub password: String,
    /// The `deviceToken` an earlier sign-in with this email returned, if any.
    pub device_token: Option<String>,
}

#[derive(Default)]
pub struct AuthQuery;

#[Object]
impl AuthQuery {
    /// The signed-in reader, or null for an anonymous caller. Credentials that are
    /// expired, revoked or not valid answer `UNAUTHENTICATED`.
    async fn me(&self, ctx: &Context<'_>) -> async_graphql::Result<Option<User>> {
        let session = match viewer(ctx) {
            Viewer::Anonymous => return Ok(None),
            _ => current_session(ctx)?,
        };
        let found = with_database(ctx, |conn| async move {
            auth::user_of_session(&conn, &session).await
        })
        .await?;
        Ok(Some(found.ok_or(ApiError::Unauthenticated)?.into()))
    }
}

#[derive(Default)]
pub struct AuthMutation;

#[Object]
impl AuthMutation {
    /// Creates an account and signs it in.
    #[graphql(complexity = "super::EXPENSIVE + child_complexity")]
    async fn register(
        &self,
        ctx: &Context<'_>,
        input: RegisterInput,
    ) -> async_graphql::Result<AuthPayload> {
        let service = service(ctx)?.clone();
        let client = client_info(ctx);
        let issued = with_database_unbounded(ctx, |conn| async move {
            service
                .register(&conn, &input.email, &input.password, &input.name, client)
                .await
        })
        .await?;
        Ok(issued.into())
    }

    /// Signs in with email and password.
    #[graphql(complexity = "super::EXPENSIVE + child_complexity")]
    async fn login(
        &self,
        ctx: &Context<'_>,
        input: LoginInput,
    ) -> async_graphql::Result<AuthPayload> {
        let service = service(ctx)?.clone();
        let client = client_info(ctx);
        let issued = with_database_unbounded(ctx, |conn| async move {
            service
                .login(
                    &conn,
                    &input.email,
                    &input.password,
                    input.device_token.as_deref(),
                    client,
                )
                .await
        })
        .await?;
        Ok(issued.into())
    }

    /// Exchanges a refresh token for a new pair; the old one stops working. Presenting an
    /// already exchanged token revokes its session.
    async fn refresh_session(
        &self,
        ctx: &Context<'_>,
        refresh_token: String,
    ) -> async_graphql::Result<AuthPayload> {
        let service = service(ctx)?.clone();
        let issued = with_database(ctx, |conn| async move {
            service.refresh(&conn, &refresh_token).await
        })
        .await?;
        Ok(issued.into())
    }

    /// Ends the current session: its refresh token stops working at once, its access
    /// token is refused by every field that checks the session.
    async fn logout(&self, ctx: &Context<'_>) -> async_graphql::Result<bool> {
        let session = current_session(ctx)?;
        let ended = with_database(
            ctx,
            |conn| async move { auth::logout(&conn, &session).await },
        )
        .await?;
        Ok(match ended {
            Some(id) => {
                service(ctx)?.sessions.ended(id);
                true
            }
            None => false,
        })
    }
}

pub fn viewer<'a>(ctx: &Context<'a>) -> &'a Viewer {
    ctx.data_opt::<Viewer>().unwrap_or(&Viewer::Anonymous)
}

/// The caller's session, or `UNAUTHENTICATED`.
pub fn current_session(ctx: &Context<'_>) -> Result<SessionRef, ApiError> {
    SessionRef::of(viewer(ctx)).ok_or(ApiError::Unauthenticated)
}

/// Per-request memo of "which user is behind this request's session", so a query with
/// several history fields checks the session once. Placed in request data by the HTTP
/// handler and by the WebSocket for each operation (never per connection, so a session
/// that ends is noticed by the next operation); errors (database down) are not memoised.
#[derive(Default)]
pub struct SessionCheck(tokio::sync::OnceCell<Option<String>>);

/// The signed-in reader's id, after checking that their session is still live (so
/// `logout` takes effect at once), or `UNAUTHENTICATED`.
pub async fn current_user_id(ctx: &Context<'_>) -> Result<String, ApiError> {
    let session = current_session(ctx)?;
    let check = async {
        with_database(ctx, |conn| async move {
            auth::user_id_of_session(&conn, &session).await
        })
        .await
    };
    let user_id = match ctx.data_opt::<SessionCheck>() {
        Some(memo) => memo.0.get_or_try_init(|| check).await?.clone(),
        None => check.await?,
    };
    user_id.ok_or(ApiError::Unauthenticated)
}

fn service<'a>(ctx: &Context<'a>) -> Result<&'a AuthService, ApiError> {
    ctx.data::<AuthService>()
        .map_err(|_| ApiError::Internal("schema built without an AuthService"))
}

fn client_info(ctx: &Context<'_>) -> ClientInfo {
    ctx.data_opt::<ClientInfo>().cloned().unwrap_or_default()
}
