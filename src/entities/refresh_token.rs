use sea_orm::entity::prelude::*;

/// One refresh token Lectern issued, known only by its SHA-256 digest, so a copy of the
/// database cannot be turned into working tokens.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "refresh_token")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub digest: String,
    #[sea_orm(column_name = "sessionId")]
    pub session_id: String,
    #[sea_orm(column_name = "createdAt")]
    pub created_at: DateTimeUtc,
    /// When it was exchanged for a new pair; presenting it again revokes the session.
    #[sea_orm(column_name = "rotatedAt")]
    pub rotated_at: Option<DateTimeUtc>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
