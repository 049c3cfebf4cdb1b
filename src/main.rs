//! matrix-appliance: a Matrix homeserver in one process. See docs/ARCHITECTURE.md for the map.

mod acme;
mod api;
mod app;
mod cli;
mod config;
mod error;
mod logging;
mod net;
mod services;
mod setup;
mod storage;
mod systemd;
mod turn;
mod web;

fn main() -> std::process::ExitCode {
    tune_the_allocator();
    cli::run()
}

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
fn tune_the_allocator() {
    let arenas = std::thread::available_parallelism().map_or(2, |n| n.get());
    let arenas = libc::c_int::try_from(arenas).unwrap_or(2);
    // SAFETY: mallopt only changes allocator tuning; called before any other thread exists.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 256 * 1024);
        libc::mallopt(libc::M_ARENA_MAX, arenas);
    }
}
