//! Better Auth's core tables (`user`, `session`, `account`, `verification`) with its column
//! names, so a Better Auth server pointed at the same database sees the same users, plus
//! `refresh_token`, Lectern's record of the refresh tokens it issued (digests only).

use sea_orm_migration::prelude::*;

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261122_000001_accounts"
    }
}

#[derive(Iden)]
enum User {
    Table,
    Id,
    Name,
    Email,
    #[iden = "emailVerified"]
    EmailVerified,
    Image,
    #[iden = "createdAt"]
    CreatedAt,
    #[iden = "updatedAt"]
    UpdatedAt,
}

#[derive(Iden)]
enum Session {
    Table,
    Id,
    #[iden = "expiresAt"]
    ExpiresAt,
    Token,
    #[iden = "createdAt"]
    CreatedAt,
    #[iden = "updatedAt"]
    UpdatedAt,
    #[iden = "ipAddress"]
    IpAddress,
    #[iden = "userAgent"]
    UserAgent,
    #[iden = "userId"]
    UserId,
}

// The variant names are Better Auth's column names (`accountId`, …), not a choice.
#[allow(clippy::enum_variant_names)]
#[derive(Iden)]
enum Account {
    Table,
    Id,
    #[iden = "accountId"]
    AccountId,
    #[iden = "providerId"]
    ProviderId,
    #[iden = "userId"]
    UserId,
    #[iden = "accessToken"]
    AccessToken,
    #[iden = "refreshToken"]
    RefreshToken,
    #[iden = "idToken"]
    IdToken,
    #[iden = "accessTokenExpiresAt"]
    AccessTokenExpiresAt,
    #[iden = "refreshTokenExpiresAt"]
    RefreshTokenExpiresAt,
    Scope,
    Password,
    #[iden = "createdAt"]
    CreatedAt,
    #[iden = "updatedAt"]
    UpdatedAt,
}

#[derive(Iden)]
enum Verification {
    Table,
    Id,
    Identifier,
    Value,
    #[iden = "expiresAt"]
    ExpiresAt,
    #[iden = "createdAt"]
    CreatedAt,
    #[iden = "updatedAt"]
    UpdatedAt,
}

#[derive(Iden)]
enum RefreshToken {
    Table,
    /// SHA-256 of the token, hex: the token itself is never stored.
    Digest,
    #[iden = "sessionId"]
    SessionId,
    #[iden = "createdAt"]
    CreatedAt,
    /// Set when the token was exchanged; presenting it again is reuse.
    #[iden = "rotatedAt"]
    RotatedAt,
}

fn text(col: impl IntoIden) -> ColumnDef {
    ColumnDef::new(col).text().not_null().to_owned()
}

fn timestamp(col: impl IntoIden) -> ColumnDef {
    ColumnDef::new(col)
        .timestamp_with_time_zone()
        .not_null()
        .default(Expr::current_timestamp())
        .to_owned()
}

fn nullable_timestamp(col: impl IntoIden) -> ColumnDef {
    ColumnDef::new(col)
        .timestamp_with_time_zone()
        .null()
        .to_owned()
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(User::Table)
                    .col(text(User::Id).primary_key())
                    .col(text(User::Name))
                    // Stored trimmed and lower-cased (as Better Auth does), so the unique
                    // constraint is what decides "one account per email".
                    .col(text(User::Email).unique_key())
                    .col(
                        ColumnDef::new(User::EmailVerified)
                            .boolean()
                            .not_null()
                            .default(false),
                    )
                    .col(ColumnDef::new(User::Image).text().null())
                    .col(timestamp(User::CreatedAt))
                    .col(timestamp(User::UpdatedAt))
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(Session::Table)
                    .col(text(Session::Id).primary_key())
                    .col(
                        ColumnDef::new(Session::ExpiresAt)
                            .timestamp_with_time_zone()
                            .not_null(),
                    )
                    .col(text(Session::Token).unique_key())
                    .col(timestamp(Session::CreatedAt))
                    .col(timestamp(Session::UpdatedAt))
                    .col(ColumnDef::new(Session::IpAddress).text().null())
                    .col(ColumnDef::new(Session::UserAgent).text().null())
                    .col(text(Session::UserId))
                    .foreign_key(
                        ForeignKey::create()
                            .from(Session::Table, Session::UserId)
                            .to(User::Table, User::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("session_userId_idx")
                    .table(Session::Table)
                    .col(Session::UserId)
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(Account::Table)
                    .col(text(Account::Id).primary_key())
                    .col(text(Account::AccountId))
                    .col(text(Account::ProviderId))
                    .col(text(Account::UserId))
                    .col(ColumnDef::new(Account::AccessToken).text().null())
                    .col(ColumnDef::new(Account::RefreshToken).text().null())
                    .col(ColumnDef::new(Account::IdToken).text().null())
                    .col(nullable_timestamp(Account::AccessTokenExpiresAt))
                    .col(nullable_timestamp(Account::RefreshTokenExpiresAt))
                    .col(ColumnDef::new(Account::Scope).text().null())
                    .col(ColumnDef::new(Account::Password).text().null())
                    .col(timestamp(Account::CreatedAt))
                    .col(timestamp(Account::UpdatedAt))
                    .foreign_key(
                        ForeignKey::create()
                            .from(Account::Table, Account::UserId)
                            .to(User::Table, User::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("account_userId_idx")
                    .table(Account::Table)
                    .col(Account::UserId)
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(Verification::Table)
                    .col(text(Verification::Id).primary_key())
                    .col(text(Verification::Identifier))
                    .col(text(Verification::Value))
                    .col(
                        ColumnDef::new(Verification::ExpiresAt)
                            .timestamp_with_time_zone()
                            .not_null(),
                    )
                    .col(timestamp(Verification::CreatedAt))
                    .col(timestamp(Verification::UpdatedAt))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("verification_identifier_idx")
                    .table(Verification::Table)
                    .col(Verification::Identifier)
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(RefreshToken::Table)
                    .col(text(RefreshToken::Digest).primary_key())
                    .col(text(RefreshToken::SessionId))
                    .col(timestamp(RefreshToken::CreatedAt))
                    .col(nullable_timestamp(RefreshToken::RotatedAt))
                    .foreign_key(
                        ForeignKey::create()
                            .from(RefreshToken::Table, RefreshToken::SessionId)
                            .to(Session::Table, Session::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("refresh_token_sessionId_idx")
                    .table(RefreshToken::Table)
                    .col(RefreshToken::SessionId)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for table in [
            RefreshToken::Table.into_iden(),
            Verification::Table.into_iden(),
            Account::Table.into_iden(),
            Session::Table.into_iden(),
            User::Table.into_iden(),
        ] {
            manager
                .drop_table(Table::drop().table(table).to_owned())
                .await?;
        }
        Ok(())
    }
}
