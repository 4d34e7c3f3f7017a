//! Text analysis shared by the backends: how a query splits into terms, which terms a
//! field's value is indexed under (phone variants, email parts), the typo budget of a
//! word, and the highlighting of matched words.

use std::collections::BTreeMap;

use super::{Analysis, SearchDoc, SearchScope, spec};

/// Digits a query or a phone fragment needs before it is treated as a number.
pub const MIN_PHONE_DIGITS: usize = 4;

/// Edits a query word may be away from an indexed word: none for one or two letters, one
/// up to four letters, two from five (as a rep mistypes longer names more).
pub fn typo_budget(word: &str) -> u8 {
    match word.chars().count() {
        0..=2 => 0,
        3..=4 => 1,
        _ => 2,
    }
}

/// A query split into what the backends match.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct QueryTerms {
    /// The digits of a query that is a phone number in any format ("+44 20 7946 0958").
    pub phone: Option<String>,
    /// Whole email addresses or fragments containing `@`, lower-cased (`@acme.com` keeps
    /// its `@`).
    pub emails: Vec<String>,
    /// Lower-cased, accent-folded words (of compounds too: they are highlighted).
    pub words: Vec<String>,
    /// Tokens with inner punctuation ("ada.lovelace", "apollo.example", "INV-2025-7"),
    /// lower-cased: matched whole against emails and codes, or by all their words.
    pub compounds: Vec<Compound>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Compound {
    pub raw: String,
    pub words: Vec<String>,
}

impl QueryTerms {
    /// Splits a query. Quotes, brackets and other punctuation are separators, never
    /// syntax, so "unbalanced input is taken literally.
    pub fn parse(q: &str) -> QueryTerms {
        let q = q.trim();
        let digits: String = q.chars().filter(char::is_ascii_digit).collect();
        let phone_like = q
            .chars()
            .all(|c| c.is_ascii_digit() || " +-().\u{a0}/".contains(c));
        if phone_like && digits.len() >= MIN_PHONE_DIGITS {
            return QueryTerms {
                phone: Some(digits),
                ..Default::default()
            };
        }
        let mut terms = QueryTerms::default();
        for raw in q.split_whitespace() {
            let raw = raw.trim_matches(|c: char| "\"'()[]{}<>,;".contains(c));
            if raw.contains('@') && raw.len() > 1 {
                terms.emails.push(raw.to_lowercase());
                continue;
            }
            let parts = words(raw);
            if parts.len() > 1 {
                terms.compounds.push(Compound {
                    raw: raw.to_lowercase(),
                    words: parts.clone(),
                });
            }
            for word in parts {
                if !terms.words.contains(&word) {
                    terms.words.push(word);
                }
            }
        }
        terms
    }

    /// The words not part of a compound: each must match on its own.
    pub fn single_words(&self) -> impl Iterator<Item = &String> {
        self.words
            .iter()
            .filter(|w| !self.compounds.iter().any(|c| c.words.contains(w)))
    }

    /// How many separately required parts the query has.
    pub fn parts(&self) -> usize {
        self.emails.len() + self.compounds.len() + self.single_words().count()
    }

    pub fn is_empty(&self) -> bool {
        self.phone.is_none() && self.emails.is_empty() && self.words.is_empty()
    }

    /// The query as plain text for an engine that tokenizes itself (Meilisearch): the
    /// phone's digits, else the words and addresses without syntax characters.
    pub fn plain(&self) -> String {
        if let Some(phone) = &self.phone {
            return phone.clone();
        }
        let mut parts: Vec<&str> = self.emails.iter().map(String::as_str).collect();
        parts.extend(self.words.iter().map(String::as_str));
        parts.join(" ")
    }
}

/// Lower-cases and folds common accents so "Zoë" finds "zoe".
pub fn fold(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        for lower in c.to_lowercase() {
            out.push(match lower {
                'à' | 'á' | 'â' | 'ã' | 'ä' | 'å' | 'ā' => 'a',
                'ç' | 'č' | 'ć' => 'c',
                'è' | 'é' | 'ê' | 'ë' | 'ē' | 'ę' | 'ě' => 'e',
                'ì' | 'í' | 'î' | 'ï' | 'ī' => 'i',
                'ñ' | 'ń' | 'ň' => 'n',
                'ò' | 'ó' | 'ô' | 'õ' | 'ö' | 'ø' | 'ō' => 'o',
                'ù' | 'ú' | 'û' | 'ü' | 'ū' | 'ů' => 'u',
                'ý' | 'ÿ' => 'y',
                'š' | 'ś' => 's',
                'ž' | 'ź' | 'ż' => 'z',
                'ł' => 'l',
                'ř' => 'r',
                'ß' => 's',
                other => other,
            });
        }
    }
    out
}

/// The words of a text with their byte ranges in it: runs of letters and digits.
pub fn word_spans(text: &str) -> Vec<(std::ops::Range<usize>, String)> {
    let mut spans = Vec::new();
    let mut start = None;
    for (i, c) in text.char_indices() {
        if c.is_alphanumeric() {
            start.get_or_insert(i);
        } else if let Some(s) = start.take() {
            spans.push((s..i, fold(&text[s..i])));
        }
    }
    if let Some(s) = start {
        spans.push((s..text.len(), fold(&text[s..])));
    }
    spans
}

/// The folded words of a text.
pub fn words(text: &str) -> Vec<String> {
    word_spans(text).into_iter().map(|(_, w)| w).collect()
}

/// The terms an `Email` field is indexed under: the address, its local part, its domain,
/// the local part's pieces and the domain's name ("ada.lovelace@example.com" →
/// "ada.lovelace", "example.com", "ada", "lovelace", "example").
pub fn email_terms(value: &str) -> Vec<String> {
    let address = value.trim().to_lowercase();
    let mut terms = vec![address.clone()];
    if let Some((local, domain)) = address.rsplit_once('@') {
        terms.push(local.to_owned());
        terms.push(domain.to_owned());
        terms.push(format!("@{domain}"));
        // "ada.lovelace+crm" is also found as "ada" and "lovelace"; "alovelace83" as
        // "alovelace".
        let base = local.split('+').next().unwrap_or(local);
        for piece in base.split(['.', '_', '-']) {
            let letters = piece.trim_end_matches(|c: char| c.is_ascii_digit());
            for candidate in [piece, letters] {
                if !candidate.is_empty() {
                    terms.push(candidate.to_owned());
                }
            }
        }
        if let Some(name) = domain.split('.').next() {
            terms.push(name.to_owned());
        }
    }
    terms.sort();
    terms.dedup();
    terms
}

/// The terms a `Phone` field is indexed under: the E.164 digits, the national form
/// (trunk prefix included, "02079460958") and every suffix of at least
/// [`MIN_PHONE_DIGITS`] digits of both, so "+44 20 7946 0958", "020 7946 0958" and
/// "79460958" all find the number.
pub fn phone_terms(value: &str) -> Vec<String> {
    let digits: String = value.chars().filter(char::is_ascii_digit).collect();
    if digits.is_empty() {
        return Vec::new();
    }
    let mut forms = vec![digits.clone()];
    if value.trim_start().starts_with('+')
        && let Ok(number) = phonenumber::parse(None, value)
    {
        let national: String = number
            .format()
            .mode(phonenumber::Mode::National)
            .to_string()
            .chars()
            .filter(char::is_ascii_digit)
            .collect();
        if !national.is_empty() {
            forms.push(national);
        }
    }
    let mut terms = Vec::new();
    for form in forms {
        for start in 0..form.len() {
            if form.len() - start >= MIN_PHONE_DIGITS {
                terms.push(form[start..].to_owned());
            }
        }
    }
    terms.sort();
    terms.dedup();
    terms
}

/// The terms a `Code` field is indexed under: the lower-cased value, and for a URL its
/// host without `www.`.
pub fn code_terms(value: &str) -> Vec<String> {
    let value = value.trim().to_lowercase();
    let mut terms = vec![value.clone()];
    if let Some(rest) = value.split("://").nth(1).or(Some(value.as_str()))
        && let Some(host) = rest.split(['/', '?', '#']).next()
    {
        let host = host.strip_prefix("www.").unwrap_or(host);
        if !host.is_empty() && host != value {
            terms.push(host.to_owned());
        }
    }
    terms
}

/// The exact terms a field value is indexed under (not used for word fields).
pub fn field_terms(analysis: Analysis, value: &str) -> Vec<String> {
    match analysis {
        Analysis::Email => email_terms(value),
        Analysis::Phone => phone_terms(value),
        Analysis::Code => code_terms(value),
        Analysis::Words | Analysis::MinorWords => words(value),
    }
}

/// Damerau–Levenshtein distance: the fewest letters left out, added or wrong and swaps of
/// neighbours turning one word into the other, in any order ("prer" → "per" → "epr" is
/// two, though the swapped letters were not neighbours before the omission). The measure
/// the fuzzy queries use.
pub fn edits(a: &str, b: &str) -> usize {
    strsim::damerau_levenshtein(a, b)
}

/// Costs of the typing mistakes that turn a stored word into what a rep typed, as
/// negative log-likelihoods (a noisy channel: the likelier mistake costs less). A letter
/// left out or two neighbours swapped happen at some rate per letter; a wrong or an extra
/// letter happens at about the same rate but must also be that very letter, one of ~26
/// (no keyboard model: any letter alike), so it costs ln 26 more. So "smiht" is likelier
/// "smith" (one swap) than "smint" (one wrong letter), and a word two omissions away can
/// be likelier than one wrong letter away.
pub mod typo_cost {
    /// One letter omitted or two neighbours swapped (-ln 0.05).
    pub const SLIP: f32 = 3.0;
    /// One letter wrong or one extra (a slip, and the choice of the letter: + ln 26).
    pub const WRONG_LETTER: f32 = SLIP + 3.26;
    /// The word is only begun (typed as you search), plus a little per missing letter so
    /// the shortest completion comes first.
    pub const UNFINISHED: f32 = 1.6;
    pub const PER_MISSING_LETTER: f32 = 0.05;
}

/// How unlikely it is that a rep meaning `word` typed `typed` (0 for the word itself): the
/// cheapest series of [`typo_cost`] mistakes, where the typed text may also be only the
/// start of the word, itself with mistakes. Mistakes combine in any order, as in
/// [`edits`]: a swap may be of letters an omission brought together ("prer" typed "epr")
/// or that an extra letter then came between (Lowrance and Wagner's algorithm).
pub fn typo_cost(typed: &str, word: &str) -> f32 {
    use typo_cost::{PER_MISSING_LETTER, SLIP, UNFINISHED, WRONG_LETTER};
    let q: Vec<char> = typed.chars().collect();
    let w: Vec<char> = word.chars().collect();
    let (m, n) = (q.len(), w.len());
    // d[i + 1][j + 1]: the first i letters of the word typed as the first j letters of
    // the query; row and column 0 are a bound no series of mistakes reaches.
    let bound = (m + n + 1) as f32 * WRONG_LETTER;
    let mut d = vec![vec![bound; m + 2]; n + 2];
    for j in 0..=m {
        d[1][j + 1] = j as f32 * WRONG_LETTER;
    }
    // The last row of the word holding each letter seen so far.
    let mut last_row: Vec<(char, usize)> = Vec::new();
    for i in 1..=n {
        d[i + 1][1] = i as f32 * SLIP;
        // The last column of the query, in this row, holding the word's letter i.
        let mut last_col = 0;
        for j in 1..=m {
            let k = last_row
                .iter()
                .find(|(c, _)| *c == q[j - 1])
                .map_or(0, |&(_, row)| row);
            let l = last_col;
            let same = w[i - 1] == q[j - 1];
            if same {
                last_col = j;
            }
            let mut best = d[i][j] + if same { 0.0 } else { WRONG_LETTER };
            best = best.min(d[i][j + 1] + SLIP); // the word's letter left out
            best = best.min(d[i + 1][j] + WRONG_LETTER); // an extra letter typed
            if k > 0 && l > 0 {
                // The word's letters k and i typed swapped, the word's letters between
                // left out and extra letters typed between.
                let between = (i - k - 1) as f32 * SLIP + (j - l - 1) as f32 * WRONG_LETTER;
                best = best.min(d[k][l] + SLIP + between);
            }
            d[i + 1][j + 1] = best;
        }
        match last_row.iter_mut().find(|(c, _)| *c == w[i - 1]) {
            Some(entry) => entry.1 = i,
            None => last_row.push((w[i - 1], i)),
        }
    }
    let whole = d[n + 1][m + 1];
    // Only the start of the word typed: at least two letters of it, as the index matches.
    let begun = (2..n)
        .filter(|_| m >= 2)
        .map(|i| d[i + 1][m + 1] + UNFINISHED + PER_MISSING_LETTER * (n - i) as f32)
        .fold(f32::INFINITY, f32::min);
    whole.min(begun)
}

/// Edits a query word was allowed from a word of a field analysed as given, as decided
/// by the backend that answered (its pass, the query's other words): highlights mark
/// what matched, no more and no less.
pub type Reach<'a> = &'a dyn Fn(&str, Analysis) -> u8;

/// A query word's typo budget in every word field (Meilisearch's own rule, see `meili`).
pub fn budget_reach(query: &str, _: Analysis) -> u8 {
    typo_budget(query)
}

/// True when an indexed word is what a query word asked for: equal, a prefix of it (as
/// you type), or within `edits` of it.
pub fn word_matches(query: &str, word: &str, edits_allowed: u8) -> bool {
    word == query
        || (query.chars().count() >= 2 && word.starts_with(query))
        || edits(query, word) <= usize::from(edits_allowed)
}

fn escape_html(text: &str, out: &mut String) {
    for c in text.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '"' => out.push_str("&quot;"),
            other => out.push(other),
        }
    }
}

/// `text` HTML-escaped with each range in `<mark>…</mark>`.
pub fn mark(text: &str, ranges: &[std::ops::Range<usize>]) -> String {
    let mut out = String::with_capacity(text.len() + ranges.len() * 13);
    let mut at = 0;
    for range in ranges {
        if range.start < at || range.end > text.len() {
            continue;
        }
        escape_html(&text[at..range.start], &mut out);
        out.push_str("<mark>");
        escape_html(&text[range.clone()], &mut out);
        out.push_str("</mark>");
        at = range.end;
    }
    escape_html(&text[at..], &mut out);
    out
}

/// The highlighted searchable fields of a document for a query, hidden fields left out;
/// a word is marked when it is within `reach` of a query word.
pub fn highlights(
    doc: &SearchDoc,
    terms: &QueryTerms,
    scope: &SearchScope,
    reach: Reach<'_>,
) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let Some(spec) = spec(doc.kind) else {
        return out;
    };
    for &(name, analysis) in spec.searchable {
        if scope.is_hidden(doc.kind, name) {
            continue;
        }
        let Some(text) = doc.text(name) else {
            continue;
        };
        let whole = 0..text.len();
        let ranges: Vec<std::ops::Range<usize>> = match analysis {
            Analysis::Phone => {
                let hit = terms.phone.as_ref().is_some_and(|digits| {
                    phone_terms(&text)
                        .iter()
                        .any(|t| t == digits || t.starts_with(digits.as_str()))
                });
                if hit { vec![whole] } else { Vec::new() }
            }
            Analysis::Email => {
                let lower = text.to_lowercase();
                if terms
                    .emails
                    .iter()
                    .chain(terms.compounds.iter().map(|c| &c.raw))
                    .any(|e| lower.starts_with(e.as_str()) || lower.ends_with(e.as_str()))
                {
                    vec![whole]
                } else {
                    word_ranges(&text, analysis, terms, reach)
                }
            }
            Analysis::Code => {
                let lower = text.to_lowercase();
                let query_codes = terms
                    .words
                    .iter()
                    .chain(terms.phone.iter())
                    .chain(terms.compounds.iter().map(|c| &c.raw));
                if query_codes
                    .into_iter()
                    .any(|w| code_terms(&lower).iter().any(|t| t.starts_with(w.as_str())))
                {
                    vec![whole]
                } else {
                    Vec::new()
                }
            }
            Analysis::Words | Analysis::MinorWords => word_ranges(&text, analysis, terms, reach),
        };
        if !ranges.is_empty() {
            out.insert(name.to_owned(), mark(&text, &ranges));
        }
    }
    out
}

fn word_ranges(
    text: &str,
    analysis: Analysis,
    terms: &QueryTerms,
    reach: Reach<'_>,
) -> Vec<std::ops::Range<usize>> {
    word_spans(text)
        .into_iter()
        .filter(|(_, word)| {
            terms
                .words
                .iter()
                .any(|q| word_matches(q, word, reach(q, analysis)))
        })
        .map(|(range, _)| range)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_phone_in_any_format_is_one_digit_string() {
        for q in [
            "+44 20 7946 0958",
            "020 7946 0958",
            "(020) 7946-0958",
            "79460958",
        ] {
            let terms = QueryTerms::parse(q);
            assert!(terms.phone.is_some(), "{q}");
            assert!(terms.words.is_empty());
        }
        assert_eq!(QueryTerms::parse("ada 123").phone, None);
    }

    #[test]
    fn a_stored_number_is_found_by_every_form_a_rep_types() {
        let terms = phone_terms("+442079460958");
        for q in [
            "+44 20 7946 0958",
            "020 7946 0958",
            "79460958",
            "2079460958",
        ] {
            let digits = QueryTerms::parse(q).phone.unwrap();
            assert!(terms.contains(&digits), "{q} -> {digits}: {terms:?}");
        }
    }

    #[test]
    fn email_terms_cover_local_part_pieces_and_domain() {
        let terms = email_terms("Ada.Lovelace+crm@Example.com");
        for t in [
            "ada.lovelace+crm@example.com",
            "ada",
            "lovelace",
            "example.com",
            "@example.com",
            "example",
        ] {
            assert!(terms.contains(&t.to_owned()), "{t}: {terms:?}");
        }
        assert!(email_terms("alovelace83@x.io").contains(&"alovelace".to_owned()));
    }

    #[test]
    fn unbalanced_quotes_and_syntax_are_plain_separators() {
        let terms = QueryTerms::parse("\"ada lovelace");
        assert_eq!(terms.words, vec!["ada", "lovelace"]);
        assert!(QueryTerms::parse("\" ( ] \"").is_empty());
        assert_eq!(QueryTerms::parse("Zoë").words, vec!["zoe"]);
    }

    #[test]
    fn typo_costs_follow_how_likely_each_mistake_is() {
        assert_eq!(typo_cost("smith", "smith"), 0.0);
        let swapped = typo_cost("smiht", "smith");
        let wrong = typo_cost("smiht", "smint");
        assert!(swapped < wrong, "{swapped} {wrong}");
        assert_eq!(typo_cost("smth", "smith"), typo_cost::SLIP);
        assert_eq!(typo_cost("smitth", "smith"), typo_cost::WRONG_LETTER);
        // Begun: "ba" is the start of "bar" and of "bahet", closer to the shorter.
        assert!(typo_cost("ba", "bar") < typo_cost("ba", "bahet"));
        assert!(typo_cost("ba", "bahet") < typo_cost::SLIP);
        // Two omissions are likelier than one wrong letter.
        assert_eq!(typo_cost("hmlton", "hamilton"), 2.0 * typo_cost::SLIP);
        assert!(typo_cost("hmlton", "hamilton") < typo_cost("hamiltan", "hamilton"));
        // A swap of letters an omission brought together: two slips, not three mistakes.
        assert_eq!(typo_cost("epr", "prer"), 2.0 * typo_cost::SLIP);
        assert_eq!(typo_cost("maats", "mathas"), 2.0 * typo_cost::SLIP);
        // A swap with an extra letter typed between.
        assert_eq!(
            typo_cost("brinka", "brian"),
            typo_cost::SLIP + typo_cost::WRONG_LETTER
        );
    }

    #[test]
    fn highlights_mark_words_within_the_typo_budget_and_escape_html() {
        assert_eq!(
            mark("a<b", std::slice::from_ref(&(2..3))),
            "a&lt;<mark>b</mark>"
        );
        let terms = QueryTerms::parse("lovlace");
        let ranges = word_ranges("Ada Lovelace", Analysis::Words, &terms, &budget_reach);
        assert_eq!(ranges, vec![4..12]);
    }

    #[test]
    fn highlights_mark_a_word_as_far_off_as_the_backend_matched_it() {
        // "kxnb" is two edits from "Kong": beyond a four-letter word's budget, so not
        // marked under it, and marked when the answering backend allowed two.
        let terms = QueryTerms::parse("ada kxnb");
        let budget = word_ranges("Ada Kong", Analysis::Words, &terms, &budget_reach);
        assert_eq!(budget, vec![0..3]);
        let two_for_names = |_: &str, analysis: Analysis| match analysis {
            Analysis::Words => 2,
            _ => 0,
        };
        let wider = word_ranges("Ada Kong", Analysis::Words, &terms, &two_for_names);
        assert_eq!(wider, vec![0..3, 4..8]);
        let in_a_title = word_ranges("Kong", Analysis::MinorWords, &terms, &two_for_names);
        assert!(in_a_title.is_empty(), "{in_a_title:?}");
    }
}
