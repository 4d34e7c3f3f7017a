//! Company names: display clean-up and a match form without legal suffixes.

use super::text::{collapse_ws, fold};

/// Legal-form suffixes (folded, space-separated tokens), longest first so
/// "pvt ltd" is removed whole before "ltd".
const LEGAL_SUFFIXES: &[&str] = &[
    "private limited",
    "pvt ltd",
    "and co",
    "pty ltd",
    "co ltd",
    "sdn bhd",
    "limited liability company",
    "public limited company",
    "s a",
    "s l",
    "b v",
    "n v",
    "s p a",
    "s r l",
    "incorporated",
    "corporation",
    "company",
    "limited",
    "inc",
    "llc",
    "llp",
    "ltd",
    "plc",
    "gmbh",
    "ag",
    "sa",
    "sas",
    "sarl",
    "bv",
    "nv",
    "spa",
    "srl",
    "oy",
    "ab",
    "as",
    "kg",
    "corp",
    "co",
    "pty",
    "pvt",
    "lp",
    "kk",
    "bhd",
];

/// A cleaned company name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompanyName {
    pub display: String,
    pub match_form: String,
}

/// Clean a company name. `None` when it is blank.
pub fn normalise_company(raw: &str) -> Option<CompanyName> {
    let display = collapse_ws(raw);
    if display.is_empty() {
        return None;
    }
    let mut m = fold(&display);
    if let Some(rest) = m.strip_prefix("the ") {
        m = rest.to_string();
    }
    // Strip repeatedly: "Acme Holdings Co. Ltd." -> "acme holdings".
    loop {
        let before = m.len();
        for suf in LEGAL_SUFFIXES {
            if let Some(rest) = m.strip_suffix(suf)
                && rest.ends_with(' ')
            {
                m = rest.trim_end().to_string();
                break;
            }
        }
        if m.len() == before {
            break;
        }
    }
    if m.is_empty() {
        // The whole name was a legal form; keep the folded text rather than nothing.
        m = fold(&display);
    }
    Some(CompanyName {
        display,
        match_form: m,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(s: &str) -> String {
        normalise_company(s).unwrap().match_form
    }

    #[test]
    fn removes_legal_forms() {
        assert_eq!(m("Acme, Inc."), "acme");
        assert_eq!(m("ACME LLC"), "acme");
        assert_eq!(
            m("Tata Consultancy Services Pvt. Ltd."),
            "tata consultancy services"
        );
        assert_eq!(m("Infosys Private Limited"), "infosys");
        assert_eq!(m("Siemens AG"), "siemens");
        assert_eq!(m("Müller GmbH & Co. KG"), "muller");
        assert_eq!(m("The Widget Co Ltd"), "widget");
        assert_eq!(m("Royal Dutch Shell plc"), "royal dutch shell");
        assert_eq!(m("Carrefour S.A."), "carrefour");
        assert_eq!(m("Philips B.V."), "philips");
    }

    #[test]
    fn keeps_display_and_degenerate_names() {
        let c = normalise_company("  Acme   Widgets  Ltd ").unwrap();
        assert_eq!(c.display, "Acme Widgets Ltd");
        assert_eq!(m("Ltd"), "ltd");
        assert_eq!(m("Apple"), "apple");
        assert!(normalise_company("  ").is_none());
    }
}
