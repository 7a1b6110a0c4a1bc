//! Where the real datasets are, for the tests that read them.

use std::path::PathBuf;

/// The dataset `name` under `RCA_DATASETS` (default `../shared/datasets` beside the checkout)
/// when it holds `marker` (its label file), or None after printing why the test skips.
pub fn dataset(name: &str, marker: &str) -> Option<PathBuf> {
    let root = std::env::var_os("RCA_DATASETS")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/datasets")
        });
    let dir = root.join(name);
    if dir.join(marker).is_file() {
        Some(dir)
    } else {
        println!("skipped: dataset not found at {}", dir.display());
        None
    }
}
