#!/usr/bin/env bash
# Installs, from Debian's packages, whatever agentbus needs to build, run and test that is
# not already on this machine. Idempotent: a second run installs nothing. Used by `make run`,
# `make test` and .ci/run, so a fresh machine and a developer's laptop take the same path.
#
# Note: libulfius-dev pulls libcurl4-gnutls-dev, which conflicts with libcurl4-openssl-dev;
# never name the OpenSSL flavour of libcurl here. OpenSSL's libcrypto (libssl-dev) is fine:
# it is what we use for SHA-256 and HMAC.
set -euo pipefail

packages=(
    build-essential pkg-config make gcc
    librdkafka-dev libpq-dev libulfius-dev libjansson-dev libcurl4-gnutls-dev libssl-dev
    libmicrohttpd-dev
    postgresql postgresql-contrib
    curl ca-certificates python3 procps iproute2
)
# Optional extras (real Apache Kafka needs a JRE and Maven to fetch the jars).
if [ "${AGENTBUS_WITH_KAFKA:-0}" = 1 ]; then
    packages+=(default-jre-headless maven)
fi

missing=()
for p in "${packages[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
        missing+=("$p")
    fi
done

if [ ${#missing[@]} -eq 0 ]; then
    exit 0
fi

echo "install-deps: installing ${missing[*]}" >&2
sudo=""
if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
