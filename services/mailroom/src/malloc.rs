//! How this process asks glibc's allocator to give large blocks back.
//!
//! Each Argon2id hash (a sign-in, a password set) allocates one 19 MiB block. glibc raises
//! its mmap threshold to the size of the largest block freed (up to 32 MiB), so after the
//! first hash every later one comes from a per-thread heap and stays there when freed: a
//! `serve all` under test traffic grew from 80 MiB to 860 MiB and kept rising, with the
//! live heap no larger than a fresh process's (`bench-soak` runs in the issue 26 note). A
//! fixed threshold stops that adjustment: the hash blocks are mapped and unmapped, and the
//! resident size comes back after load (1.0× fresh measured with 128 KiB). The threshold is
//! 4 MiB, not glibc's starting 128 KiB, so IMAP literals, Kafka fetch buffers and large
//! lookup answers still come from the heap instead of costing an mmap and page faults each.

/// Fix glibc's mmap threshold at 4 MiB (below the 19 MiB hash block). Does nothing on
/// other C libraries. Call once, before any thread is started.
pub fn return_large_blocks_to_the_system() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        /// glibc's `M_MMAP_THRESHOLD` parameter number (malloc.h).
        const M_MMAP_THRESHOLD: std::os::raw::c_int = -3;
        extern "C" {
            fn mallopt(
                param: std::os::raw::c_int,
                value: std::os::raw::c_int,
            ) -> std::os::raw::c_int;
        }
        // SAFETY: mallopt only changes allocator parameters; it is called before any thread
        // of this process starts, with a parameter and value glibc documents.
        let changed = unsafe { mallopt(M_MMAP_THRESHOLD, 4 * 1024 * 1024) };
        debug_assert_eq!(changed, 1, "glibc accepts M_MMAP_THRESHOLD");
    }
}
