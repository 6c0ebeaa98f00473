# bench/lib.sh: the shell helpers bench/foundation.sh and bench/gateway.sh share, sourced by
# both after they set root and cd to it (`. "$root/bench/lib.sh"`). Functions only: sourcing
# it runs nothing. They read and set the callers' globals, named at each function: root,
# run, bin, api, out, services, ops_port, reuse, started, db_url, problems, ...
# shellcheck shell=bash disable=SC2034,SC2154  # globals set here for the callers, or by them

say() { echo "bench: $*" >&2; }
die() { say "$*"; exit 1; }
pid_alive() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }
now() { date +%s.%N; }
# Listening sockets on a TCP port (with users:(("name",pid=N,..)) when we may see them).
listeners() { ss -H -ltnp "sport = :$1" 2>/dev/null || true; }

# bench_vars: sets run, bin, api, services and ops_port (the local stack's layout).
bench_vars() {
    run="$root/.run"
    bin="$root/build/release/bin"
    api="http://127.0.0.1:8080"
    services=(ingress dispatcher llm-worker notifier)
    declare -gA ops_port=([ingress]=9100 [dispatcher]=9101 [llm-worker]=9102 [notifier]=9103)
}

# --- only loopback --------------------------------------------------------------------
# loopback_only: dies unless KAFKA_BOOTSTRAP and DATABASE_URL (when set) are on 127.0.0.1.
loopback_only() {
    local brokers b dbhost
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
}

# --- tools ----------------------------------------------------------------------------
# need_tools HINT TOOL...: installs wrk (apt-get) if it is missing, then dies if a TOOL is
# missing ("TOOL is missing" followed by HINT).
need_tools() {
    local hint=$1 tool sudo=""
    shift
    if ! command -v wrk >/dev/null 2>&1; then
        say "installing wrk (apt-get)"
        [ "$(id -u)" -eq 0 ] || sudo=sudo
        export DEBIAN_FRONTEND=noninteractive
        $sudo apt-get install -y -q wrk >"$out/apt.log" 2>&1 ||
            { $sudo apt-get update -q >>"$out/apt.log" 2>&1 && $sudo apt-get install -y -q wrk >>"$out/apt.log" 2>&1; } ||
            { tail -n 20 "$out/apt.log" >&2; die "could not install wrk"; }
    fi
    for tool; do command -v "$tool" >/dev/null 2>&1 || die "$tool is missing$hint"; done
}

# --- the stack ------------------------------------------------------------------------
# stack_check: sets reuse=1 if the whole stack runs and is ready with its ingress on 8080,
# reuse=0 if none of it runs and its ports are free; dies otherwise.
stack_check() {
    local alive=0 s p l ingress_pid
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
}

build_all() {
    say "building (make -s all)"
    make -s -j"$(nproc)" all >"$out/build.log" 2>&1 || { tail -n 30 "$out/build.log" >&2; die "the build failed"; }
}

# logs_mark: sets logs (the stack's log files) and log_offset (where each stands now): only
# what the benchmark adds (start and stop included) is checked at the end, by logs_scan.
logs_mark() {
    local s f
    declare -gA log_offset=()
    logs=()
    for s in devbroker "${services[@]}"; do logs+=("$run/logs/$s.log"); done
    [ -n "${DATABASE_URL:-}" ] || logs+=("$run/pg/postgres.log")
    for f in "${logs[@]}"; do log_offset[$f]=$(stat -c %s "$f" 2>/dev/null || echo 0); done
}

# stack_up [NOTE]: starts the stack (sets started=1) unless reuse=1; NOTE goes in the message.
stack_up() {
    if [ "$reuse" = 1 ]; then
        say "using the running stack (it stays up; its binaries are the ones it was started with)"
    else
        say "starting the stack (scripts/stack.sh up${1:-})"
        started=1
        AGENTBUS_BIN="$bin" scripts/stack.sh up >"$out/stack.log" 2>&1 ||
            { tail -n 30 "$out/stack.log" >&2; die "the stack did not start"; }
    fi
}

# stack_down_quiet: on exit, stops the stack if this script started it (says if that failed).
stack_down_quiet() {
    if [ "$started" = 1 ]; then
        say "stopping the stack this script started"
        AGENTBUS_BIN="$bin" scripts/stack.sh down >>"$out/stack.log" 2>&1 || say "scripts/stack.sh down failed: see $out/stack.log"
    fi
}

# stack_down_checked: at the end of a run, stops the stack if this script started it (sets
# started=0) and adds a failed or slow shutdown to problems. Before logs_scan, so that the
# shutdown is checked too.
stack_down_checked() {
    if [ "$started" = 1 ]; then
        say "stopping the stack this script started"
        started=0
        AGENTBUS_BIN="$bin" scripts/stack.sh down >>"$out/stack.log" 2>&1 ||
            problems+=("scripts/stack.sh down failed: see $out/stack.log")
        if grep -q 'did not stop' "$out/stack.log"; then
            problems+=("shutdown: $(grep 'did not stop' "$out/stack.log" | tr '\n' ' ')")
        fi
    fi
}

# --- the broker -----------------------------------------------------------------------
# broker_facts: sets bootstrap (the stack's), broker ("embedded" or "kafka"), broker_pid (0
# when it is not ours to watch) and broker_desc (for the report).
broker_facts() {
    bootstrap=$(cat "$run/kafka.bootstrap" 2>/dev/null || echo "?")
    broker_pid=0
    if pid_alive "$run/pids/devbroker.pid"; then
        broker="embedded"
        broker_pid=$(cat "$run/pids/devbroker.pid")
        broker_desc="librdkafka mock cluster (agentbus-devbroker) at $bootstrap"
    else
        broker="kafka"
        if [ -s "$run/kafka/bootstrap" ] && [ "$(cat "$run/kafka/bootstrap")" = "$bootstrap" ] && pid_alive "$run/kafka/kafka.pid"; then
            broker_pid=$(cat "$run/kafka/kafka.pid")
            broker_desc="Apache Kafka $(sed -n 's/^KAFKA_VERSION=//p' scripts/kafka.sh) (scripts/kafka.sh: one KRaft node, 127.0.0.1) at $bootstrap"
        else
            broker_desc="KAFKA_BOOTSTRAP=$bootstrap"
        fi
    fi
}

# --- PostgreSQL and the admin token ---------------------------------------------------
# db_connect: sets db_url and db_desc (DATABASE_URL, or the throwaway cluster in .run/pg).
db_connect() {
    if [ -n "${DATABASE_URL:-}" ]; then
        db_url=$DATABASE_URL; db_desc="DATABASE_URL (127.0.0.1)"
    else
        db_url=$(scripts/pg.sh status "$run/pg") || die "the throwaway PostgreSQL in .run/pg does not run"
        db_desc="throwaway cluster in .run/pg (fsync=off, synchronous_commit=off)"
    fi
}
sql() { psql "$db_url" -XAtq -F '|' -v ON_ERROR_STOP=1 -c "$1"; }

# admin_token: sets token (AGENTBUS_ADMIN_TOKEN or .run/admin-token).
admin_token() {
    token=${AGENTBUS_ADMIN_TOKEN:-$(cat "$run/admin-token" 2>/dev/null || true)}
    [ -n "$token" ] || die "no admin token: neither AGENTBUS_ADMIN_TOKEN nor .run/admin-token"
}

# --- results --------------------------------------------------------------------------
# result_vars PREFIX LINE: sets PREFIX<key> for every key=value of a BENCHRESULT line.
result_vars() {
    local kv
    for kv in ${2#BENCHRESULT }; do printf -v "$1${kv%%=*}" '%s' "${kv#*=}"; done
}
# full_run SECONDS LABEL: wrk takes Ctrl-C as "stop now" and exits 0, so bash would carry
# on: dies if the run (r_duration_s) stopped early.
full_run() {
    awk -v d="$r_duration_s" -v s="$1" 'BEGIN { exit !(d >= 0.9 * s) }' ||
        die "wrk stopped after $r_duration_s s of $1 s ($2): interrupted?"
}

# --- a client's report ------------------------------------------------------------
# client_finish FILE: after a bench/*-client.py run whose stdout is FILE: sets problems
# (its BENCHPROBLEM lines) and props_desc, stops the stack (stack_down_checked) and scans
# the logs (logs_scan).
client_finish() {
    local line
    problems=()
    while IFS= read -r line; do problems+=("${line#BENCHPROBLEM }"); done < <(grep '^BENCHPROBLEM ' "$1" || true)
    stack_down_checked
    logs_scan
    props_desc=${AGENTBUS_KAFKA_PROPERTIES:-"(none: the producer keeps linger.ms 5 and lz4)"}
}
# client_sections FILE: the client's Markdown, then its BENCHRESULT/BENCHSTATS lines.
client_sections() {
    grep -vE '^(BENCHPROBLEM|BENCHRESULT|BENCHSTATS) ' "$1" || true
    echo
    grep -E '^(BENCHRESULT|BENCHSTATS) ' "$1" || true
}

# --- CPU accounting -------------------------------------------------------------------
# cpu_sample prints: time, the machine's busy jiffies (user+nice+system+steal), then the
# CPU jiffies of ingress, dispatcher, llm-worker + notifier, the broker (broker_pid, 0 for
# none, with its reaped children), PostgreSQL (postmaster, its live backends and the ones
# it reaped) and this script's children (wrk, psql, curl, ...).
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
        "$(proc_jiffies "${broker_pid:-0}" 1) $pg $(proc_jiffies $$ 1)"
}
# cpu_delta SAMPLE0 SAMPLE1 [DELTA]: the difference of two samples, added to DELTA if given.
cpu_delta() {
    awk -v a="$1" -v b="$2" -v acc="${3:-}" 'BEGIN {
        n = split(a, x, " "); split(b, y, " "); m = split(acc, z, " ")
        for (i = 1; i <= n; i++) printf "%s%.6f", (i > 1 ? " " : ""), y[i] - x[i] + (m ? z[i] : 0)
        printf "\n" }'
}
# cpu_init: sets clk_tck, ncpu, and empties cpu_rows and noisy (which cpu_row fills).
cpu_init() {
    clk_tck=$(getconf CLK_TCK)
    ncpu=$(nproc)
    cpu_rows=()
    noisy=()
}
# cpu_row LABEL DELTA: a Markdown row in cpu_rows, each column in % of one core; a phase in
# which the rest of the machine (other processes, kernel threads, steal) took more than
# 10 % per CPU goes in noisy.
cpu_row() {
    local label=$1 row other
    row=$(awk -v d="$2" -v hz="$clk_tck" 'BEGIN {
        split(d, x, " "); dt = x[1] * hz; own = 0
        if (dt <= 0) dt = 1
        for (i = 3; i <= 8; i++) own += x[i]
        other = x[2] - own; if (other < 0) other = 0
        printf "%.0f;", other / dt * 100
        for (i = 3; i <= 8; i++) printf "%.0f | ", x[i] / dt * 100
        printf "%.0f | %.0f", other / dt * 100, x[2] / dt * 100 }')
    other=${row%%;*}
    cpu_rows+=("| $label | ${row#*;} |")
    [ "$other" -le $((10 * ncpu)) ] || noisy+=("$label: other $other %")
}

fmt() { awk -v x="$1" -v d="${2:-1}" 'BEGIN { printf "%.*f", d, x }'; }
div() { awk -v a="$1" -v b="$2" -v d="${3:-0}" 'BEGIN { if (b > 0) printf "%.*f", d, a / b; else printf "n/a" }'; }
sub() { awk -v a="$1" -v b="$2" -v d="${3:-2}" 'BEGIN { printf "%.*f", d, a - b }'; }

# --- logs -----------------------------------------------------------------------------
# logs_scan: reads what the logs of logs_mark gained; sets log_report (warn/error lines,
# and lines of the services that are not JSON log lines) and log_growth (more than 1 MB).
# The excerpts it reports are kept in $out/new-<log>.
logs_scan() {
    local f new pattern n line size reported=0
    log_report=()
    log_growth=()
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
}

# --- report ---------------------------------------------------------------------------
# facts_rows: the report's first Markdown rows: commit, date, machine, load_start, build,
# Kafka (broker_desc and the producer's settings).
facts_rows() {
    local commit cpu mem linger
    commit=$(git rev-parse --short HEAD 2>/dev/null || echo "?")
    if [ -n "$(git status --porcelain --untracked-files=no 2>/dev/null)" ]; then
        commit="$commit (+ uncommitted changes in the working tree)"
    fi
    cpu=$(awk -F': *' '/^model name/ { print $2; exit }' /proc/cpuinfo)
    [ -n "$cpu" ] || cpu=$(uname -m)
    mem=$(awk '/^MemTotal/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo)
    linger=$(grep -o '"linger.ms", "[0-9]*"' common/kafka_producer.c 2>/dev/null | grep -o '[0-9]\+' || echo "?")
    cat <<EOF
| commit | \`$commit\` |
| date | $(date -u '+%Y-%m-%d %H:%M UTC') |
| machine | $(nproc) CPUs (nproc), $cpu, $mem, Linux $(uname -r) |
| load average at start | $load_start |
| build | release (\`make\`: -O2), build/release/bin |
| Kafka | $broker_desc; producer acks=all, idempotent, linger.ms=$linger |
EOF
}
wrk_version() { (wrk -v 2>&1 || true) | awk 'NR == 1 { print $2 }'; }

# cpu_note: the line under the CPU table, which says whether the machine was shared.
cpu_note() {
    echo "other = everything else on the machine (other processes, kernel threads, steal).$([ "${#noisy[@]}" -eq 0 ] && echo " It stayed low: nothing else competed for the CPU." || printf ' **The machine was shared during: %s; those figures are low.**' "$(printf '%s; ' "${noisy[@]}" | sed 's/; $//')")"
}

# report_end: prints log_growth, log_report and problems; exits 1 if there are problems.
report_end() {
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
}
