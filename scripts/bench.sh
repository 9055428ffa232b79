#!/usr/bin/env bash
# The upload benchmark. For each size: a fresh system from the release binaries, each service
# its own process as in production (sessions, gateway, one upload worker; embedded backends with
# the data on the disk of $BENCH_DIR), then `lfusys bench` against it: end-to-end MB/s, the
# sequential fdatasync reference on the same disk, their ratio, and the upload worker's peak RSS.
#   bash scripts/bench.sh [SIZE ...]        default: 1GiB 2GiB 8GiB
#   BENCH_PARALLEL=16 BENCH_DIR=/var/tmp/lfusys-bench bash scripts/bench.sh 2GiB
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/lfusys/target}"
sizes=("$@"); [ ${#sizes[@]} -gt 0 ] || sizes=(1GiB 2GiB 8GiB)
parallel="${BENCH_PARALLEL:-16}"
dir="${BENCH_DIR:-$PWD/target-bench}"
# The same features as the test build, so that it reuses its artifacts.
source scripts/cargo-set.sh
cargo build "${CARGO_SET[@]}" --release --bins
bin="$CARGO_TARGET_DIR/release"
mkdir -p "$dir"
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
pids=()
stop_all() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done; pids=(); }
trap 'stop_all; rm -rf "$dir/data"' EXIT
wait_ready() { for _ in $(seq 200); do curl -sf "$1/readyz" >/dev/null && return 0; sleep 0.05; done; echo "$1 did not become ready" >&2; exit 1; }

for size in "${sizes[@]}"; do
  rm -rf "$dir/data"
  sp=$(free_port); gp=$(free_port); up=$(free_port)
  export LFUSYS_DATA_DIR="$dir/data" LFUSYS_SESSIONS_URL="http://127.0.0.1:$sp"
  LFUSYS_SESSIONS_LISTEN="127.0.0.1:$sp" "$bin/sessions" >"$dir/sessions.log" 2>&1 & pids+=($!)
  wait_ready "http://127.0.0.1:$sp"
  LFUSYS_GATEWAY_LISTEN="127.0.0.1:$gp" LFUSYS_PUBLIC_UPLOAD_URL="http://127.0.0.1:$up" LFUSYS_WEB_DIR=/nonexistent \
    "$bin/gateway" >"$dir/gateway.log" 2>&1 & pids+=($!)
  wait_ready "http://127.0.0.1:$gp"
  LFUSYS_UPLOADS_LISTEN="127.0.0.1:$up" "$bin/uploads" >"$dir/uploads.log" 2>&1 & pids+=($!)
  wait_ready "http://127.0.0.1:$up"
  echo "== $size, $parallel chunks in flight"
  "$bin/lfusys" bench --server "http://127.0.0.1:$gp" --size "$size" -j "$parallel" --scratch-dir "$dir"
  stop_all
done
