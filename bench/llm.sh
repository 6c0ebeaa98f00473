#!/usr/bin/env bash
# The LLM worker benchmark: what the worker adds to a model call, and how many streaming calls
# one worker process holds, with its memory. One command, prints a Markdown report:
#   bench/llm.sh                                              the embedded broker
#   KAFKA_BOOTSTRAP=$(cat .run/kafka/bootstrap) bench/llm.sh  real Kafka (make kafka)
#
# It starts the fake OpenAI-compatible model (tests/fake_llm/fake_openai.py, real HTTP and
# SSE) and the local stack, creates a tenant with an OpenClaw agent and native agents whose
# models are the fake, and runs bench/llm-client.py, whose docstring says what each phase
# measures and how:
# 1. added latency: requests one at a time through the whole bus, each split by the
#    request's Kafka timestamps and its llm_requests row into the model call and what the
#    worker adds around it (p50/p90/p99);
# 2. the same request sent to the fake directly with curl;
# 3. BENCH_CONC_LEVELS requests at once, each streaming for about BENCH_HOLD_S seconds:
#    peak calls in flight, resident memory, threads and CPU of the worker process.
# Then machine facts, the commit, and warn/error lines the services logged meanwhile.
#
# The stack is always started by this script (llm_worker.max_in_flight must cover the
# largest level) and stopped at the end; it refuses to run while a stack runs. Only
# 127.0.0.1 is ever targeted. Raw outputs and logs go to a directory under /tmp.
#
# Knobs (environment): BENCH_LAT_SAMPLES (300), BENCH_WARMUP (10), BENCH_DIRECT_SAMPLES (300),
# BENCH_CONC_LEVELS ("100 1000 2000"; empty skips the phase), BENCH_HOLD_S (30), BENCH_KEEP
# (0: the tenant is removed at the end). AGENTBUS_KAFKA_PROPERTIES reaches the services as
# ever, e.g. '{"linger.ms":0}' to see what the producer's batching wait costs.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
. "$root/bench/lib.sh"
bench_vars
levels=${BENCH_CONC_LEVELS-"100 1000 2000"}
for n in ${BENCH_LAT_SAMPLES:-300} ${BENCH_DIRECT_SAMPLES:-300} ${BENCH_HOLD_S:-30} $levels; do
    [[ "$n" =~ ^[1-9][0-9]*$ ]] || die "knobs take positive integers, not '$n'"
done
max_level=$(tr ' ' '\n' <<<"$levels" | sort -n | tail -n 1)
[ -n "$max_level" ] || max_level=0

loopback_only
out=$(mktemp -d /tmp/agentbus-bench-llm.XXXXXX)
say "raw outputs in $out"
for tool in psql curl ss awk python3; do
    command -v "$tool" >/dev/null 2>&1 || die "$tool is missing (scripts/install-deps.sh)"
done

# Every call holds a socket in the worker and one in the fake.
ulimit -n "$(ulimit -Hn)"
[ "$(ulimit -n)" -gt $((max_level * 2 + 512)) ] ||
    die "the open-file limit ($(ulimit -n)) is too low for $max_level calls at once"

stack_check
[ "$reuse" = 0 ] || die "a stack runs: this benchmark starts its own (llm_worker.max_in_flight for $max_level calls); scripts/stack.sh down first"
build_all

started=0
fake_pid=""
cleanup() {
    local rc=$?
    if [ -n "$fake_pid" ]; then kill "$fake_pid" 2>/dev/null || true; fi
    stack_down_quiet
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
trap 'say "a command failed at line $LINENO"' ERR

fake_key="sk-bench-$(head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n')"
python3 tests/fake_llm/fake_openai.py --port 0 --api-key "$fake_key" >"$out/fake.port" 2>"$out/fake.log" &
fake_pid=$!
for _ in $(seq 50); do [ -s "$out/fake.port" ] && break; sleep 0.1; done
[ -s "$out/fake.port" ] || die "the fake model did not start: $(cat "$out/fake.log")"
fake_url="http://127.0.0.1:$(head -n 1 "$out/fake.port")"

load_start=$(cut -d' ' -f1-3 /proc/loadavg)
logs_mark
export AGENTBUS_LLM_WORKER_MAX_IN_FLIGHT=$((max_level + 64))
stack_up "${KAFKA_BOOTSTRAP:+ on KAFKA_BOOTSTRAP=$KAFKA_BOOTSTRAP}"
db_connect
admin_token
broker_facts

say "running bench/llm-client.py (levels: ${levels:-none})"
BENCH_API=$api BENCH_ADMIN_TOKEN=$token BENCH_DB_URL=$db_url BENCH_FAKE_URL=$fake_url \
    BENCH_FAKE_KEY=$fake_key BENCH_BIN=$bin KAFKA_BOOTSTRAP=$bootstrap \
    BENCH_WORKER_PID=$(pid_of llm-worker) BENCH_WORKER_OPS="http://127.0.0.1:${ops_port[llm-worker]}" \
    BENCH_WORKER_LOG="$run/logs/llm-worker.log" \
    BENCH_OUT=$out BENCH_TAG="bench-llm-$(date +%Y%m%d%H%M%S)-$$" BENCH_CONC_LEVELS="$levels" \
    python3 bench/llm-client.py >"$out/client.md" 2>"$out/client.log" ||
    { cat "$out/client.log" >&2; die "bench/llm-client.py failed"; }

client_finish "$out/client.md"
cat <<EOF
## agentbus LLM worker benchmark ($broker broker)

| | |
|---|---|
$(facts_rows)
| model | tests/fake_llm/fake_openai.py (Python, a thread per connection) at $fake_url, streaming |
| worker | one process, llm_worker.max_in_flight $AGENTBUS_LLM_WORKER_MAX_IN_FLIGHT, llm_worker.db_threads and database.pool_size as configured |
| kafka.properties | $props_desc |

$(client_sections "$out/client.md")
EOF
report_end
