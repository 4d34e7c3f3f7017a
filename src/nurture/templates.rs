//! Email templates: a subject, an HTML part and a plain-text part with `{{variable}}`
//! placeholders (`{{first_name | there}}` gives a default). Variables are the lead's
//! fields plus `unsubscribe_url`; a template naming anything else is refused when it is
//! saved, so a send never meets an unknown variable.

use std::sync::LazyLock;

use regex::Regex;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sqlx::Row;

use super::NurtureError;
use super::config::{NurtureSection, url_host};
use crate::domain::RecordKind;
use crate::domain::value::now_timestamp;
use crate::store::Store;
use crate::store::write::new_id;

/// Variables every template may use besides the lead's fields.
pub const BUILT_INS: &[&str] = &["unsubscribe_url"];

static PLACEHOLDER: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*(?:\|\s*([^}]*?)\s*)?\}\}").expect("valid regex")
});
static HREF: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r#"(?i)(href\s*=\s*")([^"]+)(")"#).expect("valid regex"));

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TemplateInput {
    pub name: String,
    pub subject: String,
    pub html: String,
    /// The plain-text part (required: every email carries one).
    pub text: String,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct EmailTemplate {
    pub id: String,
    pub name: String,
    pub subject: String,
    pub html: String,
    pub text: String,
    pub variables: Vec<String>,
    pub created_at: String,
    pub updated_at: String,
}

/// Subject and parts after substitution, before tracking is added.
#[derive(Debug, Clone, PartialEq)]
pub struct Rendered {
    pub subject: String,
    pub html: String,
    pub text: String,
}

/// The variables a template names, or why it cannot be saved.
pub fn check(input: &TemplateInput, section: &NurtureSection) -> Result<Vec<String>, String> {
    if input.name.trim().is_empty() {
        return Err("`name` is empty".into());
    }
    if input.subject.trim().is_empty() {
        return Err("`subject` is empty".into());
    }
    if input.text.trim().is_empty() {
        return Err("`text` (the plain-text part) is empty".into());
    }
    let mut names = Vec::new();
    for (part, body) in [
        ("subject", &input.subject),
        ("html", &input.html),
        ("text", &input.text),
    ] {
        // Every `{{` must open a well-formed placeholder.
        let well_formed = PLACEHOLDER.find_iter(body).count();
        if body.matches("{{").count() != well_formed {
            return Err(format!(
                "{part}: a `{{{{` does not open a valid `{{{{variable}}}}`"
            ));
        }
        for capture in PLACEHOLDER.captures_iter(body) {
            let name = &capture[1];
            if RecordKind::Lead.field(name).is_none() && !BUILT_INS.contains(&name) {
                return Err(format!(
                    "{part}: unknown variable `{name}` (leads have no such field)"
                ));
            }
            if !names.iter().any(|n| n == name) {
                names.push(name.to_owned());
            }
        }
    }
    for capture in HREF.captures_iter(&input.html) {
        let link = capture[2].trim();
        if link.starts_with("mailto:") || link.starts_with('#') || link.contains("{{") {
            continue;
        }
        match url_host(link) {
            Some(host) if section.host_allowed(&host) => {}
            Some(host) => {
                return Err(format!(
                    "html: link to `{host}`, which is not on nurture.redirect_allow_hosts"
                ));
            }
            None => return Err(format!("html: link `{link}` is not an http(s) URL")),
        }
    }
    Ok(names)
}

fn value_text(value: Option<&Value>) -> Option<String> {
    match value? {
        Value::String(s) if !s.trim().is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

pub fn escape_html(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn substitute(body: &str, vars: &Map<String, Value>, html: bool) -> String {
    PLACEHOLDER
        .replace_all(body, |capture: &regex::Captures<'_>| {
            let value = value_text(vars.get(&capture[1]))
                .or_else(|| capture.get(2).map(|d| d.as_str().to_owned()))
                .unwrap_or_default();
            if html { escape_html(&value) } else { value }
        })
        .into_owned()
}

/// Fills the placeholders from `vars` (the lead's fields plus the built-ins); values are
/// HTML-escaped in the HTML part.
pub fn render(template: &EmailTemplate, vars: &Map<String, Value>) -> Rendered {
    Rendered {
        subject: substitute(&template.subject, vars, false).replace(['\r', '\n'], " "),
        html: substitute(&template.html, vars, true),
        text: substitute(&template.text, vars, false),
    }
}

/// Rewrites each http(s) link of `html` with `rewrite` (the tracking redirect).
pub fn rewrite_links(html: &str, mut rewrite: impl FnMut(&str) -> Option<String>) -> String {
    HREF.replace_all(html, |capture: &regex::Captures<'_>| {
        let link = capture[2].trim();
        let target = if link.starts_with("http://") || link.starts_with("https://") {
            rewrite(&link.replace("&amp;", "&")).unwrap_or_else(|| link.to_owned())
        } else {
            link.to_owned()
        };
        format!("{}{}{}", &capture[1], target, &capture[3])
    })
    .into_owned()
}

fn from_row(row: &sqlx::any::AnyRow) -> Result<EmailTemplate, NurtureError> {
    let variables: String = row.try_get("variables")?;
    Ok(EmailTemplate {
        id: row.try_get("id")?,
        name: row.try_get("name")?,
        subject: row.try_get("subject")?,
        html: row.try_get("html")?,
        text: row.try_get("text")?,
        variables: serde_json::from_str(&variables).unwrap_or_default(),
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
    })
}

const COLUMNS: &str = "id, name, subject, html, text, variables, created_at, updated_at";

/// Saves a template under its name (a new one, or a new version of that name).
pub async fn save(
    store: &Store,
    section: &NurtureSection,
    input: &TemplateInput,
) -> Result<EmailTemplate, NurtureError> {
    let variables = check(input, section).map_err(NurtureError::Invalid)?;
    let now = now_timestamp();
    let variables_json = serde_json::to_string(&variables).unwrap_or_else(|_| "[]".into());
    let mut tx = store.begin_write().await?;
    let existing: Option<String> =
        sqlx::query_scalar("SELECT id FROM email_templates WHERE name = $1")
            .bind(input.name.trim())
            .fetch_optional(&mut *tx)
            .await?;
    match existing {
        Some(id) => {
            sqlx::query(
                "UPDATE email_templates SET subject = $1, html = $2, text = $3, variables = $4, \
                 updated_at = $5 WHERE id = $6",
            )
            .bind(&input.subject)
            .bind(&input.html)
            .bind(&input.text)
            .bind(&variables_json)
            .bind(&now)
            .bind(&id)
            .execute(&mut *tx)
            .await?;
        }
        None => {
            sqlx::query(
                "INSERT INTO email_templates (id, name, subject, html, text, variables, \
                 created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
            )
            .bind(new_id())
            .bind(input.name.trim())
            .bind(&input.subject)
            .bind(&input.html)
            .bind(&input.text)
            .bind(&variables_json)
            .bind(&now)
            .bind(&now)
            .execute(&mut *tx)
            .await?;
        }
    }
    tx.commit().await?;
    by_name(store, input.name.trim())
        .await?
        .ok_or(NurtureError::NotFound)
}

pub async fn by_name(store: &Store, name: &str) -> Result<Option<EmailTemplate>, NurtureError> {
    let sql = format!("SELECT {COLUMNS} FROM email_templates WHERE name = $1");
    let row = sqlx::query(&sql)
        .bind(name)
        .fetch_optional(store.pool())
        .await?;
    row.as_ref().map(from_row).transpose()
}

pub async fn list(store: &Store) -> Result<Vec<EmailTemplate>, NurtureError> {
    let sql = format!("SELECT {COLUMNS} FROM email_templates ORDER BY name");
    let rows = sqlx::query(&sql).fetch_all(store.pool()).await?;
    rows.iter().map(from_row).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn input(subject: &str, html: &str, text: &str) -> TemplateInput {
        TemplateInput {
            name: "t".into(),
            subject: subject.into(),
            html: html.into(),
            text: text.into(),
        }
    }

    #[test]
    fn unknown_variables_and_foreign_links_are_refused() {
        let section = NurtureSection {
            redirect_allow_hosts: vec!["example.com".into()],
            ..NurtureSection::default()
        };
        let ok = input(
            "Hi {{first_name | there}}",
            r#"<a href="https://example.com/x">x</a> {{company}}"#,
            "Hi {{ first_name }} {{unsubscribe_url}}",
        );
        assert_eq!(
            check(&ok, &section).unwrap(),
            ["first_name", "company", "unsubscribe_url"]
        );
        let missing = input("Hi {{favourite_colour}}", "", "x");
        assert!(
            check(&missing, &section)
                .unwrap_err()
                .contains("favourite_colour")
        );
        let broken = input("Hi {{first name}}", "", "x");
        assert!(check(&broken, &section).is_err());
        let foreign = input("Hi", r#"<a href="https://evil.test/">x</a>"#, "x");
        assert!(check(&foreign, &section).unwrap_err().contains("evil.test"));
        let no_text = input("Hi", "<p>x</p>", " ");
        assert!(check(&no_text, &section).is_err());
    }

    #[test]
    fn rendering_escapes_html_and_uses_defaults() {
        let template = EmailTemplate {
            id: "1".into(),
            name: "t".into(),
            subject: "Hi {{first_name|there}}\n".into(),
            html: "<p>{{company}}</p>".into(),
            text: "{{company}} {{score}}".into(),
            variables: vec![],
            created_at: String::new(),
            updated_at: String::new(),
        };
        let Value::Object(vars) = json!({"company": "A&B <Ltd>", "score": 42}) else {
            unreachable!()
        };
        let rendered = render(&template, &vars);
        assert_eq!(rendered.subject, "Hi there ");
        assert_eq!(rendered.html, "<p>A&amp;B &lt;Ltd&gt;</p>");
        assert_eq!(rendered.text, "A&B <Ltd> 42");
        let linked = rewrite_links(
            r#"<a href="https://a.test/?x=1&amp;y=2">a</a><a href="mailto:x@y">m</a>"#,
            |url| Some(format!("T({url})")),
        );
        assert_eq!(
            linked,
            r#"<a href="T(https://a.test/?x=1&y=2)">a</a><a href="mailto:x@y">m</a>"#
        );
    }
}
