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
want_test=0
for arg in "$@"; do
    case "$arg" in
    --test) want_test=1 ;; # the end-to-end suite is pytest on the system's python3
    *) echo "usage: install-deps.sh [--test]" >&2; exit 2 ;;
    esac
done
# Real Apache Kafka needs a JRE and Maven to fetch the jars; scripts/kafka.sh installs them
# itself when `java` or `mvn` is missing, so they are not listed here.

missing=()
for p in "${packages[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
        missing+=("$p")
    fi
done

sudo=""
if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
if [ ${#missing[@]} -gt 0 ]; then
    echo "install-deps: installing ${missing[*]}" >&2
    $sudo apt-get update -qq
    $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# pytest for whichever python3 is first on PATH (a pyenv one, or Debian's).
if [ $want_test -eq 1 ] && ! python3 -c 'import pytest' 2>/dev/null; then
    echo "install-deps: installing pytest" >&2
    python3 -m pip install -q pytest 2>/dev/null \
        || { $sudo apt-get update -qq && $sudo apt-get install -y -qq python3-pytest >/dev/null; }
    python3 -c 'import pytest' || { echo "install-deps: pytest is not importable by python3" >&2; exit 1; }
fi

# The offline validators the deployment and contract tests run (compose, kustomize and the
# Kubernetes schemas, the OpenAPI and AsyncAPI linters): one idempotent script per tool under
# scripts/test-tools/, each installing into .tools/ from the registries.
if [ $want_test -eq 1 ]; then
    for tool in "$(dirname "$0")"/test-tools/*.sh; do
        [ -e "$tool" ] || continue
        bash "$tool" || { echo "install-deps: $tool failed" >&2; exit 1; }
    done
fi
