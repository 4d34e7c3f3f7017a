//! Assign: ordered rules (territory by country, region or postcode; source; score band)
//! name a user or a team; within a team, round-robin over its active users, skipping
//! those at their capacity of open leads. A lead of an account with an owner keeps that
//! owner (linking sets it before rules run). Every assignment is on the timeline with the
//! rule that fired.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sqlx::{AnyConnection, Row};

use crate::store::StoreError;

/// One rule as configured (`[[assignment_rules]]`); every given condition must hold.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AssignmentRule {
    pub name: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub country: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub region: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub postcode_prefix: Vec<String>,
    /// A source or a prefix pattern such as `partner:*`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_score: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_score: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to_user: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to_team: Option<String>,
}

#[derive(Debug, thiserror::Error)]
#[error("assignment rule `{rule}`: {reason}")]
pub struct AssignmentRuleError {
    pub rule: String,
    pub reason: String,
}

/// Who got the lead and why.
#[derive(Debug, Clone, PartialEq)]
pub struct Assignment {
    pub owner: String,
    pub rule: String,
    pub team: Option<String>,
}

pub struct Assigner {
    rules: Vec<AssignmentRule>,
    /// Open leads one user may hold; 0 means no limit.
    capacity: i64,
}

fn text<'a>(fields: &'a Map<String, Value>, name: &str) -> Option<&'a str> {
    fields.get(name).and_then(Value::as_str)
}

impl AssignmentRule {
    fn holds(&self, fields: &Map<String, Value>, source: &str) -> bool {
        let within = |list: &[String], value: Option<&str>| {
            list.is_empty()
                || value.is_some_and(|v| list.iter().any(|item| item.eq_ignore_ascii_case(v)))
        };
        let postcode_ok = self.postcode_prefix.is_empty()
            || text(fields, "postal_code").is_some_and(|code| {
                let code = code.to_uppercase();
                self.postcode_prefix
                    .iter()
                    .any(|prefix| code.starts_with(&prefix.to_uppercase()))
            });
        let source_ok =
            self.source
                .as_deref()
                .is_none_or(|pattern| match pattern.strip_suffix('*') {
                    Some(prefix) => source.starts_with(prefix),
                    None => source == pattern,
                });
        let score = fields.get("score").and_then(Value::as_i64).unwrap_or(0);
        within(&self.country, text(fields, "country"))
            && within(&self.region, text(fields, "region"))
            && postcode_ok
            && source_ok
            && self.min_score.is_none_or(|min| score >= min)
            && self.max_score.is_none_or(|max| score <= max)
    }
}

impl Assigner {
    pub fn new(rules: &[AssignmentRule], capacity: i64) -> Result<Self, AssignmentRuleError> {
        for rule in rules {
            if rule.to_user.is_some() == rule.to_team.is_some() {
                return Err(AssignmentRuleError {
                    rule: rule.name.clone(),
                    reason: "name exactly one of `to_user` or `to_team`".into(),
                });
            }
        }
        Ok(Self {
            rules: rules.to_vec(),
            capacity,
        })
    }

    /// The first rule that holds and can place the lead; `None` leaves it unassigned.
    pub async fn assign(
        &self,
        conn: &mut AnyConnection,
        fields: &Map<String, Value>,
        source: &str,
    ) -> Result<Option<Assignment>, StoreError> {
        for rule in self.rules.iter().filter(|rule| rule.holds(fields, source)) {
            if let Some(user) = &rule.to_user {
                if self.has_room(conn, user).await? {
                    return Ok(Some(Assignment {
                        owner: user.clone(),
                        rule: rule.name.clone(),
                        team: None,
                    }));
                }
                continue;
            }
            if let Some(team) = &rule.to_team
                && let Some(owner) = self.next_in_team(conn, team).await?
            {
                return Ok(Some(Assignment {
                    owner,
                    rule: rule.name.clone(),
                    team: Some(team.clone()),
                }));
            }
        }
        Ok(None)
    }

    async fn has_room(&self, conn: &mut AnyConnection, user: &str) -> Result<bool, StoreError> {
        if self.capacity <= 0 {
            return Ok(true);
        }
        let open: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM leads WHERE owner_id = $1 AND status IN ('new', 'working')",
        )
        .bind(user)
        .fetch_one(&mut *conn)
        .await?;
        Ok(open < self.capacity)
    }

    /// Round-robin over the team's active users from a cursor kept in the store, so
    /// workers and restarts continue the same rotation.
    async fn next_in_team(
        &self,
        conn: &mut AnyConnection,
        team: &str,
    ) -> Result<Option<String>, StoreError> {
        let members: Vec<String> = sqlx::query_scalar(
            "SELECT id FROM users WHERE team_id = $1 AND (active IS NULL OR active = 1) ORDER BY id",
        )
        .bind(team)
        .fetch_all(&mut *conn)
        .await?;
        if members.is_empty() {
            return Ok(None);
        }
        let cursor: i64 = sqlx::query("SELECT position FROM assignment_cursors WHERE team_id = $1")
            .bind(team)
            .fetch_optional(&mut *conn)
            .await?
            .map(|row| row.try_get("position"))
            .transpose()?
            .unwrap_or(0);
        for step in 0..members.len() as i64 {
            let position = (cursor + step).rem_euclid(members.len() as i64);
            let candidate = &members[position as usize];
            if self.has_room(conn, candidate).await? {
                sqlx::query(
                    "INSERT INTO assignment_cursors (team_id, position) VALUES ($1, $2) \
                     ON CONFLICT (team_id) DO UPDATE SET position = $2",
                )
                .bind(team)
                .bind(position + 1)
                .execute(&mut *conn)
                .await?;
                return Ok(Some(candidate.clone()));
            }
        }
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn rule() -> AssignmentRule {
        AssignmentRule {
            name: "UK".into(),
            country: vec!["GB".into()],
            region: vec![],
            postcode_prefix: vec!["SW".into()],
            source: Some("partner:*".into()),
            min_score: Some(10),
            max_score: None,
            to_user: Some("u1".into()),
            to_team: None,
        }
    }

    #[test]
    fn every_condition_of_a_rule_must_hold() {
        let Value::Object(fields) =
            json!({"country": "GB", "postal_code": "sw1a 1aa", "score": 12})
        else {
            unreachable!()
        };
        assert!(rule().holds(&fields, "partner:acme"));
        assert!(!rule().holds(&fields, "form:contact"), "source");
        let mut low = fields.clone();
        low.insert("score".into(), json!(3));
        assert!(!rule().holds(&low, "partner:acme"), "score band");
        let mut elsewhere = fields;
        elsewhere.insert("postal_code".into(), json!("EC1A 1BB"));
        assert!(!rule().holds(&elsewhere, "partner:acme"), "territory");
    }

    #[test]
    fn a_rule_names_one_target() {
        let mut both = rule();
        both.to_team = Some("emea".into());
        assert!(Assigner::new(&[both], 0).is_err());
    }
}
