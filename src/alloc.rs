//! The process's allocator: mimalloc (under load glibc's took a fifth of the CPU, much of it
//! waiting on its arena locks), able to count the bytes the program holds while asked to.
//!
//! The count is what `creditgate bench --hold-memory` divides by the holds taken: bytes the
//! program keeps, exactly, where the growth of resident memory would also count the pages an
//! allocator keeps or reuses. Off, it costs one relaxed load per call.

use std::alloc::{GlobalAlloc, Layout};
use std::sync::atomic::{AtomicBool, AtomicIsize, Ordering};

use mimalloc::MiMalloc;

static COUNTING: AtomicBool = AtomicBool::new(false);
static LIVE: AtomicIsize = AtomicIsize::new(0);
/// Whether this allocator counted anything: it is the process's.
static COUNTED: AtomicBool = AtomicBool::new(false);

/// Install with `#[global_allocator]`; see the module documentation.
pub struct Allocator;

fn count(bytes: isize) {
    if COUNTING.load(Ordering::Relaxed) {
        LIVE.fetch_add(bytes, Ordering::Relaxed);
        COUNTED.store(true, Ordering::Relaxed);
    }
}

// SAFETY: every call is passed on unchanged to mimalloc, which upholds GlobalAlloc's contract;
// the count only reads the layouts.
unsafe impl GlobalAlloc for Allocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: as the caller promised for `layout`.
        let pointer = unsafe { MiMalloc.alloc(layout) };
        if !pointer.is_null() {
            count(layout.size() as isize);
        }
        pointer
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: as the caller promised for `layout`.
        let pointer = unsafe { MiMalloc.alloc_zeroed(layout) };
        if !pointer.is_null() {
            count(layout.size() as isize);
        }
        pointer
    }

    unsafe fn dealloc(&self, pointer: *mut u8, layout: Layout) {
        // SAFETY: `pointer` came from this allocator with `layout`, as the caller promised.
        unsafe { MiMalloc.dealloc(pointer, layout) };
        count(-(layout.size() as isize));
    }

    unsafe fn realloc(&self, pointer: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: as the caller promised for `pointer`, `layout` and `new_size`.
        let moved = unsafe { MiMalloc.realloc(pointer, layout, new_size) };
        if !moved.is_null() {
            count(new_size as isize - layout.size() as isize);
        }
        moved
    }
}

/// Bytes allocated and not freed since [`HeapCount::start`], while it lives. One at a time.
pub struct HeapCount(());

impl HeapCount {
    /// Starts counting; `None` when [`Allocator`] is not the process's allocator (the count
    /// would stay at nothing).
    pub fn start() -> Option<HeapCount> {
        LIVE.store(0, Ordering::Relaxed);
        COUNTING.store(true, Ordering::Relaxed);
        let count = HeapCount(());
        drop(std::hint::black_box(vec![0u8; 64]));
        COUNTED.load(Ordering::Relaxed).then_some(count)
    }

    pub fn bytes(&self) -> i64 {
        LIVE.load(Ordering::Relaxed) as i64
    }
}

impl Drop for HeapCount {
    fn drop(&mut self) {
        COUNTING.store(false, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nothing_is_counted_where_another_allocator_is_the_process_s() {
        // The tests run on the system allocator: a count would stay at nothing, so there is none.
        assert!(HeapCount::start().is_none());
        assert!(!COUNTING.load(Ordering::Relaxed), "stopped again");
    }
}
