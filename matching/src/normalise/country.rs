//! Country names, aliases and alpha-3 codes to ISO 3166-1 alpha-2.

use super::country_table::COUNTRIES;
use super::text::fold;
use crate::error::NormaliseError;
use std::collections::HashMap;
use std::sync::LazyLock;

/// Everyday names and endonyms that are not in the ISO name list.
const ALIASES: &[(&str, &str)] = &[
    ("uk", "GB"),
    ("u k", "GB"),
    ("great britain", "GB"),
    ("britain", "GB"),
    ("england", "GB"),
    ("scotland", "GB"),
    ("wales", "GB"),
    ("northern ireland", "GB"),
    ("us", "US"),
    ("u s", "US"),
    ("u s a", "US"),
    ("america", "US"),
    ("united states of america", "US"),
    ("deutschland", "DE"),
    ("allemagne", "DE"),
    ("espana", "ES"),
    ("italia", "IT"),
    ("osterreich", "AT"),
    ("schweiz", "CH"),
    ("suisse", "CH"),
    ("svizzera", "CH"),
    ("nederland", "NL"),
    ("holland", "NL"),
    ("the netherlands", "NL"),
    ("belgie", "BE"),
    ("belgique", "BE"),
    ("sverige", "SE"),
    ("norge", "NO"),
    ("danmark", "DK"),
    ("suomi", "FI"),
    ("polska", "PL"),
    ("brasil", "BR"),
    ("mexique", "MX"),
    ("russia", "RU"),
    ("south korea", "KR"),
    ("korea", "KR"),
    ("north korea", "KP"),
    ("vietnam", "VN"),
    ("iran", "IR"),
    ("syria", "SY"),
    ("laos", "LA"),
    ("bolivia", "BO"),
    ("venezuela", "VE"),
    ("tanzania", "TZ"),
    ("moldova", "MD"),
    ("czech republic", "CZ"),
    ("czechia", "CZ"),
    ("ivory coast", "CI"),
    ("turkey", "TR"),
    ("turkiye", "TR"),
    ("uae", "AE"),
    ("u a e", "AE"),
    ("emirates", "AE"),
    ("prc", "CN"),
    ("mainland china", "CN"),
    ("hong kong", "HK"),
    ("macau", "MO"),
    ("taiwan", "TW"),
    ("nz", "NZ"),
    ("aotearoa", "NZ"),
    ("oz", "AU"),
    ("aus", "AU"),
    ("nippon", "JP"),
    ("bharat", "IN"),
    ("eire", "IE"),
    ("republic of ireland", "IE"),
    ("cape verde", "CV"),
    ("swaziland", "SZ"),
    ("burma", "MM"),
    ("macedonia", "MK"),
    ("vatican", "VA"),
    ("palestine", "PS"),
    ("micronesia", "FM"),
    ("east timor", "TL"),
    ("brunei", "BN"),
];

static INDEX: LazyLock<HashMap<String, &'static str>> = LazyLock::new(|| {
    let mut m = HashMap::with_capacity(COUNTRIES.len() * 4 + ALIASES.len());
    for &(a2, a3, names) in COUNTRIES {
        m.insert(a2.to_ascii_lowercase(), a2);
        m.insert(a3.to_ascii_lowercase(), a2);
        for n in names.split('|') {
            // The table was folded offline; fold again so apostrophe rules match ours.
            m.insert(fold(n), a2);
            m.insert(n.replace(' ', ""), a2);
            m.insert(n.to_string(), a2);
        }
    }
    for &(alias, a2) in ALIASES {
        m.insert(alias.to_string(), a2);
    }
    m
});

/// Map a country name, alias, alpha-2 or alpha-3 code to ISO alpha-2.
pub fn normalise_country(raw: &str) -> Result<&'static str, NormaliseError> {
    let key = fold(raw);
    if key.is_empty() {
        return Err(NormaliseError::Empty);
    }
    if let Some(c) = INDEX.get(&key) {
        return Ok(c);
    }
    // "Republic of X" / "X (the)" style variants.
    let trimmed = key
        .strip_prefix("the ")
        .or_else(|| key.strip_suffix(" the"))
        .unwrap_or(&key);
    INDEX
        .get(trimmed)
        .or_else(|| INDEX.get(&trimmed.replace(' ', "")))
        .copied()
        .ok_or_else(|| NormaliseError::UnknownCountry(raw.trim().to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_codes_and_aliases() {
        for (raw, want) in [
            ("UK", "GB"),
            ("United Kingdom", "GB"),
            ("gbr", "GB"),
            ("gb", "GB"),
            ("United States", "US"),
            ("USA", "US"),
            ("U.S.A.", "US"),
            ("Deutschland", "DE"),
            ("germany", "DE"),
            ("Côte d'Ivoire", "CI"),
            ("Korea, Republic of", "KR"),
            ("South Korea", "KR"),
            ("the Netherlands", "NL"),
            ("  australia ", "AU"),
            ("NZL", "NZ"),
            ("Viet Nam", "VN"),
            ("España", "ES"),
        ] {
            assert_eq!(normalise_country(raw), Ok(want), "{raw}");
        }
    }

    #[test]
    fn table_is_complete_and_unknowns_err() {
        assert_eq!(COUNTRIES.len(), 249);
        assert!(matches!(
            normalise_country("Atlantis"),
            Err(NormaliseError::UnknownCountry(_))
        ));
        assert_eq!(normalise_country(""), Err(NormaliseError::Empty));
    }
}
