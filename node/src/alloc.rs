//! The process allocator: the system allocator, except that very large
//! requests are served by `mmap(MAP_NORESERVE)`.
//!
//! Why: the `kafka-protocol` decoders reserve `Vec::with_capacity(n)` for an
//! array count `n` read from the wire before checking that the bytes for `n`
//! elements exist. A 20-byte request can ask for 150 GB; the system
//! allocator refuses and Rust aborts the whole broker. Reserved-but-untouched
//! `MAP_NORESERVE` memory costs only address space, so the decoder goes on,
//! runs out of input, fails with an error, and the mapping is released. The
//! memory actually touched stays bounded by the request size (itself bounded
//! by `socket.request.max.bytes`) times the size of a decoded element.

use std::alloc::{GlobalAlloc, Layout, System};

/// Requests at least this large go to `mmap`.
const HUGE: usize = 1 << 30;
const PAGE: usize = 4096;

pub struct BrokerAlloc;

fn huge(layout: &Layout) -> bool {
    layout.size() >= HUGE && layout.align() <= PAGE
}

unsafe fn map(size: usize) -> *mut u8 {
    // SAFETY: an anonymous private mapping; no file, no fixed address.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            size,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
            -1,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        std::ptr::null_mut()
    } else {
        p as *mut u8
    }
}

// SAFETY: every pointer handed out is either from `System` (and returned to
// it) or from `mmap` with the layout's size (and unmapped with that size);
// `huge` decides which, from the layout alone, consistently.
unsafe impl GlobalAlloc for BrokerAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if huge(&layout) {
            unsafe { map(layout.size()) }
        } else {
            unsafe { System.alloc(layout) }
        }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if huge(&layout) {
            // Fresh anonymous pages are zero.
            unsafe { map(layout.size()) }
        } else {
            unsafe { System.alloc_zeroed(layout) }
        }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if huge(&layout) {
            unsafe { libc::munmap(ptr as *mut libc::c_void, layout.size()) };
        } else {
            unsafe { System.dealloc(ptr, layout) }
        }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: the caller guarantees `layout.align()` with `new_size` is valid.
        let new_layout = unsafe { Layout::from_size_align_unchecked(new_size, layout.align()) };
        if !huge(&layout) && !huge(&new_layout) {
            return unsafe { System.realloc(ptr, layout, new_size) };
        }
        let new = unsafe { self.alloc(new_layout) };
        if !new.is_null() {
            unsafe {
                std::ptr::copy_nonoverlapping(ptr, new, layout.size().min(new_size));
                self.dealloc(ptr, layout);
            }
        }
        new
    }
}

#[global_allocator]
static GLOBAL: BrokerAlloc = BrokerAlloc;

#[cfg(test)]
mod tests {
    #[test]
    fn a_huge_reservation_does_not_abort() {
        // 64 GiB of capacity, never touched: must not fail or abort.
        let mut v: Vec<u64> = Vec::with_capacity(8 << 30);
        v.push(7);
        assert_eq!(v[0], 7);
        assert!(v.capacity() >= 8 << 30);
    }
}
