//! Header names → canonical lead fields: a synonym table, then fuzzy matching (strsim),
//! then per-import overrides. Columns that match nothing stay as custom fields.

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::{Map, Value};
use utoipa::ToSchema;

use super::cells::{normalize_number, normalize_phone, serial_to_iso};

/// Canonical fields and the header spellings that mean them (compared after lowercasing
/// and dropping everything but letters and digits).
const SYNONYMS: &[(&str, &[&str])] = &[
    (
        "first_name",
        &[
            "firstname",
            "first",
            "forename",
            "givenname",
            "given",
            "vorname",
            "prenom",
            "nombre",
            "fname",
        ],
    ),
    (
        "last_name",
        &[
            "lastname",
            "last",
            "surname",
            "familyname",
            "family",
            "nachname",
            "nom",
            "apellido",
            "lname",
        ],
    ),
    (
        "full_name",
        &[
            "name",
            "fullname",
            "contactname",
            "contact",
            "person",
            "leadname",
            "customername",
            "yourname",
        ],
    ),
    (
        "email",
        &[
            "email",
            "emailaddress",
            "mail",
            "emailid",
            "workemail",
            "businessemail",
            "courriel",
            "emailadresse",
        ],
    ),
    (
        "phone",
        &[
            "phone",
            "phonenumber",
            "telephone",
            "tel",
            "telefon",
            "telefono",
            "phoneno",
            "workphone",
            "businessphone",
            "landline",
            "officephone",
        ],
    ),
    (
        "mobile",
        &[
            "mobile",
            "mobileno",
            "mobilenumber",
            "mobilephone",
            "cell",
            "cellphone",
            "cellnumber",
            "handy",
            "whatsapp",
            "gsm",
        ],
    ),
    (
        "company",
        &[
            "company",
            "companyname",
            "organisation",
            "organization",
            "org",
            "account",
            "accountname",
            "business",
            "employer",
            "firma",
            "empresa",
            "société",
            "societe",
        ],
    ),
    (
        "title",
        &[
            "title",
            "jobtitle",
            "position",
            "role",
            "designation",
            "job",
            "function",
        ],
    ),
    (
        "website",
        &[
            "website",
            "web",
            "url",
            "site",
            "homepage",
            "domain",
            "companywebsite",
        ],
    ),
    (
        "country",
        &[
            "country",
            "countryname",
            "nation",
            "land",
            "pais",
            "countrycode",
        ],
    ),
    (
        "city",
        &[
            "city", "town", "ort", "stadt", "ciudad", "ville", "locality",
        ],
    ),
    (
        "state",
        &["state", "region", "province", "county", "bundesland"],
    ),
    (
        "postal_code",
        &["postalcode", "postcode", "zip", "zipcode", "plz"],
    ),
    (
        "address",
        &[
            "address",
            "street",
            "streetaddress",
            "address1",
            "addressline1",
        ],
    ),
    ("source", &["source", "leadsource", "origin", "channel"]),
    ("campaign", &["campaign", "campaignname"]),
    ("utm_source", &["utmsource"]),
    ("utm_medium", &["utmmedium"]),
    ("utm_campaign", &["utmcampaign"]),
    ("utm_term", &["utmterm"]),
    ("utm_content", &["utmcontent"]),
    (
        "notes",
        &[
            "notes",
            "note",
            "comment",
            "comments",
            "remarks",
            "description",
            "message",
        ],
    ),
    (
        "consent_email",
        &[
            "consentemail",
            "emailconsent",
            "emailoptin",
            "optin",
            "newsletter",
        ],
    ),
    (
        "consent_whatsapp",
        &["consentwhatsapp", "whatsappconsent", "whatsappoptin"],
    ),
];

/// Smallest strsim similarity (normalized Damerau-Levenshtein) for a fuzzy match.
const FUZZY_THRESHOLD: f64 = 0.8;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Matched {
    Exact,
    Synonym,
    Fuzzy,
    Chosen,
    Unmatched,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CellKind {
    Text,
    Email,
    Phone,
    Date,
    Number,
}

/// Where one column's values go.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct ColumnMapping {
    pub index: usize,
    pub header: String,
    /// A canonical field, `full_name` (split into first and last name), `custom:<key>`,
    /// or `ignore`.
    pub target: String,
    pub matched: Matched,
    #[serde(skip)]
    kind: CellKind,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ColumnMap {
    pub columns: Vec<ColumnMapping>,
}

/// A problem with one cell that keeps its row out of the import.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct CellError {
    pub column: String,
    pub reason: String,
}

fn compact(header: &str) -> String {
    header
        .chars()
        .filter(|c| c.is_alphanumeric())
        .flat_map(char::to_lowercase)
        .collect()
}

/// Every canonical field name a mapping may name.
pub fn canonical_fields() -> impl Iterator<Item = &'static str> {
    SYNONYMS.iter().map(|(field, _)| *field)
}

fn kind_of(target: &str, header: &str) -> CellKind {
    let h = compact(header);
    match target {
        "email" => CellKind::Email,
        "phone" | "mobile" => CellKind::Phone,
        _ if target.starts_with("custom:") => {
            if ["date", "birthday", "dob", "createdat", "signedup"]
                .iter()
                .any(|k| h.contains(k))
            {
                CellKind::Date
            } else if ["fax"].iter().any(|k| h.contains(k)) {
                CellKind::Phone
            } else if [
                "revenue",
                "amount",
                "employees",
                "budget",
                "price",
                "quantity",
                "turnover",
                "headcount",
            ]
            .iter()
            .any(|k| h.contains(k))
            {
                CellKind::Number
            } else {
                CellKind::Text
            }
        }
        _ => CellKind::Text,
    }
}

/// The field a header means, and how it was recognised.
pub fn match_header(header: &str) -> (Option<&'static str>, Matched) {
    let key = compact(header);
    if key.is_empty() {
        return (None, Matched::Unmatched);
    }
    for (field, synonyms) in SYNONYMS {
        if compact(field) == key {
            return (Some(field), Matched::Exact);
        }
        if synonyms.contains(&key.as_str()) {
            return (Some(field), Matched::Synonym);
        }
    }
    // Headers that carry a known spelling plus noise: "Email (work)", "Mobile No.".
    let mut best: Option<(&'static str, f64)> = None;
    for (field, synonyms) in SYNONYMS {
        let own = compact(field);
        for synonym in synonyms
            .iter()
            .copied()
            .chain(std::iter::once(own.as_str()))
        {
            if synonym.len() < 4 {
                continue;
            }
            let mut score = strsim::normalized_damerau_levenshtein(&key, synonym);
            if synonym.len() >= 5 && key.starts_with(synonym) {
                score = score.max(0.9);
            }
            if score >= FUZZY_THRESHOLD && best.is_none_or(|(_, s)| score > s) {
                best = Some((field, score));
            }
        }
    }
    match best {
        Some((field, _)) => (Some(field), Matched::Fuzzy),
        None => (None, Matched::Unmatched),
    }
}

impl ColumnMap {
    /// Proposes a mapping for the headers, applying `overrides` (header → field, `custom`
    /// or `ignore`). A field is taken by at most one column: exact and synonym matches
    /// first, then fuzzy ones, in column order; a column that loses keeps its values as a
    /// custom field.
    pub fn propose(
        headers: &[String],
        overrides: &BTreeMap<String, String>,
    ) -> Result<Self, String> {
        for (header, target) in overrides {
            if !headers.iter().any(|h| h == header) {
                return Err(format!(
                    "mapping names column `{header}`, which the sheet does not have"
                ));
            }
            let ok = matches!(target.as_str(), "ignore" | "custom")
                || target.starts_with("custom:")
                || canonical_fields().any(|f| f == target);
            if !ok {
                return Err(format!(
                    "column `{header}`: `{target}` is not a field; use one of {}, custom or ignore",
                    canonical_fields().collect::<Vec<_>>().join(", ")
                ));
            }
        }
        let mut taken: Vec<&str> = overrides
            .values()
            .map(String::as_str)
            .filter(|t| canonical_fields().any(|f| f == *t))
            .collect();
        let mut columns: Vec<Option<ColumnMapping>> = vec![None; headers.len()];
        let matches: Vec<(Option<&'static str>, Matched)> =
            headers.iter().map(|h| match_header(h)).collect();
        for pass in [false, true] {
            for (index, header) in headers.iter().enumerate() {
                if columns[index].is_some() {
                    continue;
                }
                if let Some(target) = overrides.get(header) {
                    let target = if target == "custom" {
                        format!("custom:{header}")
                    } else {
                        target.clone()
                    };
                    columns[index] = Some(mapping(index, header, target, Matched::Chosen));
                    continue;
                }
                let (field, how) = &matches[index];
                let fuzzy = *how == Matched::Fuzzy;
                if let Some(field) = field
                    && fuzzy == pass
                    && !taken.contains(field)
                {
                    taken.push(field);
                    columns[index] = Some(mapping(index, header, (*field).to_owned(), how.clone()));
                }
            }
        }
        let columns = columns
            .into_iter()
            .enumerate()
            .map(|(index, column)| {
                column.unwrap_or_else(|| {
                    mapping(
                        index,
                        &headers[index],
                        format!("custom:{}", headers[index]),
                        Matched::Unmatched,
                    )
                })
            })
            .collect();
        Ok(Self { columns })
    }

    /// The inbound fields one row becomes, or the cell errors that keep it out.
    /// Cells beyond the header become custom `column_N` fields; nothing is dropped.
    pub fn row_fields(
        &self,
        cells: &[String],
        problems: &[(usize, String)],
    ) -> Result<Map<String, Value>, Vec<CellError>> {
        let mut errors = Vec::new();
        for (index, reason) in problems {
            let column = self.columns.get(*index);
            if column.is_some_and(|c| c.target == "ignore") {
                continue;
            }
            errors.push(CellError {
                column: column
                    .map_or_else(|| format!("column_{}", index + 1), |c| c.header.clone()),
                reason: reason.clone(),
            });
        }
        let mut fields = Map::new();
        let mut custom = Map::new();
        let mut full_name = None;
        for (index, cell) in cells.iter().enumerate() {
            if cell.is_empty() {
                continue;
            }
            let Some(column) = self.columns.get(index) else {
                custom.insert(format!("column_{}", index + 1), Value::from(cell.as_str()));
                continue;
            };
            let value = match column.kind {
                CellKind::Text => cell.clone(),
                CellKind::Phone => normalize_phone(cell),
                CellKind::Number => normalize_number(cell).unwrap_or_else(|| cell.clone()),
                CellKind::Date => serial_to_iso(cell).unwrap_or_else(|| cell.clone()),
                CellKind::Email => {
                    let email = cell.trim().trim_start_matches("mailto:").to_owned();
                    if !plausible_email(&email) {
                        errors.push(CellError {
                            column: column.header.clone(),
                            reason: format!("`{cell}` is not an email address"),
                        });
                    }
                    email
                }
            };
            match column.target.as_str() {
                "ignore" => {}
                "full_name" => full_name = Some(value),
                target => match target.strip_prefix("custom:") {
                    Some(key) => {
                        let key = if canonical_fields().any(|f| f == key) || key == "external_id" {
                            format!("{key}_{}", index + 1)
                        } else {
                            key.to_owned()
                        };
                        custom.insert(key, Value::from(value));
                    }
                    None => {
                        fields.insert(target.to_owned(), Value::from(value));
                    }
                },
            }
        }
        if let Some(name) = full_name {
            let (first, last) = split_name(&name);
            if !fields.contains_key("first_name") && !first.is_empty() {
                fields.insert("first_name".into(), Value::from(first));
            }
            if !fields.contains_key("last_name") && !last.is_empty() {
                fields.insert("last_name".into(), Value::from(last));
            }
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        for (key, value) in custom {
            fields.entry(key).or_insert(value);
        }
        Ok(fields)
    }
}

fn mapping(index: usize, header: &str, target: String, matched: Matched) -> ColumnMapping {
    ColumnMapping {
        index,
        header: header.to_owned(),
        kind: kind_of(&target, header),
        target,
        matched,
    }
}

fn plausible_email(email: &str) -> bool {
    match email.split_once('@') {
        Some((local, domain)) => {
            !local.is_empty()
                && domain.contains('.')
                && !domain.starts_with('.')
                && !domain.ends_with('.')
                && !email.contains(char::is_whitespace)
        }
        None => false,
    }
}

/// "Lovelace, Ada" → (Ada, Lovelace); "Ada King Lovelace" → (Ada, King Lovelace);
/// a single word is a first name.
pub fn split_name(name: &str) -> (String, String) {
    let name = name.split_whitespace().collect::<Vec<_>>().join(" ");
    if let Some((last, first)) = name.split_once(',') {
        return (first.trim().to_owned(), last.trim().to_owned());
    }
    match name.split_once(' ') {
        Some((first, last)) => (first.to_owned(), last.to_owned()),
        None => (name, String::new()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn targets(headers: &[&str], overrides: &[(&str, &str)]) -> Vec<String> {
        let headers: Vec<String> = headers.iter().map(|h| h.to_string()).collect();
        let overrides = overrides
            .iter()
            .map(|(h, t)| (h.to_string(), t.to_string()))
            .collect();
        ColumnMap::propose(&headers, &overrides)
            .unwrap()
            .columns
            .into_iter()
            .map(|c| c.target)
            .collect()
    }

    #[test]
    fn headers_people_write_find_their_fields() {
        assert_eq!(
            targets(
                &[
                    "E-mail Address",
                    "Mobile No.",
                    "Organisation",
                    "Job Title",
                    "First",
                    "Surname",
                    "Loyalty Tier"
                ],
                &[]
            ),
            [
                "email",
                "mobile",
                "company",
                "title",
                "first_name",
                "last_name",
                "custom:Loyalty Tier"
            ]
        );
        assert_eq!(
            targets(&["Emial", "Compnay", "UTM Source"], &[]),
            ["email", "company", "utm_source"]
        );
        assert_eq!(match_header("Emial").1, Matched::Fuzzy);
    }

    #[test]
    fn a_field_is_taken_once_and_overrides_win() {
        assert_eq!(
            targets(&["Email", "E-mail"], &[]),
            ["email", "custom:E-mail"]
        );
        assert_eq!(
            targets(
                &["Email", "Notes", "Phone"],
                &[("Email", "ignore"), ("Notes", "title")]
            ),
            ["ignore", "title", "phone"]
        );
        let headers = vec!["A".to_string()];
        let bad = [("A".to_string(), "shoe_size".to_string())]
            .into_iter()
            .collect();
        assert!(
            ColumnMap::propose(&headers, &bad)
                .unwrap_err()
                .contains("not a field")
        );
        let missing = [("B".to_string(), "email".to_string())]
            .into_iter()
            .collect();
        assert!(ColumnMap::propose(&headers, &missing).is_err());
    }

    #[test]
    fn rows_become_fields_with_cells_as_people_make_them() {
        let headers: Vec<String> = ["Name", "Email", "Phone", "Signup Date", "Revenue"]
            .iter()
            .map(|h| h.to_string())
            .collect();
        let map = ColumnMap::propose(&headers, &BTreeMap::new()).unwrap();
        let cells: Vec<String> = [
            "Lovelace, Ada",
            "ada@example.org",
            "4.42079460958E+11",
            "45292",
            "1.234.567,5",
            "extra",
        ]
        .iter()
        .map(|c| c.to_string())
        .collect();
        let fields = map.row_fields(&cells, &[]).unwrap();
        assert_eq!(fields["first_name"], "Ada");
        assert_eq!(fields["last_name"], "Lovelace");
        assert_eq!(fields["phone"], "442079460958");
        assert_eq!(fields["Signup Date"], "2024-01-01");
        assert_eq!(fields["Revenue"], "1234567.5");
        assert_eq!(
            fields["column_6"], "extra",
            "cells past the header are kept"
        );

        let bad: Vec<String> = ["Bo", "not-an-email"]
            .iter()
            .map(|c| c.to_string())
            .collect();
        let errors = map.row_fields(&bad, &[]).unwrap_err();
        assert_eq!(errors[0].column, "Email");
        let errors = map
            .row_fields(&cells, &[(4, "formula error #DIV/0!".into())])
            .unwrap_err();
        assert_eq!(errors[0].column, "Revenue");
    }
}
