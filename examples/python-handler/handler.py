#!/usr/bin/env python3
"""A Courier HTTP push handler service in plain Python (standard library only).

Courier's worker POSTs each command to the URL its type declares in courier.yaml, as
a CloudEvent in HTTP binary mode: the body is the command's payload (JSON), and the
headers say which command it is (ce-id, ce-type, ce-source, ce-time, courier-attempt,
courier-key, courier-deadline, traceparent). The status code of the answer is the
outcome: 200 with a JSON body completes the command with that body as its result; a
4xx fails it for good (a JSON {"code", "message"} body names the error); a 5xx, 408,
429 or a timeout is retried later (Retry-After is the least wait).

Routes:
  POST /greet   quick:     {"name": "Ada"} -> {"greeting": "hello, Ada"}
  POST /charge  failing:   {"amount_cents": n} -> 422 card_declined above 10000
  POST /flaky   flaky:     503 + Retry-After until attempt `succeed_on` (default 2)
  POST /sleep   long-ish:  sleeps `ms`, and stops as soon as Courier hangs up
                           (the command was cancelled, or its deadline passed)
  POST /echo    returns its payload
  POST /long    a job that outlives the request: answers 202 at once, then (on a
                thread) reports progress, sends a heartbeat and completes through
                the gateway, with the courier-callback-url and -token it was sent;
                {"ms": n} how long it works, {"complete": false} never calls back
  POST /ouro    an Ouro long-running route, unchanged (the type's `http.profile: ouro`):
                answers 202, then posts {status, ouro_action_id, response} to the
                ouro-webhook-url it was sent, with its ouro-webhook-token
  POST /runpod  a RunPod-style worker, unchanged (`http.profile: runpod`): takes
                {id, input, webhook}; {"sync": true} in the input answers COMPLETED
                at once, else it answers IN_QUEUE and posts IN_PROGRESS, then
                COMPLETED with the output, to the webhook (no auth header)
  POST /cancel  Courier's cancel of a job it handed over (cancel_url): the job stops
                and never completes
  GET  /calls   what this service saw, as JSON (which command, key, attempt, when;
                which requests the caller hung up on; the most in flight per route)

Run: python3 handler.py --port 9000   (then `courier dev --config courier.yaml`)
"""

import argparse
import json
import select
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

LOCK = threading.Lock()
CALLS = []          # one entry per request: route, id, key, attempt, payload, at
HUNG_UP = []        # ids of requests whose caller went away before the answer
IN_FLIGHT = {}      # route -> requests being answered now
MOST_IN_FLIGHT = {}  # route -> the most seen at once
CALLBACKS = []      # one entry per call back to the gateway: id, method, status
CANCELLED = []      # one entry per cancel Courier sent: id, attempt, at


def post_json(url, body, headers, patience=120.0):
    """POSTs JSON to the gateway; returns the status.

    While no gateway answers (it restarts, say) or one answers 5xx, tries again for
    up to `patience` seconds: a job that took hours should not lose its result to
    a gateway's restart. 0 means no gateway ever answered."""
    import urllib.error
    import urllib.request
    until = time.time() + patience
    while True:
        request = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST")
        request.add_header("content-type", "application/json")
        for name, value in headers.items():
            request.add_header(name, value)
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return response.status
        except urllib.error.HTTPError as e:
            status = e.code
        except OSError:
            status = 0
        if (status != 0 and status < 500) or time.time() > until:
            return status
        time.sleep(0.5)


def ouro_job(call, headers, payload):
    """What an Ouro route does after its 202: the result to ouro-webhook-url."""
    time.sleep(payload.get("ms", 300) / 1000.0)
    body = {"status": "success", "ouro_action_id": headers["ouro-action-id"], "response": {"route": headers["ouro-route-id"], "input": payload}}
    status = post_json(headers["ouro-webhook-url"], body, {"ouro-webhook-token": headers["ouro-webhook-token"]})
    with LOCK:
        CALLBACKS.append({"id": call["id"], "method": "ouro", "status": status, "at": time.time()})


def runpod_job(call, job):
    """What a RunPod worker does with a queued job: IN_PROGRESS, then COMPLETED."""
    statuses = [("runpod_in_progress", post_json(job["webhook"], {"id": job["id"], "status": "IN_PROGRESS"}, {}))]
    time.sleep(job["input"].get("ms", 300) / 1000.0)
    done = {"id": job["id"], "status": "COMPLETED", "delayTime": 1, "executionTime": 2, "output": {"echo": job["input"]}}
    statuses.append(("runpod", post_json(job["webhook"], done, {})))
    with LOCK:
        for method, status in statuses:
            CALLBACKS.append({"id": call["id"], "method": method, "status": status, "at": time.time()})


def call_back(url, token, method, body):
    """POSTs one callback (:complete, :progress, :heartbeat); returns the status."""
    return post_json(url + ":" + method, body, {"authorization": "Bearer " + token})


def cancelled(command_id):
    with LOCK:
        return any(c["id"] == command_id for c in CANCELLED)


def long_job(call, payload):
    """The work behind a 202: progress, a heartbeat, then the result (unless
    Courier cancels it first)."""
    url, token = call["callback_url"], call["callback_token"]
    seconds = payload.get("ms", 500) / 1000.0
    statuses = []

    def work(duration):
        until = time.time() + duration
        while time.time() < until:
            if cancelled(call["id"]):
                return False
            time.sleep(min(0.05, max(0.0, until - time.time())))
        return True

    if work(seconds / 2):
        statuses.append(("progress", call_back(url, token, "progress", {"percent": 50, "message": "halfway"})))
        statuses.append(("heartbeat", call_back(url, token, "heartbeat", None)))
        if work(seconds / 2):
            statuses.append(("complete", call_back(url, token, "complete", {"result": {"done": True, "input": payload}})))
    with LOCK:
        for method, status in statuses:
            CALLBACKS.append({"id": call["id"], "method": method, "status": status, "at": time.time()})


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: Courier reuses its connections

    def log_message(self, fmt, *args):  # quiet: one line per request is too much
        pass

    def answer(self, status, body=None, headers=None):
        data = b"" if body is None else json.dumps(body).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        if self.path != "/calls":
            return self.answer(404, {"code": "no_such_route", "message": self.path})
        with LOCK:
            self.answer(200, {"calls": CALLS, "hung_up": HUNG_UP, "most_in_flight": MOST_IN_FLIGHT, "callbacks": CALLBACKS, "cancelled": CANCELLED})

    def do_POST(self):
        length = int(self.headers.get("content-length") or 0)
        try:
            payload = json.loads(self.rfile.read(length) or b"null")
        except ValueError:
            return self.answer(400, {"code": "bad_json", "message": "the body is not JSON"})
        route = self.path.split("?")[0]
        call = {
            "route": route,
            "id": self.headers.get("ce-id"),
            "type": self.headers.get("ce-type"),
            "source": self.headers.get("ce-source"),
            "specversion": self.headers.get("ce-specversion"),
            "time": self.headers.get("ce-time"),
            "key": self.headers.get("courier-key"),
            "attempt": int(self.headers.get("courier-attempt") or 1),
            "deadline": self.headers.get("courier-deadline"),
            "traceparent": self.headers.get("traceparent"),
            "api_key": self.headers.get("x-api-key"),
            "callback_url": self.headers.get("courier-callback-url"),
            "callback_token": self.headers.get("courier-callback-token"),
            "payload": payload,
            "at": time.time(),
        }
        with LOCK:
            CALLS.append(call)
            IN_FLIGHT[route] = IN_FLIGHT.get(route, 0) + 1
            MOST_IN_FLIGHT[route] = max(MOST_IN_FLIGHT.get(route, 0), IN_FLIGHT[route])
        try:
            self.route(route, payload, call)
        finally:
            with LOCK:
                IN_FLIGHT[route] -= 1

    def route(self, route, payload, call):
        if route == "/greet":
            return self.answer(200, {"greeting": "hello, %s" % payload.get("name", "stranger")})
        if route == "/charge":
            amount = payload.get("amount_cents", 0)
            if amount > 10000:
                return self.answer(422, {"code": "card_declined", "message": "over the card's limit"})
            return self.answer(200, {"charged_cents": amount})
        if route == "/flaky":
            if call["attempt"] < payload.get("succeed_on", 2):
                wait = str(payload.get("retry_after", 1))
                return self.answer(503, {"code": "warming_up", "message": "try again"}, {"retry-after": wait})
            return self.answer(200, {"attempt": call["attempt"]})
        if route == "/sleep":
            if not self.sleep(payload.get("ms", 1000) / 1000.0):
                with LOCK:
                    HUNG_UP.append(call["id"])
                return None
            return self.answer(200, {"slept_ms": payload.get("ms", 1000)})
        if route == "/echo":
            return self.answer(200, payload)
        if route == "/long":
            if not call["callback_url"]:
                return self.answer(500, {"code": "no_callback", "message": "no courier-callback-url was sent"})
            if payload.get("complete", True):
                threading.Thread(target=long_job, args=(call, payload), daemon=True).start()
            return self.answer(202, {"accepted": True})
        if route == "/ouro":
            names = ["ouro-webhook-url", "ouro-webhook-token", "ouro-action-id", "ouro-route-id"]
            headers = {name: self.headers.get(name) for name in names}
            if not all(headers.values()):
                return self.answer(400, {"code": "not_ouro", "message": "missing Ouro headers"})
            threading.Thread(target=ouro_job, args=(call, headers, payload), daemon=True).start()
            return self.answer(202, {"status": "pending"})
        if route == "/runpod":
            if not isinstance(payload, dict) or "input" not in payload or "id" not in payload:
                return self.answer(400, {"code": "not_runpod", "message": "expected {id, input, webhook}"})
            if payload["input"].get("sync"):
                return self.answer(200, {"id": payload["id"], "status": "COMPLETED", "output": {"echo": payload["input"]}})
            threading.Thread(target=runpod_job, args=(call, payload), daemon=True).start()
            return self.answer(200, {"id": payload["id"], "status": "IN_QUEUE"})
        if route == "/cancel":
            with LOCK:
                CANCELLED.append({"id": payload.get("command_id"), "attempt": payload.get("attempt"), "at": time.time()})
            return self.answer(200, {"cancelled": True})
        return self.answer(404, {"code": "no_such_route", "message": route})

    def sleep(self, seconds):
        """Sleeps, watching the connection: False as soon as the caller hangs up."""
        until = time.time() + seconds
        while time.time() < until:
            readable, _, _ = select.select([self.connection], [], [], min(0.05, max(0.0, until - time.time())))
            if readable:
                try:
                    if self.connection.recv(1, socket.MSG_PEEK) == b"":
                        return False
                except OSError:
                    return False
        return True


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9000)
    args = parser.parse_args()
    server = ThreadingHTTPServer((args.host, args.port), Handler)
    server.daemon_threads = True
    print("handler listening on http://%s:%d" % (args.host, server.server_port), flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
