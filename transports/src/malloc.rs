//! Process-wide tuning of glibc's `malloc` for relaying (opt-in, for binaries).
//!
//! yamux allocates a fresh buffer for every frame it sends or receives (up to 256 KiB each) and
//! frees it once the frame is consumed. With glibc's defaults, freeing such a buffer makes the
//! arena hand the memory above a 128 KiB free top back to the kernel (`madvise`), so the next
//! frame's buffer is faulted in again page by page. In the relay benchmark that cost about one
//! page fault per 4 KiB moved, roughly a quarter of the clients' CPU
//! (`docs/benchmarks.md`, "Throughput: page faults").
//!
//! [`tune`] raises the trim threshold to [`TRIM_THRESHOLD`] (16 MiB of free memory an arena may
//! keep) and fixes the mmap threshold at [`MMAP_THRESHOLD`] (1 MiB: frame buffers come from the
//! heap, never from a fresh `mmap`). Memory is still returned to the kernel, just not after
//! every frame. This changes the whole process, so the library never calls it: binaries do
//! (`skytower` calls it first thing), and so does the relay benchmark, which also measures
//! without it (`SKYTOWER_BENCH_MALLOC=default`).
//!
//! On other C libraries (musl, macOS, Windows) [`tune`] does nothing and returns `false`.
//!
//! ```
//! // In a binary's `main`, before the runtime starts:
//! let tuned = skytower_transports::malloc::tune();
//! # let _ = tuned;
//! ```

/// Free memory (bytes) a glibc arena keeps at its top before returning it to the kernel.
pub const TRIM_THRESHOLD: usize = 16 << 20;
/// Allocations of at least this many bytes get their own `mmap`; smaller ones use the heap.
pub const MMAP_THRESHOLD: usize = 1 << 20;

/// Applies [`TRIM_THRESHOLD`] and [`MMAP_THRESHOLD`] to glibc's allocator. Returns whether both
/// settings were accepted (always `false` off glibc). Call it once, early, from a binary.
pub fn tune() -> bool {
    imp::tune()
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
mod imp {
    use super::{MMAP_THRESHOLD, TRIM_THRESHOLD};

    pub(super) fn tune() -> bool {
        let set = |param: libc::c_int, value: usize| {
            let Ok(value) = libc::c_int::try_from(value) else {
                return false;
            };
            // SAFETY: mallopt only changes allocator parameters; it is thread-safe in glibc and
            // has no memory-safety preconditions. It returns 1 on success.
            unsafe { libc::mallopt(param, value) == 1 }
        };
        // Setting the mmap threshold explicitly also turns off glibc's dynamic adjustment of
        // both thresholds, so the trim threshold stays where we put it.
        let mmap = set(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD);
        let trim = set(libc::M_TRIM_THRESHOLD, TRIM_THRESHOLD);
        mmap && trim
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
mod imp {
    pub(super) fn tune() -> bool {
        false
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn tune_is_accepted_on_glibc_and_a_no_op_elsewhere() {
        let applied = super::tune();
        assert_eq!(applied, cfg!(all(target_os = "linux", target_env = "gnu")));
        // Idempotent.
        assert_eq!(super::tune(), applied);
    }
}
