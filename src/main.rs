//! matrix-appliance: a Matrix homeserver in one process. See docs/ARCHITECTURE.md for the map.

mod api;
mod app;
mod cli;
mod config;
mod error;
mod logging;
mod services;
mod storage;
mod web;

fn main() -> std::process::ExitCode {
    cli::run()
}
