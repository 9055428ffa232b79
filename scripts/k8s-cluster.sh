#!/usr/bin/env bash
# A real Kubernetes cluster as host processes, for the operator's, the chart's and the deployed
# system's tests: etcd, kube-apiserver (RBAC enforced), kube-controller-manager, kube-scheduler,
# and its Nodes, one of two kinds (LFUSYS_K8S_NODES):
#   real (default)  one real Node (scripts/k8s-node.sh): containerd + runc running the project's
#                   images (scripts/images.sh), kubelet, kube-proxy, CoreDNS, CNI bridge
#                   networking on a bridge of our own, and Traefik as the Ingress controller;
#                   needs root. Pods really run, probes really probe, Services and DNS resolve.
#   kwok            kwok playing the kubelets of two fake Nodes: Pods are scheduled and turn
#                   Running without running anything (fast checks of the chart and operator).
# The binaries come from scripts/k8s-tools.sh (built once from the Go module proxy, cached
# outside the clone).
#
# Usage: scripts/k8s-cluster.sh start|stop|status|env|schemas
#   start   builds missing tools, starts what is not running, waits until the API server is
#           ready and the default ServiceAccount exists. A start after a stop gets a fresh,
#           empty cluster (etcd's data is removed when etcd is not running).
#   stop    stops exactly the processes this script started (pid files); idempotent
#   status  prints each component's state; exits non-zero unless all run and /readyz is ok
#   env     prints `export KUBECONFIG=...`, the PATH with kubectl and helm, and (real Nodes)
#           LFUSYS_INGRESS_URL, where the Ingress controller listens
#           (`eval "$(scripts/k8s-cluster.sh env)"`)
#   schemas writes JSON schemas for kubeconform from the running API server (offline checks)
# Settings: LFUSYS_CACHE (~/.cache/lfusys); LFUSYS_K8S_DIR (state: pki, kubeconfigs, etcd data,
# logs/, pid files; default $LFUSYS_CACHE/k8s/run); LFUSYS_K8S_PORT_BASE (29970): API server
# on +0, etcd client +1, etcd peer +2, controller-manager +3, scheduler +4, kwok +5; real
# Nodes: kubelet +6, its healthz +7, kube-proxy healthz +8 and metrics +9, the Ingress +10,
# Traefik's ping +11, CoreDNS health +12 and ready +13 (DNS itself on the bridge's port 53) —
# fixed ports below the ephemeral range, so no test's port-0 listener takes them.
#
# No address outside this machine is ever contacted. kwok Nodes: everything is on loopback (the
# fake Nodes' addresses are 127.0.0.1, and Service and Pod IPs exist only as data, so charts
# tested there must not register webhooks or APIService backends). Real Nodes: the API server
# listens on the bridge's address ($LFUSYS_K8S_NODE_IP, 10.244.0.1), which Pods reach; Pods
# live on that bridge's /24 and Services in 10.96/16, all of it made by this script.
set -euo pipefail

HERE="$(cd "$(dirname "$0")" && pwd)"
CACHE="${LFUSYS_CACHE:-$HOME/.cache/lfusys}"
RUN="${LFUSYS_K8S_DIR:-$CACHE/k8s/run}"
PKI="$RUN/pki"
LOGS="$RUN/logs"
BIN="$(LFUSYS_CACHE="$CACHE" bash "$HERE/k8s-tools.sh" --print-bin)"
SHARE="$(dirname "$BIN")/share"
PORT_BASE="${LFUSYS_K8S_PORT_BASE:-29970}"
API_PORT=$PORT_BASE
ETCD_PORT=$((PORT_BASE + 1))
ETCD_PEER_PORT=$((PORT_BASE + 2))
KCM_PORT=$((PORT_BASE + 3))
SCHED_PORT=$((PORT_BASE + 4))
KWOK_PORT=$((PORT_BASE + 5))
SERVICE_CIDR="10.96.0.0/16"
POD_CIDR="10.244.0.0/16"
NODES_MODE="${LFUSYS_K8S_NODES:-real}"
NODES=(kwok-node-0 kwok-node-1)
# Started in this order, stopped in the reverse one.
CONTROL_PLANE=(etcd kube-apiserver kube-controller-manager kube-scheduler)
case $NODES_MODE in
  kwok)
    API_HOST=127.0.0.1
    COMPONENTS=("${CONTROL_PLANE[@]}" kwok)
    ;;
  real)
    # shellcheck source=scripts/k8s-node.sh
    source "$HERE/k8s-node.sh"
    API_HOST=$NODE_IP
    COMPONENTS=("${CONTROL_PLANE[@]}" containerd kubelet kube-proxy coredns traefik)
    ;;
  *)
    echo "LFUSYS_K8S_NODES must be real or kwok, not '$NODES_MODE'" >&2
    exit 2
    ;;
esac

log() { printf '[k8s-cluster] %s\n' "$*" >&2; }

# The binary of a component: Debian's containerd, the others built by k8s-tools.sh.
bin_of() {
  case $1 in
    containerd) command -v containerd || echo /usr/bin/containerd ;;
    *) echo "$BIN/$1" ;;
  esac
}

# A pid file's process is alive and is still the binary we started (not a recycled pid).
alive() {
  local name=$1 pid
  [[ -f "$RUN/$name.pid" ]] || return 1
  pid=$(cat "$RUN/$name.pid")
  kill -0 "$pid" 2>/dev/null || return 1
  tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q -- "$(bin_of "$name")"
}

ports_of() {
  case $1 in
    etcd) echo "$ETCD_PORT $ETCD_PEER_PORT" ;;
    kube-apiserver) echo "$API_PORT" ;;
    kube-controller-manager) echo "$KCM_PORT" ;;
    kube-scheduler) echo "$SCHED_PORT" ;;
    kwok) echo "$KWOK_PORT" ;;
    kubelet) echo "$KUBELET_PORT $KUBELET_HEALTHZ_PORT" ;;
    kube-proxy) echo "$PROXY_HEALTHZ_PORT $PROXY_METRICS_PORT" ;;
    traefik) echo "$INGRESS_PORT $TRAEFIK_PING_PORT" ;;
    coredns) echo "$COREDNS_HEALTH_PORT $COREDNS_READY_PORT" ;;
  esac
}

# A port is taken on loopback, or on the API server's address when this machine has it (never
# probed otherwise: without our bridge that address would be routed off the machine).
port_busy() {
  (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
  [[ $API_HOST != 127.0.0.1 ]] && ip -o addr show | grep -qF " $API_HOST/" &&
    (exec 3<>"/dev/tcp/$API_HOST/$1") 2>/dev/null
}

# The process we just launched still runs. Not `alive`: right after the fork its command line
# is still the forking shell's until exec, and under load that window is long enough to be seen.
running() {
  [[ -f "$RUN/$1.pid" ]] && kill -0 "$(cat "$RUN/$1.pid")" 2>/dev/null
}

# Polls until "$@" succeeds, for up to $2 seconds, while component $1 stays alive.
wait_for() {
  local name=$1 secs=$2 i
  shift 2
  for ((i = 0; i < secs * 5; i++)); do
    if "$@" >/dev/null 2>&1; then return 0; fi
    if ! running "$name"; then
      log "$name exited; last lines of $LOGS/$name.log:"
      tail -25 "$LOGS/$name.log" >&2
      return 1
    fi
    sleep 0.2
  done
  log "timed out after ${secs}s waiting for $name; last lines of $LOGS/$name.log:"
  tail -25 "$LOGS/$name.log" >&2
  return 1
}

# --- certificates and kubeconfigs -------------------------------------------------------------
# Signs a certificate with the test CA: sign NAME SUBJECT EXTENDED_KEY_USAGE [SANS].
sign() {
  local name=$1 subj=$2 eku=$3 sans=${4:-}
  openssl req -new -newkey rsa:2048 -nodes -keyout "$PKI/$name.key" -subj "$subj" \
    -out "$PKI/$name.csr" 2>/dev/null
  {
    echo "basicConstraints=critical,CA:FALSE"
    echo "keyUsage=critical,digitalSignature,keyEncipherment"
    echo "extendedKeyUsage=$eku"
    [[ -z $sans ]] || echo "subjectAltName=$sans"
  } >"$PKI/$name.ext"
  openssl x509 -req -in "$PKI/$name.csr" -CA "$PKI/ca.crt" -CAkey "$PKI/ca.key" \
    -set_serial "0x$(openssl rand -hex 16)" -days 3650 -sha256 -extfile "$PKI/$name.ext" \
    -out "$PKI/$name.crt" 2>/dev/null
  rm -f "$PKI/$name.csr" "$PKI/$name.ext"
}

# A kubeconfig with the CA and a client certificate embedded, so it can be copied anywhere.
kubeconfig() {
  local name=$1 user=$2
  cat >"$RUN/$name.kubeconfig" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: lfusys-test
  cluster:
    server: https://$API_HOST:$API_PORT
    certificate-authority-data: $(base64 -w0 "$PKI/ca.crt")
users:
- name: $user
  user:
    client-certificate-data: $(base64 -w0 "$PKI/$name.crt")
    client-key-data: $(base64 -w0 "$PKI/$name.key")
contexts:
- name: lfusys-test
  context: {cluster: lfusys-test, user: $user}
current-context: lfusys-test
EOF
}

# Made once per state directory; kept across stop/start (certificates last ten years).
make_pki() {
  # The API server's address is in every kubeconfig: a change of Node kind makes them anew.
  [[ -f "$RUN/admin.kubeconfig" && -f "$PKI/kubelet.crt" ]] &&
    grep -q "server: https://$API_HOST:$API_PORT\$" "$RUN/admin.kubeconfig" && return
  log "generating the CA, certificates and kubeconfigs in $PKI"
  rm -rf "$PKI"
  mkdir -p "$PKI"
  umask 077
  openssl req -x509 -new -newkey rsa:2048 -nodes -keyout "$PKI/ca.key" -out "$PKI/ca.crt" \
    -subj "/CN=lfusys-test-ca" -days 3650 -sha256 \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
  # The API server's serving certificate: every name a client (host process or, in name only,
  # a Pod through the `kubernetes` Service) uses for it.
  sign apiserver "/CN=kube-apiserver" serverAuth \
    "DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local,IP:127.0.0.1,IP:10.96.0.1,IP:${LFUSYS_K8S_NODE_IP:-10.244.0.1}"
  # Clients: admin is cluster-admin through its group; the controller-manager and scheduler get
  # the identities whose bootstrap RBAC roles the API server creates, so RBAC applies to them.
  sign admin "/O=system:masters/CN=lfusys-admin" clientAuth
  sign controller-manager "/CN=system:kube-controller-manager" clientAuth
  sign scheduler "/CN=system:kube-scheduler" clientAuth
  # The API server's identity towards extension API servers; with it the API server publishes
  # the request-header CA, which the controller-manager and scheduler read at start-up (without
  # it they log an error every few seconds).
  sign front-proxy-client "/CN=front-proxy-client" clientAuth
  # kwok's kubelet endpoint (logs/exec/port-forward that the API server proxies).
  sign kwok "/CN=kwok" serverAuth "DNS:localhost,IP:127.0.0.1"
  # The real Node: kubelet's client identity (the Node authorizer and NodeRestriction apply)
  # and serving certificate, kube-proxy (bound to system:node-proxier by the bootstrap RBAC),
  # CoreDNS (bound to lfusys:coredns by k8s-node.sh).
  local node_ip=${LFUSYS_K8S_NODE_IP:-10.244.0.1}
  sign kubelet-client "/O=system:nodes/CN=system:node:lfusys-node" clientAuth
  sign kubelet "/CN=lfusys-node" serverAuth "DNS:lfusys-node,IP:$node_ip"
  sign kube-proxy "/CN=system:kube-proxy" clientAuth
  sign coredns "/CN=lfusys:coredns" clientAuth
  # Service account tokens: the API server verifies with the public key, the
  # controller-manager signs with the private one.
  openssl genrsa -out "$PKI/sa.key" 2048 2>/dev/null
  openssl rsa -in "$PKI/sa.key" -pubout -out "$PKI/sa.pub" 2>/dev/null
  kubeconfig controller-manager system:kube-controller-manager
  kubeconfig scheduler system:kube-scheduler
  kubeconfig kubelet-client system:node:lfusys-node
  mv "$RUN/kubelet-client.kubeconfig" "$RUN/kubelet.kubeconfig"
  kubeconfig kube-proxy system:kube-proxy
  kubeconfig coredns lfusys:coredns
  kubeconfig admin lfusys-admin # last: its presence marks the PKI as complete
  umask 022
}

# --- components ---------------------------------------------------------------------------------
launch() {
  local name=$1
  shift
  log "starting $name"
  nohup "$(bin_of "$name")" "$@" >"$LOGS/$name.log" 2>&1 &
  echo $! >"$RUN/$name.pid"
}

api_ready() {
  curl -sf --max-time 2 --cacert "$PKI/ca.crt" --cert "$PKI/admin.crt" --key "$PKI/admin.key" \
    "https://$API_HOST:$API_PORT/readyz" | grep -qx ok
}

start_etcd() {
  alive etcd && return
  # A new etcd means a new, empty cluster: tests start from a known state.
  rm -rf "$RUN/etcd"
  # Plain HTTP on loopback only; no fsync, because this data is thrown away anyway.
  launch etcd --name lfusys-test --data-dir "$RUN/etcd" \
    --listen-client-urls "http://127.0.0.1:$ETCD_PORT" --advertise-client-urls "http://127.0.0.1:$ETCD_PORT" \
    --listen-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" --initial-advertise-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" \
    --initial-cluster "lfusys-test=http://127.0.0.1:$ETCD_PEER_PORT" --initial-cluster-state new \
    --unsafe-no-fsync --log-level warn
  wait_for etcd 30 curl -sf --max-time 2 "http://127.0.0.1:$ETCD_PORT/health"
}

start_apiserver() {
  alive kube-apiserver && return
  mkdir -p "$RUN/kube-apiserver"
  # Real Nodes: it listens on and advertises the bridge's address, so the `kubernetes` Service
  # leads Pods (the operator's, in-cluster) to it. kwok: 127.0.0.1 with no endpoint reconciler
  # (loopback Endpoints are invalid); every client is then a host process using the kubeconfig.
  # Node,RBAC: the chart's RBAC is really enforced. Admission plugins are the defaults
  # (NamespaceLifecycle, ServiceAccount, PodSecurity, ResourceQuota, ...) plus NodeRestriction,
  # as kubeadm sets them.
  local endpoints=()
  [[ $NODES_MODE == kwok ]] && endpoints=(--endpoint-reconciler-type none)
  launch kube-apiserver \
    --etcd-servers "http://127.0.0.1:$ETCD_PORT" \
    --bind-address "$API_HOST" --secure-port "$API_PORT" \
    --advertise-address "$API_HOST" "${endpoints[@]}" \
    --cert-dir "$RUN/kube-apiserver" \
    --tls-cert-file "$PKI/apiserver.crt" --tls-private-key-file "$PKI/apiserver.key" \
    --client-ca-file "$PKI/ca.crt" \
    --requestheader-client-ca-file "$PKI/ca.crt" --requestheader-allowed-names front-proxy-client \
    --requestheader-username-headers X-Remote-User --requestheader-group-headers X-Remote-Group \
    --requestheader-extra-headers-prefix X-Remote-Extra- \
    --proxy-client-cert-file "$PKI/front-proxy-client.crt" --proxy-client-key-file "$PKI/front-proxy-client.key" \
    --authorization-mode Node,RBAC \
    --enable-admission-plugins NodeRestriction \
    --allow-privileged=true \
    --service-cluster-ip-range "$SERVICE_CIDR" \
    --service-account-issuer https://kubernetes.default.svc.cluster.local \
    --service-account-key-file "$PKI/sa.pub" \
    --service-account-signing-key-file "$PKI/sa.key" \
    --kubelet-client-certificate "$PKI/admin.crt" --kubelet-client-key "$PKI/admin.key" \
    --kubelet-preferred-address-types InternalIP \
    --profiling=false
  wait_for kube-apiserver 60 api_ready
}

start_controller_manager() {
  alive kube-controller-manager && return
  mkdir -p "$RUN/kube-controller-manager"
  # --use-service-account-credentials: each controller acts as its own ServiceAccount, with
  # the RBAC of a real cluster. No leader election: one instance.
  launch kube-controller-manager \
    --kubeconfig "$RUN/controller-manager.kubeconfig" \
    --authentication-kubeconfig "$RUN/controller-manager.kubeconfig" \
    --authorization-kubeconfig "$RUN/controller-manager.kubeconfig" \
    --bind-address 127.0.0.1 --secure-port "$KCM_PORT" --cert-dir "$RUN/kube-controller-manager" \
    --controllers '*' --use-service-account-credentials \
    --root-ca-file "$PKI/ca.crt" \
    --service-account-private-key-file "$PKI/sa.key" \
    --cluster-signing-cert-file "$PKI/ca.crt" --cluster-signing-key-file "$PKI/ca.key" \
    --service-cluster-ip-range "$SERVICE_CIDR" \
    --leader-elect=false --profiling=false
}

start_scheduler() {
  alive kube-scheduler && return
  mkdir -p "$RUN/kube-scheduler"
  launch kube-scheduler \
    --kubeconfig "$RUN/scheduler.kubeconfig" \
    --authentication-kubeconfig "$RUN/scheduler.kubeconfig" \
    --authorization-kubeconfig "$RUN/scheduler.kubeconfig" \
    --bind-address 127.0.0.1 --secure-port "$SCHED_PORT" --cert-dir "$RUN/kube-scheduler" \
    --leader-elect=false --profiling=false
}

start_kwok() {
  alive kwok && return
  # kwok plays only the Stages in its config (node initialize + heartbeat with Lease, pod
  # ready/complete/delete: the same defaults kwokctl uses), and only for Nodes annotated
  # kwok.x-k8s.io/node=fake.
  launch kwok \
    --kubeconfig "$RUN/admin.kubeconfig" \
    --config "$SHARE/kwok-stages.yaml" \
    --manage-all-nodes=false \
    --manage-nodes-with-annotation-selector kwok.x-k8s.io/node=fake \
    --node-ip 127.0.0.1 --node-port "$KWOK_PORT" --server-address "127.0.0.1:$KWOK_PORT" \
    --tls-cert-file "$PKI/kwok.crt" --tls-private-key-file "$PKI/kwok.key" \
    --cidr "$POD_CIDR" --node-lease-duration-seconds 40
}

kubectl_admin() { "$BIN/kubectl" --kubeconfig "$RUN/admin.kubeconfig" "$@"; }

# Two fake Nodes, schedulable for every Pod (no taint), with a realistic size.
create_nodes() {
  local node
  for node in "${NODES[@]}"; do
    cat <<EOF
---
apiVersion: v1
kind: Node
metadata:
  name: $node
  annotations:
    kwok.x-k8s.io/node: fake
    node.alpha.kubernetes.io/ttl: "0"
  labels:
    type: kwok
    kubernetes.io/hostname: $node
    kubernetes.io/os: linux
    kubernetes.io/arch: amd64
    node-role.kubernetes.io/worker: ""
status:
  allocatable: {cpu: "16", memory: 64Gi, pods: "110"}
  capacity: {cpu: "16", memory: 64Gi, pods: "110"}
EOF
  done | kubectl_admin apply -f - >/dev/null
}

default_sa_exists() { kubectl_admin -n default get serviceaccount default; }

nodes_ready() {
  [[ $(kubectl_admin get nodes -l type=kwok \
    -o jsonpath='{range .items[*]}{.status.conditions[?(@.type=="Ready")].status}{"\n"}{end}' |
    grep -c True) -eq ${#NODES[@]} ]]
}

start() {
  local t0 name
  LFUSYS_CACHE="$CACHE" bash "$HERE/k8s-tools.sh"
  mkdir -p "$RUN" "$LOGS"
  make_pki
  # A half-started control plane is of no use to anyone: on any failure from here on, stop
  # what runs (the logs stay in $LOGS).
  trap 'if [[ $? -ne 0 ]]; then log "start failed; stopping the cluster (logs in $LOGS)"; stop; fi' EXIT
  # A port held by anything else (another state dir's cluster, a stale process) would make a
  # component fail in a confusing way: say so up front.
  local port
  for name in "${COMPONENTS[@]}"; do
    alive "$name" && continue
    for port in $(ports_of "$name"); do
      if port_busy "$port"; then
        log "port $port (for $name) is already in use; set LFUSYS_K8S_PORT_BASE or stop its owner"
        exit 1
      fi
    done
  done
  t0=$(date +%s)
  [[ $NODES_MODE == real ]] && start_node_network
  start_etcd
  start_apiserver
  start_controller_manager
  start_scheduler
  if [[ $NODES_MODE == kwok ]]; then
    start_kwok
    create_nodes
  else
    start_node
  fi
  wait_for kube-controller-manager 60 default_sa_exists
  [[ $NODES_MODE == kwok ]] && wait_for kwok 30 nodes_ready
  for name in kube-controller-manager kube-scheduler; do
    running "$name" || { log "$name exited:"; tail -25 "$LOGS/$name.log" >&2; exit 1; }
  done
  trap - EXIT
  log "cluster ready in $(($(date +%s) - t0)) s: https://$API_HOST:$API_PORT (state in $RUN)"
  [[ $NODES_MODE == real ]] && log "Ingress: http://127.0.0.1:$INGRESS_PORT"
  return 0
}

# Stops one component (TERM, then KILL after 10 s) if it is the process we started.
stop_component() {
  local name=$1 pid j
  if alive "$name"; then
    pid=$(cat "$RUN/$name.pid")
    kill "$pid" 2>/dev/null || true
    for ((j = 0; j < 100; j++)); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
    log "stopped $name ($pid)"
  fi
  rm -f "$RUN/$name.pid"
}

stop() {
  local i
  [[ $NODES_MODE == real ]] && stop_node
  for ((i = ${#CONTROL_PLANE[@]} - 1; i >= 0; i--)); do
    stop_component "${CONTROL_PLANE[$i]}"
  done
  [[ $NODES_MODE == kwok ]] && stop_component kwok
  return 0
}

status() {
  local name ok=0
  for name in "${COMPONENTS[@]}"; do
    if alive "$name"; then
      echo "$name: running (pid $(cat "$RUN/$name.pid"))"
    else
      echo "$name: stopped"
      ok=1
    fi
  done
  if [[ -f $PKI/admin.crt ]] && api_ready; then
    echo "readyz: ok (https://$API_HOST:$API_PORT)"
  else
    echo "readyz: not ready"
    ok=1
  fi
  return $ok
}

# --- offline schemas for kubeconform -------------------------------------------------------------
# kubeconform fetches its JSON schemas from the internet, which is out of reach here. This writes
# the same layout from the running API server's OpenAPI v2 (built-in kinds and every CRD
# installed at that moment), so `helm template ... | kubeconform -strict` runs offline:
#   kubeconform -strict -kubernetes-version X.Y.Z -schema-location "$(scripts/k8s-cluster.sh schemas)"
# prints the -schema-location template on stdout; files under $LFUSYS_CACHE/k8s/schemas.
schemas() {
  local out="${LFUSYS_K8S_SCHEMAS:-$CACHE/k8s/schemas}" version
  api_ready || { log "the cluster is not running: scripts/k8s-cluster.sh start"; exit 1; }
  version=$(kubectl_admin version -o json | python3 "$HERE/json-field.py" serverVersion.gitVersion)
  mkdir -p "$out"
  kubectl_admin get --raw /openapi/v2 >"$out/openapi-v2-$version.json"
  # Written aside, then swapped in: kinds of CRDs deleted since the last run disappear.
  local tmp="$out/.tmp-$$"
  rm -rf "$tmp"
  # One standalone schema per kind, in kubeconform's layout (scripts/k8s-cluster/kubeconform-schemas.py).
  python3 "$HERE/k8s-cluster/kubeconform-schemas.py" "$out/openapi-v2-$version.json" "$tmp" "$version"
  local d
  for d in "$version-standalone" "$version-standalone-strict"; do
    rm -rf "${out:?}/$d"
    mv "$tmp/$d" "$out/$d"
  done
  rmdir "$tmp"
  log "wrote $(find "$out/$version-standalone-strict" -name '*.json' | wc -l) schemas per variant for $version under $out"
  echo "$out/{{ .NormalizedKubernetesVersion }}-standalone{{ .StrictSuffix }}/{{ .ResourceKind }}{{ .KindSuffix }}.json"
}

env_vars() {
  cat <<EOF
export KUBECONFIG=$RUN/admin.kubeconfig
export PATH=$BIN:\$PATH
export LFUSYS_K8S_BIN=$BIN
export LFUSYS_K8S_API=https://$API_HOST:$API_PORT
EOF
  if [[ $NODES_MODE == real ]]; then
    cat <<EOF
export LFUSYS_INGRESS_URL=http://127.0.0.1:$INGRESS_PORT
export LFUSYS_K8S_NODE_IP=$NODE_IP
export CONTAINERD_ADDRESS=$CTRD_SOCK
EOF
  fi
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status) status ;;
  env) env_vars ;;
  schemas) schemas ;;
  *)
    echo "usage: $0 start|stop|status|env|schemas" >&2
    exit 2
    ;;
esac
