//! The `lectern` command: a thin shell around the library.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use lectern::config::Settings;

#[derive(Parser)]
#[command(
    name = "lectern",
    version,
    about = "GraphQL backend for a chatbot beside a book"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Serve GraphQL over HTTP (the default).
    Serve,
    /// Apply pending database migrations and exit.
    Migrate,
    /// Print the GraphQL schema (SDL) and exit.
    Schema,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Some(Command::Schema) = cli.command {
        print!("{}", lectern::graphql::sdl());
        return ExitCode::SUCCESS;
    }
    let settings = match Settings::from_env() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    lectern::telemetry::init(settings.log_format);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let outcome = runtime.block_on(async {
        match cli.command {
            None | Some(Command::Serve) => serve(settings).await,
            Some(Command::Migrate) => migrate(settings).await,
            Some(Command::Schema) => unreachable!("handled before configuration is read"),
        }
    });
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(settings: Settings) -> anyhow::Result<()> {
    let app = lectern::Application::build(settings).await?;
    app.run_until(lectern::http::shutdown_signal()).await?;
    Ok(())
}

async fn migrate(settings: Settings) -> anyhow::Result<()> {
    let app_settings = settings.clone();
    if app_settings.database.backend() == lectern::config::DatabaseKind::Sqlite {
        std::fs::create_dir_all(&app_settings.data_dir)?;
    }
    let db = lectern::db::Database::connect_lazy(&settings.database).await?;
    lectern::db::run_migrations(db.connection())
        .await
        .map_err(|e| anyhow::anyhow!("migrations could not be applied: {e}"))?;
    tracing::info!("database is up to date");
    Ok(())
}
