# One image with the four services and the tools (agentbus-ingress, -dispatcher, -llm-worker,
# -notifier; agentbus-topics, -kafka, -devbroker, agentbusctl). The build stage is Debian
# bookworm with the same -dev packages as a developer's machine (scripts/install-deps.sh);
# the runtime stage is bookworm-slim with only the shared libraries the binaries link
# (tests/e2e/test_deploy_compose.py checks the list against the binaries' NEEDED entries),
# curl for the health checks, and a non-root user.
#
# No HEALTHCHECK here: each service has its own ops port, so docker-compose.yml (and the
# Kubernetes manifests) say which /readyz to ask.

FROM debian:bookworm AS build
# Versions are not pinned: bookworm's point releases only take security fixes, which we want.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends \
        build-essential pkg-config librdkafka-dev libpq-dev libulfius-dev libjansson-dev \
        libcurl4-gnutls-dev libssl-dev libmicrohttpd-dev \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY Makefile ./
COPY common common
COPY services services
COPY tools tools
COPY tests/unit tests/unit
RUN make -j"$(nproc)" all

FROM debian:bookworm-slim
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends \
        librdkafka1 libpq5 libulfius2.7 libjansson4 libcurl3-gnutls libssl3 libmicrohttpd12 \
        ca-certificates curl \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 agentbus \
    && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin agentbus
# agentbus* takes the services, the tools and agentbusctl, not the unit-test runner.
COPY --from=build /src/build/release/bin/agentbus* /usr/local/bin/
COPY deploy/migrations /usr/share/agentbus/migrations
ENV AGENTBUS_DATABASE_MIGRATIONS_DIR=/usr/share/agentbus/migrations
WORKDIR /tmp
EXPOSE 8080 3011 9100 9101 9102 9103
# Numeric, so Kubernetes' runAsNonRoot can check it without reading /etc/passwd.
USER 10001:10001
CMD ["agentbus-ingress"]
