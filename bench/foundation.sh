#!/usr/bin/env bash
# The foundation benchmark: the ingress publish path and the path into PostgreSQL, on the
# local stack on loopback. One command, prints a Markdown report:
#   bench/foundation.sh
#
# 1. Ingress: wrk POSTs {"type":"bench.<run>.cN","data":{"i":1}} to /api/admin/events at a
#    few concurrency levels; each 202 means Kafka acknowledged the event (acks=all,
#    idempotent producer). Requests/s, latency p50/p90/p99, non-2xx and socket errors.
# 2. End to end: after each level, waits until the dispatcher has journaled the level's
#    events in event_log (one event type per level, so rows are counted exactly), and
#    compares the rows with the 202s. The journal rate is rows / (last - first received_at);
#    while the dispatcher keeps pace it is bounded by the ingress rate, so when this script
#    started the stack itself it also measures a backlog: the dispatcher is paused
#    (SIGSTOP) while wrk publishes, then resumed, and the rate it drains the backlog at is
#    its own capacity.
# 3. Where the CPU went in each phase (services, dev broker, PostgreSQL, wrk, and anything
#    else on the machine, which flags a run that shared the machine), machine facts and the
#    commit, as Markdown tables.
# The benchmark's rows are deleted from event_log at the end (BENCH_KEEP_ROWS=1 keeps them).
#
# Builds with `make -s all`, starts the stack if it is not running (and stops it at the end
# only then), refuses to run if port 8080 is held by anything but the stack's ingress.
# Only 127.0.0.1 is ever targeted. Raw wrk outputs and logs go to a directory under /tmp.
#
# Knobs (environment): BENCH_LEVELS ("1 8 32"), BENCH_DURATION (15 s per level),
# BENCH_THREADS (2 wrk threads), BENCH_BACKLOG (1; 0 skips the backlog phase),
# BENCH_BACKLOG_DURATION (10 s), BENCH_DRAIN_TIMEOUT (60 s), BENCH_KEEP_ROWS (0).
# shellcheck disable=SC2154  # the r_* variables are set by wrk_run through printf -v
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
. "$root/bench/lib.sh"
bench_vars
lua="$root/bench/foundation-post.lua"
levels=${BENCH_LEVELS:-"1 8 32"}
duration=${BENCH_DURATION:-15}
threads=${BENCH_THREADS:-2}
backlog=${BENCH_BACKLOG:-1}
backlog_duration=${BENCH_BACKLOG_DURATION:-10}
drain_timeout=${BENCH_DRAIN_TIMEOUT:-60}
loopback_only

out=$(mktemp -d /tmp/agentbus-bench.XXXXXX)
say "raw outputs in $out"

# --- tools ----------------------------------------------------------------------------
need_tools "" psql curl ss awk

# --- the stack: reuse it or start it (checked before the build, started after) --------
stack_check
build_all

started=0
paused_pid=""
cleanup() {
    local rc=$?
    if [ -n "$paused_pid" ]; then kill -CONT "$paused_pid" 2>/dev/null || true; fi
    rm -f "$out/auth.header"
    stack_down_quiet
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

logs_mark
stack_up ""
db_connect

admin_token
# The token goes to curl through a header file and to wrk through the environment,
# never on a command line.
(umask 077; printf 'Authorization: Bearer %s\n' "$token" >"$out/auth.header")

bootstrap=$(cat "$run/kafka.bootstrap" 2>/dev/null || echo "?")
broker_pid=0
mock_note=""
if pid_alive "$run/pids/devbroker.pid"; then
    broker_pid=$(cat "$run/pids/devbroker.pid")
    broker_desc="librdkafka mock cluster (agentbus-devbroker) at $bootstrap"
    mock_note="With the mock cluster, publish→journal latency is mostly an artefact: librdkafka's mock broker
holds an empty Fetch response for the consumer's whole fetch.wait.max.ms (librdkafka's default,
500 ms) instead of answering when data arrives, so events wait 0–500 ms before the dispatcher
sees them. A real broker answers the long poll as soon as data arrives."
else
    broker_desc="KAFKA_BOOTSTRAP=$bootstrap"
fi

run_id="r$(date +%Y%m%d%H%M%S)$$"
table_start=$(sql "SELECT count(*) || ' rows, ' || pg_size_pretty(pg_total_relation_size('event_log')) FROM event_log")

# One request by hand first: a clear message beats a wrk run full of 401s.
code=$(curl -sS -o "$out/probe.json" -w '%{http_code}' -X POST "$api/api/admin/events" \
           -H @"$out/auth.header" -H 'Content-Type: application/json' \
           -d "{\"type\":\"bench.$run_id.probe\",\"data\":{\"i\":0}}") || code=000
[ "$code" = 202 ] || die "the probe POST answered $code: $(cat "$out/probe.json" 2>/dev/null)"

# --- measurement helpers --------------------------------------------------------------
# wrk_run LABEL CONNECTIONS SECONDS: publishes events of type bench.<run>.LABEL; sets
# r_<field> from the Lua script's BENCHRESULT line, t_end, and r_cpu0 / r_cpu1 (CPU samples).
wrk_run() {
    local label=$1 conns=$2 secs=$3 t=$threads
    [ "$conns" -lt "$t" ] && t=$conns
    r_threads=$t
    r_cpu0=$(cpu_sample)
    BENCH_TOKEN=$token BENCH_TYPE="bench.$run_id.$label" \
        wrk -t"$t" -c"$conns" -d"${secs}s" --timeout 30s -s "$lua" "$api/api/admin/events" \
        >"$out/wrk-$label.txt" 2>&1 || { cat "$out/wrk-$label.txt" >&2; die "wrk failed ($label)"; }
    t_end=$(now)
    r_cpu1=$(cpu_sample)
    local line
    line=$(grep '^BENCHRESULT ' "$out/wrk-$label.txt") || { cat "$out/wrk-$label.txt" >&2; die "no result from wrk ($label)"; }
    result_vars r_ "$line"
    full_run "$secs" "$label"
    # wrk's own "Non-2xx or 3xx responses: N" line (printed only when N > 0) must agree.
    r_non2xx_line=$(awk '/^ *Non-2xx or 3xx responses:/ { print $NF }' "$out/wrk-$label.txt")
    r_non2xx_line=${r_non2xx_line:-0}
}

# The dispatcher's count of journaled events (empty if its ops port does not answer).
journaled() {
    curl -fsS --max-time 2 http://127.0.0.1:9101/metrics 2>/dev/null |
        awk '/^agentbus_dispatcher_events_total\{outcome="journaled"\}/ { printf "%d", $2 }' || true
}

# drain LABEL EXPECTED JOURNALED0: waits until event_log holds EXPECTED rows of the label's
# type (or the drain timeout), then until the count is stable; sets rows. The progress is
# polled on the dispatcher's metric (cheap: a psql connection costs a SCRAM handshake on both
# sides, which would compete with the dispatcher), PostgreSQL has the last word.
drain() {
    local type="bench.$run_id.$1" expected=$2 m0=$3 deadline=$((SECONDS + drain_timeout)) prev=-1 m
    while [ -n "$m0" ] && [ $SECONDS -lt $deadline ]; do
        m=$(journaled)
        if [ -z "$m" ] || [ $((m - m0)) -ge "$expected" ]; then break; fi
        sleep 0.1
    done
    while :; do
        rows=$(sql "SELECT count(*) FROM event_log WHERE type = '$type'")
        [ "$rows" -lt "$expected" ] || break
        [ $SECONDS -lt $deadline ] || break
        sleep 0.5
    done
    # Requests wrk abandoned at its deadline may still land: wait for a stable count.
    while [ "$rows" != "$prev" ] && [ $SECONDS -lt $((deadline + 5)) ]; do
        prev=$rows; sleep 0.5
        rows=$(sql "SELECT count(*) FROM event_log WHERE type = '$type'")
    done
}

# journal_stats LABEL: sets j_rows, j_span (s, first to last received_at), j_last (epoch of
# the last received_at), j_p50 / j_p99 (ms, event time at ingress to received_at).
journal_stats() {
    local type="bench.$run_id.$1"
    IFS='|' read -r j_rows j_span j_last j_p50 j_p99 < <(sql "
        SELECT count(*),
               coalesce(extract(epoch FROM max(received_at) - min(received_at)), 0),
               coalesce(extract(epoch FROM max(received_at)), 0),
               coalesce(percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM received_at - event_time) * 1000), 0),
               coalesce(percentile_cont(0.99) WITHIN GROUP (ORDER BY extract(epoch FROM received_at - event_time) * 1000), 0)
        FROM event_log WHERE type = '$type'")
}

# CPU accounting (cpu_sample, cpu_row: bench/lib.sh): where the CPU went during a phase,
# and whether something else shared the machine. The broker is the dev broker.
cpu_init

# --- warm-up, levels, backlog ---------------------------------------------------------
load_start=$(cut -d' ' -f1-3 /proc/loadavg)
say "warm-up: 3 s at 8 connections (not reported)"
m0=$(journaled)
wrk_run warmup 8 3
drain warmup "$r_accepted" "$m0"

ingress_rows=()
journal_rows=()
problems=()
for c in $levels; do
    label="c$c"
    say "level: $c connection(s), $duration s"
    m0=$(journaled)
    wrk_run "$label" "$c" "$duration"
    drain "$label" "$r_accepted" "$m0"
    journal_stats "$label"
    sockerr=$((r_connect + r_read + r_write + r_timeout))
    rps=$(div "$r_requests" "$r_duration_s" 0)
    ingress_rows+=("| $c | $r_threads | $rps | $(fmt "$r_p50_ms" 2) | $(fmt "$r_p90_ms" 2) | $(fmt "$r_p99_ms" 2) | $(fmt "$r_max_ms" 1) | $r_accepted | $r_non2xx | $sockerr |")
    cpu_row "$c connection(s)" "$(cpu_delta "$r_cpu0" "$r_cpu1")"
    lost=$((r_accepted > j_rows ? r_accepted - j_rows : 0))
    extra=$((j_rows > r_accepted ? j_rows - r_accepted : 0))
    if [ "$lost" -eq 0 ]; then arrived="yes"; else arrived="**no: $lost lost**"; fi
    [ "$extra" -eq 0 ] || arrived="$arrived (+$extra in flight at wrk's stop)"
    journal_rows+=("| $c connection(s), ingress-paced | $r_accepted | $j_rows | $arrived | $(div "$j_rows" "$j_span" 0) | $(fmt "$j_p50" 1) | $(fmt "$j_p99" 1) | $(sub "$j_last" "$t_end" 2) |")
    [ "$r_non2xx" -eq 0 ] || problems+=("$c connection(s): $r_non2xx non-2xx responses (see $out/wrk-$label.txt)")
    [ "$r_non2xx_line" -eq "$r_non2xx" ] || problems+=("$c connection(s): wrk printed Non-2xx $r_non2xx_line but the script counted $r_non2xx")
    [ "$sockerr" -eq 0 ] || problems+=("$c connection(s): socket errors connect=$r_connect read=$r_read write=$r_write timeout=$r_timeout")
    [ "$lost" -eq 0 ] || problems+=("$c connection(s): $lost accepted events never reached event_log (drain timeout ${drain_timeout} s)")
    [ "$r_other_status" -eq 0 ] || [ "$r_non2xx" -ne 0 ] || problems+=("$c connection(s): $r_other_status 2xx responses that were not 202")
done

backlog_note=""
if [ "$backlog" = 1 ] && [ "$started" = 1 ]; then
    cb=$(echo "$levels" | awk '{ print $NF }')
    say "backlog: dispatcher paused, $cb connections for $backlog_duration s, then resumed"
    m0=$(journaled)
    paused_pid=$(cat "$run/pids/dispatcher.pid")
    kill -STOP "$paused_pid"
    wrk_run backlog "$cb" "$backlog_duration"
    cpu_row "backlog: publishing, dispatcher paused" "$(cpu_delta "$r_cpu0" "$r_cpu1")"
    cpu_resume=$(cpu_sample)
    t_resume=${cpu_resume%% *}
    kill -CONT "$paused_pid"
    paused_pid=""
    drain backlog "$r_accepted" "$m0"
    cpu_row "backlog: dispatcher draining (until the count is stable)" "$(cpu_delta "$cpu_resume" "$(cpu_sample)")"
    journal_stats backlog
    lost=$((r_accepted > j_rows ? r_accepted - j_rows : 0))
    extra=$((j_rows > r_accepted ? j_rows - r_accepted : 0))
    if [ "$lost" -eq 0 ]; then arrived="yes"; else arrived="**no: $lost lost**"; fi
    [ "$extra" -eq 0 ] || arrived="$arrived (+$extra in flight at wrk's stop)"
    journal_rows+=("| backlog of $r_accepted, dispatcher resumed | $r_accepted | $j_rows | $arrived | **$(div "$j_rows" "$j_span" 0)** | $(fmt "$j_p50" 1) | $(fmt "$j_p99" 1) | $(sub "$j_last" "$t_resume" 2) |")
    [ "$lost" -eq 0 ] || problems+=("backlog: $lost accepted events never reached event_log")
    backlog_note="The backlog row: the dispatcher was stopped (SIGSTOP) while wrk published $r_accepted events at $cb connections ($(div "$r_requests" "$r_duration_s" 0) req/s), then resumed; its events/s is the dispatcher's own drain rate with the ingress idle, and its drain time counts from the resume. Its latency columns include the pause."
elif [ "$backlog" = 1 ]; then
    backlog_note="No backlog phase: the stack was already running, and this script pauses only a dispatcher it started."
fi

# --- metrics, clean-up, logs ----------------------------------------------------------
dispatcher_metrics=$(curl -fsS http://127.0.0.1:9101/metrics 2>/dev/null | grep '^agentbus_dispatcher_events_total' || true)

# The benchmark's rows are removed from event_log (BENCH_KEEP_ROWS=1 keeps them) and the
# table vacuumed, so that the next run starts from the same table and no autovacuum of
# this run's dead rows lands in it.
if [ "${BENCH_KEEP_ROWS:-0}" != 1 ]; then
    say "removing this run's rows from event_log (type bench.$run_id.*) and vacuuming it"
    { sql "DELETE FROM event_log WHERE type LIKE 'bench.$run_id.%'" && sql "VACUUM (ANALYZE) event_log"; } >/dev/null ||
        say "could not delete the benchmark's rows (type bench.$run_id.*)"
fi

# Stop the stack before reading the logs, so that its shutdown is checked too.
stack_down_checked
logs_scan

# --- report ---------------------------------------------------------------------------

cat <<EOF

## agentbus foundation benchmark

| | |
|---|---|
$(facts_rows)
| PostgreSQL | $db_desc; event_log at start: $table_start |
| client | wrk $(wrk_version) on the same machine, ${duration} s per level, \`--timeout 30s\`, 3 s warm-up |

### Ingress publish path: \`POST /api/admin/events\` (202 = acknowledged by Kafka, acks=all, idempotent producer)

| connections | wrk threads | requests/s | p50 ms | p90 ms | p99 ms | max ms | 202s | non-2xx | socket errors |
|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|
$(printf '%s\n' "${ingress_rows[@]}")

### End to end: into PostgreSQL \`event_log\` (dispatcher)

| load | 202s | rows | every accepted event arrived | journal events/s | publish→journal p50 ms | p99 ms | drain after load s |
|---|---:|---:|---|---:|---:|---:|---:|
$(printf '%s\n' "${journal_rows[@]}")

journal events/s = rows / (last − first \`received_at\`). While the dispatcher keeps pace it
only follows the ingress rate. publish→journal = \`received_at − event_time\` (event time is
stamped at the ingress, before the Kafka send). drain = last \`received_at\` − end of the load;
≤ 0 means the dispatcher had caught up before wrk exited. $backlog_note
$mock_note

### Where the CPU went (% of one core; the machine has $ncpu)

| phase | ingress | dispatcher | llm-worker + notifier | dev broker | PostgreSQL | wrk + psql | other | machine |
|---|---:|---:|---:|---:|---:|---:|---:|---:|
$(printf '%s\n' "${cpu_rows[@]}")

$(cpu_note)

EOF

if [ -n "$dispatcher_metrics" ]; then
    echo "dispatcher counters now (since the dispatcher started):"
    while IFS= read -r line; do echo "    $line"; done <<<"$dispatcher_metrics"
fi
report_end
echo "non-2xx: 0 and socket errors: 0 at every level; every accepted event reached event_log. (raw outputs: $out)"
