# syntax=docker/dockerfile:1
# The LFUSYS services image: ghcr.io/lfusys/lfusys:<workspace version> (0.1.0), the default
# spec.image of an LfusysCluster. One image holds the three service binaries and the web app;
# the operator picks the binary per component (command: ["/usr/local/bin/gateway"], ...).
#
#   docker build -f docker/services.Dockerfile -t ghcr.io/lfusys/lfusys:0.1.0 .
#
# Build context: the repository root (see /.dockerignore). Needs BuildKit (the default builder
# of Docker 23+, and of podman/buildah) for the cache mounts. No Docker engine runs in our CI,
# so this file is not built there: scripts/images.sh builds the same image from Debian packages
# and umoci, and scripts/image-check.py checks that it matches this file (user, paths,
# entrypoint, environment, ports, labels); see docs/kubernetes.md.

ARG RUST_VERSION=1.95
ARG NODE_VERSION=20

# --- the web app: frontend/dist ------------------------------------------------------------------
FROM node:${NODE_VERSION}-bookworm-slim AS web
WORKDIR /src/frontend
COPY frontend/package.json frontend/package-lock.json ./
RUN --mount=type=cache,target=/root/.npm npm ci --no-audit --no-fund
COPY frontend/ ./
RUN npm run build

# --- the binaries: the release build for x86_64-unknown-linux-gnu on Debian 12, as
# scripts/images.sh uses them: glibc and libgcc_s from the base image; C is compiled by ring
# (TLS: rustls and the AWS SDK's HTTP client use the ring provider, never OpenSSL),
# libsqlite3-sys (rusqlite "bundled") and libmimalloc-sys, all linked in; no protoc (protox in
# sessions-api/build.rs). At run time TLS needs only CA certificates (/etc/ssl/certs). ----------------
FROM rust:${RUST_VERSION}-bookworm AS build
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin gateway --bin sessions --bin uploads \
 && mkdir -p /out/bin /out/data \
 && for b in gateway sessions uploads; do objcopy --strip-debug "target/release/$b" "/out/bin/$b"; done

# --- the image: distroless cc (libc6, libgcc-s1, CA certificates), non-root, no shell ------------
FROM gcr.io/distroless/cc-debian12:nonroot
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
