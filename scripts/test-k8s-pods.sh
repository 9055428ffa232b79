#!/usr/bin/env bash
# The deployed system on real Pods (operator/tests/pods.rs): a private cluster with a real Node
# (scripts/k8s-cluster.sh with LFUSYS_K8S_NODES=real: containerd, runc, kubelet, kube-proxy,
# CoreDNS, the CNI bridge, Traefik) running the images scripts/images.sh builds; MinIO and moto
# (scripts/aws-servers.sh) on the bridge's address so that Pods reach them; then the suite:
# helm install, kubectl apply, the CLI and Chromium through the Ingress, worker Pods going away
# mid-upload, the operator Pod killed, autoscaling with real assembly jobs. First it checks the
# images against their Dockerfiles (scripts/image-check.py). Stops everything it started and
# checks that the host is as it was (sysctls, nftables tables, the bridge).
#
# Usage: scripts/test-k8s-pods.sh [--bench] [-- TEST-ARGS...]
#   --bench     the deployed-system benchmark instead (operator/benches/pods.rs)
#   TEST-ARGS   passed to the test binary, e.g. `-- chromium` to run one test
# Needs root (containerd, kubelet, the bridge). Settings: LFUSYS_CACHE (~/.cache/lfusys);
# LFUSYS_TEST_PODS_PORT_BASE (29930): the cluster on base..base+13; moto on +15, +17, +18 and
# MinIO on +16. Only one real-Node cluster runs at a time (one bridge, 10.244.0.1/24).
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"
# shellcheck source=scripts/cargo-set.sh
source scripts/cargo-set.sh
CACHE="${LFUSYS_CACHE:-$HOME/.cache/lfusys}"
export LFUSYS_CACHE="$CACHE"

MODE=test
if [[ ${1:-} == --bench ]]; then
  MODE=bench
  shift
fi
if [[ ${1:-} == -- ]]; then shift; fi

step() { printf '\n==> %s\n' "$*"; }

if [[ $(id -u) -ne 0 ]]; then
  echo "test-k8s-pods: a real Node needs root (containerd, kubelet, a bridge)" >&2
  exit 1
fi

export LFUSYS_K8S_NODES=real
export LFUSYS_K8S_DIR="$CACHE/k8s/pods"
PORT_BASE="${LFUSYS_TEST_PODS_PORT_BASE:-29930}"
export LFUSYS_K8S_PORT_BASE="$PORT_BASE"
export LFUSYS_AWS_SERVERS_DIR="$CACHE/k8s/pods-aws"
export LFUSYS_MOTO_PORT=$((PORT_BASE + 15))
export LFUSYS_S3_PORT=$((PORT_BASE + 16))
export LFUSYS_AWS_HOST="${LFUSYS_K8S_NODE_IP:-10.244.0.1}"
WORK="$(mktemp -d "${TMPDIR:-/tmp}/lfusys-test-pods.XXXXXX")"
export LFUSYS_E2E_DIR="$WORK"
export KUBECACHEDIR="$WORK/kube-cache"
export LFUSYS_TEST_ROLLED_TAG="0.1.0-rolled"

# What the Node may change on the host, to compare after the stop.
host_state() {
  sysctl vm.overcommit_memory kernel.panic kernel.panic_on_oops net.ipv4.ip_forward 2>/dev/null
  nft list tables 2>/dev/null || true
  ip -o link show lfusys0 2>/dev/null | cut -d: -f2 || true
}

cleanup() {
  local rc=$?
  if [[ $rc -ne 0 && -d $LFUSYS_K8S_DIR/logs ]]; then
    echo "test-k8s-pods: failed; the cluster's logs are in $LFUSYS_K8S_DIR/logs"
    for f in kubelet containerd traefik; do
      [[ -f $LFUSYS_K8S_DIR/logs/$f.log ]] && { echo "--- last lines of $f.log ---"; tail -15 "$LFUSYS_K8S_DIR/logs/$f.log"; }
    done
    echo "--- the disk of $CACHE ---"
    df -h "$CACHE" | tail -1
    if [[ -n ${KUBECONFIG:-} ]]; then
      # A Node under pressure (disk, memory, PIDs) evicts Pods and admits none: the cause of a
      # stalled scenario that the Pods' own logs do not show.
      kubectl get nodes -o jsonpath='{range .items[*]}{.metadata.name}:{range .status.conditions[*]} {.type}={.status}{end}{"\n"}{end}' 2>&1 || true
      kubectl get pods -A -o wide 2>&1 | tail -30 || true
      kubectl -n lfusys-pods logs -l app.kubernetes.io/instance=files --all-containers --tail 20 --prefix 2>&1 | tail -60 || true
      kubectl -n lfusys-e2e logs -l app.kubernetes.io/name=lfusys-operator --tail 30 2>&1 || true
    fi
  fi
  bash "$ROOT/scripts/aws-servers.sh" stop >/dev/null 2>&1 || true
  bash "$ROOT/scripts/k8s-cluster.sh" stop || true
  if [[ -n ${HOST_BEFORE:-} ]]; then
    local after
    after=$(host_state)
    if [[ $after != "$HOST_BEFORE" ]]; then
      echo "test-k8s-pods: the host is not as it was before the cluster:"
      diff <(echo "$HOST_BEFORE") <(echo "$after") || true
      rc=1
    else
      echo "test-k8s-pods: the host is as it was (sysctls, nftables tables, no bridge)"
    fi
  fi
  rm -rf "$WORK"
  exit "$rc"
}
trap cleanup EXIT

step "build: the suite (operator, feature k8s-pods-tests) and the lfusys client (release)"
if [[ $MODE == test ]]; then
  build_release --test pods --test commands
else
  build_release --test commands
  cargo bench "${CARGO_SET[@]}" --bench pods --no-run
fi
export LFUSYS_CLI_BIN="$CARGO_TARGET_DIR/release/lfusys"
if [[ ! -d frontend/node_modules/playwright-core ]]; then
  (cd frontend && npm ci --no-audit --no-fund)
fi
if [[ ! -x /usr/bin/chromium ]]; then
  step "installing Debian's chromium"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null ||
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; }
fi

# The Node's kubelet evicts every Pod once the disk has less than 512 MiB free (k8s-node.sh),
# and the suite stores images, Pod logs and its uploads on it (2.8 GB at the most, measured in a
# cold run): refuse to start rather than fail halfway with evicted Pods.
NEED_MB=$((4 * 1024))
FREE_MB=$(df -Pm "$CACHE" | awk 'NR == 2 { print $4 }')
if ((FREE_MB < NEED_MB)); then
  echo "test-k8s-pods: $FREE_MB MB free on the disk of $CACHE; the suite needs $NEED_MB MB" >&2
  exit 1
fi

step "a private cluster with a real Node (state in $LFUSYS_K8S_DIR, ports from $PORT_BASE)"
bash scripts/k8s-cluster.sh stop >/dev/null 2>&1 || true
bash scripts/aws-servers.sh stop >/dev/null 2>&1 || true
HOST_BEFORE=$(host_state)
bash scripts/k8s-cluster.sh start
eval "$(bash scripts/k8s-cluster.sh env)"
step "MinIO and moto on $LFUSYS_AWS_HOST (the bridge: Pods reach them there)"
bash scripts/aws-servers.sh start
eval "$(bash scripts/aws-servers.sh env)"
# The test process itself acts as the cluster admin; the storage servers' own AWS_* settings
# are for the suite's setup only (the Pods get theirs from the LfusysCluster).

step "the images are what their Dockerfiles describe"
python3 scripts/image-check.py docker/services.Dockerfile "$(bash scripts/images.sh archive lfusys)"
python3 scripts/image-check.py docker/operator.Dockerfile "$(bash scripts/images.sh archive lfusys-operator)"

# A second tag of the services image, for the rolling update.
ctr --address "$CONTAINERD_ADDRESS" --namespace k8s.io images tag --force \
  "ghcr.io/lfusys/lfusys:0.1.0" "ghcr.io/lfusys/lfusys:$LFUSYS_TEST_ROLLED_TAG" >/dev/null

if [[ $MODE == test ]]; then
  step "the deployed system on real Pods (helm install, kubectl apply, CLI and Chromium through the Ingress)"
  cargo test "${CARGO_SET[@]}" --release --test pods -- \
    --test-threads=1 --nocapture "$@"
else
  step "benchmark: apply → Pods Ready, queue depth → new worker Pod Ready, Ingress vs. one worker"
  cargo bench "${CARGO_SET[@]}" --bench pods -- "$@"
fi
