//! Normalise: canonical forms for what matching and people read. A value that cannot be
//! normalised is kept as it came and flagged in `custom._issues`, never thrown away.

use matching::normalise::{
    EmailOptions, normalise_company, normalise_country, normalise_email, normalise_name,
    normalise_phone,
};
use serde_json::Value;

use super::{Draft, PipelineError, Stage};

pub struct Normalise {
    pub default_region: String,
    pub email: EmailOptions,
}

impl Stage for Normalise {
    fn name(&self) -> &'static str {
        "normalise"
    }

    fn apply(&self, draft: &mut Draft) -> Result<(), PipelineError> {
        let text = |draft: &Draft, field: &str| {
            draft
                .fields
                .get(field)
                .and_then(Value::as_str)
                .map(str::to_owned)
        };
        if let Some(raw) = text(draft, "email") {
            match normalise_email(&raw, &self.email) {
                Ok(email) => draft.set("email", email.address),
                Err(why) => draft.flag("email", &raw, &why.to_string()),
            }
        }
        for field in ["phone"] {
            if let Some(raw) = draft.fields.get(field).and_then(scalar) {
                match normalise_phone(&raw, &self.default_region) {
                    Ok(e164) => draft.set(field, e164),
                    Err(why) => draft.flag(field, &raw, &why.to_string()),
                }
            }
        }
        for field in ["first_name", "last_name"] {
            if let Some(raw) = text(draft, field) {
                match normalise_name(&raw) {
                    Some(name) => draft.set(field, name.display),
                    None => {
                        draft.fields.remove(field);
                    }
                }
            }
        }
        if let Some(raw) = text(draft, "company")
            && let Some(company) = normalise_company(&raw)
        {
            draft.set("company", company.display);
        }
        if let Some(raw) = text(draft, "country") {
            match normalise_country(&raw) {
                Ok(code) => draft.set("country", code.to_owned()),
                Err(why) => draft.flag("country", &raw, &why.to_string()),
            }
        }
        Ok(())
    }
}

fn scalar(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::RecordKind;
    use serde_json::json;

    #[test]
    fn values_are_normalised_or_kept_raw_and_flagged() {
        let stage = Normalise {
            default_region: "GB".into(),
            email: EmailOptions::default(),
        };
        let mut draft = Draft::new(RecordKind::Lead);
        for (k, v) in [
            ("email", json!(" Ada.Lovelace+crm@Example.COM ")),
            ("phone", json!("020 7946 0958")),
            ("first_name", json!("dr ada")),
            ("country", json!("United Kingdom")),
            ("company", json!("  Analytical   Engines Ltd ")),
        ] {
            draft.fields.insert(k.into(), v);
        }
        stage.apply(&mut draft).unwrap();
        assert_eq!(draft.fields["email"], "ada.lovelace+crm@example.com");
        assert_eq!(draft.fields["phone"], "+442079460958");
        assert_eq!(draft.fields["first_name"], "Ada");
        assert_eq!(draft.fields["country"], "GB");
        assert_eq!(draft.fields["company"], "Analytical Engines Ltd");

        let mut bad = Draft::new(RecordKind::Lead);
        bad.fields.insert("email".into(), json!("not-an-address"));
        bad.fields.insert("country".into(), json!("Atlantis"));
        stage.apply(&mut bad).unwrap();
        assert_eq!(bad.fields["email"], "not-an-address", "kept raw");
        let issues = bad.custom["_issues"].as_array().unwrap();
        assert_eq!(issues.len(), 2);
        assert!(issues[0]["field"] == "email" && issues[0]["value"] == "not-an-address");
    }
}
