//! The mapping engine: `mappings/NAME.toml` says which inbound field feeds which canonical
//! field of which record kind, with small transforms. Mappings are checked when they are
//! loaded; a mistake stops start with the file, line and field named.
//!
//! ```toml
//! target = "leads"
//! sources = ["partner:*"]          # which inbound sources use this mapping
//!
//! [fields]
//! email = { from = "Email", transform = ["trim", "lower"] }
//! first_name = { from = "Name", split_name = "first" }
//! last_name = { from = "Name", split_name = "last" }
//! country = { from = "Country", lookup = { "UK" = "GB" }, default = "GB" }
//! birth_date = { from = "dob", date = ["%Y%m%d", "%d/%m/%Y"] }
//! street = { from = ["number", "street"], join = " " }   # joined
//! phone = { from = ["mobile", "phone"] }                  # the first present
//! phone = "Phone"                  # a plain rename
//! "custom.tier" = "Tier"           # a custom field
//! ```
//!
//! Inbound fields no rule reads are kept under `custom`, never dropped.

mod transform;

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_json::{Map, Value};
use toml::Spanned;

use crate::domain::RecordKind;
pub use transform::Transform;

#[derive(Debug, thiserror::Error)]
#[error("{file}:{line}: {field}: {reason}")]
pub struct MappingError {
    pub file: PathBuf,
    pub line: usize,
    pub field: String,
    pub reason: String,
}

/// One source field, or several joined.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
enum From {
    One(String),
    Many(Vec<String>),
}

#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
enum RuleSpec {
    Rename(String),
    Full(Box<FullRule>),
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct FullRule {
    from: Option<From>,
    #[serde(default)]
    transform: Vec<String>,
    split_name: Option<String>,
    join: Option<String>,
    default: Option<toml::Value>,
    lookup: Option<BTreeMap<String, String>>,
    date: Option<Vec<String>>,
    regex: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct MappingFile {
    target: Spanned<String>,
    #[serde(default)]
    sources: Vec<String>,
    /// Inbound records whose field holds one of these values are acknowledged and kept
    /// in the inbox, but make no record (delivery statuses, ringing calls).
    #[serde(default)]
    skip: BTreeMap<String, Vec<String>>,
    #[serde(default)]
    activity: ActivitySpec,
    /// Inbound records that report on an earlier one (a delivery status) update that
    /// record's activity instead of making a record.
    #[serde(default)]
    update_activity: Option<UpdateActivity>,
    /// Canonical fields that identify a person outright for this channel (a WhatsApp or
    /// caller number): an arrival whose value equals exactly one lead's joins it without
    /// weighing the evidence.
    #[serde(default)]
    identify_by: Vec<String>,
    /// For a mapping chosen by name on a spreadsheet upload: how the file is laid out
    /// when it is not a plain table (`zoom_attendee_report`).
    #[serde(default)]
    import_layout: Option<Spanned<String>>,
    #[serde(default)]
    fields: BTreeMap<Spanned<String>, Spanned<RuleSpec>>,
}

/// File layouts an import can unpack before its columns are matched.
pub const IMPORT_LAYOUTS: &[&str] = &["zoom_attendee_report"];

/// `when` a field holds one of the values, the activity whose `external_id` is the value
/// of `external_id_from` takes the value of `status_from` as its status.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpdateActivity {
    pub when: BTreeMap<String, Vec<String>>,
    pub external_id_from: String,
    pub status_from: String,
}

/// How the arrival shows on the record's timeline.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ActivitySpec {
    /// `message`, `call`, `webinar`, `form_submission` … (default `inbound`).
    #[serde(rename = "type")]
    pub activity_type: Option<String>,
    /// Inbound field whose value becomes the activity's subject.
    pub subject_from: Option<String>,
    /// Inbound field whose value becomes the activity's body.
    pub body_from: Option<String>,
    /// Inbound field holding a duration in seconds (calls).
    pub duration_from: Option<String>,
    /// Inbound field holding `inbound`/`outbound`.
    pub direction_from: Option<String>,
    /// When an inbound field holds one of these values and the arrival is a known
    /// lead's, its owner gets a follow-up task (a missed call from a known lead).
    #[serde(default)]
    pub follow_up_when: BTreeMap<String, Vec<String>>,
}

impl ActivitySpec {
    /// The `field=value` that calls for a follow-up task, if any.
    pub fn follow_up(&self, inbound: &Map<String, Value>) -> Option<String> {
        condition_met(&self.follow_up_when, inbound)
    }
}

/// Where a canonical field's value comes from and how it is shaped.
#[derive(Debug, Clone)]
pub struct Rule {
    /// `first_name`, or `custom.tier` for a custom field.
    pub target: String,
    /// Several source fields: joined with `join` when given, else the first present.
    pub from: Vec<String>,
    pub join: Option<String>,
    pub steps: Vec<Transform>,
    pub default: Option<Value>,
}

#[derive(Debug, Clone)]
pub struct Mapping {
    pub name: String,
    pub target: RecordKind,
    /// Source patterns: exact (`whatsapp`) or prefix (`partner:*`).
    pub sources: Vec<String>,
    pub skip: BTreeMap<String, Vec<String>>,
    pub activity: ActivitySpec,
    pub update_activity: Option<UpdateActivity>,
    pub identify_by: Vec<String>,
    /// See [`IMPORT_LAYOUTS`].
    pub import_layout: Option<String>,
    pub rules: Vec<Rule>,
}

/// The result of mapping one inbound record.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Mapped {
    pub fields: Map<String, Value>,
    pub custom: Map<String, Value>,
    /// `(field, reason)` for transforms that failed; the raw value is kept in `custom`.
    pub problems: Vec<(String, String)>,
    /// For those fields, the raw text that failed, so matching can still use it.
    pub unconverted: Map<String, Value>,
}

fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].matches('\n').count() + 1
}

impl Mapping {
    /// Parses and checks one mapping file's text.
    pub fn parse(name: &str, file: &Path, text: &str) -> Result<Self, MappingError> {
        let error = |line: usize, field: &str, reason: String| MappingError {
            file: file.to_path_buf(),
            line,
            field: field.to_owned(),
            reason,
        };
        let parsed: MappingFile = toml::from_str(text).map_err(|e| {
            let line = e.span().map_or(1, |span| line_of(text, span.start));
            error(line, "-", e.message().to_owned())
        })?;
        let target_line = line_of(text, parsed.target.span().start);
        let target: RecordKind =
            parsed
                .target
                .get_ref()
                .parse()
                .map_err(|e: crate::domain::kind::UnknownKind| {
                    error(target_line, "target", e.to_string())
                })?;
        if let Some(unknown) = parsed
            .identify_by
            .iter()
            .find(|f| target.field(f).is_none())
        {
            return Err(error(
                1,
                "identify_by",
                format!("{target} has no field `{unknown}`"),
            ));
        }
        if let Some(layout) = &parsed.import_layout
            && !IMPORT_LAYOUTS.contains(&layout.get_ref().as_str())
        {
            return Err(error(
                line_of(text, layout.span().start),
                "import_layout",
                format!("unknown layout; known: {}", IMPORT_LAYOUTS.join(", ")),
            ));
        }
        let mut rules = Vec::with_capacity(parsed.fields.len());
        for (key, spec) in parsed.fields {
            let line = line_of(text, key.span().start);
            let field = key.into_inner();
            if let Some(custom) = field.strip_prefix("custom.") {
                if custom.is_empty() {
                    return Err(error(line, &field, "custom field needs a name".into()));
                }
            } else if target.field(&field).is_none() {
                return Err(error(
                    line,
                    &field,
                    format!("{target} has no field `{field}`"),
                ));
            }
            let rule = Rule::from_spec(field.clone(), spec.into_inner())
                .map_err(|reason| error(line, &field, reason))?;
            rules.push(rule);
        }
        Ok(Self {
            name: name.to_owned(),
            target,
            sources: parsed.sources,
            skip: parsed.skip,
            activity: parsed.activity,
            update_activity: parsed.update_activity,
            identify_by: parsed.identify_by,
            import_layout: parsed.import_layout.map(Spanned::into_inner),
            rules,
        })
    }

    pub fn serves(&self, source: &str) -> bool {
        self.sources
            .iter()
            .any(|pattern| match pattern.strip_suffix('*') {
                Some(prefix) => source.starts_with(prefix),
                None => source == pattern,
            })
    }

    /// The skip rule an inbound record meets, as `field=value`.
    pub fn skipped_by(&self, inbound: &Map<String, Value>) -> Option<String> {
        condition_met(&self.skip, inbound)
    }

    /// `(external id, status)` when this inbound record updates an earlier activity.
    pub fn activity_update(&self, inbound: &Map<String, Value>) -> Option<(String, String)> {
        let spec = self.update_activity.as_ref()?;
        condition_met(&spec.when, inbound)?;
        let id = inbound.get(&spec.external_id_from).and_then(scalar_text)?;
        let status = inbound.get(&spec.status_from).and_then(scalar_text)?;
        Some((id, status))
    }

    /// The text of an inbound field, for activity details.
    pub fn inbound_text(inbound: &Map<String, Value>, field: Option<&str>) -> Option<String> {
        field.and_then(|f| inbound.get(f)).and_then(scalar_text)
    }

    /// Maps inbound fields; fields no rule reads go to `custom` untouched.
    pub fn apply(&self, inbound: &Map<String, Value>) -> Mapped {
        let mut mapped = Mapped::default();
        let mut read: HashSet<&str> = HashSet::new();
        for rule in &self.rules {
            read.extend(rule.from.iter().map(String::as_str));
            match rule.evaluate(inbound) {
                Ok(Some(value)) => {
                    match rule.target.strip_prefix("custom.") {
                        Some(custom) => mapped.custom.insert(custom.to_owned(), value),
                        None => mapped.fields.insert(rule.target.clone(), value),
                    };
                }
                Ok(None) => {}
                Err(reason) => {
                    mapped.problems.push((rule.target.clone(), reason));
                    let raw: Vec<String> = rule
                        .from
                        .iter()
                        .filter_map(|name| inbound.get(name).and_then(scalar_text))
                        .collect();
                    mapped.unconverted.insert(
                        rule.target.clone(),
                        Value::String(raw.join(rule.join.as_deref().unwrap_or(" "))),
                    );
                    for source in &rule.from {
                        if let Some(raw) = inbound.get(source) {
                            mapped.custom.insert(source.clone(), raw.clone());
                        }
                    }
                }
            }
        }
        for (name, value) in inbound {
            if !read.contains(name.as_str()) && !value.is_null() {
                mapped
                    .custom
                    .entry(name.clone())
                    .or_insert_with(|| value.clone());
            }
        }
        mapped
    }
}

impl Rule {
    fn from_spec(target: String, spec: RuleSpec) -> Result<Self, String> {
        let full = match spec {
            RuleSpec::Rename(from) => {
                return Ok(Self {
                    target,
                    from: vec![from],
                    join: None,
                    steps: Vec::new(),
                    default: None,
                });
            }
            RuleSpec::Full(full) => *full,
        };
        let from = match full.from {
            Some(From::One(one)) => vec![one],
            Some(From::Many(many)) if !many.is_empty() => many,
            Some(From::Many(_)) => return Err("`from` lists no field".into()),
            None => Vec::new(),
        };
        if from.is_empty() && full.default.is_none() {
            return Err("needs `from` or `default`".into());
        }
        let mut steps = Vec::new();
        for name in &full.transform {
            steps.push(Transform::named(name)?);
        }
        if let Some(part) = full.split_name {
            steps.push(Transform::split_name(&part)?);
        }
        if let Some(pattern) = full.regex {
            steps.push(Transform::regex(&pattern)?);
        }
        if let Some(formats) = full.date {
            steps.push(Transform::Date(formats));
        }
        if let Some(table) = full.lookup {
            steps.push(Transform::Lookup(
                table
                    .into_iter()
                    .map(|(k, v)| (k.to_lowercase(), v))
                    .collect(),
            ));
        }
        let default = full
            .default
            .map(|v| serde_json::to_value(v).map_err(|e| e.to_string()))
            .transpose()?;
        Ok(Self {
            target,
            from,
            join: full.join,
            steps,
            default,
        })
    }

    fn evaluate(&self, inbound: &Map<String, Value>) -> Result<Option<Value>, String> {
        let parts: Vec<String> = self
            .from
            .iter()
            .filter_map(|name| inbound.get(name))
            .filter_map(scalar_text)
            .filter(|text| !text.trim().is_empty())
            .collect();
        let first_present = || {
            self.from
                .iter()
                .filter_map(|name| inbound.get(name))
                .find(|value| scalar_text(value).is_some_and(|t| !t.trim().is_empty()))
                .cloned()
        };
        let value = if parts.is_empty() {
            None
        } else if self.steps.is_empty() && self.join.is_none() {
            // A rename keeps the value's JSON type (numbers, booleans).
            first_present()
        } else {
            let mut text = match &self.join {
                Some(separator) => parts.join(separator),
                None => parts.into_iter().next().unwrap_or_default(),
            };
            for step in &self.steps {
                match step.apply(&text)? {
                    Some(next) => text = next,
                    None => return Ok(self.default.clone()),
                }
            }
            Some(Value::String(text))
        };
        Ok(value.or_else(|| self.default.clone()))
    }
}

/// The first `field=value` where an inbound field holds one of the listed values
/// (case-insensitive): the one test behind skip, follow-up and activity-update rules.
fn condition_met(
    conditions: &BTreeMap<String, Vec<String>>,
    inbound: &Map<String, Value>,
) -> Option<String> {
    conditions.iter().find_map(|(field, values)| {
        let value = inbound.get(field).and_then(scalar_text)?;
        values
            .iter()
            .any(|v| v.eq_ignore_ascii_case(&value))
            .then(|| format!("{field}={value}"))
    })
}

fn scalar_text(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// All mappings of a directory, by name.
#[derive(Debug, Clone, Default)]
pub struct MappingSet {
    mappings: Vec<Mapping>,
}

impl MappingSet {
    /// Loads every `*.toml` in `dir`; the first invalid one stops the load.
    pub fn load_dir(dir: &Path) -> Result<Self, MappingError> {
        let read_error = |reason: String| MappingError {
            file: dir.to_path_buf(),
            line: 0,
            field: "-".into(),
            reason,
        };
        let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
            .map_err(|e| read_error(e.to_string()))?
            .filter_map(|entry| entry.ok().map(|e| e.path()))
            .filter(|path| path.extension().is_some_and(|ext| ext == "toml"))
            .collect();
        paths.sort();
        let mut mappings = Vec::with_capacity(paths.len());
        for path in paths {
            let text = std::fs::read_to_string(&path).map_err(|e| MappingError {
                file: path.clone(),
                line: 0,
                field: "-".into(),
                reason: e.to_string(),
            })?;
            let name = path
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default();
            mappings.push(Mapping::parse(&name, &path, &text)?);
        }
        Ok(Self { mappings })
    }

    /// The mappings shipped in `mappings/`, compiled in, for a binary run anywhere.
    /// The configured directory when it exists, else the shipped mappings.
    pub fn load(dir: &Path) -> Result<Self, MappingError> {
        if dir.is_dir() {
            Self::load_dir(dir)
        } else {
            Self::builtin()
        }
    }

    pub fn builtin() -> Result<Self, MappingError> {
        let mut mappings = Vec::new();
        for (name, text) in BUILTIN {
            mappings.push(Mapping::parse(
                name,
                Path::new(&format!("mappings/{name}.toml")),
                text,
            )?);
        }
        Ok(Self { mappings })
    }

    pub fn by_name(&self, name: &str) -> Option<&Mapping> {
        self.mappings.iter().find(|m| m.name == name)
    }

    /// The mapping for an inbound source: the first whose `sources` match.
    pub fn for_source(&self, source: &str) -> Option<&Mapping> {
        self.mappings.iter().find(|m| m.serves(source))
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.mappings.iter().map(|m| m.name.as_str())
    }
}

const BUILTIN: &[(&str, &str)] = &[
    ("partner", include_str!("../../mappings/partner.toml")),
    ("form", include_str!("../../mappings/form.toml")),
    ("whatsapp", include_str!("../../mappings/whatsapp.toml")),
    ("cti", include_str!("../../mappings/cti.toml")),
    ("zoom", include_str!("../../mappings/zoom.toml")),
    ("email", include_str!("../../mappings/email.toml")),
    (
        "support_email",
        include_str!("../../mappings/support_email.toml"),
    ),
    ("import", include_str!("../../mappings/import.toml")),
    (
        "zoom_attendees",
        include_str!("../../mappings/zoom_attendees.toml"),
    ),
    ("febrl", include_str!("../../mappings/febrl.toml")),
    ("synthetic", include_str!("../../mappings/synthetic.toml")),
    ("stripe", include_str!("../../mappings/stripe.toml")),
    ("payments", include_str!("../../mappings/payments.toml")),
];

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(text: &str) -> Result<Mapping, MappingError> {
        Mapping::parse("t", Path::new("mappings/t.toml"), text)
    }

    fn object(value: Value) -> Map<String, Value> {
        match value {
            Value::Object(map) => map,
            _ => Map::new(),
        }
    }

    #[test]
    fn a_mapping_naming_a_missing_field_fails_with_file_line_and_field() {
        let error =
            parse("target = \"leads\"\n[fields]\nemail = \"e\"\nshoe_size = \"s\"\n").unwrap_err();
        assert_eq!(error.line, 4);
        assert_eq!(error.field, "shoe_size");
        assert!(
            error
                .to_string()
                .starts_with("mappings/t.toml:4: shoe_size:"),
            "{error}"
        );
        let error = parse("target = \"widgets\"\n").unwrap_err();
        assert_eq!((error.line, error.field.as_str()), (1, "target"));
        let error = parse(
            "target = \"leads\"\n[fields]\nemail = { from = \"e\", transform = [\"shout\"] }\n",
        )
        .unwrap_err();
        assert!(error.reason.contains("shout"));
    }

    #[test]
    fn rules_rename_split_join_lookup_and_default() {
        let mapping = parse(
            r#"target = "leads"
sources = ["form:*"]
[fields]
first_name = { from = "Name", split_name = "first" }
last_name = { from = "Name", split_name = "last" }
email = { from = "Email", transform = ["trim", "lower"] }
country = { from = "Country", lookup = { "UK" = "GB" }, default = "IE" }
city = { from = ["Town", "County"], join = ", " }
birth_date = { from = "dob", date = ["%Y%m%d", "%d/%m/%Y"] }
postal_code = { from = "Address", regex = "([A-Z]{1,2}[0-9][0-9A-Z]? ?[0-9][A-Z]{2})" }
"custom.tier" = "Tier"
"#,
        )
        .unwrap();
        assert!(mapping.serves("form:contact") && !mapping.serves("partner:x"));
        let mapped = mapping.apply(&object(json!({
            "Name": "Dr Ada King Lovelace", "Email": "  ADA@Example.COM ", "Country": "uk",
            "Town": "London", "County": "Greater London", "dob": "18151210",
            "Address": "12 St James's Square, London SW1Y 4JH", "Tier": 3, "utm": "x"
        })));
        assert_eq!(mapped.fields["first_name"], "Ada");
        assert_eq!(mapped.fields["last_name"], "King Lovelace");
        assert_eq!(mapped.fields["email"], "ada@example.com");
        assert_eq!(mapped.fields["country"], "GB");
        assert_eq!(mapped.fields["city"], "London, Greater London");
        assert_eq!(mapped.fields["birth_date"], "1815-12-10");
        assert_eq!(mapped.fields["postal_code"], "SW1Y 4JH");
        assert_eq!(mapped.custom["tier"], 3);
        assert_eq!(mapped.custom["utm"], "x", "unread fields are kept");
        let defaults = mapping.apply(&object(json!({"Email": "b@example.org"})));
        assert_eq!(defaults.fields["country"], "IE");
    }

    #[test]
    fn a_failing_transform_fails_that_field_only_and_keeps_the_raw_value() {
        let mapping =
            parse("target = \"leads\"\n[fields]\nbirth_date = { from = \"dob\", date = [\"%Y-%m-%d\"] }\nemail = \"e\"\n")
                .unwrap();
        let mapped = mapping.apply(&object(json!({"dob": "next tuesday", "e": "a@b.example"})));
        assert_eq!(mapped.fields["email"], "a@b.example");
        assert!(!mapped.fields.contains_key("birth_date"));
        assert_eq!(mapped.custom["dob"], "next tuesday");
        assert_eq!(mapped.problems[0].0, "birth_date");
    }

    #[test]
    fn the_shipped_mappings_are_valid() {
        let set = MappingSet::builtin().unwrap();
        assert!(set.for_source("partner:acme").is_some());
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("mappings");
        let from_disk = MappingSet::load_dir(&dir).unwrap();
        assert_eq!(
            from_disk.names().count(),
            BUILTIN.len(),
            "every file is built in"
        );
    }
}
