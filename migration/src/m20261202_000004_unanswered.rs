//! Answers the book did not cover: an answer whose best passage scored under the
//! relevance threshold is marked, so that authors can see what readers ask that the book
//! does not answer.

use sea_orm_migration::prelude::*;

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261202_000004_unanswered"
    }
}

#[derive(Iden)]
enum Message {
    Table,
    Unanswered,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(Message::Table)
                    .add_column(
                        ColumnDef::new(Message::Unanswered)
                            .boolean()
                            .not_null()
                            .default(false),
                    )
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(Message::Table)
                    .drop_column(Message::Unanswered)
                    .to_owned(),
            )
            .await
    }
}
