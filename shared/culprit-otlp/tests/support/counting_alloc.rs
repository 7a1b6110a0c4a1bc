//! A global allocator that counts, per thread, the bytes held and the most held at once: the
//! memory meter of the fuzz tests (`culprit_otlp::fuzzing::AllocMeter`). It lives in a test
//! file because a global allocator needs `unsafe`, which the library crates forbid; the
//! `culprit-nezha` fuzz test includes this file too.
#![allow(unsafe_code)]

use culprit_otlp::fuzzing::AllocMeter;
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

pub struct CountingAlloc;

thread_local! {
    static HELD: Cell<isize> = const { Cell::new(0) };
    static PEAK: Cell<isize> = const { Cell::new(0) };
    static BASE: Cell<isize> = const { Cell::new(0) };
}

fn add(bytes: isize) {
    // try_with: a thread being torn down still frees memory after its locals are gone.
    let _ = HELD.try_with(|held| {
        let now = held.get() + bytes;
        held.set(now);
        let _ = PEAK.try_with(|peak| peak.set(peak.get().max(now)));
    });
}

// SAFETY: every call is forwarded to the system allocator unchanged; the counters are
// thread-local cells with const initialisers, which neither allocate nor lock.
unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            add(layout.size() as isize);
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            add(layout.size() as isize);
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) };
        add(-(layout.size() as isize));
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            add(new_size as isize - layout.size() as isize);
        }
        p
    }
}

impl AllocMeter for CountingAlloc {
    fn start(&self) {
        let now = HELD.with(Cell::get);
        BASE.with(|b| b.set(now));
        PEAK.with(|p| p.set(now));
    }

    fn peak(&self) -> usize {
        (PEAK.with(Cell::get) - BASE.with(Cell::get)).max(0) as usize
    }
}
