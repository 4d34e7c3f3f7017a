//! Times given queries against a kept index: each query run `--runs` times, the fastest
//! kept (a shared machine's load only ever adds time).
use std::time::Instant;

use leadgate::search::tantivy::TantivyIndex;
use leadgate::search::{SearchQuery, SearchScope};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let dir = std::path::PathBuf::from(&args[0]);
    let runs: usize = args.get(1).map_or(Ok(5), |r| r.parse())?;
    let index = TantivyIndex::open(&dir)?;
    let scope = SearchScope::everything();
    let mut total = 0.0;
    for line in std::io::stdin().lines() {
        let line = line?;
        let q = line.split('\t').nth(1).unwrap_or(&line).to_owned();
        let mut query = SearchQuery::new(q.clone());
        query.limit = 10;
        let mut best = f64::INFINITY;
        let mut hits = 0;
        for _ in 0..runs {
            let started = Instant::now();
            hits = index.search_now(&query, &scope)?.len();
            best = best.min(started.elapsed().as_secs_f64() * 1000.0);
        }
        total += best;
        println!("{best:.2}\t{hits}\t{q}");
    }
    eprintln!("total {total:.1} ms");
    Ok(())
}
