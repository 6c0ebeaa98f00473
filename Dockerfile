# One image with the four services and the tools. Build stage on Debian bookworm (the
# libraries come from Debian's packages, as on a developer's machine); a slim runtime stage
# with only the shared libraries, running as a non-root user.
FROM debian:bookworm AS build
RUN apt-get update && apt-get install -y --no-install-recommends \
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
RUN apt-get update && apt-get install -y --no-install-recommends \
        librdkafka1 libpq5 libulfius2.7 libjansson4 libcurl3-gnutls libssl3 libmicrohttpd12 \
        ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --no-create-home agentbus
COPY --from=build /src/build/release/bin/agentbus-* /usr/local/bin/
COPY deploy/migrations /usr/share/agentbus/migrations
ENV AGENTBUS_DATABASE_MIGRATIONS_DIR=/usr/share/agentbus/migrations
USER 10001
