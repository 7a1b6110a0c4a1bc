//! Synchronous access to a [`VectorStore`] for code that is not async (detectors, the embedded
//! pipeline).
//!
//! The embedded store never awaits, so its futures finish on their first poll and cost nothing
//! more here. A remote store's futures need the tokio runtime its client lives on: inside a
//! multi-thread runtime the call blocks in place (`tokio::task::block_in_place`, so the runtime
//! moves its other tasks off this thread), outside any runtime it is driven on the runtime that
//! was current when the [`SyncStore`] was made. A current-thread runtime cannot be blocked
//! without stalling itself, so there the call fails with an error instead of hanging.

use crate::{Filter, Neighbour, PointEntry, StoreError, VectorStore};
use std::future::Future;
use std::pin::pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use tokio::runtime::{Handle, RuntimeFlavor};

/// A shared [`VectorStore`] with blocking methods.
#[derive(Clone)]
pub struct SyncStore {
    store: Arc<dyn VectorStore>,
    /// The multi-thread runtime current at construction, to drive remote calls made from
    /// threads outside any runtime.
    runtime: Option<Handle>,
}

impl SyncStore {
    pub fn new(store: Arc<dyn VectorStore>) -> SyncStore {
        let runtime = Handle::try_current()
            .ok()
            .filter(|h| h.runtime_flavor() == RuntimeFlavor::MultiThread);
        SyncStore { store, runtime }
    }

    /// The store behind this handle.
    pub fn store(&self) -> &Arc<dyn VectorStore> {
        &self.store
    }

    pub fn search(
        &self,
        query: &[f32],
        filter: &Filter,
        k: usize,
    ) -> Result<Vec<Neighbour>, StoreError> {
        self.wait(self.store.search(query, filter, k))
    }

    pub fn upsert_entries(&self, entries: Vec<PointEntry>) -> Result<(), StoreError> {
        self.wait(self.store.upsert_entries(entries))
    }

    pub fn count(&self, filter: &Filter) -> Result<u64, StoreError> {
        self.wait(self.store.count(filter))
    }

    pub fn flush(&self) -> Result<(), StoreError> {
        self.wait(self.store.flush())
    }

    /// Runs `future` to completion on this thread.
    pub fn wait<T>(
        &self,
        future: impl Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        let mut future = pin!(future);
        // The embedded store answers on the first poll: no runtime, no parking.
        if let Poll::Ready(out) = future
            .as_mut()
            .poll(&mut Context::from_waker(Waker::noop()))
        {
            return out;
        }
        match Handle::try_current() {
            Ok(h) if h.runtime_flavor() == RuntimeFlavor::MultiThread => {
                tokio::task::block_in_place(|| h.block_on(future))
            }
            Ok(_) => Err(StoreError::Backend {
                backend: "store",
                op: "blocking call",
                message: "a remote store cannot be called synchronously on a current-thread \
                          tokio runtime; use a multi-thread runtime"
                    .into(),
            }),
            Err(_) => match &self.runtime {
                Some(h) => h.block_on(future),
                None => pollster::block_on(future),
            },
        }
    }
}
