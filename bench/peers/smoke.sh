#!/usr/bin/env bash
# Smoke run of the peer workers against a running broker: builds bench/peers, seeds
# Courier-shaped commands on a fresh topic, runs each worker with --expect N on a
# results topic of its own, then verifies its results (one per command, keyed like it,
# per-key order) and prints its throughput. Deletes only the topics it created.
#
#   eval "$(bash scripts/kafka.sh start)"; bash bench/peers/smoke.sh
#
# PEERS_SMOKE_COUNT (20000), PEERS_SMOKE_WORKERS ("raw spring spring-eos pc"),
# PEERS_SMOKE_HANDLER_MS (0) and PEERS_SMOKE_TIMEOUT (300 s per worker) change the run.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
: "${COURIER_BOOTSTRAP:?set it first: eval \"\$(bash scripts/kafka.sh start)\"}"
COUNT="${PEERS_SMOKE_COUNT:-20000}"
WORKERS="${PEERS_SMOKE_WORKERS:-raw spring spring-eos pc}"
HANDLER_MS="${PEERS_SMOKE_HANDLER_MS:-0}"
TIMEOUT="${PEERS_SMOKE_TIMEOUT:-300}"

log() { echo "smoke: $*" >&2; }

start=$(date +%s)
mvn -q -B -f "$REPO/bench/peers/pom.xml" package
log "built in $(( $(date +%s) - start )) s"
CP="$HERE/target/classes:$(cat "$HERE/target/classpath.txt")"
peers() { java -cp "$CP" dev.courier.peers.Main "$@"; }

RUN="peers-smoke-$(date +%s)-$$"
COMMANDS="$RUN.commands"
CREATED=()
cleanup() {
  if (( ${#CREATED[@]} )); then
    peers topics delete --bootstrap "$COURIER_BOOTSTRAP" "${CREATED[@]}" || log "could not delete ${CREATED[*]}"
  fi
}
trap cleanup EXIT

create() { peers topics create --bootstrap "$COURIER_BOOTSTRAP" --partitions 6 "$@"; CREATED+=("$@"); }

# One commands topic for all workers: each reads it whole under a group of its own.
create "$COMMANDS"
peers seed --bootstrap "$COURIER_BOOTSTRAP" --topic "$COMMANDS" --count "$COUNT" --keys 1000 --size 256 >&2

failed=0
summary=()
for worker in $WORKERS; do
  results="$RUN.$worker.results"
  create "$results"
  out="$(mktemp)"; err="$(mktemp)"
  t0=$(date +%s%N)
  rc=0
  timeout "$TIMEOUT" java -cp "$CP" dev.courier.peers.Main "$worker" --bootstrap "$COURIER_BOOTSTRAP" \
      --commands "$COMMANDS" --results "$results" --group "$RUN.$worker" \
      --handler-ms "$HANDLER_MS" --expect "$COUNT" > "$out" 2> "$err" || rc=$?
  if (( rc )); then
    log "$worker exited $rc (124: still running after ${TIMEOUT} s)"; failed=1
  fi
  wall_ms=$(( ($(date +%s%N) - t0) / 1000000 ))
  if ! grep -qx ready "$out" || ! grep -qx "done $COUNT" "$out"; then
    log "$worker: expected 'ready' and 'done $COUNT' on stdout, got: $(tr '\n' ' ' < "$out")"
    failed=1
  fi
  if [[ -s "$err" ]]; then log "$worker wrote to stderr:"; head -n 20 "$err" >&2; fi
  if line="$(peers verify --bootstrap "$COURIER_BOOTSTRAP" --commands "$COMMANDS" --results "$results" --label "$worker")"; then
    summary+=("$line; worker wall time ${wall_ms} ms")
  else
    summary+=("$line"); failed=1
  fi
  rm -f "$out" "$err"
done

printf '%s\n' "${summary[@]}"
if (( failed )); then log "FAILED"; exit 1; fi
log "all checks passed ($COUNT commands, handler ${HANDLER_MS} ms)"
