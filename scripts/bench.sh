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
source scripts/bench-services.sh
trap 'stop_all; rm -rf "$dir/data"' EXIT

for size in "${sizes[@]}"; do
  rm -rf "$dir/data"
  export LFUSYS_DATA_DIR="$dir/data"
  gp=$(free_port)
  start_embedded_services "$gp"
  echo "== $size, $parallel chunks in flight"
  "$bin/lfusys" bench --server "http://127.0.0.1:$gp" --size "$size" -j "$parallel" --scratch-dir "$dir"
  stop_all
done
