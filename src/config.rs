//! Configuration: built-in defaults, then `leadgate.toml`, then `LEADGATE_*` variables.
//!
//! Every key has a default, so `leadgate serve` runs with no file at all. A value of the
//! wrong type fails start with an error that names the key.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::{Deserialize, Serialize};

use crate::lifecycle::Qualification;
use crate::pipeline::assign::AssignmentRule;
use crate::pipeline::score::{ScoreRule, default_rules};

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
    /// While the worker's claims come back full (a backlog: an import, a burst), each next
    /// claim is twice as large, up to this many rows.
    pub worker_batch_max: usize,
    /// Most inbound records one group commit writes.
    pub group_commit_max: usize,
    /// Seconds the server waits for in-flight requests on shutdown.
    pub shutdown_timeout_secs: u64,
    /// What this process does: accept, process, or both.
    pub role: Role,
    /// Directory of mapping files; the shipped mappings are used when it does not exist.
    pub mappings_dir: PathBuf,
    /// ISO 3166 alpha-2 region for phone numbers written without a country code.
    pub default_region: String,
    /// Match weight (bits of evidence) at or above which an arrival merges.
    pub dedup_merge_threshold: f64,
    /// Match weight at or above which a pair goes to the review queue.
    pub dedup_review_threshold: f64,
    /// Source families most trusted first (`["import", "partner"]`): a merge does not
    /// overwrite a field a more trusted source set. Empty: the newest non-empty value wins.
    pub survivorship_priority: Vec<String>,
    /// Lead scoring rules (`[[score_rules]]`); the defaults are a plain B2B model.
    pub score_rules: Vec<ScoreRule>,
    /// Ordered assignment rules (`[[assignment_rules]]`); none means leads stay unowned.
    pub assignment_rules: Vec<AssignmentRule>,
    /// Open leads one user may hold before round-robin skips them; 0 is no limit.
    pub max_open_leads_per_user: i64,
    /// `bant`, `meddicc` or `none`: the answers that make a lead `qualified`.
    pub qualification: Qualification,
    /// Behaviour points a lead loses per day without new engagement; 0 keeps them.
    pub score_decay_per_day: i64,
    /// Requests per minute one client IP may make to the public endpoints (forms and
    /// webhooks); 0 turns the limit off.
    pub rate_limit_per_minute: u32,
    /// WhatsApp Cloud API webhooks; unset secrets leave the channel answering 404.
    pub whatsapp: WhatsAppSection,
    /// Zoom meeting and webinar webhooks.
    pub zoom: ZoomSection,
    /// Telephony (CTI) webhooks.
    pub cti: CtiSection,
    /// Website forms by name: `[forms.contact]` serves `POST /v1/forms/contact`.
    pub forms: BTreeMap<String, FormSection>,
    /// Inbound email (`POST /v1/inbound/email` and the mailboxes).
    pub email: EmailSection,
    /// IMAP mailboxes polled for inbound email (`[[mailboxes]]`).
    pub mailboxes: Vec<MailboxSection>,
    /// Partners' own mapping, rate limit and scopes (`[partners.<name>]`); a partner not
    /// listed gets the defaults.
    #[serde(default)]
    pub partners: BTreeMap<String, PartnerSection>,
    /// Roles, their access matrix, field rules and reach; sign-in sessions.
    #[serde(default)]
    pub access: crate::access::AccessSection,
    /// Where accepted inbound records wait for the pipeline: the store's inbox
    /// (`embedded`) or a NATS JetStream stream (`nats`, see `[nats]`).
    pub queue: QueueKind,
    /// The NATS JetStream queue (used when `queue = "nats"`).
    pub nats: NatsSection,
    /// The search index: embedded by default, Meilisearch when `search.meili_url` is set.
    #[serde(default)]
    pub search: crate::search::SearchConfig,
    /// Outbound nurturing: mailer, tracking links, sequences' sending rules, task rules.
    #[serde(default)]
    pub nurture: crate::nurture::NurtureSection,
    /// Post-sales service: tickets and their SLA, contracts, expansion rules.
    #[serde(default)]
    pub service: crate::service::ServiceConfig,
    /// Orders, invoices and payments: invoice series, payment terms, the Stripe webhook.
    #[serde(default)]
    pub billing: crate::billing::BillingConfig,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum QueueKind {
    Embedded,
    Nats,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NatsSection {
    /// The server, e.g. `nats://127.0.0.1:4222` (several separated by commas).
    pub url: String,
    /// Stream name; subjects are `<stream>.in.<partition>`, the dead letters live in
    /// `<stream>_dlq` and the partition leases in the KV bucket `<stream>_leases`.
    pub stream: String,
    /// Identity partitions; each is consumed by one worker at a time. Fixed for the
    /// life of a stream: changing it moves identities to other partitions.
    pub partitions: u32,
    /// Deliveries of one message before it goes to the dead-letter stream.
    pub max_deliver: i64,
    /// Stream limits; when reached the gateway answers 503 (the stream discards new).
    pub max_bytes: i64,
    pub max_msgs: i64,
    /// Largest message the stream takes (the server's `max_payload` bounds it too).
    pub max_msg_bytes: i32,
    /// JetStream's duplicate window for `Nats-Msg-Id` (beyond it the worker's inbox
    /// insert is the dedup).
    pub duplicate_window_secs: u64,
    /// How long the gateway waits for the publish acknowledgement before answering 503.
    pub publish_timeout_ms: u64,
    /// A message not acknowledged within this is delivered again.
    pub ack_wait_secs: u64,
    /// A partition lease not renewed within this is free for another worker.
    pub lease_secs: u64,
}

impl Default for NatsSection {
    fn default() -> Self {
        Self {
            url: "nats://127.0.0.1:4222".to_owned(),
            stream: "leadgate".to_owned(),
            partitions: 16,
            max_deliver: 5,
            max_bytes: 1024 * 1024 * 1024,
            max_msgs: -1,
            max_msg_bytes: 1024 * 1024,
            duplicate_window_secs: 120,
            publish_timeout_ms: 2000,
            ack_wait_secs: 30,
            lease_secs: 10,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EmailSection {
    /// Largest raw message accepted, from the endpoint or a mailbox, in bytes.
    pub max_message_bytes: usize,
    /// Mail from these domains (and their subdomains) is ours: stored, never a lead.
    pub own_domains: Vec<String>,
}

impl Default for EmailSection {
    fn default() -> Self {
        Self {
            max_message_bytes: 32 * 1024 * 1024,
            own_domains: Vec::new(),
        }
    }
}

/// How a mailbox connection is protected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MailboxTls {
    /// Plain TCP (a server on localhost or a private network).
    None,
    /// Plain TCP upgraded with STARTTLS.
    Starttls,
    /// TLS from the first byte (port 993).
    Tls,
}

/// One IMAP mailbox whose messages become inbound records of source `email:<name>`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MailboxSection {
    pub name: String,
    pub host: String,
    #[serde(default = "default_imap_port")]
    pub port: u16,
    #[serde(default = "default_mailbox_tls")]
    pub tls: MailboxTls,
    pub user: String,
    /// The name of the environment variable holding the password (never the password).
    pub password_env: String,
    #[serde(default = "default_folder")]
    pub folder: String,
    /// `flag` (set `\Seen`), `move:<folder>` or `delete`, once the message is durable.
    #[serde(default = "default_after")]
    pub after: String,
    /// Seconds between polls, and the longest IDLE wait.
    #[serde(default = "default_poll_seconds")]
    pub poll_seconds: u64,
    /// PEM certificates trusted for this server besides the system's roots (a private CA
    /// or a self-signed server). The server's name is verified against `host` always.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// The mapping its messages go through (default: the one serving `email:*`, which
    /// makes leads); `support_email` makes and threads tickets.
    #[serde(default)]
    pub mapping: Option<String>,
}

fn default_imap_port() -> u16 {
    143
}
fn default_mailbox_tls() -> MailboxTls {
    MailboxTls::None
}
fn default_folder() -> String {
    "INBOX".to_owned()
}
fn default_after() -> String {
    "flag".to_owned()
}
fn default_poll_seconds() -> u64 {
    60
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WhatsAppSection {
    /// The Meta app secret that keys `X-Hub-Signature-256`.
    #[serde(deserialize_with = "text")]
    pub app_secret: String,
    /// The token typed into the Meta dashboard for the subscription handshake.
    #[serde(deserialize_with = "text")]
    pub verify_token: String,
    /// Where the Graph API is (a stand-in server in tests).
    pub graph_base_url: String,
    /// The Graph API version in the path, e.g. `v21.0`.
    pub graph_version: String,
    /// The business phone number's id (Meta dashboard); messages are sent from it.
    #[serde(deserialize_with = "text")]
    pub phone_number_id: String,
    /// A system user access token with `whatsapp_business_messaging`; empty: no sending.
    #[serde(deserialize_with = "text")]
    pub access_token: String,
    /// Attempts per send (429 and 5xx are retried with backoff; other 4xx are final).
    pub send_max_attempts: u32,
    /// The first retry's wait in milliseconds; it doubles with each further attempt.
    pub send_backoff_ms: u64,
    /// A reply sent when an inbound message creates a new lead: free text …
    pub first_touch_text: Option<String>,
    /// … or an approved template's name (takes precedence over the text).
    pub first_touch_template: Option<String>,
    /// The template's language code.
    pub first_touch_language: String,
}

impl Default for WhatsAppSection {
    fn default() -> Self {
        Self {
            app_secret: String::new(),
            verify_token: String::new(),
            graph_base_url: "https://graph.facebook.com".to_owned(),
            graph_version: "v21.0".to_owned(),
            phone_number_id: String::new(),
            access_token: String::new(),
            send_max_attempts: 4,
            send_backoff_ms: 500,
            first_touch_text: None,
            first_touch_template: None,
            first_touch_language: "en_US".to_owned(),
        }
    }
}

impl WhatsAppSection {
    /// The Graph API client, when sending is configured (token and phone number id).
    pub fn client_config(&self) -> Option<crate::outbound::whatsapp::ClientConfig> {
        (!self.access_token.is_empty() && !self.phone_number_id.is_empty()).then(|| {
            crate::outbound::whatsapp::ClientConfig {
                base_url: self.graph_base_url.clone(),
                version: self.graph_version.clone(),
                phone_number_id: self.phone_number_id.clone(),
                access_token: self.access_token.clone(),
                max_attempts: self.send_max_attempts,
                backoff: std::time::Duration::from_millis(self.send_backoff_ms),
                timeout: std::time::Duration::from_secs(15),
            }
        })
    }

    /// The first-touch reply, when one is configured.
    pub fn first_touch(&self) -> Option<crate::outbound::Content> {
        let blank = |s: &&String| !s.trim().is_empty();
        if let Some(name) = self.first_touch_template.as_ref().filter(blank) {
            return Some(crate::outbound::Content::template(
                name.clone(),
                self.first_touch_language.clone(),
            ));
        }
        self.first_touch_text
            .as_ref()
            .filter(blank)
            .map(|text| crate::outbound::Content::text(text.clone()))
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ZoomSection {
    /// The app's Secret Token (keys the URL validation and event signatures).
    #[serde(deserialize_with = "text")]
    pub secret_token: String,
    /// How far `x-zm-request-timestamp` may be from our clock.
    pub timestamp_tolerance_seconds: u32,
}

impl Default for ZoomSection {
    fn default() -> Self {
        Self {
            secret_token: String::new(),
            timestamp_tolerance_seconds: 300,
        }
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CtiSection {
    pub twilio: TwilioSection,
    pub generic: CtiGenericSection,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TwilioSection {
    /// The account's auth token (keys `X-Twilio-Signature`).
    #[serde(deserialize_with = "text")]
    pub auth_token: String,
    /// The public scheme and host Twilio calls, e.g. `https://leadgate.example.com`; Twilio
    /// signs the full URL, which behind a proxy differs from the one this process sees.
    pub public_base_url: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CtiGenericSection {
    /// The shared secret keying `X-Leadgate-Signature`.
    #[serde(deserialize_with = "text")]
    pub secret: String,
    /// How far `X-Leadgate-Timestamp` may be from our clock.
    pub timestamp_tolerance_seconds: u32,
}

impl Default for CtiGenericSection {
    fn default() -> Self {
        Self {
            secret: String::new(),
            timestamp_tolerance_seconds: 300,
        }
    }
}

/// One website form; the fields of [`connectors::form::FormConfig`] less its name, which is
/// the table's key.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FormSection {
    pub allowed_origins: Vec<String>,
    pub required: Vec<String>,
    pub honeypot_field: Option<String>,
    pub thank_you_url: Option<String>,
    pub mapping: Option<String>,
    pub dedup_window_seconds: u64,
}

impl Default for FormSection {
    fn default() -> Self {
        Self {
            allowed_origins: Vec::new(),
            required: Vec::new(),
            honeypot_field: None,
            thank_you_url: None,
            mapping: None,
            dedup_window_seconds: 600,
        }
    }
}

impl FormSection {
    pub fn to_form_config(&self, name: &str) -> connectors::form::FormConfig {
        connectors::form::FormConfig {
            name: name.to_owned(),
            allowed_origins: self.allowed_origins.clone(),
            required: self.required.clone(),
            honeypot_field: self.honeypot_field.clone(),
            thank_you_url: self.thank_you_url.clone(),
            mapping: self.mapping.clone(),
            dedup_window_seconds: self.dedup_window_seconds,
        }
    }
}

/// Secrets come from environment variables too, where `12345` parses as a number: accept any
/// scalar and keep its text.
fn text<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<String, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Scalar {
        Text(String),
        Unsigned(u64),
        Signed(i64),
        Float(f64),
        Bool(bool),
    }
    Ok(match Scalar::deserialize(deserializer)? {
        Scalar::Text(text) => text,
        Scalar::Unsigned(n) => n.to_string(),
        Scalar::Signed(n) => n.to_string(),
        Scalar::Float(n) => n.to_string(),
        Scalar::Bool(b) => b.to_string(),
    })
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
            worker_batch_max: 4096,
            group_commit_max: 512,
            shutdown_timeout_secs: 30,
            role: Role::All,
            mappings_dir: PathBuf::from("mappings"),
            default_region: "GB".to_owned(),
            dedup_merge_threshold: 20.0,
            dedup_review_threshold: 10.0,
            survivorship_priority: Vec::new(),
            score_rules: default_rules(),
            assignment_rules: Vec::new(),
            max_open_leads_per_user: 0,
            qualification: Qualification::Bant,
            score_decay_per_day: 0,
            rate_limit_per_minute: 600,
            whatsapp: WhatsAppSection::default(),
            zoom: ZoomSection::default(),
            cti: CtiSection::default(),
            forms: BTreeMap::new(),
            email: EmailSection::default(),
            mailboxes: Vec::new(),
            queue: QueueKind::Embedded,
            nats: NatsSection::default(),
            search: crate::search::SearchConfig::default(),
            nurture: crate::nurture::NurtureSection::default(),
            partners: BTreeMap::new(),
            access: crate::access::AccessSection::default(),
            service: crate::service::ServiceConfig::default(),
            billing: crate::billing::BillingConfig::default(),
        }
    }
}

/// One partner of the partner API.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PartnerSection {
    /// The mapping (mappings/NAME.toml) its leads go through; default `partner`.
    pub mapping: Option<String>,
    /// Requests per minute for this partner's keys together; 0 is no limit.
    pub rate_limit_per_minute: u32,
    /// `submit` (POST /v1/partner/leads) and `status` (GET /v1/partner/leads/{id}).
    pub scopes: Vec<String>,
}

/// What a partner key may do.
pub const PARTNER_SCOPES: [&str; 2] = ["submit", "status"];

impl Default for PartnerSection {
    fn default() -> Self {
        Self {
            mapping: None,
            rate_limit_per_minute: 6000,
            scopes: PARTNER_SCOPES.iter().map(|s| (*s).to_owned()).collect(),
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

/// `LEADGATE_*` variables; `__` separates nested keys (`LEADGATE_WHATSAPP__APP_SECRET` is
/// `whatsapp.app_secret`, `LEADGATE_FORMS__CONTACT__THANK_YOU_URL` is
/// `forms.contact.thank_you_url`).
fn env_provider() -> Env {
    Env::prefixed("LEADGATE_")
        .filter(|key| is_config_variable(key.as_str()))
        // The names the search issue documents, as short forms of `search.meili_*`.
        .map(|key| match key.as_str().to_ascii_lowercase().as_str() {
            "meili_url" => "search__meili_url".into(),
            "meili_key" => "search__meili_key".into(),
            _ => key.into(),
        })
        .split("__")
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
        Self::from_figment(figment.merge(env_provider()))
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
        crate::access::AccessPolicy::compile(&self.access)
            .map_err(|e| ConfigError::Invalid(e.to_string()))?;
        crate::service::Service::new(self.service.clone())
            .map_err(|e| ConfigError::Invalid(e.to_string()))?;
        for (name, partner) in &self.partners {
            if let Some(scope) = partner
                .scopes
                .iter()
                .find(|s| !PARTNER_SCOPES.contains(&s.as_str()))
            {
                return invalid(
                    &format!("partners.{name}.scopes"),
                    &format!("unknown scope `{scope}` (known: submit, status)"),
                );
            }
        }
        if self.access.session_hours == 0 {
            return invalid("access.session_hours", "must be at least 1");
        }
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
        if self.worker_batch_max < self.worker_batch {
            return invalid("worker_batch_max", "must be at least worker_batch");
        }
        if self.dedup_review_threshold > self.dedup_merge_threshold {
            return invalid(
                "dedup_review_threshold",
                "must not exceed dedup_merge_threshold",
            );
        }
        if self.default_region.len() != 2
            || !self.default_region.chars().all(|c| c.is_ascii_alphabetic())
        {
            return invalid(
                "default_region",
                "must be an ISO 3166 alpha-2 code such as GB",
            );
        }
        if !self.database_url.is_empty()
            && !self.database_url.starts_with("sqlite:")
            && !self.database_url.starts_with("postgres:")
            && !self.database_url.starts_with("postgresql:")
        {
            return invalid("database_url", "must start with sqlite: or postgres:");
        }
        if !self.cti.twilio.auth_token.is_empty()
            && !self.cti.twilio.public_base_url.starts_with("http://")
            && !self.cti.twilio.public_base_url.starts_with("https://")
        {
            return invalid(
                "cti.twilio.public_base_url",
                "must be the http(s) URL Twilio calls when auth_token is set",
            );
        }
        if matching::normalise::normalise_phone("+14155551234", &self.default_region).is_err() {
            return invalid(
                "default_region",
                "must be an ISO 3166 region code such as GB, US or DE",
            );
        }
        if let Some(name) = self.forms.keys().find(|name| {
            name.is_empty()
                || !name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        }) {
            return invalid(
                &format!("forms.{name}"),
                "form names are letters, digits, - and _",
            );
        }
        if self.email.max_message_bytes < 1024 {
            return invalid("email.max_message_bytes", "must be at least 1024");
        }
        let nats = &self.nats;
        if nats.stream.is_empty()
            || !nats
                .stream
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return invalid("nats.stream", "a stream name is letters, digits, - and _");
        }
        if nats.partitions == 0 || nats.partitions > 1024 {
            return invalid("nats.partitions", "must be between 1 and 1024");
        }
        if nats.max_deliver < 1 {
            return invalid("nats.max_deliver", "must be at least 1");
        }
        if nats.ack_wait_secs == 0 || nats.lease_secs == 0 || nats.publish_timeout_ms == 0 {
            return invalid(
                "nats.ack_wait_secs/lease_secs/publish_timeout_ms",
                "must be at least 1",
            );
        }
        let mut names = std::collections::HashSet::new();
        for mailbox in &self.mailboxes {
            let key = format!("mailboxes.{}", mailbox.name);
            if mailbox.name.is_empty()
                || !mailbox
                    .name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.@".contains(&b))
            {
                return invalid(&key, "a mailbox name is letters, digits, -, _, . and @");
            }
            if !names.insert(mailbox.name.as_str()) {
                return invalid(&key, "two mailboxes have this name");
            }
            if mailbox.host.is_empty() || mailbox.user.is_empty() || mailbox.password_env.is_empty()
            {
                return invalid(&key, "host, user and password_env are required");
            }
            if let Some(ca_file) = &mailbox.ca_file
                && !ca_file.exists()
            {
                return invalid(&format!("{key}.ca_file"), "the file does not exist");
            }
            if crate::mailbox::AfterAction::parse(&mailbox.after).is_none() {
                return invalid(
                    &format!("{key}.after"),
                    "must be \"flag\", \"move:<folder>\" or \"delete\"",
                );
            }
            if mailbox.poll_seconds == 0 {
                return invalid(&format!("{key}.poll_seconds"), "must be at least 1");
            }
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
        let error = load_from("worker_batch = 512\nworker_batch_max = 256").unwrap_err();
        assert!(error.to_string().contains("worker_batch_max"), "{error}");
    }

    #[test]
    fn mailboxes_are_read_and_checked() {
        let base = "[[mailboxes]]\nname = \"sales\"\nhost = \"imap.internal\"\nuser = \"u\"\npassword_env = \"PW\"\n";
        let config = load_from(base).expect("a minimal mailbox is valid");
        let mailbox = &config.mailboxes[0];
        assert_eq!(
            (
                mailbox.port,
                mailbox.tls,
                mailbox.folder.as_str(),
                mailbox.after.as_str()
            ),
            (143, MailboxTls::None, "INBOX", "flag")
        );
        assert_eq!(mailbox.poll_seconds, 60);
        let tls = load_from(&format!("{base}tls = \"starttls\"\n")).expect("starttls is valid");
        assert_eq!(tls.mailboxes[0].tls, MailboxTls::Starttls);
        let moved = load_from(&format!("{base}after = \"move:Done\"\n")).expect("move is valid");
        assert_eq!(moved.mailboxes[0].after, "move:Done");
        for (extra, key) in [
            ("after = \"archive\"\n", "mailboxes.sales.after"),
            ("after = \"move:\"\n", "mailboxes.sales.after"),
            ("ca_file = \"/no/such/ca.pem\"\n", "mailboxes.sales.ca_file"),
            ("poll_seconds = 0\n", "mailboxes.sales.poll_seconds"),
            ("password = \"inline\"\n", "password"),
        ] {
            let error = load_from(&format!("{base}{extra}")).unwrap_err();
            assert!(error.to_string().contains(key), "{extra}: {error}");
        }
        let twice = format!("{base}{base}");
        let error = load_from(&twice).unwrap_err();
        assert!(error.to_string().contains("two mailboxes"), "{error}");
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
    fn channel_sections_load_and_unknown_channel_keys_are_named() {
        let config = load_from(
            r#"
            rate_limit_per_minute = 30
            [whatsapp]
            app_secret = "s3cret"
            verify_token = "tok"
            [zoom]
            secret_token = "z"
            [cti.twilio]
            auth_token = 12345
            public_base_url = "https://leadgate.example.com"
            [forms.contact]
            required = ["email"]
            honeypot_field = "website"
            "#,
        )
        .expect("valid channel configuration");
        assert_eq!(config.whatsapp.app_secret, "s3cret");
        assert_eq!(config.zoom.timestamp_tolerance_seconds, 300);
        assert_eq!(config.cti.twilio.auth_token, "12345");
        assert_eq!(config.forms["contact"].dedup_window_seconds, 600);
        assert_eq!(
            config.forms["contact"].to_form_config("contact").source(),
            "form:contact"
        );
        let error = load_from("[whatsapp]\napp_secre = \"x\"").unwrap_err();
        assert!(error.to_string().contains("app_secre"), "{error}");
        let error = load_from("[forms.contact]\nrequird = []").unwrap_err();
        assert!(error.to_string().contains("requird"), "{error}");
        let error = load_from("default_region = \"Atlantis\"").unwrap_err();
        assert!(error.to_string().contains("default_region"), "{error}");
        let error = load_from("[cti.twilio]\nauth_token = \"t\"").unwrap_err();
        assert!(error.to_string().contains("public_base_url"), "{error}");
    }

    #[test]
    fn nested_keys_come_from_the_environment_split_on_double_underscores() {
        // SAFETY: this test alone touches these variables; other tests read none of them.
        unsafe {
            std::env::set_var("LEADGATE_WHATSAPP__APP_SECRET", "from-env");
            std::env::set_var("LEADGATE_FORMS__ENVFORM__DEDUP_WINDOW_SECONDS", "5");
            std::env::set_var("LEADGATE_MEILI_URL", "http://meili.internal:7700");
            std::env::set_var("LEADGATE_SEARCH__MEILI_INDEX", "crm");
        }
        let config = Config::from_figment(
            Figment::from(Serialized::defaults(Config::default())).merge(env_provider()),
        );
        unsafe {
            std::env::remove_var("LEADGATE_WHATSAPP__APP_SECRET");
            std::env::remove_var("LEADGATE_FORMS__ENVFORM__DEDUP_WINDOW_SECONDS");
            std::env::remove_var("LEADGATE_MEILI_URL");
            std::env::remove_var("LEADGATE_SEARCH__MEILI_INDEX");
        }
        let config = config.expect("environment configuration is valid");
        assert_eq!(config.whatsapp.app_secret, "from-env");
        assert_eq!(config.forms["envform"].dedup_window_seconds, 5);
        assert_eq!(config.search.meili_url, "http://meili.internal:7700");
        assert_eq!(config.search.meili_index, "crm");
    }

    #[test]
    fn a_foreign_database_scheme_is_refused() {
        let error = load_from("database_url = \"mysql://x\"").unwrap_err();
        assert!(error.to_string().contains("database_url"), "{error}");
    }

    #[test]
    fn the_nats_queue_is_chosen_by_config_and_its_limits_are_checked() {
        let config = load_from(
            "queue = \"nats\"\n[nats]\nurl = \"nats://10.0.0.5:4222\"\nstream = \"leads\"\npartitions = 32",
        )
        .expect("valid");
        assert_eq!(config.queue, QueueKind::Nats);
        assert_eq!(config.nats.partitions, 32);
        assert_eq!(config.nats.max_deliver, 5, "the rest keep their defaults");
        assert_eq!(load_from("").expect("valid").queue, QueueKind::Embedded);
        let error = load_from("[nats]\npartitions = 0").unwrap_err();
        assert!(error.to_string().contains("nats.partitions"), "{error}");
        let error = load_from("[nats]\nstream = \"a.b\"").unwrap_err();
        assert!(error.to_string().contains("nats.stream"), "{error}");
    }
}
