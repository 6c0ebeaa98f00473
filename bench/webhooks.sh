#!/usr/bin/env bash
# The incoming-webhooks benchmark: POST /webhook/<hook-id> on ingress's webhook listener,
# on the local stack on loopback. One command, prints a Markdown report:
#   bench/webhooks.sh                                              the embedded broker
#   KAFKA_BOOTSTRAP=$(cat .run/kafka/bootstrap) bench/webhooks.sh  real Kafka (make kafka)
#
# One ingress process, wrk (bench/webhooks-post.lua) on the same machine:
# 1. Baseline: wrk GETs the ops listener's /livez (a bare ulfius route answering a constant
#    JSON, no logging, no Kafka) at the same concurrency levels: what the HTTP server alone
#    answers on this machine. Requests/s, p50/p99.
# 2. Webhooks: wrk POSTs the same small JSON to /webhook/<hook> with X-Webhook-Secret at
#    each level; each 202 means the secret was checked, the template rendered and Kafka
#    acknowledged agentbus.webhook.received (acks=all, idempotent producer). Accepted/s,
#    p50/p90/p99, non-2xx, socket errors, and each webhook beside the baseline.
# 3. Idempotency: the same with a unique Idempotency-Key per request, which ingress records
#    in PostgreSQL first (INSERT ... ON CONFLICT) and marks published after the Kafka ack
#    (UPDATE), at BENCH_IDEM_LEVELS.
# 4. Check: every phase has its own hook, so its events are told apart by their Kafka key
#    (hook:<hook id>:<event id>). After each phase the run's agentbus.ingress is read back
#    with agentbus-kafka consume and the phase's events counted: 202s seen by wrk, accepted
#    by ingress (its agentbus_webhook_requests_total), events on Kafka; for the idempotent
#    phases also the webhook_deliveries rows marked published.
# 5. Where the CPU went in each phase (ingress, dispatcher, broker, PostgreSQL, wrk, other),
#    ingress CPU per request, and (BENCH_PERF=1, when perf works) an extra profiled run at
#    the top level: ingress's CPU by library and by function. Machine facts, the commit.
#
# The stack is always started by this script (the hooks are configuration) and stopped at
# the end; it refuses to run while a stack runs. Its topics carry a prefix of their own
# (bench-<run>.), so that on real Kafka the events the dispatcher had not routed yet are
# never picked up by a later stack (the hooks' action is custom: the dispatcher republishes
# each event on <prefix>bench.webhooks, one Kafka ack at a time, so it falls behind; it is
# stopped before the clean-up). On real Kafka those topics stay until
# `scripts/kafka.sh stop --purge`. The run's webhook_deliveries and event_log rows are
# deleted at the end (BENCH_KEEP_ROWS=1 keeps them). Only 127.0.0.1 is ever targeted. Raw
# outputs and logs go to a directory under /tmp.
#
# Knobs (environment): BENCH_LEVELS ("1 8 32 64"), BENCH_DURATION (10 s per level),
# BENCH_IDEM_LEVELS ("8 64"; empty skips), BENCH_THREADS (2 wrk threads), BENCH_BASELINE (1;
# 0 skips), BENCH_PERF (1; 0 skips), BENCH_COUNT_TIMEOUT (120 s to read the topic back),
# BENCH_KEEP_ROWS (0), AGENTBUS_KAFKA_PROPERTIES as ever.
# shellcheck disable=SC2154  # the r_* variables are set by wrk_run through printf -v
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
. "$root/bench/lib.sh"
bench_vars
lua="$root/bench/webhooks-post.lua"
levels=${BENCH_LEVELS:-"1 8 32 64"}
duration=${BENCH_DURATION:-10}
idem_levels=${BENCH_IDEM_LEVELS-"8 64"}
threads=${BENCH_THREADS:-2}
baseline=${BENCH_BASELINE:-1}
perf_on=${BENCH_PERF:-1}
count_timeout=${BENCH_COUNT_TIMEOUT:-120}
for n in $levels $idem_levels "$duration" "$threads" "$count_timeout"; do
    [[ "$n" =~ ^[1-9][0-9]*$ ]] || die "knobs take positive integers, not '$n'"
done
[ -n "$levels" ] || die "BENCH_LEVELS is empty"
hook_base="http://127.0.0.1:3011"
ops="http://127.0.0.1:${ops_port[ingress]}"
# The issue's figure for a bare ulfius handler returning a constant JSON on 2 cores.
reference_rps=70000

loopback_only
out=$(mktemp -d /tmp/agentbus-bench-webhooks.XXXXXX)
say "raw outputs in $out"

# --- tools ----------------------------------------------------------------------------
need_tools " (scripts/install-deps.sh)" psql curl ss awk
if [ "$perf_on" = 1 ] && ! command -v perf >/dev/null 2>&1; then
    say "perf is missing: no profile (BENCH_PERF=0 skips it without this note)"
    perf_on=0
fi

# --- the stack: always ours (the hooks are configuration) -----------------------------
stack_check
[ "$reuse" = 0 ] || die "a stack runs: this benchmark starts its own (its hooks are configuration); scripts/stack.sh down first"
build_all

started=0
wrk_pid=""
perf_pid=""
cleanup() {
    local rc=$?
    if [ -n "$wrk_pid" ]; then kill -INT "$wrk_pid" 2>/dev/null || true; fi
    if [ -n "$perf_pid" ]; then kill -INT "$perf_pid" 2>/dev/null || true; fi
    stack_down_quiet
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
trap 'say "a command failed at line $LINENO"' ERR

run_id="r$(date +%Y%m%d%H%M%S)$$"
prefix="bench-$run_id."
secret="bench-$(head -c 24 /dev/urandom | base64 | tr -d '/+=')"
hook() { echo "bench.$run_id.$1"; } # a phase's hook id

# One hook per phase, all alike: the shared secret, action custom (the ingress side is the
# same for every action), the template of the issue's example.
phases=(probe warmup)
for c in $levels; do phases+=("c$c"); done
for c in $idem_levels; do phases+=("idem-c$c"); done
[ "$perf_on" = 0 ] || phases+=(perf)
handlers=""
for p in "${phases[@]}"; do
    handlers+="${handlers:+, }{\"id\": \"$(hook "$p")\", \"action\": \"custom\", \"target\": {\"topic\": \"${prefix}bench.webhooks\"}, \"template\": \"{{event.action}}\"}"
done
export AGENTBUS_WEBHOOKS="{\"incoming\": {\"secret\": \"$secret\"}, \"handlers\": [$handlers]}"
export AGENTBUS_KAFKA_TOPIC_PREFIX=$prefix

load_start=$(cut -d' ' -f1-3 /proc/loadavg)
logs_mark
stack_up " with topic prefix $prefix${KAFKA_BOOTSTRAP:+ on KAFKA_BOOTSTRAP=$KAFKA_BOOTSTRAP}"
db_connect
broker_facts

# --- metrics --------------------------------------------------------------------------
# metric PORT PATTERN: the sum of the samples whose line starts with PATTERN (0 if none).
metric() {
    curl -fsS --max-time 2 "http://127.0.0.1:$1/metrics" 2>/dev/null |
        awk -v p="$2" 'index($0, p) == 1 { s += $NF } END { printf "%d", s }' || echo 0
}
accepted_total() { metric "${ops_port[ingress]}" 'agentbus_webhook_requests_total{outcome="accepted"}'; }
routed_webhooks() { metric "${ops_port[dispatcher]}" 'agentbus_dispatcher_routed_total{route="webhook"}'; }
# settled: the ingress' accepted count once it stops moving (requests wrk abandoned at its
# deadline finish on the server), at most 20 s.
settled() {
    local prev=-1 n deadline=$((SECONDS + 20))
    n=$(accepted_total)
    while [ "$n" != "$prev" ] && [ $SECONDS -lt $deadline ]; do
        prev=$n; sleep 0.3; n=$(accepted_total)
    done
    echo "$n"
}

# phase_done PHASE A0: after a phase's wrk run (A0: the ingress' accepted count before it):
# sets wrk_202[PHASE], ingress_acc[PHASE] once the count settled, then reads the run's
# agentbus.ingress back from its start (agentbus-kafka consume) and sets on_kafka[PHASE]
# (the events keyed hook:<the phase's hook>:...) and kafka_low[PHASE] (partitions whose
# first offset the broker no longer holds). Read after every phase, not once at the end:
# the embedded broker keeps about 5 MiB of each partition and drops the oldest (some
# 250 000 of these events over the topic's 12 partitions), fewer than a default run sends.
declare -A wrk_202=() ingress_acc=() on_kafka=() kafka_low=()
phase_done() {
    local f="$out/kafka-count-$1.txt" n low
    wrk_202[$1]=$r_accepted
    ingress_acc[$1]=$(( $(settled) - $2 ))
    KAFKA_BOOTSTRAP=$bootstrap "$bin/agentbus-kafka" consume "${prefix}agentbus.ingress" \
        --idle-ms 3000 --timeout-ms $((count_timeout * 1000)) 2>>"$out/consume.err" |
        awk -v h="$(hook "$1")" -F'"key":"hook:' '
            NF > 1 { split($2, a, ":"); if (a[1] == h) n++ }
            match($0, /"partition":[0-9]+,"offset":[0-9]+/) {
                split(substr($0, RSTART, RLENGTH), f, /[:,]/)
                if (!(f[2] in low) || f[4] + 0 < low[f[2]]) low[f[2]] = f[4] + 0 }
            END { for (p in low) if (low[p] > 0) dropped++; print n + 0, dropped + 0 }' >"$f" || true
    read -r n low <"$f" || true
    on_kafka[$1]=${n:-0}
    kafka_low[$1]=${low:-0}
}

# One request by hand first: a clear message beats a wrk run full of 401s (and a hang here
# is the ingress' to explain, not wrk's).
code=$(curl -sS --max-time 20 -o "$out/probe.json" -w '%{http_code}' -X POST \
           -H @<(printf 'X-Webhook-Secret: %s\n' "$secret") -H 'Content-Type: application/json' \
           -d '{"action":"probe"}' "$hook_base/webhook/$(hook probe)") || code=000
[ "$code" = 202 ] || die "the probe webhook answered $code: $(cat "$out/probe.json" 2>/dev/null)"
code=$(curl -sS --max-time 5 -o /dev/null -w '%{http_code}' "$ops/livez") || code=000
[ "$code" = 200 ] || die "the ingress' /livez answered $code"

# --- wrk ------------------------------------------------------------------------------
# wrk_run LABEL MODE CONNECTIONS SECONDS URL: runs webhooks-post.lua; sets r_<field> from its
# BENCHRESULT line, r_threads, r_cpu (the phase's CPU delta) and r_non2xx_line.
wrk_run() {
    local label=$1 mode=$2 conns=$3 secs=$4 url=$5 t=$threads c0 line
    [ "$conns" -lt "$t" ] && t=$conns
    r_threads=$t
    c0=$(cpu_sample)
    BENCH_MODE=$mode BENCH_SECRET=$secret BENCH_KEY_PREFIX="$run_id-$label" \
        wrk -t"$t" -c"$conns" -d"${secs}s" --timeout 30s -s "$lua" "$url" \
        >"$out/wrk-$label.txt" 2>"$out/wrk-$label.err" &
    wrk_pid=$!
    wait "$wrk_pid" || { cat "$out/wrk-$label.txt" "$out/wrk-$label.err" >&2; wrk_pid=""; die "wrk failed ($label)"; }
    wrk_pid=""
    r_cpu=$(cpu_delta "$c0" "$(cpu_sample)")
    line=$(grep '^BENCHRESULT ' "$out/wrk-$label.txt") || { cat "$out/wrk-$label.txt" "$out/wrk-$label.err" >&2; die "no result from wrk ($label)"; }
    result_vars r_ "$line"
    full_run "$secs" "$label"
    # wrk's own "Non-2xx or 3xx responses: N" line (printed only when N > 0) must agree.
    r_non2xx_line=$(awk '/^ *Non-2xx or 3xx responses:/ { print $NF }' "$out/wrk-$label.txt")
    r_non2xx_line=${r_non2xx_line:-0}
}

# check_run LABEL: the problems of the last wrk run.
check_run() {
    local sockerr=$((r_connect + r_read + r_write + r_timeout))
    [ "$r_non2xx" -eq 0 ] || problems+=("$1: $r_non2xx non-2xx responses (see $out/wrk-$1.*)")
    [ "$r_non2xx_line" -eq "$r_non2xx" ] || problems+=("$1: wrk printed Non-2xx $r_non2xx_line but the script counted $r_non2xx")
    [ "$sockerr" -eq 0 ] || problems+=("$1: socket errors connect=$r_connect read=$r_read write=$r_write timeout=$r_timeout")
    [ "$r_other_status" -eq 0 ] || [ "$r_non2xx" -ne 0 ] || problems+=("$1: $r_other_status answers that were not the expected 2xx")
}

# ingress_us DELTA REQUESTS: the ingress' CPU per request, in µs.
ingress_us() {
    awk -v d="$1" -v n="$2" -v hz="$clk_tck" 'BEGIN { split(d, x, " "); if (n > 0) printf "%.0f", x[3] / hz * 1e6 / n; else printf "n/a" }'
}

# CPU accounting (cpu_sample, cpu_row: bench/lib.sh); the broker is the dev broker or the
# Kafka JVM (broker_pid), this script's children are wrk, curl and psql.
cpu_init
problems=()

# --- 1. baseline ----------------------------------------------------------------------
declare -A base_rps=() base_p50=() base_p99=()
base_rows=()
if [ "$baseline" = 1 ]; then
    for c in $levels; do
        label="livez-c$c"
        say "baseline: GET /livez (ops listener), $c connection(s), $duration s"
        wrk_run "$label" livez "$c" "$duration" "$ops/livez"
        check_run "$label"
        base_rps[$c]=$(div "$r_requests" "$r_duration_s" 0)
        base_p50[$c]=$(fmt "$r_p50_ms" 2)
        base_p99[$c]=$(fmt "$r_p99_ms" 2)
        cpu_row "baseline /livez, $c connection(s)" "$r_cpu"
        base_rows+=("| $c | $r_threads | ${base_rps[$c]} | ${base_p50[$c]} | $(fmt "$r_p90_ms" 2) | ${base_p99[$c]} | $(fmt "$r_max_ms" 1) | $r_non2xx | $(ingress_us "$r_cpu" "$r_requests") |")
    done
fi

# --- 2. webhooks, 3. with an Idempotency-Key ------------------------------------------
say "warm-up: 3 s at 8 connections (not reported)"
a0=$(accepted_total)
wrk_run warmup post 8 3 "$hook_base/webhook/$(hook warmup)"
check_run warmup
phase_done warmup "$a0"

hook_rows=()
side_rows=()
best_rps=0; best_c=""
for c in $levels; do
    label="c$c"
    say "webhooks: $c connection(s), $duration s"
    a0=$(accepted_total)
    wrk_run "$label" post "$c" "$duration" "$hook_base/webhook/$(hook "$label")"
    check_run "$label"
    phase_done "$label" "$a0"
    rps=$(div "$r_accepted" "$r_duration_s" 0)
    sockerr=$((r_connect + r_read + r_write + r_timeout))
    cpu_row "webhooks, $c connection(s)" "$r_cpu"
    hook_rows+=("| $c | $r_threads | **$rps** | $(fmt "$r_p50_ms" 2) | $(fmt "$r_p90_ms" 2) | $(fmt "$r_p99_ms" 2) | $(fmt "$r_max_ms" 1) | $r_accepted | $r_non2xx | $sockerr | $(ingress_us "$r_cpu" "$r_requests") |")
    if [ "$baseline" = 1 ]; then
        side_rows+=("| $c | ${base_rps[$c]} | ${base_p50[$c]} / ${base_p99[$c]} | **$rps** | $(fmt "$r_p50_ms" 2) / $(fmt "$r_p99_ms" 2) | $(div "$((rps * 100))" "${base_rps[$c]}" 1) % | $(div "$((rps * 100))" "$reference_rps" 1) % |")
    fi
    if [ "$rps" -gt "$best_rps" ]; then best_rps=$rps; best_c=$c; fi
done

idem_rows=()
for c in $idem_levels; do
    label="idem-c$c"
    say "webhooks with a unique Idempotency-Key: $c connection(s), $duration s"
    a0=$(accepted_total)
    wrk_run "$label" idem "$c" "$duration" "$hook_base/webhook/$(hook "$label")"
    check_run "$label"
    phase_done "$label" "$a0"
    sockerr=$((r_connect + r_read + r_write + r_timeout))
    cpu_row "webhooks with Idempotency-Key, $c connection(s)" "$r_cpu"
    idem_rows+=("| $c | $r_threads | **$(div "$r_accepted" "$r_duration_s" 0)** | $(fmt "$r_p50_ms" 2) | $(fmt "$r_p90_ms" 2) | $(fmt "$r_p99_ms" 2) | $(fmt "$r_max_ms" 1) | $r_accepted | $r_non2xx | $sockerr | $(ingress_us "$r_cpu" "$r_requests") |")
done

# --- 5. (optional) where the ingress' CPU goes ----------------------------------------
perf_note=""
dso_rows=()
sym_rows=()
if [ "$perf_on" = 1 ]; then
    top=$(echo "$levels" | awk '{ print $NF }')
    psecs=$((duration < 5 ? duration : 5))
    say "profile: perf record on the ingress, $top connections, $psecs s (not in the tables)"
    a0=$(accepted_total)
    # perf -p follows the threads that exist when it attaches, and libmicrohttpd starts one
    # per connection: it attaches 1 s into a run 2 s longer than the profile.
    (sleep 1; exec perf record -F 999 -g -o "$out/perf.data" -p "$(pid_of ingress)" -- sleep "$psecs") >"$out/perf-record.log" 2>&1 &
    perf_pid=$!
    wrk_run perf post "$top" $((psecs + 2)) "$hook_base/webhook/$(hook perf)"
    if wait "$perf_pid"; then
        perf_pid=""
        check_run perf
        phase_done perf "$a0"
        perf report -i "$out/perf.data" --stdio --no-children --sort dso --percent-limit 1 >"$out/perf-dso.txt" 2>/dev/null || true
        perf report -i "$out/perf.data" --stdio --no-children --sort dso,sym --percent-limit 0.8 -g none >"$out/perf-sym.txt" 2>/dev/null || true
        perf report -i "$out/perf.data" --stdio --children --sort sym --percent-limit 0.5 -g none >"$out/perf-children.txt" 2>/dev/null || true
        while read -r pct dso; do dso_rows+=("| $dso | $pct |"); done < <(awk '/^ +[0-9.]+%/ { print $1, $2 }' "$out/perf-dso.txt" | head -n 10)
        # The user-space functions (the kernel's side is summed up by the futex line below).
        while read -r pct dso sym; do sym_rows+=("| \`$sym\` | $dso | $pct |"); done < <(awk '/^ +[0-9.]+%/ && $3 != "[k]" { p = $1; d = $2; $1 = $2 = $3 = ""; sub(/^ +/, ""); print p, d, $0 }' "$out/perf-sym.txt" | head -n 12)
        futex_pct=$(awk '/\[k\] do_futex$/ { print $1; exit }' "$out/perf-children.txt")
        bcast_pct=$(awk '/pthread_cond_broadcast/ { print $1; exit }' "$out/perf-children.txt")
        perf_note="perf record -F 999 -g on the ingress process for ${psecs} s of an extra run at $top connections ($(div "$r_accepted" "$r_duration_s" 0) webhooks/s under the profiler; not in the tables above). Samples are CPU time of all the ingress' threads."
    else
        perf_pid=""
        problems+=("the profiled run failed: see $out/perf-record.log")
    fi
fi

# --- 4. the check: every 202 on Kafka (phase_done counted them) ---------------------
check_rows=()
for p in warmup "${phases[@]:2}"; do
    [ -n "${wrk_202[$p]:-}" ] || continue
    w=${wrk_202[$p]}; i=${ingress_acc[$p]}; k=${on_kafka[$p]:-0}
    rows_col="–"
    if [[ "$p" == idem-* ]]; then
        IFS='|' read -r drows dpub < <(sql "SELECT count(*), count(*) FILTER (WHERE published) FROM webhook_deliveries WHERE hook_id = '$(hook "$p")'")
        rows_col="$drows ($dpub published)"
        [ "$dpub" -eq "$k" ] || problems+=("$p: $dpub delivery rows marked published but $k events on Kafka")
    fi
    if [ "$k" -eq "$i" ] && [ "$w" -le "$k" ]; then
        ok="yes"; [ "$k" -eq "$w" ] || ok="yes (+$((k - w)) answered after wrk's stop)"
    elif [ "$k" -lt "$i" ] && [ "${kafka_low[$p]}" -gt 0 ]; then
        ok="**cannot tell**"
        problems+=("$p: Kafka holds $k of the $i events ingress accepted, but the broker had already dropped the start of ${kafka_low[$p]} partition(s) (the embedded broker keeps only so much): use fewer or shorter levels")
    else
        ok="**no**"
        problems+=("$p: wrk saw $w 202s, ingress accepted $i, Kafka holds $k events")
    fi
    check_rows+=("| $p | $w | $i | $k | $rows_col | $ok |")
done

# --- clean-up, logs -------------------------------------------------------------------
routed=$(routed_webhooks)
accepted_all=$(accepted_total)
# The dispatcher is behind (one Kafka ack per custom event): it is stopped first, so that
# it journals nothing after the run's rows are deleted.
dpid=$(pid_of dispatcher)
if [ "$dpid" != 0 ] && kill -0 "$dpid" 2>/dev/null; then
    say "stopping the dispatcher (it had routed $routed of $accepted_all webhooks)"
    kill -TERM "$dpid"
    for _ in $(seq 1 300); do kill -0 "$dpid" 2>/dev/null || break; sleep 0.1; done
    kill -0 "$dpid" 2>/dev/null && problems+=("the dispatcher did not stop within 30 s of SIGTERM")
fi
if [ "${BENCH_KEEP_ROWS:-0}" != 1 ]; then
    say "removing this run's webhook_deliveries and event_log rows (hooks bench.$run_id.*) and vacuuming"
    { sql "DELETE FROM webhook_deliveries WHERE hook_id LIKE 'bench.$run_id.%'" &&
      sql "DELETE FROM event_log WHERE type = 'agentbus.webhook.received' AND subject LIKE 'bench.$run_id.%'" &&
      sql "VACUUM (ANALYZE) webhook_deliveries" && sql "VACUUM (ANALYZE) event_log"; } >/dev/null ||
        say "could not delete the benchmark's rows (hooks bench.$run_id.*)"
fi

# Stop the stack before reading the logs, so that its shutdown is checked too.
stack_down_checked
logs_scan

# --- report ---------------------------------------------------------------------------
best_base=${base_rps[$best_c]:-0}
cat <<EOF

## agentbus incoming-webhooks benchmark ($broker broker)

| | |
|---|---|
$(facts_rows)
| PostgreSQL | $db_desc |
| ingress | one process, thread per connection (libmicrohttpd), database.pool_size ${AGENTBUS_DATABASE_POOL_SIZE:-4}; kafka.properties ${AGENTBUS_KAFKA_PROPERTIES:-(none)} |
| hooks | one per phase, action custom, shared secret (X-Webhook-Secret), template \`{{event.action}}\`, a JSON body of 99 bytes; topic prefix \`$prefix\` |
| client | wrk $(wrk_version) on the same machine, ${duration} s per level, \`--timeout 30s\`, 3 s warm-up |

EOF
if [ "$baseline" = 1 ]; then
    cat <<EOF
### Webhooks beside the baseline (requests/s, p50 / p99 ms)

| connections | \`GET /livez\` (ops listener) | p50 / p99 | **\`POST /webhook/<id>\`, 202 after Kafka's ack** | p50 / p99 | webhooks ÷ /livez | webhooks ÷ $reference_rps |
|---:|---:|---:|---:|---:|---:|---:|
$(printf '%s\n' "${side_rows[@]}")

The best: **$best_rps webhooks/s** at $best_c connections, $(div "$((best_rps * 100))" "$best_base" 1) % of what the same
ingress' bare /livez route answered at that level here ($best_base/s), $(div "$((best_rps * 100))" "$reference_rps" 1) % of the issue's
$reference_rps/s for a bare ulfius handler on 2 cores.

### Baseline: \`GET /livez\` on the ingress' ops listener (constant JSON, no Kafka, no log line)

| connections | wrk threads | requests/s | p50 ms | p90 ms | p99 ms | max ms | non-2xx | ingress CPU µs/request |
|---:|---:|---:|---:|---:|---:|---:|---:|---:|
$(printf '%s\n' "${base_rows[@]}")

EOF
fi
cat <<EOF
### Webhooks: \`POST /webhook/<id>\` with the secret (202 = acknowledged by Kafka, acks=all)

| connections | wrk threads | accepted/s | p50 ms | p90 ms | p99 ms | max ms | 202s | non-2xx | socket errors | ingress CPU µs/request |
|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|
$(printf '%s\n' "${hook_rows[@]}")

EOF
if [ -n "$idem_levels" ]; then
    cat <<EOF
### With a unique \`Idempotency-Key\` per request (INSERT ... ON CONFLICT into webhook_deliveries, Kafka, UPDATE published)

| connections | wrk threads | accepted/s | p50 ms | p90 ms | p99 ms | max ms | 202s | non-2xx | socket errors | ingress CPU µs/request |
|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|
$(printf '%s\n' "${idem_rows[@]}")

EOF
fi
cat <<EOF
### Every 202 on Kafka: \`agentbus-kafka consume ${prefix}agentbus.ingress\`, counted by hook

| phase | 202s (wrk) | accepted (ingress metric) | events on Kafka | webhook_deliveries rows | every 202 on Kafka |
|---|---:|---:|---:|---:|---|
$(printf '%s\n' "${check_rows[@]}")

Requests in flight when wrk stops at its deadline are still answered by ingress, so Kafka
may hold a few more events than wrk counted 202s; it must hold exactly what ingress
accepted. The dispatcher had routed $routed of the $accepted_all accepted webhooks when it was
stopped: a custom hook's event is republished on the team's topic, one Kafka ack at a
time, so it lags behind ingress at these rates (not measured here).

### Where the CPU went (% of one core; the machine has $ncpu)

| phase | ingress | dispatcher | llm-worker + notifier | broker | PostgreSQL | wrk + curl + psql | other | machine |
|---|---:|---:|---:|---:|---:|---:|---:|---:|
$(printf '%s\n' "${cpu_rows[@]}")

$(cpu_note)

EOF
if [ "${#dso_rows[@]}" -gt 0 ]; then
    cat <<EOF
### Where the ingress' CPU went (perf)

$perf_note

| library | share of the ingress' samples |
|---|---:|
$(printf '%s\n' "${dso_rows[@]}")

In the kernel's futex (threads waiting for and waking each other: mutexes and condition
variables), callees included: ${futex_pct:-n/a} of the samples; under \`pthread_cond_broadcast\`: ${bcast_pct:-n/a}.
The user-space functions with the most samples of their own:

| function | library | share |
|---|---|---:|
$(printf '%s\n' "${sym_rows[@]}")

EOF
fi
report_end
echo "non-2xx: 0 and socket errors: 0 in every phase; every 202 is on Kafka. (raw outputs: $out)"
