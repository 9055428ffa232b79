# syntax=docker/dockerfile:1
# The operator image: ghcr.io/lfusys/lfusys-operator:<workspace version> (0.1.0), the default
# image of the Helm chart charts/lfusys-operator.
#
#   docker build -f docker/operator.Dockerfile -t ghcr.io/lfusys/lfusys-operator:0.1.0 .
#
# Build context: the repository root (see /.dockerignore). Needs BuildKit for the cache mounts.
# No Docker engine runs in our CI, so this file is not built there: scripts/images.sh builds the
# same image from Debian packages and umoci, and scripts/image-check.py checks that it matches
# this file (user, paths, entrypoint, environment, ports, labels); see docs/kubernetes.md.

ARG RUST_VERSION=1.95

# --- the binary: the release build for x86_64-unknown-linux-gnu on Debian 12, as
# scripts/images.sh uses it (glibc, libgcc_s; TLS is kube's rustls with the ring provider; it
# trusts the API server through the ServiceAccount's CA, the AWS SDK (queue depth) through
# /etc/ssl/certs) ----------------------------------------------------------------------------------
FROM rust:${RUST_VERSION}-bookworm AS build
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin lfusys-operator \
 && mkdir -p /out \
 && objcopy --strip-debug target/release/lfusys-operator /out/lfusys-operator

# --- the image: distroless cc (libc6, libgcc-s1, CA certificates), non-root, no shell ------------
FROM gcr.io/distroless/cc-debian12:nonroot
ARG VERSION=0.1.0
LABEL org.opencontainers.image.title="lfusys-operator" \
      org.opencontainers.image.description="LFUSYS operator: reconciles LfusysCluster resources and autoscales the upload workers" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.ref.name="ghcr.io/lfusys/lfusys-operator:${VERSION}" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=build /out/lfusys-operator /usr/local/bin/lfusys-operator
# The ops port (/healthz, /readyz, /metrics); the chart sets the same.
ENV LFUSYS_OPERATOR_LISTEN=0.0.0.0:8080
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/lfusys-operator"]
