# syntax=docker/dockerfile:1
# The `strata` binary (every component, including `strata operator`) as a small, static, non-root image.
#
#   docker build -t strata:0.1.0 .
#
# Stage 1 builds a static musl binary; stage 2 is distroless "static" (no shell, no libc), running as
# the "nonroot" user 65532 that the Helm chart's securityContext expects.

ARG RUST_VERSION=1.95.0

FROM docker.io/library/rust:${RUST_VERSION}-bookworm AS build
# musl-tools: the C compiler for aws-lc-sys (TLS) on the musl target; cmake: its build.
RUN apt-get update \
 && apt-get install -y --no-install-recommends musl-tools cmake \
 && rm -rf /var/lib/apt/lists/*
RUN rustup target add x86_64-unknown-linux-musl
ENV CC_x86_64_unknown_linux_musl=musl-gcc \
    CARGO_TERM_COLOR=never
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p strata --target x86_64-unknown-linux-musl \
 && install -D -m 0755 target/x86_64-unknown-linux-musl/release/strata /out/strata

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/strata /usr/local/bin/strata
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/strata"]
CMD ["--help"]
