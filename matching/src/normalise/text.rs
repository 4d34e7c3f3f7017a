//! Shared text helpers: whitespace collapsing and ASCII folding for match forms.

use unicode_normalization::UnicodeNormalization;
use unicode_normalization::char::is_combining_mark;

/// Trim and collapse internal runs of whitespace to one space.
pub fn collapse_ws(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for w in s.split_whitespace() {
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(w);
    }
    out
}

/// Lowercase ASCII match form: accents stripped, letters that NFKD cannot
/// decompose mapped by hand, every other non-alphanumeric turned into a
/// separator, whitespace collapsed. `&` becomes "and" so "A&B" == "A and B".
pub fn fold(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut pending_space = false;
    let push = |out: &mut String, piece: &str, pending: &mut bool| {
        if *pending && !out.is_empty() {
            out.push(' ');
        }
        *pending = false;
        out.push_str(piece);
    };
    for c in s.nfkd() {
        if is_combining_mark(c) {
            continue;
        }
        let lc = c.to_lowercase().next().unwrap_or(c);
        match lc {
            'a'..='z' | '0'..='9' => {
                let mut b = [0u8; 4];
                push(&mut out, lc.encode_utf8(&mut b), &mut pending_space)
            }
            // Apostrophes and dots join: "O'Neil" -> "oneil", "J.P." -> "jp".
            '\'' | '\u{2019}' | '.' | '`' => {}
            '&' => {
                pending_space = true;
                push(&mut out, "and", &mut pending_space);
                pending_space = true;
            }
            'ß' => push(&mut out, "ss", &mut pending_space),
            'æ' => push(&mut out, "ae", &mut pending_space),
            'œ' => push(&mut out, "oe", &mut pending_space),
            'ø' => push(&mut out, "o", &mut pending_space),
            'ł' => push(&mut out, "l", &mut pending_space),
            'đ' | 'ð' => push(&mut out, "d", &mut pending_space),
            'þ' => push(&mut out, "th", &mut pending_space),
            'ı' => push(&mut out, "i", &mut pending_space),
            c if c.is_alphanumeric() => {
                // Non-Latin scripts are kept as-is (lowercased) rather than lost.
                let mut b = [0u8; 4];
                push(&mut out, c.encode_utf8(&mut b), &mut pending_space)
            }
            _ => pending_space = true,
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn collapses() {
        assert_eq!(collapse_ws("  a \t b\n c "), "a b c");
        assert_eq!(collapse_ws("   "), "");
    }

    #[test]
    fn folds_accents_and_punctuation() {
        assert_eq!(
            fold("José  Müller-Lüdenscheidt"),
            "jose muller ludenscheidt"
        );
        assert_eq!(fold("O'Neil"), "oneil");
        assert_eq!(fold("Straße"), "strasse");
        assert_eq!(fold("Søren Łukasz"), "soren lukasz");
        assert_eq!(fold("A&B Ltd."), "a and b ltd");
        assert_eq!(fold("  --  "), "");
    }
}
