//! Search benchmark: the embedded index with N synthetic leads (default 1,000,000).
//!
//! cargo run --release --example search_bench -- [N] [--queries Q] [--seed S] [--dir DIR]
//!     [--no-scopes] (skip the permission-scope table)
//!
//! SEARCH_BENCH_MISSES=1 prints each name query missed, its top five with their channel
//! costs, and why it was missed (cut from the candidates, ranked below, not found).
//! SEARCH_BENCH_DUMP=FILE writes every query's hits (ids, scores, highlights, in order) and
//! its time in ms to FILE, one query a line, so two builds' answers can be compared
//! (`diff <(cut -f1-3 A) <(cut -f1-3 B)`).
//!
//! Prints the build time, latency p50/p99 (one query at a time, limit 10, stored fields
//! and highlights included) for exact, one-typo and two-typo name queries, phone numbers
//! in the formats reps type and as fragments, email fragments; and recall@5 on queries
//! made by corrupting known records' names (one edit, two edits, swapped tokens, a dropped
//! letter). A query counts as a hit when one of the first five records has the target's
//! name: records with the same name cannot be told apart by a name query (the generator
//! gives ~1M leads ~60k distinct surnames, so common full names repeat); the strict
//! figure (the very record in the first five) is printed beside it.
//!
//! Deterministic: the same N and seed give the same records and queries. The default
//! seed is 4 (queries drawn with seed + 3); another seed draws other records and queries,
//! to check that ranking changes were not fitted to one draw.

use std::time::Instant;

use leadgate::domain::RecordKind;
use leadgate::search::tantivy::TantivyIndex;
use leadgate::search::{IndexBatch, SearchDoc, SearchQuery, SearchScope};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Map, Value, json};

const FIRST: &[&str] = &[
    "james",
    "mary",
    "john",
    "patricia",
    "robert",
    "jennifer",
    "michael",
    "linda",
    "william",
    "elizabeth",
    "david",
    "barbara",
    "richard",
    "susan",
    "joseph",
    "jessica",
    "thomas",
    "sarah",
    "charles",
    "karen",
    "christopher",
    "nancy",
    "daniel",
    "lisa",
    "matthew",
    "betty",
    "anthony",
    "margaret",
    "mark",
    "sandra",
    "donald",
    "ashley",
    "steven",
    "kimberly",
    "paul",
    "emily",
    "andrew",
    "donna",
    "joshua",
    "michelle",
    "kenneth",
    "dorothy",
    "kevin",
    "carol",
    "brian",
    "amanda",
    "george",
    "melissa",
    "timothy",
    "deborah",
    "ronald",
    "stephanie",
    "edward",
    "rebecca",
    "jason",
    "sharon",
    "jeffrey",
    "laura",
    "ryan",
    "cynthia",
    "jacob",
    "kathleen",
    "gary",
    "amy",
    "nicholas",
    "angela",
    "eric",
    "shirley",
    "jonathan",
    "anna",
    "stephen",
    "brenda",
    "larry",
    "pamela",
    "justin",
    "emma",
    "scott",
    "nicole",
    "brandon",
    "helen",
    "benjamin",
    "samantha",
    "samuel",
    "katherine",
    "gregory",
    "christine",
    "alexander",
    "debra",
    "frank",
    "rachel",
    "patrick",
    "carolyn",
    "raymond",
    "janet",
    "jack",
    "catherine",
    "dennis",
    "maria",
    "jerry",
    "heather",
    "tyler",
    "diane",
    "aaron",
    "ruth",
    "jose",
    "julie",
    "adam",
    "olivia",
    "nathan",
    "joyce",
    "henry",
    "virginia",
    "douglas",
    "victoria",
    "zachary",
    "kelly",
    "peter",
    "lauren",
    "kyle",
    "christina",
    "ethan",
    "joan",
    "walter",
    "evelyn",
    "noah",
    "judith",
    "jeremy",
    "megan",
    "christian",
    "andrea",
    "keith",
    "cheryl",
    "roger",
    "hannah",
    "terry",
    "jacqueline",
    "gerald",
    "martha",
    "harold",
    "gloria",
    "sean",
    "teresa",
    "austin",
    "ann",
    "carl",
    "sara",
    "arthur",
    "madison",
    "lawrence",
    "frances",
    "dylan",
    "kathryn",
    "jesse",
    "janice",
    "jordan",
    "jean",
    "bryan",
    "abigail",
    "billy",
    "alice",
    "joe",
    "julia",
    "bruce",
    "judy",
    "gabriel",
    "sophia",
    "logan",
    "grace",
    "albert",
    "denise",
    "willie",
    "amber",
    "alan",
    "doris",
    "juan",
    "marilyn",
    "wayne",
    "danielle",
    "elijah",
    "beverly",
    "randy",
    "isabella",
    "roy",
    "theresa",
    "vincent",
    "diana",
    "ralph",
    "natalie",
    "eugene",
    "brittany",
    "russell",
    "charlotte",
    "bobby",
    "marie",
    "mason",
    "kayla",
    "philip",
    "alexis",
    "louis",
    "lori",
    "aisha",
    "mohammed",
    "priya",
    "wei",
    "yuki",
    "olga",
    "sven",
    "ingrid",
    "pierre",
    "chloe",
    "luca",
];
const ONSET: &[&str] = &[
    "b", "br", "c", "ch", "cl", "d", "dr", "f", "fr", "g", "gr", "h", "j", "k", "l", "m", "n", "p",
    "pr", "r", "s", "sh", "st", "t", "th", "tr", "v", "w", "wh", "y", "z", "bl", "gl", "sl", "sm",
    "sp", "kr", "pl", "qu", "sc",
];
const VOWEL: &[&str] = &[
    "a", "e", "i", "o", "u", "ai", "ea", "ee", "oo", "ou", "ie", "y", "au", "oa",
];
const CODA: &[&str] = &[
    "n", "r", "l", "s", "t", "rd", "rt", "ll", "ng", "nd", "son", "ton", "ley", "man", "er", "ers",
    "ford", "well", "wood", "field", "berg", "stein", "ski", "ez", "ini", "etti", "sen", "quist",
    "ham", "by",
];
const DOMAINS: &[&str] = &[
    "gmail.com",
    "yahoo.com",
    "outlook.com",
    "hotmail.com",
    "example.com",
    "acme.io",
    "globex.co.uk",
    "initech.de",
    "umbrella.fr",
    "hooli.com",
];

struct Person {
    id: String,
    first: String,
    last: String,
    email: String,
    phone: String,
}

fn surname(rng: &mut StdRng) -> String {
    // Skewed: a few surnames are very common, most are rare, as in real registers.
    let skew = |rng: &mut StdRng, n: usize| {
        let x: f64 = rng.r#gen();
        ((x * x) * n as f64) as usize % n
    };
    let mut name = String::new();
    name.push_str(ONSET[skew(rng, ONSET.len())]);
    name.push_str(VOWEL[skew(rng, VOWEL.len())]);
    if rng.gen_bool(0.5) {
        name.push_str(ONSET[skew(rng, ONSET.len())]);
        name.push_str(VOWEL[skew(rng, VOWEL.len())]);
    }
    name.push_str(CODA[skew(rng, CODA.len())]);
    name
}

fn title_case(s: &str) -> String {
    let mut chars = s.chars();
    match chars.next() {
        Some(c) => c.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

fn person(rng: &mut StdRng, i: usize) -> Person {
    let first = FIRST[rng.gen_range(0..FIRST.len())].to_owned();
    let last = surname(rng);
    let domain = DOMAINS[rng.gen_range(0..DOMAINS.len())];
    let email = match rng.gen_range(0..3) {
        0 => format!("{first}.{last}@{domain}"),
        1 => format!("{}{last}{}@{domain}", &first[..1], i % 1000),
        _ => format!("{first}_{last}{}@{domain}", i % 97),
    };
    let phone = match rng.gen_range(0..3) {
        0 => format!("+44207{:07}", rng.gen_range(0..10_000_000)),
        1 => format!("+1415{:07}", rng.gen_range(2_000_000..10_000_000)),
        _ => format!("+4930{:08}", rng.gen_range(10_000_000..100_000_000)),
    };
    Person {
        id: format!("lead-{i:07}"),
        first,
        last,
        email,
        phone,
    }
}

fn doc(p: &Person, i: usize) -> SearchDoc {
    let mut fields = Map::new();
    fields.insert("first_name".into(), json!(title_case(&p.first)));
    fields.insert("last_name".into(), json!(title_case(&p.last)));
    fields.insert("email".into(), json!(p.email));
    fields.insert("phone".into(), json!(p.phone));
    fields.insert(
        "company".into(),
        json!(format!("{} Ltd", title_case(&p.last))),
    );
    fields.insert("status".into(), json!("new"));
    fields.insert("owner_id".into(), json!(format!("user-{}", i % 50)));
    let seconds = 1_700_000_000 + i as i64 * 7;
    let at = chrono::DateTime::from_timestamp(seconds, 0).unwrap_or_default();
    SearchDoc {
        kind: RecordKind::Lead,
        id: p.id.clone(),
        updated_at: at.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string(),
        fields,
    }
}

/// One random edit (substitute, insert, delete, swap neighbours) of a word.
fn edit(rng: &mut StdRng, word: &str) -> String {
    let mut chars: Vec<char> = word.chars().collect();
    let letter = (b'a' + rng.gen_range(0..26u8)) as char;
    let at = rng.gen_range(0..chars.len());
    match rng.gen_range(0..4) {
        0 => {
            let mut other = letter;
            while other == chars[at] {
                other = (b'a' + rng.gen_range(0..26u8)) as char;
            }
            chars[at] = other;
        }
        1 => chars.insert(at, letter),
        2 if chars.len() > 3 => {
            chars.remove(at);
        }
        _ if chars.len() > 1 => {
            let at = at.min(chars.len() - 2);
            chars.swap(at, at + 1);
        }
        _ => chars.push(letter),
    }
    chars.into_iter().collect()
}

/// `edits` edits spread over the name's two words (each lands on a random word).
fn corrupt(rng: &mut StdRng, p: &Person, edits: usize) -> String {
    corrupt_in(rng, p, edits, None)
}

/// `edits` edits, each on word `only` (0 first, 1 last) or on a random word.
fn corrupt_in(rng: &mut StdRng, p: &Person, edits: usize, only: Option<usize>) -> String {
    let mut words = [p.first.clone(), p.last.clone()];
    for e in 0..edits {
        let w = match only {
            Some(w) if w < 2 => w,
            Some(_) => e % 2,
            None => rng.gen_range(0..2),
        };
        let before = words[w].clone();
        loop {
            words[w] = edit(rng, &before);
            if words[w] != before {
                break;
            }
        }
    }
    format!("{} {}", words[0], words[1])
}

fn drop_letter(rng: &mut StdRng, p: &Person) -> String {
    let w = rng.gen_range(0..2);
    let mut words = [p.first.clone(), p.last.clone()];
    let mut chars: Vec<char> = words[w].chars().collect();
    let at = rng.gen_range(0..chars.len());
    chars.remove(at);
    words[w] = chars.into_iter().collect();
    format!("{} {}", words[0], words[1])
}

fn national(phone: &str) -> String {
    phonenumber::parse(None, phone)
        .map(|n| n.format().mode(phonenumber::Mode::National).to_string())
        .unwrap_or_else(|_| phone.to_owned())
}

fn international(phone: &str) -> String {
    phonenumber::parse(None, phone)
        .map(|n| {
            n.format()
                .mode(phonenumber::Mode::International)
                .to_string()
        })
        .unwrap_or_else(|_| phone.to_owned())
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

/// A name, its queries (target record, text), and whether recall is judged by name.
type QuerySet = (&'static str, Vec<(usize, String)>, bool);

struct Outcome {
    latencies: Vec<f64>,
    name_hits: usize,
    strict_hits: usize,
    /// The very record anywhere on the page (limit 10).
    page_hits: usize,
    found: usize,
    /// With SEARCH_BENCH_MISSES: misses by cause.
    miss_causes: std::collections::BTreeMap<&'static str, usize>,
}

fn hit_text(hit: &leadgate::search::SearchHit, field: &str) -> String {
    hit.fields
        .get(field)
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_lowercase()
}

/// The ranking's channel cost of a name for a query, on the name's words only (the
/// index's cost also sees the company and email, which repeat the surname).
fn bench_cost(query: &str, name: &str) -> f32 {
    use leadgate::search::analysis::{typo_cost, words};
    let name_words = words(name);
    words(query)
        .iter()
        .map(|q| {
            name_words
                .iter()
                .map(|w| typo_cost(q, w))
                .fold(3.0 * typo_cost::WRONG_LETTER, f32::min)
        })
        .sum()
}

fn run(
    index: &TantivyIndex,
    people: &[Person],
    queries: &[(usize, String)],
    scope: &SearchScope,
    mut dump: Option<(&str, &mut std::fs::File)>,
) -> Outcome {
    let mut outcome = Outcome {
        latencies: Vec::with_capacity(queries.len()),
        name_hits: 0,
        strict_hits: 0,
        page_hits: 0,
        found: 0,
        miss_causes: Default::default(),
    };
    for (target, q) in queries {
        let mut query = SearchQuery::new(q.clone());
        query.limit = 10;
        let started = Instant::now();
        let hits = index.search_now(&query, scope).unwrap_or_default();
        let millis = started.elapsed().as_secs_f64() * 1000.0;
        outcome.latencies.push(millis);
        if let Some((set, file)) = dump.as_mut() {
            use std::io::Write as _;
            let page: Vec<String> = hits
                .iter()
                .map(|h| format!("{}:{}:{:?}", h.id, h.score, h.highlights))
                .collect();
            let _ = writeln!(file, "{set}\t{q}\t{}\t{millis:.2}", page.join(" "));
        }
        let p = &people[*target];
        if !hits.is_empty() {
            outcome.found += 1;
        }
        let top5 = &hits[..hits.len().min(5)];
        if top5.iter().any(|h| h.id == p.id) {
            outcome.strict_hits += 1;
        }
        if hits.iter().any(|h| h.id == p.id) {
            outcome.page_hits += 1;
        }
        let same_name = |h: &leadgate::search::SearchHit| {
            hit_text(h, "first_name") == p.first && hit_text(h, "last_name") == p.last
        };
        if top5.iter().any(same_name) {
            outcome.name_hits += 1;
        } else if std::env::var_os("SEARCH_BENCH_MISSES").is_some() {
            // Why it was missed: the same query re-ranking 500 candidates (limit 100)
            // tells a name cut from the 50 candidates from one ranked below others, or
            // not found at all.
            let mut wide = SearchQuery::new(q.clone());
            wide.limit = 100;
            let wider = index.search_now(&wide, scope).unwrap_or_default();
            let rank = wider.iter().position(same_name);
            let cause = match rank {
                Some(r) if r < 5 => "cut from the candidates",
                Some(_) => "ranked below",
                None => "not found",
            };
            *outcome.miss_causes.entry(cause).or_default() += 1;
            let target_cost = bench_cost(q, &format!("{} {}", p.first, p.last));
            let shown: Vec<String> = top5
                .iter()
                .map(|h| {
                    let name =
                        format!("{} {}", hit_text(h, "first_name"), hit_text(h, "last_name"));
                    format!("{name} ({:.2})", bench_cost(q, &name))
                })
                .collect();
            eprintln!(
                "miss ({cause}, rank {}): {q:?} for {} {} ({target_cost:.2}): {shown:?}",
                rank.map_or("-".to_owned(), |r| (r + 1).to_string()),
                p.first,
                p.last
            );
        }
    }
    outcome
        .latencies
        .sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    outcome
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut n = 1_000_000usize;
    let mut queries_per_set = 1000usize;
    let mut dir: Option<std::path::PathBuf> = None;
    let mut seed = 4u64;
    let mut i = 0;
    while i < args.len() {
        match args[i].as_str() {
            "--queries" => {
                queries_per_set = args.get(i + 1).ok_or("--queries N")?.parse()?;
                i += 1;
            }
            "--seed" => {
                seed = args.get(i + 1).ok_or("--seed S")?.parse()?;
                i += 1;
            }
            "--dir" => {
                dir = Some(args.get(i + 1).ok_or("--dir DIR")?.into());
                i += 1;
            }
            "--no-merge" | "--no-scopes" => {}
            other => n = other.replace('_', "").parse()?,
        }
        i += 1;
    }
    let scratch = tempfile::tempdir()?;
    let dir = dir.unwrap_or_else(|| scratch.path().join("search"));
    let mut rng = StdRng::seed_from_u64(seed);
    let people: Vec<Person> = (0..n).map(|i| person(&mut rng, i)).collect();
    let distinct: std::collections::HashSet<&str> =
        people.iter().map(|p| p.last.as_str()).collect();
    println!(
        "{n} synthetic leads (seed {seed}), {} distinct surnames, {} first names",
        distinct.len(),
        FIRST.len()
    );

    let index = TantivyIndex::open(&dir)?;
    // `--dir` with an index of these very records (same N and seed) skips the build:
    // iterating on ranking does not change what is indexed.
    let reuse = index.documents() == n as u64;
    if reuse {
        println!("reusing the {n} documents in {}", dir.display());
    }
    let started = Instant::now();
    for (chunk_no, chunk) in people.chunks(100_000).enumerate().filter(|_| !reuse) {
        let docs = chunk
            .iter()
            .enumerate()
            .map(|(k, p)| doc(p, chunk_no * 100_000 + k))
            .collect();
        index.apply_now(IndexBatch {
            upserts: docs,
            deletes: Vec::new(),
            checkpoint: Some((chunk_no as i64 + 1) * 100_000),
        })?;
    }
    let build = started.elapsed().as_secs_f64();
    let bytes: u64 = std::fs::read_dir(&dir)?
        .filter_map(|e| e.ok()?.metadata().ok())
        .map(|m| m.len())
        .sum();
    if !reuse {
        println!(
            "build: {build:.1} s ({:.0} docs/s), index {:.0} MiB on disk, {} segments",
            n as f64 / build,
            bytes as f64 / 1048576.0,
            index.segments()
        );
    }
    if !reuse && !args.iter().any(|a| a == "--no-merge") {
        let started = Instant::now();
        index.compact()?;
        println!(
            "merged into {} segment(s) in {:.1} s",
            index.segments(),
            started.elapsed().as_secs_f64()
        );
    }

    let mut rng = StdRng::seed_from_u64(seed + 3);
    let targets: Vec<usize> = (0..queries_per_set).map(|_| rng.gen_range(0..n)).collect();
    let make = |rng: &mut StdRng, f: &dyn Fn(&mut StdRng, &Person) -> String| {
        targets
            .iter()
            .map(|&t| (t, f(rng, &people[t])))
            .collect::<Vec<_>>()
    };
    let sets: Vec<QuerySet> = vec![
        (
            "name, exact",
            make(&mut rng, &|_, p| format!("{} {}", p.first, p.last)),
            true,
        ),
        (
            "name, 1 edit",
            make(&mut rng, &|r, p| corrupt(r, p, 1)),
            true,
        ),
        (
            "name, 2 edits",
            make(&mut rng, &|r, p| corrupt(r, p, 2)),
            true,
        ),
        (
            "name, 2 edits, one in each word",
            make(&mut rng, &|r, p| corrupt_in(r, p, 2, Some(2))),
            true,
        ),
        (
            "name, 2 edits in the surname (5+ letters)",
            targets
                .iter()
                .filter(|&&t| people[t].last.chars().count() >= 5)
                .map(|&t| (t, corrupt_in(&mut rng, &people[t], 2, Some(1))))
                .collect(),
            true,
        ),
        (
            "name, 2 edits in the surname (3-4 letters)",
            targets
                .iter()
                .filter(|&&t| people[t].last.chars().count() < 5)
                .map(|&t| (t, corrupt_in(&mut rng, &people[t], 2, Some(1))))
                .collect(),
            true,
        ),
        (
            "name, swapped tokens",
            make(&mut rng, &|_, p| format!("{} {}", p.last, p.first)),
            true,
        ),
        (
            "name, dropped letter",
            make(&mut rng, &|r, p| drop_letter(r, p)),
            true,
        ),
        (
            "phone, national or international format",
            make(&mut rng, &|r, p| {
                if r.gen_bool(0.5) {
                    national(&p.phone)
                } else {
                    international(&p.phone)
                }
            }),
            false,
        ),
        (
            "phone fragment (last 6-8 digits)",
            make(&mut rng, &|r, p| {
                let k = r.gen_range(6..=8);
                p.phone[p.phone.len() - k..].to_owned()
            }),
            false,
        ),
        (
            "email, local part",
            make(&mut rng, &|_, p| {
                p.email.split('@').next().unwrap_or_default().to_owned()
            }),
            false,
        ),
        (
            "email, typed prefix (first 60%)",
            make(&mut rng, &|_, p| {
                let cut = (p.email.len() * 6 / 10).max(3);
                p.email[..cut].to_owned()
            }),
            false,
        ),
    ];
    println!(
        "\n| query set ({queries_per_set} queries, limit 10) | p50 ms | p99 ms | max ms | found | recall@5 (same name) | recall@5 (that record) | that record in the 10 |"
    );
    println!("| --- | --- | --- | --- | --- | --- | --- | --- |");
    let mut dump = match std::env::var_os("SEARCH_BENCH_DUMP") {
        Some(path) => Some(std::fs::File::create(path)?),
        None => None,
    };
    for (name, queries, by_name) in &sets {
        let outcome = run(
            &index,
            &people,
            queries,
            &SearchScope::everything(),
            dump.as_mut().map(|f| (*name, f)),
        );
        let total = queries.len() as f64;
        let recall = if *by_name {
            format!("{:.3}", outcome.name_hits as f64 / total)
        } else {
            "—".to_owned()
        };
        println!(
            "| {name} | {:.2} | {:.2} | {:.2} | {:.3} | {recall} | {:.3} | {:.3} |",
            percentile(&outcome.latencies, 50.0),
            percentile(&outcome.latencies, 99.0),
            outcome.latencies.last().copied().unwrap_or_default(),
            outcome.found as f64 / total,
            outcome.strict_hits as f64 / total,
            outcome.page_hits as f64 / total,
        );
        if !outcome.miss_causes.is_empty() {
            eprintln!("misses of {name:?}: {:?}", outcome.miss_causes);
        }
    }
    // The cost of permission filtering: name queries for records each caller may see, as
    // an admin (no filter), a manager (20 of the 50 owners, a hidden field) and a rep (one
    // owner). A query for a record outside the scope finds nothing and pays for the
    // one-more-typo and any-word retries as well.
    if args.iter().any(|a| a == "--no-scopes") {
        return Ok(());
    }
    let hidden = vec![(leadgate::domain::RecordKind::Lead, "company".to_owned())];
    let owners = |k: usize| Some((0..k).map(|i| format!("user-{i}")).collect::<Vec<_>>());
    let scopes = [
        ("admin: no filter", 50, SearchScope::everything()),
        (
            "manager: 20 owners, company hidden",
            20,
            SearchScope {
                kinds: None,
                owner_ids: owners(20),
                hidden_fields: hidden.clone(),
            },
        ),
        (
            "rep: 1 owner, company hidden",
            1,
            SearchScope {
                kinds: None,
                owner_ids: owners(1),
                hidden_fields: hidden,
            },
        ),
    ];
    println!("\n| permission scope | query set (records in scope) | p50 ms | p99 ms | recall@5 |");
    println!("| --- | --- | --- | --- | --- |");
    for (label, owner_count, scope) in &scopes {
        let mut rng = StdRng::seed_from_u64(seed + 7);
        // Record i is owned by user-(i % 50).
        let in_scope: Vec<usize> = (0..queries_per_set)
            .map(|_| rng.gen_range(0..n / 50) * 50 + rng.gen_range(0..*owner_count))
            .filter(|&t| t < n)
            .collect();
        let exact: Vec<(usize, String)> = in_scope
            .iter()
            .map(|&t| (t, format!("{} {}", people[t].first, people[t].last)))
            .collect();
        let one_edit: Vec<(usize, String)> = in_scope
            .iter()
            .map(|&t| (t, corrupt(&mut rng, &people[t], 1)))
            .collect();
        for (name, queries) in [("name, exact", &exact), ("name, 1 edit", &one_edit)] {
            let set = format!("{label}: {name}");
            let outcome = run(
                &index,
                &people,
                queries,
                scope,
                dump.as_mut().map(|f| (set.as_str(), f)),
            );
            println!(
                "| {label} | {name} | {:.2} | {:.2} | {:.3} |",
                percentile(&outcome.latencies, 50.0),
                percentile(&outcome.latencies, 99.0),
                outcome.name_hits as f64 / queries.len() as f64,
            );
        }
    }
    Ok(())
}
