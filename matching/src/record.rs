//! Input record type and its prepared (normalised, compact) form.

use crate::error::NormaliseError;
use crate::normalise::{
    EmailOptions, address_match_form, normalise_company, normalise_country, normalise_date,
    normalise_email, normalise_name, normalise_phone, place_match_form, postcode_match_form,
};
use serde::{Deserialize, Serialize};

/// Fields the matcher knows how to compare.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Field {
    FirstName,
    LastName,
    Email,
    Phone,
    Company,
    Street,
    Address2,
    City,
    Postcode,
    State,
    Country,
    Dob,
}

impl Field {
    pub const COUNT: usize = 12;
    pub const ALL: [Field; Field::COUNT] = [
        Field::FirstName,
        Field::LastName,
        Field::Email,
        Field::Phone,
        Field::Company,
        Field::Street,
        Field::Address2,
        Field::City,
        Field::Postcode,
        Field::State,
        Field::Country,
        Field::Dob,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Field::FirstName => "first_name",
            Field::LastName => "last_name",
            Field::Email => "email",
            Field::Phone => "phone",
            Field::Company => "company",
            Field::Street => "street",
            Field::Address2 => "address2",
            Field::City => "city",
            Field::Postcode => "postcode",
            Field::State => "state",
            Field::Country => "country",
            Field::Dob => "dob",
        }
    }
}

impl std::fmt::Display for Field {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A raw CRM lead / person record. Every field is optional; `id` is the
/// caller's own identifier and is never used for matching.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(default)]
pub struct Record {
    pub id: String,
    pub first_name: Option<String>,
    pub last_name: Option<String>,
    pub email: Option<String>,
    pub phone: Option<String>,
    pub company: Option<String>,
    /// Street line (number + street).
    pub street: Option<String>,
    /// Further address lines (building, locality).
    pub address2: Option<String>,
    /// City, town or suburb.
    pub city: Option<String>,
    pub postcode: Option<String>,
    /// State, county or region.
    pub state: Option<String>,
    pub country: Option<String>,
    /// Date of birth in any format [`normalise_date`] accepts.
    pub dob: Option<String>,
}

/// Options used while preparing records.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct PrepareOptions {
    /// ISO alpha-2 region for phone numbers without a country code.
    pub default_region: String,
    /// Read `01/02/1990` as 1 February (true) or January 2 (false).
    pub day_first: bool,
    pub email: EmailOptions,
}

impl Default for PrepareOptions {
    fn default() -> Self {
        Self {
            default_region: "GB".into(),
            day_first: true,
            email: EmailOptions::default(),
        }
    }
}

/// A record reduced to match forms, packed into one allocation: at a
/// million records per-field `String`s would dominate memory.
#[derive(Debug, Clone)]
pub struct Prepared {
    pub id: Box<str>,
    buf: Box<str>,
    ends: [u32; Field::COUNT],
    /// Values that failed validation; their raw (folded) text is still compared.
    pub issues: Vec<(Field, NormaliseError)>,
}

impl Prepared {
    /// Normalise every field of `rec`.
    pub fn new(rec: &Record, opts: &PrepareOptions) -> Self {
        let mut buf = String::with_capacity(96);
        let mut ends = [0u32; Field::COUNT];
        let mut issues = Vec::new();
        for (i, f) in Field::ALL.iter().enumerate() {
            if let Some(raw) = raw_field(rec, *f)
                && let Some(v) = prepare_field(*f, raw, opts, &mut issues)
            {
                buf.push_str(&v);
            }
            ends[i] = u32::try_from(buf.len()).unwrap_or(u32::MAX);
        }
        Self {
            id: rec.id.as_str().into(),
            buf: buf.into_boxed_str(),
            ends,
            issues,
        }
    }

    /// Match form of `f`, `None` when missing.
    pub fn get(&self, f: Field) -> Option<&str> {
        let i = f as usize;
        let start = if i == 0 { 0 } else { self.ends[i - 1] as usize };
        let end = self.ends[i] as usize;
        (end > start).then(|| &self.buf[start..end])
    }
}

fn raw_field(rec: &Record, f: Field) -> Option<&str> {
    let v = match f {
        Field::FirstName => &rec.first_name,
        Field::LastName => &rec.last_name,
        Field::Email => &rec.email,
        Field::Phone => &rec.phone,
        Field::Company => &rec.company,
        Field::Street => &rec.street,
        Field::Address2 => &rec.address2,
        Field::City => &rec.city,
        Field::Postcode => &rec.postcode,
        Field::State => &rec.state,
        Field::Country => &rec.country,
        Field::Dob => &rec.dob,
    };
    v.as_deref().filter(|s| !s.trim().is_empty())
}

fn prepare_field(
    f: Field,
    raw: &str,
    opts: &PrepareOptions,
    issues: &mut Vec<(Field, NormaliseError)>,
) -> Option<String> {
    // On a validation error keep a folded copy: an exact repeat of the same
    // bad value is still evidence, and the issue is reported to the caller.
    let mut flag = |e: NormaliseError| {
        issues.push((f, e));
        crate::normalise::place_match_form(raw)
    };
    match f {
        Field::FirstName | Field::LastName => normalise_name(raw).map(|n| n.match_form),
        Field::Email => match normalise_email(raw, &opts.email) {
            Ok(e) => Some(e.match_key),
            Err(e) => flag(e),
        },
        Field::Phone => match normalise_phone(raw, &opts.default_region) {
            Ok(p) => Some(p),
            Err(e) => flag(e),
        },
        Field::Company => normalise_company(raw).map(|c| c.match_form),
        Field::Street | Field::Address2 => address_match_form(raw),
        Field::City | Field::State => place_match_form(raw),
        Field::Postcode => postcode_match_form(raw),
        Field::Country => match normalise_country(raw) {
            Ok(c) => Some(c.to_string()),
            Err(e) => flag(e),
        },
        Field::Dob => match normalise_date(raw, opts.day_first) {
            Ok(d) => Some(d),
            Err(e) => flag(e),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prepares_and_packs() {
        let r = Record {
            id: "1".into(),
            first_name: Some(" Dr. JOSÉ ".into()),
            last_name: None,
            email: Some("Jose.P+crm@Gmail.com".into()),
            phone: Some("020 7946 0958".into()),
            country: Some("United Kingdom".into()),
            dob: Some("31/12/1980".into()),
            city: Some("  ".into()),
            ..Default::default()
        };
        let p = Prepared::new(&r, &PrepareOptions::default());
        assert_eq!(p.get(Field::FirstName), Some("jose"));
        assert_eq!(p.get(Field::LastName), None);
        assert_eq!(p.get(Field::Email), Some("josep@gmail.com"));
        assert_eq!(p.get(Field::Phone), Some("+442079460958"));
        assert_eq!(p.get(Field::Country), Some("GB"));
        assert_eq!(p.get(Field::Dob), Some("19801231"));
        assert_eq!(p.get(Field::City), None);
        assert!(p.issues.is_empty());
    }

    #[test]
    fn flags_invalid_values_but_keeps_them() {
        let r = Record {
            email: Some("not-an-email".into()),
            ..Default::default()
        };
        let p = Prepared::new(&r, &PrepareOptions::default());
        assert_eq!(p.get(Field::Email), Some("not an email"));
        assert_eq!(p.issues, vec![(Field::Email, NormaliseError::EmailNoAt)]);
    }
}
