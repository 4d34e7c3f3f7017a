//! The receivables ageing report: what issued invoices still owe, by account and
//! currency, in buckets of days past the due date.

use std::collections::BTreeMap;

use chrono::NaiveDate;
use rust_decimal::Decimal;
use serde::Serialize;
use utoipa::ToSchema;

use super::{BillingError, invoices, money};
use crate::access::Reach;
use crate::store::Store;

#[derive(Debug, Clone, Default, Serialize, ToSchema)]
pub struct AgeingRow {
    pub account_id: Option<String>,
    pub currency: String,
    /// Not yet due (or due today).
    pub current: String,
    pub days_1_30: String,
    pub days_31_60: String,
    pub days_61_90: String,
    pub days_90_plus: String,
    pub total: String,
    /// Invoices with something owed.
    pub invoices: i64,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Ageing {
    pub as_of: String,
    /// One row per account and currency.
    pub rows: Vec<AgeingRow>,
    /// One row per currency (no account).
    pub totals: Vec<AgeingRow>,
}

/// The bucket (0 current, 1 = 1–30, 2 = 31–60, 3 = 61–90, 4 = 90+) of days past due.
pub fn bucket(days_past_due: i64) -> usize {
    match days_past_due {
        ..=0 => 0,
        1..=30 => 1,
        31..=60 => 2,
        61..=90 => 3,
        _ => 4,
    }
}

#[derive(Default)]
struct Sums {
    buckets: [Decimal; 5],
    invoices: i64,
}

impl Sums {
    fn row(&self, account_id: Option<String>, currency: &str) -> AgeingRow {
        let t = |d: Decimal| money::text(d, currency);
        AgeingRow {
            account_id,
            currency: currency.to_owned(),
            current: t(self.buckets[0]),
            days_1_30: t(self.buckets[1]),
            days_31_60: t(self.buckets[2]),
            days_61_90: t(self.buckets[3]),
            days_90_plus: t(self.buckets[4]),
            total: t(self.buckets.iter().copied().sum()),
            invoices: self.invoices,
        }
    }
}

type InvoiceRow = (
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
);

/// The report as of a date, over the invoices whose owner is within `reach`.
pub async fn report(
    store: &Store,
    as_of: NaiveDate,
    reach: &Reach,
) -> Result<Ageing, BillingError> {
    let rows: Vec<InvoiceRow> = sqlx::query_as(
        "SELECT account_id, currency, due_date, total, amount_paid, amount_credited, owner_id \
         FROM invoices WHERE invoice_type = $1 \
         AND status IN ('issued', 'partially_paid', 'overdue')",
    )
    .bind(invoices::INVOICE)
    .fetch_all(store.pool())
    .await?;
    let mut by_account: BTreeMap<(Option<String>, String), Sums> = BTreeMap::new();
    let mut by_currency: BTreeMap<String, Sums> = BTreeMap::new();
    for (account, currency, due, total, paid, credited, owner) in rows {
        if !reach.allows(owner.as_deref()) {
            continue;
        }
        let Some(currency) = currency else { continue };
        let fields = serde_json::Map::from_iter([
            ("total".to_owned(), total.into()),
            ("amount_paid".to_owned(), paid.into()),
            ("amount_credited".to_owned(), credited.into()),
        ]);
        let owed = invoices::balance(&fields);
        if owed <= Decimal::ZERO {
            continue;
        }
        let days = due
            .and_then(|d| NaiveDate::parse_from_str(&d, "%Y-%m-%d").ok())
            .map_or(0, |due| (as_of - due).num_days());
        let slot = bucket(days);
        let sums = by_account
            .entry((account.clone(), currency.clone()))
            .or_default();
        sums.buckets[slot] += owed;
        sums.invoices += 1;
        let sums = by_currency.entry(currency).or_default();
        sums.buckets[slot] += owed;
        sums.invoices += 1;
    }
    Ok(Ageing {
        as_of: as_of.format("%Y-%m-%d").to_string(),
        rows: by_account
            .iter()
            .map(|((account, currency), sums)| sums.row(account.clone(), currency))
            .collect(),
        totals: by_currency
            .iter()
            .map(|(currency, sums)| sums.row(None, currency))
            .collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_have_inclusive_edges() {
        let cases = [
            (-5, 0),
            (0, 0),
            (1, 1),
            (30, 1),
            (31, 2),
            (60, 2),
            (61, 3),
            (90, 3),
            (91, 4),
        ];
        for (days, expected) in cases {
            assert_eq!(bucket(days), expected, "{days} days");
        }
    }
}
