//! The small transforms a mapping rule may chain.

use chrono::NaiveDate;
use regex::Regex;

#[derive(Debug, Clone)]
pub enum Transform {
    Trim,
    Lower,
    Upper,
    /// Each word capitalised.
    Title,
    /// Digits and a leading `+` only.
    Digits,
    /// The given name (first word) or the family name (the rest) of a full name.
    SplitFirst,
    SplitLast,
    /// A case-insensitive value table; values not in it pass through.
    Lookup(Vec<(String, String)>),
    /// Parse with the first matching format; answer `YYYY-MM-DD`.
    Date(Vec<String>),
    /// The first capture group (or the whole match) of the pattern.
    Extract(Regex),
}

const HONORIFICS: &[&str] = &[
    "mr", "mrs", "ms", "miss", "mx", "dr", "prof", "sir", "dame", "mr.", "mrs.", "ms.", "dr.",
    "prof.",
];

impl Transform {
    pub fn named(name: &str) -> Result<Self, String> {
        Ok(match name {
            "trim" => Transform::Trim,
            "lower" => Transform::Lower,
            "upper" => Transform::Upper,
            "title" => Transform::Title,
            "digits" => Transform::Digits,
            other => {
                return Err(format!(
                    "unknown transform `{other}` (trim, lower, upper, title, digits)"
                ));
            }
        })
    }

    pub fn split_name(part: &str) -> Result<Self, String> {
        match part {
            "first" => Ok(Transform::SplitFirst),
            "last" => Ok(Transform::SplitLast),
            other => Err(format!("split_name is `first` or `last`, not `{other}`")),
        }
    }

    pub fn regex(pattern: &str) -> Result<Self, String> {
        Regex::new(pattern)
            .map(Transform::Extract)
            .map_err(|e| format!("invalid regex: {e}"))
    }

    /// `Ok(None)`: nothing left (an empty split, no regex match); `Err`: the value does not
    /// fit (an unparseable date).
    pub fn apply(&self, text: &str) -> Result<Option<String>, String> {
        let out = match self {
            Transform::Trim => text.trim().to_owned(),
            Transform::Lower => text.to_lowercase(),
            Transform::Upper => text.to_uppercase(),
            Transform::Title => text
                .split_whitespace()
                .map(|word| {
                    let mut chars = word.chars();
                    chars.next().map_or_else(String::new, |first| {
                        first
                            .to_uppercase()
                            .chain(chars.flat_map(char::to_lowercase))
                            .collect()
                    })
                })
                .collect::<Vec<_>>()
                .join(" "),
            Transform::Digits => text
                .chars()
                .enumerate()
                .filter(|(i, c)| c.is_ascii_digit() || (*i == 0 && *c == '+'))
                .map(|(_, c)| c)
                .collect(),
            Transform::SplitFirst | Transform::SplitLast => {
                let words: Vec<&str> = text
                    .split_whitespace()
                    .skip_while(|w| HONORIFICS.contains(&w.to_lowercase().as_str()))
                    .collect();
                match (self, words.split_first()) {
                    (Transform::SplitFirst, Some((first, _))) => (*first).to_owned(),
                    (_, Some((_, rest))) => rest.join(" "),
                    _ => String::new(),
                }
            }
            Transform::Lookup(table) => {
                let key = text.trim().to_lowercase();
                table
                    .iter()
                    .find(|(from, _)| *from == key)
                    .map_or_else(|| text.to_owned(), |(_, to)| to.clone())
            }
            Transform::Date(formats) => {
                let trimmed = text.trim();
                let date = formats
                    .iter()
                    .find_map(|format| NaiveDate::parse_from_str(trimmed, format).ok())
                    .ok_or_else(|| format!("`{trimmed}` matches none of {formats:?}"))?;
                date.format("%Y-%m-%d").to_string()
            }
            Transform::Extract(regex) => match regex.captures(text) {
                Some(captures) => captures
                    .get(1)
                    .or_else(|| captures.get(0))
                    .map(|m| m.as_str().to_owned())
                    .unwrap_or_default(),
                None => String::new(),
            },
        };
        Ok((!out.is_empty()).then_some(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_split_after_honorifics() {
        assert_eq!(
            Transform::SplitFirst
                .apply("Mrs Jane van Dyke")
                .unwrap()
                .as_deref(),
            Some("Jane")
        );
        assert_eq!(
            Transform::SplitLast
                .apply("Mrs Jane van Dyke")
                .unwrap()
                .as_deref(),
            Some("van Dyke")
        );
        assert_eq!(Transform::SplitLast.apply("Cher").unwrap(), None);
    }

    #[test]
    fn title_digits_and_dates() {
        assert_eq!(
            Transform::Title.apply("aNNA o'neil").unwrap().as_deref(),
            Some("Anna O'neil")
        );
        assert_eq!(
            Transform::Digits
                .apply("+44 (20) 7946-0958")
                .unwrap()
                .as_deref(),
            Some("+442079460958")
        );
        let date = Transform::Date(vec!["%d/%m/%Y".into()]);
        assert_eq!(
            date.apply("02/03/2026").unwrap().as_deref(),
            Some("2026-03-02")
        );
        assert!(date.apply("March").is_err());
    }
}
