//! A client for the WhatsApp Cloud API's messages endpoint (Meta Graph API):
//! `POST {base_url}/{version}/{phone_number_id}/messages` with `Authorization: Bearer`.
//!
//! Request bodies are the documented ones:
//!
//! ```json
//! {"messaging_product": "whatsapp", "recipient_type": "individual", "to": "16315551181",
//!  "type": "text", "text": {"body": "Hello", "preview_url": false}}
//! {"messaging_product": "whatsapp", "recipient_type": "individual", "to": "16315551181",
//!  "type": "template", "template": {"name": "welcome", "language": {"code": "en_US"},
//!  "components": [...]}}
//! ```
//!
//! A success answers `{"messaging_product","contacts":[{"input","wa_id"}],"messages":[{"id"}]}`;
//! an error answers `{"error":{"message","type","code","error_subcode","fbtrace_id"}}`.
//! 429 and 5xx answers (and connection failures) are retried with exponential backoff,
//! honouring `Retry-After`; any other 4xx is final.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// How the client reaches the Graph API (`[whatsapp]` in leadgate.toml).
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// `https://graph.facebook.com`, or a stand-in in tests.
    pub base_url: String,
    /// `v21.0` …
    pub version: String,
    pub phone_number_id: String,
    pub access_token: String,
    /// Attempts per send, the first included.
    pub max_attempts: u32,
    /// The first retry waits this long; each further one twice as long.
    pub backoff: Duration,
    pub timeout: Duration,
}

/// What a message says: free-form text (inside the 24-hour customer service window) or
/// an approved template.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum Content {
    Text { text: Text },
    Template { template: Template },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Text {
    pub body: String,
    #[serde(default)]
    pub preview_url: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Template {
    pub name: String,
    pub language: Language,
    /// Header, body and button parameters, passed through as Meta documents them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub components: Vec<Value>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Language {
    pub code: String,
}

impl Content {
    pub fn text(body: impl Into<String>) -> Self {
        Content::Text {
            text: Text {
                body: body.into(),
                preview_url: false,
            },
        }
    }

    pub fn template(name: impl Into<String>, language: impl Into<String>) -> Self {
        Content::Template {
            template: Template {
                name: name.into(),
                language: Language {
                    code: language.into(),
                },
                components: Vec::new(),
            },
        }
    }

    /// A one-line description for the timeline.
    pub fn summary(&self) -> String {
        match self {
            Content::Text { text } => text.body.clone(),
            Content::Template { template } => {
                format!("template {} ({})", template.name, template.language.code)
            }
        }
    }
}

/// The request body of one message.
#[derive(Debug, Serialize)]
struct Outgoing<'a> {
    messaging_product: &'static str,
    recipient_type: &'static str,
    to: &'a str,
    #[serde(flatten)]
    content: &'a Content,
}

/// A message Meta accepted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Sent {
    /// The `wamid.…` id later status webhooks report on.
    pub message_id: String,
    /// The recipient's WhatsApp id, when Meta names it.
    pub wa_id: Option<String>,
    /// `accepted`, `held_for_quality_assessment` … when Meta says.
    pub message_status: Option<String>,
}

#[derive(Debug, Deserialize)]
struct SendResponse {
    #[serde(default)]
    contacts: Vec<ResponseContact>,
    #[serde(default)]
    messages: Vec<ResponseMessage>,
}

#[derive(Debug, Deserialize)]
struct ResponseContact {
    wa_id: Option<String>,
}

#[derive(Debug, Deserialize)]
struct ResponseMessage {
    id: String,
    message_status: Option<String>,
}

/// Meta's error object.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GraphError {
    pub message: String,
    #[serde(rename = "type", default)]
    pub error_type: String,
    pub code: i64,
    #[serde(default)]
    pub error_subcode: Option<i64>,
    #[serde(default)]
    pub fbtrace_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_data: Option<Value>,
}

#[derive(Debug, Deserialize)]
struct ErrorEnvelope {
    error: GraphError,
}

#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// Meta refused the message (4xx other than 429): retrying the same request will not help.
    #[error("WhatsApp refused the message (HTTP {status}, code {}): {}", .error.code, .error.message)]
    Rejected { status: u16, error: Box<GraphError> },
    /// 429, 5xx or no answer, still so after every attempt.
    #[error("WhatsApp unavailable after {attempts} attempt(s): {detail}")]
    Unavailable {
        attempts: u32,
        status: Option<u16>,
        error: Option<Box<GraphError>>,
        detail: String,
    },
    /// A 2xx answer that is not the documented success body.
    #[error("unexpected answer from WhatsApp: {0}")]
    InvalidResponse(String),
    #[error("cannot build the HTTP client: {0}")]
    Client(String),
}

impl SendError {
    /// Worth trying again later (the outbound queue does so).
    pub fn is_transient(&self) -> bool {
        matches!(self, SendError::Unavailable { .. })
    }

    /// Meta's error, when it sent one.
    pub fn graph_error(&self) -> Option<&GraphError> {
        match self {
            SendError::Rejected { error, .. } => Some(error),
            SendError::Unavailable { error, .. } => error.as_deref(),
            _ => None,
        }
    }
}

/// Longest wait a `Retry-After` may ask for before we give up on this attempt series.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(30);

#[derive(Clone)]
pub struct WhatsAppClient {
    http: reqwest::Client,
    config: ClientConfig,
}

impl WhatsAppClient {
    pub fn new(config: ClientConfig) -> Result<Self, SendError> {
        let http = reqwest::Client::builder()
            .timeout(config.timeout)
            .user_agent(concat!("leadgate/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| SendError::Client(e.to_string()))?;
        Ok(Self { http, config })
    }

    fn endpoint(&self) -> String {
        format!(
            "{}/{}/{}/messages",
            self.config.base_url.trim_end_matches('/'),
            self.config.version.trim_matches('/'),
            self.config.phone_number_id
        )
    }

    /// Sends one message to `to` (a WhatsApp id or phone number, digits).
    pub async fn send(&self, to: &str, content: &Content) -> Result<Sent, SendError> {
        let body = Outgoing {
            messaging_product: "whatsapp",
            recipient_type: "individual",
            to,
            content,
        };
        let attempts = self.config.max_attempts.max(1);
        let mut wait = self.config.backoff;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let answer = self
                .http
                .post(self.endpoint())
                .bearer_auth(&self.config.access_token)
                .json(&body)
                .send()
                .await;
            let (status, error, detail, retry_after) = match answer {
                Err(error) => (None, None, error.to_string(), None),
                Ok(response) => {
                    let status = response.status();
                    let retry_after = response
                        .headers()
                        .get(reqwest::header::RETRY_AFTER)
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.trim().parse::<u64>().ok())
                        .map(Duration::from_secs);
                    let bytes = response.bytes().await.unwrap_or_default();
                    if status.is_success() {
                        return parse_success(&bytes);
                    }
                    let error = serde_json::from_slice::<ErrorEnvelope>(&bytes)
                        .ok()
                        .map(|e| Box::new(e.error));
                    let code = status.as_u16();
                    if !(code == 429 || status.is_server_error()) {
                        let error = error.unwrap_or_else(|| {
                            Box::new(GraphError {
                                message: String::from_utf8_lossy(&bytes)
                                    .chars()
                                    .take(500)
                                    .collect(),
                                error_type: String::new(),
                                code: i64::from(code),
                                error_subcode: None,
                                fbtrace_id: None,
                                error_data: None,
                            })
                        });
                        return Err(SendError::Rejected {
                            status: code,
                            error,
                        });
                    }
                    let detail = error
                        .as_ref()
                        .map_or_else(|| format!("HTTP {code}"), |e| e.message.clone());
                    (Some(code), error, detail, retry_after)
                }
            };
            if attempt >= attempts {
                return Err(SendError::Unavailable {
                    attempts: attempt,
                    status,
                    error,
                    detail,
                });
            }
            let pause = retry_after.map_or(wait, |asked| asked.min(MAX_RETRY_AFTER));
            tracing::debug!(attempt, ?status, ?pause, "WhatsApp send failed; retrying");
            tokio::time::sleep(pause).await;
            wait = wait.saturating_mul(2);
        }
    }
}

fn parse_success(bytes: &[u8]) -> Result<Sent, SendError> {
    let response: SendResponse =
        serde_json::from_slice(bytes).map_err(|e| SendError::InvalidResponse(format!("{e}")))?;
    let message = response
        .messages
        .into_iter()
        .next()
        .ok_or_else(|| SendError::InvalidResponse("no messages[0].id".into()))?;
    Ok(Sent {
        message_id: message.id,
        wa_id: response.contacts.into_iter().next().and_then(|c| c.wa_id),
        message_status: message.message_status,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn text_and_template_bodies_are_the_documented_shape() {
        let text = Content::text("Hi there");
        let body = serde_json::to_value(Outgoing {
            messaging_product: "whatsapp",
            recipient_type: "individual",
            to: "16315551181",
            content: &text,
        })
        .unwrap();
        assert_eq!(
            body,
            json!({"messaging_product": "whatsapp", "recipient_type": "individual",
                   "to": "16315551181", "type": "text",
                   "text": {"body": "Hi there", "preview_url": false}})
        );
        let template = Content::template("hello_world", "en_US");
        let body = serde_json::to_value(Outgoing {
            messaging_product: "whatsapp",
            recipient_type: "individual",
            to: "16315551181",
            content: &template,
        })
        .unwrap();
        assert_eq!(
            body,
            json!({"messaging_product": "whatsapp", "recipient_type": "individual",
                   "to": "16315551181", "type": "template",
                   "template": {"name": "hello_world", "language": {"code": "en_US"}}})
        );
    }

    #[test]
    fn the_documented_success_body_parses() {
        let sent = parse_success(
            br#"{"messaging_product":"whatsapp","contacts":[{"input":"+16505551234","wa_id":"16505551234"}],
                "messages":[{"id":"wamid.HBgLMTY1MDUwNzY1MjAVAgARGBI5QTNDQTVCM0Q0Q0Q2RTY3RTcA"}]}"#,
        )
        .unwrap();
        assert_eq!(
            sent.message_id,
            "wamid.HBgLMTY1MDUwNzY1MjAVAgARGBI5QTNDQTVCM0Q0Q0Q2RTY3RTcA"
        );
        assert_eq!(sent.wa_id.as_deref(), Some("16505551234"));
        assert!(parse_success(br#"{"messages":[]}"#).is_err());
    }
}
