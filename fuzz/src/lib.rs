//! What every fuzz target shares: an allocator that treats one oversized
//! allocation as a crash.
//!
//! The targets run without AddressSanitizer (`scripts/fuzz` passes
//! `--sanitizer none`): the workspace forbids `unsafe` code, so what a
//! sanitizer adds is slower runs, and libFuzzer's `-malloc_limit_mb` needs a
//! sanitizer's allocator hooks. This allocator does that job instead: an
//! allocation above [`MAX_ALLOCATION_BYTES`] aborts the process, which
//! libFuzzer reports as a crash and saves the input. Inputs are at most a
//! few KiB (`-max_len`), so an allocation that large means a decoder sized
//! a buffer from a length prefix instead of from the bytes present.
//! `-rss_limit_mb` bounds the total.

use std::alloc::{GlobalAlloc, Layout, System};
use std::io::Write;

/// The largest single allocation a target may make, in bytes.
pub const MAX_ALLOCATION_BYTES: usize = 16 << 20;

/// [`System`], refusing (by aborting) any allocation above
/// [`MAX_ALLOCATION_BYTES`].
#[derive(Debug)]
pub struct BoundedAllocator;

/// Aborts when `size` is above the limit.
fn check(size: usize) {
    if size <= MAX_ALLOCATION_BYTES {
        return;
    }
    // Writing a static message to unbuffered stderr does not allocate.
    let _ = std::io::stderr().write_all(b"fuzz: an allocation above MAX_ALLOCATION_BYTES\n");
    std::process::abort();
}

// SAFETY: every call goes to `System` with the caller's arguments unchanged;
// the only addition is a size check that aborts before allocating.
unsafe impl GlobalAlloc for BoundedAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        check(layout.size());
        // SAFETY: forwarded as given.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        check(layout.size());
        // SAFETY: forwarded as given.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded as given.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        check(new_size);
        // SAFETY: forwarded as given.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: BoundedAllocator = BoundedAllocator;

/// Runs one target body on libFuzzer's input.
pub fn run(target: fn(&[u8]) -> bool, data: &[u8]) {
    target(data);
}
