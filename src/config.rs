//! Configuration: built-in defaults, then `leadgate.toml`, then `LEADGATE_*` variables.
//!
//! Every key has a default, so `leadgate serve` runs with no file at all. A value of the
//! wrong type fails start with an error that names the key.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::{Deserialize, Serialize};

/// The whole configuration of one leadgate process.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Address the HTTP server binds.
    pub listen: SocketAddr,
    /// Directory for the embedded store (and later the embedded search index).
    pub data_dir: PathBuf,
    /// `sqlite://…` or `postgres://…`; empty means `sqlite://{data_dir}/leadgate.db`.
    pub database_url: String,
    /// Largest request body accepted, in bytes.
    pub max_body_bytes: usize,
    /// Largest spreadsheet upload (`POST /v1/imports`) accepted, in bytes.
    pub max_import_bytes: u64,
    /// Maximum number of pooled store connections.
    pub db_max_connections: u32,
    /// `text` or `json`.
    pub log_format: LogFormat,
    /// A tracing filter such as `info` or `leadgate=debug,actix_web=info`.
    pub log_filter: String,
    /// How many HTTP worker threads; 0 means one per core.
    pub http_workers: usize,
    /// How many inbox rows the pipeline worker takes per transaction.
    pub worker_batch: usize,
    /// Most inbound records one group commit writes.
    pub group_commit_max: usize,
    /// Seconds the server waits for in-flight requests on shutdown.
    pub shutdown_timeout_secs: u64,
    /// What this process does: accept, process, or both.
    pub role: Role,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Accept inbound records and process them in-process.
    All,
    /// Accept and make durable only; processing happens elsewhere.
    Gateway,
    /// Process the inbox only; serves health, readiness and metrics.
    Worker,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            data_dir: PathBuf::from("data"),
            database_url: String::new(),
            max_body_bytes: 1024 * 1024,
            max_import_bytes: 200 * 1024 * 1024,
            db_max_connections: 8,
            log_format: LogFormat::Text,
            log_filter: "info".to_owned(),
            http_workers: 0,
            worker_batch: 256,
            group_commit_max: 512,
            shutdown_timeout_secs: 30,
            role: Role::All,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("config file {0} does not exist")]
    MissingFile(PathBuf),
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

/// `LEADGATE_*` variables that are not configuration keys: the test suite's switches
/// (`LEADGATE_TEST_*`) and the log filter override (`LEADGATE_LOG`).
fn is_config_variable(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    !(key.starts_with("test_") || key == "log")
}

impl Config {
    /// Loads defaults, then `file` (or `./leadgate.toml` when present), then `LEADGATE_*`.
    pub fn load(file: Option<&Path>) -> Result<Self, ConfigError> {
        let mut figment = Figment::from(Serialized::defaults(Config::default()));
        match file {
            Some(path) if !path.exists() => return Err(ConfigError::MissingFile(path.into())),
            Some(path) => figment = figment.merge(Toml::file(path)),
            None if Path::new("leadgate.toml").exists() => {
                figment = figment.merge(Toml::file("leadgate.toml"));
            }
            None => {}
        }
        figment = figment
            .merge(Env::prefixed("LEADGATE_").filter(|key| is_config_variable(key.as_str())));
        Self::from_figment(figment)
    }

    fn from_figment(figment: Figment) -> Result<Self, ConfigError> {
        let config: Config = figment
            .extract()
            .map_err(|error| ConfigError::Invalid(describe(error)))?;
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |key: &str, why: &str| Err(ConfigError::Invalid(format!("{key}: {why}")));
        if self.max_body_bytes < 1024 {
            return invalid("max_body_bytes", "must be at least 1024");
        }
        if self.max_import_bytes < 1024 {
            return invalid("max_import_bytes", "must be at least 1024");
        }
        if self.db_max_connections == 0 {
            return invalid("db_max_connections", "must be at least 1");
        }
        if self.worker_batch == 0 || self.group_commit_max == 0 {
            return invalid("worker_batch/group_commit_max", "must be at least 1");
        }
        if !self.database_url.is_empty()
            && !self.database_url.starts_with("sqlite:")
            && !self.database_url.starts_with("postgres:")
            && !self.database_url.starts_with("postgresql:")
        {
            return invalid("database_url", "must start with sqlite: or postgres:");
        }
        Ok(())
    }

    /// The store URL, defaulting to a SQLite file in the data directory.
    pub fn effective_database_url(&self) -> String {
        if self.database_url.is_empty() {
            format!(
                "sqlite://{}?mode=rwc",
                self.data_dir.join("leadgate.db").display()
            )
        } else {
            self.database_url.clone()
        }
    }
}

/// Figment's errors carry the key path; keep it and the source in one readable line.
fn describe(error: figment::Error) -> String {
    error
        .into_iter()
        .map(|e| {
            let key = e.path.join(".");
            let source = e
                .metadata
                .as_ref()
                .map(|m| format!(" (from {})", m.name))
                .unwrap_or_default();
            if key.is_empty() {
                format!("{}{source}", e.kind)
            } else {
                format!("key `{key}`: {}{source}", e.kind)
            }
        })
        .collect::<Vec<_>>()
        .join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load_from(toml: &str) -> Result<Config, ConfigError> {
        Config::from_figment(
            Figment::from(Serialized::defaults(Config::default())).merge(Toml::string(toml)),
        )
    }

    #[test]
    fn defaults_need_no_file() {
        let config = load_from("").expect("defaults are valid");
        assert_eq!(config.listen.to_string(), "127.0.0.1:8080");
        assert!(
            config
                .effective_database_url()
                .starts_with("sqlite://data/")
        );
    }

    #[test]
    fn a_bad_value_names_its_key() {
        let error = load_from("listen = \"not an address\"").unwrap_err();
        assert!(error.to_string().contains("listen"), "{error}");
        let error = load_from("max_body_bytes = \"lots\"").unwrap_err();
        assert!(error.to_string().contains("max_body_bytes"), "{error}");
    }

    #[test]
    fn an_unknown_key_is_refused() {
        let error = load_from("lisen = \"127.0.0.1:1\"").unwrap_err();
        assert!(error.to_string().contains("lisen"), "{error}");
    }

    #[test]
    fn test_switches_and_the_log_override_are_not_config_keys() {
        assert!(!is_config_variable("TEST_PG"));
        assert!(!is_config_variable("LOG"));
        assert!(is_config_variable("LOG_FORMAT"));
        assert!(is_config_variable("LISTEN"));
    }

    #[test]
    fn a_foreign_database_scheme_is_refused() {
        let error = load_from("database_url = \"mysql://x\"").unwrap_err();
        assert!(error.to_string().contains("database_url"), "{error}");
    }
}
