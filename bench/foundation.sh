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
run="$root/.run"
bin="$root/build/release/bin"
lua="$root/bench/foundation-post.lua"
api="http://127.0.0.1:8080"
levels=${BENCH_LEVELS:-"1 8 32"}
duration=${BENCH_DURATION:-15}
threads=${BENCH_THREADS:-2}
backlog=${BENCH_BACKLOG:-1}
backlog_duration=${BENCH_BACKLOG_DURATION:-10}
drain_timeout=${BENCH_DRAIN_TIMEOUT:-60}
services=(ingress dispatcher llm-worker notifier)
declare -A ops_port=([ingress]=9100 [dispatcher]=9101 [llm-worker]=9102 [notifier]=9103)

say() { echo "bench: $*" >&2; }
die() { say "$*"; exit 1; }
pid_alive() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }
now() { date +%s.%N; }
# Listening sockets on a TCP port (with users:(("name",pid=N,..)) when we may see them).
listeners() { ss -H -ltnp "sport = :$1" 2>/dev/null || true; }

# --- only loopback --------------------------------------------------------------------
if [ -n "${KAFKA_BOOTSTRAP:-}" ]; then
    IFS=, read -ra brokers <<<"$KAFKA_BOOTSTRAP"
    for b in "${brokers[@]}"; do
        b=${b#*://}
        case "$b" in 127.0.0.1:*|localhost:*) ;; *) die "KAFKA_BOOTSTRAP=$KAFKA_BOOTSTRAP is not on 127.0.0.1: refusing" ;; esac
    done
fi
if [ -n "${DATABASE_URL:-}" ]; then
    dbhost=${DATABASE_URL#*://}; dbhost=${dbhost#*@}; dbhost=${dbhost%%[:/?]*}
    case "$dbhost" in 127.0.0.1|localhost|"") ;; *) die "DATABASE_URL does not point at 127.0.0.1: refusing" ;; esac
fi

out=$(mktemp -d /tmp/agentbus-bench.XXXXXX)
say "raw outputs in $out"

# --- tools ----------------------------------------------------------------------------
if ! command -v wrk >/dev/null 2>&1; then
    say "installing wrk (apt-get)"
    sudo=""; [ "$(id -u)" -eq 0 ] || sudo=sudo
    export DEBIAN_FRONTEND=noninteractive
    $sudo apt-get install -y -q wrk >"$out/apt.log" 2>&1 ||
        { $sudo apt-get update -q >>"$out/apt.log" 2>&1 && $sudo apt-get install -y -q wrk >>"$out/apt.log" 2>&1; } ||
        { tail -n 20 "$out/apt.log" >&2; die "could not install wrk"; }
fi
for tool in psql curl ss awk; do command -v "$tool" >/dev/null 2>&1 || die "$tool is missing"; done

# --- the stack: reuse it or start it (checked before the build, started after) --------
alive=0
for s in "${services[@]}"; do if pid_alive "$run/pids/$s.pid"; then alive=$((alive + 1)); fi; done

if [ "$alive" -eq "${#services[@]}" ]; then
    ingress_pid=$(cat "$run/pids/ingress.pid")
    l=$(listeners 8080)
    [ -n "$l" ] || die "the stack's ingress runs (pid $ingress_pid) but nothing listens on 127.0.0.1:8080"
    if grep -q 'pid=' <<<"$l" && ! grep -q "pid=$ingress_pid," <<<"$l"; then
        die "port 8080 is taken by something else than the stack's ingress: $l"
    fi
    for s in "${services[@]}"; do
        curl -fsS "http://127.0.0.1:${ops_port[$s]}/readyz" >/dev/null 2>&1 ||
            die "the stack runs but agentbus-$s is not ready (scripts/stack.sh status)"
    done
    reuse=1
elif [ "$alive" -eq 0 ]; then
    for p in 8080 3011 9100 9101 9102 9103; do
        l=$(listeners "$p")
        [ -z "$l" ] || die "port $p is taken by something else, refusing to run: $l"
    done
    reuse=0
else
    die "the stack is partly running ($alive of ${#services[@]} services): run scripts/stack.sh down (or up) first"
fi

say "building (make -s all)"
make -s -j"$(nproc)" all >"$out/build.log" 2>&1 || { tail -n 30 "$out/build.log" >&2; die "the build failed"; }

started=0
paused_pid=""
cleanup() {
    local rc=$?
    if [ -n "$paused_pid" ]; then kill -CONT "$paused_pid" 2>/dev/null || true; fi
    rm -f "$out/auth.header"
    if [ "$started" = 1 ]; then
        say "stopping the stack this script started"
        AGENTBUS_BIN="$bin" scripts/stack.sh down >>"$out/stack.log" 2>&1 || say "scripts/stack.sh down failed: see $out/stack.log"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Where each log stands now: only what the benchmark adds (start and stop included) is
# checked at the end.
declare -A log_offset
logs=()
for s in devbroker "${services[@]}"; do logs+=("$run/logs/$s.log"); done
[ -n "${DATABASE_URL:-}" ] || logs+=("$run/pg/postgres.log")
for f in "${logs[@]}"; do log_offset[$f]=$(stat -c %s "$f" 2>/dev/null || echo 0); done

if [ "$reuse" = 1 ]; then
    say "using the running stack (it stays up; its binaries are the ones it was started with)"
else
    say "starting the stack (scripts/stack.sh up)"
    started=1
    AGENTBUS_BIN="$bin" scripts/stack.sh up >"$out/stack.log" 2>&1 ||
        { tail -n 30 "$out/stack.log" >&2; die "the stack did not start"; }
fi

if [ -n "${DATABASE_URL:-}" ]; then
    db_url=$DATABASE_URL; db_desc="DATABASE_URL (127.0.0.1)"
else
    db_url=$(scripts/pg.sh status "$run/pg") || die "the throwaway PostgreSQL in .run/pg does not run"
    db_desc="throwaway cluster in .run/pg (fsync=off, synchronous_commit=off)"
fi
sql() { psql "$db_url" -XAtq -F '|' -v ON_ERROR_STOP=1 -c "$1"; }

token=${AGENTBUS_ADMIN_TOKEN:-$(cat "$run/admin-token" 2>/dev/null || true)}
[ -n "$token" ] || die "no admin token: neither AGENTBUS_ADMIN_TOKEN nor .run/admin-token"
# The token goes to curl through a header file and to wrk through the environment,
# never on a command line.
(umask 077; printf 'Authorization: Bearer %s\n' "$token" >"$out/auth.header")

bootstrap=$(cat "$run/kafka.bootstrap" 2>/dev/null || echo "?")
mock_note=""
if pid_alive "$run/pids/devbroker.pid"; then
    broker_desc="librdkafka mock cluster (agentbus-devbroker) at $bootstrap"
    mock_note="With the mock cluster, publish→journal latency is mostly an artefact: librdkafka's mock broker
holds an empty Fetch response for the consumer's whole fetch.wait.max.ms (librdkafka's default,
500 ms) instead of answering when data arrives, so events wait 0–500 ms before the dispatcher
sees them. A real broker answers the long poll as soon as data arrives."
else
    broker_desc="KAFKA_BOOTSTRAP=$bootstrap"
fi
linger=$(grep -o '"linger.ms", "[0-9]*"' common/kafka_producer.c 2>/dev/null | grep -o '[0-9]\+' || echo "?")

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
    local line kv
    line=$(grep '^BENCHRESULT ' "$out/wrk-$label.txt") || { cat "$out/wrk-$label.txt" >&2; die "no result from wrk ($label)"; }
    for kv in ${line#BENCHRESULT }; do printf -v "r_${kv%%=*}" '%s' "${kv#*=}"; done
    # wrk takes Ctrl-C as "stop now" and exits 0, so bash would carry on: catch it here.
    awk -v d="$r_duration_s" -v s="$secs" 'BEGIN { exit !(d >= 0.9 * s) }' ||
        die "wrk stopped after $r_duration_s s of $secs s ($label): interrupted?"
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

# CPU accounting: where the CPU went during a phase, and whether something else shared the
# machine. cpu_sample prints: time, the machine's busy jiffies (user+nice+system+steal), then
# the CPU jiffies of ingress, dispatcher, llm-worker + notifier, the dev broker, PostgreSQL
# (postmaster, its live backends and the ones it reaped) and this script's children (wrk,
# psql, curl).
proc_jiffies() { # PID [with-reaped-children]: utime+stime (+cutime+cstime), 0 if gone
    awk -v c="${2:-0}" '{ sub(/^.*\) /, ""); t = $12 + $13; if (c) t += $14 + $15; print t }' \
        "/proc/$1/stat" 2>/dev/null || echo 0
}
pid_of() { cat "$run/pids/$1.pid" 2>/dev/null || echo 0; }
cpu_sample() {
    local pg=0 pm pid
    if [ -z "${DATABASE_URL:-}" ] && pm=$(head -n 1 "$run/pg/data/postmaster.pid" 2>/dev/null); then
        pg=$(proc_jiffies "$pm" 1)
        for pid in $(ps -o pid= --ppid "$pm" 2>/dev/null); do pg=$((pg + $(proc_jiffies "$pid"))); done
    fi
    echo "$(now) $(awk '/^cpu / { print $2 + $3 + $4 + $9; exit }' /proc/stat)" \
        "$(proc_jiffies "$(pid_of ingress)") $(proc_jiffies "$(pid_of dispatcher)")" \
        "$(( $(proc_jiffies "$(pid_of llm-worker)") + $(proc_jiffies "$(pid_of notifier)") ))" \
        "$(proc_jiffies "$(pid_of devbroker)") $pg $(proc_jiffies $$ 1)"
}
clk_tck=$(getconf CLK_TCK)
ncpu=$(nproc)
# cpu_row LABEL SAMPLE0 SAMPLE1: a Markdown row, each column in % of one core; sets
# cpu_other (the rest of the machine: other processes, kernel threads, steal).
cpu_row() {
    local label=$1 row
    row=$(awk -v a="$2" -v b="$3" -v hz="$clk_tck" 'BEGIN {
        split(a, x, " "); split(b, y, " "); dt = (y[1] - x[1]) * hz; own = 0
        for (i = 3; i <= 8; i++) { d[i] = y[i] - x[i]; own += d[i] }
        other = (y[2] - x[2]) - own; if (other < 0) other = 0
        printf "%.0f;", other / dt * 100
        for (i = 3; i <= 8; i++) printf "%.0f | ", d[i] / dt * 100
        printf "%.0f | %.0f", other / dt * 100, (y[2] - x[2]) / dt * 100 }')
    cpu_other=${row%%;*}
    cpu_rows+=("| $label | ${row#*;} |")
    [ "$cpu_other" -le $((10 * ncpu)) ] || noisy+=("$label: other $cpu_other %")
}

fmt() { awk -v x="$1" -v d="${2:-1}" 'BEGIN { printf "%.*f", d, x }'; }
div() { awk -v a="$1" -v b="$2" -v d="${3:-0}" 'BEGIN { if (b > 0) printf "%.*f", d, a / b; else printf "n/a" }'; }
sub() { awk -v a="$1" -v b="$2" -v d="${3:-2}" 'BEGIN { printf "%.*f", d, a - b }'; }

# --- warm-up, levels, backlog ---------------------------------------------------------
load_start=$(cut -d' ' -f1-3 /proc/loadavg)
say "warm-up: 3 s at 8 connections (not reported)"
m0=$(journaled)
wrk_run warmup 8 3
drain warmup "$r_accepted" "$m0"

ingress_rows=()
journal_rows=()
problems=()
noisy=()
cpu_rows=()
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
    cpu_row "$c connection(s)" "$r_cpu0" "$r_cpu1"
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
    cpu_row "backlog: publishing, dispatcher paused" "$r_cpu0" "$r_cpu1"
    cpu_resume=$(cpu_sample)
    t_resume=${cpu_resume%% *}
    kill -CONT "$paused_pid"
    paused_pid=""
    drain backlog "$r_accepted" "$m0"
    cpu_row "backlog: dispatcher draining (until the count is stable)" "$cpu_resume" "$(cpu_sample)"
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
if [ "$started" = 1 ]; then
    say "stopping the stack this script started"
    started=0
    AGENTBUS_BIN="$bin" scripts/stack.sh down >>"$out/stack.log" 2>&1 ||
        problems+=("scripts/stack.sh down failed: see $out/stack.log")
    if grep -q 'did not stop' "$out/stack.log"; then
        problems+=("shutdown: $(grep 'did not stop' "$out/stack.log" | tr '\n' ' ')")
    fi
fi

log_report=()
log_growth=()
reported=0
for f in "${logs[@]}"; do
    [ -f "$f" ] || continue
    new="$out/new-$(basename "$f")"
    tail -c +"$(( ${log_offset[$f]:-0} + 1 ))" "$f" >"$new"
    if [[ "$f" == */postgres.log ]]; then
        pattern='(ERROR|FATAL|PANIC|WARNING):'
    else
        pattern='"level":"(warn|error)"'
    fi
    n=$(grep -cE "$pattern" "$new" || true)
    if [ "$n" -gt 0 ]; then
        log_report+=("$(basename "$f"): $n warn/error lines, the first ones:")
        while IFS= read -r line; do log_report+=("    ${line:0:300}"); done < <(grep -E "$pattern" "$new" | head -n 5)
    fi
    # The services log JSON lines; anything else came from a library writing to stderr.
    # (The dev broker's bootstrap line is expected.)
    if [[ "$f" != */postgres.log ]]; then
        n=$(grep -vcE '^\{|^127\.0\.0\.1:[0-9]+$|^$' "$new" || true)
        if [ "$n" -gt 0 ]; then
            log_report+=("$(basename "$f"): $n lines that are not JSON log lines, e.g.:")
            while IFS= read -r line; do log_report+=("    ${line:0:300}"); done < <(grep -vE '^\{|^127\.0\.0\.1:[0-9]+$|^$' "$new" | sort | uniq -c | sort -rn | head -n 3)
        fi
    fi
    size=$(stat -c %s "$new")
    [ "$size" -lt 1048576 ] || log_growth+=("$(basename "$f") +$(awk -v b="$size" 'BEGIN { printf "%.0f MB", b / 1048576 }')")
    # Keep the excerpt only when it has something to show.
    [ "${#log_report[@]}" -gt "$reported" ] || rm -f "$new"
    reported=${#log_report[@]}
done

# --- report ---------------------------------------------------------------------------
commit=$(git rev-parse --short HEAD 2>/dev/null || echo "?")
if [ -n "$(git status --porcelain --untracked-files=no 2>/dev/null)" ]; then
    commit="$commit (+ uncommitted changes in the working tree)"
fi
cpu=$(awk -F': *' '/^model name/ { print $2; exit }' /proc/cpuinfo)
[ -n "$cpu" ] || cpu=$(uname -m)
mem=$(awk '/^MemTotal/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo)
wrk_version=$( (wrk -v 2>&1 || true) | awk 'NR == 1 { print $2 }')

cat <<EOF

## agentbus foundation benchmark

| | |
|---|---|
| commit | \`$commit\` |
| date | $(date -u '+%Y-%m-%d %H:%M UTC') |
| machine | $(nproc) CPUs (nproc), $cpu, $mem, Linux $(uname -r) |
| load average at start | $load_start |
| build | release (\`make\`: -O2), build/release/bin |
| Kafka | $broker_desc; producer acks=all, idempotent, linger.ms=$linger |
| PostgreSQL | $db_desc; event_log at start: $table_start |
| client | wrk $wrk_version on the same machine, ${duration} s per level, \`--timeout 30s\`, 3 s warm-up |

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

other = everything else on the machine (other processes, kernel threads, steal).$([ "${#noisy[@]}" -eq 0 ] && echo " It stayed low: nothing else competed for the CPU." || printf ' **The machine was shared during: %s; those figures are low.**' "$(printf '%s; ' "${noisy[@]}" | sed 's/; $//')")

EOF

if [ -n "$dispatcher_metrics" ]; then
    echo "dispatcher counters now (since the dispatcher started):"
    while IFS= read -r line; do echo "    $line"; done <<<"$dispatcher_metrics"
fi
if [ "${#log_growth[@]}" -gt 0 ]; then
    echo "logs grew during the benchmark: ${log_growth[*]}"
fi
if [ "${#log_report[@]}" -gt 0 ]; then
    echo "logged during the benchmark$([ "$reuse" = 0 ] && echo " (stack start and stop included)"):"
    printf '  %s\n' "${log_report[@]}"
else
    echo "no warn/error lines in .run/logs/*.log$([ -z "${DATABASE_URL:-}" ] && echo " or .run/pg/postgres.log") during the benchmark."
fi
if [ "${#problems[@]}" -gt 0 ]; then
    echo "PROBLEMS:"
    printf '  - %s\n' "${problems[@]}"
    echo "(raw outputs: $out)"
    exit 1
fi
echo "non-2xx: 0 and socket errors: 0 at every level; every accepted event reached event_log. (raw outputs: $out)"
