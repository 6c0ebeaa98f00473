#!/usr/bin/env bash
# The gateway benchmark: the OpenClaw agent API (poll, report, send-message) on the local
# stack on loopback. One command, prints a Markdown report:
#   bench/gateway.sh                                              the embedded broker
#   KAFKA_BOOTSTRAP=$(cat .run/kafka/bootstrap) bench/gateway.sh  real Kafka (make kafka)
#
# It creates a fresh tenant with two OpenClaw agents, A and B (A relates to B), and their
# API keys, through agentbusctl (the admin API), then measures:
# 1. Empty inbox: wrk GETs /api/gateway/poll?wait=0 as B at a few concurrency levels.
#    Polls/s, latency p50/p90/p99, non-2xx. Each poll is 4 queries: the key lookup, the
#    lease (which finds nothing), last_seen_at, the relationships.
# 2. With messages: A sends BENCH_MESSAGES messages to B through the real path
#    (send-message, Kafka, the dispatcher writes B's inbox rows); the fill rate is the
#    dispatcher's. Then concurrent pollers drain the inbox (?limit=BENCH_DRAIN_LIMIT), in
#    two modes: "lease" only leases (the pollers count what they get), "report" also
#    reports every message before polling again (the cycle of a real agent; each report
#    completes the row, stores the result in the conversation and sends it back to A
#    through Kafka). Messages/s and polls/s over the drain's window. The dispatcher fills
#    an inbox far more slowly than pollers empty it, so a drain of BENCH_MESSAGES is
#    short: it is repeated in rounds over the same messages until BENCH_DRAIN_MIN_S of
#    drain time is measured. Before each round the benchmark's rows are made due again
#    by SQL as if their lease had run out (status leased, lease_until in the past, result
#    cleared), which is the redelivery path the poll serves, and gateway_messages is
#    vacuumed; between rounds it waits until the dispatcher has handled every reply.
# 3. Send-to-poll latency (bench/gateway-client.py): B holds a long poll open
#    (?wait=BENCH_LAT_WAIT&limit=1), A sends; the time from the start of the send until
#    B's poll returns the message, BENCH_LAT_SAMPLES times in sequence, split by the inbox
#    row's timestamps into: send answered, row written by the dispatcher, row leased by
#    the long poll, answer back at the client. Works whether the long poll re-checks the
#    inbox every 200 ms or is woken by LISTEN/NOTIFY: only the third part differs.
# 4. Where the CPU went in each phase, machine facts, the commit, warn/error log lines.
# The tenant (and with it agents, keys, inbox rows, conversations) and its event_log rows
# are deleted at the end (BENCH_KEEP=1 keeps them).
#
# Builds with `make -s all`, starts the stack if it is not running (and stops it at the end
# only then), refuses to run if port 8080 is held by anything but the stack's ingress. With
# KAFKA_BOOTSTRAP set, a stack it starts uses that broker (scripts/stack.sh creates the
# topics on it); a running stack must already use the broker asked for. Only 127.0.0.1 is
# ever targeted. Raw outputs and logs go to a directory under /tmp.
#
# Knobs (environment): BENCH_LEVELS ("1 8 32": empty-inbox connections), BENCH_DURATION
# (10 s per level), BENCH_THREADS (2 wrk threads), BENCH_MESSAGES (1000),
# BENCH_SEND_CONCURRENCY (16 senders for the fill), BENCH_DRAIN_LEVELS ("1 8" pollers),
# BENCH_DRAIN_MODES ("lease report"), BENCH_DRAIN_LIMIT (20, at most gateway.poll_batch),
# BENCH_DRAIN_MIN_S (2), BENCH_DRAIN_MAX_ROUNDS (40), BENCH_LAT_SAMPLES (300),
# BENCH_LAT_WAIT (10 s), BENCH_LAT_GAP_MS ("20 220": random pause before each send),
# BENCH_FILL_TIMEOUT (120 s), BENCH_KEEP (0). An empty BENCH_LEVELS or BENCH_DRAIN_MODES, or
# BENCH_LAT_SAMPLES=0, skips that phase.
# shellcheck disable=SC2154  # the r_* variables are set by wrk_run through printf -v
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
. "$root/bench/lib.sh"
bench_vars
lua="$root/bench/gateway-poll.lua"
client="$root/bench/gateway-client.py"
levels=${BENCH_LEVELS-"1 8 32"}
duration=${BENCH_DURATION:-10}
threads=${BENCH_THREADS:-2}
messages=${BENCH_MESSAGES:-1000}
send_conc=${BENCH_SEND_CONCURRENCY:-16}
drain_levels=${BENCH_DRAIN_LEVELS:-"1 8"}
drain_modes=${BENCH_DRAIN_MODES-"lease report"}
drain_limit=${BENCH_DRAIN_LIMIT:-20}
drain_min=${BENCH_DRAIN_MIN_S:-2}
drain_max_rounds=${BENCH_DRAIN_MAX_ROUNDS:-40}
lat_samples=${BENCH_LAT_SAMPLES:-300}
lat_wait=${BENCH_LAT_WAIT:-10}
fill_timeout=${BENCH_FILL_TIMEOUT:-120}
for m in $drain_modes; do
    case "$m" in lease|report) ;; *) die "BENCH_DRAIN_MODES: lease and/or report, not $m" ;; esac
done
for n in $levels $drain_levels "$messages" "$duration" "$drain_limit" "$lat_wait"; do
    [[ "$n" =~ ^[1-9][0-9]*$ ]] || die "knobs take positive integers, not '$n'"
done
[[ "$lat_samples" =~ ^[0-9]+$ ]] || die "BENCH_LAT_SAMPLES takes an integer, not '$lat_samples'"

loopback_only

out=$(mktemp -d /tmp/agentbus-bench-gateway.XXXXXX)
say "raw outputs in $out"

# --- tools ----------------------------------------------------------------------------
need_tools " (scripts/install-deps.sh)" psql curl ss awk python3

# --- the stack: reuse it or start it (checked before the build, started after) --------
stack_check
if [ "$reuse" = 1 ]; then
    # The broker asked for must be the one the running stack uses.
    if [ -n "${KAFKA_BOOTSTRAP:-}" ] && pid_alive "$run/pids/devbroker.pid"; then
        die "KAFKA_BOOTSTRAP is set but the running stack uses the embedded broker: scripts/stack.sh down first"
    fi
    if [ -n "${KAFKA_BOOTSTRAP:-}" ] && [ "$(cat "$run/kafka.bootstrap" 2>/dev/null)" != "$KAFKA_BOOTSTRAP" ]; then
        die "the running stack uses Kafka at $(cat "$run/kafka.bootstrap" 2>/dev/null || echo '?'), not $KAFKA_BOOTSTRAP: scripts/stack.sh down first"
    fi
    if [ -z "${KAFKA_BOOTSTRAP:-}" ] && ! pid_alive "$run/pids/devbroker.pid"; then
        say "note: the running stack uses the broker at $(cat "$run/kafka.bootstrap" 2>/dev/null || echo '?'), not the embedded one"
    fi
fi
build_all

started=0
tenant_id=""
wrk_pid=""
token=""
cleanup() {
    local rc=$?
    if [ -n "$wrk_pid" ]; then kill -INT "$wrk_pid" 2>/dev/null || true; fi
    rm -f "$out/key-a.header" "$out/key-b.header"
    if [ -n "$tenant_id" ] && [ "${BENCH_KEEP:-0}" != 1 ]; then remove_tenant || true; fi
    stack_down_quiet
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
trap 'say "a command failed at line $LINENO"' ERR

logs_mark
stack_up "${KAFKA_BOOTSTRAP:+ on KAFKA_BOOTSTRAP=$KAFKA_BOOTSTRAP}"
db_connect

admin_token
# The admin token reaches agentbusctl and the keys reach wrk and the client through the
# environment, never a command line.
ctl() { AGENTBUS_ADMIN_TOKEN=$token AGENTBUS_URL=$api "$bin/agentbusctl" -q "$@"; }

broker_facts
mock_note=""
[ "$broker" != embedded ] || mock_note="With the mock cluster, the dispatcher sees a message up to kafka.fetch_wait_max_ms after Kafka acknowledged it (scripts/stack.sh sets 20 ms for the mock; the default is 500): librdkafka's mock broker holds an empty Fetch for that whole wait instead of answering when data arrives. That is most of the \"row written\" part of the latency; a real broker answers the fetch as soon as data arrives."
# How the long poll waits, read from the source that was built (a reused stack may run
# older binaries): woken by the dispatcher's NOTIFY, or re-checking on a timer only.
recheck=$(awk '/#define POLL_RECHECK_MS/ { print $3 }' services/ingress/gateway_inbox.c 2>/dev/null || true)
if grep -qs '"LISTEN ' services/ingress/*.c; then
    notify=1
    long_poll_desc="woken by the dispatcher's NOTIFY (PostgreSQL LISTEN in the ingress), re-check every ${recheck:-?} ms as a safety net (from services/ingress/ as built)"
else
    notify=0
    long_poll_desc="re-checks the inbox every ${recheck:-?} ms (from services/ingress/gateway_inbox.c as built)"
fi

run_id="r$(date +%Y%m%d%H%M%S)$$"
tag="bench-$run_id"

# --- metrics --------------------------------------------------------------------------
# metric PORT PATTERN: the sum of the samples whose line starts with PATTERN (0 if none).
metric() {
    curl -fsS --max-time 2 "http://127.0.0.1:$1/metrics" 2>/dev/null |
        awk -v p="$2" 'index($0, p) == 1 { s += $NF } END { printf "%d", s }' || echo 0
}
produced() { metric 9100 'agentbus_kafka_produced_total{topic="agentbus.ingress",outcome="acked"}'; }
# Handled for good: outcome "done", "dead_letter" or "dead_letter_failed" (not "retry").
handled() { metric 9101 'agentbus_kafka_consumed_total{group="agentbus-dispatcher",topic="agentbus.ingress",outcome="d'; }
dead_letters() { metric 9101 'agentbus_kafka_consumed_total{group="agentbus-dispatcher",topic="agentbus.ingress",outcome="dead'; }
# The dispatcher's handling time (sum of seconds, count) for agentbus.ingress.
handle_sum() {
    curl -fsS --max-time 2 http://127.0.0.1:9101/metrics 2>/dev/null | awk '
        index($0, "agentbus_kafka_handle_duration_seconds_sum{group=\"agentbus-dispatcher\",topic=\"agentbus.ingress\"}") == 1 { s = $NF }
        index($0, "agentbus_kafka_handle_duration_seconds_count{group=\"agentbus-dispatcher\",topic=\"agentbus.ingress\"}") == 1 { c = $NF }
        END { printf "%s %s\n", s + 0, c + 0 }' || echo "0 0"
}
# Waits until the dispatcher has handled every event the ingress produced since the
# benchmark started (nothing of ours in flight), at most $1 seconds; false on timeout.
base_produced=0
base_handled=0
dispatcher_idle() {
    local deadline=$((SECONDS + $1)) p h
    while :; do
        p=$(( $(produced) - base_produced )); h=$(( $(handled) - base_handled ))
        [ "$h" -lt "$p" ] || return 0
        [ $SECONDS -lt "$deadline" ] || { say "the dispatcher is $((p - h)) events behind after $1 s"; return 1; }
        sleep 0.1
    done
}

# The benchmark's tenant goes, and everything of it with it (ON DELETE CASCADE); its
# events stay in Kafka, their journal rows are deleted. First the dispatcher must have
# handled every event of ours: an event of a deleted tenant is a dead letter.
remove_tenant() {
    local id=$tenant_id
    [ -n "$id" ] || return 0
    say "removing the benchmark's tenant $id and its event_log rows"
    dispatcher_idle 60 || true
    ctl tenant delete "$id" >/dev/null || { say "could not delete tenant $id"; return 1; }
    tenant_id=""
    if ! sql "DELETE FROM event_log WHERE type = 'agentbus.message.sent' AND data->>'tenant_id' = '$id'" >/dev/null; then
        say "could not delete the event_log rows of tenant $id"; return 1
    fi
    for t in event_log gateway_messages chat_messages; do sql "VACUUM (ANALYZE) $t" >/dev/null || true; done
}

# --- the tenant -----------------------------------------------------------------------
say "creating tenant bench-gateway-$run_id with OpenClaw agents agent-a -> agent-b"
base_produced=$(produced)
base_handled=$(handled)
base_dead=$(dead_letters)
tenant_id=$(ctl tenant create "bench-gateway-$run_id") || die "could not create the tenant"
agent_a=$(ctl agent create agent-a --tenant "$tenant_id" --type openclaw) || die "could not create agent-a"
agent_b=$(ctl agent create agent-b --tenant "$tenant_id" --type openclaw) || die "could not create agent-b"
ctl relate "$agent_a" --agent "$agent_b" --tenant "$tenant_id" --relation peer >/dev/null || die "could not relate agent-a to agent-b"
key_a=$(ctl api-key "$agent_a" --tenant "$tenant_id") || die "could not issue agent-a's key"
key_b=$(ctl api-key "$agent_b" --tenant "$tenant_id") || die "could not issue agent-b's key"
(umask 077; printf 'X-Api-Key: %s\n' "$key_a" >"$out/key-a.header"; printf 'X-Api-Key: %s\n' "$key_b" >"$out/key-b.header")
export BENCH_API=$api BENCH_TARGET=agent-b BENCH_TAG=$tag BENCH_OUT=$out

# One round trip by hand first: a clear message beats a wrk run full of 401s.
code=$(curl -sS -o "$out/probe.json" -w '%{http_code}' -H @"$out/key-b.header" "$api/api/gateway/poll?wait=0") || code=000
[ "$code" = 200 ] || die "the probe poll answered $code: $(cat "$out/probe.json" 2>/dev/null)"
code=$(curl -sS -o "$out/probe.json" -w '%{http_code}' -X POST -H @"$out/key-a.header" -H 'Content-Type: application/json' \
           -d "{\"target\":\"agent-b\",\"content\":\"$tag probe\"}" "$api/api/gateway/send-message") || code=000
[ "$code" = 200 ] || die "the probe send-message answered $code: $(cat "$out/probe.json" 2>/dev/null)"
curl -sS -o "$out/probe.json" -H @"$out/key-b.header" "$api/api/gateway/poll?wait=10" || true
probe_id=$(grep -o '"id":"[0-9a-f-]*"' "$out/probe.json" | head -n 1 | cut -d'"' -f4)
[ -n "$probe_id" ] || die "the probe message did not reach agent-b's poll within 10 s: $(cat "$out/probe.json")"
code=$(curl -sS -o "$out/report.json" -w '%{http_code}' -X POST -H @"$out/key-b.header" -H 'Content-Type: application/json' \
           -d "{\"message_id\":\"$probe_id\",\"result\":\"ok\"}" "$api/api/gateway/report") || code=000
[ "$code" = 200 ] || die "the probe report answered $code: $(cat "$out/report.json" 2>/dev/null)"
dispatcher_idle 30 || die "the dispatcher did not handle the probe's reply"

# --- CPU accounting (cpu_sample, cpu_row: bench/lib.sh) --------------------------------
# The broker is the dev broker or the Kafka JVM (broker_pid); this script's children are
# wrk, python3, psql and curl.
cpu_init

# --- wrk ------------------------------------------------------------------------------
# wrk_threads CONNECTIONS: the wrk threads for that many connections (each thread gets
# the same number of connections).
wrk_threads() {
    local t=$threads
    [ "$1" -ge "$t" ] || t=$1
    while [ $(($1 % t)) -ne 0 ]; do t=$((t - 1)); done
    echo "$t"
}

# wrk_run LABEL MODE CONNECTIONS SECONDS PATH: runs gateway-poll.lua as agent-b and sets
# r_<field> from its BENCHRESULT line. In the lease and report modes SECONDS is only a cap: the run
# ends (SIGINT) once every wrk thread has written BENCHSTOP.
wrk_run() {
    local label=$1 mode=$2 conns=$3 secs=$4 path=$5 t stops line
    t=$(wrk_threads "$conns")
    r_threads=$t
    BENCH_KEY=$key_b BENCH_MODE=$mode BENCH_PER_THREAD=$((conns / t)) \
        wrk -t"$t" -c"$conns" -d"${secs}s" --timeout 30s -s "$lua" "$api$path" \
        >"$out/wrk-$label.txt" 2>"$out/wrk-$label.err" &
    wrk_pid=$!
    if [ "$mode" != poll ]; then
        while kill -0 "$wrk_pid" 2>/dev/null; do
            stops=$(grep -c '^BENCHSTOP$' "$out/wrk-$label.err" || true)
            if [ "$stops" -ge "$t" ]; then kill -INT "$wrk_pid" 2>/dev/null || true; break; fi
            sleep 0.02
        done
    fi
    wait "$wrk_pid" || { cat "$out/wrk-$label.txt" "$out/wrk-$label.err" >&2; wrk_pid=""; die "wrk failed ($label)"; }
    wrk_pid=""
    line=$(grep '^BENCHRESULT ' "$out/wrk-$label.txt") || { cat "$out/wrk-$label.txt" "$out/wrk-$label.err" >&2; die "no result from wrk ($label)"; }
    result_vars r_ "$line"
    if [ "$mode" = poll ]; then
        full_run "$secs" "$label"
    elif [ "$(grep -c '^BENCHSTOP$' "$out/wrk-$label.err" || true)" -lt "$t" ]; then
        die "the drain did not end within $secs s ($label): see $out/wrk-$label.err"
    fi
    grep -v '^BENCHSTOP$' "$out/wrk-$label.err" | head -n 3 >&2 || true
}

problems=()
load_start=$(cut -d' ' -f1-3 /proc/loadavg)

# --- 1. empty inbox -------------------------------------------------------------------
if [ -n "$levels" ]; then
    say "empty inbox: warm-up, 3 s at 8 connections (not reported)"
    wrk_run warmup poll 8 3 "/api/gateway/poll?wait=0"
fi
empty_rows=()
for c in $levels; do
    say "empty inbox: $c connection(s), $duration s"
    c0=$(cpu_sample)
    wrk_run "empty-c$c" poll "$c" "$duration" "/api/gateway/poll?wait=0"
    cpu_row "empty inbox, $c connection(s)" "$(cpu_delta "$c0" "$(cpu_sample)")"
    sockerr=$((r_connect + r_read + r_write + r_timeout))
    empty_rows+=("| $c | $r_threads | **$(div "$r_requests" "$r_duration_s" 0)** | $(fmt "$r_p50_ms" 2) | $(fmt "$r_p90_ms" 2) | $(fmt "$r_p99_ms" 2) | $(fmt "$r_max_ms" 1) | $r_non2xx | $sockerr |")
    [ "$r_non2xx" -eq 0 ] || problems+=("empty inbox, $c connection(s): $r_non2xx non-2xx responses (see $out/wrk-empty-c$c.*)")
    [ "$sockerr" -eq 0 ] || problems+=("empty inbox, $c connection(s): socket errors connect=$r_connect read=$r_read write=$r_write timeout=$r_timeout")
    [ "$r_messages" -eq 0 ] || problems+=("empty inbox, $c connection(s): the polls returned $r_messages messages: the inbox was not empty")
done

# --- 2. fill, then drain --------------------------------------------------------------
preload_where="agent_id = '$agent_b' AND starts_with(content, '$tag preload ')"
fill_rows=()
drain_rows=()
# Before each drain round: every message of the fill is due again, as after a lapsed lease.
make_due() {
    sql "UPDATE gateway_messages SET status = 'leased', lease_until = now() - interval '1 second',
                result = NULL, completed_at = NULL WHERE $preload_where" >/dev/null &&
        sql "VACUUM (ANALYZE) gateway_messages" >/dev/null
}
if [ -n "$drain_modes" ]; then
    say "fill: $messages messages from agent-a to agent-b ($send_conc concurrent send-message calls)"
    c0=$(cpu_sample)
    h0=$(handle_sum)
    BENCH_KEY_A=$key_a python3 "$client" send "$messages" "$send_conc" >"$out/fill.txt" 2>"$out/fill.err" ||
        { cat "$out/fill.txt" "$out/fill.err" >&2; die "the fill failed"; }
    line=$(grep '^BENCHRESULT ' "$out/fill.txt")
    result_vars f_ "$line"
    # shellcheck disable=SC2154  # f_* are set through printf -v
    [ "$f_failed" -eq 0 ] || { cat "$out/fill.err" >&2; die "$f_failed of $messages send-message calls failed"; }
    dispatcher_idle "$fill_timeout" || die "the dispatcher did not deliver the $messages messages within $fill_timeout s"
    cpu_row "fill: send-message + dispatcher" "$(cpu_delta "$c0" "$(cpu_sample)")"
    read -r hs0 hc0 <<<"$h0"
    read -r hs1 hc1 < <(handle_sum)
    handle_ms=$(awk -v a="$hs0" -v b="$hs1" -v c="$hc0" -v d="$hc1" 'BEGIN { if (d > c) printf "%.1f", (b - a) / (d - c) * 1000; else printf "n/a" }')
    IFS='|' read -r rows span < <(sql "SELECT count(*), coalesce(extract(epoch FROM max(created_at) - min(created_at)), 0) FROM gateway_messages WHERE $preload_where")
    [ "$rows" -eq "$messages" ] || die "agent-b's inbox holds $rows of the $messages messages sent"
    fill_rows+=("| send-message, $send_conc concurrent (Python client) | $messages | $(fmt "$f_duration_s" 2) | $(div "$messages" "$f_duration_s" 0) |")
    fill_rows+=("| inbox rows written by the dispatcher (first to last) | $rows | $(fmt "$span" 2) | **$(div "$rows" "$span" 0)** |")

    for mode in $drain_modes; do
        for c in $drain_levels; do
            say "drain ($mode): $c poller(s), limit $drain_limit, rounds of $messages messages until $drain_min s are measured"
            rounds=0; win=0; polls=0; wpolls=0; got=0; reps=0; empties=0; non2xx=0; sockerr=0
            p50s=(); p99s=(); cpu_acc=""
            while :; do
                make_due || die "could not make the messages due again"
                c0=$(cpu_sample)
                wrk_run "drain-$mode-c$c-$rounds" "$mode" "$c" 120 "/api/gateway/poll?wait=0&limit=$drain_limit"
                cpu_acc=$(cpu_delta "$c0" "$(cpu_sample)" "$cpu_acc")
                rounds=$((rounds + 1))
                win=$(awk -v a="$win" -v b="$r_window_s" 'BEGIN { printf "%.6f", a + b }')
                polls=$((polls + r_polls)); wpolls=$((wpolls + r_window_polls)); got=$((got + r_messages))
                reps=$((reps + r_reports)); empties=$((empties + r_empty)); non2xx=$((non2xx + r_non2xx))
                sockerr=$((sockerr + r_connect + r_read + r_write + r_timeout))
                p50s+=("$r_p50_ms"); p99s+=("$r_p99_ms")
                if [ "$r_messages" -ne "$messages" ]; then
                    problems+=("drain ($mode, $c pollers, round $rounds): the polls returned $r_messages messages, not $messages")
                fi
                if [ "$mode" = report ]; then
                    [ "$r_reports" -eq "$messages" ] || problems+=("drain (report, $c pollers, round $rounds): $r_reports reports, not $messages")
                    done_rows=$(sql "SELECT count(*) FROM gateway_messages WHERE $preload_where AND status = 'completed'")
                    [ "$done_rows" -eq "$messages" ] || problems+=("drain (report, $c pollers, round $rounds): $done_rows rows completed, not $messages")
                    # The replies to agent-a go through Kafka and the dispatcher after the
                    # reports: let them land before the next round (off the clock).
                    dispatcher_idle "$fill_timeout" || problems+=("drain (report): the dispatcher did not catch up with the replies")
                fi
                awk -v w="$win" -v m="$drain_min" 'BEGIN { exit !(w >= m) }' && break
                [ "$rounds" -lt "$drain_max_rounds" ] || break
            done
            cpu_row "drain ($mode), $c poller(s), $rounds round(s) (wrk runs only)" "$cpu_acc"
            med50=$(printf '%s\n' "${p50s[@]}" | sort -g | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }')
            max99=$(printf '%s\n' "${p99s[@]}" | sort -g | tail -n 1)
            if [ "$mode" = lease ]; then what="polls"; else what="polls + reports"; fi
            drain_rows+=("| $mode | $c | $rounds | $got | $(fmt "$win" 2) | **$(div "$got" "$win" 0)** | $(div "$wpolls" "$win" 0) | $(div "$got" "$polls" 1) | $(fmt "$med50" 1) / $(fmt "$max99" 1) ($what) | $non2xx |")
            [ "$non2xx" -eq 0 ] || problems+=("drain ($mode, $c pollers): $non2xx non-2xx responses (see $out/wrk-drain-$mode-c$c-*)")
            [ "$sockerr" -eq 0 ] || problems+=("drain ($mode, $c pollers): $sockerr socket errors")
        done
    done
    # The latency phase wants an empty inbox: the fill's rows go.
    sql "DELETE FROM gateway_messages WHERE $preload_where" >/dev/null && sql "VACUUM (ANALYZE) gateway_messages" >/dev/null
fi

# --- 3. send-to-poll latency ----------------------------------------------------------
lat_lines=()
if [ "$lat_samples" -gt 0 ]; then
    say "send-to-poll latency: $lat_samples samples, one at a time (about $((lat_samples * 2 / 5)) s or more)"
    c0=$(cpu_sample)
    BENCH_KEY_A=$key_a BENCH_KEY_B=$key_b BENCH_AGENT_B=$agent_b BENCH_DB_URL=$db_url BENCH_LAT_WAIT=$lat_wait \
        python3 "$client" latency "$lat_samples" >"$out/latency.txt" 2>"$out/latency.err" ||
        { cat "$out/latency.txt" "$out/latency.err" >&2; die "the latency run failed"; }
    cpu_row "send-to-poll latency, one message at a time" "$(cpu_delta "$c0" "$(cpu_sample)")"
    line=$(grep '^BENCHRESULT ' "$out/latency.txt")
    result_vars l_ "$line"
    # shellcheck disable=SC2154  # l_* are set through printf -v
    [ "$l_send_failed" -eq 0 ] || problems+=("latency: $l_send_failed send-message calls failed (see $out/latency.err)")
    [ "$l_missed" -eq 0 ] || problems+=("latency: $l_missed sent messages did not reach the long poll within $((lat_wait + 5)) s")
    [ "$l_stray" -eq 0 ] || problems+=("latency: the long poll returned $l_stray messages it was not waiting for")
    declare -A part_label=(
        [total]="**send → poll returns the message**"
        [ack]="send-message answered (Kafka acked, acks=all)"
        [row]="send → inbox row written (dispatcher's transaction start)"
        [lease]="inbox row → leased by the waiting poll"
        [back]="leased → poll answer at the client"
    )
    for part in total ack row lease back; do
        line=$(grep "^BENCHLAT $part " "$out/latency.txt") || continue
        declare -A v=()
        for kv in ${line#BENCHLAT "$part" }; do v[${kv%%=*}]=${kv#*=}; done
        lat_lines+=("| ${part_label[$part]} | ${v[n]} | ${v[p50]:-} | ${v[p90]:-} | ${v[p99]:-} | ${v[max]:-} |")
        unset v
    done
fi

# --- clean-up, logs -------------------------------------------------------------------
dispatcher_idle 60 || problems+=("the dispatcher was still behind at the end")
if [ "${BENCH_KEEP:-0}" != 1 ]; then
    remove_tenant || problems+=("could not remove the tenant $tenant_id")
    dispatcher_idle 10 || true
else
    say "keeping tenant $tenant_id (BENCH_KEEP=1)"
    tenant_id=""
fi
rm -f "$out/key-a.header" "$out/key-b.header"
dead=$(( $(dead_letters) - base_dead ))

# Stop the stack before reading the logs, so that its shutdown is checked too.
stack_down_checked
logs_scan

# --- report ---------------------------------------------------------------------------
gap=${BENCH_LAT_GAP_MS:-20 220}
if [ "$notify" = 1 ]; then
    wake_note="The long poll is woken by the dispatcher's NOTIFY at the commit of the inbox row, so \"row → leased\" is the wake-up plus one lease query."
else
    wake_note="The long poll re-checks the inbox every ${recheck:-?} ms, so \"row → leased\" averages about half of that plus one lease query."
fi

cat <<EOF

## agentbus gateway benchmark ($broker broker)

| | |
|---|---|
$(facts_rows)
| PostgreSQL | $db_desc |
| long poll | $long_poll_desc |
| clients | wrk $(wrk_version) and python3 (bench/gateway-client.py) on the same machine; one tenant, agent-a → agent-b, all polls as agent-b |

EOF
if [ -n "$levels" ]; then
    cat <<EOF
### Polls with an empty inbox: \`GET /api/gateway/poll?wait=0\`, ${duration} s per level

| connections | wrk threads | polls/s | p50 ms | p90 ms | p99 ms | max ms | non-2xx | socket errors |
|---:|---:|---:|---:|---:|---:|---:|---:|---:|
$(printf '%s\n' "${empty_rows[@]}")

Each poll: the key lookup, the lease (which finds nothing), last_seen_at, the relationships.

EOF
fi
if [ -n "$drain_modes" ]; then
    cat <<EOF
### Filling agent-b's inbox: $messages messages through send-message, Kafka and the dispatcher

| step | messages | s | messages/s |
|---|---:|---:|---:|
$(printf '%s\n' "${fill_rows[@]}")

The dispatcher handled each message in $handle_ms ms on average (its handle-time metric): one
transaction (journal, checks, conversation, chat turn, inbox row) and then one Kafka send
(agentbus.message.received) that it waits for before the next message.

### Draining it: \`GET /api/gateway/poll?wait=0&limit=$drain_limit\`

| mode | pollers | rounds | messages | drain s | **messages/s** | polls/s | messages per poll | median p50 / worst p99 ms | non-2xx |
|---|---:|---:|---:|---:|---:|---:|---:|---|---:|
$(printf '%s\n' "${drain_rows[@]}")

lease: the pollers only lease (count what they get). report: each poller reports every
message it got (\`POST /api/gateway/report\`) before it polls again, as an agent does; a
report completes the row, stores the result as a chat turn and sends it back to agent-a
through Kafka (acks=all), so its latency includes a Kafka acknowledgement. Each round
drains all $messages messages; before each, the benchmark makes them due again by SQL as
if their lease had lapsed (the redelivery path of the same query) and vacuums
gateway_messages. drain s = the sum over rounds of first request → last answer that
carried messages (lease) or last report (report). Each message comes with the 10 turns
before it in its conversation (all of these messages are one conversation), so a full poll
answers 20 × 11 texts.

EOF
fi
if [ "$lat_samples" -gt 0 ]; then
    cat <<EOF
### Send-to-poll latency: agent-b long-polls (\`?wait=$lat_wait&limit=1\`), agent-a sends; one message at a time

| | samples | p50 ms | p90 ms | p99 ms | max ms |
|---|---:|---:|---:|---:|---:|
$(printf '%s\n' "${lat_lines[@]}")

Measured by the client from the start of send-message until the long poll's answer with
that message; the parts come from the inbox row's created_at (the dispatcher's transaction
start) and delivered_at (the lease), on the same clock. Each send starts a random
${gap% *}–${gap#* } ms after the poll, so that sends land anywhere in a re-check period.
$wake_note Each message is reported after its sample, off the clock.
$mock_note

EOF
fi
cat <<EOF
### Where the CPU went (% of one core; the machine has $ncpu)

| phase | ingress | dispatcher | llm-worker + notifier | broker | PostgreSQL | clients (wrk, python3, psql) | other | machine |
|---|---:|---:|---:|---:|---:|---:|---:|---:|
$(printf '%s\n' "${cpu_rows[@]}")

$(cpu_note)

EOF

[ "$dead" -eq 0 ] || problems+=("the dispatcher dead-lettered $dead events during the benchmark")
report_end
echo "non-2xx: 0 and socket errors: 0 in every phase; every message arrived once. (raw outputs: $out)"
