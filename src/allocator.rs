//! The glibc allocator, kept small: its tuning at start and a way to give freed memory back.

use std::time::Duration;

/// Two glibc allocator settings that keep the process small:
///
/// * glibc raises its mmap threshold after a large block is freed, so later large blocks
///   (argon2's 7 MiB per password hash) come from per-thread arenas that keep the memory for
///   good: a burst of logins left the process at hundreds of MiB. A fixed threshold keeps every
///   block over 256 KiB in its own mapping, returned to the system when freed.
/// * glibc gives each thread that allocates concurrently its own arena, up to eight per core,
///   and each arena keeps what was freed in it; the blocking pool that runs SQLite work grows to
///   dozens of threads under load, so the memory of a busy minute stayed (33 of 58 MiB of peak
///   RSS in mxbench's send phase). One arena per core keeps concurrency without that.
pub fn tune() {
    let arenas = std::thread::available_parallelism().map_or(2, |n| n.get());
    let arenas = libc::c_int::try_from(arenas).unwrap_or(2);
    // SAFETY: mallopt only changes allocator tuning; called before any other thread exists.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 256 * 1024);
        libc::mallopt(libc::M_ARENA_MAX, arenas);
    }
}

/// How often the server gives freed memory back while it runs.
pub const RELEASE_INTERVAL: Duration = Duration::from_secs(30);

/// Returns the free pages of every arena to the system (`malloc_trim`): memory a burst of
/// requests used and freed stays in glibc's arenas otherwise (about 2 MiB after a busy minute).
/// Called every [`RELEASE_INTERVAL`] and before a password hash's 7 MiB, so that the two do not
/// add up. Cheap (a walk over the free lists) and harmless: the pages come back on demand.
pub fn release_free_memory() {
    // SAFETY: malloc_trim only returns free pages to the kernel; it takes the arena locks itself.
    unsafe {
        libc::malloc_trim(0);
    }
}
