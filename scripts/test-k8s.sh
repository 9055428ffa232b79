#!/usr/bin/env bash
# The operator's end-to-end suite (operator/tests/e2e.rs) on a real Kubernetes control plane:
# starts a private control plane (scripts/k8s-cluster.sh: etcd, kube-apiserver,
# kube-controller-manager, kube-scheduler, kwok) and a private moto (scripts/aws-servers.sh, for
# SQS), runs the suite (helm install of the chart, kubectl apply of LfusysClusters, the real
# lfusys-operator as a host process authenticated as the chart's ServiceAccount), and stops
# everything it started, however the suite ends.
#
# Usage: scripts/test-k8s.sh [--bench] [-- TEST-ARGS...]
#   --bench      run the benchmark (operator/benches/k8s.rs) instead; scripts/bench-k8s.sh
#   TEST-ARGS    passed to the test binary, e.g. `-- restarting` to run one test
# Settings: LFUSYS_CACHE (~/.cache/lfusys: tools, state); LFUSYS_TEST_K8S_PORT_BASE (29950): the
#   control plane on base..base+5; LFUSYS_TEST_K8S_MOTO_PORT (29960): moto on +0, +2, +3 and
#   its S3 server on +1. Neither touches the default instances of those scripts (29970.., 29990..)
#   or chart-check.sh's (29980..), so all of them can run at once.
# Logs: on failure the operators' logs are printed and kept with the control plane's in
#   $LFUSYS_CACHE/k8s/test-k8s/logs.
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"
# shellcheck source=scripts/cargo-set.sh
source scripts/cargo-set.sh
CACHE="${LFUSYS_CACHE:-$HOME/.cache/lfusys}"
export LFUSYS_CACHE="$CACHE"

MODE="test"
if [[ ${1:-} == --bench ]]; then
  MODE=bench
  shift
fi
if [[ ${1:-} == -- ]]; then shift; fi

step() { printf '\n==> %s\n' "$*"; }

# The private instances: own state directories and ports.
export LFUSYS_K8S_DIR="$CACHE/k8s/test-k8s"
# The operator as a host process against kwok Nodes: fast checks of reconciling and scaling.
export LFUSYS_K8S_NODES=kwok
export LFUSYS_K8S_PORT_BASE="${LFUSYS_TEST_K8S_PORT_BASE:-29950}"
export LFUSYS_AWS_SERVERS_DIR="$CACHE/k8s/test-k8s-aws"
export LFUSYS_MOTO_PORT="${LFUSYS_TEST_K8S_MOTO_PORT:-29960}"
export LFUSYS_S3_PORT=$((LFUSYS_MOTO_PORT + 1))
# Operator logs, the ServiceAccount's kubeconfig and the pid files of the operators the tests
# run; kubectl's discovery cache of this control plane only.
WORK="$(mktemp -d "${TMPDIR:-/tmp}/lfusys-test-k8s.XXXXXX")"
export LFUSYS_E2E_DIR="$WORK"
export KUBECACHEDIR="$WORK/kube-cache"

cleanup() {
  local rc=$? f pid
  # Operators a killed test process left behind: exactly the pids it recorded, if they still
  # are that binary.
  for f in "$WORK"/pids/*; do
    [[ -e $f ]] || continue
    pid=$(basename "$f")
    if tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q lfusys-operator; then
      kill "$pid" 2>/dev/null || true
    fi
  done
  if [[ $rc -ne 0 ]]; then
    mkdir -p "$LFUSYS_K8S_DIR/logs"
    for f in "$WORK"/operator-*.log; do
      [[ -e $f ]] || continue
      echo "--- last lines of $(basename "$f") ---"
      tail -15 "$f"
      cp "$f" "$LFUSYS_K8S_DIR/logs/"
    done
    echo "test-k8s: failed; logs in $LFUSYS_K8S_DIR/logs (control plane and operators)"
  fi
  bash "$ROOT/scripts/aws-servers.sh" stop >/dev/null 2>&1 || true
  bash "$ROOT/scripts/k8s-cluster.sh" stop || true
  rm -rf "$WORK"
  exit "$rc"
}
trap cleanup EXIT

# Built before anything starts, so the servers do not wait for the compiler.
if [[ $MODE == test ]]; then
  step "build the end-to-end suite (operator, feature k8s-tests)"
  build_release --test e2e
else
  step "build the benchmark (release)"
  cargo bench "${CARGO_SET[@]}" --bench k8s --no-run
fi

step "a private control plane (state in $LFUSYS_K8S_DIR, ports from $LFUSYS_K8S_PORT_BASE) and moto (ports from $LFUSYS_MOTO_PORT)"
# Leftovers of a killed earlier run: stopped, so both start empty.
bash scripts/k8s-cluster.sh stop >/dev/null 2>&1 || true
bash scripts/aws-servers.sh stop >/dev/null 2>&1 || true
bash scripts/k8s-cluster.sh start
bash scripts/aws-servers.sh start
eval "$(bash scripts/k8s-cluster.sh env)"
eval "$(bash scripts/aws-servers.sh env)"

if [[ $MODE == test ]]; then
  step "end-to-end suite (helm install, kubectl, lfusys-operator as the chart's ServiceAccount)"
  # The tests take turns (their operators share the chart's Lease and watch every namespace),
  # whatever the thread count. --nocapture: each test prints its own timeline.
  cargo test "${CARGO_SET[@]}" --release --test e2e -- \
    --test-threads="${LFUSYS_TEST_THREADS:-2}" --nocapture "$@"
else
  step "benchmark: apply → children → Available, queue depth → replicas"
  cargo bench "${CARGO_SET[@]}" --bench k8s -- "$@"
fi
