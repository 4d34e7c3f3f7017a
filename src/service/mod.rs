//! Post-sales service: support tickets with SLA timers, contracts (renewals / AMC) and
//! expansion (upsell / cross-sell) rules. Every write goes through the audited write path
//! and shows on the ticket's and the account's timeline.

pub mod evaluator;
pub mod expansion;
pub mod intake;
pub mod renewals;
pub mod sla;
pub mod tickets;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::pipeline::assign::{Assigner, AssignmentRule, AssignmentRuleError};
use crate::store::StoreError;
use expansion::ExpansionRule;
use sla::{BusinessHoursConfig, Calendar, SlaTarget};

/// `[service]` in leadgate.toml.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServiceConfig {
    /// Seconds between passes of the SLA and contract evaluator (roles `all`, `worker`).
    pub evaluate_every_secs: u64,
    /// Seconds between passes of the expansion rules over all accounts.
    pub expansion_every_secs: u64,
    /// The priority of a ticket that names none.
    pub default_priority: String,
    /// What a customer's reply to a closed ticket does: `reopen` it, or open a
    /// `follow_up` ticket that points at it.
    pub closed_reply: ClosedReply,
    /// Ticket routing, the same rules as `[[assignment_rules]]` (source `ticket:<channel>`,
    /// country of the account or contact); none leaves tickets unassigned.
    pub ticket_assignment_rules: Vec<AssignmentRule>,
    /// WhatsApp messages from a number that is a known contact's open a ticket (or land on
    /// that contact's open ticket) instead of making a lead.
    pub whatsapp_tickets: bool,
    pub sla: SlaConfig,
    /// Days before a contract's end that its renewal opportunity is opened and its owner
    /// reminded.
    pub renewal_notice_days: i64,
    pub expansion_rules: Vec<ExpansionRule>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClosedReply {
    Reopen,
    FollowUp,
}

/// `[service.sla]`: targets per priority in business minutes, and the business hours.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SlaConfig {
    /// Absent: the clock runs around the clock.
    pub business_hours: Option<BusinessHoursConfig>,
    pub targets: BTreeMap<String, SlaTarget>,
}

impl Default for SlaConfig {
    fn default() -> Self {
        let target = |first: i64, resolution: i64| SlaTarget {
            first_response_minutes: first,
            resolution_minutes: resolution,
        };
        Self {
            business_hours: None,
            targets: BTreeMap::from([
                ("urgent".to_owned(), target(60, 4 * 60)),
                ("high".to_owned(), target(4 * 60, 24 * 60)),
                ("normal".to_owned(), target(8 * 60, 3 * 24 * 60)),
                ("low".to_owned(), target(24 * 60, 5 * 24 * 60)),
            ]),
        }
    }
}

impl Default for ServiceConfig {
    fn default() -> Self {
        Self {
            evaluate_every_secs: 60,
            expansion_every_secs: 3600,
            default_priority: "normal".to_owned(),
            closed_reply: ClosedReply::Reopen,
            ticket_assignment_rules: Vec::new(),
            whatsapp_tickets: false,
            sla: SlaConfig::default(),
            renewal_notice_days: 60,
            expansion_rules: Vec::new(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ServiceConfigError {
    #[error(transparent)]
    Calendar(#[from] sla::CalendarError),
    #[error("service.ticket_assignment_rules: {0}")]
    Assignment(#[from] AssignmentRuleError),
    #[error("service.{0}")]
    Invalid(String),
}

/// The service configuration compiled: calendar, router and rules checked once.
pub struct Service {
    pub config: ServiceConfig,
    pub calendar: Calendar,
    pub assigner: Assigner,
}

impl Service {
    pub fn new(config: ServiceConfig) -> Result<Self, ServiceConfigError> {
        let calendar = Calendar::from_config(config.sla.business_hours.as_ref())?;
        if !config.sla.targets.contains_key(&config.default_priority) {
            return Err(ServiceConfigError::Invalid(format!(
                "default_priority `{}` has no target in service.sla.targets",
                config.default_priority
            )));
        }
        for (priority, target) in &config.sla.targets {
            if target.first_response_minutes <= 0 || target.resolution_minutes <= 0 {
                return Err(ServiceConfigError::Invalid(format!(
                    "sla.targets.{priority}: targets are positive minutes"
                )));
            }
        }
        if config.renewal_notice_days < 0 {
            return Err(ServiceConfigError::Invalid(
                "renewal_notice_days must not be negative".into(),
            ));
        }
        let mut names = std::collections::HashSet::new();
        for rule in &config.expansion_rules {
            rule.check().map_err(ServiceConfigError::Invalid)?;
            if !names.insert(rule.name.as_str()) {
                return Err(ServiceConfigError::Invalid(format!(
                    "expansion_rules: `{}` is named twice",
                    rule.name
                )));
            }
        }
        // Open tickets are not leads: capacity limits of lead routing do not apply.
        let assigner = Assigner::new(&config.ticket_assignment_rules, 0)?;
        Ok(Self {
            config,
            calendar,
            assigner,
        })
    }

    /// The defaults (around the clock, no routing, no rules).
    pub fn defaults() -> Self {
        Self {
            config: ServiceConfig::default(),
            calendar: Calendar::Always,
            assigner: Assigner::new(&[], 0).expect("no rules: nothing to refuse"),
        }
    }

    /// The SLA target of a priority, if it is one the configuration knows.
    pub fn target(&self, priority: &str) -> Option<SlaTarget> {
        self.config.sla.targets.get(priority).copied()
    }
}

/// What a selecting query inside a write transaction appends so that two processes
/// evaluating at once (several workers on PostgreSQL) never take the same rows: each row
/// is locked by the first and skipped by the others. SQLite's write transaction already
/// excludes every other writer.
pub(crate) fn claim_rows(store: &crate::store::Store) -> &'static str {
    match store.backend() {
        crate::store::Backend::Postgres => " FOR UPDATE SKIP LOCKED",
        crate::store::Backend::Sqlite => "",
    }
}

/// Why a service operation was refused.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The request cannot be carried out as asked (422).
    #[error("{0}")]
    Invalid(String),
    /// The record's state does not allow it (409).
    #[error("{0}")]
    State(String),
    #[error("{0} not found")]
    NotFound(String),
}

impl From<sqlx::Error> for ServiceError {
    fn from(error: sqlx::Error) -> Self {
        ServiceError::Store(error.into())
    }
}
