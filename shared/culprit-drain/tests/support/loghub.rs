//! Reads the loghub-2k samples (`<S>_2k.log_structured.csv`) for accuracy tests and benchmarks.

use std::collections::HashMap;
use std::path::PathBuf;

/// One structured line: the message text and its ground-truth event id.
pub struct LabelledLine {
    pub content: String,
    pub event_id: String,
}

/// `$RCA_DATASETS/loghub-2k`, defaulting to the shared datasets folder beside the repository.
pub fn loghub_dir() -> PathBuf {
    let root = std::env::var_os("RCA_DATASETS")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/datasets")
        });
    root.join("loghub-2k")
}

/// The labelled lines of one system (`HDFS`, `BGL`, `OpenStack`), or `None` when absent.
pub fn load(system: &str) -> Option<Vec<LabelledLine>> {
    let path = loghub_dir()
        .join(system)
        .join(format!("{system}_2k.log_structured.csv"));
    let text = std::fs::read_to_string(path).ok()?;
    let mut records = parse_csv(&text).into_iter();
    let header = records.next()?;
    let column = |name: &str| header.iter().position(|h| h == name);
    let (content, event_id) = (column("Content")?, column("EventId")?);
    Some(
        records
            .filter_map(|mut r| {
                let event_id = std::mem::take(r.get_mut(event_id)?);
                let content = std::mem::take(r.get_mut(content)?);
                Some(LabelledLine { content, event_id })
            })
            .collect(),
    )
}

/// RFC 4180 CSV: quoted fields may hold commas, newlines and doubled quotes.
pub fn parse_csv(text: &str) -> Vec<Vec<String>> {
    let mut records = Vec::new();
    let mut record = Vec::new();
    let mut field = String::new();
    let mut in_quotes = false;
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match (in_quotes, c) {
            (true, '"') if chars.peek() == Some(&'"') => {
                chars.next();
                field.push('"');
            }
            (true, '"') => in_quotes = false,
            (true, c) => field.push(c),
            (false, '"') => in_quotes = true,
            (false, ',') => record.push(std::mem::take(&mut field)),
            (false, '\r') => {}
            (false, '\n') => {
                record.push(std::mem::take(&mut field));
                records.push(std::mem::take(&mut record));
            }
            (false, c) => field.push(c),
        }
    }
    if !field.is_empty() || !record.is_empty() {
        record.push(field);
        records.push(record);
    }
    records
}

/// The loghub grouping accuracy: the fraction of lines whose predicted group holds exactly the
/// lines of their ground-truth group.
pub fn grouping_accuracy<P: Eq + std::hash::Hash>(predicted: &[P], truth: &[&str]) -> f64 {
    if predicted.is_empty() || predicted.len() != truth.len() {
        return 0.0;
    }
    let mut truth_sizes: HashMap<&str, usize> = HashMap::new();
    for t in truth {
        *truth_sizes.entry(t).or_default() += 1;
    }
    let mut predicted_groups: HashMap<&P, Vec<usize>> = HashMap::new();
    for (line, p) in predicted.iter().enumerate() {
        predicted_groups.entry(p).or_default().push(line);
    }
    let correct: usize = predicted_groups
        .values()
        .filter(|lines| {
            let first = truth[lines[0]];
            lines.iter().all(|&l| truth[l] == first) && truth_sizes[first] == lines.len()
        })
        .map(Vec::len)
        .sum();
    correct as f64 / predicted.len() as f64
}
