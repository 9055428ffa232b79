# Sourced by the benchmark scripts (bench.sh, bench-tusd.sh): the processes they start and stop,
# and LFUSYS as in production, each service its own process on embedded backends. Expects `bin`
# (the release binaries) and `dir` (where logs go); LFUSYS_DATA_DIR says where the data goes.

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
pids=()
# Stops every process started here (by pid), and waits for them.
stop_all() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done; pids=(); }
wait_http() { for _ in $(seq 200); do curl -s -o /dev/null "$1" && return 0; sleep 0.05; done; echo "$1 did not answer" >&2; exit 1; }
wait_ready() { for _ in $(seq 200); do curl -sf "$1/readyz" >/dev/null && return 0; sleep 0.05; done; echo "$1 did not become ready" >&2; exit 1; }

# Starts sessions, the gateway (on port $1) and one upload worker, each waited for until ready;
# sets `sessions`, `gateway`, `uploads` to their pids and `uploads_url` to the workers' URL.
start_embedded_services() {
  local gp=$1 sp up
  sp=$(free_port); up=$(free_port)
  uploads_url="http://127.0.0.1:$up"
  export LFUSYS_SESSIONS_URL="http://127.0.0.1:$sp"
  LFUSYS_SESSIONS_LISTEN="127.0.0.1:$sp" "$bin/sessions" >"$dir/sessions.log" 2>&1 & pids+=($!); sessions=$!
  wait_ready "http://127.0.0.1:$sp"
  LFUSYS_GATEWAY_LISTEN="127.0.0.1:$gp" LFUSYS_PUBLIC_UPLOAD_URL="http://127.0.0.1:$up" LFUSYS_WEB_DIR=/nonexistent \
    "$bin/gateway" >"$dir/gateway.log" 2>&1 & pids+=($!); gateway=$!
  wait_ready "http://127.0.0.1:$gp"
  LFUSYS_UPLOADS_LISTEN="127.0.0.1:$up" "$bin/uploads" >"$dir/uploads.log" 2>&1 & pids+=($!); uploads=$!
  wait_ready "http://127.0.0.1:$up"
}
