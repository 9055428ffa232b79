#!/usr/bin/env bash
# Runs every test of LFUSYS: formatting, lints, unit, component and system tests.
# Build outputs go to a persistent CARGO_TARGET_DIR outside the clone so repeated runs are fast.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/cargo-set.sh
source scripts/cargo-set.sh
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"

step() { printf '\n==> %s\n' "$*"; }

# The Go-built tools (the Kubernetes binaries, CoreDNS, Traefik, MinIO) and moto install in the
# background while Rust compiles: on 2 cores each build leaves a core idle part of the time
# (linking, single large crates). Cached, so on a warm machine this ends at once. The steps
# that need them wait for it.
CACHE="${LFUSYS_CACHE:-$HOME/.cache/lfusys}"
mkdir -p "$CACHE"
step "in the background: the Kubernetes tools and the AWS test servers (log: $CACHE/tools-install.log)"
# In a session of its own, so that stopping it early (a failed step) stops its go builds too.
setsid bash -c 'bash scripts/k8s-tools.sh && bash scripts/aws-servers.sh install' \
  >"$CACHE/tools-install.log" 2>&1 </dev/null &
TOOLS_PID=$!
trap 'if [[ -n ${TOOLS_PID:-} ]]; then kill -- "-$TOOLS_PID" 2>/dev/null || true; fi' EXIT
tools_ready() {
  if [[ -n ${TOOLS_PID:-} ]]; then
    step "waiting for the tools installing in the background"
    if ! wait "$TOOLS_PID"; then
      echo "installing the tools failed; the end of $CACHE/tools-install.log:" >&2
      tail -30 "$CACHE/tools-install.log" >&2
      exit 1
    fi
    TOOLS_PID=
    tail -3 "$CACHE/tools-install.log"
  fi
}

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy (warnings are errors)"
# The release profile, as the build below: the build scripts and proc-macros it compiles are
# then that build's too.
cargo clippy "${CARGO_SET[@]}" --release --all-targets -- -D warnings

step "cargo build: every test target and binary (release; scripts/cargo-set.sh)"
# The release profile: the binaries the system tests run are then the very ones the container
# images are made of (scripts/images.sh). The gated suites are built here too, once, for the
# steps below that start their servers.
build_release

step "cargo test (unit, component and system tests)"
# The targets without required-features, and of the CLI's tests not the AWS-specific ones
# (module aws::, run by scripts/test-aws.sh). Two test binaries at a time: the system tests
# start real servers and move real bytes.
mapfile -t UNGATED < <(ungated_tests)
cargo test "${CARGO_SET[@]}" --release --lib --bins "${UNGATED[@]}" -- \
  --skip aws:: --test-threads="${LFUSYS_TEST_THREADS:-2}"
cargo test "${CARGO_SET[@]}" --release --doc

tools_ready
step "AWS backends: the system tests and AWS-specific tests against moto and MinIO"
bash scripts/test-aws.sh

step "Kubernetes: the Helm chart (lint, values schema, render, install on a real control plane)"
bash scripts/chart-check.sh

step "Kubernetes: the operator end to end, fast checks (helm install, real control plane, kwok Nodes, SQS depth from moto)"
bash scripts/test-k8s.sh

step "web app (frontend/): lint, type-check, unit tests, build, end to end in Chromium"
bash scripts/frontend.sh

step "Kubernetes: the deployed system on real Pods (images built here, containerd, kubelet, CoreDNS, Traefik; CLI and Chromium through the Ingress)"
bash scripts/test-k8s-pods.sh
