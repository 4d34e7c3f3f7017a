//! Synthetic lead stream: throughput and memory of the streaming deduper.
//!
//! cargo run --release --example synthetic -- [N ...]   (default 10000 100000 1000000)
//! cargo run --release --example synthetic -- --csv DIR [N ...]
//!     writes DIR/synthetic-N.csv instead, for `leadgate dedup --mapping synthetic`
//!
//! ~20% of rows are variants of an earlier lead (typos, swapped name order,
//! other phone formats, plus-addresses, dropped fields). Deterministic.

use matching::{Decision, Deduper, MatchConfig, Matcher, Record};
use std::time::Instant;

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
    "edward",
    "deborah",
    "oliver",
    "amelia",
    "harry",
    "isla",
    "jack",
    "ava",
    "noah",
    "mia",
    "leo",
    "ivy",
    "arthur",
    "freya",
    "muhammad",
    "priya",
    "rahul",
    "aarav",
    "ananya",
    "wei",
    "li",
    "chen",
    "yuki",
    "haruto",
    "sofia",
    "lucas",
    "mateo",
    "lucia",
    "jose",
    "maria",
    "ahmed",
    "fatima",
    "olga",
    "ivan",
    "chloe",
    "zoe",
    "liam",
    "ella",
    "ethan",
];
const LAST: &[&str] = &[
    "smith",
    "johnson",
    "williams",
    "brown",
    "jones",
    "garcia",
    "miller",
    "davis",
    "rodriguez",
    "martinez",
    "hernandez",
    "lopez",
    "gonzalez",
    "wilson",
    "anderson",
    "thomas",
    "taylor",
    "moore",
    "jackson",
    "martin",
    "lee",
    "perez",
    "thompson",
    "white",
    "harris",
    "sanchez",
    "clark",
    "ramirez",
    "lewis",
    "robinson",
    "walker",
    "young",
    "allen",
    "king",
    "wright",
    "scott",
    "torres",
    "nguyen",
    "hill",
    "flores",
    "green",
    "adams",
    "nelson",
    "baker",
    "hall",
    "rivera",
    "campbell",
    "mitchell",
    "carter",
    "roberts",
    "patel",
    "shah",
    "singh",
    "kumar",
    "sharma",
    "wang",
    "zhang",
    "liu",
    "tanaka",
    "suzuki",
    "sato",
    "muller",
    "schmidt",
    "schneider",
    "fischer",
    "weber",
    "rossi",
    "russo",
    "ferrari",
    "dubois",
    "moreau",
    "laurent",
    "kowalski",
    "nowak",
    "ivanov",
    "petrov",
    "obrien",
    "murphy",
    "kelly",
    "walsh",
    "byrne",
    "oconnor",
    "evans",
    "hughes",
    "edwards",
    "morgan",
    "price",
    "wood",
    "turner",
    "cooper",
];
// Composed surnames widen the name space to something like a real CRM.
const SUR_HEAD: &[&str] = &[
    "ash", "black", "brad", "brook", "cald", "cart", "chester", "craw", "dal", "den", "east",
    "fair", "farn", "green", "hal", "hart", "hay", "hol", "king", "lang", "mar", "mid", "north",
    "oak", "pem", "ral", "red", "sand", "stan", "thorn", "wal", "west", "whit", "wood", "york",
];
const SUR_TAIL: &[&str] = &[
    "by", "ford", "ley", "ton", "well", "worth", "wood", "field", "ham", "more", "stone", "bury",
    "dale", "bridge", "combe", "hurst", "land", "low", "wick", "shaw",
];
const COMPANY: &[&str] = &[
    "acme",
    "globex",
    "initech",
    "umbrella",
    "hooli",
    "stark",
    "wayne",
    "wonka",
    "tyrell",
    "cyberdyne",
    "soylent",
    "vandelay",
    "monarch",
    "aperture",
    "oscorp",
    "nakatomi",
    "dunder",
];
const COMPANY2: &[&str] = &[
    "solutions",
    "systems",
    "labs",
    "holdings",
    "logistics",
    "media",
    "foods",
];
const LEGAL: &[&str] = &["Ltd", "Limited", "Inc.", "LLC", "plc", "GmbH", ""];
const STREET: &[&str] = &[
    "high", "station", "church", "park", "victoria", "green", "manor", "kings", "queens", "mill",
    "london", "school", "north", "grange", "albert", "york", "chapel", "west", "main",
];
const STYPE: &[&str] = &["street", "road", "lane", "avenue", "close", "drive"];
const CITY: &[&str] = &[
    "london",
    "manchester",
    "birmingham",
    "leeds",
    "glasgow",
    "liverpool",
    "bristol",
    "sheffield",
    "edinburgh",
    "cardiff",
    "leicester",
    "coventry",
    "nottingham",
    "newcastle",
    "brighton",
    "hull",
    "plymouth",
    "derby",
    "southampton",
    "reading",
    "york",
    "oxford",
];
const DOMAIN: &[&str] = &[
    "gmail.com",
    "outlook.com",
    "yahoo.co.uk",
    "hotmail.com",
    "icloud.com",
];

/// SplitMix64: tiny, seeded, good enough for test data.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn pick<'a>(&mut self, xs: &[&'a str]) -> &'a str {
        xs[self.below(xs.len())]
    }
    fn chance(&mut self, pct: usize) -> bool {
        self.below(100) < pct
    }
}

fn base(rng: &mut Rng, i: usize) -> Record {
    let composed;
    let l = if rng.chance(50) {
        rng.pick(LAST)
    } else {
        composed = format!("{}{}", rng.pick(SUR_HEAD), rng.pick(SUR_TAIL));
        composed.as_str()
    };
    let f = rng.pick(FIRST);
    let mobile = format!("07{:03} {:06}", 100 + rng.below(900), rng.below(1_000_000));
    let letters = b"ABCDEFGHJKLMNPRSTUWY";
    let pc = format!(
        "{}{}{} {}{}{}",
        letters[rng.below(20)] as char,
        letters[rng.below(20)] as char,
        1 + rng.below(20),
        rng.below(10),
        letters[rng.below(20)] as char,
        letters[rng.below(20)] as char
    );
    Record {
        id: format!("L{i}"),
        first_name: Some(title(f)),
        last_name: Some(title(l)),
        email: Some(format!("{f}.{l}{}@{}", rng.below(1000), rng.pick(DOMAIN))),
        phone: rng.chance(85).then_some(mobile),
        company: rng.chance(70).then(|| {
            format!(
                "{} {} {}",
                title(rng.pick(COMPANY)),
                title(rng.pick(COMPANY2)),
                rng.pick(LEGAL)
            )
        }),
        street: Some(format!(
            "{} {} {}",
            1 + rng.below(200),
            title(rng.pick(STREET)),
            title(rng.pick(STYPE))
        )),
        city: Some(title(rng.pick(CITY))),
        postcode: Some(pc),
        country: Some(
            if rng.chance(50) {
                "UK"
            } else {
                "United Kingdom"
            }
            .into(),
        ),
        dob: rng.chance(40).then(|| {
            format!(
                "{:02}/{:02}/{}",
                1 + rng.below(28),
                1 + rng.below(12),
                1940 + rng.below(60)
            )
        }),
        ..Default::default()
    }
}

fn title(s: &str) -> String {
    let mut c = s.chars();
    c.next()
        .map_or_else(String::new, |f| f.to_uppercase().chain(c).collect())
}

fn typo(rng: &mut Rng, s: &str) -> String {
    let mut b: Vec<char> = s.chars().collect();
    if b.len() > 3 {
        let i = 1 + rng.below(b.len() - 2);
        match rng.below(3) {
            0 => b.swap(i, i + 1),
            1 => {
                b.remove(i);
            }
            _ => b[i] = (b'a' + rng.below(26) as u8) as char,
        }
    }
    b.into_iter().collect()
}

fn variant(rng: &mut Rng, src: &Record, i: usize) -> Record {
    let mut r = src.clone();
    r.id = format!("L{i}");
    for _ in 0..1 + rng.below(2) {
        match rng.below(6) {
            0 => r.first_name = r.first_name.as_deref().map(|s| typo(rng, s)),
            1 => std::mem::swap(&mut r.first_name, &mut r.last_name),
            2 => {
                r.phone = r.phone.as_deref().map(|p| {
                    let d: String = p.chars().filter(char::is_ascii_digit).collect();
                    match rng.below(3) {
                        0 => format!("+44 {}", &d[1..]),
                        1 => d[1..].to_string(),
                        _ => format!("({}) {}", &d[..5], &d[5..]),
                    }
                })
            }
            3 => {
                r.email = r.email.as_deref().map(|e| match e.split_once('@') {
                    Some((l, d)) => format!("{}+news@{}", l.to_uppercase(), d),
                    None => e.to_string(),
                })
            }
            4 => r.last_name = r.last_name.as_deref().map(|s| typo(rng, s)),
            _ => r.email = None,
        }
    }
    r
}

/// User+system CPU seconds of this process (robust to a shared machine).
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the ")" of the command name; utime and stime are 14 and 15.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<f64> = rest
        .split_whitespace()
        .filter_map(|x| x.parse().ok())
        .collect();
    // rest starts at field 3 (state, non-numeric, skipped by the parse filter).
    f.get(10)
        .zip(f.get(11))
        .map_or(0.0, |(u, s)| (u + s) / 100.0)
}

fn peak_rss_kb() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = s.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

fn generate(n: usize) -> Vec<Record> {
    let mut rng = Rng(42 + n as u64);
    let mut rows: Vec<Record> = Vec::with_capacity(n);
    for i in 0..n {
        if i > 10 && rng.chance(20) {
            let src = rows[rng.below(i)].clone();
            rows.push(variant(&mut rng, &src, i));
        } else {
            rows.push(base(&mut rng, i));
        }
    }
    rows
}

fn write_csv(dir: &str, n: usize) -> Result<(), Box<dyn std::error::Error>> {
    use std::io::Write;
    let path = format!("{dir}/synthetic-{n}.csv");
    let mut out = std::io::BufWriter::new(std::fs::File::create(&path)?);
    writeln!(
        out,
        "id,first_name,last_name,email,phone,company,street,city,postcode,country,dob"
    )?;
    let quote = |v: &Option<String>| {
        v.as_deref()
            .map(|s| format!("\"{}\"", s.replace('"', "\"\"")))
            .unwrap_or_default()
    };
    for r in generate(n) {
        writeln!(
            out,
            "{},{},{},{},{},{},{},{},{},{},{}",
            r.id,
            quote(&r.first_name),
            quote(&r.last_name),
            quote(&r.email),
            quote(&r.phone),
            quote(&r.company),
            quote(&r.street),
            quote(&r.city),
            quote(&r.postcode),
            quote(&r.country),
            quote(&r.dob)
        )?;
    }
    println!("wrote {path}");
    Ok(())
}

fn run(n: usize) -> Result<(), Box<dyn std::error::Error>> {
    let rows = generate(n);
    let mut d = Deduper::new(Matcher::new(MatchConfig::default())?);
    let (mut merges, mut reviews) = (0usize, 0usize);
    // Normalisation (phone parsing dominates) is timed apart from dedup.
    let start = Instant::now();
    let prepared: Vec<_> = rows.iter().map(|r| d.matcher().prepare(r)).collect();
    let prep_secs = start.elapsed().as_secs_f64();
    drop(rows);
    let (start, cpu0) = (Instant::now(), cpu_seconds());
    for p in prepared {
        match d.add_prepared(p) {
            Decision::Merge { .. } => merges += 1,
            Decision::Review { .. } => reviews += 1,
            Decision::New { .. } => {}
        }
    }
    let secs = start.elapsed().as_secs_f64();
    let cpu = cpu_seconds() - cpu0;
    println!(
        "n={n:>8} normalise_seconds={prep_secs:>6.2} dedup_seconds={secs:>7.2} dedup_cpu_seconds={cpu:>7.2} rows_per_s={:>9.0} merges={merges} reviews={reviews} clusters>1={} comparisons/row={:.1} index_visits/row={:.1} peak_rss_mb={}",
        n as f64 / secs,
        d.clusters().len(),
        d.comparisons() as f64 / n as f64,
        d.visited() as f64 / n as f64,
        peak_rss_kb().map_or("?".into(), |k| format!("{:.0}", k as f64 / 1024.0))
    );
    Ok(())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let csv_dir = args
        .iter()
        .position(|a| a == "--csv")
        .and_then(|i| args.get(i + 1))
        .cloned();
    let sizes: Vec<usize> = args.iter().filter_map(|a| a.parse().ok()).collect();
    let sizes = if sizes.is_empty() {
        vec![10_000, 100_000, 1_000_000]
    } else {
        sizes
    };
    for n in sizes {
        match &csv_dir {
            Some(dir) => write_csv(dir, n)?,
            None => run(n)?,
        }
    }
    Ok(())
}
