# shellcheck shell=bash
# The real Node of the test cluster, sourced by scripts/k8s-cluster.sh (LFUSYS_K8S_NODES=real):
# a bridge and subnet of our own, containerd + runc running the project's images, kubelet,
# kube-proxy (iptables), CoreDNS and Traefik (the Ingress controller) as host processes.
#
# The network: bridge $BRIDGE with $NODE_IP/24, the Pods' subnet ($POD_SUBNET, host-local IPAM,
# CNI bridge plugin, no masquerading by CNI). The API server, kubelet, CoreDNS and the AWS test
# servers listen on $NODE_IP, so Pods reach them; Traefik listens on loopback for the host's
# clients (the browser and the CLI) and routes to Pod endpoints. No traffic leaves the machine:
# Pods have no route to anything but the bridge and the Services behind it.
#
# What the Node changes on the host, and `stop_node` restores exactly (see docs/kubernetes.md):
# sysctls kubelet and the bridge set (vm.overcommit_memory, kernel.panic, kernel.panic_on_oops,
# IPv4 forwarding), the iptables rules kube-proxy and kubelet add (the nftables tables that did
# not exist before are deleted), kubelet's cgroups (kubepods in every hierarchy), mounts below
# the state directory, network namespaces of Pods, and the bridge.

NODE_NAME=lfusys-node
BRIDGE=lfusys0
NODE_IP=${LFUSYS_K8S_NODE_IP:-10.244.0.1}
POD_SUBNET="${NODE_IP%.*}.0/24"
KUBELET_PORT=$((PORT_BASE + 6))
KUBELET_HEALTHZ_PORT=$((PORT_BASE + 7))
PROXY_HEALTHZ_PORT=$((PORT_BASE + 8))
PROXY_METRICS_PORT=$((PORT_BASE + 9))
INGRESS_PORT=$((PORT_BASE + 10))
TRAEFIK_PING_PORT=$((PORT_BASE + 11))
COREDNS_HEALTH_PORT=$((PORT_BASE + 12))
COREDNS_READY_PORT=$((PORT_BASE + 13))
CTRD="$RUN/containerd"
CTRD_SOCK="$CTRD/containerd.sock"
# The sysctls the Node may change: saved at start, written back at stop.
SYSCTLS=(vm.overcommit_memory kernel.panic kernel.panic_on_oops net.ipv4.ip_forward
  net.ipv4.conf.all.forwarding net.ipv4.conf.default.forwarding net.ipv4.conf.all.route_localnet
  net.bridge.bridge-nf-call-iptables net.bridge.bridge-nf-call-ip6tables)

ctr_k8s() { ctr --address "$CTRD_SOCK" --namespace k8s.io "$@"; }

node_packages() {
  local missing=() cmd pkg
  for cmd in containerd:containerd runc:runc iptables:iptables nft:nftables conntrack:conntrack \
    umoci:umoci ip:iproute2; do
    command -v "${cmd%%:*}" >/dev/null || missing+=("${cmd#*:}")
  done
  [[ -x /usr/lib/cni/bridge ]] || missing+=(containernetworking-plugins)
  ((${#missing[@]})) || return 0
  if [[ $(id -u) -ne 0 ]]; then
    log "the real Node needs root and: ${missing[*]}"
    exit 1
  fi
  log "installing ${missing[*]} from Debian's packages"
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -qq "${missing[@]}" >/dev/null 2>&1 ||
    { apt-get update -qq && apt-get install -y -qq "${missing[@]}" >/dev/null; }
  for pkg in containerd; do
    # Debian starts the package's own daemon where an init system runs; ours has its own config.
    [[ -x /etc/init.d/$pkg ]] && /etc/init.d/$pkg stop >/dev/null 2>&1 || true
  done
}

# --- the host: snapshot, bridge, restore -------------------------------------------------------
host_snapshot() {
  [[ -f "$RUN/host.saved" ]] && return # a start after a failed stop keeps the first snapshot
  local key iface
  {
    for key in "${SYSCTLS[@]}"; do
      [[ -e /proc/sys/${key//.//} ]] && echo "sysctl $key $(sysctl -n "$key")"
    done
    for iface in /proc/sys/net/ipv4/conf/*; do
      iface=$(basename "$iface")
      case $iface in all | default) continue ;; esac
      echo "sysctl net.ipv4.conf.$iface.forwarding $(sysctl -n "net.ipv4.conf.$iface.forwarding")"
    done
    nft list tables 2>/dev/null | sed 's/^table /nft /'
    ip -o link show | sed -n 's/^[0-9]*: \([^:@]*\).*/link \1/p'
    { ls /var/run/netns 2>/dev/null || true; } | sed 's/^/netns /'
  } >"$RUN/host.saved.tmp"
  mv "$RUN/host.saved.tmp" "$RUN/host.saved"
}

host_restore() {
  [[ -f "$RUN/host.saved" ]] || return 0
  local kind a b
  # Tables and links that exist now but did not before were made by the Node.
  nft list tables 2>/dev/null | sed 's/^table //' | while read -r family name; do
    grep -qx "nft $family $name" "$RUN/host.saved" || nft delete table "$family" "$name" 2>/dev/null || true
  done
  for a in $(ls /var/run/netns 2>/dev/null); do
    grep -qx "netns $a" "$RUN/host.saved" || ip netns delete "$a" 2>/dev/null || true
  done
  ip link show "$BRIDGE" >/dev/null 2>&1 && ! grep -qx "link $BRIDGE" "$RUN/host.saved" &&
    ip link delete "$BRIDGE" 2>/dev/null
  # Pods' veth ends vanish with their namespaces; a leftover one goes with the bridge's ports.
  ip -o link show | sed -n 's/^[0-9]*: \(veth[^:@]*\).*/\1/p' | while read -r a; do
    grep -qx "link $a" "$RUN/host.saved" || ip link delete "$a" 2>/dev/null || true
  done
  while read -r kind a b; do
    [[ $kind == sysctl && -e /proc/sys/${a//.//} ]] || continue
    [[ $(sysctl -n "$a") == "$b" ]] || sysctl -qw "$a=$b" || log "could not restore $a=$b"
  done <"$RUN/host.saved"
  rm -f "$RUN/host.saved"
}

setup_bridge() {
  if ! ip link show "$BRIDGE" >/dev/null 2>&1; then
    log "creating bridge $BRIDGE with $NODE_IP/24 (the Pods' subnet $POD_SUBNET)"
    ip link add "$BRIDGE" type bridge
    ip addr add "$NODE_IP/24" dev "$BRIDGE"
  fi
  ip link set "$BRIDGE" up
  # Pod → Service → Pod on this one bridge: DNAT on the host, then back out of the same bridge.
  sysctl -qw net.ipv4.ip_forward=1
  [[ -e /proc/sys/net/bridge/bridge-nf-call-iptables ]] && sysctl -qw net.bridge.bridge-nf-call-iptables=1
  # Forwarding only between Pods of our bridge; nothing reaches other interfaces.
  mkdir -p "$RUN/cni/net.d" "$RUN/cni/ipam"
  cat >"$RUN/cni/net.d/10-lfusys.conflist" <<EOF
{
  "cniVersion": "1.0.0",
  "name": "lfusys",
  "plugins": [
    {
      "type": "bridge", "bridge": "$BRIDGE", "isGateway": true, "ipMasq": false, "hairpinMode": true,
      "ipam": {
        "type": "host-local", "dataDir": "$RUN/cni/ipam",
        "ranges": [[{"subnet": "$POD_SUBNET", "gateway": "$NODE_IP"}]],
        "routes": [{"dst": "0.0.0.0/0"}]
      }
    },
    {"type": "portmap", "capabilities": {"portMappings": true}},
    {"type": "loopback"}
  ]
}
EOF
}

# --- containerd ---------------------------------------------------------------------------------
start_containerd() {
  alive containerd && return
  mkdir -p "$CTRD/root" "$CTRD/state"
  cat >"$CTRD/config.toml" <<EOF
version = 2
root = "$CTRD/root"
state = "$CTRD/state"
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.tracing.processor.v1.otlp", "io.containerd.internal.v1.tracing"]
[grpc]
  address = "$CTRD_SOCK"
[ttrpc]
  address = "$CTRD_SOCK.ttrpc"
[metrics]
  address = ""
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "lfusys.local/pause:3.10"
  # This VM lacks CAP_SYS_RESOURCE: runc may not lower a process's oom_score_adj.
  restrict_oom_score_adj = true
  enable_selinux = false
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        # cgroupfs: PID 1 is not systemd (and crun refuses this VM's hybrid cgroups).
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$RUN/cni/net.d"
EOF
  launch containerd --config "$CTRD/config.toml" --log-level warn
  wait_for containerd 30 ctr --address "$CTRD_SOCK" version
}

# Loads the project's images (scripts/images.sh builds them, cached) into containerd.
import_images() {
  local archive ref base
  LFUSYS_CACHE="$CACHE" bash "$HERE/images.sh" build
  while read -r archive ref; do
    base=${ref%:*}
    ctr_k8s images import --base-name "$base" "$archive" >/dev/null
    # The whole list read (not grep -q): under pipefail, a grep that stops at the first match
    # can leave ctr writing to a closed pipe, and the check fail for an image that is there.
    grep -qx "$ref" <<<"$(ctr_k8s images ls -q)" || { log "importing $archive did not give $ref"; exit 1; }
    log "image $ref loaded"
  done < <(LFUSYS_CACHE="$CACHE" bash "$HERE/images.sh" list)
}

# Every container of the k8s.io namespace, killed and removed (after kubelet stopped).
remove_containers() {
  local id
  for id in $(ctr_k8s tasks ls -q 2>/dev/null); do
    ctr_k8s tasks kill -s SIGKILL "$id" >/dev/null 2>&1 || true
  done
  for id in $(ctr_k8s tasks ls -q 2>/dev/null); do
    ctr_k8s tasks delete -f "$id" >/dev/null 2>&1 || true
  done
  for id in $(ctr_k8s containers ls -q 2>/dev/null); do
    ctr_k8s containers delete "$id" >/dev/null 2>&1 || true
  done
}

# containerd's shims outlive it: the ones started for our socket are ours to end.
kill_shims() {
  local pid
  for pid in $(pgrep -f "containerd-shim-runc-v2 .*-address $CTRD_SOCK" || true); do
    kill -9 "$pid" 2>/dev/null || true
  done
}

# --- kubelet ------------------------------------------------------------------------------------
start_kubelet() {
  alive kubelet && return
  mkdir -p "$RUN/kubelet" "$RUN/pod-logs"
  : >"$RUN/kubelet-resolv.conf" # Pods resolve through CoreDNS only; no upstream exists here
  cat >"$RUN/kubelet.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: $NODE_IP
port: $KUBELET_PORT
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: $KUBELET_HEALTHZ_PORT
tlsCertFile: $PKI/kubelet.crt
tlsPrivateKeyFile: $PKI/kubelet.key
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: $PKI/ca.crt}
authorization: {mode: Webhook}
# The VM offers cgroup v1 controllers only and PID 1 is not systemd.
cgroupDriver: cgroupfs
failCgroupV1: false
failSwapOn: false
containerRuntimeEndpoint: unix://$CTRD_SOCK
clusterDomain: cluster.local
clusterDNS: [$NODE_IP]
resolvConf: $RUN/kubelet-resolv.conf
podLogsDir: $RUN/pod-logs
maxPods: 110
serializeImagePulls: false
# The Node's disk is the machine's, shared with the build (tens of GB of it): a percentage of it
# as the eviction threshold evicts the suite's Pods while gigabytes are still free. Absolute
# floors: the suite itself needs well under one.
evictionHard: {memory.available: 200Mi, nodefs.available: 512Mi, imagefs.available: 512Mi, nodefs.inodesFree: 1%}
imageGCHighThresholdPercent: 99
imageGCLowThresholdPercent: 98
EOF
  launch kubelet --config "$RUN/kubelet.yaml" --kubeconfig "$RUN/kubelet.kubeconfig" \
    --root-dir "$RUN/kubelet" --hostname-override "$NODE_NAME" --node-ip "$NODE_IP" \
    --node-labels "lfusys.io/test-node=true"
  wait_for kubelet 60 curl -sf --max-time 2 "http://127.0.0.1:$KUBELET_HEALTHZ_PORT/healthz"
}

node_ready() {
  [[ $(kubectl_admin get node "$NODE_NAME" -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}') == True ]]
}

# kubelet's mounts below the state directory (its root dir bind-mounted onto itself, Pod
# volumes) and its cgroups in every hierarchy.
kubelet_cleanup() {
  local m
  # No mount of ours (a kubelet that never started) is no failure: the restore after it must run.
  { findmnt -rn -o TARGET | grep -F "$RUN/" || true; } | sort -r | while read -r m; do
    umount -l "$m" 2>/dev/null || true
  done
  find /sys/fs/cgroup/*/kubepods -depth -type d -exec rmdir {} + 2>/dev/null || true
}

# --- kube-proxy ---------------------------------------------------------------------------------
start_kube_proxy() {
  alive kube-proxy && return
  cat >"$RUN/kube-proxy.yaml" <<EOF
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clientConnection: {kubeconfig: $RUN/kube-proxy.kubeconfig}
hostnameOverride: $NODE_NAME
mode: iptables
clusterCIDR: $POD_SUBNET
healthzBindAddress: 127.0.0.1:$PROXY_HEALTHZ_PORT
metricsBindAddress: 127.0.0.1:$PROXY_METRICS_PORT
# Node ports on the bridge only, never on the machine's own interfaces or loopback.
nodePortAddresses: ["$NODE_IP/32"]
iptables:
  # Service traffic from a Pod to a Pod on the same bridge is answered through the host.
  masqueradeAll: true
  localhostNodePorts: false
# No CAP_SYS_RESOURCE/CAP_NET_ADMIN on the conntrack sysctls here: leave them as they are.
conntrack: {maxPerCore: 0, min: 0, tcpEstablishedTimeout: 0s, tcpCloseWaitTimeout: 0s}
EOF
  launch kube-proxy --config "$RUN/kube-proxy.yaml"
  wait_for kube-proxy 60 curl -sf --max-time 2 "http://127.0.0.1:$PROXY_HEALTHZ_PORT/healthz"
}

# --- CoreDNS ------------------------------------------------------------------------------------
start_coredns() {
  alive coredns && return
  cat >"$RUN/Corefile" <<EOF
.:53 {
    bind $NODE_IP
    errors
    health 127.0.0.1:$COREDNS_HEALTH_PORT
    ready 127.0.0.1:$COREDNS_READY_PORT
    kubernetes cluster.local in-addr.arpa ip6.arpa {
        kubeconfig $RUN/coredns.kubeconfig lfusys-test
        pods insecure
        fallthrough in-addr.arpa ip6.arpa
    }
    cache 5
}
EOF
  launch coredns -conf "$RUN/Corefile"
  wait_for coredns 60 curl -sf --max-time 2 "http://127.0.0.1:$COREDNS_READY_PORT/ready"
}

# --- Traefik: the Ingress controller ------------------------------------------------------------
start_traefik() {
  alive traefik && return
  # Its identity: a ServiceAccount with the rights of Traefik's Kubernetes Ingress provider.
  local token
  token=$(kubectl_admin -n kube-system create token traefik --duration 48h)
  printf '%s' "$token" >"$RUN/traefik.token"
  launch traefik \
    --global.checknewversion=false --global.sendanonymoususage=false \
    --entrypoints.web.address="127.0.0.1:$INGRESS_PORT" \
    --entrypoints.web.transport.respondingtimeouts.readtimeout=0 \
    --entrypoints.ping.address="127.0.0.1:$TRAEFIK_PING_PORT" \
    --ping=true --ping.entrypoint=ping \
    --providers.kubernetesingress=true \
    --providers.kubernetesingress.endpoint="https://$API_HOST:$API_PORT" \
    --providers.kubernetesingress.token="$token" \
    --providers.kubernetesingress.certauthfilepath="$PKI/ca.crt" \
    --providers.kubernetesingress.ingressendpoint.ip=127.0.0.1 \
    --log.level=INFO
  wait_for traefik 60 curl -sf --max-time 2 "http://127.0.0.1:$TRAEFIK_PING_PORT/ping"
}

# The cluster-level objects the node's add-ons need: their RBAC, the default IngressClass.
node_addons() {
  kubectl_admin apply -f - >/dev/null <<'EOF'
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: "lfusys:coredns"}
rules:
- apiGroups: [""]
  resources: [endpoints, services, pods, namespaces]
  verbs: [list, watch]
- apiGroups: [discovery.k8s.io]
  resources: [endpointslices]
  verbs: [list, watch]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: "lfusys:coredns"}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: "lfusys:coredns"}
subjects: [{apiGroup: rbac.authorization.k8s.io, kind: User, name: "lfusys:coredns"}]
---
apiVersion: v1
kind: ServiceAccount
metadata: {name: traefik, namespace: kube-system}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: "lfusys:traefik"}
rules:
- apiGroups: [""]
  resources: [services, endpoints, secrets, nodes]
  verbs: [get, list, watch]
- apiGroups: [discovery.k8s.io]
  resources: [endpointslices]
  verbs: [list, watch]
- apiGroups: [networking.k8s.io]
  resources: [ingresses, ingressclasses]
  verbs: [get, list, watch]
- apiGroups: [networking.k8s.io]
  resources: [ingresses/status]
  verbs: [update]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: "lfusys:traefik"}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: "lfusys:traefik"}
subjects: [{kind: ServiceAccount, name: traefik, namespace: kube-system}]
---
apiVersion: networking.k8s.io/v1
kind: IngressClass
metadata:
  name: traefik
  annotations: {ingressclass.kubernetes.io/is-default-class: "true"}
spec: {controller: traefik.io/ingress-controller}
EOF
}

# --- the whole Node -----------------------------------------------------------------------------
# Before the control plane: the API server listens on the bridge's address.
start_node_network() {
  node_packages
  host_snapshot
  setup_bridge
}

start_node() {
  start_containerd
  import_images
  node_addons
  start_kubelet
  start_kube_proxy
  start_coredns
  start_traefik
  wait_for kubelet 90 node_ready
}

# Reverse order; each step also cleans up after a component that died on its own.
stop_node() {
  stop_component traefik
  stop_component coredns
  stop_component kube-proxy
  [[ -x $BIN/kube-proxy ]] && "$BIN/kube-proxy" --cleanup >/dev/null 2>&1 || true
  stop_component kubelet
  if alive containerd; then remove_containers; fi
  stop_component containerd
  kill_shims
  kubelet_cleanup
  host_restore
}
