#!/usr/bin/env bash
# Starts and stops a single-node Apache Kafka (KRaft, combined broker+controller) for
# Courier's integration tests. The broker's jars come from Maven Central at a pinned
# version (scripts/kafka/pom.xml) and are cached; no Docker is needed.
#
#   scripts/kafka.sh start         # prints COURIER_BOOTSTRAP=127.0.0.1:PORT (eval-able)
#   scripts/kafka.sh start-secure  # SASL_SSL (SCRAM-SHA-512) + StandardAuthorizer; see below
#   scripts/kafka.sh admin         # applies `user`/`allow` lines from stdin (secure broker)
#   scripts/kafka.sh stop          # stops it cleanly (SIGTERM, then SIGKILL after 30 s)
#   scripts/kafka.sh logs          # prints the broker log
#   scripts/kafka.sh fetch         # only downloads the jars
#
# start-secure makes a CA and a broker certificate with openssl under $RUN/tls, a
# super-user `admin` with a random password, and a broker that authenticates every
# client with SCRAM-SHA-512 over TLS and allows nothing without an ACL. It prints
# COURIER_BOOTSTRAP, COURIER_KAFKA_CA (the CA to trust) and COURIER_KAFKA_ADMIN (a
# mode-600 Java client properties file for the admin). `admin` reads lines such as
#   user worker S3cret                              (SCRAM-SHA-512 credentials)
#   allow User:worker READ TOPIC LITERAL p.commands (an ALLOW ACL; PREFIXED matches a prefix)
# and waits until the broker enforces them. COURIER_KAFKA_RUN picks the run directory,
# so a secure broker can run beside the suite's plain one.
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
  local mode="${1:-plain}"
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
controller.listener.names=CONTROLLER
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
  local format_extra=()
  if [[ "$mode" == secure ]]; then
    secure_material
    format_extra=(--add-scram "SCRAM-SHA-512=[name=admin,password=$(cat "$RUN/admin.password")]")
    cat >> "$RUN/server.properties" <<PROPS
listeners=SASL_SSL://127.0.0.1:$port,CONTROLLER://127.0.0.1:$cport
advertised.listeners=SASL_SSL://127.0.0.1:$port
inter.broker.listener.name=SASL_SSL
listener.security.protocol.map=SASL_SSL:SASL_SSL,CONTROLLER:PLAINTEXT
sasl.enabled.mechanisms=SCRAM-SHA-512
sasl.mechanism.inter.broker.protocol=SCRAM-SHA-512
listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required username="admin" password="$(cat "$RUN/admin.password")";
ssl.keystore.type=PKCS12
ssl.keystore.location=$RUN/tls/broker.p12
ssl.keystore.password=$(cat "$RUN/tls/store.password")
ssl.truststore.type=PEM
ssl.truststore.location=$RUN/tls/ca.pem
ssl.client.auth=none
authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer
# The controller listener is loopback PLAINTEXT: the broker reaches its own controller
# there as ANONYMOUS. Clients can only reach the SASL_SSL listener.
super.users=User:admin;User:ANONYMOUS
allow.everyone.if.no.acl.found=false
PROPS
    chmod 600 "$RUN/server.properties"
  else
    cat >> "$RUN/server.properties" <<PROPS
listeners=PLAINTEXT://127.0.0.1:$port,CONTROLLER://127.0.0.1:$cport
advertised.listeners=PLAINTEXT://127.0.0.1:$port
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
PROPS
  fi
  local cp="$LIB/*"
  local jvm=(-Xms256m -Xmx1g -XX:+UseG1GC -Djava.awt.headless=true
             "-Dlog4j2.configurationFile=$HERE/kafka/log4j2.properties" "-Dkafka.logs.dir=$RUN/logs")
  cluster="$(java -cp "$cp" kafka.tools.StorageTool random-uuid)"
  java "${jvm[@]}" -cp "$cp" kafka.tools.StorageTool format -t "$cluster" \
       -c "$RUN/server.properties" "${format_extra[@]}" > "$RUN/logs/format.log" 2>&1 \
    || { cat "$RUN/logs/format.log" >&2; exit 1; }
  nohup java "${jvm[@]}" -cp "$cp" kafka.Kafka "$RUN/server.properties" \
       > "$RUN/logs/stdout.log" 2>&1 < /dev/null &
  echo $! > "$RUN/pid"
  echo "127.0.0.1:$port" > "$RUN/bootstrap"
  log "started pid $(cat "$RUN/pid") on 127.0.0.1:$port; waiting for metadata"
  local probe=("127.0.0.1:$port" 90)
  [[ "$mode" == secure ]] && probe+=("$RUN/admin.properties")
  if ! java -cp "$cp" "$HERE/kafka/Probe.java" "${probe[@]}" >&2; then
    log "broker failed to start; its log follows"; logs >&2; stop; exit 1
  fi
  echo "COURIER_BOOTSTRAP=127.0.0.1:$port"
  if [[ "$mode" == secure ]]; then
    echo "COURIER_KAFKA_CA=$RUN/tls/ca.pem"
    echo "COURIER_KAFKA_ADMIN=$RUN/admin.properties"
  fi
}

# The secure broker's secrets and certificates: a CA, a broker certificate for
# 127.0.0.1/localhost signed by it (PKCS12 for the broker), random passwords in
# mode-600 files, and the admin's client properties.
secure_material() {
  local tls="$RUN/tls"
  mkdir -p "$tls"; chmod 700 "$RUN" "$tls"
  umask 077
  openssl rand -hex 24 > "$RUN/admin.password"
  openssl rand -hex 24 > "$tls/store.password"
  openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=courier-test-ca" \
      -keyout "$tls/ca.key" -out "$tls/ca.pem" 2> "$RUN/logs/openssl.log"
  openssl req -newkey rsa:2048 -nodes -subj "/CN=localhost" \
      -keyout "$tls/broker.key" -out "$tls/broker.csr" 2>> "$RUN/logs/openssl.log"
  printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n' > "$tls/broker.ext"
  openssl x509 -req -in "$tls/broker.csr" -CA "$tls/ca.pem" -CAkey "$tls/ca.key" -CAcreateserial \
      -days 2 -extfile "$tls/broker.ext" -out "$tls/broker.pem" 2>> "$RUN/logs/openssl.log"
  openssl pkcs12 -export -in "$tls/broker.pem" -inkey "$tls/broker.key" -name broker \
      -passout "file:$tls/store.password" -out "$tls/broker.p12" 2>> "$RUN/logs/openssl.log"
  chmod 644 "$tls/ca.pem"
  cat > "$RUN/admin.properties" <<PROPS
security.protocol=SASL_SSL
sasl.mechanism=SCRAM-SHA-512
sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required username="admin" password="$(cat "$RUN/admin.password")";
ssl.truststore.type=PEM
ssl.truststore.location=$tls/ca.pem
PROPS
  umask 022
}

admin() {
  [[ -f "$RUN/admin.properties" ]] || { log "no secure broker in $RUN (run start-secure)"; exit 1; }
  java -cp "$LIB/*" "$HERE/kafka/Grants.java" "$(cat "$RUN/bootstrap")" "$RUN/admin.properties"
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
  start) start plain ;;
  start-secure) start secure ;;
  admin) admin ;;
  stop) stop ;;
  logs) logs ;;
  fetch) fetch ;;
  *) echo "usage: $0 start|start-secure|admin|stop|logs|fetch" >&2; exit 2 ;;
esac
