# weir container image: multi-stage, dependency layer cached with cargo-chef,
# stripped binary, distroless non-root runtime (glibc, libgcc, CA
# certificates; no shell, no package manager, no curl).
#
#   docker build -t weir .
#
# Try it with nothing else running (built-in upstreams and traffic, a staged
# rollout to 100 % in about a minute):
#
#   docker run --rm weir demo
#
# Serve with a config: the image runs `weir run -c /etc/weir/weir.toml`.
# config/weir.toml is self-contained (no token, certificate or state file):
# it listens on 127.0.0.1:8080 (data) and 127.0.0.1:9901 (admin), the
# defaults, and sends traffic to upstreams on 127.0.0.1:9001 (stable) and
# 127.0.0.1:9002 (canary). Those are loopback addresses, so run it in the
# host's network namespace (Linux), where they are the host's ports:
#
#   docker run --rm -v "$PWD/config:/etc/weir:ro" weir check -c /etc/weir/weir.toml
#   docker run --rm --network host -v "$PWD/config:/etc/weir:ro" weir
#
# With bridge networking (`-p 8080:8080`) weir must listen on 0.0.0.0, and
# an admin address other than loopback requires [admin] token_file; see
# config/full.toml. config/k8s/ is for Kubernetes (its config names the
# token Secret the manifests mount) and does not run on its own.
#
# Mount the config directory rather than the file: weir reloads the config
# when it changes, and editors replace a file by renaming a new one over it,
# which a single-file bind mount does not follow. Relative paths in the
# config resolve against its directory (here the read-only /etc/weir), so
# point writable files at the /var/lib/weir volume, which belongs to the
# image's user (65535): e.g. [state] file = "/var/lib/weir/state.json",
# [log] audit = "/var/lib/weir/audit.jsonl". Ports: 8080 data, 9901 admin.
# Health: GET /healthz (liveness) and GET /readyz (readiness) on the admin
# port; with no shell in the image, probe over HTTP from the orchestrator.
#
# Base images are pinned by tag. Tags move when they are rebuilt (security
# updates), and the distroless images have no versioned tags at all, so for
# reproducible builds also pin the digest, read where there is a registry:
#   docker buildx imagetools inspect rust:1.95.0-slim-bookworm
#   crane digest gcr.io/distroless/cc-debian12:nonroot
# and write FROM image:tag@sha256:<digest> (Renovate or Dependabot can keep
# it current). Builder and runtime are both Debian 12 (bookworm): the binary
# links against the builder's glibc, which the runtime's must not predate.

FROM rust:1.95.0-slim-bookworm AS chef
# protoc: fleet mode's etcd client compiles etcd's protos. Not version-pinned:
# the Debian archive drops superseded versions, so a pin would break builds.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends protobuf-compiler \
    && rm -rf /var/lib/apt/lists/*
RUN cargo install cargo-chef --locked --version 0.1.73
WORKDIR /src

FROM chef AS planner
# The build context is trimmed by .dockerignore (no target/, .git, fuzz/).
COPY . .
RUN cargo chef prepare --recipe-path recipe.json

FROM chef AS builder
COPY --from=planner /src/recipe.json recipe.json
# Dependencies only: this layer is reused until Cargo.toml/Cargo.lock change.
RUN cargo chef cook --release --locked --recipe-path recipe.json -p weir-proxy --features fleet
COPY . .
# The same script CI runs outside Docker. The empty directory becomes the
# runtime's state volume (the runtime has no mkdir to make it).
RUN ./scripts/build-release.sh \
    && mkdir -p /out/state

FROM gcr.io/distroless/cc-debian12:nonroot AS runtime
COPY --from=builder /src/target/release/weir /usr/local/bin/weir
COPY --from=builder --chown=65535:65535 /out/state/ /var/lib/weir/
# The same numeric user as config/k8s (runAsUser: 65535), not distroless'
# own "nonroot" (65532); it needs no /etc/passwd entry.
USER 65535:65535
WORKDIR /var/lib/weir
EXPOSE 8080 9901
VOLUME ["/var/lib/weir"]
ENTRYPOINT ["/usr/local/bin/weir"]
CMD ["run", "-c", "/etc/weir/weir.toml"]
