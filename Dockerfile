# syntax=docker/dockerfile:1
# runboat-server container image (see deploy/README.md).
#
#   docker build -t runboat-server .                          # minimal image
#   docker build --target runtime-kubectl -t runboat-server:kubectl .
#                                   # with kubectl, for kustomize-format kubefiles
#
# The default target is `runtime`: the stripped release binary on
# distroless/cc (glibc, CA certificates, user 65532), about 40 MB
# uncompressed (binary ~16.5 MB, ~6.5 MB gzipped). `runtime-kubectl` adds
# kubectl (~55 MB more); only kubefiles in the original's kustomize format
# need it, the default (native) kubefiles are rendered in-process.

ARG RUST_VERSION=1.89
ARG KUBECTL_VERSION=v1.33.0

FROM docker.io/library/rust:${RUST_VERSION}-bookworm AS build
WORKDIR /src
COPY . .
# Release build of the locked dependencies, without debug info and
# stripped: the workspace's release profile keeps line tables for the
# benchmarks' perf profiles; the image does not need them.
ENV CARGO_PROFILE_RELEASE_DEBUG=false \
    CARGO_PROFILE_RELEASE_STRIP=true
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p runboat-server \
    && install -D -m 0755 target/release/runboat-server /out/runboat-server

FROM docker.io/library/debian:bookworm-slim AS kubectl
ARG KUBECTL_VERSION
# Set by BuildKit to the platform being built (amd64, arm64).
ARG TARGETARCH
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates curl \
    && rm -rf /var/lib/apt/lists/*
RUN curl -fsSLo /kubectl "https://dl.k8s.io/release/${KUBECTL_VERSION}/bin/linux/${TARGETARCH}/kubectl" \
    && curl -fsSLo /kubectl.sha256 "https://dl.k8s.io/release/${KUBECTL_VERSION}/bin/linux/${TARGETARCH}/kubectl.sha256" \
    && echo "$(cat /kubectl.sha256)  /kubectl" | sha256sum -c - \
    && chmod 0755 /kubectl

FROM gcr.io/distroless/cc-debian12:nonroot AS runtime-kubectl
COPY --from=build /out/runboat-server /usr/local/bin/runboat-server
COPY --from=kubectl /kubectl /usr/local/bin/kubectl
USER 65532:65532
EXPOSE 8000
ENTRYPOINT ["/usr/local/bin/runboat-server"]

# Last, so it is what a plain `docker build` produces.
FROM gcr.io/distroless/cc-debian12:nonroot AS runtime
COPY --from=build /out/runboat-server /usr/local/bin/runboat-server
USER 65532:65532
EXPOSE 8000
ENTRYPOINT ["/usr/local/bin/runboat-server"]
