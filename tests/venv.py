#!/usr/bin/env python3
"""Makes (or reuses) a virtualenv that tests run Python programs from, and prints its
interpreter's path on stdout. Progress goes to stderr.

Usage: python3 tests/venv.py VENV_DIR REQUIREMENTS MODULE

MODULE is imported to check that a finished venv still works. The venvs the tests use:
  <target dir>/test-venv     tests/nio/requirements.txt         nio      (tests/nio_client.rs)
  <target dir>/synapse-venv  tests/federation/requirements.txt  synapse  (tests/federation.rs)
  <target dir>/bridge-venv   tests/bridges/requirements.txt     mautrix_telegram
                                                                 (tests/nio_client.rs)
tests/run.sh makes them; the tests make them themselves when run without it.

The venv is rebuilt when REQUIREMENTS or the base interpreter changed, or when a previous build
did not finish. Concurrent callers (tests running in parallel, or run.sh and a test) take turns
on a lock file beside the venv; whoever comes second reuses what the first built.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

# Written last, once everything is installed: a venv without it is unfinished.
STAMP = ".appliance-test-venv"


def log(message: str) -> None:
    print(f"test-venv: {message}", file=sys.stderr, flush=True)


def wanted_stamp(requirements: Path) -> str:
    digest = hashlib.sha256(requirements.read_bytes()).hexdigest()
    return f"requirements {digest}\nbase {sys.executable} {sys.version.split()[0]}\n"


def interpreter(venv: Path) -> Path:
    return venv / "bin" / "python"


def usable(venv: Path, stamp: str, module: str) -> bool:
    try:
        if (venv / STAMP).read_text() != stamp:
            return False
    except OSError:
        return False
    # The base interpreter may have gone away under the venv's symlinks.
    check = subprocess.run(
        [str(interpreter(venv)), "-c", f"import {module}"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    return check.returncode == 0


def build(venv: Path, stamp: str, requirements: Path) -> None:
    if venv.exists():
        log(f"rebuilding {venv} (requirements or interpreter changed, or unfinished)")
        shutil.rmtree(venv)
    else:
        log(f"creating {venv}")
    made = subprocess.run([sys.executable, "-m", "venv", str(venv)])
    if made.returncode != 0:
        sys.exit(
            f"test-venv: `{sys.executable} -m venv` failed; on Debian or Ubuntu install the "
            "python3-venv package (apt-get install python3-venv)"
        )
    log(f"installing {requirements} from PyPI into {venv}")
    pip = [str(interpreter(venv)), "-m", "pip", "--disable-pip-version-check", "--no-input"]
    installed = subprocess.run(
        [*pip, "install", "--quiet", "--requirement", str(requirements)],
        # pip's output is progress: keep stdout for the interpreter's path alone.
        stdout=sys.stderr,
    )
    if installed.returncode != 0:
        sys.exit(f"test-venv: pip could not install {requirements}")
    partial = venv / (STAMP + ".partial")
    partial.write_text(stamp)
    os.replace(partial, venv / STAMP)
    log("ready")


def main() -> None:
    if len(sys.argv) != 4:
        sys.exit(f"usage: {sys.argv[0]} VENV_DIR REQUIREMENTS MODULE")
    venv = Path(sys.argv[1]).absolute()
    requirements = Path(sys.argv[2]).absolute()
    module = sys.argv[3]
    venv.parent.mkdir(parents=True, exist_ok=True)
    stamp = wanted_stamp(requirements)
    with open(venv.parent / (venv.name + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not usable(venv, stamp, module):
            build(venv, stamp, requirements)
    print(interpreter(venv))


if __name__ == "__main__":
    main()
