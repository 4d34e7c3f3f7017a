//! Similarity functions. Each returns a value in [0, 1] that the matcher maps
//! onto a field's agreement levels; match forms are assumed (lowercase ASCII).

use serde::Deserialize;

/// How a field's two values are compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Comparator {
    /// 1 when equal, else 0.
    Exact,
    /// Jaro–Winkler: good for short names with typos.
    JaroWinkler,
    /// 1 − edit distance / longer length.
    Levenshtein,
    /// Soft token overlap: for companies and address lines where words are
    /// reordered, added or dropped.
    TokenSet,
    /// `YYYYMMDD` dates: credits day/month swaps and single-digit typos.
    Date,
    /// Postcodes and other codes: credits one-character slips.
    Numeric,
}

impl Comparator {
    pub fn similarity(self, a: &str, b: &str) -> f64 {
        if a == b {
            return 1.0;
        }
        match self {
            Comparator::Exact => 0.0,
            Comparator::JaroWinkler => jaro_winkler(a, b),
            Comparator::Levenshtein => strsim::normalized_levenshtein(a, b),
            Comparator::TokenSet => token_set(a, b),
            Comparator::Date => date(a, b),
            Comparator::Numeric => code(a, b),
        }
    }
}

/// Jaro–Winkler. Short ASCII strings (all match forms, nearly always) use
/// a stack-only implementation: this is the hot loop of deduplication.
pub fn jaro_winkler(a: &str, b: &str) -> f64 {
    let (x, y) = (a.as_bytes(), b.as_bytes());
    if !a.is_ascii() || !b.is_ascii() || x.len() > 64 || y.len() > 64 {
        return strsim::jaro_winkler(a, b);
    }
    if x.is_empty() || y.is_empty() {
        return if x.len() == y.len() { 1.0 } else { 0.0 };
    }
    let window = (x.len().max(y.len()) / 2).saturating_sub(1);
    let (mut ym, mut xm) = (0u64, 0u64);
    let mut matches = 0usize;
    for (i, &c) in x.iter().enumerate() {
        let lo = i.saturating_sub(window);
        let hi = (i + window + 1).min(y.len());
        for (j, &d) in y.iter().enumerate().take(hi).skip(lo) {
            if ym & (1 << j) == 0 && c == d {
                ym |= 1 << j;
                xm |= 1 << i;
                matches += 1;
                break;
            }
        }
    }
    if matches == 0 {
        return 0.0;
    }
    let mut transpositions = 0usize;
    let mut j = 0usize;
    for (i, &c) in x.iter().enumerate() {
        if xm & (1 << i) == 0 {
            continue;
        }
        while ym & (1 << j) == 0 {
            j += 1;
        }
        if c != y[j] {
            transpositions += 1;
        }
        j += 1;
    }
    let m = matches as f64;
    let jaro =
        (m / x.len() as f64 + m / y.len() as f64 + (m - (transpositions / 2) as f64) / m) / 3.0;
    if jaro <= 0.7 {
        return jaro; // Winkler's boost only applies to already-similar strings
    }
    let prefix = x.iter().zip(y).take(4).take_while(|(p, q)| p == q).count();
    jaro + 0.1 * prefix as f64 * (1.0 - jaro)
}

/// Soft Dice over tokens: each token of the shorter side is paired with its
/// most similar token on the other side (numbers must match exactly), then
/// max'd with a whitespace-blind comparison ("pridhamstreet" vs "pridham st").
/// Allocation-free for the common short ASCII case: it runs per candidate.
pub fn token_set(a: &str, b: &str) -> f64 {
    let (na, nb) = (a.split(' ').count(), b.split(' ').count());
    let (short, long) = if na <= nb { (a, b) } else { (b, a) };
    let mut sum = 0.0;
    for s in short.split(' ') {
        sum += long
            .split(' ')
            .map(|l| token_sim(s, l))
            .fold(0.0_f64, f64::max);
    }
    let dice = 2.0 * sum / (na + nb) as f64;
    // Different numbers mean a different house/unit: same street is weak evidence.
    let da = a.bytes().filter(u8::is_ascii_digit);
    let db = b.bytes().filter(u8::is_ascii_digit);
    if !da.clone().eq(db.clone()) {
        let either_empty = da.count() == 0 || db.count() == 0;
        return if either_empty { dice } else { dice.min(0.5) };
    }
    let joined = match (despace(a), despace(b)) {
        (Some((x, lx)), Some((y, ly))) => {
            let (x, y) = (&x[..lx], &y[..ly]);
            if x == y {
                1.0
            } else {
                // Both are ASCII by construction.
                0.95 * jaro_winkler(
                    std::str::from_utf8(x).unwrap_or(""),
                    std::str::from_utf8(y).unwrap_or(""),
                )
            }
        }
        _ => 0.0,
    };
    dice.max(joined)
}

/// `s` without spaces in a stack buffer (None when long or non-ASCII).
fn despace(s: &str) -> Option<([u8; 64], usize)> {
    if !s.is_ascii() || s.len() > 64 {
        return None;
    }
    let mut buf = [0u8; 64];
    let mut n = 0;
    for c in s.bytes().filter(|&c| c != b' ') {
        buf[n] = c;
        n += 1;
    }
    Some((buf, n))
}

fn token_sim(a: &str, b: &str) -> f64 {
    if a == b {
        return 1.0;
    }
    let numeric = |s: &str| s.bytes().any(|c| c.is_ascii_digit());
    if numeric(a) || numeric(b) {
        return 0.0;
    }
    let s = jaro_winkler(a, b);
    if s >= 0.85 { s } else { 0.0 }
}

/// Positions where equal-length byte strings differ: (count, first, second).
fn diffs(x: &[u8], y: &[u8]) -> (usize, usize, usize) {
    let (mut n, mut i1, mut i2) = (0, 0, 0);
    for (i, (p, q)) in x.iter().zip(y).enumerate() {
        if p != q {
            match n {
                0 => i1 = i,
                1 => i2 = i,
                _ => {}
            }
            n += 1;
        }
    }
    (n, i1, i2)
}

/// 1 equal, 0.9 day/month swapped, 0.8 one digit changed or two adjacent
/// digits transposed, 0.5 two digits changed, else 0.
pub fn date(a: &str, b: &str) -> f64 {
    if a == b {
        return 1.0;
    }
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a.len() != 8 || b.len() != 8 {
        return 0.0;
    }
    if a[..4] == b[..4] && a[4..6] == b[6..8] && a[6..8] == b[4..6] {
        return 0.9;
    }
    match diffs(a, b) {
        (1, _, _) => 0.8,
        (2, i, j) if j == i + 1 && a[i] == b[j] && a[j] == b[i] => 0.8,
        (2, _, _) => 0.5,
        _ => 0.0,
    }
}

/// 1 equal, 0.8 one substitution or adjacent transposition, 0.7 one
/// insertion/deletion, 0.5 same leading part (all but the last 2 chars).
pub fn code(a: &str, b: &str) -> f64 {
    if a == b {
        return 1.0;
    }
    let (x, y) = (a.as_bytes(), b.as_bytes());
    if x.len() == y.len() {
        match diffs(x, y) {
            (1, _, _) => return 0.8,
            (2, i, j) if j == i + 1 && x[i] == y[j] && x[j] == y[i] => return 0.8,
            _ => {}
        }
    } else if x.len().abs_diff(y.len()) == 1 && strsim::levenshtein(a, b) == 1 {
        return 0.7;
    }
    let n = x.len().min(y.len());
    if n >= 4 && x[..n - 2] == y[..n - 2] {
        0.5
    } else {
        0.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_and_string_metrics() {
        assert_eq!(Comparator::Exact.similarity("a", "a"), 1.0);
        assert_eq!(Comparator::Exact.similarity("a", "b"), 0.0);
        assert!(Comparator::JaroWinkler.similarity("jon", "john") > 0.9);
        assert!(Comparator::JaroWinkler.similarity("smith", "jones") < 0.6);
        let l = Comparator::Levenshtein.similarity("kitten", "sitting");
        assert!((l - (1.0 - 3.0 / 7.0)).abs() < 1e-9);
    }

    #[test]
    fn fast_jaro_winkler_agrees_with_strsim() {
        let words = [
            "martha",
            "marhta",
            "dixon",
            "dicksonx",
            "jellyfish",
            "smellyfish",
            "a",
            "ab",
            "jon",
            "john",
            "",
            "crate",
            "trace",
        ];
        for a in words {
            for b in words {
                let (x, y) = (jaro_winkler(a, b), strsim::jaro_winkler(a, b));
                assert!((x - y).abs() < 1e-12, "{a} {b} {x} {y}");
            }
        }
    }

    #[test]
    fn token_set_handles_order_and_spacing() {
        assert_eq!(token_set("acme widgets", "widgets acme"), 1.0);
        assert!(token_set("7 pridhamstreet", "7 pridham st") > 0.85);
        assert!(token_set("7 wallaby pl", "7 walaby pl") > 0.9);
        assert!(token_set("7 wallaby pl", "9 wallaby pl") < 0.8);
        assert!(token_set("high st", "low rd") < 0.3);
        assert!(token_set("acme", "acme holdings") > 0.6);
    }

    #[test]
    fn dates() {
        assert_eq!(date("19560409", "19560409"), 1.0);
        assert_eq!(date("19560409", "19560904"), 0.9);
        assert_eq!(date("19560409", "19560408"), 0.8);
        assert_eq!(date("19560409", "19650409"), 0.8);
        assert_eq!(date("19560409", "19570408"), 0.5);
        assert_eq!(date("19560409", "19711231"), 0.0);
        assert_eq!(date("1956", "19560409"), 0.0);
    }

    #[test]
    fn codes() {
        assert_eq!(code("2119", "2118"), 0.8);
        assert_eq!(code("2119", "2191"), 0.8);
        assert_eq!(code("2119", "211"), 0.7);
        assert_eq!(code("sw1a1aa", "sw1a1bb"), 0.5);
        assert_eq!(code("2119", "4881"), 0.0);
    }
}
