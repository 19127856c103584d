#!/usr/bin/env bash
# The test command (see README): runs Courier's whole suite against a real Apache
# Kafka broker. Starts the project's own broker (scripts/kafka.sh) unless
# COURIER_BOOTSTRAP points at one, and always stops what it started.
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$REPO/target}"

if [[ -z "${COURIER_BOOTSTRAP:-}" ]]; then
  line="$(scripts/kafka.sh start)"
  export COURIER_BOOTSTRAP="${line#COURIER_BOOTSTRAP=}"
  on_exit() {
    local rc=$?
    if [[ $rc -ne 0 ]]; then echo "--- broker log (tail) ---" >&2; scripts/kafka.sh logs >&2 || true; fi
    scripts/kafka.sh stop || true
    exit $rc
  }
  trap on_exit EXIT
fi
echo "test.sh: using Kafka at $COURIER_BOOTSTRAP" >&2

# Foreign clients for the interop tests (tests/interop.rs): confluent-kafka in a cached
# venv, (re)installed only when requirements.txt differs from what the venv last got.
# The Java (Spring Kafka) caller is built by the test itself with Maven (~/.m2 cache).
VENV="${COURIER_CACHE:-$HOME/.cache/courier}/venv"
REQS=tests/interop/python/requirements.txt
if [[ ! -x "$VENV/bin/python" ]]; then python3 -m venv "$VENV"; fi
if ! cmp -s "$REQS" "$VENV/courier-requirements.txt"; then
  "$VENV/bin/pip" install -q --disable-pip-version-check -r "$REQS"
  cp "$REQS" "$VENV/courier-requirements.txt"
fi
export COURIER_PYTHON="$VENV/bin/python"

cargo test --release --all-targets --no-fail-fast
cargo test --release --doc

# The core round trip again, on a SASL_SSL broker with the StandardAuthorizer
# (scripts/kafka.sh start-secure): the same tests/roundtrip.rs, every client logging
# in through COURIER_KAFKA_OPTS (the test harness and the courier processes it starts
# read it). They run as the broker's admin; tests/secure_kafka.rs is the proof with
# least-privilege principals.
SECURE_RUN="$REPO/.kafka-secure"
secure="$(COURIER_KAFKA_RUN="$SECURE_RUN" scripts/kafka.sh start-secure)"
stop_secure() { COURIER_KAFKA_RUN="$SECURE_RUN" scripts/kafka.sh stop || true; }
secure_bootstrap="$(sed -n 's/^COURIER_BOOTSTRAP=//p' <<<"$secure")"
secure_ca="$(sed -n 's/^COURIER_KAFKA_CA=//p' <<<"$secure")"
echo "test.sh: the core round trip against SASL_SSL at $secure_bootstrap" >&2
secure_rc=0
COURIER_BOOTSTRAP="$secure_bootstrap" \
COURIER_KAFKA_OPTS="security.protocol=SASL_SSL,sasl.mechanism=SCRAM-SHA-512,sasl.username=admin,sasl.password=$(cat "$SECURE_RUN/admin.password"),ssl.ca.location=$secure_ca" \
  cargo test --release --test roundtrip || secure_rc=$?
stop_secure
if [[ $secure_rc -ne 0 ]]; then echo "test.sh: the round trip failed against SASL_SSL" >&2; exit "$secure_rc"; fi

# The contract: the checked-in AsyncAPI document must pass the official parser.
echo "test.sh: validating asyncapi/asyncapi.yaml with @asyncapi/parser" >&2
(cd contract/validate && npm ci --no-audit --no-fund --silent && node validate.mjs ../../asyncapi/asyncapi.yaml)
