//! Person names: display form (proper case, no honorifics) and match form.

use super::text::{collapse_ws, fold};

/// Honorifics and post-nominals removed from person names (folded form).
const HONORIFICS: &[&str] = &[
    "mr",
    "mrs",
    "ms",
    "miss",
    "mx",
    "dr",
    "prof",
    "professor",
    "sir",
    "dame",
    "lady",
    "lord",
    "rev",
    "revd",
    "fr",
    "sr",
    "sra",
    "srta",
    "herr",
    "frau",
    "mme",
    "mlle",
    "m",
    "madam",
    "capt",
    "col",
    "maj",
    "lt",
    "hon",
];
const SUFFIXES: &[&str] = &[
    "phd", "md", "esq", "jr", "snr", "jnr", "ii", "iii", "iv", "obe", "mbe",
];

/// A cleaned person name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PersonName {
    /// Proper-cased, honorific-free, for display.
    pub display: String,
    /// Lowercase ASCII, punctuation removed, for comparison.
    pub match_form: String,
}

/// Clean one name field (given, family or full name). Returns `None` when
/// nothing is left (e.g. the field held only "Mr.").
pub fn normalise_name(raw: &str) -> Option<PersonName> {
    let collapsed = collapse_ws(raw);
    let words: Vec<&str> = collapsed.split(' ').filter(|w| !w.is_empty()).collect();
    let is_title = |w: &&str, list: &[&str]| {
        let f = fold(w);
        list.contains(&f.as_str())
    };
    let mut start = 0;
    // Leading titles; a lone word is kept ("Sir" could be a surname fragment,
    // but a single-letter "M" may be an initial).
    while start + 1 < words.len() && is_title(&words[start], HONORIFICS) {
        start += 1;
    }
    let mut end = words.len();
    while end > start + 1 && is_title(&words[end - 1], SUFFIXES) {
        end -= 1;
    }
    let kept = &words[start..end];
    if kept.len() == 1 && is_title(&kept[0], HONORIFICS) && kept[0].len() > 1 {
        return None;
    }
    let display = kept
        .iter()
        .map(|w| proper_case(w.trim_end_matches(',')))
        .collect::<Vec<_>>()
        .join(" ");
    let match_form = fold(&display);
    if match_form.is_empty() {
        return None;
    }
    Some(PersonName {
        display,
        match_form,
    })
}

/// "o'NEIL-smith" -> "O'Neil-Smith", "mcdonald" -> "McDonald". Mixed-case
/// input that is not all-caps/all-lower is trusted as typed ("DeVito").
pub fn proper_case(word: &str) -> String {
    let has_lower = word.chars().any(char::is_lowercase);
    let has_upper = word.chars().any(char::is_uppercase);
    if has_lower && has_upper {
        return word.to_string();
    }
    let mut out = String::with_capacity(word.len());
    let mut cap_next = true;
    for c in word.chars() {
        if cap_next {
            out.extend(c.to_uppercase());
        } else {
            out.extend(c.to_lowercase());
        }
        cap_next = matches!(c, '-' | '\'' | '\u{2019}' | ' ' | '.');
    }
    if out.len() > 2 && out.starts_with("Mc") {
        let (head, tail) = out.split_at(2);
        let mut t = tail.chars();
        if let Some(first) = t.next() {
            return format!("{head}{}{}", first.to_uppercase(), t.as_str());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(s: &str) -> (String, String) {
        let p = normalise_name(s).unwrap();
        (p.display, p.match_form)
    }

    #[test]
    fn strips_titles_and_cases() {
        assert_eq!(
            n("  mr.   JOHN   smith "),
            ("John Smith".into(), "john smith".into())
        );
        assert_eq!(
            n("Dr Anne-Marie O'NEIL PhD"),
            ("Anne-Marie O'Neil".into(), "anne marie oneil".into())
        );
        assert_eq!(
            n("Prof. José Núñez"),
            ("José Núñez".into(), "jose nunez".into())
        );
        assert_eq!(n("mcdonald"), ("McDonald".into(), "mcdonald".into()));
        assert_eq!(n("DeVito"), ("DeVito".into(), "devito".into()));
    }

    #[test]
    fn empty_or_title_only() {
        assert_eq!(normalise_name("   "), None);
        assert_eq!(normalise_name("Mrs."), None);
        assert_eq!(normalise_name("..."), None);
        assert_eq!(n("M"), ("M".into(), "m".into()));
    }
}
