//! One query word against the fields it may match, in one walk of each field's term
//! dictionary.
//!
//! A word matches a field exactly, as the start of a longer word, one edit away or two
//! (each a constant score per field; the best counts). Built from tantivy's own queries
//! that is a disjunction of a term query, a prefix automaton and one Levenshtein automaton
//! per distance, for every field: each automaton walks the term dictionary again (the
//! two-edit walk visits everything the one-edit walk does) and marks its documents in a
//! bitset as large as the segment. A name query spent most of its time there. Here one
//! automaton (the prefix, or within the field's largest distance) walks each dictionary
//! once, each term found is scored by what it is (the same word, a longer word starting
//! with it, its distance), the Levenshtein automata are built once per word rather than
//! once per field, and the documents are kept as a sorted list of the few thousand that
//! match rather than a bitset of the whole segment. The scores are those the disjunction
//! gave, document by document.

use std::sync::{Arc, OnceLock};

use ::tantivy::query::{EnableScoring, Explanation, Query, Scorer, Weight};
use ::tantivy::schema::{Field, IndexRecordOption};
use ::tantivy::{DocId, DocSet, Score, SegmentReader, TERMINATED, TantivyError};
use levenshtein_automata::{DFA, Distance, LevenshteinAutomatonBuilder, SINK_STATE};

/// How one field may match the word, and the score of each kind of match (`None`: not
/// asked for).
#[derive(Debug, Clone, PartialEq)]
pub struct FieldMatch {
    pub field: Field,
    pub exact: Option<Score>,
    /// A longer indexed word starting with the query word (as it is typed).
    pub prefix: Option<Score>,
    /// Bytes that, anywhere after the query word, end a term the prefix need not find:
    /// the term's start up to that byte is a term of the same record too, and starts with
    /// the word (see [`EMAIL_SEPARATORS`]).
    pub redundant_after: &'static [u8],
    /// Within one edit (a swap of neighbours is one).
    pub one_edit: Option<Score>,
    /// Within two edits.
    pub two_edits: Option<Score>,
}

impl FieldMatch {
    pub fn new(field: Field) -> Self {
        FieldMatch {
            field,
            exact: None,
            prefix: None,
            redundant_after: &[],
            one_edit: None,
            two_edits: None,
        }
    }

    fn distance(&self) -> u8 {
        if self.two_edits.is_some() {
            2
        } else if self.one_edit.is_some() {
            1
        } else {
            0
        }
    }

    /// The score of an indexed term, `edits` away from the word (`None` beyond the
    /// distance the walk used), or `None` when it does not match.
    fn score(&self, word: &[u8], term: &[u8], edits: Option<u8>) -> Option<Score> {
        let mut best: Option<Score> = None;
        let mut offer = |score: Option<Score>| {
            if let Some(score) = score {
                best = Some(best.map_or(score, |b: Score| b.max(score)));
            }
        };
        if term == word {
            offer(self.exact);
        }
        if term.starts_with(word) {
            offer(self.prefix);
        }
        match edits {
            Some(0 | 1) => {
                offer(self.one_edit);
                offer(self.two_edits);
            }
            Some(2) => offer(self.two_edits),
            _ => {}
        }
        best
    }
}

/// An email field is indexed under the address, its local part, the local part's pieces
/// (split at `.`, `_`, `-`, after a `+` cut off), its domain and the domain's name
/// (`analysis::email_terms`). In a term that starts with a query word (letters and
/// digits), the part before the first of these bytes is itself a term of the same
/// address (its local part, its first piece or its domain's name, as far as a `-`), and
/// starts with the word too: "jacob" and "jacobs" are terms of every "jacob.smith@…",
/// "jacob_smith12@…", "jacobs+crm@…". So the prefix walk need not list the addresses and
/// local parts that go on past one of these bytes — thousands for a common first name or
/// a three-letter start ("mar": every mary.…, mark_…, marie…@), most of a name query's
/// time — and every record they belong to is still found through the shorter term, with
/// the same score or an exact match's. (An email value without an `@` or with two, or
/// with `_` or `+` in its domain, is not split that way: its record is no longer found
/// through that field by a start of it that goes on past one of these bytes.)
pub const EMAIL_SEPARATORS: &[u8] = b".+_@";

/// The disjunction of every [`FieldMatch`] of one word; a document scores its best match.
#[derive(Debug, Clone)]
pub struct WordQuery {
    word: String,
    fields: Vec<FieldMatch>,
}

impl WordQuery {
    /// `None` when no field asks for anything.
    pub fn new(word: &str, fields: Vec<FieldMatch>) -> Option<Self> {
        let fields: Vec<FieldMatch> = fields
            .into_iter()
            .filter(|f| {
                f.exact.is_some()
                    || f.prefix.is_some()
                    || f.one_edit.is_some()
                    || f.two_edits.is_some()
            })
            .collect();
        (!fields.is_empty()).then(|| WordQuery {
            word: word.to_owned(),
            fields,
        })
    }
}

/// Levenshtein automaton builders (transpositions cost one, as in tantivy's fuzzy query),
/// built once per process: each takes a while.
fn builder(distance: u8) -> &'static LevenshteinAutomatonBuilder {
    static BUILDERS: [OnceLock<LevenshteinAutomatonBuilder>; 2] =
        [OnceLock::new(), OnceLock::new()];
    let slot = &BUILDERS[usize::from(distance.clamp(1, 2) - 1)];
    slot.get_or_init(|| LevenshteinAutomatonBuilder::new(distance.clamp(1, 2), true))
}

impl Query for WordQuery {
    fn weight(&self, _: EnableScoring<'_>) -> ::tantivy::Result<Box<dyn Weight>> {
        let dfa = |distance: u8| {
            self.fields
                .iter()
                .any(|f| f.distance() == distance)
                .then(|| Arc::new(builder(distance).build_dfa(&self.word)))
        };
        let two_edits = dfa(2);
        let crossed = if two_edits.is_some() {
            crossed_variants(&self.word)
                .iter()
                .map(|variant| builder(1).build_dfa(variant))
                .collect()
        } else {
            Vec::new()
        };
        Ok(Box::new(WordWeight {
            word: self.word.clone(),
            fields: self.fields.clone(),
            one_edit: dfa(1),
            two_edits,
            crossed: Arc::new(crossed),
        }))
    }
}

struct WordWeight {
    word: String,
    fields: Vec<FieldMatch>,
    one_edit: Option<Arc<DFA>>,
    two_edits: Option<Arc<DFA>>,
    /// One-edit automata of the word's [`crossed_variants`].
    crossed: Arc<Vec<DFA>>,
}

/// Variants of a word this many letters long at most are walked (two per letter).
const CROSSED_MAX_LETTERS: usize = 16;

/// The Levenshtein automata count a swap as one edit only between letters that were
/// neighbours all along (optimal string alignment): "epr" is three edits from "prer" for
/// them, though a rep gets there by two mistakes, leaving out the first `r` and swapping
/// the `p` and `e` it brought together; so is "brinka" from "brian" (a swap, then an
/// extra letter between the swapped ones). Every such word is one edit from one of the
/// typed word's variants with one swap of neighbours ("per") or one letter removed
/// ("brina"), so a walk with their one-edit automata finds the words two edits off that
/// the two-edit automaton misses (unit test
/// `the_crossed_walk_finds_what_two_edits_find_and_the_automaton_misses`).
fn crossed_variants(word: &str) -> Vec<String> {
    let letters: Vec<char> = word.chars().collect();
    if letters.len() < 2 || letters.len() > CROSSED_MAX_LETTERS {
        return Vec::new();
    }
    let mut variants: Vec<String> = Vec::with_capacity(2 * letters.len());
    let mut offer = |variant: Vec<char>| {
        let variant: String = variant.into_iter().collect();
        if variant != word && !variants.contains(&variant) {
            variants.push(variant);
        }
    };
    for at in 0..letters.len() - 1 {
        let mut swapped = letters.clone();
        swapped.swap(at, at + 1);
        offer(swapped);
    }
    for at in 0..letters.len() {
        let mut shorter = letters.clone();
        shorter.remove(at);
        offer(shorter);
    }
    variants
}

/// Terms within one edit of any of the automata ([`crossed_variants`]'s).
struct CrossedAutomaton<'a> {
    dfas: &'a [DFA],
}

impl tantivy_fst::Automaton for CrossedAutomaton<'_> {
    /// Each automaton's state.
    type State = [u32; 2 * CROSSED_MAX_LETTERS];

    fn start(&self) -> Self::State {
        let mut state = [SINK_STATE; 2 * CROSSED_MAX_LETTERS];
        for (slot, dfa) in state.iter_mut().zip(self.dfas) {
            *slot = dfa.initial_state();
        }
        state
    }

    fn is_match(&self, state: &Self::State) -> bool {
        self.dfas
            .iter()
            .zip(state)
            .any(|(dfa, &s)| s != SINK_STATE && matches!(dfa.distance(s), Distance::Exact(_)))
    }

    fn can_match(&self, state: &Self::State) -> bool {
        state[..self.dfas.len()].iter().any(|&s| s != SINK_STATE)
    }

    fn accept(&self, state: &Self::State, byte: u8) -> Self::State {
        let mut next = *state;
        for (slot, dfa) in next.iter_mut().zip(self.dfas) {
            if *slot != SINK_STATE {
                *slot = dfa.transition(*slot, byte);
            }
        }
        next
    }
}

/// Terms within a Levenshtein automaton's distance, or starting with a prefix and holding
/// none of `redundant_after` after it.
struct WordAutomaton<'a> {
    dfa: Option<&'a DFA>,
    prefix: Option<&'a [u8]>,
    redundant_after: &'a [u8],
}

/// The term left the prefix.
const PREFIX_OFF: u32 = u32::MAX;

impl tantivy_fst::Automaton for WordAutomaton<'_> {
    /// The automaton's state, and how many bytes of the prefix were read (its length from
    /// its end on, [`PREFIX_OFF`] once the term left it).
    type State = (u32, u32);

    fn start(&self) -> (u32, u32) {
        let dfa = self.dfa.map_or(SINK_STATE, DFA::initial_state);
        let prefix = if self.prefix.is_some() { 0 } else { PREFIX_OFF };
        (dfa, prefix)
    }

    fn is_match(&self, &(dfa, prefix): &(u32, u32)) -> bool {
        let within = self
            .dfa
            .is_some_and(|d| matches!(d.distance(dfa), Distance::Exact(_)));
        within || self.prefix.is_some_and(|p| prefix as usize == p.len())
    }

    fn can_match(&self, &(dfa, prefix): &(u32, u32)) -> bool {
        dfa != SINK_STATE || prefix != PREFIX_OFF
    }

    fn accept(&self, &(dfa, prefix): &(u32, u32), byte: u8) -> (u32, u32) {
        let dfa = match self.dfa {
            Some(d) if dfa != SINK_STATE => d.transition(dfa, byte),
            _ => SINK_STATE,
        };
        let prefix = match self.prefix {
            Some(_) if prefix == PREFIX_OFF => PREFIX_OFF,
            Some(p) if prefix as usize == p.len() => {
                if self.redundant_after.contains(&byte) {
                    PREFIX_OFF
                } else {
                    prefix
                }
            }
            Some(p) if p[prefix as usize] == byte => prefix + 1,
            _ => PREFIX_OFF,
        };
        (dfa, prefix)
    }
}

impl WordWeight {
    /// The distinct scores the word's options give, lowest first: a document keeps the
    /// rank of its best (1 for the lowest; 0 for none).
    fn score_ranks(&self) -> Vec<Score> {
        let mut scores: Vec<Score> = self
            .fields
            .iter()
            .flat_map(|f| [f.exact, f.prefix, f.one_edit, f.two_edits])
            .flatten()
            .collect();
        scores.sort_by(Score::total_cmp);
        scores.dedup();
        scores
    }

    /// Every matching document with its best score.
    fn matches(&self, reader: &SegmentReader) -> ::tantivy::Result<Found> {
        let word = self.word.as_bytes();
        let mut found = Found::new(self.score_ranks(), reader.max_doc());
        for field in &self.fields {
            let inverted = reader.inverted_index(field.field)?;
            let terms = inverted.terms();
            let mut add = |term_info: &::tantivy::postings::TermInfo,
                           score: Score|
             -> ::tantivy::Result<()> {
                let mut postings = inverted
                    .read_block_postings_from_terminfo(term_info, IndexRecordOption::Basic)?;
                let rank = found.rank(score);
                loop {
                    let docs = postings.docs();
                    if docs.is_empty() {
                        break;
                    }
                    found.add(docs, rank);
                    postings.advance();
                }
                Ok(())
            };
            let dfa = match field.distance() {
                2 => self.two_edits.as_deref(),
                1 => self.one_edit.as_deref(),
                _ => None,
            };
            if dfa.is_none() && field.prefix.is_none() {
                if let (Some(score), Some(info)) = (field.exact, terms.get(word)?) {
                    add(&info, score)?;
                }
                continue;
            }
            let automaton = WordAutomaton {
                dfa,
                prefix: field.prefix.is_some().then_some(word),
                redundant_after: field.redundant_after,
            };
            let mut stream = terms.search(automaton).into_stream()?;
            while stream.advance() {
                let term = stream.key();
                let edits = dfa.and_then(|d| match d.eval(term) {
                    Distance::Exact(edits) => Some(edits),
                    Distance::AtLeast(_) => None,
                });
                if let Some(score) = field.score(word, term, edits) {
                    let info = stream.value().clone();
                    add(&info, score)?;
                }
            }
            if let (2, Some(two)) = (field.distance(), dfa) {
                let crossed = CrossedAutomaton {
                    dfas: &self.crossed,
                };
                let mut stream = terms.search(crossed).into_stream()?;
                while stream.advance() {
                    let term = stream.key();
                    // What the first walk found is counted.
                    if matches!(two.eval(term), Distance::Exact(_)) {
                        continue;
                    }
                    if let Some(score) = field.score(word, term, Some(2)) {
                        let info = stream.value().clone();
                        add(&info, score)?;
                    }
                }
            }
        }
        Ok(found)
    }
}

/// The documents a word matched so far, each with the rank of its best score: a list
/// while they are few (sorted at the end), a byte per document of the segment once they
/// are many (a short word two edits off matches a tenth of a million names' records,
/// and sorting those cost more than the walk).
struct Found {
    scores: Vec<Score>,
    max_doc: DocId,
    /// `(doc << 8) | rank`.
    list: Vec<u64>,
    dense: Option<Vec<u8>>,
}

impl Found {
    fn new(scores: Vec<Score>, max_doc: DocId) -> Self {
        Found {
            scores,
            max_doc,
            list: Vec::new(),
            dense: None,
        }
    }

    fn rank(&self, score: Score) -> u8 {
        let at = self.scores.partition_point(|s| *s < score);
        u8::try_from(at + 1).unwrap_or(u8::MAX)
    }

    /// Past this many entries a byte per document is cheaper than sorting them.
    fn dense_from(&self) -> usize {
        (self.max_doc as usize / 64).max(4096)
    }

    fn add(&mut self, docs: &[DocId], rank: u8) {
        if self.dense.is_none() && self.list.len() + docs.len() > self.dense_from() {
            let mut dense = vec![0u8; self.max_doc as usize];
            for entry in self.list.drain(..) {
                let (doc, rank) = ((entry >> 8) as usize, entry as u8);
                dense[doc] = dense[doc].max(rank);
            }
            self.dense = Some(dense);
        }
        match &mut self.dense {
            Some(dense) => {
                for &doc in docs {
                    if let Some(slot) = dense.get_mut(doc as usize) {
                        *slot = (*slot).max(rank);
                    }
                }
            }
            None => self.list.extend(
                docs.iter()
                    .map(|&doc| (u64::from(doc) << 8) | u64::from(rank)),
            ),
        }
    }

    fn into_scorer(self, boost: Score) -> WordScorer {
        let docs = match self.dense {
            Some(dense) => Docs::Dense(dense),
            None => {
                let mut list = self.list;
                list.sort_unstable();
                let mut out: Vec<(DocId, u8)> = Vec::with_capacity(list.len());
                for entry in list {
                    let (doc, rank) = ((entry >> 8) as DocId, entry as u8);
                    match out.last_mut() {
                        // Sorted, so a later entry of the same document ranks as high.
                        Some(last) if last.0 == doc => last.1 = rank,
                        _ => out.push((doc, rank)),
                    }
                }
                Docs::List(out)
            }
        };
        let mut scorer = WordScorer {
            docs,
            at: 0,
            scores: self.scores,
            boost,
        };
        if let Docs::Dense(dense) = &scorer.docs {
            scorer.at = next_set(dense, 0);
        }
        scorer
    }
}

/// The first index at or after `from` whose byte is not 0 (`bytes.len()` if none).
fn next_set(bytes: &[u8], from: usize) -> usize {
    let mut at = from;
    // Byte by byte to a multiple of eight, then eight at a time over the zeros.
    while at < bytes.len() && !at.is_multiple_of(8) {
        if bytes[at] != 0 {
            return at;
        }
        at += 1;
    }
    while at + 8 <= bytes.len() {
        let chunk = u64::from_le_bytes(bytes[at..at + 8].try_into().unwrap_or([0; 8]));
        if chunk != 0 {
            return at + (chunk.trailing_zeros() / 8) as usize;
        }
        at += 8;
    }
    while at < bytes.len() {
        if bytes[at] != 0 {
            return at;
        }
        at += 1;
    }
    bytes.len()
}

impl Weight for WordWeight {
    fn scorer(&self, reader: &SegmentReader, boost: Score) -> ::tantivy::Result<Box<dyn Scorer>> {
        Ok(Box::new(self.matches(reader)?.into_scorer(boost)))
    }

    fn explain(&self, reader: &SegmentReader, doc: DocId) -> ::tantivy::Result<Explanation> {
        let mut scorer = self.scorer(reader, 1.0)?;
        if scorer.seek(doc) != doc {
            return Err(TantivyError::InvalidArgument(format!(
                "document {doc} does not match"
            )));
        }
        Ok(Explanation::new("WordQuery", scorer.score()))
    }
}

enum Docs {
    /// Documents in order, with their ranks.
    List(Vec<(DocId, u8)>),
    /// A rank per document of the segment.
    Dense(Vec<u8>),
}

/// The documents of a [`Found`] in order, each scored its best.
struct WordScorer {
    docs: Docs,
    /// The position in the list, or the document (dense).
    at: usize,
    scores: Vec<Score>,
    boost: Score,
}

impl WordScorer {
    fn rank(&self) -> u8 {
        match &self.docs {
            Docs::List(list) => list.get(self.at).map_or(0, |&(_, rank)| rank),
            Docs::Dense(dense) => dense.get(self.at).copied().unwrap_or(0),
        }
    }
}

impl DocSet for WordScorer {
    fn advance(&mut self) -> DocId {
        match &self.docs {
            Docs::List(list) => self.at = (self.at + 1).min(list.len()),
            Docs::Dense(dense) => self.at = next_set(dense, (self.at + 1).min(dense.len())),
        }
        self.doc()
    }

    fn seek(&mut self, target: DocId) -> DocId {
        if self.doc() >= target {
            return self.doc();
        }
        match &self.docs {
            Docs::List(list) => {
                self.at += list[self.at..].partition_point(|&(doc, _)| doc < target);
            }
            Docs::Dense(dense) => {
                self.at = next_set(dense, (target as usize).min(dense.len()));
            }
        }
        self.doc()
    }

    fn doc(&self) -> DocId {
        match &self.docs {
            Docs::List(list) => list.get(self.at).map_or(TERMINATED, |&(doc, _)| doc),
            Docs::Dense(dense) if self.at < dense.len() => self.at as DocId,
            Docs::Dense(_) => TERMINATED,
        }
    }

    fn size_hint(&self) -> u32 {
        match &self.docs {
            Docs::List(list) => list.len() as u32,
            // An estimate, as the trait allows: a tenth of the segment.
            Docs::Dense(dense) => (dense.len() / 10) as u32,
        }
    }
}

impl Scorer for WordScorer {
    fn score(&mut self) -> Score {
        match self.rank() {
            0 => 0.0,
            rank => self.scores[usize::from(rank) - 1] * self.boost,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_term_scores_its_best_kind_of_match() {
        let field = FieldMatch {
            exact: Some(4.0),
            prefix: Some(3.0),
            one_edit: Some(2.0),
            two_edits: Some(1.0),
            ..FieldMatch::new(Field::from_field_id(0))
        };
        let word = b"smith";
        assert_eq!(field.score(word, b"smith", Some(0)), Some(4.0));
        // Both a longer word and one edit away: the prefix counts.
        assert_eq!(field.score(word, b"smiths", Some(1)), Some(3.0));
        assert_eq!(field.score(word, b"smithson", None), Some(3.0));
        assert_eq!(field.score(word, b"smiht", Some(1)), Some(2.0));
        assert_eq!(field.score(word, b"smyht", Some(2)), Some(1.0));
        assert_eq!(field.score(word, b"jones", None), None);
        let exact_only = FieldMatch {
            exact: Some(4.0),
            ..FieldMatch::new(Field::from_field_id(0))
        };
        assert_eq!(exact_only.score(word, b"smiths", Some(1)), None);
        assert_eq!(exact_only.score(word, b"smith", Some(0)), Some(4.0));
    }

    /// The distance read from the two-edit automaton agrees with the one-edit automaton
    /// tantivy's fuzzy query used, for words near and far, swaps included.
    #[test]
    fn the_two_edit_automaton_tells_one_edit_from_two_as_the_one_edit_one_does() {
        let words = [
            "smith", "smiht", "smth", "smitth", "snith", "msith", "smithe", "jones", "kong",
            "kxnb", "ada", "adaa", "da", "zoe", "hamilton", "hmlton", "", "s", "ab", "ba",
        ];
        for query in words {
            let one = builder(1).build_dfa(query);
            let two = builder(2).build_dfa(query);
            for term in words {
                let within_one = matches!(one.eval(term), Distance::Exact(_));
                let from_two = matches!(two.eval(term), Distance::Exact(0 | 1));
                assert_eq!(within_one, from_two, "{query} / {term}");
                let osa = strsim::osa_distance(query, term);
                assert_eq!(
                    matches!(two.eval(term), Distance::Exact(_)),
                    osa <= 2,
                    "{query} / {term}"
                );
            }
        }
    }

    /// Over every pair of short words from a small alphabet (so that swaps, omissions
    /// and extra letters meet), the two-edit automaton and the crossed walk together find
    /// exactly the words within two edits as [`crate::search::analysis::edits`] counts.
    #[test]
    fn the_crossed_walk_finds_what_two_edits_find_and_the_automaton_misses() {
        use tantivy_fst::Automaton as _;
        let mut words = vec![String::new()];
        for length in 1..=5u32 {
            for n in 0..3usize.pow(length) {
                let mut word = String::new();
                let mut rest = n;
                for _ in 0..length {
                    word.push(b"abc"[rest % 3] as char);
                    rest /= 3;
                }
                words.push(word);
            }
        }
        let mut crossed_only = 0;
        for query in words.iter().filter(|w| w.len() >= 2) {
            let two = builder(2).build_dfa(query);
            let dfas: Vec<DFA> = crossed_variants(query)
                .iter()
                .map(|v| builder(1).build_dfa(v))
                .collect();
            let crossed = CrossedAutomaton { dfas: &dfas };
            for term in &words {
                let mut state = crossed.start();
                for &b in term.as_bytes() {
                    state = crossed.accept(&state, b);
                }
                let by_automaton = matches!(two.eval(term), Distance::Exact(_));
                let by_crossed = crossed.is_match(&state);
                let within = crate::search::analysis::edits(query, term) <= 2;
                assert_eq!(by_automaton || by_crossed, within, "{query} / {term}");
                crossed_only += usize::from(within && !by_automaton);
            }
        }
        assert!(crossed_only > 0, "the alphabet made no crossed pair");
    }

    #[test]
    fn the_automaton_walks_prefixes_and_near_words_together() {
        use tantivy_fst::Automaton as _;
        let dfa = builder(1).build_dfa("smith");
        let both = WordAutomaton {
            dfa: Some(&dfa),
            prefix: Some(b"smith"),
            redundant_after: &[],
        };
        let run = |a: &WordAutomaton<'_>, term: &str| {
            let mut state = a.start();
            for &b in term.as_bytes() {
                if !a.can_match(&state) {
                    return false;
                }
                state = a.accept(&state, b);
            }
            a.is_match(&state)
        };
        for (term, matched) in [
            ("smith", true),
            ("smithsonian", true),
            ("smiht", true),
            ("smit", true),
            ("smyth", true),
            ("smi", false),
            ("jones", false),
            ("smythe", false),
        ] {
            assert_eq!(run(&both, term), matched, "{term}");
        }
        let prefix_only = WordAutomaton {
            dfa: None,
            prefix: Some(b"smith"),
            redundant_after: &[],
        };
        assert!(run(&prefix_only, "smithson"));
        assert!(!run(&prefix_only, "smiht"));
        // In an email field: the pieces and longer words, not the addresses and local
        // parts that hold the word as a piece of their own.
        let email = WordAutomaton {
            dfa: Some(&dfa),
            prefix: Some(b"smith"),
            redundant_after: EMAIL_SEPARATORS,
        };
        for (term, matched) in [
            ("smith", true),
            ("smiths", true),
            ("smithson", true),
            ("smith-jones", true),
            ("smithson.jo", false),
            ("smithson@example.com", false),
            ("smith.jo", false),
            ("smith_jo12", false),
            ("smith+crm@example.com", false),
            ("smith@example.com", false),
            ("smiht", true),
        ] {
            assert_eq!(run(&email, term), matched, "{term}");
        }
    }

    fn scorer_of(found: &[(DocId, Score)], max_doc: DocId) -> WordScorer {
        let mut ranks: Vec<Score> = found.iter().map(|&(_, s)| s).collect();
        ranks.sort_by(Score::total_cmp);
        ranks.dedup();
        let mut acc = Found::new(ranks, max_doc);
        for &(doc, score) in found {
            let rank = acc.rank(score);
            acc.add(&[doc], rank);
        }
        acc.into_scorer(1.0)
    }

    /// A few documents are a sorted list, many a byte per document: both give every
    /// document once, in order, with its best score.
    #[test]
    fn found_documents_come_out_in_order_with_their_best_score() {
        let found = [
            (9, 1.0),
            (2, 1.0),
            (5, 4.0),
            (2, 3.0),
            (9, 0.5),
            (70_000, 2.0),
        ];
        let mut scorer = scorer_of(&found, 100_000);
        assert!(matches!(scorer.docs, Docs::List(_)));
        let mut seen = Vec::new();
        while scorer.doc() != TERMINATED {
            seen.push((scorer.doc(), scorer.score()));
            scorer.advance();
        }
        assert_eq!(seen, vec![(2, 3.0), (5, 4.0), (9, 1.0), (70_000, 2.0)]);
        // Past the list's limit: dense, and the same answers.
        let many: Vec<(DocId, Score)> = (0..10_000u32)
            .map(|i| (i * 7 % 20_000, if i % 3 == 0 { 2.0 } else { 1.0 }))
            .collect();
        let mut dense = scorer_of(&many, 20_000);
        assert!(matches!(dense.docs, Docs::Dense(_)));
        let mut expected: Vec<(DocId, Score)> = Vec::new();
        let mut sorted = many.clone();
        sorted.sort_by_key(|&(doc, _)| doc);
        for (doc, score) in sorted {
            match expected.last_mut() {
                Some(last) if last.0 == doc => last.1 = last.1.max(score),
                _ => expected.push((doc, score)),
            }
        }
        let mut seen = Vec::new();
        while dense.doc() != TERMINATED {
            seen.push((dense.doc(), dense.score()));
            dense.advance();
        }
        assert_eq!(seen, expected);
    }

    #[test]
    fn the_scorer_seeks_and_scores() {
        for max_doc in [20, 1_000_000] {
            let mut scorer = scorer_of(&[(2, 1.0), (5, 4.0), (9, 2.0)], max_doc);
            assert_eq!(scorer.doc(), 2);
            assert_eq!(scorer.seek(3), 5);
            assert_eq!(scorer.score(), 4.0);
            assert_eq!(scorer.seek(5), 5);
            assert_eq!(scorer.advance(), 9);
            assert_eq!(scorer.seek(10), TERMINATED);
            assert_eq!(scorer.advance(), TERMINATED);
            assert_eq!(scorer.score(), 0.0);
        }
        let mut ranks = vec![0u8; 19];
        ranks[2] = 1;
        ranks[17] = 2;
        let mut dense = WordScorer {
            at: next_set(&ranks, 0),
            docs: Docs::Dense(ranks),
            scores: vec![1.0, 4.0],
            boost: 1.0,
        };
        assert_eq!(dense.doc(), 2);
        assert_eq!(dense.advance(), 17);
        assert_eq!(dense.score(), 4.0);
        assert_eq!(dense.seek(18), TERMINATED);
    }

    #[test]
    fn next_set_finds_the_next_non_zero_byte() {
        let mut bytes = vec![0u8; 40];
        assert_eq!(next_set(&bytes, 0), 40);
        bytes[3] = 1;
        bytes[8] = 2;
        bytes[39] = 1;
        assert_eq!(next_set(&bytes, 0), 3);
        assert_eq!(next_set(&bytes, 4), 8);
        assert_eq!(next_set(&bytes, 9), 39);
        assert_eq!(next_set(&bytes, 40), 40);
    }
}
