#!/usr/bin/env bash
# Runs every test, as CI does: prepares the Python virtualenvs of the tests that run third-party
# Python programs (<target dir>/test-venv with tests/nio/requirements.txt for the matrix-nio
# clients, <target dir>/synapse-venv with tests/federation/requirements.txt for Synapse,
# <target dir>/bridge-venv with tests/bridges/requirements.txt for the mautrix-telegram bridge;
# each reused while its requirements stay the same), then `cargo test --all-targets`, as root also
# the tests that need root, and last the matrix-rust-sdk tests (tests/element_x, a crate of its
# own). Arguments, when given, go to cargo test instead, e.g.
# `bash tests/run.sh --test integration nio_client:: -- --nocapture` (every integration test is in
# the one binary `integration`; the filter is the module path, i.e. the file name).
set -euo pipefail
cd "$(dirname "$0")/.."

venvs="${CARGO_TARGET_DIR:-target}"
if [[ -z "${APPLIANCE_TEST_PYTHON:-}" ]]; then
    echo "--- Python test venv: $venvs/test-venv"
    APPLIANCE_TEST_PYTHON="$(python3 tests/venv.py "$venvs/test-venv" \
        tests/nio/requirements.txt nio)"
fi
export APPLIANCE_TEST_PYTHON
echo "--- Python for client tests: $APPLIANCE_TEST_PYTHON"
if [[ -z "${APPLIANCE_TEST_SYNAPSE_PYTHON:-}" ]]; then
    echo "--- Synapse venv: $venvs/synapse-venv"
    APPLIANCE_TEST_SYNAPSE_PYTHON="$(python3 tests/venv.py "$venvs/synapse-venv" \
        tests/federation/requirements.txt synapse)"
fi
export APPLIANCE_TEST_SYNAPSE_PYTHON
echo "--- Python with Synapse for the federation tests: $APPLIANCE_TEST_SYNAPSE_PYTHON"
if [[ -z "${APPLIANCE_TEST_BRIDGE_PYTHON:-}" ]]; then
    echo "--- bridge venv: $venvs/bridge-venv"
    APPLIANCE_TEST_BRIDGE_PYTHON="$(python3 tests/venv.py "$venvs/bridge-venv" \
        tests/bridges/requirements.txt mautrix_telegram)"
fi
export APPLIANCE_TEST_BRIDGE_PYTHON
echo "--- Python with mautrix-telegram for the bridge test: $APPLIANCE_TEST_BRIDGE_PYTHON"

if [[ $# -gt 0 ]]; then
    echo "--- cargo test $*"
    exec cargo test "$@"
fi
echo "--- cargo test --all-targets"
cargo test --all-targets
# Tests marked #[ignore] need root (e.g. a network namespace of their own to use an installed
# box's fixed ports); CI runs as root.
if [[ $(id -u) -eq 0 ]]; then
    echo "--- cargo test --all-targets -- --ignored (the tests that need root)"
    cargo test --all-targets -- --ignored
else
    echo "--- not root: the tests marked #[ignore] (they need root) did not run"
fi

# Element X's engine (matrix-sdk + matrix-sdk-ui) in a crate of its own, so that the appliance's
# build never compiles the SDK: it drives the binary built above.
target_dir="${CARGO_TARGET_DIR:-target}"
[[ "$target_dir" = /* ]] || target_dir="$PWD/$target_dir"
echo "--- cargo test --manifest-path tests/element_x/Cargo.toml (matrix-rust-sdk)"
APPLIANCE_BINARY="$target_dir/debug/appliance" \
    cargo test --manifest-path tests/element_x/Cargo.toml --target-dir "$target_dir/element_x"
