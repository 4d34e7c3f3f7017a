//! Order and invoice lines: validation and exact totals.
//!
//! A line's net is `quantity × unit_price × (1 − discount/100)`, rounded to the minor
//! unit; tax is computed per rate on the sum of the nets at that rate (the invoice's tax
//! lines) and rounded once per rate, so a document's tax never drifts by a cent per line.

use std::collections::BTreeMap;

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use utoipa::ToSchema;

use super::{BillingError, money};

/// One line as a request gives it. Amounts are decimal strings (or JSON numbers).
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LineInput {
    pub product: Option<String>,
    pub description: Option<String>,
    #[schema(value_type = String, example = "2")]
    pub quantity: Value,
    #[schema(value_type = String, example = "49.90")]
    pub unit_price: Value,
    /// Percent off the line, 0–100.
    #[schema(value_type = Option<String>, example = "10")]
    pub discount: Option<Value>,
    /// Percent, 0–100.
    #[schema(value_type = Option<String>, example = "20")]
    pub tax_rate: Option<Value>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct PricedLine {
    pub product: Option<String>,
    pub description: Option<String>,
    pub quantity: Decimal,
    pub unit_price: Decimal,
    pub discount: Decimal,
    pub tax_rate: Decimal,
    /// Gross before discount, rounded.
    pub gross: Decimal,
    /// Net after discount, before tax, rounded: the line's `line_total`.
    pub net: Decimal,
}

/// One tax line: the rate, the nets it applies to, the tax.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct TaxLine {
    pub rate: String,
    pub base: String,
    pub tax: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Priced {
    pub currency: String,
    pub lines: Vec<PricedLine>,
    pub subtotal: Decimal,
    pub discount_total: Decimal,
    pub tax_total: Decimal,
    pub total: Decimal,
    pub tax_lines: Vec<TaxLine>,
}

fn percent(field: &str, value: Option<&Value>) -> Result<Decimal, BillingError> {
    let value = money::parse_opt(field, value)?.unwrap_or_default();
    if value < Decimal::ZERO || value > Decimal::ONE_HUNDRED {
        return Err(BillingError::Invalid(format!(
            "`{field}` is a percentage from 0 to 100, not {value}"
        )));
    }
    Ok(value.normalize())
}

/// Validates and prices the lines; the first bad line is named (`lines[2].quantity`).
pub fn price(currency: &str, inputs: &[LineInput]) -> Result<Priced, BillingError> {
    let currency = money::currency(currency)?;
    if inputs.is_empty() {
        return Err(BillingError::Invalid("at least one line is needed".into()));
    }
    let mut lines = Vec::with_capacity(inputs.len());
    for (n, input) in inputs.iter().enumerate() {
        let name = |field: &str| format!("lines[{n}].{field}");
        let quantity = money::parse(&name("quantity"), &input.quantity)?;
        if quantity <= Decimal::ZERO {
            return Err(BillingError::Invalid(format!(
                "`{}` must be more than zero, not {quantity}",
                name("quantity")
            )));
        }
        let unit_price = money::parse(&name("unit_price"), &input.unit_price)?;
        if unit_price < Decimal::ZERO {
            return Err(BillingError::Invalid(format!(
                "`{}` may not be negative",
                name("unit_price")
            )));
        }
        let discount = percent(&name("discount"), input.discount.as_ref())?;
        let tax_rate = percent(&name("tax_rate"), input.tax_rate.as_ref())?;
        let exact = quantity
            .checked_mul(unit_price)
            .ok_or_else(|| BillingError::Invalid(format!("line {n}: amount too large")))?;
        let gross = money::round(exact, &currency);
        let net = money::round(
            exact * (Decimal::ONE_HUNDRED - discount) / Decimal::ONE_HUNDRED,
            &currency,
        );
        lines.push(PricedLine {
            product: input.product.clone(),
            description: input.description.clone(),
            quantity: quantity.normalize(),
            unit_price,
            discount,
            tax_rate,
            gross,
            net,
        });
    }
    Ok(total(currency, lines))
}

/// Totals and tax lines of priced lines.
pub fn total(currency: String, lines: Vec<PricedLine>) -> Priced {
    let mut by_rate: BTreeMap<Decimal, Decimal> = BTreeMap::new();
    for line in &lines {
        *by_rate.entry(line.tax_rate).or_default() += line.net;
    }
    let tax_lines: Vec<(Decimal, Decimal, Decimal)> = by_rate
        .into_iter()
        .map(|(rate, base)| {
            let tax = money::round(base * rate / Decimal::ONE_HUNDRED, &currency);
            (rate, base, tax)
        })
        .collect();
    let subtotal: Decimal = lines.iter().map(|l| l.gross).sum();
    let net: Decimal = lines.iter().map(|l| l.net).sum();
    let tax_total: Decimal = tax_lines.iter().map(|(_, _, tax)| *tax).sum();
    Priced {
        tax_lines: tax_lines
            .into_iter()
            .map(|(rate, base, tax)| TaxLine {
                rate: rate.to_string(),
                base: money::text(base, &currency),
                tax: money::text(tax, &currency),
            })
            .collect(),
        discount_total: subtotal - net,
        tax_total,
        total: net + tax_total,
        subtotal,
        lines,
        currency,
    }
}

impl PricedLine {
    /// The line's stored fields (without its parent id and position).
    pub fn fields(&self, currency: &str, with_product: bool) -> Map<String, Value> {
        let mut fields = Map::new();
        if with_product || self.product.is_some() {
            fields.insert("product".into(), self.product.clone().into());
        }
        fields.insert("description".into(), self.description.clone().into());
        fields.insert("quantity".into(), self.quantity.to_string().into());
        fields.insert("unit_price".into(), self.unit_price.to_string().into());
        fields.insert("discount".into(), self.discount.to_string().into());
        fields.insert("tax_rate".into(), self.tax_rate.to_string().into());
        fields.insert("line_total".into(), money::text(self.net, currency).into());
        fields
    }

    /// A stored line read back (order lines and invoice lines share these fields).
    pub fn from_stored(fields: &Map<String, Value>, currency: &str) -> Self {
        let quantity = money::field(fields, "quantity");
        let unit_price = money::field(fields, "unit_price");
        PricedLine {
            product: super::text(fields, "product").map(str::to_owned),
            description: super::text(fields, "description").map(str::to_owned),
            quantity,
            unit_price,
            discount: money::field(fields, "discount"),
            tax_rate: money::field(fields, "tax_rate"),
            gross: money::round(quantity * unit_price, currency),
            net: money::field(fields, "line_total"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn line(quantity: Value, unit_price: Value, discount: Value, tax_rate: Value) -> LineInput {
        LineInput {
            product: Some("p".into()),
            description: None,
            quantity,
            unit_price,
            discount: Some(discount),
            tax_rate: Some(tax_rate),
        }
    }

    #[test]
    fn totals_are_exact_with_tax_rounded_once_per_rate() {
        // Three lines of 0.10 at 20% tax: a float would give 0.30000000000000004.
        let lines: Vec<_> = (0..3)
            .map(|_| line(json!("1"), json!("0.10"), json!("0"), json!("20")))
            .collect();
        let priced = price("eur", &lines).unwrap();
        assert_eq!(priced.subtotal.to_string(), "0.30");
        assert_eq!(priced.tax_total.to_string(), "0.06");
        assert_eq!(priced.total.to_string(), "0.36");
        assert_eq!(priced.tax_lines.len(), 1);
    }

    #[test]
    fn discounts_and_mixed_rates_give_one_tax_line_per_rate() {
        let lines = vec![
            line(json!("3"), json!("19.99"), json!("10"), json!("20")),
            line(json!("1.5"), json!("100"), json!("0"), json!("5")),
        ];
        let priced = price("GBP", &lines).unwrap();
        // 59.97 gross, 53.973 → 53.97 net; 150.00 net at 5%.
        assert_eq!(priced.subtotal.to_string(), "209.97");
        assert_eq!(priced.discount_total.to_string(), "6.00");
        assert_eq!(priced.tax_total.to_string(), "18.29"); // 10.794 → 10.79, 7.50
        assert_eq!(priced.total.to_string(), "222.26");
        assert_eq!(priced.tax_lines[0].rate, "5");
    }

    #[test]
    fn negative_or_zero_quantities_are_refused_naming_the_line() {
        let error = price(
            "EUR",
            &[line(json!("-1"), json!("5"), json!("0"), json!("0"))],
        )
        .unwrap_err()
        .to_string();
        assert!(error.contains("lines[0].quantity"), "{error}");
        assert!(price("EUR", &[line(json!(0), json!("5"), json!("0"), json!("0"))]).is_err());
        assert!(
            price(
                "EUR",
                &[line(json!(1), json!("5"), json!("120"), json!("0"))]
            )
            .is_err()
        );
        assert!(price("EUR", &[]).is_err());
    }
}
