#!/usr/bin/env bash
# make bench-trace: the time tracing adds per request (bench/trace.c), and its instructions
# under callgrind when valgrind is installed.
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${BUILD:-build/release}/bin/bench-trace
"$bin" 1000000
if command -v valgrind >/dev/null; then
    out=$(mktemp)
    valgrind --tool=callgrind --callgrind-out-file="$out" "$bin" 100000 >/dev/null 2>"$out.log"
    base=$(mktemp)
    valgrind --tool=callgrind --callgrind-out-file="$base" "$bin" 0 >/dev/null 2>"$base.log"
    total=$(grep -oE 'Collected : [0-9]+' "$out.log" | grep -oE '[0-9]+')
    empty=$(grep -oE 'Collected : [0-9]+' "$base.log" | grep -oE '[0-9]+')
    echo "trace: $(((total - empty) / 100000)) instructions per request (callgrind, 100000 requests)"
    rm -f "$out" "$out.log" "$base" "$base.log"
fi
