//! Conversations and their messages.
//!
//! Indexes: `(userId, updatedAt, id)` serves "a reader's newest conversations" as a keyset
//! scan (and finding the least recently active to prune); `(conversationId, id)` serves
//! "a conversation's messages in order", message ids being time-ordered UUIDv7.

use sea_orm_migration::prelude::*;

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261122_000002_history"
    }
}

#[derive(Iden)]
enum User {
    Table,
    Id,
}

#[derive(Iden)]
enum Conversation {
    Table,
    Id,
    #[iden = "userId"]
    UserId,
    Title,
    #[iden = "createdAt"]
    CreatedAt,
    #[iden = "updatedAt"]
    UpdatedAt,
}

#[derive(Iden)]
enum Message {
    Table,
    Id,
    #[iden = "conversationId"]
    ConversationId,
    Role,
    Content,
    Sources,
    #[iden = "createdAt"]
    CreatedAt,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Conversation::Table)
                    .col(
                        ColumnDef::new(Conversation::Id)
                            .text()
                            .not_null()
                            .primary_key(),
                    )
                    .col(ColumnDef::new(Conversation::UserId).text().not_null())
                    .col(ColumnDef::new(Conversation::Title).text().not_null())
                    .col(
                        ColumnDef::new(Conversation::CreatedAt)
                            .timestamp_with_time_zone()
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(Conversation::UpdatedAt)
                            .timestamp_with_time_zone()
                            .not_null(),
                    )
                    .foreign_key(
                        ForeignKey::create()
                            .from(Conversation::Table, Conversation::UserId)
                            .to(User::Table, User::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("conversation_user_activity_idx")
                    .table(Conversation::Table)
                    .col(Conversation::UserId)
                    .col(Conversation::UpdatedAt)
                    .col(Conversation::Id)
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(Message::Table)
                    .col(ColumnDef::new(Message::Id).text().not_null().primary_key())
                    .col(ColumnDef::new(Message::ConversationId).text().not_null())
                    .col(ColumnDef::new(Message::Role).text().not_null())
                    .col(ColumnDef::new(Message::Content).text().not_null())
                    .col(ColumnDef::new(Message::Sources).json_binary().not_null())
                    .col(
                        ColumnDef::new(Message::CreatedAt)
                            .timestamp_with_time_zone()
                            .not_null(),
                    )
                    .foreign_key(
                        ForeignKey::create()
                            .from(Message::Table, Message::ConversationId)
                            .to(Conversation::Table, Conversation::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("message_conversation_order_idx")
                    .table(Message::Table)
                    .col(Message::ConversationId)
                    .col(Message::Id)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(Message::Table).to_owned())
            .await?;
        manager
            .drop_table(Table::drop().table(Conversation::Table).to_owned())
            .await
    }
}
