//! Score: declarative rules. Fit rules look at the lead's fields; behaviour rules add
//! points each time the lead arrives through a channel (a webinar registration, a
//! WhatsApp message). The score is fit + behaviour; every change is on the timeline with
//! the rules that fired.

use regex::Regex;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// One rule as configured (`[[score_rules]]` in leadgate.toml).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScoreRule {
    pub name: String,
    /// Fit rule: the lead field it looks at.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    /// …whose value equals this (case-insensitive)…
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub equals: Option<String>,
    /// …or matches this regular expression; with neither, any value counts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub matches: Option<String>,
    /// Behaviour rule: points for each arrival through this channel (`zoom`, `whatsapp` …).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel: Option<String>,
    pub points: i64,
}

/// What a user starts from: a plain B2B fit model plus engagement.
pub fn default_rules() -> Vec<ScoreRule> {
    let fit =
        |name: &str, field: &str, equals: Option<&str>, matches: Option<&str>, points| ScoreRule {
            name: name.into(),
            field: Some(field.into()),
            equals: equals.map(Into::into),
            matches: matches.map(Into::into),
            channel: None,
            points,
        };
    let behaviour = |name: &str, channel: &str, points| ScoreRule {
        name: name.into(),
        field: None,
        equals: None,
        matches: None,
        channel: Some(channel.into()),
        points,
    };
    vec![
        fit("corporate email", "email_type", Some("corporate"), None, 10),
        fit("free-mail address", "email_type", Some("free"), None, -5),
        fit(
            "senior title",
            "title",
            None,
            Some(r"(?i)\b(director|head|vp|vice president|chief|c[eotf]o|owner|founder|partner)\b"),
            15,
        ),
        fit("reachable by phone", "phone", None, None, 5),
        fit("company named", "company", None, None, 5),
        behaviour("webinar registration or attendance", "zoom", 20),
        behaviour("WhatsApp conversation", "whatsapp", 10),
        behaviour("inbound call", "cti", 10),
        behaviour("form submission", "form", 5),
        // Engagement with nurturing emails (bot opens are never counted).
        behaviour("email opened", "email_open", 2),
        behaviour("email link clicked", "email_click", 5),
    ]
}

enum Test {
    Any,
    Equals(String),
    Matches(Regex),
}

struct Compiled {
    rule: ScoreRule,
    test: Test,
}

pub struct Scoring {
    rules: Vec<Compiled>,
}

#[derive(Debug, thiserror::Error)]
#[error("score rule `{rule}`: {reason}")]
pub struct ScoreRuleError {
    pub rule: String,
    pub reason: String,
}

/// Points and the names of the rules that gave them.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Points {
    pub total: i64,
    pub fired: Vec<String>,
}

impl Scoring {
    pub fn new(rules: &[ScoreRule]) -> Result<Self, ScoreRuleError> {
        let mut compiled = Vec::with_capacity(rules.len());
        for rule in rules {
            let error = |reason: &str| ScoreRuleError {
                rule: rule.name.clone(),
                reason: reason.into(),
            };
            if rule.field.is_some() == rule.channel.is_some() {
                return Err(error(
                    "name exactly one of `field` (fit) or `channel` (behaviour)",
                ));
            }
            if let Some(field) = &rule.field
                && crate::domain::RecordKind::Lead.field(field).is_none()
            {
                return Err(error(&format!("leads have no field `{field}`")));
            }
            let test = match (&rule.equals, &rule.matches) {
                (Some(_), Some(_)) => return Err(error("use `equals` or `matches`, not both")),
                (Some(value), None) => Test::Equals(value.to_lowercase()),
                (None, Some(pattern)) => Test::Matches(
                    Regex::new(pattern).map_err(|e| error(&format!("invalid regex: {e}")))?,
                ),
                (None, None) => Test::Any,
            };
            compiled.push(Compiled {
                rule: rule.clone(),
                test,
            });
        }
        Ok(Self { rules: compiled })
    }

    pub fn fit(&self, fields: &Map<String, Value>) -> Points {
        let mut points = Points::default();
        for compiled in &self.rules {
            let Some(field) = &compiled.rule.field else {
                continue;
            };
            let value = match fields.get(field) {
                Some(Value::String(s)) if !s.trim().is_empty() => s.clone(),
                Some(Value::Number(n)) => n.to_string(),
                Some(Value::Bool(b)) => b.to_string(),
                _ => continue,
            };
            let hit = match &compiled.test {
                Test::Any => true,
                Test::Equals(expected) => value.to_lowercase() == *expected,
                Test::Matches(regex) => regex.is_match(&value),
            };
            if hit {
                points.total += compiled.rule.points;
                points.fired.push(compiled.rule.name.clone());
            }
        }
        points
    }

    pub fn behaviour(&self, channel: &str) -> Points {
        let mut points = Points::default();
        for compiled in &self.rules {
            if compiled.rule.channel.as_deref() == Some(channel) {
                points.total += compiled.rule.points;
                points.fired.push(compiled.rule.name.clone());
            }
        }
        points
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn fit_and_behaviour_rules_fire_by_name() {
        let scoring = Scoring::new(&default_rules()).unwrap();
        let Value::Object(fields) = json!({"email_type": "corporate", "title": "Head of Sales",
            "phone": "+442079460958"})
        else {
            unreachable!()
        };
        let fit = scoring.fit(&fields);
        assert_eq!(fit.total, 30);
        assert_eq!(
            fit.fired,
            ["corporate email", "senior title", "reachable by phone"]
        );
        assert_eq!(scoring.behaviour("zoom").total, 20);
        assert_eq!(scoring.behaviour("partner").total, 0);
    }

    #[test]
    fn bad_rules_are_refused_by_name() {
        let mut rule = default_rules().remove(0);
        rule.field = Some("shoe_size".into());
        let error = Scoring::new(std::slice::from_ref(&rule)).err().unwrap();
        assert!(error.to_string().contains("corporate email"), "{error}");
        rule.field = None;
        assert!(Scoring::new(&[rule]).is_err(), "neither field nor channel");
    }
}
