#!/usr/bin/env bash
# kafka.sh: run a REAL single-node Apache Kafka broker (KRaft mode, no ZooKeeper) on loopback,
# for the test suite and CI, without Docker and without a Kafka tarball.
#
#   scripts/kafka.sh start      fetch the jars if needed, format storage once, start, wait until served
#   scripts/kafka.sh stop       SIGTERM (controlled shutdown), up to 60 s, then SIGKILL; keeps the data
#   scripts/kafka.sh stop --purge   (or: purge) the same, then delete .run/kafka/data
#   scripts/kafka.sh restart    stop then start, keeping the data (used by the "broker restarts
#                               mid-stream, nothing accepted is lost" test)
#   scripts/kafka.sh status     exit 0 and print the bootstrap address if running, else exit 1
#   scripts/kafka.sh fetch      only resolve and cache the jars
#
# How it works
#   * The broker is org.apache.kafka:kafka_2.13:3.9.1 (the last 3.x line). Its runtime dependency
#     closure is resolved by Maven from a tiny generated pom (dependency:copy-dependencies) and
#     cached in ${AGENTBUS_CACHE:-$HOME/.cache/agentbus}/kafka-3.9.1/libs; a marker file written
#     after a successful fetch makes later runs skip Maven entirely.
#   * A logging backend is added on top: ch.qos.reload4j:reload4j + org.slf4j:slf4j-reload4j.
#     The Kafka 3.x jar references log4j 1.x classes directly (kafka.utils.Log4jController, the
#     log4j MBean) but its pom does not ship a backend, so without reload4j the broker fails with
#     NoClassDefFoundError: org/apache/log4j/... and SLF4J logs nothing. reload4j is the drop-in,
#     maintained log4j 1.2 that the Kafka 3.x distribution itself bundles.
#   * controller.quorum.voters is a static quorum (1@127.0.0.1:<controller port>), so a plain
#     `kafka.tools.StorageTool format -t <cluster id>` is enough: no --standalone / dynamic quorum
#     bootstrap (KIP-853) is involved.
#   * State lives in <repo>/.run/kafka/: server.properties, log4j.properties, data/, broker.log
#     (appended across restarts), kafka.pid, cluster.id and bootstrap ("127.0.0.1:<port>").
#     Storage is formatted only when data/ has no meta.properties, so a restart keeps every
#     accepted record.
#   * Only 127.0.0.1 is listened on. Ports: KAFKA_PORT (default 19092, PLAINTEXT) and
#     KAFKA_CONTROLLER_PORT (default 19093).
#
# Requirements: java (>= 11) and mvn; when missing they are installed with apt-get
# (default-jre-headless, maven). Maven must be able to reach Maven Central (or the mirror in
# ~/.m2/settings.xml) the first time. Extra JVM options can be passed in KAFKA_JAVA_OPTS.
set -euo pipefail

KAFKA_VERSION=3.9.1
SCALA_VERSION=2.13
RELOAD4J_VERSION=1.2.25
SLF4J_RELOAD4J_VERSION=1.7.36
DEP_PLUGIN=org.apache.maven.plugins:maven-dependency-plugin:3.6.1

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/.." && pwd)

cache_root=${AGENTBUS_CACHE:-$HOME/.cache/agentbus}
kafka_home=$cache_root/kafka-$KAFKA_VERSION
libs=$kafka_home/libs
marker=$libs/.fetched

run_dir=$repo/.run/kafka
data_dir=$run_dir/data
props=$run_dir/server.properties
log4j_props=$run_dir/log4j.properties
log_file=$run_dir/broker.log
pid_file=$run_dir/kafka.pid
cluster_id_file=$run_dir/cluster.id
bootstrap_file=$run_dir/bootstrap

port=${KAFKA_PORT:-19092}
cport=${KAFKA_CONTROLLER_PORT:-19093}
bootstrap=127.0.0.1:$port

start_timeout=120
stop_timeout=60

say() { echo "kafka.sh: $*" >&2; }
die() { say "error: $*"; exit 1; }

usage() {
    cat >&2 <<EOF
usage: scripts/kafka.sh {start|stop [--purge]|purge|restart|status|fetch}
  start     fetch jars if needed, format storage once, start the broker, wait until it serves
  stop      stop the broker (SIGTERM, then SIGKILL after ${stop_timeout} s); --purge also deletes data
  purge     same as stop --purge
  restart   stop then start, keeping the data
  status    exit 0 and print the bootstrap address if running, else exit 1
  fetch     only download the jars into $libs
env: KAFKA_PORT (19092), KAFKA_CONTROLLER_PORT (19093), AGENTBUS_CACHE (~/.cache/agentbus),
     KAFKA_JAVA_OPTS (extra JVM options)
EOF
}

# ---------------------------------------------------------------------------------------------
# prerequisites

apt_install() {
    local sudo=""
    if [ "$(id -u)" -ne 0 ]; then
        command -v sudo >/dev/null 2>&1 || die "need root or sudo to install $*"
        sudo="sudo"
    fi
    command -v apt-get >/dev/null 2>&1 || die "$* missing and apt-get not available; install it by hand"
    say "installing $* with apt-get"
    export DEBIAN_FRONTEND=noninteractive
    $sudo apt-get update -qq
    $sudo apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

need_java() {
    if ! command -v java >/dev/null 2>&1; then
        apt_install default-jre-headless
        command -v java >/dev/null 2>&1 || die "java still not found after installing default-jre-headless"
    fi
    local v major
    v=$(java -version 2>&1 | sed -n 's/.*version "\([^"]*\)".*/\1/p' | head -n1)
    major=${v%%.*}
    if [ "$major" = 1 ]; then major=$(echo "$v" | cut -d. -f2); fi
    if [[ "$major" =~ ^[0-9]+$ ]] && [ "$major" -lt 11 ]; then
        die "Kafka $KAFKA_VERSION needs Java 11 or newer, found $v"
    fi
}

need_mvn() {
    if ! command -v mvn >/dev/null 2>&1; then
        apt_install maven
        command -v mvn >/dev/null 2>&1 || die "mvn still not found after installing maven"
    fi
}

# ---------------------------------------------------------------------------------------------
# fetch

fetched() {
    [ -f "$marker" ] && [ "$(cat "$marker" 2>/dev/null)" = "$(marker_text)" ] &&
        compgen -G "$libs/kafka_$SCALA_VERSION-$KAFKA_VERSION.jar" >/dev/null &&
        compgen -G "$libs/reload4j-*.jar" >/dev/null
}

marker_text() {
    echo "kafka_$SCALA_VERSION:$KAFKA_VERSION reload4j:$RELOAD4J_VERSION slf4j-reload4j:$SLF4J_RELOAD4J_VERSION"
}

write_pom() {
    cat >"$1" <<EOF
<?xml version="1.0" encoding="UTF-8"?>
<!-- Generated by scripts/kafka.sh: only used to resolve the broker's runtime classpath. -->
<project xmlns="http://maven.apache.org/POM/4.0.0"
         xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"
         xsi:schemaLocation="http://maven.apache.org/POM/4.0.0 http://maven.apache.org/xsd/maven-4.0.0.xsd">
  <modelVersion>4.0.0</modelVersion>
  <groupId>agentbus.local</groupId>
  <artifactId>kafka-broker-libs</artifactId>
  <version>1</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency>
      <groupId>org.apache.kafka</groupId>
      <artifactId>kafka_$SCALA_VERSION</artifactId>
      <version>$KAFKA_VERSION</version>
    </dependency>
    <dependency>
      <groupId>ch.qos.reload4j</groupId>
      <artifactId>reload4j</artifactId>
      <version>$RELOAD4J_VERSION</version>
    </dependency>
    <dependency>
      <groupId>org.slf4j</groupId>
      <artifactId>slf4j-reload4j</artifactId>
      <version>$SLF4J_RELOAD4J_VERSION</version>
    </dependency>
  </dependencies>
</project>
EOF
}

fetch() {
    if fetched; then
        return 0
    fi
    need_java
    need_mvn
    mkdir -p "$kafka_home"
    # Two jobs sharing one cache must not both rewrite libs/: serialise, then look again.
    if command -v flock >/dev/null 2>&1; then
        exec 9>"$kafka_home/.lock"
        flock 9
        if fetched; then
            exec 9>&-
            return 0
        fi
    fi
    local work attempt ok=0
    work=$(mktemp -d "$kafka_home/fetch.XXXXXX")
    # shellcheck disable=SC2064
    trap "rm -rf '$work'" EXIT
    write_pom "$work/pom.xml"
    say "fetching Kafka $KAFKA_VERSION and its runtime dependencies with Maven into $libs"
    for attempt in 1 2 3; do
        rm -rf "$work/libs"
        if mvn -q -B -f "$work/pom.xml" "$DEP_PLUGIN:copy-dependencies" \
            -DincludeScope=runtime -DoutputDirectory="$work/libs" >"$work/mvn.log" 2>&1; then
            ok=1
            break
        fi
        say "mvn failed (attempt $attempt/3):"
        tail -n 20 "$work/mvn.log" | sed 's/^/    /' >&2
        [ "$attempt" -lt 3 ] && sleep $((attempt * 5))
    done
    [ "$ok" = 1 ] || die "could not fetch the Kafka jars with Maven (see messages above)"
    [ -f "$work/libs/kafka_$SCALA_VERSION-$KAFKA_VERSION.jar" ] ||
        die "Maven succeeded but kafka_$SCALA_VERSION-$KAFKA_VERSION.jar is missing from the result"
    # Replace the cache atomically enough: the marker is written last.
    rm -rf "$libs"
    mv "$work/libs" "$libs"
    marker_text >"$marker"
    rm -rf "$work"
    trap - EXIT
    say "cached $(find "$libs" -name '*.jar' | wc -l) jars in $libs"
    exec 9>&-
}

# ---------------------------------------------------------------------------------------------
# process helpers

# pid of the running broker, or nothing. Guards against stale pid files and pid reuse:
# the process must be alive, not a zombie, and be kafka.Kafka with our server.properties.
broker_pid() {
    [ -f "$pid_file" ] || return 1
    local pid state
    pid=$(cat "$pid_file" 2>/dev/null || true)
    [[ "$pid" =~ ^[0-9]+$ ]] || return 1
    [ -r "/proc/$pid/cmdline" ] || return 1
    state=$(sed -n 's/^State:[[:space:]]*\([A-Z]\).*/\1/p' "/proc/$pid/status" 2>/dev/null || true)
    [ "$state" != Z ] || return 1
    local cmdline
    cmdline=$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null || true)
    [[ "$cmdline" == *"kafka.Kafka $props"* ]] || return 1
    echo "$pid"
}

port_open() {
    timeout 2 bash -c "exec 3<>/dev/tcp/127.0.0.1/$1" 2>/dev/null
}

# ---------------------------------------------------------------------------------------------
# configuration

write_config() {
    mkdir -p "$run_dir" "$data_dir"
    cat >"$props" <<EOF
# Generated by scripts/kafka.sh on every start; edit the script, not this file.
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$cport
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listeners=PLAINTEXT://127.0.0.1:$port,CONTROLLER://127.0.0.1:$cport
advertised.listeners=PLAINTEXT://127.0.0.1:$port
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
log.dirs=$data_dir
num.partitions=4
auto.create.topics.enable=true
default.replication.factor=1
min.insync.replicas=1
offsets.topic.replication.factor=1
offsets.topic.num.partitions=4
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
transaction.state.log.num.partitions=4
group.initial.rebalance.delay.ms=0
EOF
    cat >"$log4j_props" <<'EOF'
# Generated by scripts/kafka.sh: everything goes to stdout, which the script sends to broker.log.
log4j.rootLogger=INFO, stdout
log4j.appender.stdout=org.apache.log4j.ConsoleAppender
log4j.appender.stdout.layout=org.apache.log4j.PatternLayout
log4j.appender.stdout.layout.ConversionPattern=[%d] %p %m (%c)%n
log4j.logger.kafka=INFO
log4j.logger.org.apache.kafka=INFO
log4j.logger.kafka.request.logger=WARN
log4j.logger.kafka.network.RequestChannel$=WARN
log4j.logger.state.change.logger=WARN
log4j.logger.kafka.log.LogCleaner=WARN
EOF
}

kafka_java() {
    java -cp "$libs/*" "$@"
}

format_storage() {
    if [ -f "$data_dir/meta.properties" ]; then
        # Already formatted: keep the data. Make sure cluster.id matches what is on disk.
        local cid
        cid=$(sed -n 's/^cluster\.id=//p' "$data_dir/meta.properties" | head -n1)
        [ -n "$cid" ] && [ ! -s "$cluster_id_file" ] && echo "$cid" >"$cluster_id_file"
        return 0
    fi
    local cid
    if [ -s "$cluster_id_file" ]; then
        cid=$(cat "$cluster_id_file")
    else
        cid=$(kafka_java kafka.tools.StorageTool random-uuid 2>/dev/null | tail -n1)
        [[ "$cid" =~ ^[A-Za-z0-9_-]{22}$ ]] || die "StorageTool random-uuid returned '$cid'"
        echo "$cid" >"$cluster_id_file"
    fi
    say "formatting $data_dir (cluster id $cid)"
    local out
    if ! out=$(kafka_java -Dlog4j.configuration="file:$log4j_props" kafka.tools.StorageTool \
        format -t "$cid" -c "$props" --ignore-formatted 2>&1); then
        # shellcheck disable=SC2001
        echo "$out" | sed 's/^/    /' >&2
        die "StorageTool format failed"
    fi
}

# ---------------------------------------------------------------------------------------------
# commands

cmd_start() {
    local pid
    if pid=$(broker_pid); then
        [ -s "$bootstrap_file" ] && bootstrap=$(cat "$bootstrap_file")
        say "already running (pid $pid) on $bootstrap"
        echo "$bootstrap"
        return 0
    fi
    rm -f "$pid_file"
    fetch
    need_java
    local p
    for p in "$port" "$cport"; do
        if port_open "$p"; then
            die "127.0.0.1:$p is already in use by another process (not the broker in $pid_file); set KAFKA_PORT / KAFKA_CONTROLLER_PORT or stop it"
        fi
    done
    write_config
    format_storage

    # The log is appended across restarts; readiness is checked only in what this run writes.
    # broker.log keeps every run; keep one older generation once it grows past 50 MB.
    if [ -f "$log_file" ] && [ "$(stat -c %s "$log_file")" -gt $((50 * 1024 * 1024)) ]; then
        mv -f "$log_file" "$log_file.1"
    fi
    touch "$log_file"
    local offset skip
    offset=$(stat -c %s "$log_file")
    skip=$(wc -l <"$log_file")
    echo "===== kafka.sh start $(date -u +%Y-%m-%dT%H:%M:%SZ) on $bootstrap =====" >>"$log_file"

    # shellcheck disable=SC2086
    setsid nohup java -Xmx512m -Xms256m -XX:+UseSerialGC -Djava.awt.headless=true \
        ${KAFKA_JAVA_OPTS:-} \
        -Dlog4j.configuration="file:$log4j_props" \
        -cp "$libs/*" kafka.Kafka "$props" </dev/null >>"$log_file" 2>&1 &
    pid=$!
    echo "$pid" >"$pid_file"
    echo "$bootstrap" >"$bootstrap_file"
    say "started pid $pid, waiting up to ${start_timeout} s for $bootstrap (log: $log_file)"

    local t0=$SECONDS state
    while :; do
        state=$(sed -n 's/^State:[[:space:]]*\([A-Z]\).*/\1/p' "/proc/$pid/status" 2>/dev/null || true)
        if [ -z "$state" ] || [ "$state" = Z ]; then
            wait "$pid" 2>/dev/null || true
            rm -f "$pid_file" "$bootstrap_file"
            say "broker exited during startup; last lines of $log_file:"
            tail -c +$((offset + 1)) "$log_file" | tail -n 40 | sed 's/^/    /' >&2
            exit 1
        fi
        # awk reads the file itself: a `tail | grep -q` pipe can die of SIGPIPE under pipefail.
        if awk -v n="$skip" 'NR > n && /Kafka Server started/ { found = 1; exit }
                END { exit !found }' "$log_file" && port_open "$port"; then
            break
        fi
        if [ $((SECONDS - t0)) -ge "$start_timeout" ]; then
            say "broker not ready after ${start_timeout} s; last lines of $log_file:"
            tail -c +$((offset + 1)) "$log_file" | tail -n 40 | sed 's/^/    /' >&2
            cmd_stop >/dev/null 2>&1 || true
            rm -f "$bootstrap_file"
            exit 1
        fi
        sleep 0.5
    done
    say "ready on $bootstrap after $((SECONDS - t0)) s (pid $pid)"
    echo "$bootstrap"
}

cmd_stop() {
    local purge=${1:-0} pid
    if pid=$(broker_pid); then
        say "stopping pid $pid (SIGTERM, controlled shutdown)"
        kill -TERM "$pid" 2>/dev/null || true
        local i
        for ((i = 0; i < stop_timeout * 10; i++)); do
            broker_pid >/dev/null || break
            sleep 0.1
        done
        if broker_pid >/dev/null; then
            say "pid $pid still alive after ${stop_timeout} s, sending SIGKILL"
            kill -KILL "$pid" 2>/dev/null || true
            for ((i = 0; i < 100; i++)); do
                broker_pid >/dev/null || break
                sleep 0.1
            done
        fi
        say "stopped"
    else
        say "not running"
    fi
    rm -f "$pid_file"
    if [ "$purge" = 1 ]; then
        say "purging $data_dir"
        rm -rf "$data_dir" "$cluster_id_file" "$bootstrap_file"
    fi
    return 0
}

cmd_status() {
    local pid
    if pid=$(broker_pid); then
        [ -s "$bootstrap_file" ] && bootstrap=$(cat "$bootstrap_file")
        if ! port_open "${bootstrap##*:}"; then
            say "pid $pid is running but $bootstrap does not accept connections (yet)"
        fi
        echo "$bootstrap"
        return 0
    fi
    say "not running"
    return 1
}

case "${1:-}" in
    start) cmd_start ;;
    stop)
        case "${2:-}" in
            "") cmd_stop 0 ;;
            --purge) cmd_stop 1 ;;
            *) usage; exit 2 ;;
        esac
        ;;
    purge) cmd_stop 1 ;;
    restart)
        cmd_stop 0
        cmd_start
        ;;
    status) cmd_status ;;
    fetch)
        fetch
        say "jars in $libs"
        ;;
    -h | --help | help) usage ;;
    *) usage; exit 2 ;;
esac
