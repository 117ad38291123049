# ringlink: a transparent sidecar proxy on io_uring, as a drop-in Linkerd proxy image.
#
# Point Linkerd's injector at it (`config.linkerd.io/proxy-image` and `-version`) and change
# nothing else: the pod spec the injector writes finds every path it uses here.
#   /usr/lib/linkerd/linkerd2-proxy             the proxy (also the image's entrypoint, and
#                                               under linkerd2-proxy-identity, the name of
#                                               Linkerd's own entrypoint: ringlink makes its
#                                               key and CSR itself)
#   /usr/lib/linkerd/linkerd-await              the postStart hook: waits for /ready
#   /usr/lib/linkerd/linkerd2-network-validator the CNI-mode init container
#   /bin/sleep                                  the preStop hook (waitBeforeExitSeconds)
# It runs as uid 2102 (proxy-init's iptables rules exempt the proxy's own traffic by it) and
# needs no shell. engine/tests/image.rs builds this layout from the COPY lines below and runs
# each program in it.
#
# io_uring must be allowed by the container's seccomp profile: Docker >= 25 and containerd >= 2
# block io_uring_setup/io_uring_enter/io_uring_register by default (the injector asks for
# `RuntimeDefault`). Without io_uring the monoio runtime (the default) falls back to epoll and
# says so in its log; RINGLINK_RUNTIME=glommio refuses to start with a message naming the fix.

FROM rust:1-bookworm AS build
# glommio's build script compiles its bundled liburing: it needs git, sh and a C compiler.
RUN apt-get update && apt-get install -y --no-install-recommends git gcc make libc6-dev \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN cargo build --release -p ringlink-engine \
    --bin ringlink --bin linkerd-await --bin linkerd2-network-validator

FROM debian:bookworm-slim
COPY --from=build /src/target/release/ringlink /usr/lib/linkerd/linkerd2-proxy
COPY --from=build /src/target/release/ringlink /usr/lib/linkerd/linkerd2-proxy-identity
COPY --from=build /src/target/release/linkerd-await /usr/lib/linkerd/linkerd-await
COPY --from=build /src/target/release/linkerd2-network-validator /usr/lib/linkerd/linkerd2-network-validator
COPY LICENSE /usr/lib/linkerd/LICENSE
# Linkerd's proxy uid: proxy-init's iptables rules exempt its own traffic by this uid.
USER 2102:2102
EXPOSE 4140 4143 4190 4191
ENTRYPOINT ["/usr/lib/linkerd/linkerd2-proxy"]
