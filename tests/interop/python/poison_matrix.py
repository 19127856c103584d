"""The hostile-records matrix, sent by clients no one here wrote.

Produces `--good` valid `echo` commands interleaved with `--each` copies of every
kind of hostile record in KINDS onto `--topic`, then prints a JSON manifest on
stdout: for each record sent, its kind, where it landed (partition, offset, from the
delivery report), what the worker is expected to make of it, and digests of what
was sent, so the Rust test (tests/hostile_records.rs) can match every result event
(by command id) and every dead letter (by its courier_dlq_partition/offset headers)
to the record it is about.

confluent-kafka sends everything it can express. It cannot send a header whose
*name* is not UTF-8 (it stringifies a bytes name: b"\\xff" goes out as the text
"b'\\\\xff'"), so those records go through kafka-python, whose record builder calls
`name.encode("utf-8")`: a str subclass whose `encode` returns the raw bytes puts
them on the wire unchanged. Both producers partition keys with murmur2 (the Java
client's partitioner), so a key lands on the same partition whichever sent it.

Exits 0 after every record was acknowledged, else 1 with the reason."""
import argparse
import hashlib
import json
import random
import struct
import sys
import uuid
from datetime import datetime, timezone

from confluent_kafka import KafkaException, Producer
from kafka import KafkaProducer

# The worker's default --max-message-bytes: a value above it is `too_large`.
WORKER_LIMIT = 1_000_000
# Larger than any record sent here, smaller than the broker's message.max.bytes
# (1,048,588 by default, which the test topics keep).
PRODUCER_LIMIT = 1_040_000
# Keys of the good commands: a small set, so many commands share each key's lane and
# the worker's per-key order is exercised; hostile records sit in the same lanes.
KEYS = [f"k{i}".encode() for i in range(8)]
BINARY_KEYS = [b"\x00\xff\xfe", b"\xc3\x28bin", b"\x80\x81\x82\x00tail", bytes(range(256))]
BAD_NAME = b"\xff\xfe-x"
NOT_UTF8 = b"\xc3\x28\xff"


class RawName(str):
    """A header name kafka-python writes as these exact bytes (see the docstring)."""

    def __new__(cls, raw):
        name = super().__new__(cls, raw.decode("utf-8", "surrogateescape"))
        name.raw = raw
        return name

    def encode(self, *_args, **_kwargs):
        return self.raw


def raw_name(name):
    return name.raw if isinstance(name, RawName) else name.encode()


def headers_digest(headers):
    """sha256 over (u32 name length, name, u32 value length or 0xffffffff, value)...
    in order; tests/hostile_records.rs computes the same over what it reads back."""
    h = hashlib.sha256()
    for name, value in headers:
        n = raw_name(name)
        h.update(struct.pack(">I", len(n)) + n)
        h.update(b"\xff\xff\xff\xff" if value is None else struct.pack(">I", len(value)) + value)
    return h.hexdigest()


class Rec:
    """One record to send and what the worker should make of it."""

    def __init__(self, kind, key, value, headers, outcome, reason=None, failed_event=False, ce_id=None, note=None):
        self.kind, self.key, self.value, self.headers = kind, key, value, headers
        # "completed" / "timed_out": one final event of that state, no dead letter.
        # "dead_letter": one DLQ record with `reason`, plus one `failed` final event
        # (error.code == reason) when `failed_event`, i.e. when ce_id is readable.
        self.outcome, self.reason, self.failed_event, self.ce_id = outcome, reason, failed_event, ce_id
        self.extra = note or {}
        self.partition = self.offset = None

    def manifest(self, seq):
        return {
            "seq": seq,
            "kind": self.kind,
            "outcome": self.outcome,
            "reason": self.reason,
            "failed_event": self.failed_event,
            "ce_id": self.ce_id,
            "key_hex": None if self.key is None else self.key.hex(),
            "value_null": self.value is None,
            "value_len": 0 if self.value is None else len(self.value),
            "value_sha256": hashlib.sha256(self.value or b"").hexdigest(),
            "headers_sha256": headers_digest(self.headers),
            "header_names_hex": [raw_name(n).hex() for n, _ in self.headers][:40],
            "header_count": len(self.headers),
            "partition": self.partition,
            "offset": self.offset,
            **self.extra,
        }


class Maker:
    def __init__(self, rng):
        self.rng = rng

    def new_id(self):
        return str(uuid.UUID(int=self.rng.getrandbits(128), version=4))

    def key(self):
        return self.rng.choice(KEYS)

    def headers(self, ce_id, ce_type="echo"):
        """The documented command headers (AsyncAPI contract), nothing Courier-only."""
        return [
            ("ce_specversion", b"1.0"),
            ("ce_id", ce_id.encode()),
            ("ce_source", b"//python-poison-matrix"),
            ("ce_type", ce_type.encode() if isinstance(ce_type, str) else ce_type),
            ("ce_time", datetime.now(timezone.utc).isoformat(timespec="milliseconds").encode()),
            ("content-type", b"application/json"),
        ]

    def good(self, i):
        ce_id = self.new_id()
        value = json.dumps({"i": i, "pad": "x" * self.rng.randrange(0, 64)}).encode()
        return Rec("good", self.key(), value, self.headers(ce_id), "completed", ce_id=ce_id)


def set_header(headers, name, value):
    """Replaces every header of that name (or removes it when value is None)."""
    kept = [(n, v) for n, v in headers if n != name]
    return kept if value is None else kept + [(name, value)]


def echo_value(i):
    return json.dumps({"hostile": i}).encode()


# Each kind: (name, builder(maker, i) -> Rec). The expected outcome is the target
# behaviour; where the target is a judgement call, the comment says why.
def kinds():
    def completes(name, mutate, key=None):
        def build(m, i):
            ce_id = m.new_id()
            k = m.key() if key is None else key(m)
            return Rec(name, k, echo_value(i), mutate(m.headers(ce_id)), "completed", ce_id=ce_id)
        return (name, build)

    def dead(name, reason, mutate=lambda h: h, value=echo_value, readable=True, key=None, ce_type="echo"):
        def build(m, i):
            ce_id = m.new_id()
            k = m.key() if key is None else key(m)
            v = value(i) if callable(value) else value
            return Rec(name, k, v, mutate(m.headers(ce_id, ce_type)), "dead_letter", reason=reason,
                       failed_event=readable, ce_id=ce_id if readable else None)
        return (name, build)

    def with_header(name, value):
        return lambda h: set_header(h, name, value)

    def without(name):
        return lambda h: set_header(h, name, None)

    def bad_name(h):
        return h + [(RawName(BAD_NAME), b"carried through")]

    def duplicate_id(m, i):
        first, last = m.new_id(), m.new_id()
        h = m.headers(first)
        h.append(("ce_id", last.encode()))
        # Kafka headers repeat; as everywhere in Courier the last value wins, so the
        # command runs (and completes) under the last id, and the first id has no event.
        return Rec("duplicate_ce_id", m.key(), echo_value(i), h, "completed", ce_id=last,
                   note={"absent_ce_id": first})

    def duplicate_type(m, i):
        ce_id = m.new_id()
        h = set_header(m.headers(ce_id), "ce_type", b"no.such.type")
        h.append(("ce_type", b"echo"))
        return Rec("duplicate_ce_type", m.key(), echo_value(i), h, "completed", ce_id=ce_id)

    def deadline_past(m, i):
        ce_id = m.new_id()
        h = m.headers(ce_id) + [("ce_deadline", b"0001-01-01T00:00:00Z")]
        # A valid deadline already passed: the documented `timed_out` final, never run,
        # and not a dead letter (nothing is wrong with the record).
        return Rec("deadline_long_past", m.key(), echo_value(i), h, "timed_out", ce_id=ce_id)

    def null_key(m, i):
        ce_id = m.new_id()
        # No key: the worker keys its events by the command id (Command::partition_key),
        # so the result's record key is the ce_id text (the test knows this rule).
        return Rec("null_key_good", None, echo_value(i), m.headers(ce_id), "completed", ce_id=ce_id)

    def deep_json(_i):
        depth = 100_000
        return b"[" * depth + b"]" * depth

    def over_limit(_i):
        # Valid JSON for `echo`, one byte over the worker's limit: only the size is wrong.
        pad = WORKER_LIMIT + 1 - len(b'{"blob":""}')
        return b'{"blob":"' + b"x" * pad + b'"}'

    return [
        # 1. A header name that is not UTF-8 is an unknown header like any other: carried
        #    through, never stops a command. On an unknown type, the dead letter must keep
        #    it byte for byte (checked through the headers digest).
        completes("bad_name_header_good", bad_name),
        dead("bad_name_header_unknown_type", "unknown_type", bad_name, ce_type="no.such.type"),
        # 2. A header Courier must read as text, not UTF-8: `bad_header`. A failed event
        #    only where ce_id itself is readable.
        dead("ce_type_not_utf8", "bad_header", with_header("ce_type", NOT_UTF8)),
        dead("ce_id_not_utf8", "bad_header", with_header("ce_id", NOT_UTF8), readable=False),
        dead("ce_source_not_utf8", "bad_header", with_header("ce_source", NOT_UTF8)),
        dead("ce_time_not_utf8", "bad_header", with_header("ce_time", NOT_UTF8)),
        dead("ce_deadline_not_utf8", "bad_header", with_header("ce_deadline", NOT_UTF8)),
        dead("kafka_reply_topic_not_utf8", "bad_header", with_header("kafka_replyTopic", NOT_UTF8)),
        # 3. A 600 KB key on a good command: completes, its result keyed by those bytes.
        completes("key_600kb", lambda h: h, key=lambda m: b"K" * 600_000),
        # 4. A 600 KB ce_type: no handler has that name. The id is readable, so a failed
        #    event too (the worker must not let the long name make either record too big).
        dead("ce_type_600kb", "unknown_type", with_header("ce_type", b"t" * 600_000)),
        # 5. Keys that are not UTF-8, byte-identical on results and dead letters.
        completes("binary_key_good", lambda h: h, key=lambda m: m.rng.choice(BINARY_KEYS)),
        dead("binary_key_bad", "not_json", value=b"{oops", key=lambda m: m.rng.choice(BINARY_KEYS)),
        # 6. Null and empty values and keys.
        dead("tombstone_value", "not_json", value=None),
        dead("empty_value", "not_json", value=b""),
        ("null_key_good", null_key),
        dead("null_key_bad", "not_json", value=b"not json", key=lambda m: None),  # DLQ key stays null
        completes("empty_key_good", lambda h: h, key=lambda m: b""),  # empty, not null
        dead("empty_key_bad", "not_json", value=b"not json", key=lambda m: b""),  # DLQ key stays empty
        # 7. Values.
        dead("value_not_utf8", "not_utf8", value=b"\xff\xfe\x00\x81"),
        dead("value_not_json", "not_json", value=b'{"i": oops'),
        dead("json_100k_deep", "not_json", value=deep_json),  # serde_json's recursion limit
        dead("value_over_worker_limit", "too_large", value=over_limit),
        # 8. Required headers, envelope attributes.
        dead("missing_ce_id", "bad_headers", without("ce_id"), readable=False),
        dead("missing_ce_type", "bad_headers", without("ce_type")),
        dead("missing_ce_source", "bad_headers", without("ce_source")),
        dead("missing_ce_specversion", "bad_headers", without("ce_specversion")),
        dead("specversion_0_3", "bad_headers", with_header("ce_specversion", b"0.3")),
        dead("ce_id_not_uuid", "bad_headers", with_header("ce_id", b"order-17"), readable=False),
        dead("attempt_zero", "bad_headers", with_header("ce_attempt", b"0")),
        dead("attempt_negative", "bad_headers", with_header("ce_attempt", b"-1")),
        dead("attempt_overflow", "bad_headers", with_header("ce_attempt", b"99999999999999999999")),
        dead("attempt_not_number", "bad_headers", with_header("ce_attempt", b"abc")),
        dead("ce_time_not_rfc3339", "bad_headers", with_header("ce_time", b"yesterday at noon")),
        dead("ce_deadline_not_rfc3339", "bad_headers", with_header("ce_deadline", b"next tuesday")),
        completes("deadline_year_9999", with_header("ce_deadline", b"9999-12-31T23:59:59Z")),
        ("deadline_long_past", deadline_past),
        dead("courierversion_2_0", "unsupported_version", with_header("ce_courierversion", b"2.0")),
        # 9. Repeated headers: the last wins.
        ("duplicate_ce_id", duplicate_id),
        ("duplicate_ce_type", duplicate_type),
        # 10. Handlers, and optional headers out of the ordinary.
        dead("unknown_type", "unknown_type", ce_type="no.such.type"),
        dead("primes_schema_violation", "schema_violation", value=b'{"n": "lots"}', ce_type="primes"),
        dead("handler_panic", "handler_panic", ce_type="panic"),
        # Spring's reply partition is a 4-byte int; 3 bytes of garbage is no partition at
        # all, so it is ignored and the command runs as if it were absent.
        completes("reply_partition_garbage", with_header("kafka_replyPartition", b"\x01\xfe\x07")),
        # The reply copy to a topic that does not exist is logged and dropped; the
        # results-topic event is the outcome, and the partition is not wedged.
        completes("replyto_missing_topic", with_header("ce_replyto", b"no-such-topic-for-replies")),
        completes("traceparent_200kb", with_header("ce_traceparent", b"00-" + b"a" * 200_000)),
        completes("correlation_id_200kb", with_header("kafka_correlationId", b"\x01" * 200_000)),
        completes("unknown_headers_500", lambda h: h + [(f"x-extra-{n}", b"v%d" % n) for n in range(500)]),
        completes("unknown_header_300kb", lambda h: h + [("x-big", b"b" * 300_000)]),
    ]


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--bootstrap", required=True)
    ap.add_argument("--topic", required=True)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--good", type=int, default=500)
    ap.add_argument("--each", type=int, default=3)
    ap.add_argument("--skip", default="", help="comma-separated kinds to leave out (for running the script by hand)")
    args = ap.parse_args()
    rng = random.Random(args.seed)
    m = Maker(rng)

    records = [m.good(i) for i in range(args.good)]
    skip = set(filter(None, args.skip.split(",")))
    unknown = skip - {name for name, _ in kinds()}
    if unknown:
        ap.error(f"no such kinds: {sorted(unknown)}")
    hostile = [build(m, i * 100 + n) for i, (name, build) in enumerate(kinds()) if name not in skip
               for n in range(args.each)]
    # Interleave: each hostile record at a random place among the good ones.
    for rec in hostile:
        records.insert(rng.randrange(len(records) + 1), rec)

    ck = Producer({
        "bootstrap.servers": args.bootstrap,
        "enable.idempotence": True,
        "partitioner": "murmur2_random",
        "message.max.bytes": PRODUCER_LIMIT,
        "linger.ms": 5,
    })
    kp = KafkaProducer(bootstrap_servers=args.bootstrap, acks="all", max_request_size=PRODUCER_LIMIT,
                       linger_ms=5)
    errors, pending = [], []

    def delivered(rec):
        def cb(err, msg):
            if err is not None:
                errors.append(f"{rec.kind}: {err}")
            else:
                rec.partition, rec.offset = msg.partition(), msg.offset()
        return cb

    for rec in records:
        if any(isinstance(n, RawName) for n, _ in rec.headers):
            pending.append((rec, kp.send(args.topic, value=rec.value, key=rec.key, headers=rec.headers)))
        else:
            while True:
                try:
                    ck.produce(args.topic, key=rec.key, value=rec.value, headers=rec.headers,
                               on_delivery=delivered(rec))
                    break
                except BufferError:
                    ck.poll(0.1)
            ck.poll(0)
    if ck.flush(60) != 0:
        errors.append("confluent-kafka flush timed out")
    for rec, future in pending:
        try:
            md = future.get(timeout=60)
            rec.partition, rec.offset = md.partition, md.offset
        except Exception as e:  # noqa: BLE001 - reported, not swallowed
            errors.append(f"{rec.kind} (kafka-python): {e!r}")
    kp.close(10)
    if errors or any(r.offset is None for r in records):
        print(f"poison matrix: delivery failed: {errors[:10]}", file=sys.stderr)
        sys.exit(1)
    print(json.dumps({"topic": args.topic, "records": [r.manifest(i) for i, r in enumerate(records)]}))


if __name__ == "__main__":
    try:
        main()
    except KafkaException as e:
        print(f"poison matrix: Kafka error: {e}", file=sys.stderr)
        sys.exit(1)
