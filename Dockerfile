# syntax=docker/dockerfile:1.7
#
# One image, both binaries: /usr/local/bin/switchyard-operator and
# /usr/local/bin/switchyard-edge. The Helm chart picks the binary with `command:`.
#
#   docker build -t registry.example/switchyard:0.1.0 .
#
# Why one image and not two: the binaries come from one Cargo workspace, share the
# routing crate (the operator/edge contract on the Redis key space) and most dependencies,
# and are built by one `cargo build`; one image means one build, one scan, one signature
# and one tag to pin, and the operator and the edge of a release can never run different
# versions of that contract. The cost: each pod also carries the other, unused binary.

ARG RUST_VERSION=1.89
ARG DEBIAN_RELEASE=bookworm

# --- build: the release binaries ---------------------------------------------------------
FROM rust:${RUST_VERSION}-slim-${DEBIAN_RELEASE} AS build
WORKDIR /src
# rustls (with ring) is the only TLS stack: no OpenSSL headers are needed, and the slim
# image's gcc builds ring's C parts.
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/usr/local/cargo/git \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p switchyard-operator -p switchyard-edge \
 && install -D -m 0755 target/release/switchyard-operator /out/switchyard-operator \
 && install -D -m 0755 target/release/switchyard-edge /out/switchyard-edge

# --- runtime: glibc, libgcc, CA certificates; no shell, no package manager ----------------
# distroless/cc matches the build stage's Debian release (same glibc). Its `nonroot` user
# (65532) is the one the chart's securityContext runs as; the root filesystem can be
# read-only (the binaries write nothing), and the preStop hook is Kubernetes' own `sleep`,
# so no shell is needed.
FROM gcr.io/distroless/cc-debian12:nonroot
ARG VERSION=0.1.0
LABEL org.opencontainers.image.title="switchyard" \
      org.opencontainers.image.description="Switchyard: Kubernetes-native SIP blind transfer (operator and SIP edge)" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="${VERSION}"
COPY --from=build /out/ /usr/local/bin/
USER 65532:65532
# SIP (UDP and TCP) for the edge; /metrics, /healthz, /readyz for both.
EXPOSE 5060/udp 5060/tcp 9090/tcp
ENTRYPOINT ["/usr/local/bin/switchyard-edge"]
