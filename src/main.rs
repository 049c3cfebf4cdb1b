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
    return_large_allocations_to_the_system();
    cli::run()
}

/// glibc raises its mmap threshold after a large block is freed, so later large blocks (argon2's
/// 19 MiB per password hash) come from per-thread arenas that keep the memory for good: a burst
/// of logins left the process at hundreds of MiB. A fixed threshold keeps every block over 256
/// KiB in its own mapping, returned to the system when freed.
fn return_large_allocations_to_the_system() {
    // SAFETY: mallopt only changes allocator tuning; called before any other thread exists.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 256 * 1024);
    }
}
