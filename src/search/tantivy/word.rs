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
    /// Bytes that, right after the query word, end a term the prefix need not find: it
    /// finds the same record through a shorter term as well (see [`EMAIL_SEPARATORS`]).
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
/// (split at `.`, `_`, `-`, `+`), its domain and the domain's name (`analysis::email_terms`).
/// A word (letters and digits) followed in a term by one of these bytes is a piece or the
/// domain's name of that same address, indexed on its own: "jacob" is a term of every
/// "jacob.smith@…", "jacob_smith12@…" and "jacob@…". So the prefix walk need not list
/// those addresses and local parts, thousands for a common first name, which was most of a
/// name query's time; every record they belong to is found through the word itself, scored
/// as an exact match, higher than a prefix. (A value without an `@` or with two, or with
/// `_` or `+` in its domain, is not split that way: its record is no longer found through
/// this field by a word its value starts with, followed by one of these bytes.)
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
        Ok(Box::new(WordWeight {
            word: self.word.clone(),
            fields: self.fields.clone(),
            one_edit: dfa(1),
            two_edits: dfa(2),
        }))
    }
}

struct WordWeight {
    word: String,
    fields: Vec<FieldMatch>,
    one_edit: Option<Arc<DFA>>,
    two_edits: Option<Arc<DFA>>,
}

/// Terms within a Levenshtein automaton's distance, or starting with a prefix (and not
/// going on with one of `redundant_after`).
struct WordAutomaton<'a> {
    dfa: Option<&'a DFA>,
    prefix: Option<&'a [u8]>,
    redundant_after: &'a [u8],
}

/// The term left the prefix.
const PREFIX_OFF: u32 = u32::MAX;

impl tantivy_fst::Automaton for WordAutomaton<'_> {
    /// The automaton's state, and how many bytes of the prefix were read (its length plus
    /// one once past its end, [`PREFIX_OFF`] once the term left it).
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
        within
            || self
                .prefix
                .is_some_and(|p| prefix != PREFIX_OFF && prefix as usize >= p.len())
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
            Some(p) if prefix as usize > p.len() => prefix,
            Some(p) if prefix as usize == p.len() => {
                if self.redundant_after.contains(&byte) {
                    PREFIX_OFF
                } else {
                    prefix + 1
                }
            }
            Some(p) if p[prefix as usize] == byte => prefix + 1,
            _ => PREFIX_OFF,
        };
        (dfa, prefix)
    }
}

impl WordWeight {
    /// Every matching document with its best score, in document order.
    fn matches(&self, reader: &SegmentReader) -> ::tantivy::Result<Vec<(DocId, Score)>> {
        let word = self.word.as_bytes();
        // Document and score in one sortable key: a positive float's bits order as it does.
        let mut found: Vec<u64> = Vec::new();
        for field in &self.fields {
            let inverted = reader.inverted_index(field.field)?;
            let terms = inverted.terms();
            let mut add = |term_info: &::tantivy::postings::TermInfo,
                           score: Score|
             -> ::tantivy::Result<()> {
                let mut postings = inverted
                    .read_block_postings_from_terminfo(term_info, IndexRecordOption::Basic)?;
                let bits = u64::from(score.max(0.0).to_bits());
                loop {
                    let docs = postings.docs();
                    if docs.is_empty() {
                        break;
                    }
                    found.extend(docs.iter().map(|&doc| (u64::from(doc) << 32) | bits));
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
        }
        found.sort_unstable();
        let mut out: Vec<(DocId, Score)> = Vec::with_capacity(found.len());
        for key in found {
            let doc = (key >> 32) as DocId;
            let score = Score::from_bits(key as u32);
            match out.last_mut() {
                // Sorted, so a later entry of the same document scores at least as much.
                Some(last) if last.0 == doc => last.1 = score,
                _ => out.push((doc, score)),
            }
        }
        Ok(out)
    }
}

impl Weight for WordWeight {
    fn scorer(&self, reader: &SegmentReader, boost: Score) -> ::tantivy::Result<Box<dyn Scorer>> {
        Ok(Box::new(ListScorer {
            docs: self.matches(reader)?,
            at: 0,
            boost,
        }))
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

/// Documents in order, each with its score.
struct ListScorer {
    docs: Vec<(DocId, Score)>,
    at: usize,
    boost: Score,
}

impl DocSet for ListScorer {
    fn advance(&mut self) -> DocId {
        self.at = (self.at + 1).min(self.docs.len());
        self.doc()
    }

    fn seek(&mut self, target: DocId) -> DocId {
        if self.doc() >= target {
            return self.doc();
        }
        let rest = &self.docs[self.at..];
        self.at += rest.partition_point(|&(doc, _)| doc < target);
        self.doc()
    }

    fn doc(&self) -> DocId {
        self.docs.get(self.at).map_or(TERMINATED, |&(doc, _)| doc)
    }

    fn size_hint(&self) -> u32 {
        self.docs.len() as u32
    }
}

impl Scorer for ListScorer {
    fn score(&mut self) -> Score {
        self.docs.get(self.at).map_or(0.0, |&(_, s)| s * self.boost)
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
                let osa = crate::search::analysis::edits(query, term);
                assert_eq!(
                    matches!(two.eval(term), Distance::Exact(_)),
                    osa <= 2,
                    "{query} / {term}"
                );
            }
        }
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
            ("smithson.jo", true),
            ("smithson@example.com", true),
            ("smith.jo", false),
            ("smith_jo12", false),
            ("smith+crm@example.com", false),
            ("smith@example.com", false),
            ("smiht", true),
        ] {
            assert_eq!(run(&email, term), matched, "{term}");
        }
    }

    #[test]
    fn the_list_scorer_seeks_and_scores() {
        let mut scorer = ListScorer {
            docs: vec![(2, 1.0), (5, 4.0), (9, 2.0)],
            at: 0,
            boost: 1.0,
        };
        assert_eq!(scorer.doc(), 2);
        assert_eq!(scorer.seek(3), 5);
        assert_eq!(scorer.score(), 4.0);
        assert_eq!(scorer.seek(5), 5);
        assert_eq!(scorer.advance(), 9);
        assert_eq!(scorer.seek(10), TERMINATED);
        assert_eq!(scorer.advance(), TERMINATED);
        assert_eq!(scorer.score(), 0.0);
    }
}
