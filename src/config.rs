//! Typed settings, read once from the environment (and `.env` when present) and validated
//! before anything starts. A bad value becomes one [`ConfigError`] line that names the
//! variable and what it accepts; secrets never appear in `Debug` output or in those lines.

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;

/// Everything the server can be told from outside. See `.env.example` for the defaults.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Where the SQLite default and the embedded vector store keep their files.
    pub data_dir: PathBuf,
    /// The database to use; the default is a SQLite file inside `data_dir`.
    pub database: DatabaseSettings,
    /// The address the HTTP server listens on; port 0 picks a free one (tests do).
    pub bind_addr: SocketAddr,
    /// A second address serving only `/healthz`, `/readyz` and `/metrics`, on a thread
    /// of its own, so probes answer while the API is saturated; `None`: no such listener.
    pub health_addr: Option<SocketAddr>,
    /// Production turns off developer conveniences and insists on real secrets.
    pub app_env: AppEnv,
    /// Signs access tokens; `None` in development means "generate one per process".
    pub jwt_secret: Option<Secret>,
    /// Lets sessions issued by a Better Auth server sharing the database sign in here too.
    pub better_auth_secret: Option<Secret>,
    /// Better Auth's `advanced.cookiePrefix`: its session cookie is `{prefix}.session_token`.
    pub better_auth_cookie_prefix: String,
    /// Refuse sign-ins of accounts whose email is not verified, as Better Auth's
    /// `emailAndPassword.requireEmailVerification` does.
    pub require_email_verification: bool,
    /// The format new password hashes are written in: scrypt (Better Auth's) by default
    /// when a Better Auth server shares the database, argon2id otherwise.
    pub password_hash: crate::auth::password::PasswordFormat,
    /// Browser origins allowed to call the API; empty means any origin in development and
    /// same-origin only in production.
    pub cors_origins: Vec<String>,
    /// Sign-in and registration attempts allowed per client address per 10 s (0: off).
    pub auth_rate_limit_per_ip: u32,
    /// Sign-in and registration attempts allowed per email per 10 s (0: off).
    pub auth_rate_limit_per_email: u32,
    /// Schema introspection and GraphiQL: on in development, off in production unless set.
    pub introspection: bool,
    /// How many of the most recently active conversations each reader keeps.
    pub history_limit: u32,
    /// Remote Qdrant server; `None` selects the embedded engine under `data_dir`.
    pub qdrant: Option<RemoteService>,
    /// Name of the collection that holds the corpus, embedded or remote.
    pub qdrant_collection: String,
    /// OpenAI-compatible embeddings endpoint and its vector size; `None` means sparse
    /// BM25 retrieval only.
    pub embedding: Option<(ModelService, usize)>,
    /// Indexed on first start when the vector store is empty (the bundled `docs/`).
    pub corpus_dir: PathBuf,
    /// How passages are found and cited.
    pub retrieval: RetrievalSettings,
    /// OpenAI-compatible chat endpoint; `None` means extractive answers.
    pub llm: Option<ModelService>,
    /// Human-readable logs for a terminal or one JSON object per line for a log shipper.
    pub log_format: LogFormat,
    /// What one client may cost: connections, timeouts, quotas (README, "Security").
    pub limits: Limits,
    /// What authors learn from readers (README, "Insights").
    pub insights: InsightSettings,
}

/// Insights for the book's authors: whether turns are recorded, for how long, and who the
/// authors are.
#[derive(Debug, Clone)]
pub struct InsightSettings {
    /// `INSIGHTS`: record every turn (without identity) for the insights report.
    pub record: bool,
    /// `INSIGHTS_RETENTION_DAYS`: recorded turns and ratings older than this are deleted.
    pub retention: std::time::Duration,
    /// `ADMIN_EMAILS`: readers with these emails (normalised like sign-in emails) are
    /// authors, besides those granted with `lectern admin grant`.
    pub admin_emails: Vec<String>,
}

/// Bounds that keep one client (or a flood of them) from costing the server more than its
/// share. Every one is a setting; the defaults are in `.env.example` and the README.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Reverse proxies whose `Forwarded` / `X-Forwarded-For` headers name the client;
    /// from anyone else those headers are ignored.
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// Longest wait for a request's headers, which is also how long an idle keep-alive
    /// connection is kept (hyper starts the clock as soon as it waits for a request).
    pub header_timeout: std::time::Duration,
    /// Longest a request body may take to arrive.
    pub body_timeout: std::time::Duration,
    /// Open connections at most; further ones wait in the listen backlog.
    pub max_connections: usize,
    /// WebSocket connections per client address at most.
    pub ws_connections_per_ip: u32,
    /// GraphQL requests of one client address read and checked at once (0: off); the
    /// others wait, unread.
    pub admission_per_ip: u32,
    /// Running subscriptions per WebSocket connection at most.
    pub ws_subscriptions: usize,
    /// Longest a WebSocket may stay open before its `connection_init`.
    pub ws_init_timeout: std::time::Duration,
    /// Chat turns per minute per client address for anonymous readers (0: off).
    pub chat_per_ip: u32,
    /// Chat turns per minute per signed-in reader (0: off).
    pub chat_per_reader: u32,
    /// Model calls running at once, server-wide; turns past it are refused, not queued.
    pub model_concurrency: u32,
    /// Sign-ins and registrations waiting for or running a password hash at most; past
    /// it they are refused at once instead of queueing for seconds.
    pub hash_queue: u32,
    /// How long an exchanged refresh token may be presented again (a concurrent refresh)
    /// before its reuse revokes the session.
    pub refresh_reuse_grace: std::time::Duration,
    /// How long shutdown waits for chat turns in flight to be answered and stored.
    pub shutdown_timeout: std::time::Duration,
    /// How long a finished turn stays resumable by its id.
    pub turn_retention: std::time::Duration,
    /// Turns kept in memory for resuming at most.
    pub turn_registry_max: usize,
}

/// How passages are found, cited and embedded.
#[derive(Debug, Clone, Default)]
pub struct RetrievalSettings {
    /// Where the indexed site is published (ends with `/`): a source's `url` is this plus
    /// the page's path relative to the ingest root. Pages fetched from the web carry
    /// their own URL.
    pub site_url: Option<String>,
    /// Passages of one page among an answer's sources at most, so that five relevant
    /// pages are cited rather than one page five times.
    pub sources_per_page: usize,
    /// `RETRIEVAL_MIN_SCORE`: the relevance (the share of a question's weight the best
    /// passage holds, 0 to 1) under which a question is taken as not covered by the book
    /// (0: never). Unset: calibrated per index (`retrieval::guardrail`).
    pub min_relevance: Option<f32>,
    /// `RETRIEVAL_SYNONYMS`: a file of synonym groups added to the built-in table, and
    /// its text (checked by the retriever, which names the file and the line).
    pub synonyms: Option<(PathBuf, String)>,
    /// What tells an asymmetric embedding model a question from a passage.
    pub embedding_sides: EmbeddingSides,
}

/// Asymmetric embedding models want questions and passages marked apart: e5 by
/// `query: ` / `passage: ` prefixes, Cohere, Voyage and others by an `input_type` field
/// of the request.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EmbeddingSides {
    pub query_prefix: String,
    pub document_prefix: String,
    /// `input_type` for questions and for passages; none is sent when unset.
    pub input_type: Option<(String, String)>,
}

/// How to reach the database and how much of it to use.
#[derive(Clone)]
pub struct DatabaseSettings {
    /// A `postgres://`, `postgresql://` or `sqlite:` URL. May carry a password, so it is
    /// redacted in `Debug`.
    pub url: Secret,
    /// Upper bound of pooled connections; requests beyond it wait up to the acquire timeout.
    pub max_connections: u32,
    /// Upper bound of one request's database work (waiting for a connection included).
    /// Past it the request answers `DATABASE_UNAVAILABLE` instead of hanging on a slow
    /// database.
    pub timeout: std::time::Duration,
}

impl DatabaseSettings {
    pub fn backend(&self) -> DatabaseKind {
        if self.url.expose().starts_with("sqlite:") {
            DatabaseKind::Sqlite
        } else {
            DatabaseKind::Postgres
        }
    }
}

impl fmt::Debug for DatabaseSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DatabaseSettings")
            .field("backend", &self.backend())
            .field("max_connections", &self.max_connections)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DatabaseKind {
    Sqlite,
    Postgres,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AppEnv {
    Development,
    Production,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Pretty,
    Json,
}

/// A service reached over HTTP with an optional API key (Qdrant server or Cloud).
#[derive(Debug, Clone)]
pub struct RemoteService {
    pub url: String,
    pub api_key: Option<Secret>,
    /// Longest any one call may take, connecting included (`QDRANT_TIMEOUT_MS`).
    pub timeout: std::time::Duration,
}

/// An OpenAI-compatible model endpoint.
#[derive(Debug, Clone)]
pub struct ModelService {
    pub base_url: String,
    pub api_key: Option<Secret>,
    pub model: String,
    /// Longest wait for the first byte of an answer, and between two streamed pieces.
    pub timeout: std::time::Duration,
}

/// A value that must never be printed: `Debug` shows only that it is there.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The only way to the value; grep for it to audit where secrets go.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret([redacted])")
    }
}

/// A setting that cannot be used. Its `Display` is the one line start-up prints.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("configuration error: {variable} {problem}; accepted: {accepts}")]
pub struct ConfigError {
    pub variable: &'static str,
    pub problem: String,
    pub accepts: &'static str,
}

/// The shortest JWT secret accepted in production: 256 bits for HS256.
pub const MIN_SECRET_LEN: usize = 32;

impl Settings {
    /// Reads `.env` (when present) into the process environment, then the settings.
    pub fn from_env() -> Result<Self, ConfigError> {
        // A missing .env is the normal case; a malformed one is worth stopping for.
        match dotenvy::dotenv() {
            Ok(_) => {}
            Err(e) if e.not_found() => {}
            Err(e) => {
                return Err(ConfigError {
                    variable: ".env",
                    problem: format!("could not be read ({e})"),
                    accepts: "KEY=value lines",
                });
            }
        }
        Self::from_lookup(|key| std::env::var(key).ok())
    }

    /// Builds settings from any key lookup, so tests can pass a map instead of the
    /// process environment.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let get = |key: &str| {
            lookup(key)
                .map(|v| v.trim().to_owned())
                .filter(|v| !v.is_empty())
        };

        let app_env = match get("APP_ENV").as_deref() {
            None | Some("development") => AppEnv::Development,
            Some("production") => AppEnv::Production,
            Some(other) => return Err(invalid("APP_ENV", other, "development | production")),
        };
        let data_dir = PathBuf::from(get("DATA_DIR").unwrap_or_else(|| "./data".into()));
        let database = DatabaseSettings {
            url: Secret::new(database_url(get("DATABASE_URL"), &data_dir)?),
            max_connections: parse_number(
                "DATABASE_MAX_CONNECTIONS",
                get("DATABASE_MAX_CONNECTIONS"),
                10,
                1..=1000,
                "an integer from 1 to 1000",
            )?,
            timeout: std::time::Duration::from_millis(u64::from(parse_number(
                "DATABASE_TIMEOUT_MS",
                get("DATABASE_TIMEOUT_MS"),
                5_000,
                50..=120_000,
                "milliseconds from 50 to 120000",
            )?)),
        };
        let bind_addr = match get("BIND_ADDR") {
            None => SocketAddr::from(([127, 0, 0, 1], 8000)),
            Some(v) => v.parse().map_err(|_| {
                invalid(
                    "BIND_ADDR",
                    &v,
                    "an IP address and port such as 127.0.0.1:8000 or 0.0.0.0:8080",
                )
            })?,
        };
        let health_addr = get("HEALTH_BIND_ADDR")
            .map(|v| {
                v.parse().map_err(|_| {
                    invalid(
                        "HEALTH_BIND_ADDR",
                        &v,
                        "an IP address and port such as 0.0.0.0:9090, different from BIND_ADDR",
                    )
                })
            })
            .transpose()?;
        let jwt_secret = get("JWT_SECRET").map(Secret::new);
        if app_env == AppEnv::Production {
            match &jwt_secret {
                None => {
                    return Err(ConfigError {
                        variable: "JWT_SECRET",
                        problem: "is required when APP_ENV=production".into(),
                        accepts: "a random string of at least 32 characters",
                    });
                }
                Some(s) if s.expose().len() < MIN_SECRET_LEN => {
                    return Err(ConfigError {
                        variable: "JWT_SECRET",
                        problem: format!("is too short ({} characters)", s.expose().len()),
                        accepts: "a random string of at least 32 characters",
                    });
                }
                Some(_) => {}
            }
        }
        let cors_origins = get("CORS_ORIGINS")
            .map(|v| parse_origins(&v))
            .transpose()?
            .unwrap_or_default();
        let history_limit = parse_number(
            "HISTORY_LIMIT",
            get("HISTORY_LIMIT"),
            50,
            1..=1000,
            "an integer from 1 to 1000",
        )?;
        let auth_rate_limit_per_ip = parse_number(
            "AUTH_RATE_LIMIT_PER_IP",
            get("AUTH_RATE_LIMIT_PER_IP"),
            30,
            0..=1_000_000,
            "a count of attempts per 10 seconds from 0 (off) to 1000000",
        )?;
        let auth_rate_limit_per_email = parse_number(
            "AUTH_RATE_LIMIT_PER_EMAIL",
            get("AUTH_RATE_LIMIT_PER_EMAIL"),
            3,
            0..=1_000_000,
            "a count of attempts per 10 seconds from 0 (off) to 1000000",
        )?;
        let introspection = match get("GRAPHQL_INTROSPECTION").as_deref() {
            None => app_env == AppEnv::Development,
            Some("true") => true,
            Some("false") => false,
            Some(other) => return Err(invalid("GRAPHQL_INTROSPECTION", other, "true | false")),
        };
        let qdrant = get("QDRANT_URL")
            .map(|url| -> Result<_, ConfigError> {
                Ok(RemoteService {
                    url: http_url("QDRANT_URL", url)?,
                    api_key: get("QDRANT_API_KEY").map(Secret::new),
                    timeout: std::time::Duration::from_millis(u64::from(parse_number(
                        "QDRANT_TIMEOUT_MS",
                        get("QDRANT_TIMEOUT_MS"),
                        2_000,
                        50..=120_000,
                        "milliseconds from 50 to 120000",
                    )?)),
                })
            })
            .transpose()?;
        let qdrant_collection = get("QDRANT_COLLECTION").unwrap_or_else(|| "lectern".into());
        if !qdrant_collection
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        {
            return Err(invalid(
                "QDRANT_COLLECTION",
                &qdrant_collection,
                "letters, digits, '_' and '-'",
            ));
        }
        let embedding = match model_service(
            &get,
            ["EMBEDDING_BASE_URL", "EMBEDDING_API_KEY", "EMBEDDING_MODEL"],
        )? {
            None => None,
            Some(service) => {
                let accepts =
                    "the length of the model's vectors, such as 1536 for text-embedding-3-small";
                let dims = get("EMBEDDING_DIMENSIONS").ok_or(ConfigError {
                    variable: "EMBEDDING_DIMENSIONS",
                    problem: "is required when EMBEDDING_BASE_URL is set".into(),
                    accepts,
                })?;
                let dims =
                    parse_number("EMBEDDING_DIMENSIONS", Some(dims), 0, 1..=65_536, accepts)?;
                Some((service, dims as usize))
            }
        };
        let llm = model_service(&get, ["LLM_BASE_URL", "LLM_API_KEY", "LLM_MODEL"])?;
        let log_format = match get("LOG_FORMAT").as_deref() {
            None | Some("pretty") => LogFormat::Pretty,
            Some("json") => LogFormat::Json,
            Some(other) => return Err(invalid("LOG_FORMAT", other, "pretty | json")),
        };
        if let Some(filter) = get("RUST_LOG") {
            tracing_subscriber::EnvFilter::builder()
                .parse(&filter)
                .map_err(|_| {
                    invalid(
                        "RUST_LOG",
                        &filter,
                        "tracing directives such as info or lectern=debug,tower_http=info",
                    )
                })?;
        }

        let better_auth_secret = get("BETTER_AUTH_SECRET").map(Secret::new);
        let password_hash = {
            use crate::auth::password::PasswordFormat;
            match get("PASSWORD_HASH").as_deref() {
                None if better_auth_secret.is_some() => PasswordFormat::Scrypt,
                None | Some("argon2id") => PasswordFormat::Argon2id,
                Some("scrypt") => PasswordFormat::Scrypt,
                Some(other) => return Err(invalid("PASSWORD_HASH", other, "argon2id | scrypt")),
            }
        };
        let better_auth_cookie_prefix = get("BETTER_AUTH_COOKIE_PREFIX")
            .unwrap_or_else(|| crate::auth::better_auth::DEFAULT_COOKIE_PREFIX.to_owned());
        if !better_auth_cookie_prefix
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        {
            return Err(invalid(
                "BETTER_AUTH_COOKIE_PREFIX",
                &better_auth_cookie_prefix,
                "letters, digits, '-', '_' and '.', as in Better Auth's advanced.cookiePrefix",
            ));
        }
        let require_email_verification = match get("REQUIRE_EMAIL_VERIFICATION").as_deref() {
            None | Some("false") => false,
            Some("true") => true,
            Some(other) => {
                return Err(invalid("REQUIRE_EMAIL_VERIFICATION", other, "true | false"));
            }
        };
        Ok(Self {
            data_dir,
            database,
            bind_addr,
            health_addr,
            app_env,
            jwt_secret,
            better_auth_secret,
            better_auth_cookie_prefix,
            require_email_verification,
            password_hash,
            cors_origins,
            auth_rate_limit_per_ip,
            auth_rate_limit_per_email,
            introspection,
            history_limit,
            qdrant,
            qdrant_collection,
            embedding,
            corpus_dir: PathBuf::from(get("CORPUS_DIR").unwrap_or_else(|| "./docs".into())),
            retrieval: RetrievalSettings::from_lookup(&get, &lookup)?,
            llm,
            log_format,
            limits: Limits::from_lookup(&get)?,
            insights: InsightSettings {
                record: match get("INSIGHTS").as_deref() {
                    None | Some("on") => true,
                    Some("off") => false,
                    Some(other) => return Err(invalid("INSIGHTS", other, "on | off")),
                },
                retention: std::time::Duration::from_secs(
                    86_400
                        * u64::from(parse_number(
                            "INSIGHTS_RETENTION_DAYS",
                            get("INSIGHTS_RETENTION_DAYS"),
                            90,
                            1..=3650,
                            "days from 1 to 3650",
                        )?),
                ),
                admin_emails: get("ADMIN_EMAILS")
                    .map(|list| {
                        list.split(',')
                            .map(str::trim)
                            .filter(|e| !e.is_empty())
                            .map(|e| {
                                crate::auth::domain::Email::parse(e)
                                    .map(|e| e.as_str().to_owned())
                                    .map_err(|why| ConfigError {
                                        variable: "ADMIN_EMAILS",
                                        problem: format!("has {e:?}, which is not usable: {why}"),
                                        accepts: "a comma-separated list of emails",
                                    })
                            })
                            .collect::<Result<Vec<_>, _>>()
                    })
                    .transpose()?
                    .unwrap_or_default(),
            },
        })
    }

    pub fn is_production(&self) -> bool {
        self.app_env == AppEnv::Production
    }
}

impl RetrievalSettings {
    /// `get` trims; prefixes are read untrimmed through `raw`, since `query: ` ends
    /// with a space that matters.
    fn from_lookup(
        get: &impl Fn(&str) -> Option<String>,
        raw: &impl Fn(&str) -> Option<String>,
    ) -> Result<Self, ConfigError> {
        let site_url = get("SITE_URL")
            .map(|v| http_url("SITE_URL", v).map(|url| format!("{url}/")))
            .transpose()?;
        let sources_per_page = parse_number(
            "SOURCES_PER_PAGE",
            get("SOURCES_PER_PAGE"),
            1,
            1..=5,
            "an integer from 1 to 5",
        )? as usize;
        let min_relevance = match get("RETRIEVAL_MIN_SCORE") {
            None => None,
            Some(v) => match v.parse::<f32>() {
                Ok(n) if (0.0..=1.0).contains(&n) => Some(n),
                _ => {
                    return Err(invalid(
                        "RETRIEVAL_MIN_SCORE",
                        &v,
                        "a share of the question from 0 (off) to 1, such as 0.45; unset: calibrated per index",
                    ));
                }
            },
        };
        let synonyms = match get("RETRIEVAL_SYNONYMS") {
            None => None,
            Some(v) => {
                let path = PathBuf::from(&v);
                match std::fs::read_to_string(&path) {
                    Ok(text) => Some((path, text)),
                    Err(_) => {
                        return Err(invalid(
                            "RETRIEVAL_SYNONYMS",
                            &v,
                            "the path of a readable text file of synonym groups, one comma-separated group a line",
                        ));
                    }
                }
            }
        };
        let input_type = get("EMBEDDING_INPUT_TYPE")
            .map(|v| match v.split_once(',') {
                Some((query, document))
                    if !query.trim().is_empty() && !document.trim().is_empty() =>
                {
                    Ok((query.trim().to_owned(), document.trim().to_owned()))
                }
                _ => Err(invalid(
                    "EMBEDDING_INPUT_TYPE",
                    &v,
                    "the input_type of questions and of passages, comma-separated, such as search_query,search_document",
                )),
            })
            .transpose()?;
        Ok(Self {
            site_url,
            sources_per_page,
            min_relevance,
            synonyms,
            embedding_sides: EmbeddingSides {
                query_prefix: raw("EMBEDDING_QUERY_PREFIX").unwrap_or_default(),
                document_prefix: raw("EMBEDDING_DOCUMENT_PREFIX").unwrap_or_default(),
                input_type,
            },
        })
    }
}

impl Limits {
    fn from_lookup(get: &impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let seconds = |variable: &'static str, default: u32| {
            parse_number(
                variable,
                get(variable),
                default,
                1..=3600,
                "whole seconds from 1 to 3600",
            )
            .map(|s| std::time::Duration::from_secs(u64::from(s)))
        };
        let count = |variable: &'static str, default: u32, range, accepts| {
            parse_number(variable, get(variable), default, range, accepts)
        };
        Ok(Self {
            trusted_proxies: get("TRUSTED_PROXIES")
                .map(|v| parse_networks(&v))
                .transpose()?
                .unwrap_or_default(),
            header_timeout: seconds("HTTP_HEADER_TIMEOUT_SECS", 10)?,
            body_timeout: seconds("HTTP_BODY_TIMEOUT_SECS", 30)?,
            max_connections: count(
                "MAX_CONNECTIONS",
                10_000,
                1..=1_000_000,
                "an integer from 1 to 1000000",
            )? as usize,
            ws_connections_per_ip: count(
                "WS_MAX_CONNECTIONS_PER_IP",
                32,
                0..=1_000_000,
                "an integer from 0 (off) to 1000000",
            )?,
            admission_per_ip: count(
                "GRAPHQL_ADMISSION_PER_IP",
                0,
                0..=100_000,
                "an integer from 0 (off) to 100000",
            )?,
            ws_subscriptions: count(
                "WS_MAX_SUBSCRIPTIONS",
                16,
                1..=1000,
                "an integer from 1 to 1000",
            )? as usize,
            ws_init_timeout: seconds("WS_INIT_TIMEOUT_SECS", 10)?,
            chat_per_ip: count(
                "CHAT_RATE_LIMIT_PER_IP",
                20,
                0..=1_000_000,
                "chat turns per minute from 0 (off) to 1000000",
            )?,
            chat_per_reader: count(
                "CHAT_RATE_LIMIT_PER_READER",
                30,
                0..=1_000_000,
                "chat turns per minute from 0 (off) to 1000000",
            )?,
            model_concurrency: count(
                "LLM_MAX_CONCURRENCY",
                32,
                1..=100_000,
                "an integer from 1 to 100000",
            )?,
            hash_queue: count(
                "AUTH_HASH_QUEUE",
                32,
                1..=100_000,
                "an integer from 1 to 100000",
            )?,
            refresh_reuse_grace: std::time::Duration::from_secs(u64::from(count(
                "REFRESH_REUSE_GRACE_SECS",
                10,
                0..=300,
                "whole seconds from 0 (off) to 300",
            )?)),
            shutdown_timeout: seconds("SHUTDOWN_TIMEOUT_SECS", 30)?,
            turn_retention: seconds("TURN_RETENTION_SECS", 600)?,
            turn_registry_max: count(
                "TURN_REGISTRY_MAX",
                1_000,
                1..=1_000_000,
                "an integer from 1 to 1000000",
            )? as usize,
        })
    }
}

/// Comma-separated addresses or CIDR blocks.
fn parse_networks(value: &str) -> Result<Vec<ipnet::IpNet>, ConfigError> {
    value
        .split(',')
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .map(|item| {
            item.parse::<ipnet::IpNet>()
                .or_else(|_| item.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
                .map_err(|_| {
                    invalid(
                        "TRUSTED_PROXIES",
                        item,
                        "comma-separated addresses or CIDR blocks such as 10.0.0.0/8,127.0.0.1",
                    )
                })
        })
        .collect()
}

fn invalid(variable: &'static str, value: &str, accepts: &'static str) -> ConfigError {
    ConfigError {
        variable,
        problem: format!("has the invalid value {value:?}"),
        accepts,
    }
}

fn database_url(value: Option<String>, data_dir: &std::path::Path) -> Result<String, ConfigError> {
    const ACCEPTS: &str = "postgres://user:pass@host:5432/db (add ?sslmode=require for Neon) or sqlite://path/to/file.db";
    let Some(url) = value else {
        return Ok(format!(
            "sqlite://{}?mode=rwc",
            data_dir.join("lectern.db").display()
        ));
    };
    // Only the scheme is echoed back: the rest may hold a password.
    let scheme = url.split(':').next().unwrap_or_default().to_owned();
    match scheme.as_str() {
        "postgres" | "postgresql" => {
            if !url.contains("://") || url.len() <= scheme.len() + 3 {
                return Err(ConfigError {
                    variable: "DATABASE_URL",
                    problem: "is missing the host after postgres://".into(),
                    accepts: ACCEPTS,
                });
            }
            Ok(url)
        }
        "sqlite" => {
            // Create the file on first use unless the caller chose a mode.
            if url.contains("mode=") || url.contains(":memory:") {
                Ok(url)
            } else if url.contains('?') {
                Ok(format!("{url}&mode=rwc"))
            } else {
                Ok(format!("{url}?mode=rwc"))
            }
        }
        _ => Err(ConfigError {
            variable: "DATABASE_URL",
            problem: format!("uses the unsupported scheme {scheme:?}"),
            accepts: ACCEPTS,
        }),
    }
}

fn parse_number(
    variable: &'static str,
    value: Option<String>,
    default: u32,
    range: std::ops::RangeInclusive<u32>,
    accepts: &'static str,
) -> Result<u32, ConfigError> {
    match value {
        None => Ok(default),
        Some(v) => match v.parse::<u32>() {
            Ok(n) if range.contains(&n) => Ok(n),
            _ => Err(invalid(variable, &v, accepts)),
        },
    }
}

fn http_url(variable: &'static str, value: String) -> Result<String, ConfigError> {
    let rest = value
        .strip_prefix("https://")
        .or_else(|| value.strip_prefix("http://"));
    match rest {
        Some(host) if !host.is_empty() && !host.contains(char::is_whitespace) => {
            Ok(value.trim_end_matches('/').to_owned())
        }
        _ => Err(invalid(
            variable,
            &value,
            "an http:// or https:// URL such as https://api.openai.com/v1",
        )),
    }
}

fn parse_origins(value: &str) -> Result<Vec<String>, ConfigError> {
    value
        .split(',')
        .map(str::trim)
        .filter(|o| !o.is_empty())
        .map(|origin| {
            let well_formed = (origin.starts_with("http://") || origin.starts_with("https://"))
                && !origin.ends_with('/')
                && axum::http::HeaderValue::from_str(origin).is_ok();
            if well_formed {
                Ok(origin.to_owned())
            } else {
                Err(invalid(
                    "CORS_ORIGINS",
                    origin,
                    "comma-separated origins such as https://book.example.com,http://localhost:3000 (no trailing slash)",
                ))
            }
        })
        .collect()
}

/// The service is on when its base URL is set, and then the model name is required.
fn model_service(
    get: &impl Fn(&str) -> Option<String>,
    [url_var, key_var, model_var]: [&'static str; 3],
) -> Result<Option<ModelService>, ConfigError> {
    let Some(base_url) = get(url_var) else {
        return Ok(None);
    };
    let base_url = http_url(url_var, base_url)?;
    let model = get(model_var).ok_or(ConfigError {
        variable: model_var,
        problem: format!("is required when {url_var} is set"),
        accepts: "the model name the endpoint serves, such as gpt-4o-mini",
    })?;
    let timeout = parse_number(
        "LLM_TIMEOUT_SECONDS",
        get("LLM_TIMEOUT_SECONDS"),
        30,
        1..=600,
        "whole seconds from 1 to 600",
    )?;
    Ok(Some(ModelService {
        base_url,
        api_key: get(key_var).map(Secret::new),
        model,
        timeout: std::time::Duration::from_secs(u64::from(timeout)),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn settings(pairs: &[(&str, &str)]) -> Result<Settings, ConfigError> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        Settings::from_lookup(|k| map.get(k).cloned())
    }

    #[test]
    fn defaults_need_no_configuration() {
        let s = settings(&[]).unwrap();
        assert_eq!(s.bind_addr.to_string(), "127.0.0.1:8000");
        assert_eq!(s.database.backend(), DatabaseKind::Sqlite);
        assert!(s.database.url.expose().ends_with("lectern.db?mode=rwc"));
        assert_eq!(s.history_limit, 50);
        assert_eq!(s.app_env, AppEnv::Development);
        assert!(s.llm.is_none() && s.embedding.is_none() && s.qdrant.is_none());
    }

    #[test]
    fn bad_values_name_the_variable() {
        for (key, value) in [
            ("BIND_ADDR", "nonsense"),
            ("DATABASE_URL", "mysql://root@localhost/db"),
            ("HISTORY_LIMIT", "0"),
            ("HISTORY_LIMIT", "fifty"),
            ("APP_ENV", "staging"),
            ("LOG_FORMAT", "xml"),
            ("CORS_ORIGINS", "example.com"),
            ("LLM_BASE_URL", "ftp://x"),
            ("RUST_LOG", "lectern=loud"),
            ("TRUSTED_PROXIES", "10.0.0.0/33"),
            ("TRUSTED_PROXIES", "proxy.internal"),
            ("HTTP_HEADER_TIMEOUT_SECS", "0"),
            ("MAX_CONNECTIONS", "0"),
            ("CHAT_RATE_LIMIT_PER_IP", "-1"),
            ("PASSWORD_HASH", "bcrypt"),
            ("BETTER_AUTH_COOKIE_PREFIX", "my app"),
            ("REQUIRE_EMAIL_VERIFICATION", "yes"),
        ] {
            let err = settings(&[(key, value)]).unwrap_err();
            assert_eq!(err.variable, key, "{err}");
            assert!(err.to_string().starts_with("configuration error: "));
        }
    }

    #[test]
    fn password_hashes_default_to_the_format_better_auth_reads() {
        use crate::auth::password::PasswordFormat;
        assert_eq!(
            settings(&[]).unwrap().password_hash,
            PasswordFormat::Argon2id
        );
        let shared = [("BETTER_AUTH_SECRET", "s")];
        assert_eq!(
            settings(&shared).unwrap().password_hash,
            PasswordFormat::Scrypt
        );
        let chosen = [("BETTER_AUTH_SECRET", "s"), ("PASSWORD_HASH", "argon2id")];
        assert_eq!(
            settings(&chosen).unwrap().password_hash,
            PasswordFormat::Argon2id
        );
    }

    #[test]
    fn trusted_proxies_take_addresses_and_blocks() {
        let s = settings(&[("TRUSTED_PROXIES", " 10.0.0.0/8, 127.0.0.1 ,::1")]).unwrap();
        let proxies: Vec<String> = s
            .limits
            .trusted_proxies
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(proxies, ["10.0.0.0/8", "127.0.0.1/32", "::1/128"]);
        assert!(settings(&[]).unwrap().limits.trusted_proxies.is_empty());
    }

    #[test]
    fn production_refuses_missing_or_short_jwt_secret() {
        let err = settings(&[("APP_ENV", "production")]).unwrap_err();
        assert_eq!(err.variable, "JWT_SECRET");
        let err = settings(&[("APP_ENV", "production"), ("JWT_SECRET", "short")]).unwrap_err();
        assert_eq!(err.variable, "JWT_SECRET");
        let long = "x".repeat(MIN_SECRET_LEN);
        assert!(settings(&[("APP_ENV", "production"), ("JWT_SECRET", &long)]).is_ok());
    }

    #[test]
    fn model_endpoint_needs_a_model_name() {
        let err = settings(&[("LLM_BASE_URL", "http://localhost:1234/v1")]).unwrap_err();
        assert_eq!(err.variable, "LLM_MODEL");
    }

    #[test]
    fn secrets_are_redacted_in_debug() {
        let s = settings(&[
            ("DATABASE_URL", "postgres://app:hunter2@db.example.com/app"),
            ("JWT_SECRET", "super-secret-signing-key"),
            ("LLM_BASE_URL", "https://api.example.com/v1"),
            ("LLM_API_KEY", "sk-very-secret"),
            ("LLM_MODEL", "m"),
        ])
        .unwrap();
        let printed = format!("{s:?}");
        for secret in ["hunter2", "super-secret-signing-key", "sk-very-secret"] {
            assert!(!printed.contains(secret), "{secret} leaked: {printed}");
        }
    }

    #[test]
    fn unsupported_database_scheme_does_not_echo_the_url() {
        let err = settings(&[("DATABASE_URL", "mysql://root:pw@localhost/db")]).unwrap_err();
        assert!(err.to_string().contains("\"mysql\""));
        assert!(!err.to_string().contains("pw@"));
    }
}
