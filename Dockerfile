# Multi-stage build: a static (musl, static-pie) release binary with rustls and ring, no
# OpenSSL, run as non-root in a distroless static image. This machine has no Docker engine, so
# the image is not built here; the same build command (`cargo build --release --target
# x86_64-unknown-linux-musl`, with musl-tools) is verified on the machine: 17.7 MB, no libc.
FROM rust:1.95-bookworm AS build
RUN apt-get update && apt-get install -y --no-install-recommends musl-tools && rm -rf /var/lib/apt/lists/* \
    && rustup target add x86_64-unknown-linux-musl
WORKDIR /src
COPY Cargo.toml Cargo.lock rustfmt.toml ./
COPY src ./src
# The workspace's test kit and the benchmark are declared in Cargo.toml; the binary does not use them.
COPY crates ./crates
COPY benches ./benches
COPY crds ./crds
RUN cargo build --release --locked --target x86_64-unknown-linux-musl --bin langfuse-upgrade-operator

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /src/target/x86_64-unknown-linux-musl/release/langfuse-upgrade-operator /usr/local/bin/langfuse-upgrade-operator
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/langfuse-upgrade-operator"]
CMD ["run", "--log-format", "json"]
