//! Lines per second through `TemplateMiner::add` on the loghub HDFS sample, repeated.
//!
//! `cargo run -p culprit-drain --release --example throughput [repeats]`

#[allow(dead_code)] // the accuracy helpers are for the tests
#[path = "../tests/support/loghub.rs"]
mod loghub;

use std::time::Instant;

use culprit_drain::{DrainConfig, TemplateMiner};

fn main() {
    let repeats: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(200);
    for system in ["HDFS", "BGL", "OpenStack"] {
        let Some(lines) = loghub::load(system) else {
            println!(
                "skipping {system}: no dataset under {}",
                loghub::loghub_dir().display()
            );
            continue;
        };
        let mut miner = TemplateMiner::new(DrainConfig::default());
        let start = Instant::now();
        let mut param_total = 0usize;
        for _ in 0..repeats {
            for line in &lines {
                param_total += miner.add(&line.content).param_count;
            }
        }
        let elapsed = start.elapsed().as_secs_f64();
        let count = lines.len() * repeats;
        println!(
            "{system}: {count} lines in {elapsed:.3} s = {:.0} lines/s ({} clusters, {param_total} params)",
            count as f64 / elapsed,
            miner.cluster_count(),
        );
    }
}
