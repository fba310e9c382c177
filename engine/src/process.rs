//! Process-wide settings that the broker and the benchmark share.

/// Keep freed memory in the process, for reuse. glibc gives large frees
/// back to the kernel (munmap above its dynamic mmap threshold, heap trim),
/// so new request and batch buffers kept landing on fresh pages that the
/// kernel must fault in and zero: on the benchmark VM that cost seconds of
/// stalls in the benchmark's producer, and 250-300 thousand page faults
/// per 12 s run in a broker that reads produce requests ahead
/// (docs/benchmarks.md, "Stalls, CPU steal and the broker's own latency"
/// and "Produce requests read while the last one is written"). Kept pages
/// are reused warm. Call before other threads start.
pub fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator parameters; the caller runs it
    // before any other thread exists.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 1 << 30);
    }
}
