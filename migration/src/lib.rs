//! Database migrations, one file per migration, applied in the order listed here.
//! They run automatically when the server first reaches the database, or with
//! `lectern migrate`.

pub use sea_orm_migration::prelude::*;

mod m20261122_000001_accounts;
mod m20261122_000002_history;
mod m20261123_000003_turn_ids;
mod m20261202_000004_unanswered;
mod m20261202_000005_replicas;
mod m20261202_000006_insights;

pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(m20261122_000001_accounts::Migration),
            Box::new(m20261122_000002_history::Migration),
            Box::new(m20261123_000003_turn_ids::Migration),
            Box::new(m20261202_000004_unanswered::Migration),
            Box::new(m20261202_000005_replicas::Migration),
            Box::new(m20261202_000006_insights::Migration),
        ]
    }
}
