#!/usr/bin/env bash
# A throwaway PostgreSQL cluster for the local stack and the tests.
#   scripts/pg.sh start DIR [PORT]   init (once) and start a cluster in DIR; prints DATABASE_URL
#   scripts/pg.sh stop DIR           stop it (fast shutdown)
#   scripts/pg.sh status DIR
# PostgreSQL refuses to run as root, so as root the cluster runs as the `postgres` user
# (created by Debian's package). Host connections need a password (scram-sha-256), like a
# real deployment; the password is made at init and kept in DIR, never in the repo.
set -euo pipefail

cmd=${1:-}
dir=${2:-}
port=${3:-55432}
[ -n "$cmd" ] && [ -n "$dir" ] || { echo "usage: pg.sh start|stop|status DIR [PORT]" >&2; exit 2; }

bindir=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)
[ -x "$bindir/initdb" ] || { echo "pg.sh: PostgreSQL server binaries not found (install postgresql)" >&2; exit 1; }

mkdir -p "$dir"
dir=$(cd "$dir" && pwd)
data="$dir/data"

as_db_user() {
    if [ "$(id -u)" -eq 0 ]; then
        runuser -u postgres -- "$@"
    else
        "$@"
    fi
}

url() {
    local password
    password=$(cat "$dir/password")
    echo "postgresql://agentbus:${password}@127.0.0.1:$(cat "$dir/port")/agentbus"
}

running() {
    [ -f "$data/postmaster.pid" ] && as_db_user "$bindir/pg_ctl" -D "$data" status >/dev/null 2>&1
}

case "$cmd" in
start)
    if [ "$(id -u)" -eq 0 ]; then
        chown postgres "$dir"
        runuser -u postgres -- test -w "$dir" || {
            echo "pg.sh: $dir is not reachable by the postgres user (a parent directory is private?)" >&2
            exit 1
        }
    fi
    if [ ! -f "$data/PG_VERSION" ]; then
        (umask 077; head -c 18 /dev/urandom | base64 | tr -d '/+=' > "$dir/password")
        pwfile="$dir/.pwfile"
        (umask 077; cp "$dir/password" "$pwfile")
        if [ "$(id -u)" -eq 0 ]; then chown postgres "$pwfile"; fi
        as_db_user "$bindir/initdb" -D "$data" -U agentbus --pwfile="$pwfile" \
            --auth-local=trust --auth-host=scram-sha-256 -E UTF8 --locale=C.UTF-8 >"$dir/initdb.log" 2>&1 \
            || { cat "$dir/initdb.log" >&2; exit 1; }
        rm -f "$pwfile"
    fi
    if running; then
        port=$(cat "$dir/port") # already up: keep the port it was started on
    fi
    echo "$port" > "$dir/port"
    if ! running; then
        # A small, fast, throwaway server: no fsync (tests and dev only), sockets in DIR.
        as_db_user "$bindir/pg_ctl" -D "$data" -l "$dir/postgres.log" -w -t 60 start \
            -o "-p $port -k $dir -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=200" \
            >/dev/null || { tail -n 20 "$dir/postgres.log" >&2; exit 1; }
    fi
    if ! as_db_user "$bindir/psql" -h "$dir" -p "$port" -U agentbus -d postgres -tAc \
            "SELECT 1 FROM pg_database WHERE datname = 'agentbus'" | grep -q 1; then
        as_db_user "$bindir/createdb" -h "$dir" -p "$port" -U agentbus agentbus
    fi
    url
    ;;
stop)
    if running; then
        as_db_user "$bindir/pg_ctl" -D "$data" -m fast -w stop >/dev/null
    fi
    ;;
status)
    if running; then url; else exit 1; fi
    ;;
*)
    echo "usage: pg.sh start|stop|status DIR [PORT]" >&2
    exit 2
    ;;
esac
