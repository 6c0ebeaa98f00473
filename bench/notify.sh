#!/usr/bin/env bash
# The notifier benchmark: outgoing webhooks delivered to a local keep-alive receiver, every
# request signed (Standard Webhooks) and recorded in PostgreSQL. One command, prints a
# Markdown report:
#   bench/notify.sh                                              the embedded broker
#   KAFKA_BOOTSTRAP=$(cat .run/kafka/bootstrap) bench/notify.sh  real Kafka (make kafka)
#
# It starts the receiver (bench/notify-receiver.py, asyncio, 200 and no body to every POST)
# and the local stack with one outgoing endpoint "bench" pointing at it, and runs
# bench/notify-client.py, whose docstring says what each phase measures and how: event to
# delivery latency through the bus and through the notifier alone, then deliveries a
# second from a backlog, with the notifier's CPU.
#
# The stack is always started by this script (the endpoint is configuration) and stopped at
# the end; it refuses to run while a stack runs. Only 127.0.0.1 is ever targeted. Raw
# outputs and logs go to a directory under /tmp.
#
# Knobs (environment): BENCH_BUS_RATE (50 events/s through the dispatcher), BENCH_LAT_RATE
# (200 jobs/s straight to the notifier), BENCH_LAT_S (15), BENCH_COUNT (30000),
# AGENTBUS_NOTIFIER_ENDPOINT_CONCURRENCY (64 here), AGENTBUS_KAFKA_PROPERTIES as ever.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
. "$root/bench/lib.sh"
bench_vars
for n in ${BENCH_BUS_RATE:-50} ${BENCH_LAT_RATE:-200} ${BENCH_LAT_S:-15} ${BENCH_COUNT:-30000}; do
    [[ "$n" =~ ^[1-9][0-9]*$ ]] || die "knobs take positive integers, not '$n'"
done

loopback_only
out=$(mktemp -d /tmp/agentbus-bench-notify.XXXXXX)
say "raw outputs in $out"
for tool in psql curl ss awk python3; do
    command -v "$tool" >/dev/null 2>&1 || die "$tool is missing (scripts/install-deps.sh)"
done

stack_check
[ "$reuse" = 0 ] || die "a stack runs: this benchmark starts its own (its endpoint is configuration); scripts/stack.sh down first"
build_all

started=0
recv_pid=""
cleanup() {
    local rc=$?
    if [ -n "$recv_pid" ]; then kill "$recv_pid" 2>/dev/null || true; fi
    stack_down_quiet
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
trap 'say "a command failed at line $LINENO"' ERR

secret="whsec_$(head -c 32 /dev/urandom | base64 -w0)"
python3 bench/notify-receiver.py --port 0 --secret "$secret" >"$out/receiver.port" 2>"$out/receiver.log" &
recv_pid=$!
for _ in $(seq 50); do [ -s "$out/receiver.port" ] && break; sleep 0.1; done
[ -s "$out/receiver.port" ] || die "the receiver did not start: $(cat "$out/receiver.log")"
recv_url="http://127.0.0.1:$(head -n 1 "$out/receiver.port")"

load_start=$(cut -d' ' -f1-3 /proc/loadavg)
logs_mark
export AGENTBUS_WEBHOOKS="{\"outgoing\": [{\"id\": \"bench\", \"url\": \"$recv_url/hooks/bench\", \"events\": [\"message_received\"], \"secret\": \"$secret\"}]}"
export AGENTBUS_NOTIFIER_ALLOW_NETWORKS=127.0.0.1/32
export AGENTBUS_NOTIFIER_ENDPOINT_CONCURRENCY=${AGENTBUS_NOTIFIER_ENDPOINT_CONCURRENCY:-64}
stack_up "${KAFKA_BOOTSTRAP:+ on KAFKA_BOOTSTRAP=$KAFKA_BOOTSTRAP}"
db_connect
broker_facts

say "running bench/notify-client.py"
BENCH_BIN=$bin BENCH_DB_URL=$db_url BENCH_RECEIVER_URL=$recv_url BENCH_RECEIVER_PID=$recv_pid BENCH_OUT=$out \
    BENCH_NOTIFIER_PID=$(pid_of notifier) BENCH_NOTIFIER_OPS="http://127.0.0.1:${ops_port[notifier]}" \
    KAFKA_BOOTSTRAP=$bootstrap python3 bench/notify-client.py >"$out/client.md" 2>"$out/client.log" ||
    { cat "$out/client.log" >&2; die "bench/notify-client.py failed"; }

client_finish "$out/client.md"
cat <<EOR
## agentbus notifier benchmark ($broker broker)

| | |
|---|---|
$(facts_rows)
| receiver | bench/notify-receiver.py (Python asyncio, one thread) at $recv_url, keep-alive, checks every 500th signature |
| notifier | one process, notifier.endpoint_concurrency $AGENTBUS_NOTIFIER_ENDPOINT_CONCURRENCY, notifier.max_in_flight and db_threads as configured |
| kafka.properties | $props_desc |

$(client_sections "$out/client.md")
EOR
report_end
