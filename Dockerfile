# Container image of rtm: the `rtm-server` binary, with the `rtm` command beside it.
#
#   docker build -t rtm .
#   docker run -d --name rtm -p 4433:4433/udp -p 4434:4434/tcp -v rtm-data:/var/lib/rtm rtm
#
# docs/operators.md, "Packaging: container and systemd", says more. This file has not been
# built on the development machine yet; treat it as a starting point.

# ---- build ---------------------------------------------------------------------------------
# rust-version in Cargo.toml is 1.89 (edition 2024); the builder and the runtime image are both
# Debian bookworm, so the binaries find the same glibc at run time.
FROM rust:1.89-bookworm AS build
WORKDIR /src

# Every workspace member must be present, even those not built here (rtm-testkit, benches):
# Cargo reads all the members' manifests, and the benches' manifest names its bench files.
# fuzz/ is a workspace of its own, excluded from this one, and is left out.
COPY Cargo.toml Cargo.lock ./
COPY rtm-proto rtm-proto
COPY rtm-client rtm-client
COPY rtm-server rtm-server
COPY rtm-testkit rtm-testkit
COPY rtm-cli rtm-cli
COPY benches benches

# The README's release build: the server and the command-line client, exactly the locked
# dependency versions.
RUN cargo build --release --locked -p rtm-server -p rtm-cli

# ---- run -----------------------------------------------------------------------------------
FROM debian:bookworm-slim

# ca-certificates: the system's roots, for an `rtm` client that trusts them instead of a
# pinned certificate, and for rediss:// connections to a Redis engine behind a public CA.
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/*

# An unprivileged user owns the data directory; the server never needs root (every port here
# is above 1024). Its ids are fixed, so that files mounted from the host (the configuration,
# cert_file and key_file) can be made readable by it: uid and gid 10001.
RUN groupadd --system --gid 10001 rtm \
    && useradd --system --uid 10001 --gid rtm --home-dir /var/lib/rtm \
        --shell /usr/sbin/nologin rtm \
    && mkdir -p /var/lib/rtm /etc/rtm \
    && chown rtm:rtm /var/lib/rtm

COPY --from=build /src/target/release/rtm-server /usr/local/bin/rtm-server
COPY --from=build /src/target/release/rtm /usr/local/bin/rtm

# The data directory: the generated self-signed certificate (cert.pem, key.pem, when no
# cert_file is configured), metadata.sqlite3 with its -wal and -shm files, and the `lock` file
# that keeps a second server off the same directory. One container per volume.
VOLUME ["/var/lib/rtm"]
WORKDIR /var/lib/rtm
USER rtm

# 4433/udp: native QUIC and WebTransport. 4434/tcp: WebSocket (and the WebTransport certificate
# hash for browsers in development).
# 4435/tcp: the internal HTTP listener for health and metrics. It listens on 127.0.0.1:4435 by
# default, which nothing outside the container reaches; to publish it, add
# `--http-listen 0.0.0.0:4435` to the arguments and `-p 4435:4435/tcp` to `docker run`, and keep
# that port off the public network.
EXPOSE 4433/udp 4434/tcp 4435/tcp

# The server binds loopback addresses unless told otherwise, which inside a container would
# make it unreachable; the arguments below move both listeners to every interface.
#
# Without a configuration file this is the embedded defaults' server, good for a first try with
# native clients, not for production:
# - no [[apps]]: any App ID is served, without a token;
# - a WebSocket listener on a non-loopback address speaks TLS (wss://) unless told otherwise
#   (docs/operators.md, "Browsers"; WebSocketConfig::uses_tls in rtm-server/src/config.rs),
#   here with the self-signed certificate generated in /var/lib/rtm, which browsers do not
#   trust;
# - pages of no origin may connect off loopback until [web] allowed_origins lists them.
#
# Configure apps, certificates and origins with a file mounted read-only, for example
#   docker run ... -v /srv/rtm/rtm.toml:/etc/rtm/rtm.toml:ro rtm \
#       --config /etc/rtm/rtm.toml --data-dir /var/lib/rtm
# (arguments given to `docker run` replace the CMD below). Command-line flags override the
# file, so with a file set `listen` and `[websocket] listen` to 0.0.0.0 addresses there, or
# keep --listen and --websocket-listen on the command line. deploy/systemd/rtm.toml is a
# minimal example.
#
# The same image makes tokens: docker run --rm rtm token --app-id ... --app-certificate ...
# --user-id alice. Inside a running container, `rtm --cert /var/lib/rtm/cert.pem sub demo`
# subscribes through the server's own certificate.
#
# SIGTERM (what `docker stop` sends) stops the server gracefully: clients are told and
# reconnect. The server waits up to 5 s for its connections to close and 2 s for the QUIC
# endpoint to go idle, about 7 s in all (plus Redis calls on the Redis engine); docker sends
# SIGKILL after 10 s by default, so give it room: `docker run --stop-timeout 30 ...`, or the
# orchestrator's grace period.
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/rtm-server"]
CMD ["--listen", "0.0.0.0:4433", "--websocket-listen", "0.0.0.0:4434", "--data-dir", "/var/lib/rtm"]
