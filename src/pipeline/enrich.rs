//! Enrich: what a lead's own values tell about it — corporate or free-mail address, the
//! company's normal form, country and time zone from the phone. Enrichers are stages, so
//! an external provider plugs in as one more. Account linking by domain needs the store
//! and happens at persist time ([`super::Pipeline::persist`]).

use std::collections::HashSet;

use matching::normalise::normalise_company;
use serde_json::Value;

use super::{Draft, PipelineError, Stage};

/// The shipped list of free and consumer mailbox domains (reference/README.md).
const FREE_MAIL: &str = include_str!("../../reference/free_mail_domains.txt");

/// IANA zone of countries that have exactly one; others stay unset rather than guessed.
const SINGLE_ZONE: &[(&str, &str)] = &[
    ("GB", "Europe/London"),
    ("IE", "Europe/Dublin"),
    ("FR", "Europe/Paris"),
    ("DE", "Europe/Berlin"),
    ("NL", "Europe/Amsterdam"),
    ("BE", "Europe/Brussels"),
    ("LU", "Europe/Luxembourg"),
    ("CH", "Europe/Zurich"),
    ("AT", "Europe/Vienna"),
    ("IT", "Europe/Rome"),
    ("PL", "Europe/Warsaw"),
    ("CZ", "Europe/Prague"),
    ("SE", "Europe/Stockholm"),
    ("NO", "Europe/Oslo"),
    ("DK", "Europe/Copenhagen"),
    ("FI", "Europe/Helsinki"),
    ("GR", "Europe/Athens"),
    ("RO", "Europe/Bucharest"),
    ("HU", "Europe/Budapest"),
    ("IN", "Asia/Kolkata"),
    ("PK", "Asia/Karachi"),
    ("BD", "Asia/Dhaka"),
    ("LK", "Asia/Colombo"),
    ("NP", "Asia/Kathmandu"),
    ("AE", "Asia/Dubai"),
    ("SA", "Asia/Riyadh"),
    ("QA", "Asia/Qatar"),
    ("IL", "Asia/Jerusalem"),
    ("TR", "Europe/Istanbul"),
    ("EG", "Africa/Cairo"),
    ("ZA", "Africa/Johannesburg"),
    ("NG", "Africa/Lagos"),
    ("KE", "Africa/Nairobi"),
    ("GH", "Africa/Accra"),
    ("SG", "Asia/Singapore"),
    ("MY", "Asia/Kuala_Lumpur"),
    ("TH", "Asia/Bangkok"),
    ("VN", "Asia/Ho_Chi_Minh"),
    ("PH", "Asia/Manila"),
    ("JP", "Asia/Tokyo"),
    ("KR", "Asia/Seoul"),
    ("CN", "Asia/Shanghai"),
    ("HK", "Asia/Hong_Kong"),
    ("TW", "Asia/Taipei"),
    ("NZ", "Pacific/Auckland"),
    ("AR", "America/Argentina/Buenos_Aires"),
    ("CO", "America/Bogota"),
    ("PE", "America/Lima"),
    ("CL", "America/Santiago"),
    ("UY", "America/Montevideo"),
];

pub struct Enrich {
    free_mail: HashSet<&'static str>,
}

impl Default for Enrich {
    fn default() -> Self {
        Self {
            free_mail: FREE_MAIL
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .collect(),
        }
    }
}

impl Enrich {
    pub fn is_free_mail(&self, domain: &str) -> bool {
        self.free_mail.contains(domain)
    }
}

/// The domain of an email address, lower-cased.
pub fn email_domain(email: &str) -> Option<String> {
    let (_, domain) = email.rsplit_once('@')?;
    let domain = domain.trim().trim_end_matches('.').to_lowercase();
    (!domain.is_empty() && domain.contains('.')).then_some(domain)
}

/// `https://www.acme.example/about` → `acme.example`.
pub fn website_domain(url: &str) -> Option<String> {
    let rest = url.trim().split("://").last()?;
    let host = rest.split(['/', '?', '#', ':']).next()?.to_lowercase();
    let host = host.strip_prefix("www.").unwrap_or(&host).to_owned();
    (host.contains('.') && !host.contains(' ')).then_some(host)
}

fn phone_country(e164: &str) -> Option<String> {
    let number = phonenumber::parse(None, e164).ok()?;
    number.country().id().map(|id| format!("{id:?}"))
}

impl Stage for Enrich {
    fn name(&self) -> &'static str {
        "enrich"
    }

    fn apply(&self, draft: &mut Draft) -> Result<(), PipelineError> {
        if let Some(domain) = draft.text("email").as_deref().and_then(email_domain)
            && draft
                .fields
                .get("email")
                .and_then(Value::as_str)
                .is_some_and(|e| e.contains('@'))
        {
            let kind = if self.is_free_mail(&domain) {
                "free"
            } else {
                "corporate"
            };
            draft.set("email_type", kind.to_owned());
        }
        if let Some(company) = draft.text("company").as_deref().and_then(normalise_company) {
            draft.set("company_key", company.match_form);
        }
        let phone = draft
            .fields
            .get("phone")
            .and_then(Value::as_str)
            .map(str::to_owned);
        if draft.text("country").is_none()
            && let Some(country) = phone
                .as_deref()
                .filter(|p| p.starts_with('+'))
                .and_then(phone_country)
        {
            draft.set("country", country);
        }
        if let Some(country) = draft.text("country")
            && let Some((_, zone)) = SINGLE_ZONE.iter().find(|(code, _)| *code == country)
        {
            draft.set("time_zone", (*zone).to_owned());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::RecordKind;
    use serde_json::json;

    fn enriched(fields: Value) -> Draft {
        let mut draft = Draft::new(RecordKind::Lead);
        if let Value::Object(map) = fields {
            draft.fields = map;
        }
        Enrich::default().apply(&mut draft).unwrap();
        draft
    }

    #[test]
    fn free_mail_and_corporate_addresses_are_told_apart() {
        assert_eq!(
            enriched(json!({"email": "ann@gmail.com"})).fields["email_type"],
            "free"
        );
        assert_eq!(
            enriched(json!({"email": "ann@acme-industries.com"})).fields["email_type"],
            "corporate"
        );
        assert!(
            !enriched(json!({"email": "not an address"}))
                .fields
                .contains_key("email_type")
        );
    }

    #[test]
    fn country_and_time_zone_come_from_the_phone() {
        let draft = enriched(json!({"phone": "+442079460958"}));
        assert_eq!(draft.fields["country"], "GB");
        assert_eq!(draft.fields["time_zone"], "Europe/London");
        let multi_zone = enriched(json!({"phone": "+12025550123"}));
        assert_eq!(multi_zone.fields["country"], "US");
        assert!(!multi_zone.fields.contains_key("time_zone"), "not guessed");
    }

    #[test]
    fn company_normal_form_drops_legal_suffixes() {
        let draft = enriched(json!({"company": "Acme Widgets Pvt. Ltd."}));
        assert_eq!(draft.fields["company_key"], "acme widgets");
    }

    #[test]
    fn domains_from_addresses_and_websites() {
        assert_eq!(
            email_domain("A@Sub.Acme.Example").as_deref(),
            Some("sub.acme.example")
        );
        assert_eq!(
            website_domain("https://www.acme.example/about?x").as_deref(),
            Some("acme.example")
        );
        assert_eq!(website_domain("not a site"), None);
    }
}
