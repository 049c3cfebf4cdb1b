//! matrix-appliance: a Matrix homeserver in one process. See docs/ARCHITECTURE.md for the map.

mod acme;
mod allocator;
mod api;
mod app;
mod cli;
mod config;
mod error;
mod logging;
mod net;
mod services;
mod setup;
mod shutdown;
mod storage;
mod systemd;
mod turn;
mod web;

fn main() -> std::process::ExitCode {
    allocator::tune();
    cli::run()
}
