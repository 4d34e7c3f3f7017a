//! MatchConfig is meant to be written by users in TOML.

use matching::{Comparator, Field, MatchConfig, Matcher};

const CONFIG: &str = r#"
merge = 18.0
review = 9.0
swap_names = true

[prepare]
default_region = "AU"

[blocking]
max_scan = 32

[[fields]]
field = "first_name"
comparator = "jaro_winkler"
levels = [{ at_least = 1.0, m = 0.85, u = 0.01 }, { at_least = 0.9, m = 0.1, u = 0.01 }]
disagree = { m = 0.05, u = 0.98 }

[[fields]]
field = "email"
comparator = "exact"
levels = [{ at_least = 1.0, m = 0.9, u = 0.00001 }]
disagree = { m = 0.1, u = 1.0 }
"#;

#[test]
fn parses_and_compiles() {
    let cfg: MatchConfig = toml::from_str(CONFIG).expect("valid toml config");
    assert_eq!(cfg.fields.len(), 2);
    assert_eq!(cfg.fields[0].field, Field::FirstName);
    assert_eq!(cfg.fields[1].comparator, Comparator::Exact);
    assert_eq!(cfg.prepare.default_region, "AU");
    assert!(cfg.prepare.day_first, "unspecified options keep defaults");
    assert_eq!(cfg.blocking.max_scan, 32);
    assert!(cfg.link_clusters);
    Matcher::new(cfg).expect("validates");
}

#[test]
fn rejects_unknown_comparator() {
    let bad = CONFIG.replace("\"exact\"", "\"soundex\"");
    assert!(toml::from_str::<MatchConfig>(&bad).is_err());
}
