//! Every integration test of the appliance, in ONE test binary (`autotests = false` and a single
//! `[[test]]` in Cargo.toml): each root file `tests/<name>.rs` is the module `<name>` here, with
//! its submodules in `tests/<name>/` as before. One binary compiles the harness
//! (`tests/common/`) and links tokio, reqwest, rustls and the rest once instead of once per file,
//! which is most of the build time of `cargo test --all-targets` and of clippy's.
//!
//! Run one file's tests with a filter on its module path:
//! `cargo test --test integration nio_client::` (or `bash tests/run.sh --test integration
//! nio_client::`); `-- --exact rooms::some_test` runs one test. A filter matches anywhere in the
//! path, so `e2ee::` also selects `federation::e2ee::`.
//!
//! Tests of different files now run at the same time (libtest's threads, one per CPU unless
//! `--test-threads` says otherwise), as tests of one file always did: a test may only use what
//! it made for itself (free ports, its own temp dirs, servers, CAs and child processes).
//! Process-wide state is shared: the `OnceLock`s of the venv interpreters and of the
//! matrix-js-sdk install are made once for the whole binary.
//!
//! Add tests to the existing files; a new file `tests/<name>.rs` needs a `mod <name>;` line
//! here (cargo no longer finds root test files by itself). Shared helpers are the crate-level
//! modules below; a file uses them with `use crate::common;`, not a `mod common;` of its own.

// The shared harness and helpers.
mod common;
mod extras;
mod front_door_support;
mod room_api;

// One module per former test binary.
mod accounts;
mod admin_cli;
mod config_cli;
mod devices_profile;
mod directory;
mod e2ee;
mod errors;
mod federation;
mod front_door;
mod front_door_acme;
mod hostile_events;
mod js_client;
mod logs;
mod media;
mod messages;
mod nio_client;
mod persistence;
mod presence_tags;
mod push_rules;
mod rate_limits;
mod registration;
mod relations_search;
mod room_upgrade;
mod rooms;
mod setup_browser;
mod setup_wizard;
mod shared_secret;
mod slow_clients;
mod smoke;
mod sync;
mod systemd_notify;
mod turn;
mod url_preview;
