//! Address lines, cities and postcodes: match forms only (display stays raw).

use super::text::fold;

/// Street-type words reduced to one spelling so "Wallaby Place" == "wallaby pl".
const STREET_WORDS: &[(&str, &str)] = &[
    ("street", "st"),
    ("road", "rd"),
    ("avenue", "ave"),
    ("av", "ave"),
    ("place", "pl"),
    ("drive", "dr"),
    ("court", "ct"),
    ("crescent", "cres"),
    ("lane", "ln"),
    ("terrace", "tce"),
    ("boulevard", "blvd"),
    ("highway", "hwy"),
    ("parade", "pde"),
    ("circuit", "cct"),
    ("close", "cl"),
    ("square", "sq"),
    ("grove", "gr"),
    ("way", "wy"),
    ("north", "n"),
    ("south", "s"),
    ("east", "e"),
    ("west", "w"),
    ("apartment", "apt"),
    ("unit", "u"),
    ("suite", "ste"),
    ("flat", "u"),
    ("mount", "mt"),
    ("saint", "st"),
];

/// Folded address line with street-type words abbreviated.
pub fn address_match_form(raw: &str) -> Option<String> {
    let f = fold(raw);
    if f.is_empty() {
        return None;
    }
    let words: Vec<&str> = f
        .split(' ')
        .map(|w| {
            STREET_WORDS
                .iter()
                .find(|(l, _)| *l == w)
                .map_or(w, |(_, s)| *s)
        })
        .collect();
    Some(words.join(" "))
}

/// Folded place name (city, suburb, state).
pub fn place_match_form(raw: &str) -> Option<String> {
    let f = fold(raw);
    (!f.is_empty()).then_some(f)
}

/// Postcodes compare without spaces or case: "SW1A 1AA" == "sw1a1aa".
pub fn postcode_match_form(raw: &str) -> Option<String> {
    let p: String = raw
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .map(|c| c.to_ascii_lowercase())
        .collect();
    (!p.is_empty()).then_some(p)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn address_forms() {
        assert_eq!(
            address_match_form("7 Wallaby Place").unwrap(),
            "7 wallaby pl"
        );
        assert_eq!(
            address_match_form("Flat 2, 10 High Street").unwrap(),
            "u 2 10 high st"
        );
        assert_eq!(address_match_form(" , "), None);
        assert_eq!(place_match_form("St. Kilda").unwrap(), "st kilda");
        assert_eq!(postcode_match_form("SW1A 1AA").unwrap(), "sw1a1aa");
        assert_eq!(postcode_match_form(" - "), None);
    }
}
