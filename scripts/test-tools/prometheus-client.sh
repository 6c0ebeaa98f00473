#!/usr/bin/env bash
# prometheus_client for whichever python3 is first on PATH: tests/e2e/test_metrics.py reads
# every service's /metrics with its text-format parser, the one Prometheus' own Python
# client uses, so a scrape that parses here is one a Prometheus server takes. Idempotent:
# nothing is installed when the module already imports. Run by install-deps.sh --test.
set -euo pipefail

if python3 -c 'import prometheus_client.parser' 2>/dev/null; then
    exit 0
fi
echo "install-deps: installing prometheus_client" >&2
sudo=""
if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
python3 -m pip install -q prometheus_client 2>/dev/null \
    || { $sudo apt-get update -qq \
         && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq python3-prometheus-client >/dev/null; }
python3 -c 'import prometheus_client.parser' \
    || { echo "install-deps: prometheus_client is not importable by python3" >&2; exit 1; }
