//! Better Auth's core tables (`user`, `session`, `account`, `verification`) with its column
//! names, so a Better Auth server pointed at the same database sees the same users, plus
//! `refresh_token`, Lectern's record of the refresh tokens it issued (digests only).
//!
//! Most teams add Lectern beside a Better Auth application whose tables already exist, so
//! only what is missing is created (tables and indexes, `IF NOT EXISTS`), and the tables
//! that are there are checked first: a column Lectern reads or writes that is missing or
//! of another type, or a required column Lectern would not fill (a plugin's), stops the
//! migration with one message naming each.

use sea_orm_migration::prelude::*;
use sea_orm_migration::sea_orm::{DatabaseBackend, Statement};

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

/// The kinds of column Lectern relies on.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Text,
    Timestamp,
    Boolean,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Text => "text",
            Kind::Timestamp => "a timestamp",
            Kind::Boolean => "boolean",
        }
    }

    /// Whether a column of `data_type` (PostgreSQL's `information_schema` name) holds it.
    fn accepts(self, data_type: &str) -> bool {
        match self {
            Kind::Text => matches!(data_type, "text" | "character varying"),
            Kind::Timestamp => data_type.starts_with("timestamp"),
            Kind::Boolean => data_type == "boolean",
        }
    }
}

/// The columns of the Better Auth tables Lectern writes to, that it reads or writes. Other
/// columns may be there (plugins add some) as long as Lectern's inserts can leave them
/// out. (`verification` is Better Auth's alone.)
const NEEDED: [(&str, &[(&str, Kind)]); 3] = [
    (
        "user",
        &[
            ("id", Kind::Text),
            ("name", Kind::Text),
            ("email", Kind::Text),
            ("emailVerified", Kind::Boolean),
            ("image", Kind::Text),
            ("createdAt", Kind::Timestamp),
            ("updatedAt", Kind::Timestamp),
        ],
    ),
    (
        "session",
        &[
            ("id", Kind::Text),
            ("expiresAt", Kind::Timestamp),
            ("token", Kind::Text),
            ("createdAt", Kind::Timestamp),
            ("updatedAt", Kind::Timestamp),
            ("ipAddress", Kind::Text),
            ("userAgent", Kind::Text),
            ("userId", Kind::Text),
        ],
    ),
    (
        "account",
        &[
            ("id", Kind::Text),
            ("accountId", Kind::Text),
            ("providerId", Kind::Text),
            ("userId", Kind::Text),
            ("password", Kind::Text),
            ("createdAt", Kind::Timestamp),
            ("updatedAt", Kind::Timestamp),
        ],
    ),
];

/// One column as the database describes it.
struct Column {
    table: String,
    name: String,
    data_type: String,
    /// NOT NULL without a default: an insert must give it a value.
    required: bool,
}

/// The columns of the Better Auth tables that already exist.
async fn existing_columns(manager: &SchemaManager<'_>) -> Result<Vec<Column>, DbErr> {
    let conn = manager.get_connection();
    let backend = manager.get_database_backend();
    let mut columns = Vec::new();
    if backend == DatabaseBackend::Postgres {
        let rows = conn
            .query_all_raw(Statement::from_string(
                backend,
                "SELECT table_name::text AS t, column_name::text AS c, data_type::text AS d, \
                 (is_nullable = 'NO' AND column_default IS NULL AND is_identity = 'NO') AS r \
                 FROM information_schema.columns WHERE table_schema = current_schema() \
                 AND table_name IN ('user', 'session', 'account')",
            ))
            .await?;
        for row in rows {
            columns.push(Column {
                table: row.try_get("", "t")?,
                name: row.try_get("", "c")?,
                data_type: row.try_get("", "d")?,
                required: row.try_get("", "r")?,
            });
        }
    } else {
        for (table, _) in NEEDED {
            let rows = conn
                .query_all_raw(Statement::from_string(
                    backend,
                    format!(
                        "SELECT name AS c, type AS d, (\"notnull\" = 1 AND dflt_value IS NULL AND pk = 0) AS r \
                         FROM pragma_table_info('{table}')"
                    ),
                ))
                .await?;
            for row in rows {
                columns.push(Column {
                    table: table.to_owned(),
                    name: row.try_get("", "c")?,
                    data_type: row.try_get("", "d")?,
                    required: row.try_get("", "r")?,
                });
            }
        }
    }
    Ok(columns)
}

/// Refuses, with one message naming every problem, Better Auth tables that Lectern cannot
/// share. Types are checked on PostgreSQL, where Better Auth's are known; SQLite declares
/// types loosely.
async fn check_existing_tables(manager: &SchemaManager<'_>) -> Result<(), DbErr> {
    let postgres = manager.get_database_backend() == DatabaseBackend::Postgres;
    let columns = existing_columns(manager).await?;
    let mut problems = Vec::new();
    for (table, needed) in NEEDED {
        let present: Vec<&Column> = columns.iter().filter(|c| c.table == table).collect();
        if present.is_empty() {
            continue;
        }
        for (name, kind) in needed.iter() {
            match present.iter().find(|c| c.name == *name) {
                None => problems.push(format!("{table}.{name} is missing")),
                Some(column) if postgres && !kind.accepts(&column.data_type) => {
                    problems.push(format!(
                        "{table}.{name} is {}, Lectern needs {}",
                        column.data_type,
                        kind.name()
                    ))
                }
                Some(_) => {}
            }
        }
        for column in present {
            if column.required && !needed.iter().any(|(name, _)| *name == column.name) {
                problems.push(format!(
                    "{table}.{} is required (NOT NULL, no default) but Lectern does not write it",
                    column.name
                ));
            }
        }
    }
    if problems.is_empty() {
        return Ok(());
    }
    Err(DbErr::Migration(format!(
        "the existing Better Auth tables cannot be shared with Lectern: {}; give those columns the type or a default Better Auth's core schema has",
        problems.join("; ")
    )))
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        check_existing_tables(manager).await?;
        manager
            .create_table(
                Table::create()
                    .if_not_exists()
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
                    .if_not_exists()
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
                    .if_not_exists()
                    .name("session_userId_idx")
                    .table(Session::Table)
                    .col(Session::UserId)
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .if_not_exists()
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
                    .if_not_exists()
                    .name("account_userId_idx")
                    .table(Account::Table)
                    .col(Account::UserId)
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .if_not_exists()
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
                    .if_not_exists()
                    .name("verification_identifier_idx")
                    .table(Verification::Table)
                    .col(Verification::Identifier)
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .if_not_exists()
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
                    .if_not_exists()
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
