#!/usr/bin/env bash
# Installs (once, cached outside the clone) and runs the AWS-compatible servers the AWS test
# suites and the S3 benchmark use, on loopback:
#   - moto (PyPI `moto[server]`, in a venv): S3, DynamoDB and SQS, one process per service
#     (ports LFUSYS_MOTO_PORT, +2, +3; each also serves the others' APIs), started through
#     scripts/moto-server.py;
#   - MinIO (built from its Go module, pinned), a real S3 server that verifies part checksums
#     and enforces S3's 5 MiB part minimum; if MinIO cannot be built, s3s-fs 0.14.1 from
#     crates.io instead.
#
# Usage: scripts/aws-servers.sh install|start|stop|status|env
#   install installs what is missing (moto's venv, MinIO's build) and starts nothing
#   start   installs what is missing, starts what is not running, waits until both answer
#   stop    stops the servers this script started
#   env     prints the environment the tests need (`eval "$(scripts/aws-servers.sh env)"`)
# Everything is idempotent. Settings: LFUSYS_CACHE (default ~/.cache/lfusys),
# LFUSYS_MOTO_PORT (29990), LFUSYS_S3_PORT (29991): below the ephemeral port range, so
# no test server picks them.
# LFUSYS_AWS_HOST (127.0.0.1): the address they listen on (the real-Pod cluster's bridge
# address, so that Pods reach them);
# LFUSYS_AWS_SERVERS_DIR (default $LFUSYS_CACHE/aws-servers): pid files, logs and data, so a
# private instance (other ports, e.g. scripts/test-k8s.sh) runs next to the default one.
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
CACHE="${LFUSYS_CACHE:-$HOME/.cache/lfusys}"
RUN="${LFUSYS_AWS_SERVERS_DIR:-$CACHE/aws-servers}"
TOOLS="$CACHE/tools"
VENV="$CACHE/moto-venv"
MOTO_VERSION="5.2.5"
MINIO_MODULE="github.com/minio/minio@v0.0.0-20260212201848-7aac2a2c5b7c"
S3S_FS_VERSION="0.14.1"
MOTO_PORT="${LFUSYS_MOTO_PORT:-29990}"
S3_PORT="${LFUSYS_S3_PORT:-29991}"
HOST="${LFUSYS_AWS_HOST:-127.0.0.1}"
S3_USER="lfusystest"
S3_PASSWORD="lfusystest-secret-key"

log() { printf '[aws-servers] %s\n' "$*" >&2; }

# moto's port for a service: S3 on MOTO_PORT, DynamoDB on +2, SQS on +3.
moto_port() {
  case $1 in
    s3) echo "$MOTO_PORT" ;;
    dynamodb) echo $((MOTO_PORT + 2)) ;;
    sqs) echo $((MOTO_PORT + 3)) ;;
  esac
}

alive() { [[ -f "$1" ]] && kill -0 "$(cat "$1")" 2>/dev/null; }

# Polls a URL until it answers (any HTTP status), for up to $2 seconds.
wait_http() {
  local url=$1 secs=$2 i
  for ((i = 0; i < secs * 10; i++)); do
    if curl -s -o /dev/null --max-time 2 "$url"; then return 0; fi
    sleep 0.1
  done
  return 1
}

install_moto() {
  if [[ -x "$VENV/bin/moto_server" ]] && "$VENV/bin/python" -c "import moto, sys; sys.exit(moto.__version__ != '$MOTO_VERSION')" 2>/dev/null; then
    return
  fi
  log "installing moto[server]==$MOTO_VERSION into $VENV"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check "moto[server]==$MOTO_VERSION"
}

# Prints the S3 server's kind: minio or s3s-fs.
install_s3() {
  if [[ -x "$TOOLS/bin/minio" ]]; then echo minio; return; fi
  if [[ -x "$TOOLS/bin/s3s-fs" ]]; then echo s3s-fs; return; fi
  mkdir -p "$TOOLS/bin" "$CACHE/go"
  log "building MinIO from $MINIO_MODULE (once; takes a few minutes)"
  # Its own module and build caches, dropped once it is built: over a GB that no later build
  # uses (the binary is kept).
  local goenv=(GOBIN="$TOOLS/bin" GOPATH="$CACHE/go" GOCACHE="$CACHE/go/build-cache" GOFLAGS=-modcacherw)
  if env "${goenv[@]}" go install "$MINIO_MODULE" >"$CACHE/minio-build.log" 2>&1; then
    env "${goenv[@]}" go clean -modcache -cache >>"$CACHE/minio-build.log" 2>&1 || true
    echo minio
    return
  fi
  log "MinIO did not build (see $CACHE/minio-build.log); installing s3s-fs $S3S_FS_VERSION"
  cargo install "s3s-fs@$S3S_FS_VERSION" --features binary --locked --root "$TOOLS" >&2
  echo s3s-fs
}

start() {
  mkdir -p "$RUN"
  install_moto
  local kind
  kind=$(install_s3)
  # One moto process per service: each is one Python process (one core at most), and a
  # 10,000-chunk upload keeps DynamoDB and S3 busy at once. scripts/moto-server.py runs
  # moto_server with fixes for the tests (see there): DynamoDB handles one request at a time,
  # as moto does not isolate concurrent writes of one item.
  local svc port serialize
  for svc in s3 dynamodb sqs; do
    port=$(moto_port "$svc")
    serialize=0
    [[ $svc == dynamodb ]] && serialize=1
    if ! alive "$RUN/moto-$svc.pid"; then
      log "starting moto ($svc) on $HOST:$port"
      # Tests use small chunks: let multipart parts be as small as one byte. Object bytes
      # beyond 256 KiB go to temporary files rather than moto's memory.
      LFUSYS_MOTO_SERIALIZE=$serialize LFUSYS_MOTO_FAST_JSON=1 S3_UPLOAD_PART_MIN_SIZE=1 MOTO_S3_DEFAULT_KEY_BUFFER_SIZE=262144 \
        nohup "$VENV/bin/python" "$ROOT/scripts/moto-server.py" \
        -H "$HOST" -p "$port" >"$RUN/moto-$svc.log" 2>&1 &
      echo $! >"$RUN/moto-$svc.pid"
    fi
  done
  if ! alive "$RUN/s3.pid"; then
    rm -rf "$RUN/s3-data"
    mkdir -p "$RUN/s3-data"
    log "starting $kind on $HOST:$S3_PORT"
    if [[ $kind == minio ]]; then
      MINIO_ROOT_USER="$S3_USER" MINIO_ROOT_PASSWORD="$S3_PASSWORD" MINIO_BROWSER=off \
        nohup "$TOOLS/bin/minio" server "$RUN/s3-data" --quiet --address "$HOST:$S3_PORT" \
        >"$RUN/s3.log" 2>&1 &
    else
      nohup "$TOOLS/bin/s3s-fs" --host "$HOST" --port "$S3_PORT" \
        --access-key "$S3_USER" --secret-key "$S3_PASSWORD" "$RUN/s3-data" \
        >"$RUN/s3.log" 2>&1 &
    fi
    echo $! >"$RUN/s3.pid"
    echo "$kind" >"$RUN/s3.kind"
  fi
  for svc in s3 dynamodb sqs; do
    wait_http "http://$HOST:$(moto_port "$svc")/moto-api/" 60 || { log "moto ($svc) did not start:"; tail -20 "$RUN/moto-$svc.log" >&2; exit 1; }
  done
  wait_http "http://$HOST:$S3_PORT/" 60 || { log "$kind did not start:"; tail -20 "$RUN/s3.log" >&2; exit 1; }
  log "moto on :$MOTO_PORT, $kind on :$S3_PORT"
}

stop() {
  local name pid i
  for name in moto-s3 moto-dynamodb moto-sqs moto s3; do
    if alive "$RUN/$name.pid"; then
      pid=$(cat "$RUN/$name.pid")
      kill "$pid" 2>/dev/null || true
      for ((i = 0; i < 100; i++)); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
      kill -9 "$pid" 2>/dev/null || true
      log "stopped $name ($pid)"
    fi
    rm -f "$RUN/$name.pid"
  done
  rm -rf "$RUN/s3-data"
}

env_vars() {
  local kind
  kind=$(cat "$RUN/s3.kind" 2>/dev/null || echo minio)
  cat <<EOF
export AWS_ENDPOINT_URL=http://$HOST:$MOTO_PORT
export AWS_ENDPOINT_URL_S3=http://$HOST:$(moto_port s3)
export AWS_ENDPOINT_URL_DYNAMODB=http://$HOST:$(moto_port dynamodb)
export AWS_ENDPOINT_URL_SQS=http://$HOST:$(moto_port sqs)
export AWS_REGION=us-east-1
export AWS_ACCESS_KEY_ID=testing
export AWS_SECRET_ACCESS_KEY=testing
export AWS_EC2_METADATA_DISABLED=true
export LFUSYS_TEST_MOTO_URL=http://$HOST:$MOTO_PORT
export LFUSYS_TEST_MOTO_DYNAMODB_URL=http://$HOST:$(moto_port dynamodb)
export LFUSYS_TEST_MOTO_SQS_URL=http://$HOST:$(moto_port sqs)
export LFUSYS_TEST_S3_URL=http://$HOST:$S3_PORT
export LFUSYS_TEST_S3_KIND=$kind
export LFUSYS_TEST_S3_ACCESS_KEY=$S3_USER
export LFUSYS_TEST_S3_SECRET_KEY=$S3_PASSWORD
EOF
}

case "${1:-}" in
  install)
    install_moto
    log "S3 server: $(install_s3)"
    ;;
  start) start ;;
  stop) stop ;;
  status)
    for name in moto-s3 moto-dynamodb moto-sqs s3; do
      if alive "$RUN/$name.pid"; then echo "$name: running ($(cat "$RUN/$name.pid"))"; else echo "$name: stopped"; fi
    done
    ;;
  env) env_vars ;;
  *)
    echo "usage: $0 install|start|stop|status|env" >&2
    exit 2
    ;;
esac
