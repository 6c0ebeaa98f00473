#!/usr/bin/env bash
# The local stack: PostgreSQL, Kafka and the four services, for people and for tests.
#   scripts/stack.sh run      start everything and stay in the foreground; Ctrl-C stops it all
#   scripts/stack.sh up       start everything in the background; returns once all are ready
#   scripts/stack.sh down     stop everything `up` started
#   scripts/stack.sh status   what runs, and each service's /readyz
# PostgreSQL: a throwaway cluster in .run/pg, unless DATABASE_URL is set.
# Kafka: agentbus-devbroker (librdkafka's mock cluster on loopback), unless KAFKA_BOOTSTRAP
# is set, in which case that broker is used and the topics are created on it.
# State, logs and pids live in .run/ (AGENTBUS_RUN_DIR). Binaries come from AGENTBUS_BIN
# (build/release/bin). Ports come from the config (deploy/local/agentbus.json), and the
# AGENTBUS_*_PORT variables override them as they do for the services.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
run=${AGENTBUS_RUN_DIR:-$root/.run}
bin=${AGENTBUS_BIN:-$root/build/release/bin}
services=(ingress dispatcher llm-worker notifier)
declare -A ops_port=(
    [ingress]=${AGENTBUS_INGRESS_OPS_PORT:-9100}
    [dispatcher]=${AGENTBUS_DISPATCHER_OPS_PORT:-9101}
    [llm-worker]=${AGENTBUS_LLM_WORKER_OPS_PORT:-9102}
    [notifier]=${AGENTBUS_NOTIFIER_OPS_PORT:-9103}
)
api_port=${AGENTBUS_INGRESS_API_PORT:-8080}
webhook_port=${AGENTBUS_INGRESS_WEBHOOK_PORT:-3011}
export AGENTBUS_CONFIG=${AGENTBUS_CONFIG:-$root/deploy/local/agentbus.json}

say() { echo "stack: $*" >&2; }

# A pid file names a live process of ours: after a reboot the number may belong to another
# program, which must be neither mistaken for ours nor killed.
pid_alive() {
    local pid
    [ -f "$1" ] || return 1
    pid=$(cat "$1")
    kill -0 "$pid" 2>/dev/null && tr '\0' ' ' < "/proc/$pid/cmdline" 2>/dev/null | grep -q "agentbus-"
}

start_postgres() {
    if [ -n "${DATABASE_URL:-}" ]; then
        say "PostgreSQL: using DATABASE_URL"
        return
    fi
    DATABASE_URL=$("$root/scripts/pg.sh" start "$run/pg" "${AGENTBUS_PG_PORT:-55432}")
    export DATABASE_URL
    say "PostgreSQL: throwaway cluster in $run/pg (port ${AGENTBUS_PG_PORT:-55432})"
}

start_kafka() {
    if [ -n "${KAFKA_BOOTSTRAP:-}" ]; then
        say "Kafka: using KAFKA_BOOTSTRAP=$KAFKA_BOOTSTRAP; creating topics"
        "$bin/agentbus-topics" >"$run/logs/topics.log" 2>&1 || { cat "$run/logs/topics.log" >&2; exit 1; }
        echo "$KAFKA_BOOTSTRAP" > "$run/kafka.bootstrap"
        return
    fi
    if ! pid_alive "$run/pids/devbroker.pid"; then
        rm -f "$run/kafka.bootstrap"
        setsid "$bin/agentbus-devbroker" --bootstrap-file "$run/kafka.bootstrap" \
            >>"$run/logs/devbroker.log" 2>&1 < /dev/null &
        echo $! > "$run/pids/devbroker.pid"
        for _ in $(seq 1 100); do [ -s "$run/kafka.bootstrap" ] && break; sleep 0.1; done
        [ -s "$run/kafka.bootstrap" ] || { say "the dev broker did not start"; tail "$run/logs/devbroker.log" >&2; exit 1; }
    fi
    KAFKA_BOOTSTRAP=$(cat "$run/kafka.bootstrap")
    export KAFKA_BOOTSTRAP
    # The mock cluster answers an empty fetch only when fetch.wait.max.ms has passed, even
    # if data arrives meanwhile (real Kafka answers at once): keep that wait short here.
    export AGENTBUS_KAFKA_FETCH_WAIT_MAX_MS=${AGENTBUS_KAFKA_FETCH_WAIT_MAX_MS:-20}
    say "Kafka: agentbus-devbroker (mock cluster) at $KAFKA_BOOTSTRAP"
}

admin_token() {
    if [ -z "${AGENTBUS_ADMIN_TOKEN:-}" ]; then
        if [ ! -s "$run/admin-token" ]; then
            (umask 077; head -c 24 /dev/urandom | base64 | tr -d '/+=' > "$run/admin-token")
        fi
        AGENTBUS_ADMIN_TOKEN=$(cat "$run/admin-token")
    fi
    export AGENTBUS_ADMIN_TOKEN
}

start_services() {
    for s in "${services[@]}"; do
        if pid_alive "$run/pids/$s.pid"; then continue; fi
        setsid "$bin/agentbus-$s" >>"$run/logs/$s.log" 2>&1 < /dev/null &
        echo $! > "$run/pids/$s.pid"
    done
}

wait_ready() {
    local deadline=$((SECONDS + ${AGENTBUS_READY_TIMEOUT:-90}))
    for s in "${services[@]}"; do
        until curl -fsS --max-time 3 "http://127.0.0.1:${ops_port[$s]}/readyz" >/dev/null 2>&1; do
            if ! pid_alive "$run/pids/$s.pid"; then
                say "agentbus-$s exited; the end of its log:"; tail -n 20 "$run/logs/$s.log" >&2; return 1
            fi
            if [ $SECONDS -ge $deadline ]; then
                say "agentbus-$s is not ready:"; curl -sS --max-time 3 "http://127.0.0.1:${ops_port[$s]}/readyz" >&2 || true
                return 1
            fi
            sleep 0.2
        done
        say "agentbus-$s ready (ops port ${ops_port[$s]})"
    done
}

banner() {
    cat <<MSG

agentbus is up.
  agent gateway + admin API  http://127.0.0.1:$api_port
  incoming webhooks          http://127.0.0.1:$webhook_port
  ops (livez/readyz/metrics) ingress :${ops_port[ingress]}  dispatcher :${ops_port[dispatcher]}  llm-worker :${ops_port[llm-worker]}  notifier :${ops_port[notifier]}
  logs                       $run/logs/<service>.log     admin token: $run/admin-token

Try it:
  curl -s -X POST http://127.0.0.1:$api_port/api/admin/events \\
       -H "Authorization: Bearer \$(cat $run/admin-token)" \\
       -d '{"type":"demo.hello","subject":"demo","data":{"text":"hi"}}'
  psql "\$(scripts/pg.sh status $run/pg)" -c 'SELECT id, type, data FROM event_log'
  KAFKA_BOOTSTRAP=\$(cat $run/kafka.bootstrap) $bin/agentbus-kafka consume agentbus.ingress

MSG
}

stop_pid() {
    local name=$1 file="$run/pids/$1.pid"
    pid_alive "$file" || { rm -f "$file"; return 0; }
    local pid; pid=$(cat "$file")
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 300); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    if kill -0 "$pid" 2>/dev/null; then say "$name did not stop in 30 s: killing"; kill -KILL "$pid" 2>/dev/null || true; fi
    rm -f "$file"
}

down() {
    for s in "${services[@]}"; do stop_pid "$s"; done
    stop_pid devbroker
    # The cluster in the run directory is always ours, whatever DATABASE_URL says now.
    if [ -d "$run/pg/data" ]; then "$root/scripts/pg.sh" stop "$run/pg"; fi
    say "stopped"
}

up() {
    mkdir -p "$run/logs" "$run/pids"
    for s in "${services[@]}"; do
        [ -x "$bin/agentbus-$s" ] || { say "$bin/agentbus-$s is missing: run make"; exit 1; }
    done
    start_postgres
    start_kafka
    admin_token
    start_services
    if ! wait_ready; then down; exit 1; fi
    banner
}

case "${1:-}" in
up) up ;;
down) down ;;
run)
    tail_pid=""
    trap 'echo; [ -n "$tail_pid" ] && kill "$tail_pid" 2>/dev/null; down; exit 0' INT TERM
    up
    say "running in the foreground; Ctrl-C stops everything"
    tail -q -n 0 -F "$run"/logs/{ingress,dispatcher,llm-worker,notifier}.log &
    tail_pid=$!
    wait
    ;;
status)
    for s in devbroker "${services[@]}"; do
        if pid_alive "$run/pids/$s.pid"; then state="running (pid $(cat "$run/pids/$s.pid"))"; else state="stopped"; fi
        printf '%-12s %s' "$s" "$state"
        if [ -n "${ops_port[$s]:-}" ] && pid_alive "$run/pids/$s.pid"; then
            printf '  readyz: %s' "$(curl -sS --max-time 3 "http://127.0.0.1:${ops_port[$s]}/readyz" 2>&1 || true)"
        fi
        echo
    done
    ;;
*) echo "usage: scripts/stack.sh run|up|down|status" >&2; exit 2 ;;
esac
