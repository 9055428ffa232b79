# syntax=docker/dockerfile:1
# The LFUSYS services image: ghcr.io/lfusys/lfusys:<workspace version> (0.1.0), the default
# spec.image of an LfusysCluster. One image holds the three service binaries and the web app;
# the operator picks the binary per component (command: ["/usr/local/bin/gateway"], ...).
#
#   docker build -f docker/services.Dockerfile -t ghcr.io/lfusys/lfusys:0.1.0 .
#
# Build context: the repository root (see /.dockerignore). Needs BuildKit (the default builder
# of Docker 23+, and of podman/buildah) for the cache mounts. No Docker engine runs in our CI,
# so this file is not built there; see docs/kubernetes.md.

ARG RUST_VERSION=1.95
ARG NODE_VERSION=20

# --- the web app: frontend/dist ------------------------------------------------------------------
FROM node:${NODE_VERSION}-bookworm-slim AS web
WORKDIR /src/frontend
COPY frontend/package.json frontend/package-lock.json ./
RUN --mount=type=cache,target=/root/.npm npm ci --no-audit --no-fund
COPY frontend/ ./
RUN npm run build

# --- the binaries: static, musl ------------------------------------------------------------------
# What the static musl build needs, and why it works for this workspace:
# - the x86_64-unknown-linux-musl target (rustup) and a C compiler for it: musl-tools provides
#   musl-gcc, which the cc crate picks for *-linux-musl targets. C is compiled by ring (TLS:
#   rustls and the AWS SDK's HTTP client use the ring provider, never aws-lc-rs or OpenSSL),
#   libsqlite3-sys (rusqlite "bundled": SQLite from source) and libmimalloc-sys.
# - musl's own malloc is slow under many threads: every service binary sets mimalloc as its
#   global allocator, so the musl build keeps glibc-like allocation performance.
# - no protoc: the gRPC contract is compiled by protox (pure Rust) in commons/build.rs.
# - Rust's musl targets link statically (crt-static) by default: no libc in the final image.
# - at run time TLS needs only CA certificates: the AWS SDK's client loads the system store
#   (rustls-native-certs: /etc/ssl/certs), which distroless/static ships.
FROM rust:${RUST_VERSION}-bookworm AS build
ARG TARGET=x86_64-unknown-linux-musl
RUN apt-get update \
 && apt-get install -y --no-install-recommends musl-tools \
 && rm -rf /var/lib/apt/lists/* \
 && rustup target add "${TARGET}"
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --target "${TARGET}" -p gateway -p sessions -p uploads \
 && mkdir -p /out/bin /out/data \
 && cp "target/${TARGET}/release/gateway" "target/${TARGET}/release/sessions" \
       "target/${TARGET}/release/uploads" /out/bin/

# --- the image: distroless static, non-root, no shell ----------------------------------------------
FROM gcr.io/distroless/static-debian12:nonroot
ARG VERSION=0.1.0
LABEL org.opencontainers.image.title="lfusys" \
      org.opencontainers.image.description="LFUSYS services: gateway, sessions, uploads, and the web app" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.ref.name="ghcr.io/lfusys/lfusys:${VERSION}" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=build /out/bin/ /usr/local/bin/
COPY --from=web /src/frontend/dist/ /usr/share/lfusys/web/
# An empty directory owned by the non-root user, for embedded-mode data or a mounted volume.
COPY --from=build --chown=65532:65532 /out/data/ /var/lib/lfusys/
# In a container every service listens on all interfaces (the binaries default to loopback);
# the operator sets these explicitly as well.
ENV LFUSYS_WEB_DIR=/usr/share/lfusys/web \
    LFUSYS_DATA_DIR=/var/lib/lfusys \
    LFUSYS_GATEWAY_LISTEN=0.0.0.0:8080 \
    LFUSYS_UPLOADS_LISTEN=0.0.0.0:8081 \
    LFUSYS_SESSIONS_LISTEN=0.0.0.0:50051
WORKDIR /var/lib/lfusys
USER 65532:65532
# gateway, uploads (chunk ingest), sessions (gRPC); each also serves /healthz, /readyz, /metrics.
EXPOSE 8080 8081 50051
CMD ["/usr/local/bin/gateway"]
