//! `leadgate user …`, `leadgate team …` and `leadgate audit verify`: the admin surface
//! for principals and the audit chain, on the same store functions as the admin API.

use std::io::Read;

use anyhow::Context;
use clap::Subcommand;
use leadgate::access::AccessPolicy;
use leadgate::config::Config;
use leadgate::startup::open_store;
use leadgate::store::WriteContext;

#[derive(Subcommand)]
pub enum UserCommand {
    /// Add a user. The password, if any, is read from standard input.
    Add {
        #[arg(long)]
        email: String,
        #[arg(long)]
        name: Option<String>,
        /// A configured role (admin, sales_director, manager, rep, support_agent, …).
        #[arg(long)]
        role: String,
        /// The team's id.
        #[arg(long)]
        team: Option<String>,
        /// Read a password (at least 12 characters) from standard input.
        #[arg(long)]
        password_stdin: bool,
    },
    /// List users.
    List,
    /// Delete a user by email; their tokens are revoked with them.
    Remove { email: String },
}

#[derive(Subcommand)]
pub enum TeamCommand {
    /// Add a team under an optional parent team (by id).
    Add {
        name: String,
        #[arg(long)]
        parent: Option<String>,
        /// The manager's user id.
        #[arg(long)]
        manager: Option<String>,
    },
    /// Move a team under another (a move that closes a cycle is refused).
    SetParent {
        id: String,
        /// The new parent's id; omit to make the team a root.
        parent: Option<String>,
    },
    List,
}

#[derive(Subcommand)]
pub enum AuditCommand {
    /// Walk the audit hash chain; exits non-zero naming the first broken row.
    Verify,
}

pub async fn user(config: &Config, ctx: &WriteContext, command: UserCommand) -> anyhow::Result<()> {
    let store = open_store(config).await?;
    match command {
        UserCommand::Add {
            email,
            name,
            role,
            team,
            password_stdin,
        } => {
            let policy = AccessPolicy::compile(&config.access)?;
            if policy.role(&role).is_none() {
                anyhow::bail!(
                    "role `{role}` is not configured (known: {})",
                    policy.role_names().join(", ")
                );
            }
            let password = if password_stdin {
                let mut text = String::new();
                std::io::stdin().read_to_string(&mut text)?;
                Some(text.trim_end_matches(['\r', '\n']).to_owned())
            } else {
                None
            };
            let user = store
                .create_user(
                    ctx,
                    &email,
                    name.as_deref(),
                    &role,
                    team.as_deref(),
                    password,
                )
                .await?;
            println!("{}", serde_json::to_string_pretty(&user)?);
        }
        UserCommand::List => {
            println!("{}", serde_json::to_string_pretty(&store.users().await?)?);
        }
        UserCommand::Remove { email } => {
            let user = store
                .user_by_email(&email)
                .await?
                .with_context(|| format!("no user with email {email}"))?;
            store.delete_user(ctx, &user.id).await?;
            println!("removed {} ({})", user.email, user.id);
        }
    }
    Ok(())
}

pub async fn team(config: &Config, ctx: &WriteContext, command: TeamCommand) -> anyhow::Result<()> {
    let store = open_store(config).await?;
    match command {
        TeamCommand::Add {
            name,
            parent,
            manager,
        } => {
            let team = store
                .save_team(
                    ctx,
                    None,
                    Some(&name),
                    Some(parent.as_deref()),
                    manager.as_deref(),
                )
                .await?;
            println!("{}", serde_json::to_string_pretty(&team)?);
        }
        TeamCommand::SetParent { id, parent } => {
            let team = store
                .save_team(ctx, Some(&id), None, Some(parent.as_deref()), None)
                .await?;
            println!("{}", serde_json::to_string_pretty(&team)?);
        }
        TeamCommand::List => {
            println!("{}", serde_json::to_string_pretty(&store.teams().await?)?);
        }
    }
    Ok(())
}

pub async fn audit(config: &Config, command: AuditCommand) -> anyhow::Result<()> {
    let store = open_store(config).await?;
    match command {
        AuditCommand::Verify => {
            let report = store.verify_audit().await?;
            match report.broken {
                None => {
                    println!(
                        "audit chain intact: {} rows, head {}",
                        report.rows, report.head
                    );
                }
                Some(broken) => {
                    println!(
                        "audit chain broken at seq {}: {} ({} rows checked)",
                        broken.seq, broken.reason, report.rows
                    );
                    std::process::exit(1);
                }
            }
        }
    }
    Ok(())
}
