//! Who may do what: roles configured as data (reference/roles.toml, overridable in
//! leadgate.toml), compiled once at start into an access matrix per role and record kind,
//! field rules, and a row reach. A role also holds everything the roles below it hold.

pub mod reach;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::domain::RecordKind;

pub use reach::{Reach, check_team_tree};

/// What a caller may do to a kind of record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    Read,
    Create,
    Update,
    Delete,
    Export,
    Merge,
}

impl Action {
    pub const ALL: [Action; 6] = [
        Action::Read,
        Action::Create,
        Action::Update,
        Action::Delete,
        Action::Export,
        Action::Merge,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Action::Read => "read",
            Action::Create => "create",
            Action::Update => "update",
            Action::Delete => "delete",
            Action::Export => "export",
            Action::Merge => "merge",
        }
    }

    fn parse(text: &str) -> Option<Action> {
        Action::ALL.into_iter().find(|a| a.as_str() == text)
    }

    fn bit(self) -> u8 {
        1 << (self as u8)
    }
}

/// Kinds that are not record tables but are permissioned like them.
pub const AUDIT: &str = "audit";
pub const INBOX: &str = "inbox";
/// Nurturing: email templates, sequences and enrolments, the outbox, suppressions.
pub const SEQUENCES: &str = "sequences";

fn kind_names() -> impl Iterator<Item = &'static str> {
    RecordKind::ALL
        .iter()
        .map(|k| k.path())
        .chain([AUDIT, INBOX, SEQUENCES])
}

/// How far a role's row reach extends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum ReachRule {
    #[default]
    Own,
    Team,
    All,
}

/// One role as configured.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoleSection {
    #[serde(default)]
    pub parent: Option<String>,
    #[serde(default)]
    pub reach: ReachRule,
    #[serde(default)]
    pub can: BTreeMap<String, Vec<String>>,
    #[serde(default)]
    pub hidden: BTreeMap<String, Vec<String>>,
    #[serde(default)]
    pub read_only: BTreeMap<String, Vec<String>>,
}

/// `[access]` in leadgate.toml.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AccessSection {
    /// Roles added to, or replacing, the built-in ones (reference/roles.toml).
    pub roles: BTreeMap<String, RoleSection>,
    /// Lifetime of a token issued by sign-in.
    pub session_hours: u32,
    /// Sign-in attempts allowed per client address per minute.
    pub sign_in_per_minute: u32,
}

impl Default for AccessSection {
    fn default() -> Self {
        Self {
            roles: BTreeMap::new(),
            session_hours: 12,
            sign_in_per_minute: 10,
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum PolicyError {
    #[error("access.roles.{role}: {detail}")]
    Role { role: String, detail: String },
    #[error("built-in roles do not parse: {0}")]
    Builtin(String),
}

/// A role ready for checks.
#[derive(Debug)]
pub struct RolePolicy {
    pub name: String,
    pub reach: ReachRule,
    allowed: HashMap<&'static str, u8>,
    hidden: HashMap<&'static str, HashSet<String>>,
    read_only: HashMap<&'static str, HashSet<String>>,
}

/// Why a field may not be written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldRule {
    Hidden,
    ReadOnly,
}

impl RolePolicy {
    pub fn can(&self, kind: &str, action: Action) -> bool {
        self.allowed
            .get(kind)
            .is_some_and(|bits| bits & action.bit() != 0)
    }

    pub fn is_hidden(&self, kind: &str, field: &str) -> bool {
        self.hidden.get(kind).is_some_and(|f| f.contains(field))
    }

    pub fn hidden_fields(&self, kind: &str) -> impl Iterator<Item = &str> {
        self.hidden
            .get(kind)
            .into_iter()
            .flatten()
            .map(String::as_str)
    }

    /// The rule that refuses a write of `field`, if any.
    pub fn write_rule(&self, kind: &str, field: &str) -> Option<FieldRule> {
        if self.is_hidden(kind, field) {
            Some(FieldRule::Hidden)
        } else if self.read_only.get(kind).is_some_and(|f| f.contains(field)) {
            Some(FieldRule::ReadOnly)
        } else {
            None
        }
    }

    /// Kinds this role may read (search scopes to them).
    pub fn readable_kinds(&self) -> Vec<RecordKind> {
        RecordKind::ALL
            .iter()
            .copied()
            .filter(|k| self.can(k.path(), Action::Read))
            .collect()
    }
}

/// Every role, compiled.
#[derive(Debug, Clone)]
pub struct AccessPolicy {
    roles: HashMap<String, Arc<RolePolicy>>,
}

impl AccessPolicy {
    pub fn role(&self, name: &str) -> Option<Arc<RolePolicy>> {
        self.roles.get(name).cloned()
    }

    pub fn role_names(&self) -> Vec<String> {
        let mut names: Vec<_> = self.roles.keys().cloned().collect();
        names.sort();
        names
    }

    /// The built-in roles with the configured ones laid over them, checked: unknown
    /// kinds, actions, fields and parents, and a cycle of parents, fail naming the role.
    pub fn compile(section: &AccessSection) -> Result<Self, PolicyError> {
        let mut roles: BTreeMap<String, RoleSection> =
            toml::from_str(include_str!("../../reference/roles.toml"))
                .map_err(|e| PolicyError::Builtin(e.to_string()))?;
        roles.extend(section.roles.clone());
        let known_kinds: HashSet<&'static str> = kind_names().collect();
        let fail = |role: &str, detail: String| PolicyError::Role {
            role: role.to_owned(),
            detail,
        };
        let mut own: HashMap<String, HashMap<&'static str, u8>> = HashMap::new();
        for (name, role) in &roles {
            if let Some(parent) = &role.parent
                && !roles.contains_key(parent)
            {
                return Err(fail(name, format!("parent `{parent}` is not a role")));
            }
            let mut allowed = HashMap::new();
            for (kind, actions) in &role.can {
                let mut bits = 0u8;
                for action in actions {
                    bits |= match action.as_str() {
                        "*" => Action::ALL.iter().fold(0, |b, a| b | a.bit()),
                        other => Action::parse(other)
                            .ok_or_else(|| {
                                fail(name, format!("can.{kind}: unknown action `{other}`"))
                            })?
                            .bit(),
                    };
                }
                if kind == "*" {
                    for known in &known_kinds {
                        *allowed.entry(*known).or_insert(0) |= bits;
                    }
                } else {
                    let known = known_kinds
                        .get(kind.as_str())
                        .ok_or_else(|| fail(name, format!("can: unknown kind `{kind}`")))?;
                    *allowed.entry(*known).or_insert(0) |= bits;
                }
            }
            own.insert(name.clone(), allowed);
        }
        // A cycle of parents would make "above" meaningless.
        for name in roles.keys() {
            let mut seen = vec![name.as_str()];
            let mut at = name.as_str();
            while let Some(parent) = roles[at].parent.as_deref() {
                if seen.contains(&parent) {
                    seen.push(parent);
                    return Err(fail(
                        name,
                        format!("parents form a cycle: {}", seen.join(" > ")),
                    ));
                }
                seen.push(parent);
                at = parent;
            }
        }
        let mut compiled = HashMap::new();
        for (name, role) in &roles {
            // Everything granted to a role below this one is granted to this one.
            let mut allowed = own[name].clone();
            let mut below: Vec<&str> = vec![name.as_str()];
            while let Some(current) = below.pop() {
                for (child, child_role) in &roles {
                    if child_role.parent.as_deref() == Some(current) {
                        for (kind, bits) in &own[child] {
                            *allowed.entry(*kind).or_insert(0) |= bits;
                        }
                        below.push(child.as_str());
                    }
                }
            }
            let fields = |rules: &BTreeMap<String, Vec<String>>, what: &str| {
                let mut out: HashMap<&'static str, HashSet<String>> = HashMap::new();
                for (kind_name, fields) in rules {
                    let kind: RecordKind = kind_name
                        .parse()
                        .map_err(|_| fail(name, format!("{what}: unknown kind `{kind_name}`")))?;
                    for field in fields {
                        if !kind.fields().iter().any(|def| def.name == field) {
                            return Err(fail(
                                name,
                                format!("{what}.{kind_name}: unknown field `{field}`"),
                            ));
                        }
                        out.entry(kind.path()).or_default().insert(field.clone());
                    }
                }
                Ok(out)
            };
            compiled.insert(
                name.clone(),
                Arc::new(RolePolicy {
                    name: name.clone(),
                    reach: role.reach,
                    allowed,
                    hidden: fields(&role.hidden, "hidden")?,
                    read_only: fields(&role.read_only, "read_only")?,
                }),
            );
        }
        Ok(Self { roles: compiled })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(name: &str, toml_text: &str) -> Result<AccessPolicy, PolicyError> {
        let role: RoleSection = toml::from_str(toml_text).expect("role parses");
        AccessPolicy::compile(&AccessSection {
            roles: BTreeMap::from([(name.to_owned(), role)]),
            ..AccessSection::default()
        })
    }

    #[test]
    fn builtin_roles_compile_and_inherit_upwards() {
        let policy = AccessPolicy::compile(&AccessSection::default()).expect("compiles");
        let rep = policy.role("rep").expect("rep");
        let manager = policy.role("manager").expect("manager");
        let director = policy.role("sales_director").expect("director");
        assert!(rep.can("leads", Action::Update));
        assert!(!rep.can("leads", Action::Merge));
        assert!(manager.can("leads", Action::Update), "inherited from rep");
        assert!(manager.can("leads", Action::Merge));
        assert!(
            director.can("leads", Action::Merge),
            "inherited from manager"
        );
        assert!(!manager.can("leads", Action::Delete));
        let finance = policy.role("finance").expect("finance");
        assert!(finance.can("invoices", Action::Read));
        assert!(!finance.can("leads", Action::Update));
        let support = policy.role("support_agent").expect("support");
        assert!(support.can("tickets", Action::Update));
        assert!(!support.can("opportunities", Action::Read));
        assert!(
            policy
                .role("admin")
                .expect("admin")
                .can("audit", Action::Export)
        );
        assert!(rep.is_hidden("accounts", "annual_revenue"));
        assert!(!manager.is_hidden("accounts", "annual_revenue"));
        assert_eq!(rep.write_rule("leads", "score"), Some(FieldRule::ReadOnly));
    }

    #[test]
    fn a_role_naming_an_unknown_field_is_refused_naming_it() {
        let error = with("intern", "hidden = { leads = [\"shoe_size\"] }").unwrap_err();
        assert_eq!(
            error.to_string(),
            "access.roles.intern: hidden.leads: unknown field `shoe_size`"
        );
    }

    #[test]
    fn unknown_kinds_actions_and_parents_are_refused() {
        assert!(with("x", "can = { widgets = [\"read\"] }").is_err());
        assert!(with("x", "can = { leads = [\"fly\"] }").is_err());
        assert!(with("x", "parent = \"nobody\"").is_err());
    }

    #[test]
    fn a_cycle_of_parents_is_refused() {
        let error = with("admin", "parent = \"rep\"").unwrap_err();
        assert!(error.to_string().contains("cycle"), "{error}");
    }
}
