//! Independent cases on several threads, reported in their own order.
//!
//! Each case runs on its own pipeline, so the result of a case does not depend on which thread
//! ran it or on what ran beside it: figures are the same on one core or many.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc;

/// Threads to use: the cores this process may run on, at most 4 (the pipelines are memory-hungry
/// and the eval machines are small).
pub(crate) fn workers() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get().min(4))
}

/// Runs `f` on every item on up to `workers` threads and returns the results in item order.
/// `done` sees each result in item order as soon as it and every earlier one are ready. The first
/// error stops the remaining items and is returned.
pub(crate) fn map_ordered<T, R, E>(
    items: &[T],
    workers: usize,
    f: impl Fn(&T) -> Result<R, E> + Sync,
    mut done: impl FnMut(&R),
) -> Result<Vec<R>, E>
where
    T: Sync,
    R: Send,
    E: Send,
{
    let next = AtomicUsize::new(0);
    let stop = AtomicBool::new(false);
    let mut slots: Vec<Option<R>> = std::iter::repeat_with(|| None).take(items.len()).collect();
    let mut emitted = 0;
    let mut failure = None;
    std::thread::scope(|s| {
        let (tx, rx) = mpsc::channel::<(usize, Result<R, E>)>();
        for _ in 0..workers.clamp(1, items.len().max(1)) {
            let tx = tx.clone();
            let (next, stop, f) = (&next, &stop, &f);
            s.spawn(move || loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= items.len() || stop.load(Ordering::Relaxed) {
                    break;
                }
                if tx.send((i, f(&items[i]))).is_err() {
                    break;
                }
            });
        }
        drop(tx);
        for (i, result) in rx {
            match result {
                Ok(r) => slots[i] = Some(r),
                Err(e) => {
                    stop.store(true, Ordering::Relaxed);
                    failure.get_or_insert(e);
                }
            }
            while let Some(Some(r)) = slots.get(emitted) {
                done(r);
                emitted += 1;
            }
        }
    });
    if let Some(e) = failure {
        return Err(e);
    }
    Ok(slots.into_iter().flatten().collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn results_come_back_and_are_reported_in_item_order() {
        let items: Vec<u64> = (0..50).collect();
        let mut seen = Vec::new();
        let out = map_ordered(
            &items,
            4,
            |&i| {
                // Later items finish first.
                std::thread::sleep(std::time::Duration::from_micros((50 - i) * 50));
                Ok::<_, ()>(i * 2)
            },
            |&r| seen.push(r),
        )
        .unwrap();
        let expected: Vec<u64> = (0..50).map(|i| i * 2).collect();
        assert_eq!(out, expected);
        assert_eq!(seen, expected);
    }

    #[test]
    fn an_error_is_returned() {
        let items = [1, 2, 3];
        let out = map_ordered(
            &items,
            2,
            |&i| if i == 2 { Err("two") } else { Ok(i) },
            |_| {},
        );
        assert_eq!(out, Err("two"));
    }
}
