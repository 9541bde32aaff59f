# weir container image: multi-stage, dependency layer cached with cargo-chef,
# stripped binary, small non-root runtime.
#
#   docker build -t weir .
#   docker run -p 8080:8080 -p 9901:9901 -v $PWD/config/k8s:/etc/weir:ro weir
#
# The config is read from /etc/weir/weir.toml (mount it); rollout state and
# the audit log go to /var/lib/weir (a volume). Ports: 8080 data, 9901 admin.
# Health: GET /healthz (liveness) and GET /readyz (readiness) on the admin
# port; the image has no shell tools, so probe from the orchestrator.

FROM rust:1.95-slim-bookworm AS chef
# protoc: fleet mode's etcd client compiles etcd's protos.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends protobuf-compiler \
    && rm -rf /var/lib/apt/lists/*
RUN cargo install cargo-chef --locked --version 0.1.73
WORKDIR /src

FROM chef AS planner
COPY . .
RUN cargo chef prepare --recipe-path recipe.json

FROM chef AS builder
COPY --from=planner /src/recipe.json recipe.json
# Dependencies only: this layer is reused until Cargo.toml/Cargo.lock change.
RUN cargo chef cook --release --locked --recipe-path recipe.json -p weir-proxy --features fleet
COPY . .
# The same script CI runs outside Docker.
RUN ./scripts/build-release.sh

FROM debian:bookworm-slim AS runtime
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && mkdir -p /etc/weir /var/lib/weir \
    && chown 65535:65535 /var/lib/weir
COPY --from=builder /src/target/release/weir /usr/local/bin/weir
USER 65535:65535
WORKDIR /var/lib/weir
EXPOSE 8080 9901
VOLUME ["/var/lib/weir"]
ENTRYPOINT ["/usr/local/bin/weir"]
CMD ["run", "-c", "/etc/weir/weir.toml"]
