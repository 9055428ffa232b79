#!/usr/bin/env bash
# Installs, once, the binaries of a real Kubernetes control plane and its client tools, built
# from the Go module proxy (no Docker, no download sites here), into a cache outside the clone:
#   kube-apiserver, kube-controller-manager, kube-scheduler, kubectl,
#   kubelet, kube-proxy (the real Nodes of the cluster)               (k8s.io/kubernetes)
#   etcd        (go.etcd.io/etcd/server/v3, its main package)
#   kwok        (sigs.k8s.io/kwok/cmd/kwok: plays the kubelets of fake Nodes)
#   helm        (helm.sh/helm/v3/cmd/helm)
#   kubeconform (github.com/yannh/kubeconform/cmd/kubeconform: offline schema checks)
#   coredns     (github.com/coredns/coredns: the cluster's DNS)
#   traefik     (github.com/traefik/traefik/v3/cmd/traefik: the Ingress controller)
# plus kwok's default Stage definitions (share/kwok-stages.yaml), which make Pods go Running.
#
# Usage: scripts/k8s-tools.sh [--print-bin]
#   Builds what is missing, one tool at a time, and prints progress on stderr. Each binary is
#   stored as bin/NAME-VERSION with a symlink bin/NAME, so a version bump rebuilds only what
#   changed and an existing binary is never rebuilt. --print-bin prints the bin directory.
# Settings: LFUSYS_CACHE (default ~/.cache/lfusys); everything lives under $LFUSYS_CACHE/k8s,
# including GOPATH, GOMODCACHE and GOCACHE, so CI reuses a warm cache (about 10 minutes of
# building on 2 cores when it is cold).
set -euo pipefail

# Pinned versions. The k8s.io staging modules (k8s.io/api, client-go, ...) are published as
# v0.MINOR.PATCH for kubernetes v1.MINOR.PATCH; the wrapper module below pins them to match.
K8S_VERSION="v1.37.2"
ETCD_VERSION="v3.7.3"
KWOK_VERSION="v0.8.0"
HELM_VERSION="v3.22.0"
KUBECONFORM_VERSION="v0.8.0"
COREDNS_VERSION="v1.15.0"
# v3.6: the newest v3 line whose go.mod needs no module that exists only inside traefik's own
# repository (v3.7 replaces github.com/traefik/traefik/dynamic/ext with a local path).
TRAEFIK_VERSION="v3.6.12"

CACHE="${LFUSYS_CACHE:-$HOME/.cache/lfusys}"
K8S_CACHE="$CACHE/k8s"
BIN="$K8S_CACHE/bin"
SHARE="$K8S_CACHE/share"
SRC="$K8S_CACHE/src"   # generated wrapper modules (never in the repo)
LOGS="$K8S_CACHE/build-logs"

if [[ ${1:-} == --print-bin ]]; then
  echo "$BIN"
  exit 0
fi

log() { printf '[k8s-tools] %s\n' "$*" >&2; }

# The Go environment of every build: its own module and build caches under the k8s cache;
# static binaries; two packages compiled at a time (2 cores); never a toolchain download.
export GOPATH="$K8S_CACHE/go"
export GOMODCACHE="$K8S_CACHE/go/pkg/mod"
export GOCACHE="$K8S_CACHE/go-build"
export GOFLAGS="-p=2 -modcacherw -buildvcs=false"
export CGO_ENABLED=0
export GOTOOLCHAIN="${GOTOOLCHAIN:-local}"
mkdir -p "$BIN" "$SHARE" "$SRC" "$LOGS"

# One installer at a time per cache (a test run and a `start` may race): the second waits,
# then finds everything built.
exec 9>"$K8S_CACHE/.install.lock"
if ! flock -n 9; then
  log "another k8s-tools.sh is installing into $K8S_CACHE; waiting for it"
  flock 9
fi

have() { [[ -x "$BIN/$1-$2" ]]; }

# Start time of the current tool, for "built ... in N s" (downloads and wrapper included).
TOOL_START=$(date +%s)

# Points bin/NAME at bin/NAME-VERSION (relative link, so the cache can be moved).
link() { ln -sfn "$1-$2" "$BIN/$1"; }

# Runs a build command with its output in a log file; on failure shows the log's tail.
build() {
  local name=$1 version=$2 start end
  shift 2
  log "building $name $version (log: $LOGS/$name-$version.log)"
  start=${TOOL_START:-$(date +%s)}
  if ! "$@" >"$LOGS/$name-$version.log" 2>&1; then
    log "FAILED to build $name $version; last lines of the log:"
    tail -30 "$LOGS/$name-$version.log" >&2
    exit 1
  fi
  end=$(date +%s)
  log "built $name $version in $((end - start)) s (downloads included)"
  link "$name" "$version"
  TOOL_START=$(date +%s)
}

# The commands built from k8s.io/kubernetes. Each must be a `tool` of the wrapper module, or its
# go.sum lacks what only it imports (kubelet: k8s.io/cri-streaming, ...).
K8S_COMMANDS=(kube-apiserver kube-controller-manager kube-scheduler kubectl kubelet kube-proxy)

# --- k8s.io/kubernetes ------------------------------------------------------------------------
# k8s.io/kubernetes requires its staging modules at v0.0.0 and replaces them with ./staging
# paths, which a dependency's go.mod cannot do for us. A wrapper module that requires it and
# replaces each staging module with its published v0.X.Y makes it buildable from the proxy.
k8s_wrapper() {
  local dir="$SRC/kubernetes-$K8S_VERSION-nodes" staging="v0${K8S_VERSION#v1}"
  if [[ -f "$dir/go.sum" ]]; then
    echo "$dir"
    return
  fi
  log "preparing the kubernetes $K8S_VERSION wrapper module in $dir"
  mkdir -p "$dir"
  local gomod
  gomod=$(cd "$dir" && go mod download -json "k8s.io/kubernetes@$K8S_VERSION" | sed -n 's/.*"GoMod": "\(.*\)".*/\1/p')
  {
    echo "module lfusys.local/k8s-tools"
    echo
    echo "go $(sed -n 's/^go \([0-9.]*\)$/\1/p' "$gomod")"
    echo
    echo "require k8s.io/kubernetes $K8S_VERSION"
    echo
    echo "replace ("
    # Every module k8s.io/kubernetes requires at v0.0.0 is one of its staging modules.
    sed -n 's/^\t\(k8s\.io\/[a-z0-9-]*\) v0\.0\.0$/\1/p' "$gomod" | while read -r m; do
      printf '\t%s => %s %s\n' "$m" "$m" "$staging"
    done
    echo ")"
    echo
    echo "tool ("
    for c in "${K8S_COMMANDS[@]}"; do
      printf '\tk8s.io/kubernetes/cmd/%s\n' "$c"
    done
    echo ")"
  } >"$dir/go.mod.tmp"
  mv "$dir/go.mod.tmp" "$dir/go.mod"
  (cd "$dir" && go mod tidy) >"$LOGS/kubernetes-wrapper-$K8S_VERSION.log" 2>&1 || {
    log "FAILED: go mod tidy of the kubernetes wrapper; see $LOGS/kubernetes-wrapper-$K8S_VERSION.log"
    tail -30 "$LOGS/kubernetes-wrapper-$K8S_VERSION.log" >&2
    rm -f "$dir/go.sum"
    exit 1
  }
  echo "$dir"
}

# The version stamps `make` would set (kubectl version, /version, helm's kubeVersion checks).
k8s_ldflags() {
  local v=${K8S_VERSION#v} major minor flags="-s -w"
  major=${v%%.*}
  minor=${v#*.}
  minor=${minor%%.*}
  for pkg in k8s.io/client-go/pkg/version k8s.io/component-base/version; do
    flags+=" -X $pkg.gitVersion=$K8S_VERSION -X $pkg.gitMajor=$major -X $pkg.gitMinor=$minor"
    flags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
  done
  echo "$flags"
}

install_kubernetes() {
  local c dir=""
  for c in "${K8S_COMMANDS[@]}"; do
    if have "$c" "$K8S_VERSION"; then
      link "$c" "$K8S_VERSION"
      continue
    fi
    [[ -n $dir ]] || dir=$(k8s_wrapper)
    # The four share most packages: the shared GOCACHE makes each after the first faster.
    build "$c" "$K8S_VERSION" bash -c "cd '$dir' && go build -trimpath -ldflags='$(k8s_ldflags)' \
      -o '$BIN/$c-$K8S_VERSION' 'k8s.io/kubernetes/cmd/$c'"
  done
}

# --- etcd -----------------------------------------------------------------------------------
# go.etcd.io/etcd/server/v3 has ./ replace directives for its sibling modules, so
# `go install ...@version` refuses it; a wrapper module resolves the siblings at the same tag.
install_etcd() {
  if have etcd "$ETCD_VERSION"; then
    link etcd "$ETCD_VERSION"
    return
  fi
  local dir="$SRC/etcd-$ETCD_VERSION"
  if [[ ! -f "$dir/go.sum" ]]; then
    mkdir -p "$dir"
    cat >"$dir/go.mod" <<EOF
module lfusys.local/etcd-tools

go 1.26.0

require (
	go.etcd.io/etcd/api/v3 $ETCD_VERSION
	go.etcd.io/etcd/client/pkg/v3 $ETCD_VERSION
	go.etcd.io/etcd/client/v3 $ETCD_VERSION
	go.etcd.io/etcd/pkg/v3 $ETCD_VERSION
	go.etcd.io/etcd/server/v3 $ETCD_VERSION
)

tool go.etcd.io/etcd/server/v3
EOF
    (cd "$dir" && go mod tidy) >"$LOGS/etcd-wrapper-$ETCD_VERSION.log" 2>&1 || {
      log "FAILED: go mod tidy of the etcd wrapper; see $LOGS/etcd-wrapper-$ETCD_VERSION.log"
      tail -30 "$LOGS/etcd-wrapper-$ETCD_VERSION.log" >&2
      rm -f "$dir/go.sum"
      exit 1
    }
  fi
  build etcd "$ETCD_VERSION" bash -c "cd '$dir' && go build -trimpath -ldflags='-s -w' \
    -o '$BIN/etcd-$ETCD_VERSION' go.etcd.io/etcd/server/v3"
}

# --- modules that `go install pkg@version` builds as their authors pinned them ----------------
# go install pkg@version writes bin/<last path element>; build into a temporary GOBIN and
# rename to the versioned file name.
go_install() {
  local name=$1 version=$2 pkg=$3 ldflags=${4:-}
  local tmp="$K8S_CACHE/gobin-tmp"
  rm -rf "$tmp"
  mkdir -p "$tmp"
  GOBIN="$tmp" go install -trimpath -ldflags="-s -w $ldflags" "$pkg@$version" &&
    mv "$tmp/$name" "$BIN/$name-$version" &&
    rm -rf "$tmp"
}

# A module whose go.mod has replace directives (which `go install pkg@version` refuses): a
# wrapper module requires it and repeats its replacements (all of them module@version ones).
wrapper_install() {
  local name=$1 version=$2 module=$3 pkg=$4 ldflags=${5:-}
  local dir="$SRC/$name-$version" gomod
  if [[ ! -f "$dir/go.sum" ]]; then
    mkdir -p "$dir"
    gomod=$(cd "$SRC" && go mod download -json "$module@$version" | sed -n 's/.*"GoMod": "\(.*\)".*/\1/p')
    {
      echo "module lfusys.local/$name-tools"
      echo
      sed -n 's/^go \([0-9.]*\)$/go \1/p' "$gomod"
      echo
      echo "require $module $version"
      echo
      # Single-line and block replace directives, kept as they are.
      awk '/^replace \(/{b=1; print; next} b{print; if ($0 ~ /^\)/) b=0; next} /^replace /{print}' "$gomod"
      echo
      echo "tool $pkg"
    } >"$dir/go.mod"
    (cd "$dir" && go mod tidy) >"$LOGS/$name-wrapper-$version.log" 2>&1 || {
      log "FAILED: go mod tidy of the $name wrapper; see $LOGS/$name-wrapper-$version.log"
      tail -30 "$LOGS/$name-wrapper-$version.log" >&2
      rm -f "$dir/go.sum"
      exit 1
    }
  fi
  (cd "$dir" && go build -trimpath -ldflags="-s -w $ldflags" -o "$BIN/$name-$version" "$pkg")
}

install_coredns() {
  if ! have coredns "$COREDNS_VERSION"; then
    build coredns "$COREDNS_VERSION" go_install coredns "$COREDNS_VERSION" github.com/coredns/coredns
  fi
  link coredns "$COREDNS_VERSION"
}

install_traefik() {
  if ! have traefik "$TRAEFIK_VERSION"; then
    build traefik "$TRAEFIK_VERSION" wrapper_install traefik "$TRAEFIK_VERSION" \
      github.com/traefik/traefik/v3 github.com/traefik/traefik/v3/cmd/traefik \
      "-X github.com/traefik/traefik/v3/pkg/version.Version=$TRAEFIK_VERSION"
  fi
  link traefik "$TRAEFIK_VERSION"
}

install_kwok() {
  if ! have kwok "$KWOK_VERSION"; then
    build kwok "$KWOK_VERSION" go_install kwok "$KWOK_VERSION" sigs.k8s.io/kwok/cmd/kwok \
      "-X sigs.k8s.io/kwok/pkg/consts.Version=${KWOK_VERSION#v}"
  fi
  link kwok "$KWOK_VERSION"
  # The kwok binary plays only the Stages it is given (kwokctl embeds these same files): node
  # initialize + heartbeat with Lease, pod ready/complete/delete. Copied from the module source.
  local stages="$SHARE/kwok-stages-$KWOK_VERSION.yaml"
  if [[ ! -s $stages ]]; then
    local dir f
    dir=$(cd "$SRC" && go mod download -json "sigs.k8s.io/kwok@$KWOK_VERSION" | sed -n 's/.*"Dir": "\(.*\)".*/\1/p')
    for f in node/fast/node-initialize.yaml node/heartbeat-with-lease/node-heartbeat-with-lease.yaml \
      pod/fast/pod-ready.yaml pod/fast/pod-complete.yaml pod/fast/pod-delete.yaml; do
      echo "---"
      cat "$dir/kustomize/stage/$f"
    done >"$stages.tmp"
    mv "$stages.tmp" "$stages"
  fi
  ln -sfn "kwok-stages-$KWOK_VERSION.yaml" "$SHARE/kwok-stages.yaml"
}

install_helm() {
  if ! have helm "$HELM_VERSION"; then
    # As helm's Makefile does: its version, and the Kubernetes version `helm template` and
    # `helm lint` assume (client-go's minor + 1.0 → 1.minor).
    local gomod kminor
    gomod=$(cd "$SRC" && go mod download -json "helm.sh/helm/v3@$HELM_VERSION" | sed -n 's/.*"GoMod": "\(.*\)".*/\1/p')
    kminor=$(sed -n 's/^\tk8s\.io\/client-go v0\.\([0-9]*\)\..*/\1/p' "$gomod")
    build helm "$HELM_VERSION" go_install helm "$HELM_VERSION" helm.sh/helm/v3/cmd/helm \
      "-X helm.sh/helm/v3/internal/version.version=$HELM_VERSION -X helm.sh/helm/v3/internal/version.gitTreeState=clean \
-X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMajor=1 -X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMinor=$kminor \
-X helm.sh/helm/v3/pkg/chartutil.k8sVersionMajor=1 -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMinor=$kminor"
  fi
  link helm "$HELM_VERSION"
}

install_kubeconform() {
  if ! have kubeconform "$KUBECONFORM_VERSION"; then
    build kubeconform "$KUBECONFORM_VERSION" go_install kubeconform "$KUBECONFORM_VERSION" \
      github.com/yannh/kubeconform/cmd/kubeconform "-X main.version=$KUBECONFORM_VERSION"
  fi
  link kubeconform "$KUBECONFORM_VERSION"
}

start=$(date +%s)
# Smallest first, so a cold cache gets useful tools early; one build at a time (2 cores).
install_kubeconform
install_etcd
install_kwok
install_helm
install_kubernetes
install_coredns
install_traefik
# The build cache (about 5 GB after the kubernetes builds) only speeds up a rebuild of the same
# versions, which never happens (the binaries are kept), and the module cache (another 5 GB)
# only a build of a new version, which downloads what it lacks: drop both unless asked to keep
# them. The disk is shared with the Rust build and the Pod suite's Node.
if [[ ${LFUSYS_K8S_KEEP_GOCACHE:-0} != 1 ]]; then
  if [[ -d $GOCACHE ]]; then go clean -cache && rm -rf "$GOCACHE"; fi
  if [[ -d $GOMODCACHE ]]; then go clean -modcache; fi
fi
log "all tools ready in $BIN ($(($(date +%s) - start)) s)"
