# Multi-stage build: a static-as-possible release binary (rustls, no OpenSSL) in a distroless,
# non-root runtime image. This machine has no Docker engine, so this file is not built in CI here.
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock rustfmt.toml ./
COPY src ./src
COPY crds ./crds
RUN cargo build --release --locked --bin langfuse-upgrade-operator

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /src/target/release/langfuse-upgrade-operator /usr/local/bin/langfuse-upgrade-operator
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/langfuse-upgrade-operator"]
CMD ["run", "--log-format", "json"]
