#!/usr/bin/env bash
# Runs the whole LFUSYS system locally (`lfusys up`), with the web app at http://127.0.0.1:8080.
# Builds the web app first when frontend/dist is missing or older than its sources (needs npm).
# Arguments go to `lfusys up` (see `bash scripts/up.sh --help`).
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/lfusys/target}"

if bash scripts/web-app.sh stale; then
  if command -v npm >/dev/null 2>&1; then
    echo "Building the web app (frontend/dist)…" >&2
    bash scripts/web-app.sh build
  else
    echo "npm is not installed: starting without the web app (the API works; install Node.js for the app)" >&2
  fi
fi

exec cargo run --release --bin lfusys -- up "$@"
