//! Email normalisation: shape validation plus a `match_key` that folds the
//! aliases one mailbox can appear under (plus-tags, Gmail dots).

use crate::error::NormaliseError;
use serde::Deserialize;

/// How aggressively `match_key` folds aliases of one mailbox.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct EmailOptions {
    /// Drop `+tag` from the local part (most providers deliver it to the base box).
    pub strip_plus_tag: bool,
    /// Domains that ignore dots in the local part.
    pub dotless_domains: Vec<String>,
}

impl Default for EmailOptions {
    fn default() -> Self {
        Self {
            strip_plus_tag: true,
            dotless_domains: vec!["gmail.com".into(), "googlemail.com".into()],
        }
    }
}

/// A validated, normalised email address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Email {
    /// Trimmed, lowercased address, as it should be stored.
    pub address: String,
    /// Key for duplicate detection; not deliverable, never show it as an address.
    pub match_key: String,
}

/// Trim, lowercase and validate `raw`. Non-ASCII (IDN) domains are kept as
/// lowercased Unicode: punycode is not worth a dependency here.
pub fn normalise_email(raw: &str, opts: &EmailOptions) -> Result<Email, NormaliseError> {
    let s = raw.trim();
    // Common CRM export artefacts: "<a@b.com>" and "mailto:a@b.com".
    let s = s.strip_prefix("mailto:").unwrap_or(s);
    let s = s
        .strip_prefix('<')
        .and_then(|x| x.strip_suffix('>'))
        .unwrap_or(s);
    if s.is_empty() {
        return Err(NormaliseError::Empty);
    }
    if s.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(NormaliseError::EmailWhitespace);
    }
    let address = s.to_lowercase();
    let (local, domain) = address.rsplit_once('@').ok_or(NormaliseError::EmailNoAt)?;
    if local.is_empty() || local.chars().count() > 64 || local.contains('@') {
        return Err(NormaliseError::EmailLocalPart);
    }
    check_domain(domain)?;
    let match_key = match_key(local, domain, opts);
    Ok(Email { address, match_key })
}

fn check_domain(domain: &str) -> Result<(), NormaliseError> {
    if !domain.contains('.') {
        return Err(NormaliseError::EmailDomain("no dot"));
    }
    for label in domain.split('.') {
        if label.is_empty() {
            return Err(NormaliseError::EmailDomain("empty label"));
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err(NormaliseError::EmailDomain("label starts or ends with '-'"));
        }
        if !label.chars().all(|c| c.is_alphanumeric() || c == '-') {
            return Err(NormaliseError::EmailDomain("invalid character"));
        }
    }
    Ok(())
}

fn match_key(local: &str, domain: &str, opts: &EmailOptions) -> String {
    let mut base = local;
    if opts.strip_plus_tag
        && let Some((b, _tag)) = local.split_once('+')
        && !b.is_empty()
    {
        base = b;
    }
    // googlemail.com is the same mailbox as gmail.com.
    let domain = if domain == "googlemail.com" {
        "gmail.com"
    } else {
        domain
    };
    let dotless = opts
        .dotless_domains
        .iter()
        .any(|d| d.eq_ignore_ascii_case(domain));
    let mut key = String::with_capacity(base.len() + domain.len() + 1);
    if dotless {
        key.extend(base.chars().filter(|&c| c != '.'));
    } else {
        key.push_str(base);
    }
    key.push('@');
    key.push_str(domain);
    key
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(s: &str) -> String {
        normalise_email(s, &EmailOptions::default())
            .unwrap()
            .match_key
    }

    #[test]
    fn lowercases_and_trims() {
        let e = normalise_email("  John.Smith@Example.COM ", &EmailOptions::default()).unwrap();
        assert_eq!(e.address, "john.smith@example.com");
        assert_eq!(e.match_key, "john.smith@example.com");
    }

    #[test]
    fn plus_tags_and_gmail_dots() {
        assert_eq!(key("j.smith+crm@gmail.com"), "jsmith@gmail.com");
        assert_eq!(key("J.Smith@googlemail.com"), "jsmith@gmail.com");
        assert_eq!(key("j.smith+x@corp.com"), "j.smith@corp.com");
        let keep = EmailOptions {
            strip_plus_tag: false,
            ..Default::default()
        };
        let e = normalise_email("a+b@corp.com", &keep).unwrap();
        assert_eq!(e.match_key, "a+b@corp.com");
        // A bare "+x" local part is not a tag.
        assert_eq!(key("+x@corp.com"), "+x@corp.com");
    }

    #[test]
    fn unicode_domain_kept() {
        let e = normalise_email("Anna@Bücher.DE", &EmailOptions::default()).unwrap();
        assert_eq!(e.address, "anna@bücher.de");
        assert_eq!(
            normalise_email("<a@b.co>", &EmailOptions::default())
                .unwrap()
                .address,
            "a@b.co"
        );
    }

    #[test]
    fn rejects_bad_shapes() {
        let o = EmailOptions::default();
        assert_eq!(normalise_email("", &o), Err(NormaliseError::Empty));
        assert_eq!(
            normalise_email("nobody", &o),
            Err(NormaliseError::EmailNoAt)
        );
        assert_eq!(
            normalise_email("@x.com", &o),
            Err(NormaliseError::EmailLocalPart)
        );
        assert_eq!(
            normalise_email("a b@x.com", &o),
            Err(NormaliseError::EmailWhitespace)
        );
        assert!(matches!(
            normalise_email("a@localhost", &o),
            Err(NormaliseError::EmailDomain(_))
        ));
        assert!(matches!(
            normalise_email("a@x..com", &o),
            Err(NormaliseError::EmailDomain(_))
        ));
        assert!(matches!(
            normalise_email("a@x_y.com", &o),
            Err(NormaliseError::EmailDomain(_))
        ));
    }
}
