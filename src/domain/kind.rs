//! The record kinds of the canonical store and the fields each one has.
//!
//! The write path binds values by these definitions, so a field that is not listed here
//! cannot be written, and SQL identifiers never come from input.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// How a field is stored and exchanged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldType {
    Text,
    Integer,
    /// Exact decimal (money, quantities), kept as its canonical text so no float touches it.
    Decimal,
    Bool,
    /// A JSON object or array, for custom fields and structured details.
    Json,
    /// RFC 3339 in UTC.
    Timestamp,
    /// `YYYY-MM-DD`.
    Date,
}

#[derive(Debug, Clone, Copy)]
pub struct FieldDef {
    pub name: &'static str,
    pub ty: FieldType,
    /// Written and audited as `[redacted]`: secrets and their hashes.
    pub secret: bool,
}

const fn f(name: &'static str, ty: FieldType) -> FieldDef {
    FieldDef {
        name,
        ty,
        secret: false,
    }
}

const fn secret(name: &'static str) -> FieldDef {
    FieldDef {
        name,
        ty: FieldType::Text,
        secret: true,
    }
}

use FieldType::{Bool, Date, Decimal, Integer, Json, Text, Timestamp};

macro_rules! kinds {
    ($($variant:ident => $path:literal, $table:literal, [$($field:expr),* $(,)?];)*) => {
        /// A kind of record in the canonical store.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum RecordKind { $($variant),* }

        impl RecordKind {
            pub const ALL: &'static [RecordKind] = &[$(RecordKind::$variant),*];

            /// The plural used in URLs (`/v1/leads/…`) and in audit rows.
            pub fn path(self) -> &'static str {
                match self { $(RecordKind::$variant => $path),* }
            }

            pub fn table(self) -> &'static str {
                match self { $(RecordKind::$variant => $table),* }
            }

            /// The writable fields, not counting `id`, `created_at`, `updated_at`, `version`.
            pub fn fields(self) -> &'static [FieldDef] {
                match self { $(RecordKind::$variant => { const FIELDS: &[FieldDef] = &[$($field),*]; FIELDS }),* }
            }
        }
    };
}

kinds! {
    Lead => "leads", "leads", [
        f("status", Text), f("first_name", Text), f("last_name", Text), f("email", Text),
        f("phone", Text), f("company", Text), f("title", Text), f("website", Text),
        f("country", Text), f("city", Text), f("source", Text), f("campaign", Text),
        f("utm_source", Text), f("utm_medium", Text), f("utm_campaign", Text),
        f("utm_term", Text), f("utm_content", Text), f("consent_email", Bool),
        f("consent_whatsapp", Bool), f("score", Integer), f("owner_id", Text),
        f("account_id", Text), f("contact_id", Text), f("custom", Json),
        f("street", Text), f("street2", Text), f("postal_code", Text), f("region", Text),
        f("birth_date", Date), f("email_type", Text), f("company_key", Text),
        f("time_zone", Text), f("fit_score", Integer), f("behaviour_score", Integer),
        f("budget", Text), f("authority", Text), f("need", Text), f("timeline", Text),
        f("metrics", Text), f("economic_buyer", Text), f("decision_criteria", Text),
        f("decision_process", Text), f("identified_pain", Text), f("champion", Text),
        f("competition", Text), f("qualified", Bool), f("qualified_at", Timestamp),
        f("behaviour_decayed_at", Timestamp), f("email_undeliverable", Bool),
        f("email_bounced_at", Timestamp), f("field_sources", Json),
    ];
    Account => "accounts", "accounts", [
        f("name", Text), f("domain", Text), f("industry", Text), f("employees", Integer),
        f("annual_revenue", Decimal), f("currency", Text), f("country", Text), f("city", Text),
        f("phone", Text), f("website", Text), f("owner_id", Text), f("custom", Json),
    ];
    Contact => "contacts", "contacts", [
        f("account_id", Text), f("first_name", Text), f("last_name", Text), f("email", Text),
        f("phone", Text), f("mobile_phone", Text), f("title", Text), f("country", Text),
        f("owner_id", Text), f("custom", Json), f("email_undeliverable", Bool),
        f("email_bounced_at", Timestamp),
    ];
    Opportunity => "opportunities", "opportunities", [
        f("name", Text), f("account_id", Text), f("contact_id", Text), f("lead_id", Text),
        f("stage", Text), f("amount", Decimal), f("currency", Text), f("probability", Integer),
        f("close_date", Date), f("forecast_category", Text), f("owner_id", Text),
        f("custom", Json),
    ];
    Activity => "activities", "activities", [
        f("activity_type", Text), f("subject", Text), f("body", Text), f("direction", Text),
        f("channel", Text), f("status", Text), f("occurred_at", Timestamp),
        f("duration_seconds", Integer), f("lead_id", Text), f("contact_id", Text),
        f("account_id", Text), f("opportunity_id", Text), f("ticket_id", Text),
        f("external_id", Text), f("inbound_id", Text), f("owner_id", Text), f("data", Json),
    ];
    SalesOrder => "orders", "sales_orders", [
        f("number", Text), f("account_id", Text), f("contact_id", Text),
        f("opportunity_id", Text), f("status", Text), f("currency", Text),
        f("subtotal", Decimal), f("discount_total", Decimal), f("tax_total", Decimal),
        f("total", Decimal), f("ordered_at", Timestamp), f("owner_id", Text), f("custom", Json),
    ];
    SalesOrderLine => "order_lines", "sales_order_lines", [
        f("order_id", Text), f("position", Integer), f("product", Text), f("description", Text),
        f("quantity", Decimal), f("unit_price", Decimal), f("discount", Decimal),
        f("tax_rate", Decimal), f("line_total", Decimal),
    ];
    Invoice => "invoices", "invoices", [
        f("series", Text), f("year", Integer), f("sequence", Integer), f("number", Text),
        f("invoice_type", Text), f("corrects_invoice_id", Text), f("order_id", Text),
        f("account_id", Text), f("status", Text), f("currency", Text), f("issue_date", Date),
        f("due_date", Date), f("subtotal", Decimal), f("tax_total", Decimal),
        f("total", Decimal), f("amount_paid", Decimal), f("owner_id", Text), f("custom", Json),
        f("amount_credited", Decimal), f("payment_terms_days", Integer),
        f("issued_at", Timestamp),
    ];
    InvoiceLine => "invoice_lines", "invoice_lines", [
        f("invoice_id", Text), f("position", Integer), f("description", Text),
        f("quantity", Decimal), f("unit_price", Decimal), f("tax_rate", Decimal),
        f("line_total", Decimal), f("discount", Decimal), f("product", Text),
    ];
    Payment => "payments", "payments", [
        f("account_id", Text), f("amount", Decimal), f("currency", Text), f("method", Text),
        f("provider", Text), f("provider_ref", Text), f("received_at", Timestamp),
        f("status", Text), f("refunded_amount", Decimal), f("unallocated", Decimal),
        f("owner_id", Text), f("custom", Json),
    ];
    PaymentAllocation => "payment_allocations", "payment_allocations", [
        f("payment_id", Text), f("invoice_id", Text), f("amount", Decimal),
    ];
    Ticket => "tickets", "tickets", [
        f("subject", Text), f("description", Text), f("status", Text), f("priority", Text),
        f("channel", Text), f("account_id", Text), f("contact_id", Text), f("lead_id", Text),
        f("owner_id", Text), f("first_response_due", Timestamp),
        f("resolution_due", Timestamp), f("first_responded_at", Timestamp),
        f("resolved_at", Timestamp), f("sla_paused_at", Timestamp), f("custom", Json),
        f("number", Integer), f("first_response_breached_at", Timestamp),
        f("resolution_breached_at", Timestamp), f("closed_at", Timestamp),
        f("follow_up_of", Text), f("reopened_count", Integer), f("thread_key", Text),
        f("assignment_rule", Text), f("sla_paused_seconds", Integer),
    ];
    Renewal => "renewals", "renewals", [
        f("account_id", Text), f("contract_name", Text), f("product", Text),
        f("start_date", Date), f("end_date", Date), f("value", Decimal), f("currency", Text),
        f("renewal_terms", Text), f("status", Text), f("renewal_opportunity_id", Text),
        f("amc_visits_per_year", Integer), f("owner_id", Text), f("custom", Json),
        f("reminded_at", Timestamp), f("successor_id", Text),
    ];
    User => "users", "users", [
        f("email", Text), f("name", Text), f("role_id", Text), f("team_id", Text),
        secret("password_hash"), f("active", Bool),
    ];
    Team => "teams", "teams", [
        f("name", Text), f("parent_id", Text), f("manager_id", Text),
    ];
    Role => "roles", "roles", [
        f("name", Text), f("parent_id", Text), f("description", Text),
    ];
    ApiToken => "api_tokens", "api_tokens", [
        f("name", Text), f("principal", Text), f("role_id", Text), secret("token_sha256"),
        f("expires_at", Timestamp), f("revoked_at", Timestamp),
    ];
}

impl RecordKind {
    pub fn field(self, name: &str) -> Option<&'static FieldDef> {
        self.fields().iter().find(|def| def.name == name)
    }

    /// Kinds whose records carry a timeline (activities point at them).
    pub fn timeline_column(self) -> Option<&'static str> {
        match self {
            RecordKind::Lead => Some("lead_id"),
            RecordKind::Contact => Some("contact_id"),
            RecordKind::Account => Some("account_id"),
            RecordKind::Opportunity => Some("opportunity_id"),
            RecordKind::Ticket => Some("ticket_id"),
            _ => None,
        }
    }
}

impl fmt::Display for RecordKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.path())
    }
}

/// Kinds travel as their URL plural (`leads`), the one name users see.
impl Serialize for RecordKind {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.path())
    }
}

impl<'de> Deserialize<'de> for RecordKind {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[derive(Debug, thiserror::Error)]
#[error("unknown record kind `{0}`")]
pub struct UnknownKind(pub String);

impl FromStr for RecordKind {
    type Err = UnknownKind;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        RecordKind::ALL
            .iter()
            .copied()
            .find(|kind| kind.path() == s)
            .ok_or_else(|| UnknownKind(s.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_round_trips_through_its_path() {
        for kind in RecordKind::ALL {
            assert_eq!(kind.path().parse::<RecordKind>().unwrap(), *kind);
        }
        assert!("widgets".parse::<RecordKind>().is_err());
    }

    #[test]
    fn field_names_are_plain_identifiers_and_unique() {
        for kind in RecordKind::ALL {
            let mut seen = std::collections::HashSet::new();
            for def in kind.fields() {
                assert!(
                    def.name
                        .chars()
                        .all(|c| c.is_ascii_lowercase() || c == '_' || c.is_ascii_digit()),
                    "{kind}.{}",
                    def.name
                );
                assert!(seen.insert(def.name), "{kind}.{} twice", def.name);
                assert!(!["id", "created_at", "updated_at", "version"].contains(&def.name));
            }
        }
    }
}
