use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use leadgate::config::{Config, Role};
use leadgate::domain::RecordKind;
use leadgate::mapping::MappingSet;
use leadgate::pipeline::harness::{self, Mode};
use leadgate::search;
use leadgate::startup::{Application, build_pipeline, open_store};
use leadgate::store::Store;
use leadgate::store::{RequestMeta, WriteContext};
use leadgate::telemetry;

mod access_cli;
mod import_cli;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// leadgate: the integration gateway and ingestion pipeline of a CRM.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    /// Configuration file (default: ./leadgate.toml when present).
    #[arg(long, global = true)]
    config: Option<PathBuf>,
    /// Directory for the embedded store (LEADGATE_DATA_DIR).
    #[arg(long, global = true)]
    data_dir: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the HTTP gateway and the inbox worker.
    Serve {
        /// Address to listen on (LEADGATE_LISTEN), e.g. 127.0.0.1:8080.
        #[arg(long)]
        listen: Option<SocketAddr>,
        /// all (default): accept and process; gateway: accept only; worker: process only.
        #[arg(long, value_enum)]
        role: Option<Role>,
    },
    /// Apply pending store migrations and exit.
    Migrate,
    /// API tokens.
    #[command(subcommand)]
    Token(TokenCommand),
    /// The inbox of accepted inbound records.
    #[command(subcommand)]
    Inbox(InboxCommand),
    /// Users: the people behind tokens and sign-ins.
    #[command(subcommand)]
    User(access_cli::UserCommand),
    /// Teams: the tree a manager's reach follows.
    #[command(subcommand)]
    Team(access_cli::TeamCommand),
    /// The audit trail's hash chain.
    #[command(subcommand)]
    Audit(access_cli::AuditCommand),
    /// The NATS dead-letter stream (`queue = "nats"`): messages that failed
    /// `nats.max_deliver` times.
    #[command(subcommand)]
    Dlq(DlqCommand),
    /// Run a CSV through mapping, normalisation and dedup in a scratch store and write the
    /// duplicate pairs found, by the file's own id column.
    Dedup {
        file: PathBuf,
        /// The mapping (mappings/NAME.toml) that reads the file's columns.
        #[arg(long)]
        mapping: String,
        /// The column holding each row's own id.
        #[arg(long)]
        id_column: String,
        /// Where to write `id_a,id_b,score` for every pair merged into one record.
        #[arg(long)]
        pairs: PathBuf,
        /// Where to write the review-band pairs (default: PAIRS with .review.csv).
        #[arg(long)]
        review_pairs: Option<PathBuf>,
        #[arg(long, value_enum, default_value = "stream")]
        mode: Mode,
    },
    /// Rebuild the search index from the store (stop `serve` first for the embedded index).
    Reindex,
    /// Search records as `GET /v1/search` does, and print the hits.
    Search {
        /// What to look for: names (typos welcome), an email, a phone number, an id.
        query: String,
        /// Only these kinds (repeat or comma-separate): leads, contacts, accounts …
        #[arg(long, value_delimiter = ',')]
        kind: Vec<String>,
        #[arg(long)]
        owner: Option<String>,
        #[arg(long)]
        status: Option<String>,
        #[arg(long)]
        stage: Option<String>,
        #[arg(long, default_value_t = 20)]
        limit: usize,
        /// Print the hits as JSON, one per line.
        #[arg(long)]
        json: bool,
    },
    /// Import a spreadsheet (xlsx, xlsm, xlsb, xls, ods, csv, tsv) as leads.
    Import {
        /// The file to import.
        file: PathBuf,
        /// The sheet to read (default: the first non-empty one).
        #[arg(long)]
        sheet: Option<String>,
        /// A JSON file of column choices: {"Header": "field" | "custom" | "ignore"}.
        #[arg(long)]
        mapping: Option<PathBuf>,
        /// Show the proposed mapping, the first rows and errors; write nothing.
        #[arg(long)]
        dry_run: bool,
        /// Return once the rows are in the inbox instead of processing them here.
        #[arg(long)]
        no_wait: bool,
    },
}

#[derive(Subcommand)]
enum TokenCommand {
    /// Create a token and print it once.
    Create {
        /// A label for the token.
        #[arg(long)]
        name: String,
        /// Make an admin token.
        #[arg(long, conflicts_with_all = ["partner", "user"])]
        admin: bool,
        /// Make a token for this user (by email); it carries the user's role.
        #[arg(long, conflicts_with = "partner")]
        user: Option<String>,
        /// Make a key for this partner (its submissions arrive as `partner:<NAME>`).
        #[arg(long)]
        partner: Option<String>,
        /// Days until the token expires.
        #[arg(long)]
        expires_in_days: Option<i64>,
    },
    /// Revoke a token by its id.
    Revoke { id: String },
}

#[derive(Subcommand)]
enum InboxCommand {
    /// Show the inbox depth by state.
    Status,
    /// Queue failed rows again: one by id, or all of them.
    Retry {
        id: Option<String>,
        #[arg(long, conflicts_with = "id")]
        all_failed: bool,
    },
}

#[derive(Subcommand)]
enum DlqCommand {
    /// List dead letters, oldest first: sequence, inbound id, subject, attempts, error.
    List {
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
    /// Publish dead letters to their original partition again and remove them from the
    /// dead-letter stream: the given sequences, or all with --all.
    Replay {
        seqs: Vec<u64>,
        #[arg(long, conflicts_with = "seqs")]
        all: bool,
    },
}

fn cli_context() -> WriteContext {
    let user = std::env::var("USER").unwrap_or_else(|_| "unknown".into());
    WriteContext::new(format!("cli:{user}"), "cli", RequestMeta::default())
}

#[actix_web::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let mut config = Config::load(cli.config.as_deref())?;
    if let Some(dir) = cli.data_dir {
        config.data_dir = dir;
    }
    telemetry::init_logging(config.log_format, &config.log_filter);
    match cli.command {
        Command::Serve { listen, role } => {
            if let Some(listen) = listen {
                config.listen = listen;
            }
            if let Some(role) = role {
                config.role = role;
            }
            let app = Application::build(config).await?;
            app.run_until_stopped().await?;
        }
        Command::Migrate => {
            open_store(&config).await?;
            println!("migrations applied");
        }
        Command::Token(TokenCommand::Create {
            name,
            admin,
            user,
            partner,
            expires_in_days,
        }) => {
            let store = open_store(&config).await?;
            let user = match user {
                Some(email) => Some(
                    store
                        .user_by_email(&email)
                        .await?
                        .with_context(|| format!("no user with email {email}"))?,
                ),
                None => None,
            };
            let (principal, role) = match (admin, partner) {
                _ if user.is_some() => {
                    let user = user.as_ref().context("user")?;
                    (format!("user:{}", user.id), user.role.as_str())
                }
                (true, _) => ("admin".to_owned(), "admin"),
                (false, Some(partner)) if is_slug(&partner) => {
                    (format!("partner:{partner}"), "partner")
                }
                (false, Some(partner)) => {
                    anyhow::bail!("partner name `{partner}` must be letters, digits, - or _")
                }
                (false, None) => anyhow::bail!("say --admin, --user EMAIL or --partner NAME"),
            };
            let expires_at =
                expires_in_days.map(|d| chrono::Utc::now() + chrono::Duration::days(d));
            let token = store
                .create_token(&cli_context(), &name, &principal, role, expires_at)
                .await?;
            eprintln!("token {} for {principal} (shown once):", token.id);
            println!("{}", token.secret);
        }
        Command::Token(TokenCommand::Revoke { id }) => {
            let store = open_store(&config).await?;
            store
                .revoke_token(&cli_context(), &id)
                .await
                .with_context(|| format!("revoking token {id}"))?;
            println!("revoked {id}");
        }
        Command::Dedup {
            file,
            mapping,
            id_column,
            pairs,
            review_pairs,
            mode,
        } => {
            let mut pipeline = build_pipeline(&config)?;
            let mappings = MappingSet::load(&config.mappings_dir)?;
            let chosen = mappings
                .by_name(&mapping)
                .with_context(|| format!("no mapping named `{mapping}`"))?
                .clone();
            pipeline = pipeline.with_mapping(chosen);
            let scratch = tempfile::tempdir()?;
            let url = format!("sqlite://{}/scratch.db?mode=rwc", scratch.path().display());
            let store = Store::connect(&url, 2).await?;
            store.migrate().await?;
            let review_pairs = review_pairs.unwrap_or_else(|| pairs.with_extension("review.csv"));
            let report = harness::run(
                &store,
                std::sync::Arc::new(pipeline),
                &file,
                &id_column,
                mode,
                &pairs,
                &review_pairs,
            )
            .await?;
            eprintln!(
                "{} rows in {:.2}s ({:.0}/s): {} new, {} merged, {} review, {} failed; \
                 {} pairs -> {}, {} review pairs -> {}",
                report.rows,
                report.seconds,
                report.rows as f64 / report.seconds.max(1e-9),
                report.created,
                report.merged,
                report.review,
                report.failed,
                report.pairs,
                pairs.display(),
                report.review_pairs,
                review_pairs.display()
            );
        }
        Command::Inbox(InboxCommand::Status) => {
            let store = open_store(&config).await?;
            println!(
                "{}",
                serde_json::to_string_pretty(&store.inbox_depth().await?)?
            );
        }
        Command::Inbox(InboxCommand::Retry { id, all_failed }) => {
            let store = open_store(&config).await?;
            match (id, all_failed) {
                (Some(id), _) if store.retry_inbox(&id).await? => println!("queued {id} again"),
                (Some(id), _) => anyhow::bail!("inbound {id} is not a failed row"),
                (None, true) => println!(
                    "queued {} failed rows again",
                    store.retry_all_failed().await?
                ),
                (None, false) => anyhow::bail!("give an inbound id or --all-failed"),
            }
        }
        Command::User(command) => access_cli::user(&config, &cli_context(), command).await?,
        Command::Team(command) => access_cli::team(&config, &cli_context(), command).await?,
        Command::Audit(command) => access_cli::audit(&config, command).await?,
        Command::Dlq(command) => {
            let client = leadgate::queue::nats::connect_now(&config.nats).await?;
            let js = leadgate::queue::nats::context(client, &config.nats);
            match command {
                DlqCommand::List { limit } => {
                    for letter in leadgate::queue::dlq::list(&js, &config.nats, limit).await? {
                        println!("{}", serde_json::to_string(&letter)?);
                    }
                }
                DlqCommand::Replay { seqs, all } => {
                    if seqs.is_empty() && !all {
                        anyhow::bail!("give dead-letter sequences (see `dlq list`) or --all");
                    }
                    let replayed = leadgate::queue::dlq::replay(&js, &config.nats, &seqs).await?;
                    for letter in &replayed {
                        eprintln!("replayed {} ({})", letter.seq, letter.subject);
                    }
                    println!("{} dead letter(s) replayed", replayed.len());
                }
            }
        }
        Command::Reindex => {
            let store = open_store(&config).await?;
            let index =
                search::open(&config.search, &config.data_dir, search::Access::Write).await?;
            let report = search::indexer::rebuild(&store, index.as_ref()).await?;
            index.close().await;
            println!(
                "indexed {} records in {:.1}s ({} backend, outbox seq {})",
                report.documents,
                report.seconds,
                index.backend(),
                report.checkpoint
            );
        }
        Command::Search {
            query,
            kind,
            owner,
            status,
            stage,
            limit,
            json,
        } => {
            let store = open_store(&config).await?;
            let index =
                search::open(&config.search, &config.data_dir, search::Access::Read).await?;
            let kinds = kind
                .iter()
                .map(|k| k.parse::<RecordKind>())
                .collect::<Result<Vec<_>, _>>()?;
            let query = search::SearchQuery {
                q: query,
                kinds: (!kinds.is_empty()).then_some(kinds),
                owner,
                status,
                stage,
                limit,
            };
            match search::indexer::lag(&store, index.as_ref()).await? {
                None => {
                    eprintln!("the search index has not been built yet: run `leadgate reindex`")
                }
                Some(lag) if lag > 0 => {
                    eprintln!("the search index is {lag} changes behind the store")
                }
                Some(_) => {}
            }
            let hits = index
                .search(&query, &search::SearchScope::everything())
                .await?;
            for hit in &hits {
                if json {
                    println!("{}", serde_json::to_string(hit)?);
                } else {
                    let marks: Vec<String> = hit
                        .highlights
                        .iter()
                        .map(|(field, text)| format!("{field}: {text}"))
                        .collect();
                    println!(
                        "{:<13} {}  {:>6.2}  {}",
                        hit.kind.path(),
                        hit.id,
                        hit.score,
                        marks.join("; ")
                    );
                }
            }
            if !json {
                eprintln!("{} hit(s)", hits.len());
            }
        }
        Command::Import {
            file,
            sheet,
            mapping,
            dry_run,
            no_wait,
        } => import_cli::run(&config, &file, sheet, mapping.as_deref(), dry_run, no_wait).await?,
    }
    Ok(())
}

fn is_slug(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}
