#!/usr/bin/env bash
# Starts and stops a single-node Apache Kafka (KRaft, combined broker+controller) for
# Courier's integration tests. The broker's jars come from Maven Central at a pinned
# version (scripts/kafka/pom.xml) and are cached; no Docker is needed.
#
#   scripts/kafka.sh start   # prints COURIER_BOOTSTRAP=127.0.0.1:PORT (eval-able)
#   scripts/kafka.sh stop    # stops it cleanly (SIGTERM, then SIGKILL after 30 s)
#   scripts/kafka.sh logs    # prints the broker log
#   scripts/kafka.sh fetch   # only downloads the jars
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(dirname "$HERE")"
KAFKA_VERSION="$(sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' "$HERE/kafka/pom.xml")"
CACHE="${COURIER_CACHE:-$HOME/.cache/courier}/kafka-$KAFKA_VERSION"
RUN="${COURIER_KAFKA_RUN:-$REPO/.kafka}"
LIB="$CACHE/lib"

log() { echo "kafka.sh: $*" >&2; }

fetch() {
  if [[ -f "$LIB/.complete" && "$LIB/.complete" -nt "$HERE/kafka/pom.xml" ]]; then return; fi
  log "fetching Apache Kafka $KAFKA_VERSION jars from Maven Central into $LIB"
  rm -rf "$LIB"; mkdir -p "$LIB"
  mvn -q -B -f "$HERE/kafka/pom.xml" dependency:copy-dependencies \
      -DincludeScope=runtime -DoutputDirectory="$LIB" >&2
  touch "$LIB/.complete"
}

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

running() { [[ -f "$RUN/pid" ]] && kill -0 "$(cat "$RUN/pid")" 2>/dev/null; }

start() {
  if running; then
    log "already running (pid $(cat "$RUN/pid"))"
    echo "COURIER_BOOTSTRAP=$(cat "$RUN/bootstrap")"; return
  fi
  fetch
  rm -rf "$RUN"; mkdir -p "$RUN/data" "$RUN/logs"
  local port cport cluster
  port="$(free_port)"; cport="$(free_port)"
  while [[ "$cport" == "$port" ]]; do cport="$(free_port)"; done
  cat > "$RUN/server.properties" <<PROPS
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$cport
listeners=PLAINTEXT://127.0.0.1:$port,CONTROLLER://127.0.0.1:$cport
advertised.listeners=PLAINTEXT://127.0.0.1:$port
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
log.dirs=$RUN/data
num.partitions=1
auto.create.topics.enable=false
offsets.topic.replication.factor=1
offsets.topic.num.partitions=8
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
transaction.state.log.num.partitions=4
share.coordinator.state.topic.replication.factor=1
group.initial.rebalance.delay.ms=0
log.segment.bytes=67108864
PROPS
  local cp="$LIB/*"
  local jvm=(-Xms256m -Xmx1g -XX:+UseG1GC -Djava.awt.headless=true
             "-Dlog4j2.configurationFile=$HERE/kafka/log4j2.properties" "-Dkafka.logs.dir=$RUN/logs")
  cluster="$(java -cp "$cp" kafka.tools.StorageTool random-uuid)"
  java "${jvm[@]}" -cp "$cp" kafka.tools.StorageTool format -t "$cluster" \
       -c "$RUN/server.properties" > "$RUN/logs/format.log" 2>&1 \
    || { cat "$RUN/logs/format.log" >&2; exit 1; }
  nohup java "${jvm[@]}" -cp "$cp" kafka.Kafka "$RUN/server.properties" \
       > "$RUN/logs/stdout.log" 2>&1 < /dev/null &
  echo $! > "$RUN/pid"
  echo "127.0.0.1:$port" > "$RUN/bootstrap"
  log "started pid $(cat "$RUN/pid") on 127.0.0.1:$port; waiting for metadata"
  if ! java -cp "$cp" "$HERE/kafka/Probe.java" "127.0.0.1:$port" 90 >&2; then
    log "broker failed to start; its log follows"; logs >&2; stop; exit 1
  fi
  echo "COURIER_BOOTSTRAP=127.0.0.1:$port"
}

stop() {
  running || { log "not running"; return 0; }
  local pid; pid="$(cat "$RUN/pid")"
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 1 60); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
  if kill -0 "$pid" 2>/dev/null; then log "SIGKILL after 30 s"; kill -KILL "$pid" || true; fi
  rm -f "$RUN/pid"; log "stopped"
}

logs() { tail -n 200 "$RUN/logs/stdout.log" "$RUN/logs/server.log" 2>/dev/null || true; }

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  logs) logs ;;
  fetch) fetch ;;
  *) echo "usage: $0 start|stop|logs|fetch" >&2; exit 2 ;;
esac
