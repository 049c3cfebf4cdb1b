#!/usr/bin/env bash
# Runs every test, as CI does: prepares the Python virtualenv for the third-party client tests
# (<target dir>/test-venv with tests/nio/requirements.txt; reused while those stay the same),
# then `cargo test --all-targets`. Arguments, when given, go to cargo test instead of
# --all-targets, e.g. `bash tests/run.sh --test nio_client -- --nocapture`.
set -euo pipefail
cd "$(dirname "$0")/.."

if [[ -z "${APPLIANCE_TEST_PYTHON:-}" ]]; then
    echo "--- Python test venv: ${CARGO_TARGET_DIR:-target}/test-venv"
    APPLIANCE_TEST_PYTHON="$(python3 tests/nio/venv.py "${CARGO_TARGET_DIR:-target}/test-venv")"
fi
export APPLIANCE_TEST_PYTHON
echo "--- Python for client tests: $APPLIANCE_TEST_PYTHON"

if [[ $# -eq 0 ]]; then
    set -- --all-targets
fi
echo "--- cargo test $*"
exec cargo test "$@"
