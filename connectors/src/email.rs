//! Inbound email: one raw RFC 5322 message (as fetched from a mailbox or posted by an MTA
//! hook) into one record, plus [`classify`] so auto-replies, bounces and our own mail are not
//! turned into leads, and [`extract_signature`] for the sender's phone, company and title.
//!
//! Parsing uses `mail-parser`, which never panics on malformed MIME and decodes
//! charsets, encoded words and transfer encodings; HTML-only mail is rendered to text by it.

use chrono::{DateTime, Utc};
use mail_parser::{Message, MessageParser, MimeHeaders};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::signature::sha256_hex;
use crate::util::{put_opt, put_str};
use crate::{Fields, Inbound};

/// Text bodies beyond this many characters are cut in `fields` (the raw message keeps all).
const MAX_TEXT_CHARS: usize = 100_000;

/// Configuration of one mailbox.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmailConfig {
    /// Becomes the source `email:<mailbox>`, e.g. `sales@example.com`.
    pub mailbox: String,
    /// Mail from these domains (and their subdomains) is ours, not a lead.
    #[serde(default)]
    pub own_domains: Vec<String>,
}

impl EmailConfig {
    pub fn source(&self) -> String {
        format!("email:{}", self.mailbox)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum EmailError {
    #[error("message is empty")]
    Empty,
    #[error("message could not be parsed as RFC 5322")]
    Unparseable,
}

/// What a message is, for deciding whether it becomes a lead.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Classification {
    Lead,
    AutoReply,
    /// A delivery status notification; `recipients` are the addresses that failed.
    Bounce {
        recipients: Vec<String>,
    },
    OwnDomain,
    NoSender,
}

/// Decodes a raw message. Fields: `from_name`, `from_address`, `reply_to_address`, `to`, `cc`,
/// `subject`, `date`, `occurred_at`, `message_id`, `in_reply_to`, `references`, `text`,
/// `text_source` (`text`|`html`), `attachments` [{filename, size, content_type}], the
/// `signature_*` fields, and the headers [`classify`] reads.
pub fn decode(source: &str, raw: &[u8], received_at: DateTime<Utc>) -> Result<Inbound, EmailError> {
    if raw.iter().all(u8::is_ascii_whitespace) {
        return Err(EmailError::Empty);
    }
    let message = MessageParser::default()
        .parse(raw)
        .ok_or(EmailError::Unparseable)?;
    let mut fields = Fields::new();

    if let Some(from) = message.from().and_then(|from| from.first()) {
        put_opt(&mut fields, "from_name", from.name());
        put_opt(&mut fields, "from_address", from.address());
    }
    if let Some(reply_to) = message.reply_to().and_then(|reply_to| reply_to.first()) {
        put_opt(&mut fields, "reply_to_address", reply_to.address());
    }
    put_addresses(&mut fields, "to", message.to());
    put_addresses(&mut fields, "cc", message.cc());
    put_opt(&mut fields, "subject", message.subject());
    if let Some(date) = message.date() {
        put_str(&mut fields, "date", &date.to_rfc3339());
        if let Ok(at) = DateTime::parse_from_rfc3339(&date.to_rfc3339()) {
            fields.insert(
                "occurred_at".into(),
                at.with_timezone(&Utc).to_rfc3339().into(),
            );
        }
    }
    let message_id = message.message_id().map(str::to_owned);
    put_opt(&mut fields, "message_id", message_id.as_deref());
    let in_reply_to = text_list(message.in_reply_to());
    if let Some(first) = in_reply_to.first() {
        put_str(&mut fields, "in_reply_to", first);
    }
    let references = text_list(message.references());
    if !references.is_empty() {
        fields.insert("references".into(), json!(references));
    }

    put_body(&mut fields, &message);
    put_attachments(&mut fields, &message);
    put_classification_inputs(&mut fields, &message);

    Ok(Inbound {
        source: source.to_owned(),
        // Without a Message-ID the content is the identity: the same message re-fetched
        // from the mailbox must not become a second lead.
        external_id: Some(message_id.unwrap_or_else(|| format!("sha256:{}", sha256_hex(raw)))),
        received_at,
        fields,
        raw: raw.to_vec(),
    })
}

fn put_addresses(fields: &mut Fields, key: &str, address: Option<&mail_parser::Address<'_>>) {
    let Some(address) = address else {
        return;
    };
    let list: Vec<String> = address
        .iter()
        .filter_map(|addr| addr.address())
        .map(str::to_owned)
        .collect();
    if !list.is_empty() {
        fields.insert(key.into(), json!(list));
    }
}

fn text_list(value: &mail_parser::HeaderValue<'_>) -> Vec<String> {
    // List first: as_text() on a list answers only one of its items.
    if let Some(list) = value.as_text_list() {
        list.iter().map(|item| item.to_string()).collect()
    } else if let Some(text) = value.as_text() {
        vec![text.to_owned()]
    } else {
        Vec::new()
    }
}

fn put_body(fields: &mut Fields, message: &Message<'_>) {
    let from_html = message.text_part(0).is_some_and(|part| part.is_text_html());
    let Some(text) = message.body_text(0) else {
        return;
    };
    let text = text.trim();
    if text.is_empty() {
        return;
    }
    let (text, truncated) = match text.char_indices().nth(MAX_TEXT_CHARS) {
        Some((cut, _)) => (&text[..cut], true),
        None => (text, false),
    };
    put_str(fields, "text", text);
    put_str(
        fields,
        "text_source",
        if from_html { "html" } else { "text" },
    );
    if truncated {
        fields.insert("text_truncated".into(), true.into());
    }
    if let Some(signature) = extract_signature(text) {
        put_str(fields, "signature_text", &signature.text);
        put_opt(fields, "signature_name", signature.name.as_deref());
        put_opt(fields, "signature_phone", signature.phone.as_deref());
        put_opt(fields, "signature_company", signature.company.as_deref());
        put_opt(
            fields,
            "signature_job_title",
            signature.job_title.as_deref(),
        );
    }
}

fn put_attachments(fields: &mut Fields, message: &Message<'_>) {
    let attachments: Vec<Value> = message
        .attachments()
        .map(|part| {
            let content_type = part.content_type().map(|ct| match ct.subtype() {
                Some(subtype) => format!("{}/{}", ct.ctype(), subtype),
                None => ct.ctype().to_owned(),
            });
            json!({
                "filename": part.attachment_name(),
                "size": part.len(),
                "content_type": content_type,
            })
        })
        .collect();
    if !attachments.is_empty() {
        fields.insert("attachments".into(), Value::Array(attachments));
    }
}

/// Copies the headers and DSN data [`classify`] needs, so classification works on the record
/// alone (and can be re-run on stored records).
fn put_classification_inputs(fields: &mut Fields, message: &Message<'_>) {
    for (header, key) in [
        ("Auto-Submitted", "auto_submitted"),
        ("X-Autoreply", "x_autoreply"),
        ("X-Autorespond", "x_autorespond"),
        ("Precedence", "precedence"),
    ] {
        put_opt(fields, key, header_text(message, header).as_deref());
    }
    if let Some(content_type) = message.content_type() {
        let full = match content_type.subtype() {
            Some(subtype) => format!("{}/{}", content_type.ctype(), subtype),
            None => content_type.ctype().to_owned(),
        };
        put_str(fields, "content_type", &full.to_ascii_lowercase());
        put_opt(fields, "report_type", content_type.attribute("report-type"));
    }
    let mut reports = Vec::new();
    for part in &message.parts {
        let is_delivery_status = part.content_type().is_some_and(|ct| {
            ct.ctype().eq_ignore_ascii_case("message")
                && ct.subtype().is_some_and(|subtype| {
                    subtype.eq_ignore_ascii_case("delivery-status")
                        || subtype.eq_ignore_ascii_case("global-delivery-status")
                })
        });
        if is_delivery_status {
            reports.extend(parse_delivery_status(&String::from_utf8_lossy(
                part.contents(),
            )));
        }
    }
    if !reports.is_empty() {
        let failed: Vec<&str> = reports
            .iter()
            .filter(|report| report.failed)
            .map(|report| report.recipient.as_str())
            .collect();
        let statuses: Vec<Value> = reports
            .iter()
            .map(|report| json!({"recipient": report.recipient, "action": report.action, "status": report.status}))
            .collect();
        fields.insert("bounce_recipients".into(), json!(failed));
        fields.insert("delivery_status".into(), Value::Array(statuses));
    }
}

/// A header as unfolded text, whatever structure mail-parser gave it.
fn header_text(message: &Message<'_>, name: &str) -> Option<String> {
    let value = message.header(name)?;
    let text = match value.as_text() {
        Some(text) => text.to_owned(),
        None => message.header_raw(name)?.to_owned(),
    };
    let text = text.split_whitespace().collect::<Vec<_>>().join(" ");
    (!text.is_empty()).then_some(text)
}

struct RecipientReport {
    recipient: String,
    action: Option<String>,
    status: Option<String>,
    failed: bool,
}

/// RFC 3464 per-recipient blocks: `Final-Recipient: rfc822; addr`, `Action:`, `Status:`.
/// A recipient failed when its Action is `failed` or its Status is permanent (5.x.x).
fn parse_delivery_status(report: &str) -> Vec<RecipientReport> {
    let mut reports = Vec::new();
    let normalised = report.replace("\r\n", "\n");
    for block in normalised.split("\n\n") {
        let mut recipient = None;
        let mut action = None;
        let mut status = None;
        for line in block.lines() {
            let Some((name, value)) = line.split_once(':') else {
                continue;
            };
            let value = value.trim();
            match name.trim().to_ascii_lowercase().as_str() {
                "final-recipient" => {
                    let address = value.split_once(';').map_or(value, |(_, addr)| addr);
                    let address = address.trim().trim_matches(['<', '>']);
                    if !address.is_empty() {
                        recipient = Some(address.to_owned());
                    }
                }
                "action" => action = Some(value.to_ascii_lowercase()),
                "status" => status = Some(value.to_owned()),
                _ => {}
            }
        }
        if let Some(recipient) = recipient {
            let failed = action.as_deref() == Some("failed")
                || status
                    .as_deref()
                    .is_some_and(|status| status.starts_with('5'));
            reports.push(RecipientReport {
                recipient,
                action,
                status,
                failed,
            });
        }
    }
    reports
}

/// Decides whether a decoded message is a lead. Checked in order: no sender, bounce
/// (multipart/report delivery-status, mailer-daemon/postmaster senders), auto-reply
/// (Auto-Submitted other than `no`, X-Autoreply, X-Autorespond, Precedence bulk/auto_reply/
/// junk/list, out-of-office subjects), own domain.
pub fn classify(record: &Inbound, own_domains: &[String]) -> Classification {
    let text = |key: &str| record.fields.get(key).and_then(Value::as_str);
    let Some(from) = text("from_address").filter(|from| from.contains('@')) else {
        return Classification::NoSender;
    };
    let from = from.to_ascii_lowercase();
    let (local, domain) = from.rsplit_once('@').unwrap_or((from.as_str(), ""));

    let is_report = text("content_type") == Some("multipart/report")
        && text("report_type").is_some_and(|kind| kind.eq_ignore_ascii_case("delivery-status"));
    let is_daemon = matches!(local, "mailer-daemon" | "postmaster" | "mail-daemon");
    if is_report || is_daemon || record.fields.contains_key("bounce_recipients") {
        let recipients = record
            .fields
            .get("bounce_recipients")
            .and_then(Value::as_array)
            .map(|list| {
                list.iter()
                    .filter_map(Value::as_str)
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default();
        return Classification::Bounce { recipients };
    }

    let auto_submitted =
        text("auto_submitted").is_some_and(|value| !value.eq_ignore_ascii_case("no"));
    let precedence = text("precedence").is_some_and(|value| {
        ["bulk", "auto_reply", "junk", "list"]
            .iter()
            .any(|kind| value.eq_ignore_ascii_case(kind))
    });
    let auto_subject = text("subject").is_some_and(is_auto_reply_subject);
    if auto_submitted
        || text("x_autoreply").is_some()
        || text("x_autorespond").is_some()
        || precedence
        || auto_subject
    {
        return Classification::AutoReply;
    }

    let is_own = own_domains.iter().any(|own| {
        let own = own.trim().trim_start_matches('@').to_ascii_lowercase();
        !own.is_empty() && (domain == own || domain.ends_with(&format!(".{own}")))
    });
    if is_own {
        return Classification::OwnDomain;
    }
    Classification::Lead
}

fn is_auto_reply_subject(subject: &str) -> bool {
    let subject = subject.to_lowercase();
    [
        "out of office",
        "out of the office",
        "automatic reply",
        "auto-reply",
        "autoreply",
        "auto reply",
        "abwesenheitsnotiz",
    ]
    .iter()
    .any(|marker| subject.contains(marker))
}

/// What a sender's signature block says about them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignatureBlock {
    pub text: String,
    pub name: Option<String>,
    pub phone: Option<String>,
    pub company: Option<String>,
    pub job_title: Option<String>,
}

/// Finds the signature block of a plain-text body: the lines after a `-- ` delimiter, or else
/// the last block of short lines, ignoring quoted replies below it. Returns `None` when there
/// is no plausible block.
pub fn extract_signature(body: &str) -> Option<SignatureBlock> {
    let lines: Vec<&str> = own_text_lines(body);
    let block: Vec<&str> = match lines.iter().rposition(|line| line.trim_end() == "--") {
        Some(delimiter) => lines[delimiter + 1..]
            .iter()
            .map(|line| line.trim())
            .filter(|line| !line.is_empty())
            .take(10)
            .collect(),
        None => after_valediction(&lines).or_else(|| last_short_block(&lines))?,
    };
    let block: Vec<&str> = block
        .into_iter()
        .skip_while(|line| is_valediction(line))
        .collect();
    if block.is_empty() {
        return None;
    }
    let mut signature = SignatureBlock {
        text: block.join("\n"),
        ..SignatureBlock::default()
    };
    for (index, line) in block.iter().enumerate() {
        if signature.phone.is_none()
            && let Some(phone) = find_phone(line)
        {
            signature.phone = Some(phone);
            continue;
        }
        let lower = line.to_lowercase();
        if line.contains('@') || lower.contains("www.") || lower.contains("http") {
            continue;
        }
        if index == 0 && looks_like_name(line) {
            signature.name = Some((*line).to_owned());
            continue;
        }
        read_title_and_company(line, &mut signature);
    }
    Some(signature)
}

/// The body above any quoted reply ("> …", "On … wrote:", Outlook's original-message line).
fn own_text_lines(body: &str) -> Vec<&str> {
    let mut lines = Vec::new();
    for line in body.lines() {
        let trimmed = line.trim();
        let lower = trimmed.to_lowercase();
        let quote_starts = trimmed.starts_with('>')
            || (lower.starts_with("on ") && lower.ends_with("wrote:"))
            || lower.starts_with("-----original message-----")
            || (lower.starts_with("am ") && lower.ends_with("schrieb:"));
        if quote_starts {
            break;
        }
        lines.push(line);
    }
    lines
}

/// The lines after a closing such as "Thanks," near the end: HTML rendered to text often has
/// no blank line between the message and the signature.
fn after_valediction<'a>(lines: &[&'a str]) -> Option<Vec<&'a str>> {
    let search_from = lines.len().saturating_sub(10);
    let closing = search_from
        + lines[search_from..]
            .iter()
            .rposition(|line| is_valediction(line))?;
    let block: Vec<&str> = lines[closing + 1..]
        .iter()
        .map(|line| line.trim())
        .filter(|line| !line.is_empty())
        .collect();
    let short =
        (2..=8).contains(&block.len()) && block.iter().all(|line| line.chars().count() <= 72);
    short.then_some(block)
}

/// The last blank-line-separated block, when it is short enough to be a signature and is not
/// the whole message.
fn last_short_block<'a>(lines: &[&'a str]) -> Option<Vec<&'a str>> {
    let end = lines.iter().rposition(|line| !line.trim().is_empty())?;
    let start = lines[..end]
        .iter()
        .rposition(|line| line.trim().is_empty())
        .map_or(0, |blank| blank + 1);
    let has_text_above = lines[..start].iter().any(|line| !line.trim().is_empty());
    let block: Vec<&str> = lines[start..=end].iter().map(|line| line.trim()).collect();
    let short = block.len() <= 8 && block.iter().all(|line| line.chars().count() <= 72);
    (has_text_above && short && block.len() >= 2).then_some(block)
}

fn is_valediction(line: &str) -> bool {
    let lower = line.trim().trim_end_matches([',', '!', '.']).to_lowercase();
    [
        "best regards",
        "kind regards",
        "regards",
        "best",
        "thanks",
        "thank you",
        "many thanks",
        "cheers",
        "sincerely",
        "yours sincerely",
        "mit freundlichen grüßen",
        "viele grüße",
        "beste grüße",
    ]
    .contains(&lower.as_str())
}

/// A run of digits, spaces and `+()-./` holding 7 to 15 digits (E.164 allows 15).
fn find_phone(line: &str) -> Option<String> {
    let allowed = |c: char| c.is_ascii_digit() || " +()-./".contains(c);
    let mut rest = line;
    while let Some(start) = rest.find(|c: char| c.is_ascii_digit() || c == '+' || c == '(') {
        let candidate = &rest[start..];
        let end = candidate
            .find(|c: char| !allowed(c))
            .unwrap_or(candidate.len());
        let run = candidate[..end].trim_end_matches([' ', '-', '.', '/', '(']);
        let digits = run.chars().filter(char::is_ascii_digit).count();
        if (7..=15).contains(&digits) {
            return Some(run.trim().to_owned());
        }
        rest = &candidate[end.max(1)..];
    }
    None
}

fn looks_like_name(line: &str) -> bool {
    let words: Vec<&str> = line.split_whitespace().collect();
    (2..=4).contains(&words.len())
        && words.iter().all(|word| {
            word.chars().next().is_some_and(char::is_uppercase)
                && word.chars().all(|c| c.is_alphabetic() || "-.'".contains(c))
        })
        && !is_title(line)
        && !is_company(line)
}

const TITLE_WORDS: &[&str] = &[
    "ceo",
    "cto",
    "cfo",
    "coo",
    "cmo",
    "cio",
    "founder",
    "co-founder",
    "owner",
    "director",
    "manager",
    "head",
    "vp",
    "president",
    "chief",
    "officer",
    "engineer",
    "consultant",
    "partner",
    "lead",
    "specialist",
    "coordinator",
    "analyst",
    "administrator",
    "assistant",
    "executive",
    "representative",
    "developer",
    "architect",
    "buyer",
    "purchaser",
    "geschäftsführer",
    "geschäftsführerin",
    "leiter",
    "leiterin",
    "inhaber",
    "inhaberin",
    "procurement",
];

const COMPANY_SUFFIXES: &[&str] = &[
    "gmbh",
    "ag",
    "inc",
    "llc",
    "ltd",
    "limited",
    "corp",
    "corporation",
    "co",
    "company",
    "plc",
    "pty",
    "sa",
    "sas",
    "sarl",
    "srl",
    "spa",
    "bv",
    "nv",
    "oy",
    "ab",
    "as",
    "kg",
    "ug",
    "se",
    "group",
    "gbr",
    "kft",
    "sp. z o.o",
];

fn words_of(text: &str) -> Vec<String> {
    text.split(|c: char| !(c.is_alphanumeric() || c == '-'))
        .filter(|word| !word.is_empty())
        .map(str::to_lowercase)
        .collect()
}

fn is_title(text: &str) -> bool {
    words_of(text)
        .iter()
        .any(|word| TITLE_WORDS.contains(&word.as_str()))
}

fn is_company(text: &str) -> bool {
    let cleaned = text.replace('.', "");
    words_of(&cleaned)
        .last()
        .is_some_and(|word| COMPANY_SUFFIXES.contains(&word.as_str()))
}

/// Handles "Title", "Company", and the combined forms "Title, Company", "Title | Company",
/// "Title at Company".
fn read_title_and_company(line: &str, signature: &mut SignatureBlock) {
    let parts: Vec<&str> = [" | ", " · ", " at ", " @ ", ", ", " - ", " – "]
        .iter()
        .find_map(|separator| {
            line.split_once(separator)
                .map(|(left, right)| vec![left.trim(), right.trim()])
        })
        .unwrap_or_else(|| vec![line.trim()]);
    let title_index = parts.iter().position(|part| is_title(part));
    for (index, part) in parts.iter().enumerate() {
        if part.is_empty() {
            continue;
        }
        if Some(index) == title_index {
            if signature.job_title.is_none() {
                signature.job_title = Some((*part).to_owned());
            }
        } else if (is_company(part) || title_index.is_some()) && signature.company.is_none() {
            // Beside a title, the other half names the employer even without a suffix.
            signature.company = Some((*part).to_owned());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> Vec<u8> {
        let path = format!("{}/../fixtures/email/{name}", env!("CARGO_MANIFEST_DIR"));
        std::fs::read(&path).unwrap_or_else(|error| panic!("{path}: {error}"))
    }

    fn at() -> DateTime<Utc> {
        DateTime::from_timestamp(1_741_600_000, 0).unwrap_or_default()
    }

    fn decode_fixture(name: &str) -> Inbound {
        decode("email:sales@leadgate.example", &fixture(name), at())
            .unwrap_or_else(|error| panic!("{name}: {error}"))
    }

    fn field<'a>(record: &'a Inbound, key: &str) -> Option<&'a str> {
        record.fields.get(key).and_then(Value::as_str)
    }

    fn own() -> Vec<String> {
        vec!["leadgate.example".to_owned()]
    }

    #[test]
    fn lead_enquiry_with_signature() {
        let record = decode_fixture("lead_with_signature.eml");
        assert_eq!(record.source, "email:sales@leadgate.example");
        assert_eq!(
            record.external_id.as_deref(),
            Some("CAF3x9q1-lead-0001@mail.northwind-traders.example")
        );
        assert_eq!(field(&record, "from_name"), Some("Maria Gonzalez"));
        assert_eq!(
            field(&record, "from_address"),
            Some("maria.gonzalez@northwind-traders.example")
        );
        assert_eq!(field(&record, "subject"), Some("Pricing for 40 seats"));
        assert_eq!(field(&record, "text_source"), Some("text"));
        assert!(field(&record, "text").is_some_and(|text| text.contains("about 40 people")));
        assert_eq!(
            field(&record, "occurred_at"),
            Some("2025-03-04T09:11:58+00:00")
        );
        assert_eq!(field(&record, "signature_name"), Some("Maria González"));
        assert_eq!(field(&record, "signature_phone"), Some("+49 30 1234 5678"));
        assert_eq!(
            field(&record, "signature_company"),
            Some("Northwind Traders GmbH")
        );
        assert_eq!(
            field(&record, "signature_job_title"),
            Some("Head of Sales Operations")
        );
        assert_eq!(classify(&record, &own()), Classification::Lead);
    }

    #[test]
    fn html_only_message_becomes_text() {
        let record = decode_fixture("html_only.eml");
        assert_eq!(field(&record, "text_source"), Some("html"));
        let text = field(&record, "text").unwrap_or_default();
        assert!(
            text.contains("30 minute demo") || text.contains("30\u{a0}minute demo"),
            "{text}"
        );
        assert!(!text.contains('<') && !text.contains("color"), "{text}");
        assert_eq!(field(&record, "signature_phone"), Some("(555) 010-4477"));
        assert_eq!(field(&record, "signature_job_title"), Some("CTO"));
        assert_eq!(field(&record, "signature_company"), Some("Contoso Ltd"));
        assert_eq!(classify(&record, &own()), Classification::Lead);
    }

    #[test]
    fn out_of_office_is_an_auto_reply() {
        let record = decode_fixture("out_of_office.eml");
        assert_eq!(field(&record, "auto_submitted"), Some("auto-replied"));
        assert_eq!(classify(&record, &own()), Classification::AutoReply);
    }

    #[test]
    fn each_auto_reply_signal_is_enough_alone() {
        let make = |extra_header: &str, subject: &str| {
            let raw = format!(
                "From: a@customer.example\r\nTo: s@leadgate.example\r\nSubject: {subject}\r\n{extra_header}Message-ID: <x@y>\r\n\r\nbody\r\n"
            );
            let record = decode("email:inbound", raw.as_bytes(), at());
            let record = record.unwrap_or_else(|error| panic!("{error}"));
            classify(&record, &[])
        };
        assert_eq!(make("", "Hello"), Classification::Lead);
        assert_eq!(
            make("Auto-Submitted: no\r\n", "Hello"),
            Classification::Lead
        );
        assert_eq!(
            make("Auto-Submitted: auto-generated\r\n", "Hello"),
            Classification::AutoReply
        );
        assert_eq!(
            make("X-Autorespond: yes\r\n", "Hello"),
            Classification::AutoReply
        );
        assert_eq!(
            make("Precedence: bulk\r\n", "Hello"),
            Classification::AutoReply
        );
        assert_eq!(
            make("Precedence: list\r\n", "Hello"),
            Classification::AutoReply
        );
        assert_eq!(
            make("", "Out of Office: back Monday"),
            Classification::AutoReply
        );
    }

    #[test]
    fn delivery_status_notification_is_a_bounce_with_failed_recipients() {
        let record = decode_fixture("dsn_bounce.eml");
        assert_eq!(field(&record, "content_type"), Some("multipart/report"));
        assert_eq!(field(&record, "report_type"), Some("delivery-status"));
        assert_eq!(
            classify(&record, &own()),
            Classification::Bounce {
                recipients: vec!["nobody@unknown.example".to_owned()]
            }
        );
        let statuses = record
            .fields
            .get("delivery_status")
            .and_then(Value::as_array);
        assert_eq!(statuses.map(Vec::len), Some(2));
    }

    #[test]
    fn mailer_daemon_without_report_is_still_a_bounce() {
        let raw =
            b"From: MAILER-DAEMON@mx.other.example\r\nSubject: failure notice\r\n\r\nSorry.\r\n";
        let record = decode("email:inbound", raw, at()).unwrap_or_else(|error| panic!("{error}"));
        assert_eq!(
            classify(&record, &[]),
            Classification::Bounce { recipients: vec![] }
        );
    }

    #[test]
    fn reply_keeps_threading_and_attachments() {
        let record = decode_fixture("reply_in_reply_to.eml");
        assert_eq!(
            field(&record, "in_reply_to"),
            Some("quote-7781@leadgate.example")
        );
        assert_eq!(
            record.fields.get("references"),
            Some(&json!([
                "CAF3x9q1-lead-0001@mail.northwind-traders.example",
                "quote-7781@leadgate.example"
            ]))
        );
        let text = field(&record, "text").unwrap_or_default();
        assert!(text.starts_with("Thanks, the quote looks good."), "{text}");
        let attachments = record.fields.get("attachments").and_then(Value::as_array);
        let first = attachments.and_then(|list| list.first());
        assert_eq!(
            first.and_then(|a| a["filename"].as_str()),
            Some("order-form.pdf")
        );
        assert_eq!(
            first.and_then(|a| a["content_type"].as_str()),
            Some("application/pdf")
        );
        assert!(
            first
                .and_then(|a| a["size"].as_u64())
                .is_some_and(|size| size > 50)
        );
        // The quoted text is not mistaken for the sender's signature.
        assert!(field(&record, "signature_text").is_none_or(|sig| !sig.contains("Kind regards")));
        assert_eq!(classify(&record, &own()), Classification::Lead);
    }

    #[test]
    fn own_domain_and_missing_sender() {
        let ours = b"From: Colleague <rep@eu.leadgate.example>\r\nSubject: fwd\r\n\r\nfyi\r\n";
        let record = decode("email:inbound", ours, at()).unwrap_or_else(|error| panic!("{error}"));
        assert_eq!(classify(&record, &own()), Classification::OwnDomain);

        let anonymous = b"Subject: who am I\r\n\r\nno from header\r\n";
        let record =
            decode("email:inbound", anonymous, at()).unwrap_or_else(|error| panic!("{error}"));
        assert_eq!(classify(&record, &own()), Classification::NoSender);
        // Without a Message-ID the content hash is the id, stable across fetches.
        let again = decode("email:inbound", anonymous, at())
            .ok()
            .and_then(|r| r.external_id);
        assert_eq!(record.external_id, again);
        assert!(again.is_some_and(|id| id.starts_with("sha256:")));
    }

    #[test]
    fn malformed_messages_do_not_panic() {
        assert!(matches!(
            decode("email:inbound", b"", at()),
            Err(EmailError::Empty)
        ));
        assert!(matches!(
            decode("email:inbound", b" \r\n ", at()),
            Err(EmailError::Empty)
        ));
        let samples: [&[u8]; 6] = [
            b"\xff\xfe\x00garbage\x00\x01",
            b"From: <<<@>>>\r\nContent-Type: multipart/mixed; boundary=\"x\"\r\n\r\n--x\r\nContent-Type: text/plain\r\n\r\nunterminated",
            b"Content-Type: multipart/report; report-type=delivery-status\r\n\r\nno boundary at all",
            b"From: a@b.example\r\nContent-Transfer-Encoding: base64\r\n\r\n!!!not base64!!!",
            b"From: =?utf-8?B?broken?= <x@y.example>\r\nSubject: =?bogus?Q?=ZZ?=\r\n\r\nbody",
            b"no headers, just a line of text",
        ];
        for sample in samples {
            if let Ok(record) = decode("email:inbound", sample, at()) {
                let _ = classify(&record, &own());
            }
        }
    }

    #[test]
    fn twenty_megabyte_attachment_is_listed_not_inlined() {
        use base64::Engine as _;
        let payload = vec![0xA5_u8; 20 * 1024 * 1024];
        let encoded = base64::engine::general_purpose::STANDARD.encode(&payload);
        let mut raw = String::from(
            "From: Big <big@customer.example>\r\nSubject: specs\r\nMessage-ID: <big@customer.example>\r\nContent-Type: multipart/mixed; boundary=\"B\"\r\n\r\n--B\r\nContent-Type: text/plain\r\n\r\nSpecs attached.\r\n--B\r\nContent-Type: application/octet-stream\r\nContent-Disposition: attachment; filename=\"specs.bin\"\r\nContent-Transfer-Encoding: base64\r\n\r\n",
        );
        for chunk in encoded.as_bytes().chunks(76) {
            raw.push_str(std::str::from_utf8(chunk).unwrap_or_default());
            raw.push_str("\r\n");
        }
        raw.push_str("--B--\r\n");
        let record =
            decode("email:inbound", raw.as_bytes(), at()).unwrap_or_else(|error| panic!("{error}"));
        assert_eq!(field(&record, "text"), Some("Specs attached."));
        let attachment = record
            .fields
            .get("attachments")
            .and_then(|list| list.get(0));
        assert_eq!(
            attachment.and_then(|a| a["size"].as_u64()),
            Some(20 * 1024 * 1024)
        );
        assert_eq!(
            attachment.and_then(|a| a["filename"].as_str()),
            Some("specs.bin")
        );
    }

    #[test]
    fn signature_extraction_without_delimiter() {
        let body = "Hi,\n\nplease send me a brochure.\n\nThanks,\nLena Fischer\nSales Manager at Acme Robotics\nM +49 171 2345678\n";
        let signature = extract_signature(body).unwrap_or_default();
        assert_eq!(signature.name.as_deref(), Some("Lena Fischer"));
        assert_eq!(signature.job_title.as_deref(), Some("Sales Manager"));
        assert_eq!(signature.company.as_deref(), Some("Acme Robotics"));
        assert_eq!(signature.phone.as_deref(), Some("+49 171 2345678"));

        assert_eq!(extract_signature("Just one line, no signature."), None);
        assert_eq!(extract_signature(""), None);
        // Dates and short numbers are not phones.
        assert_eq!(find_phone("Meeting on 4.3. at 10:30"), None);
        assert_eq!(
            find_phone("Tel.: +1 (555) 010-4477 ext"),
            Some("+1 (555) 010-4477".to_owned())
        );
    }
}
