//! The turn a question message belongs to, unique: a turn answered while the database was
//! away is replayed from the journal when it returns, and this is what makes the replay
//! write it exactly once, however often it is attempted.

use sea_orm_migration::prelude::*;

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261123_000003_turn_ids"
    }
}

#[derive(Iden)]
enum Message {
    Table,
    #[iden = "turnId"]
    TurnId,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(Message::Table)
                    .add_column(ColumnDef::new(Message::TurnId).text().null())
                    .to_owned(),
            )
            .await?;
        // Unique, and NULL for answers and for turns stored before this migration: both
        // databases allow any number of NULLs under a unique index.
        manager
            .create_index(
                Index::create()
                    .name("message_turn_idx")
                    .table(Message::Table)
                    .col(Message::TurnId)
                    .unique()
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_index(
                Index::drop()
                    .name("message_turn_idx")
                    .table(Message::Table)
                    .to_owned(),
            )
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(Message::Table)
                    .drop_column(Message::TurnId)
                    .to_owned(),
            )
            .await
    }
}
