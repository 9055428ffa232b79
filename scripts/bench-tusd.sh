#!/usr/bin/env bash
# LFUSYS against tusd on this machine (issue 10's benchmark): builds tusd v2.9.1 once (into
# ~/.cache/lfusys/tools), the release binaries, then starts tusd and LFUSYS with their data on
# the disk of $BENCH_DIR, and runs `lfusys bench-tusd` against both: interleaved rounds on the
# same generated file, wall and durable MB/s, CPU seconds per GiB (client and servers),
# servers' peak RSS, the ratios.
#   - file store (default): tusd's file store; LFUSYS each service its own process, embedded
#     backends;
#   - S3 (`--s3`): a private MinIO and moto (scripts/aws-servers.sh, on ports of their own so
#     that they run beside .ci/run's); tusd's S3 store; LFUSYS `lfusys up --backend aws`; and the
#     direct aws-sdk-s3 multipart upload with the same part checksums as a third system.
#   bash scripts/bench-tusd.sh                     1 GiB, 8 in flight, 3 rounds, file store
#   bash scripts/bench-tusd.sh --s3                the same in S3 mode
#   BENCH_SIZE=2GiB BENCH_PARALLEL=8 BENCH_ROUNDS=5 BENCH_DIR=/var/tmp/b bash scripts/bench-tusd.sh
#   bash scripts/bench-tusd.sh --json             the report as JSON (every round's figures)
#   bash scripts/bench-tusd.sh --no-sha256        LFUSYS without the file's SHA-256 (what it costs)
#   BENCH_PARALLEL=1 bash scripts/bench-tusd.sh   one stream
# Every run also drives LFUSYS through its tus endpoint by the client that drives tusd, with the
# same parallelism (issue 11: the same tus client program; -j > 1 uses concatenation on both).
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/lfusys/target}"
CACHE="${LFUSYS_CACHE:-$HOME/.cache/lfusys}"
TOOLS="$CACHE/tools"
TUSD_MODULE="github.com/tus/tusd/v2/cmd/tusd@v2.9.1"
size="${BENCH_SIZE:-1GiB}"
parallel="${BENCH_PARALLEL:-8}"
rounds="${BENCH_ROUNDS:-3}"
dir="${BENCH_DIR:-$PWD/target-bench}"
store=file
if [[ "${1:-}" == --s3 ]]; then
  store=s3
  shift
fi

if [[ ! -x "$TOOLS/bin/tusd" ]]; then
  echo "building tusd from $TUSD_MODULE (once)" >&2
  mkdir -p "$TOOLS/bin" "$CACHE/go"
  env GOBIN="$TOOLS/bin" GOPATH="$CACHE/go" GOCACHE="$CACHE/go/build-cache" GOFLAGS=-modcacherw \
    go install "$TUSD_MODULE"
  env GOPATH="$CACHE/go" GOCACHE="$CACHE/go/build-cache" go clean -modcache -cache || true
fi
# The same features as the test build, so that it reuses its artifacts.
source scripts/cargo-set.sh
cargo build "${CARGO_SET[@]}" --release --bins
bin="$CARGO_TARGET_DIR/release"

mkdir -p "$dir"
source scripts/bench-services.sh
trap 'stop_all; rm -rf "$dir/data" "$dir/tusd"' EXIT

rm -rf "$dir/data" "$dir/tusd"
mkdir -p "$dir/tusd"
gp=$(free_port); tp=$(free_port)
export LFUSYS_DATA_DIR="$dir/data"
bench_args=()
if [[ $store == s3 ]]; then
  # A private instance of the AWS servers, its data on the benchmark's disk.
  export LFUSYS_AWS_SERVERS_DIR="$dir/aws" LFUSYS_MOTO_PORT="${BENCH_MOTO_PORT:-29960}" LFUSYS_S3_PORT="${BENCH_S3_PORT:-29961}"
  trap 'stop_all; bash scripts/aws-servers.sh stop >/dev/null 2>&1 || true; rm -rf "$dir/data" "$dir/tusd" "$dir/aws"' EXIT
  bash scripts/aws-servers.sh start
  eval "$(bash scripts/aws-servers.sh env)"
  # S3 is the S3 server; DynamoDB and SQS stay moto's (which takes any credentials).
  export AWS_ENDPOINT_URL_S3="$LFUSYS_TEST_S3_URL" AWS_ACCESS_KEY_ID="$LFUSYS_TEST_S3_ACCESS_KEY" \
    AWS_SECRET_ACCESS_KEY="$LFUSYS_TEST_S3_SECRET_KEY" LFUSYS_S3_PATH_STYLE=true
  bucket=lfusys-bench
  LFUSYS_WEB_DIR=/nonexistent "$bin/lfusys" up --backend aws --s3-bucket "$bucket" --table-prefix bench- \
    --queue-name bench --create-resources --listen "127.0.0.1:$gp" >"$dir/lfusys.log" 2>&1 & pids+=($!); lfusys=$!
  wait_ready "http://127.0.0.1:$gp"
  "$TOOLS/bin/tusd" -host 127.0.0.1 -port "$tp" -base-path /files/ -s3-bucket "$bucket" -s3-object-prefix tusd/ \
    -s3-endpoint "$LFUSYS_TEST_S3_URL" >"$dir/tusd.log" 2>&1 & pids+=($!); tusd=$!
  wait_http "http://127.0.0.1:$tp/files/"
  run="$LFUSYS_AWS_SERVERS_DIR"
  tus_endpoint="http://127.0.0.1:$gp/api/v1/tus"
  bench_args+=(--lfusys-pid "lfusys=$lfusys" --lfusys-pid "dynamodb=$(cat "$run/moto-dynamodb.pid")"
    --lfusys-pid "sqs=$(cat "$run/moto-sqs.pid")" --store-pid "$(cat "$run/s3.kind")=$(cat "$run/s3.pid")"
    --s3-bucket "$bucket")
else
  start_embedded_services "$gp"
  # The workers serve the tus endpoint (the Ingress routes it to them in a cluster).
  tus_endpoint="$uploads_url/api/v1/tus"
  "$TOOLS/bin/tusd" -host 127.0.0.1 -port "$tp" -base-path /files/ -upload-dir "$dir/tusd" >"$dir/tusd.log" 2>&1 & pids+=($!); tusd=$!
  wait_http "http://127.0.0.1:$tp/files/"
  bench_args+=(--lfusys-pid "sessions=$sessions" --lfusys-pid "gateway=$gateway" --lfusys-pid "uploads=$uploads"
    --tusd-dir "$dir/tusd")
fi

bench_args+=(--lfusys-tus "$tus_endpoint")

config=$(mktemp -d)
export LFUSYS_CONFIG_DIR="$config" LFUSYS_PASSWORD="bench password $$"
"$bin/lfusys" register --server "http://127.0.0.1:$gp" --email "bench@example.com" --password-stdin </dev/null >/dev/null
"$bin/lfusys" login --server "http://127.0.0.1:$gp" --email "bench@example.com" --password-stdin </dev/null >/dev/null
echo "== load before: $(cut -d' ' -f1-3 /proc/loadavg)"
"$bin/lfusys" bench-tusd --server "http://127.0.0.1:$gp" --size "$size" -j "$parallel" --rounds "$rounds" \
  --scratch-dir "$dir" --tusd "http://127.0.0.1:$tp/files/" --tusd-pid "$tusd" "${bench_args[@]}" "$@"
echo "== load after: $(cut -d' ' -f1-3 /proc/loadavg)"
rm -rf "$config"
