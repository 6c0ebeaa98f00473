#!/usr/bin/env bash
# The test driver behind `make test`: the C unit tests (plain and sanitized builds), then the
# end-to-end suite against the sanitized binaries, a real PostgreSQL and a Kafka-protocol
# broker (agentbus-devbroker, or KAFKA_BOOTSTRAP when set). Ends with one line,
# "N passed, N failed", summing every suite.
#   tests/run.sh [--e2e-only] RELEASE_BUILD_DIR [SANITIZER_BUILD_DIR]
set -uo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
e2e_only=0
if [ "${1:-}" = "--e2e-only" ]; then e2e_only=1; shift; fi
release=${1:-build/release}
sanitized=${2:-$release}

passed=0
failed=0
add_counts() { # $1: a line containing "N passed" and maybe "N failed"
    local p f
    p=$(grep -oE '[0-9]+ passed' <<<"$1" | grep -oE '[0-9]+' || echo 0)
    f=$(grep -oE '[0-9]+ failed' <<<"$1" | grep -oE '[0-9]+' || echo 0)
    e=$(grep -oE '[0-9]+ error' <<<"$1" | grep -oE '[0-9]+' || echo 0)
    passed=$((passed + ${p:-0}))
    failed=$((failed + ${f:-0} + ${e:-0}))
}

# One PostgreSQL for every suite; each test makes its own database or schema in it.
pg_dir=$(mktemp -d /tmp/agentbus-test-pg.XXXXXX)
chmod 755 "$pg_dir"
pg_port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
if [ -z "${AGENTBUS_TEST_DATABASE_URL:-}" ]; then
    AGENTBUS_TEST_DATABASE_URL=$(scripts/pg.sh start "$pg_dir" "$pg_port") || { echo "cannot start PostgreSQL"; exit 1; }
    export AGENTBUS_TEST_DATABASE_URL
    trap 'scripts/pg.sh stop "$pg_dir" >/dev/null 2>&1; rm -rf "$pg_dir"' EXIT
fi

export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=0}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
export LSAN_OPTIONS=${LSAN_OPTIONS:-suppressions=$root/tests/lsan.supp:print_suppressions=0}

if [ $e2e_only -eq 0 ]; then
    for build in "$release" "$sanitized"; do
        echo "== unit tests ($build)"
        out=$("$build/bin/unit-tests" 2>&1)
        code=$?
        echo "$out" | grep -v '^ok ' || true
        summary=$(grep -E '^unit: [0-9]+ passed' <<<"$out" | tail -n 1)
        if [ -z "$summary" ]; then
            echo "unit tests ($build) ended without a summary (exit $code)"
            failed=$((failed + 1))
        else
            add_counts "$summary"
            [ $code -eq 0 ] || [ "$(grep -oE '[0-9]+ failed' <<<"$summary")" != "0 failed" ] || failed=$((failed + 1))
        fi
        [ "$build" = "$sanitized" ] && break
    done
fi

echo "== end-to-end tests ($sanitized/bin${KAFKA_BOOTSTRAP:+, Kafka at $KAFKA_BOOTSTRAP})"
report=$(mktemp)
AGENTBUS_BIN="$root/$sanitized/bin" python3 -m pytest tests/e2e -q -p no:cacheprovider \
    -o junit_family=xunit2 --junitxml="$report" ${PYTEST_ARGS:-}
code=$?
if [ -s "$report" ]; then
    counts=$(python3 - "$report" <<'PY'
import sys, xml.etree.ElementTree as ET
root = ET.parse(sys.argv[1]).getroot()
suites = [root] if root.tag == "testsuite" else root.findall("testsuite")
tests = sum(int(s.get("tests", 0)) for s in suites)
bad = sum(int(s.get("failures", 0)) + int(s.get("errors", 0)) for s in suites)
skipped = sum(int(s.get("skipped", 0)) for s in suites)
print(f"{tests - bad - skipped} passed, {bad} failed")
PY
)
    add_counts "$counts"
else
    echo "the end-to-end suite produced no report (pytest exit $code)"
    failed=$((failed + 1))
fi
rm -f "$report"
[ $code -eq 0 ] || [ $code -eq 1 ] || { [ $code -eq 5 ] && echo "no end-to-end test ran"; failed=$((failed + 1)); }

echo "$passed passed, $failed failed"
[ $failed -eq 0 ]
