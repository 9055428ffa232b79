#!/usr/bin/env bash
# The load harness (a benchmark, not a test; BENCHMARKS.md "Under load", docs/capacity.md).
# Starts a fresh system from the release binaries, runs `lfusys load` against it with the
# resident memory of every service process sampled, and stops what it started.
#
#   bash scripts/load.sh up [LOAD ARGS...]         one `lfusys up` process (embedded backends)
#   bash scripts/load.sh split [LOAD ARGS...]      sessions, gateway and upload workers, each its
#                                                  own process as in production (embedded)
#   bash scripts/load.sh sessions [LOAD ARGS...]   the sessions service's ceiling in chunk
#                                                  commits/s over gRPC (SQLite; no assemblers)
#   bash scripts/load.sh sessions-aws [LOAD ARGS...]  the same on the DynamoDB-compatible test
#                                                  server of scripts/aws-servers.sh (started here)
#
# LOAD ARGS go to `lfusys load` (see `lfusys load --help`): e.g. `--completion wait`,
# `--small 5000`, `--duration-secs 600` (the soak), `--clients 200`.
# LOAD_DIR (default ./target-load) holds the data and the services' logs.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/cargo-set.sh
source scripts/cargo-set.sh
mode="${1:-up}"
shift || true
dir="${LOAD_DIR:-$PWD/target-load}"
if ! built=$(build_release --test commands 2>&1); then
  echo "$built" >&2
  exit 1
fi
bin="$CARGO_TARGET_DIR/release"
mkdir -p "$dir"
rm -rf "$dir/data"

pids=()
aws_started=
stop_all() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  pids=()
  if [[ -n $aws_started ]]; then bash scripts/aws-servers.sh stop >/dev/null 2>&1 || true; fi
}
trap 'stop_all; rm -rf "$dir/data"' EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_ready() {
  for _ in $(seq 300); do curl -sf "$1/readyz" >/dev/null && return 0; sleep 0.1; done
  echo "$1 did not become ready" >&2
  exit 1
}
# The sessions gRPC URL that `lfusys up` prints in its banner.
sessions_url_of() {
  for _ in $(seq 300); do
    url=$(sed -n 's/.*sessions (gRPC): \(http[^ ]*\).*/\1/p' "$1" | head -1)
    [[ -n $url ]] && { echo "$url"; return 0; }
    sleep 0.1
  done
  echo "no sessions URL in $1" >&2
  exit 1
}
uptime_line() { printf 'load average before: %s\n' "$(cut -d' ' -f1-3 /proc/loadavg)"; }

case "$mode" in
  up)
    gp=$(free_port)
    "$bin/lfusys" up --data-dir "$dir/data" --listen "127.0.0.1:$gp" --web-dir /nonexistent \
      >"$dir/up.log" 2>&1 & pids+=($!)
    wait_ready "http://127.0.0.1:$gp"
    uptime_line
    "$bin/lfusys" load --server "http://127.0.0.1:$gp" --watch "lfusys-up=${pids[0]}" "$@"
    ;;
  split)
    sp=$(free_port); gp=$(free_port); up=$(free_port)
    export LFUSYS_DATA_DIR="$dir/data" LFUSYS_SESSIONS_URL="http://127.0.0.1:$sp"
    LFUSYS_SESSIONS_LISTEN="127.0.0.1:$sp" "$bin/sessions" >"$dir/sessions.log" 2>&1 & pids+=($!)
    wait_ready "http://127.0.0.1:$sp"
    LFUSYS_GATEWAY_LISTEN="127.0.0.1:$gp" LFUSYS_PUBLIC_UPLOAD_URL="http://127.0.0.1:$up" \
      LFUSYS_WEB_DIR=/nonexistent "$bin/gateway" >"$dir/gateway.log" 2>&1 & pids+=($!)
    wait_ready "http://127.0.0.1:$gp"
    LFUSYS_UPLOADS_LISTEN="127.0.0.1:$up" "$bin/uploads" >"$dir/uploads.log" 2>&1 & pids+=($!)
    wait_ready "http://127.0.0.1:$up"
    uptime_line
    "$bin/lfusys" load --server "http://127.0.0.1:$gp" \
      --watch "sessions=${pids[0]}" --watch "gateway=${pids[1]}" --watch "uploads=${pids[2]}" "$@"
    ;;
  sessions|sessions-aws)
    backend=(--backend embedded)
    if [[ $mode == sessions-aws ]]; then
      bash scripts/aws-servers.sh start >/dev/null
      aws_started=1
      eval "$(bash scripts/aws-servers.sh env)"
      suffix=$(python3 -c 'import uuid; print(uuid.uuid4().hex[:8])')
      backend=(--backend aws --create-resources --s3-bucket "load-$suffix"
        --table-prefix "load-$suffix-" --queue-name "load-$suffix")
    fi
    gp=$(free_port)
    "$bin/lfusys" up --data-dir "$dir/data" --listen "127.0.0.1:$gp" --web-dir /nonexistent \
      --assemblers 0 "${backend[@]}" >"$dir/up.log" 2>&1 & pids+=($!)
    wait_ready "http://127.0.0.1:$gp"
    uptime_line
    "$bin/lfusys" load --sessions-grpc "$(sessions_url_of "$dir/up.log")" \
      --watch "lfusys-up=${pids[0]}" "$@"
    ;;
  *)
    echo "usage: bash scripts/load.sh up|split|sessions|sessions-aws [lfusys load args]" >&2
    exit 2
    ;;
esac
printf 'load average after: %s\n' "$(cut -d' ' -f1-3 /proc/loadavg)"
