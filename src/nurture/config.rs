//! `[nurture]` in leadgate.toml: which mailer sends, from where, the tracking links'
//! base URL and key, sending windows and limits, retry policy and task rules.

use serde::{Deserialize, Serialize};

/// Which mailer hands emails over; `none` keeps them queued (nothing is sent).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MailerKind {
    None,
    Smtp,
    Sendgrid,
    Mailgun,
    Ses,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SmtpTls {
    /// Plain SMTP (a relay on localhost or a private network).
    None,
    /// Plain TCP upgraded with STARTTLS (required, port 587).
    Starttls,
    /// TLS from the first byte (port 465).
    Tls,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SmtpSection {
    pub host: String,
    pub port: u16,
    pub tls: SmtpTls,
    /// Empty: no AUTH.
    pub user: String,
    /// The name of the environment variable holding the password (never the password).
    pub password_env: String,
    pub timeout_secs: u64,
    /// Connections kept open to the server.
    pub pool_size: u32,
    /// A PEM file of extra trusted roots (a private relay's CA), besides the system's.
    pub ca_file: String,
}

impl Default for SmtpSection {
    fn default() -> Self {
        Self {
            host: "127.0.0.1".into(),
            port: 25,
            tls: SmtpTls::None,
            user: String::new(),
            password_env: String::new(),
            timeout_secs: 30,
            pool_size: 4,
            ca_file: String::new(),
        }
    }
}

/// An HTTP email API: where it is and which environment variable holds its key.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ApiSection {
    pub base_url: String,
    pub api_key_env: String,
    /// Mailgun's sending domain (`/v3/{domain}/messages`).
    pub domain: String,
    /// Amazon SES region (`us-east-1` …) and the secret key's variable; `api_key_env`
    /// names the access key id's variable.
    pub region: String,
    pub secret_key_env: String,
    pub timeout_secs: u64,
    /// Mailgun: the environment variable holding the webhook signing key (its events are
    /// signed with HMAC-SHA256 of `timestamp + token`); empty: Mailgun webhooks are off.
    pub webhook_signing_key_env: String,
    /// SendGrid: the Signed Event Webhook's verification key as SendGrid shows it (base64
    /// DER SubjectPublicKeyInfo of a P-256 key); empty: SendGrid webhooks are off.
    pub webhook_public_key: String,
    /// SES through SNS: the topics whose notifications are taken (anyone can have SNS
    /// sign messages of their own topic); empty: SES webhooks are off.
    pub sns_topic_arns: Vec<String>,
    /// Hosts SNS signing certificates and subscription confirmations may come from
    /// (https only); `*` stands for one DNS label.
    pub sns_cert_hosts: Vec<String>,
    /// A PEM file of extra trusted roots for fetching from those hosts (tests).
    pub sns_ca_file: String,
}

impl Default for ApiSection {
    fn default() -> Self {
        Self {
            base_url: String::new(),
            api_key_env: String::new(),
            domain: String::new(),
            region: "us-east-1".into(),
            secret_key_env: String::new(),
            timeout_secs: 30,
            webhook_signing_key_env: String::new(),
            webhook_public_key: String::new(),
            sns_topic_arns: Vec::new(),
            sns_cert_hosts: vec!["sns.*.amazonaws.com".into()],
            sns_ca_file: String::new(),
        }
    }
}

/// A rule that creates tasks for owners (`[[nurture.task_rules]]`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TaskRule {
    pub name: String,
    /// `missed_call`, `no_contact` (no activity for `days`) or `qualified_untouched`
    /// (qualified, no activity since for `hours`).
    pub when: String,
    #[serde(default)]
    pub days: i64,
    #[serde(default = "default_untouched_hours")]
    pub hours: i64,
    pub subject: String,
    /// The task is due this many hours after it is created.
    #[serde(default = "default_due_hours")]
    pub due_hours: i64,
}

fn default_untouched_hours() -> i64 {
    24
}

fn default_due_hours() -> i64 {
    24
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NurtureSection {
    pub mailer: MailerKind,
    /// The default sending identity, `Name <address>` or an address.
    pub from: String,
    /// Where recipients reach leadgate: the base of tracking, redirect and unsubscribe links.
    pub public_url: String,
    /// Key of the tracking links (HMAC-SHA256); empty: one generated key kept in the store.
    pub tracking_secret: String,
    /// Hosts a click link may redirect to (besides `public_url`'s); subdomains included.
    pub redirect_allow_hosts: Vec<String>,
    /// `List-Unsubscribe` mailto address; empty: only the https link.
    pub unsubscribe_mailto: String,
    /// An open within this many seconds of sending is a scanner's, flagged not counted.
    pub bot_open_secs: u64,
    /// The first retry of a temporarily failed send waits this long, doubling each time.
    pub retry_base_ms: u64,
    /// Attempts before a send is given up.
    pub max_attempts: i64,
    /// A claimed send not settled within this is claimed again (its process stopped).
    pub lease_secs: u64,
    /// Emails one mailbox (From address) sends per UTC day; 0 is no limit.
    pub daily_limit_per_mailbox: i64,
    /// Emails go out between these local hours of the recipient (`time_zone` of the lead,
    /// else `default_time_zone`); start == end means any time.
    pub window_start_hour: u32,
    pub window_end_hour: u32,
    pub default_time_zone: String,
    /// How often the scheduler and the sender look for due work.
    pub poll_ms: u64,
    /// An extra gate on the provider webhooks: when set, `?token=` must carry it too.
    /// Each provider's webhook is on when its own signature check is configured.
    pub webhook_token: String,
    /// Mailgun and SendGrid webhook timestamps further than this from now are refused.
    pub webhook_tolerance_secs: u64,
    pub smtp: SmtpSection,
    pub sendgrid: ApiSection,
    pub mailgun: ApiSection,
    pub ses: ApiSection,
    pub task_rules: Vec<TaskRule>,
    /// An open task this many hours past due goes to the owner's manager; 0: never.
    pub escalate_overdue_hours: i64,
}

impl Default for NurtureSection {
    fn default() -> Self {
        Self {
            mailer: MailerKind::None,
            from: "leadgate <noreply@localhost>".into(),
            public_url: "http://127.0.0.1:8080".into(),
            tracking_secret: String::new(),
            redirect_allow_hosts: Vec::new(),
            unsubscribe_mailto: String::new(),
            bot_open_secs: 10,
            retry_base_ms: 60_000,
            max_attempts: 8,
            lease_secs: 300,
            daily_limit_per_mailbox: 500,
            window_start_hour: 8,
            window_end_hour: 19,
            default_time_zone: "UTC".into(),
            poll_ms: 1000,
            webhook_token: String::new(),
            webhook_tolerance_secs: 300,
            smtp: SmtpSection::default(),
            sendgrid: ApiSection {
                base_url: "https://api.sendgrid.com".into(),
                ..ApiSection::default()
            },
            mailgun: ApiSection {
                base_url: "https://api.mailgun.net".into(),
                ..ApiSection::default()
            },
            ses: ApiSection::default(),
            task_rules: Vec::new(),
            escalate_overdue_hours: 24,
        }
    }
}

impl NurtureSection {
    /// The public base URL without a trailing slash.
    pub fn base(&self) -> &str {
        self.public_url.trim_end_matches('/')
    }

    /// Whether a click may redirect to `host`.
    pub fn host_allowed(&self, host: &str) -> bool {
        let host = host.to_ascii_lowercase();
        let own = url_host(&self.public_url);
        own.as_deref() == Some(host.as_str())
            || self.redirect_allow_hosts.iter().any(|allowed| {
                let allowed = allowed.trim().trim_start_matches("*.").to_ascii_lowercase();
                !allowed.is_empty() && (host == allowed || host.ends_with(&format!(".{allowed}")))
            })
    }

    /// The address part of `from`.
    pub fn from_address(&self) -> String {
        address_of(&self.from)
    }
}

/// `Name <a@b>` → `a@b`; a bare address as given; lower-cased.
pub fn address_of(mailbox: &str) -> String {
    let text = mailbox.trim();
    let inner = match (text.rfind('<'), text.rfind('>')) {
        (Some(start), Some(end)) if start < end => &text[start + 1..end],
        _ => text,
    };
    inner.trim().to_ascii_lowercase()
}

/// The host of an `http(s)://` URL, lower-cased.
pub fn url_host(url: &str) -> Option<String> {
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))?;
    let authority = rest.split(['/', '?', '#']).next()?;
    let host_port = authority.rsplit('@').next()?;
    let host = if let Some(stripped) = host_port.strip_prefix('[') {
        stripped.split(']').next()?
    } else {
        host_port.split(':').next()?
    };
    (!host.is_empty()).then(|| host.to_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allow_list_takes_subdomains_but_not_lookalikes() {
        let section = NurtureSection {
            public_url: "https://crm.example.com/".into(),
            redirect_allow_hosts: vec!["example.org".into()],
            ..NurtureSection::default()
        };
        assert!(section.host_allowed("example.org"));
        assert!(section.host_allowed("www.example.org"));
        assert!(section.host_allowed("crm.example.com"));
        assert!(!section.host_allowed("evilexample.org"));
        assert!(!section.host_allowed("example.org.evil.net"));
        assert_eq!(
            url_host("https://user@www.Example.org:8443/x?y").as_deref(),
            Some("www.example.org")
        );
        assert_eq!(url_host("javascript:alert(1)"), None);
        assert_eq!(address_of("Sales <Sales@Example.com>"), "sales@example.com");
    }

    #[test]
    fn a_mailbox_is_its_address_whatever_the_display_name() {
        // The daily limit counts per mailbox by this key (`email_outbox.mailbox_address`).
        for from in [
            "Sales <sales@example.com>",
            "sales@example.com",
            "SALES@Example.COM",
            "  <sales@example.com>  ",
            "\"Sales, EMEA <team>\" <Sales@example.com>",
            "Vertrieb <sales@example.com >",
        ] {
            assert_eq!(address_of(from), "sales@example.com", "{from}");
        }
        assert_ne!(
            address_of("Sales <sales@example.com>"),
            address_of("Sales <sales@example.org>")
        );
    }
}
