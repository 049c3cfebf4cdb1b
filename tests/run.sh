#!/usr/bin/env bash
# Runs every test, as CI does: prepares the Python virtualenv for the third-party client tests
# (<target dir>/test-venv with tests/nio/requirements.txt; reused while those stay the same),
# then `cargo test --all-targets`, and as root also the tests that need root. Arguments, when
# given, go to cargo test instead, e.g. `bash tests/run.sh --test nio_client -- --nocapture`.
set -euo pipefail
cd "$(dirname "$0")/.."

if [[ -z "${APPLIANCE_TEST_PYTHON:-}" ]]; then
    echo "--- Python test venv: ${CARGO_TARGET_DIR:-target}/test-venv"
    APPLIANCE_TEST_PYTHON="$(python3 tests/nio/venv.py "${CARGO_TARGET_DIR:-target}/test-venv")"
fi
export APPLIANCE_TEST_PYTHON
echo "--- Python for client tests: $APPLIANCE_TEST_PYTHON"

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
