use sea_orm::entity::prelude::*;

/// One message of a conversation. Ids are UUIDv7, so ordering by id is ordering by
/// creation.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "message")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: String,
    #[sea_orm(column_name = "conversationId")]
    pub conversation_id: String,
    /// `user` or `assistant`.
    pub role: String,
    pub content: String,
    /// The passages the answer cites, as a JSON array of `{title, heading, path, url, snippet, score}`.
    pub sources: Json,
    #[sea_orm(column_name = "createdAt")]
    pub created_at: DateTimeUtc,
    /// On a question: the turn it began, unique, so a replayed turn is stored once.
    #[sea_orm(column_name = "turnId")]
    pub turn_id: Option<String>,
    /// On an answer: the book did not seem to cover the question (its best passage
    /// scored under `RETRIEVAL_MIN_SCORE`).
    pub unanswered: bool,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
