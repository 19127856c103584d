"""A caller no one here wrote: confluent-kafka, using only what the AsyncAPI document
says (CloudEvents 1.0, Kafka protocol binding, binary mode). Sends a `primes` and a
`fail` command to `<prefix>.commands` and reads their final events back from
`<prefix>.results`, matching them by the `ce_subject` header.

Prints one JSON summary line and exits 0, or exits 1 with the reason (60 s budget)."""
import argparse
import json
import sys
import time
import uuid
from datetime import datetime, timezone

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, Producer, TopicPartition

TIMEOUT_S = 60
KEY = "python-interop"
FINAL_TYPES = {f"courier.command.{s}" for s in ("completed", "failed", "cancelled", "timed_out")}

# (ce_type, payload, expected final ce_type, check of the event's JSON value)
CASES = [
    ("primes", {"n": 1000}, "courier.command.completed",
     lambda data: data.get("result") == {"n": 1000, "primes": 168}),
    ("fail", {"code": "py_fail", "message": "from python"}, "courier.command.failed",
     lambda data: (data.get("error") or {}).get("code") == "py_fail"),
]


def fail(msg):
    print(f"python interop FAILED: {msg}", file=sys.stderr)
    sys.exit(1)


def command_headers(ce_id, ce_type):
    """The documented command headers; nothing Courier-specific."""
    return [
        ("ce_specversion", b"1.0"),
        ("ce_id", ce_id.encode()),
        ("ce_source", b"//python-interop"),
        ("ce_type", ce_type.encode()),
        ("ce_time", datetime.now(timezone.utc).isoformat(timespec="milliseconds").encode()),
        ("content-type", b"application/json"),
    ]


def text_headers(msg):
    """Record headers as text; the last value of a repeated header wins."""
    out = {}
    for name, value in msg.headers() or []:
        out[name] = value.decode("utf-8", "replace") if value is not None else None
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--bootstrap", required=True)
    ap.add_argument("--prefix", required=True)
    args = ap.parse_args()
    commands_topic, results_topic = f"{args.prefix}.commands", f"{args.prefix}.results"
    deadline = time.monotonic() + TIMEOUT_S

    # Assign every partition of the results topic from the beginning before sending,
    # so no event can be missed. No group membership, no offset commits.
    consumer = Consumer({
        "bootstrap.servers": args.bootstrap,
        "group.id": f"python-interop-{uuid.uuid4()}",  # required by the client; never joined
        "enable.auto.commit": False,
        "isolation.level": "read_committed",
    })
    md = consumer.list_topics(results_topic, timeout=10)
    topic_md = md.topics.get(results_topic)
    if topic_md is None or topic_md.error is not None or not topic_md.partitions:
        fail(f"results topic {results_topic} not found: {topic_md and topic_md.error}")
    consumer.assign([TopicPartition(results_topic, p, OFFSET_BEGINNING) for p in topic_md.partitions])

    producer = Producer({"bootstrap.servers": args.bootstrap, "enable.idempotence": True})
    delivery_errors = []
    wanted = {}  # ce_id -> case
    for ce_type, payload, expect_type, check in CASES:
        ce_id = str(uuid.uuid4())
        wanted[ce_id] = (ce_type, expect_type, check)
        producer.produce(commands_topic, key=KEY.encode(), value=json.dumps(payload).encode(),
                         headers=command_headers(ce_id, ce_type),
                         on_delivery=lambda err, _msg: err and delivery_errors.append(err))
    if producer.flush(max(1.0, deadline - time.monotonic())) != 0 or delivery_errors:
        fail(f"commands were not delivered to {commands_topic}: {delivery_errors or 'flush timed out'}")

    finals = {}  # ce_id -> (event ce_type, headers, JSON value, key)
    while len(finals) < len(wanted):
        if time.monotonic() > deadline:
            missing = {i: wanted[i][0] for i in wanted if i not in finals}
            fail(f"no final event within {TIMEOUT_S} s for {missing}")
        msg = consumer.poll(0.5)
        if msg is None:
            continue
        if msg.error():
            if msg.error().fatal():
                fail(f"consumer error: {msg.error()}")
            continue
        h = text_headers(msg)
        subject, event_type = h.get("ce_subject"), h.get("ce_type")
        if subject in wanted and event_type in FINAL_TYPES:
            try:
                data = json.loads(msg.value())
            except (TypeError, ValueError) as e:
                fail(f"final event for {subject} is not JSON ({e}): {msg.value()!r}")
            finals[subject] = (event_type, h, data, (msg.key() or b"").decode("utf-8", "replace"))
    consumer.close()

    for ce_id, (ce_type, expect_type, check) in wanted.items():
        event_type, h, data, key = finals[ce_id]
        where = f"{ce_type} command {ce_id}"
        if event_type != expect_type:
            fail(f"{where}: expected {expect_type}, got {event_type}: {data}")
        if h.get("ce_specversion") != "1.0" or not h.get("ce_id") or h.get("ce_id") == ce_id:
            fail(f"{where}: event has bad CloudEvents headers: {h}")
        if key != KEY:
            fail(f"{where}: result key {key!r} differs from the command key {KEY!r}")
        if data.get("command_id") != ce_id or data.get("command_type") != ce_type:
            fail(f"{where}: event data names another command: {data}")
        if not check(data):
            fail(f"{where}: unexpected event data: {data}")

    print(json.dumps({"python_interop": "ok", "commands": len(wanted),
                      "finals": {wanted[i][0]: finals[i][0] for i in wanted}}))


if __name__ == "__main__":
    try:
        main()
    except KafkaException as e:
        fail(f"Kafka error: {e}")
