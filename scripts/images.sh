#!/usr/bin/env bash
# Builds the LFUSYS container images on this machine without a Docker engine, the way
# distroless images are made: a root filesystem from Debian packages unpacked with `dpkg -x`
# (libc6, libgcc-s1, ca-certificates; no maintainer script runs, so the CA bundle is assembled
# here as update-ca-certificates would), the release binaries on top, packed as OCI images with
# umoci. The images are what docker/services.Dockerfile and docker/operator.Dockerfile describe
# (scripts/image-check.py compares them):
#   ghcr.io/lfusys/lfusys:VERSION           gateway, sessions, uploads + the web app (CRD default)
#   ghcr.io/lfusys/lfusys-operator:VERSION  the operator (the chart's default image)
#   lfusys.local/pause:3.10                 the Pod sandbox image of the test cluster's containerd
# Non-root (65532, "nonroot"), no shell, CA certificates, VERSION = the workspace version.
#
# Usage: scripts/images.sh build|list|archive NAME
#   build     builds what is missing or stale (release binaries, web app, Debian packages) and
#             writes one OCI archive per image under $LFUSYS_CACHE/images/ (`ctr images import`
#             takes them); an image whose inputs did not change is not repacked
#   list      prints "ARCHIVE REFERENCE" per image (what k8s-cluster.sh imports)
#   archive   prints the archive path of lfusys, lfusys-operator or pause
# Settings: LFUSYS_CACHE (~/.cache/lfusys), CARGO_TARGET_DIR ($LFUSYS_CACHE/target).
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
CACHE="${LFUSYS_CACHE:-$HOME/.cache/lfusys}"
OUT="$CACHE/images"
# shellcheck source=scripts/cargo-set.sh
source "$ROOT/scripts/cargo-set.sh"
VERSION=$(sed -n '/^\[workspace.package\]/,/^\[/s/^version = "\(.*\)"/\1/p' "$ROOT/Cargo.toml")
PAUSE_TAG=3.10
RUN_AS=65532
BASE_PACKAGES=(libc6 libgcc-s1 ca-certificates)

log() { printf '[images] %s\n' "$*" >&2; }

list() {
  echo "$OUT/lfusys-$VERSION.oci.tar ghcr.io/lfusys/lfusys:$VERSION"
  echo "$OUT/lfusys-operator-$VERSION.oci.tar ghcr.io/lfusys/lfusys-operator:$VERSION"
  echo "$OUT/pause-$PAUSE_TAG.oci.tar lfusys.local/pause:$PAUSE_TAG"
}

need() {
  local missing=()
  command -v umoci >/dev/null || missing+=(umoci)
  command -v gcc >/dev/null || missing+=(gcc)
  if ((${#missing[@]})); then
    if [[ $(id -u) -ne 0 ]]; then
      log "missing: ${missing[*]}; install them (apt-get install ${missing[*]})"
      exit 1
    fi
    log "installing ${missing[*]} from Debian's packages"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null ||
      { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null; }
  fi
}

# The Debian packages of the base layer, downloaded once (the versions this machine's apt offers).
debs() {
  local dir="$OUT/debs" p
  mkdir -p "$dir"
  for p in "${BASE_PACKAGES[@]}"; do
    compgen -G "$dir/${p}_*.deb" >/dev/null && continue
    log "downloading the Debian package $p"
    (cd "$dir" && { apt-get download -qq "$p" 2>/dev/null || { apt-get update -qq && apt-get download -qq "$p"; }; })
  done
}

# The base root filesystem in $1: what distroless/cc-debian12:nonroot holds that we need.
base_rootfs() {
  local root=$1 deb
  mkdir -p "$root"
  for deb in "$OUT"/debs/*.deb; do dpkg -x "$deb" "$root"; done
  # Documentation and lintian overrides are of no use at run time.
  rm -rf "$root/usr/share/doc" "$root/usr/share/man" "$root/usr/share/lintian" "$root/usr/share/info"
  # ca-certificates' postinst would run update-ca-certificates: every certificate of the
  # package, concatenated into the bundle TLS libraries read, plus the hashed directory's file.
  mkdir -p "$root/etc/ssl/certs"
  find "$root/usr/share/ca-certificates" -name '*.crt' | LC_ALL=C sort | while read -r crt; do
    cat "$crt"
    [[ -z $(tail -c1 "$crt") ]] || echo
  done >"$root/etc/ssl/certs/ca-certificates.crt"
  rm -rf "$root/usr/sbin" "$root/etc/ca-certificates.conf.d" # update-ca-certificates itself: no shell to run it
  cat >"$root/etc/passwd" <<EOF
root:x:0:0:root:/root:/sbin/nologin
nobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin
nonroot:x:$RUN_AS:$RUN_AS:nonroot:/home/nonroot:/sbin/nologin
EOF
  cat >"$root/etc/group" <<EOF
root:x:0:
nogroup:x:65534:
nonroot:x:$RUN_AS:
EOF
  echo 'hosts: files dns' >"$root/etc/nsswitch.conf"
  mkdir -p "$root/tmp" "$root/home/nonroot" "$root/root"
  chmod 1777 "$root/tmp"
  chmod 700 "$root/root"
  chown "$RUN_AS:$RUN_AS" "$root/home/nonroot"
}

# A reproducible layer tar of directory $1 into $2 (ownership as it is in the directory).
layer() {
  chmod 755 "$1" # the layer's root is the image's /: everyone must traverse it
  tar --sort=name --mtime=@0 --numeric-owner --xattrs -C "$1" -cf "$2" .
}

# What the Dockerfiles' base (gcr.io/distroless/cc-debian12:nonroot) puts in an image's config.
BASE_CONFIG=(--config.user "$RUN_AS" --config.workingdir /home/nonroot
  --config.env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
  --config.env SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt)

# pack NAME TAG OUT_TAR LAYER... -- UMOCI-CONFIG-ARGS...: an OCI archive with those layers.
pack() {
  local name=$1 tag=$2 out=$3 layout
  shift 3
  layout=$(mktemp -d "$OUT/.layout-$name.XXXXXX")
  rm -rf "$layout"
  umoci init --layout "$layout"
  umoci new --image "$layout:$tag"
  while [[ $1 != -- ]]; do
    umoci raw add-layer --image "$layout:$tag" "$1"
    shift
  done
  shift
  umoci config --image "$layout:$tag" --os linux --architecture amd64 "$@"
  umoci gc --layout "$layout"
  tar --sort=name --mtime=@0 --numeric-owner -C "$layout" -cf "$out.tmp" oci-layout index.json blobs
  mv "$out.tmp" "$out"
  rm -rf "$layout"
}

# Inputs' hash: an image is repacked only when one of them changed.
inputs_hash() { cat "$@" | sha256sum | cut -c1-64; }

stale() {
  local out=$1 hash=$2
  [[ ! -s $out || $(cat "$out.inputs" 2>/dev/null) != "$hash" ]]
}

# labels ARRAY TITLE DESCRIPTION REF: appends the OCI annotations the Dockerfiles' LABELs set.
labels() {
  local -n into=$1
  into+=(--config.label "org.opencontainers.image.title=$2"
    --config.label "org.opencontainers.image.description=$3"
    --config.label "org.opencontainers.image.version=$VERSION"
    --config.label "org.opencontainers.image.ref.name=$4"
    --config.label "org.opencontainers.image.licenses=Apache-2.0")
}

build() {
  need
  mkdir -p "$OUT"
  work=$(mktemp -d "$OUT/.work.XXXXXX")
  trap 'rm -rf "$work"' EXIT

  log "release binaries (the test run's build, scripts/cargo-set.sh)"
  # Every binary of the workspace, from the build the system tests ran: the very same files.
  (cd "$ROOT" && build_release)
  local rel="$CARGO_TARGET_DIR/release"

  if bash "$ROOT/scripts/web-app.sh" stale; then
    log "the web app (frontend/dist)"
    bash "$ROOT/scripts/web-app.sh" build
  fi

  debs
  local base_hash
  base_hash=$(inputs_hash "$0" "$OUT"/debs/*.deb)
  if stale "$OUT/base.tar" "$base_hash"; then
    log "base layer from ${BASE_PACKAGES[*]}"
    rm -rf "$work/base"
    base_rootfs "$work/base"
    layer "$work/base" "$OUT/base.tar"
    echo "$base_hash" >"$OUT/base.tar.inputs"
  fi

  # --- ghcr.io/lfusys/lfusys: the services and the web app ---
  local out="$OUT/lfusys-$VERSION.oci.tar" hash web_files
  web_files=$(cd "$ROOT/frontend/dist" && find . -type f | LC_ALL=C sort)
  hash=$(inputs_hash "$OUT/base.tar.inputs" "$rel/gateway" "$rel/sessions" "$rel/uploads" \
    <(cd "$ROOT/frontend/dist" && echo "$web_files" && echo "$web_files" | xargs cat))
  if stale "$out" "$hash"; then
    log "packing ghcr.io/lfusys/lfusys:$VERSION"
    local app="$work/services"
    mkdir -p "$app/usr/local/bin" "$app/usr/share/lfusys" "$app/var/lib/lfusys"
    for b in gateway sessions uploads; do
      objcopy --strip-debug "$rel/$b" "$app/usr/local/bin/$b"
    done
    cp -r "$ROOT/frontend/dist" "$app/usr/share/lfusys/web"
    chown "$RUN_AS:$RUN_AS" "$app/var/lib/lfusys"
    layer "$app" "$work/services.tar"
    local -a config=()
    labels config lfusys "LFUSYS services: gateway, sessions, uploads, and the web app" \
      "ghcr.io/lfusys/lfusys:$VERSION"
    pack lfusys "$VERSION" "$out" "$OUT/base.tar" "$work/services.tar" -- "${BASE_CONFIG[@]}" \
      --config.user "$RUN_AS:$RUN_AS" --config.workingdir /var/lib/lfusys \
      --config.env LFUSYS_WEB_DIR=/usr/share/lfusys/web \
      --config.env LFUSYS_DATA_DIR=/var/lib/lfusys \
      --config.env LFUSYS_GATEWAY_LISTEN=0.0.0.0:8080 \
      --config.env LFUSYS_UPLOADS_LISTEN=0.0.0.0:8081 \
      --config.env LFUSYS_SESSIONS_LISTEN=0.0.0.0:50051 \
      --config.exposedports 8080/tcp --config.exposedports 8081/tcp --config.exposedports 50051/tcp \
      --config.cmd /usr/local/bin/gateway "${config[@]}"
    echo "$hash" >"$out.inputs"
  fi

  # --- ghcr.io/lfusys/lfusys-operator ---
  out="$OUT/lfusys-operator-$VERSION.oci.tar"
  hash=$(inputs_hash "$OUT/base.tar.inputs" "$rel/lfusys-operator")
  if stale "$out" "$hash"; then
    log "packing ghcr.io/lfusys/lfusys-operator:$VERSION"
    local op="$work/operator"
    mkdir -p "$op/usr/local/bin"
    objcopy --strip-debug "$rel/lfusys-operator" "$op/usr/local/bin/lfusys-operator"
    layer "$op" "$work/operator.tar"
    local -a config=()
    labels config lfusys-operator \
      "LFUSYS operator: reconciles LfusysCluster resources and autoscales the upload workers" \
      "ghcr.io/lfusys/lfusys-operator:$VERSION"
    pack lfusys-operator "$VERSION" "$out" "$OUT/base.tar" "$work/operator.tar" -- "${BASE_CONFIG[@]}" \
      --config.user "$RUN_AS:$RUN_AS" \
      --config.env LFUSYS_OPERATOR_LISTEN=0.0.0.0:8080 \
      --config.exposedports 8080/tcp \
      --config.entrypoint /usr/local/bin/lfusys-operator "${config[@]}"
    echo "$hash" >"$out.inputs"
  fi

  # --- lfusys.local/pause: the sandbox image (our own pause: sleeps, reaps, exits on TERM) ---
  out="$OUT/pause-$PAUSE_TAG.oci.tar"
  hash=$(inputs_hash "$0" "$ROOT/scripts/images/pause.c")
  if stale "$out" "$hash"; then
    log "packing lfusys.local/pause:$PAUSE_TAG"
    mkdir -p "$work/pause"
    gcc -static -Os -s -o "$work/pause/pause" "$ROOT/scripts/images/pause.c"
    layer "$work/pause" "$work/pause.tar"
    pack pause "$PAUSE_TAG" "$out" "$work/pause.tar" -- \
      --config.user 65535:65535 --config.entrypoint /pause
    echo "$hash" >"$out.inputs"
  fi
  log "images ready:"
  list | while read -r archive ref; do log "  $ref  $(du -h "$archive" | cut -f1)  $archive"; done
}

case "${1:-}" in
  build) build ;;
  list) list ;;
  archive)
    list | while read -r archive ref; do
      case $ref in */"${2:-}":*) echo "$archive" ;; esac
    done
    ;;
  *)
    echo "usage: $0 build|list|archive NAME" >&2
    exit 2
    ;;
esac
