"""A caller no one here wrote: confluent-kafka, using only what the AsyncAPI document
says. Sends a `primes` and a `fail` command as CloudEvents binary-mode records and
reads their final events back from the results topic."""
import argparse
import json
import sys
import time
import uuid
from datetime import datetime, timezone

from confluent_kafka import Consumer, Producer, TopicPartition


def command(ce_type, payload):
    cid = str(uuid.uuid4())
    headers = [
        ("ce_specversion", b"1.0"),
        ("ce_id", cid.encode()),
        ("ce_source", b"//python-interop"),
        ("ce_type", ce_type.encode()),
        ("ce_time", datetime.now(timezone.utc).isoformat().encode()),
        ("content-type", b"application/json"),
    ]
    return cid, headers, json.dumps(payload).encode()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bootstrap", required=True)
    ap.add_argument("--prefix", required=True)
    args = ap.parse_args()
    commands_topic, results_topic = f"{args.prefix}.commands", f"{args.prefix}.results"

    producer = Producer({"bootstrap.servers": args.bootstrap, "enable.idempotence": True})
    wanted = {}
    for ce_type, payload in [("primes", {"n": 1000}), ("fail", {"code": "py_fail", "message": "from python"})]:
        cid, headers, value = command(ce_type, payload)
        producer.produce(commands_topic, key=cid.encode(), value=value, headers=headers)
        wanted[cid] = ce_type
    if producer.flush(30) != 0:
        sys.exit("commands were not delivered")

    consumer = Consumer({"bootstrap.servers": args.bootstrap, "group.id": f"py-{uuid.uuid4()}",
                         "enable.auto.commit": False, "isolation.level": "read_committed"})
    md = consumer.list_topics(results_topic, timeout=10)
    consumer.assign([TopicPartition(results_topic, p, 0) for p in md.topics[results_topic].partitions])
    finals, deadline = {}, time.time() + 60
    while len(finals) < len(wanted) and time.time() < deadline:
        msg = consumer.poll(0.5)
        if msg is None or msg.error():
            continue
        h = {k: v.decode() for k, v in (msg.headers() or [])}
        subject, ce_type = h.get("ce_subject"), h.get("ce_type", "")
        if subject in wanted and ce_type in ("courier.command.completed", "courier.command.failed",
                                             "courier.command.cancelled", "courier.command.timed_out"):
            finals[subject] = (ce_type, json.loads(msg.value()), msg.key().decode())
    consumer.close()

    for cid, ce_type in wanted.items():
        if cid not in finals:
            sys.exit(f"no final event for {ce_type} command {cid} within 60 s")
        event_type, data, key = finals[cid]
        if key != cid:
            sys.exit(f"result key {key!r} differs from the command key {cid!r}")
        if ce_type == "primes" and (event_type != "courier.command.completed" or data.get("result") != {"n": 1000, "primes": 168}):
            sys.exit(f"unexpected primes result: {event_type} {data}")
        if ce_type == "fail" and (event_type != "courier.command.failed" or data["error"]["code"] != "py_fail"):
            sys.exit(f"unexpected fail result: {event_type} {data}")
    print(json.dumps({"python_interop": "ok", "commands": len(wanted),
                      "results": {c: finals[c][0] for c in wanted}}))


if __name__ == "__main__":
    main()
