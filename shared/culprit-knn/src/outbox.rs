//! Where k-NN detectors leave the points of closed windows for the caller to write.

use culprit_store::PointEntry;
use std::sync::{Arc, Mutex, PoisonError};

/// Finished points, shared between the detectors that fill it and the stage that empties it.
/// Filled once per closed window, so the lock is rare.
#[derive(Debug, Clone, Default)]
pub struct PointOutbox(Arc<Mutex<Vec<PointEntry>>>);

impl PointOutbox {
    pub fn new() -> PointOutbox {
        PointOutbox::default()
    }

    /// Every point left so far, oldest window first.
    pub fn take(&self) -> Vec<PointEntry> {
        std::mem::take(&mut *self.lock())
    }

    /// Points waiting.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub(crate) fn extend(&self, entries: Vec<PointEntry>) {
        if !entries.is_empty() {
            self.lock().extend(entries);
        }
    }

    // A panic while holding the lock leaves a valid Vec behind.
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<PointEntry>> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}
