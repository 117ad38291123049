# ringlink: a transparent sidecar proxy on io_uring.
#
# io_uring must be allowed by the container's seccomp profile: Docker >= 25 and containerd >= 2
# block io_uring_setup/io_uring_enter/io_uring_register by default. Run with a profile that
# allows them (or `--security-opt seccomp=unconfined`). Without io_uring the monoio runtime
# (the default) falls back to epoll and says so in its log; RINGLINK_RUNTIME=glommio refuses to
# start with a message naming the fix.

FROM rust:1-bookworm AS build
# glommio's build script compiles its bundled liburing: it needs git, sh and a C compiler.
RUN apt-get update && apt-get install -y --no-install-recommends git gcc make libc6-dev \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN cargo build --release -p ringlink-engine --bin ringlink

FROM debian:bookworm-slim
COPY --from=build /src/target/release/ringlink /usr/local/bin/ringlink
# Linkerd's proxy uid: proxy-init's iptables rules exempt its own traffic by this uid.
RUN useradd --system --uid 2102 --no-create-home --shell /usr/sbin/nologin ringlink
USER 2102
EXPOSE 4140 4143 4190 4191
ENTRYPOINT ["/usr/local/bin/ringlink"]
