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
    /// Index a documentation site for retrieval: a folder as the generator published
    /// it (or its Markdown, MDX, HTML and text sources), a sitemap.xml URL, or the URL of
    /// a running site to crawl. Idempotent: unchanged pages are skipped, changed ones
    /// replaced, pages that disappeared removed.
    Ingest {
        /// Folders or files, `https://…/sitemap.xml`, or `https://…/` to crawl.
        #[arg(required = true)]
        locations: Vec<String>,
    },
    /// Grant or revoke the author role: authors (admins) read the `insights` report.
    Admin {
        #[command(subcommand)]
        action: AdminAction,
    },
    /// Print the insights report: questions per day, ratings, unanswered questions,
    /// thumbs-down answers, pages cited most and never, frequent questions.
    Insights {
        /// Start of the window (inclusive): `YYYY-MM-DD` (UTC) or an RFC 3339 time;
        /// default 30 days before `--to`.
        #[arg(long)]
        from: Option<String>,
        /// End of the window (exclusive): `YYYY-MM-DD` or RFC 3339; default now.
        #[arg(long)]
        to: Option<String>,
        /// CSV instead of aligned text: each section a `# name` line, a header and rows.
        #[arg(long)]
        csv: bool,
        /// Rows per list section.
        #[arg(long, default_value_t = 20)]
        limit: u64,
    },
}

#[derive(Subcommand)]
enum AdminAction {
    /// Make the reader with this email an author.
    Grant { email: String },
    /// Take the author role back (`ADMIN_EMAILS` still applies).
    Revoke { email: String },
}

/// See Cargo.toml: per-thread heaps instead of glibc's contended arenas. The
/// `system-allocator` feature leaves it out, for heap profilers that watch `malloc`
/// (`heaptrack`, docs/benchmarks.md §9).
#[cfg(not(feature = "system-allocator"))]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
            Some(Command::Ingest { locations }) => ingest(settings, locations).await,
            Some(Command::Admin { action }) => admin(settings, action).await,
            Some(Command::Insights {
                from,
                to,
                csv,
                limit,
            }) => insights(settings, from, to, csv, limit).await,
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

async fn ingest(settings: Settings, locations: Vec<String>) -> anyhow::Result<()> {
    let locations = locations
        .iter()
        .map(|l| lectern::retrieval::site::Location::parse(l))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let retriever = lectern::open_retriever(&settings).await?;
    let started = std::time::Instant::now();
    let summary = retriever.ingest(&locations, &ProgressBar::new()).await?;
    println!(
        "indexed {} pages ({} changed, {} unchanged, {} removed, {} skipped), {} chunks in {:.1} s",
        summary.pages,
        summary.indexed,
        summary.unchanged,
        summary.removed,
        summary.skipped.len(),
        summary.chunks,
        started.elapsed().as_secs_f64()
    );
    for skipped in &summary.skipped {
        eprintln!("skipped {skipped}");
    }
    if summary.pages == 0 {
        anyhow::bail!("no Markdown, MDX, HTML or text pages were found at the given locations");
    }
    println!("{}", retriever.guardrail().await?);
    Ok(())
}

/// Ingest progress on the terminal (hidden when stderr is not one).
struct ProgressBar(indicatif::ProgressBar);

impl ProgressBar {
    fn new() -> Self {
        let bar = indicatif::ProgressBar::new(0);
        bar.set_style(
            indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} pages {wide_msg}")
                .expect("a valid progress template"),
        );
        Self(bar)
    }
}

impl lectern::retrieval::Progress for ProgressBar {
    fn found(&self, pages: usize) {
        self.0.set_length(pages as u64);
    }

    fn page_done(&self, path: &str) {
        self.0.set_message(path.to_owned());
        self.0.inc(1);
    }

    fn finish(&self) {
        self.0.finish_and_clear();
    }
}

/// The database, reached now (not lazily), for a command that needs it.
async fn reach_database(settings: &Settings) -> anyhow::Result<lectern::db::Database> {
    if settings.database.backend() == lectern::config::DatabaseKind::Sqlite {
        std::fs::create_dir_all(&settings.data_dir)?;
    }
    let db = lectern::db::Database::connect_lazy(&settings.database).await?;
    db.connection().ping().await.map_err(|e| {
        anyhow::anyhow!("cannot reach the database at DATABASE_URL ({e}); nothing was changed")
    })?;
    Ok(db)
}

/// [`reach_database`], with pending migrations applied.
async fn database_now(settings: &Settings) -> anyhow::Result<lectern::db::Database> {
    let db = reach_database(settings).await?;
    db.migrate().await?;
    Ok(db)
}

async fn admin(settings: Settings, action: AdminAction) -> anyhow::Result<()> {
    let db = database_now(&settings).await?;
    let (raw, grant) = match &action {
        AdminAction::Grant { email } => (email, true),
        AdminAction::Revoke { email } => (email, false),
    };
    let email = lectern::auth::domain::Email::parse(raw).map_err(|why| anyhow::anyhow!(why))?;
    if !lectern::insights::set_admin(db.connection(), email.as_str(), grant).await? {
        anyhow::bail!(
            "no reader has the email {}; they must register first",
            email.as_str()
        );
    }
    println!(
        "{} {} the author role",
        email.as_str(),
        if grant { "now has" } else { "no longer has" }
    );
    Ok(())
}

/// `YYYY-MM-DD` (midnight UTC) or RFC 3339.
fn parse_time(flag: &str, value: &str) -> anyhow::Result<chrono::DateTime<chrono::Utc>> {
    if let Ok(day) = chrono::NaiveDate::parse_from_str(value, "%Y-%m-%d") {
        return Ok(day.and_hms_opt(0, 0, 0).expect("midnight exists").and_utc());
    }
    chrono::DateTime::parse_from_rfc3339(value)
        .map(|t| t.with_timezone(&chrono::Utc))
        .map_err(|_| {
            anyhow::anyhow!("{flag} must be YYYY-MM-DD or an RFC 3339 time, not {value:?}")
        })
}

async fn insights(
    settings: Settings,
    from: Option<String>,
    to: Option<String>,
    csv: bool,
    limit: u64,
) -> anyhow::Result<()> {
    let from = from.map(|f| parse_time("--from", &f)).transpose()?;
    let to = to.map(|t| parse_time("--to", &t)).transpose()?;
    let window =
        lectern::graphql::insights::window(from, to).map_err(|why| anyhow::anyhow!(why))?;
    if !(1..=10_000).contains(&limit) {
        anyhow::bail!("--limit must be from 1 to 10000");
    }
    let db = database_now(&settings).await?;
    let pages = match lectern::open_retriever(&settings).await {
        Ok(retriever) => retriever.pages().await.ok(),
        Err(e) => {
            eprintln!("note: pages never cited are left out: {e:#}");
            None
        }
    };
    let report =
        lectern::insights::report(db.connection(), window, pages.as_ref(), limit, csv).await?;
    print!("{report}");
    Ok(())
}

async fn migrate(settings: Settings) -> anyhow::Result<()> {
    // Reach the database first, so "it is not there" and "it went away while migrating"
    // get different messages. Each migration runs in its own transaction on PostgreSQL,
    // so an interrupted run leaves the schema at the last completed migration.
    let db = reach_database(&settings).await?;
    db.migrate().await.map_err(|e| {
        anyhow::anyhow!(
            "migrations stopped ({e}); the schema is at the last completed migration, \
                 run `lectern migrate` again once the database is reachable"
        )
    })?;
    tracing::info!("database is up to date");
    Ok(())
}
