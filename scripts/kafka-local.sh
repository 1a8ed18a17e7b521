#!/usr/bin/env bash
# A single-node Apache Kafka (KRaft, no ZooKeeper) on 127.0.0.1 for development and tests.
#
#   scripts/kafka-local.sh start    fetch the broker (first time), format storage (first time), start, wait
#   scripts/kafka-local.sh stop     stop the broker this script started (pid file); removes nothing
#   scripts/kafka-local.sh status   say whether it runs
#
# Environment:
#   KAFKA_PORT             broker port (default 9092); the controller listens on KAFKA_PORT+1
#   SLUICE_CACHE           cache directory (default ~/.cache/sluice)
#   KAFKA_RUN_DIR          data, pid and log directory (default $SLUICE_CACHE/kafka-run-$KAFKA_PORT)
#   KAFKA_HEAP             JVM heap (default 1g)
#
# The broker and its dependencies come from Maven Central through scripts/kafka/pom.xml.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
port=${KAFKA_PORT:-9092}
controller_port=$((port + 1))
cache=${SLUICE_CACHE:-$HOME/.cache/sluice}
kafka_version=$(sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' "$here/kafka/pom.xml")
libs="$cache/kafka-$kafka_version/libs"
run=${KAFKA_RUN_DIR:-$cache/kafka-run-$port}
pidfile="$run/broker.pid"
logfile="$run/broker.log"
heap=${KAFKA_HEAP:-1g}

say() { echo "kafka-local: $*" >&2; }

running() {
    [ -f "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null
}

fetch() {
    if [ -f "$libs/.complete" ]; then return; fi
    say "fetching Apache Kafka $kafka_version from Maven Central into $libs"
    rm -rf "$libs"
    mkdir -p "$libs"
    mvn -q -B -f "$here/kafka/pom.xml" dependency:copy-dependencies \
        -DincludeScope=runtime -DoutputDirectory="$libs" >&2
    touch "$libs/.complete"
}

java_cmd() {
    java -Xmx"$heap" -Xms256m -XX:+UseG1GC -Djava.awt.headless=true \
        -cp "$libs/*" "$@"
}

write_config() {
    mkdir -p "$run/data"
    cat >"$run/server.properties" <<EOF
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$controller_port
listeners=PLAINTEXT://127.0.0.1:$port,CONTROLLER://127.0.0.1:$controller_port
advertised.listeners=PLAINTEXT://127.0.0.1:$port
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
log.dirs=$run/data
num.partitions=1
auto.create.topics.enable=false
offsets.topic.replication.factor=1
offsets.topic.num.partitions=4
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
transaction.state.log.num.partitions=4
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
min.insync.replicas=1
default.replication.factor=1
delete.topic.enable=true
log.segment.bytes=67108864
# Keep data regardless of record timestamps: tests and examples use event times far in the
# past, which the default 7-day retention would delete from under a running query.
log.retention.ms=-1
EOF
}

format_storage() {
    if [ -f "$run/data/meta.properties" ]; then return; fi
    local cluster_id
    cluster_id=$(java_cmd kafka.tools.StorageTool random-uuid 2>/dev/null | tail -n 1)
    say "formatting KRaft storage in $run/data (cluster $cluster_id)"
    java_cmd kafka.tools.StorageTool format -t "$cluster_id" -c "$run/server.properties" >>"$logfile" 2>&1
}

port_open() {
    (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null
}

start() {
    if running; then
        say "already running (pid $(cat "$pidfile"))"
        echo "127.0.0.1:$port"
        return
    fi
    command -v java >/dev/null || { say "java (17 or newer) is needed"; exit 1; }
    command -v mvn >/dev/null || { say "maven is needed to fetch the broker"; exit 1; }
    fetch
    mkdir -p "$run"
    write_config
    format_storage
    touch "$logfile"
    # Only what this start appends counts: remember where the log ends now.
    local from
    from=$(wc -c <"$logfile")
    say "starting broker on 127.0.0.1:$port; log: $logfile"
    # setsid: the broker outlives the shell that started it and gets its own process group.
    setsid java -Xmx"$heap" -Xms256m -XX:+UseG1GC -Djava.awt.headless=true \
        -Dorg.slf4j.simpleLogger.showDateTime=true \
        -Dorg.slf4j.simpleLogger.log.org.apache.kafka.clients=warn \
        -cp "$libs/*" kafka.Kafka "$run/server.properties" >>"$logfile" 2>&1 </dev/null &
    echo $! >"$pidfile"
    local deadline=$((SECONDS + 120))
    # Ready when the server says it started and the port answers. (grep -m1 may end the
    # pipe before tail is done: capture the match instead of trusting the pipe's status.)
    started() {
        local line
        line=$(tail -c +"$((from + 1))" "$logfile" | grep -m1 "Kafka Server started" || true)
        [ -n "$line" ]
    }
    until started && port_open; do
        if ! running; then
            say "broker exited during start; last lines of $logfile:"
            tail -n 30 "$logfile" >&2
            rm -f "$pidfile"
            exit 1
        fi
        if [ $SECONDS -ge $deadline ]; then
            say "broker did not start within 120 s; see $logfile"
            exit 1
        fi
        sleep 0.5
    done
    say "broker is up (pid $(cat "$pidfile"))"
    echo "127.0.0.1:$port"
}

stop() {
    if ! running; then
        say "not running"
        rm -f "$pidfile"
        return
    fi
    local pid
    pid=$(cat "$pidfile")
    say "stopping broker (pid $pid)"
    kill "$pid"
    local deadline=$((SECONDS + 60))
    while kill -0 "$pid" 2>/dev/null; do
        if [ $SECONDS -ge $deadline ]; then
            say "broker did not stop within 60 s; killing it"
            kill -9 "$pid" 2>/dev/null || true
        fi
        sleep 0.2
    done
    rm -f "$pidfile"
}

status() {
    if running; then
        echo "running (pid $(cat "$pidfile")) on 127.0.0.1:$port; log: $logfile"
    else
        echo "not running"
        return 1
    fi
}

case "${1:-}" in
start) start ;;
stop) stop ;;
status) status ;;
*)
    echo "usage: $0 start|stop|status" >&2
    exit 2
    ;;
esac
