#!/usr/bin/env node
/**
 * A Courier HTTP push handler service in plain Node.js (node:http and the global
 * fetch, nothing to install).
 *
 * Courier's worker POSTs each command to the URL its type declares in courier.yaml, as
 * a CloudEvent in HTTP binary mode: the body is the command's payload (JSON), and the
 * headers say which command it is (ce-id, ce-type, ce-source, ce-specversion, ce-time,
 * courier-attempt, courier-key, courier-deadline when it has one, traceparent; with a
 * `callbacks` block in the config, courier-callback-url and courier-callback-token
 * too). The status code of the answer is the outcome: 200 with a JSON body completes
 * the command with that body as its result; a 4xx fails it for good (a JSON
 * {"code", "message"} body names the error), except 408, 409, 425 and 429, which are
 * retried like a 5xx or a timeout (Retry-After is the least wait). A 202 hands the
 * command over: the handler reports back later through the gateway, POSTing to
 * `<courier-callback-url>:progress` ({"percent", "message"}), `:heartbeat` (no body)
 * and `:complete` ({"result": ...} or {"error": {"code", "message"}}) with
 * `Authorization: Bearer <courier-callback-token>`. When such a command is cancelled
 * and its type declares `cancel_url`, the worker POSTs {"command_id", "command_type",
 * "attempt", "reason"} there.
 *
 * Routes:
 *   POST /greet   quick:     {"name": "Ada"} -> {"greeting": "hello, Ada"}
 *   POST /charge  failing:   {"amount_cents": n} -> 422 card_declined above 10000
 *   POST /flaky   flaky:     503 + Retry-After until attempt `succeed_on` (default 2)
 *   POST /sleep   long-ish:  sleeps `ms`, and stops as soon as Courier hangs up
 *                            (the command was cancelled, or its deadline passed)
 *   POST /echo    returns its payload
 *   POST /long    a job that outlives the request: answers 202 at once, then (in the
 *                 background) reports progress, sends a heartbeat and completes
 *                 through the gateway, with the courier-callback-url and -token it
 *                 was sent; {"ms": n} how long it works, {"complete": false} never
 *                 calls back
 *   POST /cancel  Courier's cancel of a job it handed over (cancel_url): the job stops
 *                 and never completes
 *   GET  /calls   what this service saw, as JSON (which command, key, attempt, when;
 *                 which requests the caller hung up on; the most in flight per route;
 *                 the callbacks it made and the cancels it got)
 *
 * Run: node server.js --port 9000   (then `courier dev --config courier.yaml`)
 */

import http from "node:http";
import { parseArgs } from "node:util";
import { setTimeout as wait } from "node:timers/promises";

const calls = []; // one entry per request: route, id, key, attempt, payload, at
const hungUp = []; // ids of requests whose caller went away before the answer
const inFlight = {}; // route -> requests being answered now
const mostInFlight = {}; // route -> the most seen at once
const callbacks = []; // one entry per call back to the gateway: id, method, status, at
const cancelled = []; // one entry per cancel Courier sent: id, attempt, at

/** Seconds since the epoch, as a float (like Python's time.time()). */
const now = () => Date.now() / 1000;

const wasCancelled = (commandId) => cancelled.some((c) => c.id === commandId);

/**
 * POSTs one callback (:complete, :progress, :heartbeat); resolves to its status.
 *
 * While no gateway answers (it restarts, say) or one answers 5xx, tries again every
 * 0.5 s for up to `patienceMs`: a job that took hours should not lose its result to a
 * gateway's restart. Gives up early once the command is cancelled. 0 means no gateway
 * ever answered.
 */
async function callBack(call, method, body, patienceMs = 120_000) {
  const until = Date.now() + patienceMs;
  for (;;) {
    let status = 0;
    try {
      const response = await fetch(`${call.callback_url}:${method}`, {
        method: "POST",
        headers: { authorization: `Bearer ${call.callback_token}`, "content-type": "application/json" },
        body: body === null ? undefined : JSON.stringify(body),
        signal: AbortSignal.timeout(30_000),
      });
      status = response.status;
      await response.arrayBuffer(); // read to the end, so the connection is reused
    } catch {
      status = 0; // no answer: refused, reset, timed out
    }
    if ((status !== 0 && status < 500) || Date.now() > until || wasCancelled(call.id)) {
      return status;
    }
    await wait(500);
  }
}

/** Works for `ms`; false as soon as Courier cancels the command. */
async function work(commandId, ms) {
  const until = Date.now() + ms;
  while (Date.now() < until) {
    if (wasCancelled(commandId)) return false;
    await wait(Math.min(50, Math.max(0, until - Date.now())));
  }
  return true;
}

/** The work behind a 202: progress, a heartbeat, then the result (unless Courier
 * cancels it first). Each callback is recorded as its answer comes. */
async function longJob(call, payload) {
  const ms = numberOr(payload.ms, 500);
  const report = async (method, body) => {
    const status = await callBack(call, method, body);
    callbacks.push({ id: call.id, method, status, at: now() });
  };
  if (!(await work(call.id, ms / 2))) return;
  await report("progress", { percent: 50, message: "halfway" });
  await report("heartbeat", null);
  if (!(await work(call.id, ms / 2))) return;
  await report("complete", { result: { done: true, input: payload } });
}

/**
 * Waits `ms` while watching the connection: resolves false as soon as the caller
 * hangs up (Courier closes the connection when the command is cancelled or its
 * deadline passes), true when the time is up.
 */
function sleepWatching(socket, ms) {
  if (socket.destroyed) return Promise.resolve(false);
  return new Promise((resolve) => {
    const hangUp = () => {
      clearTimeout(timer);
      resolve(false);
    };
    const timer = setTimeout(() => {
      socket.off("close", hangUp);
      resolve(true);
    }, ms);
    socket.once("close", hangUp);
  });
}

function numberOr(value, otherwise) {
  return typeof value === "number" ? value : otherwise;
}

function answer(res, status, body, headers = {}) {
  const data = body === undefined ? "" : JSON.stringify(body);
  res.writeHead(status, { "content-type": "application/json", "content-length": Buffer.byteLength(data), ...headers });
  res.end(data);
}

/** The answer to one pushed command. `p` is the payload when it is an object, else {}. */
async function route(path, payload, call, req, res) {
  const p = payload !== null && typeof payload === "object" && !Array.isArray(payload) ? payload : {};
  switch (path) {
    case "/greet":
      return answer(res, 200, { greeting: `hello, ${p.name ?? "stranger"}` });
    case "/charge": {
      const amount = numberOr(p.amount_cents, 0);
      if (amount > 10000) return answer(res, 422, { code: "card_declined", message: "over the card's limit" });
      return answer(res, 200, { charged_cents: amount });
    }
    case "/flaky":
      if (call.attempt < numberOr(p.succeed_on, 2)) {
        const retryAfter = String(p.retry_after ?? 1);
        return answer(res, 503, { code: "warming_up", message: "try again" }, { "retry-after": retryAfter });
      }
      return answer(res, 200, { attempt: call.attempt });
    case "/sleep": {
      const ms = numberOr(p.ms, 1000);
      if (!(await sleepWatching(req.socket, ms))) {
        hungUp.push(call.id);
        return; // nobody to answer
      }
      return answer(res, 200, { slept_ms: ms });
    }
    case "/echo":
      return answer(res, 200, payload);
    case "/long":
      if (!call.callback_url) return answer(res, 500, { code: "no_callback", message: "no courier-callback-url was sent" });
      if ("complete" in p ? p.complete : true) {
        longJob(call, p).catch((e) => console.error("long job failed:", e));
      }
      return answer(res, 202, { accepted: true });
    case "/cancel":
      cancelled.push({ id: p.command_id ?? null, attempt: p.attempt ?? null, at: now() });
      return answer(res, 200, { cancelled: true });
    default:
      return answer(res, 404, { code: "no_such_route", message: path });
  }
}

async function readBody(req) {
  const chunks = [];
  for await (const chunk of req) chunks.push(chunk);
  return Buffer.concat(chunks);
}

async function onPost(req, res, path) {
  let payload;
  try {
    const body = await readBody(req);
    payload = body.length === 0 ? null : JSON.parse(body.toString("utf8"));
  } catch {
    if (req.socket.destroyed) return; // the caller went away while sending
    return answer(res, 400, { code: "bad_json", message: "the body is not JSON" });
  }
  const h = req.headers;
  const call = {
    route: path,
    id: h["ce-id"] ?? null,
    type: h["ce-type"] ?? null,
    source: h["ce-source"] ?? null,
    specversion: h["ce-specversion"] ?? null,
    time: h["ce-time"] ?? null,
    key: h["courier-key"] ?? null,
    attempt: Number.parseInt(h["courier-attempt"] ?? "", 10) || 1,
    deadline: h["courier-deadline"] ?? null,
    traceparent: h["traceparent"] ?? null,
    api_key: h["x-api-key"] ?? null,
    callback_url: h["courier-callback-url"] ?? null,
    callback_token: h["courier-callback-token"] ?? null,
    payload,
    at: now(),
  };
  calls.push(call);
  inFlight[path] = (inFlight[path] ?? 0) + 1;
  mostInFlight[path] = Math.max(mostInFlight[path] ?? 0, inFlight[path]);
  try {
    await route(path, payload, call, req, res);
  } finally {
    inFlight[path] -= 1;
  }
}

async function onRequest(req, res) {
  const path = (req.url ?? "/").split("?")[0];
  try {
    if (req.method === "GET" && path === "/calls") {
      return answer(res, 200, { calls, hung_up: hungUp, most_in_flight: mostInFlight, callbacks, cancelled });
    }
    if (req.method === "POST") return await onPost(req, res, path);
    return answer(res, 404, { code: "no_such_route", message: path });
  } catch (e) {
    console.error(`${req.method} ${path} failed:`, e);
    if (!res.headersSent && !res.destroyed) answer(res, 500, { code: "internal", message: String(e) });
  }
}

function main() {
  const { values } = parseArgs({
    options: {
      host: { type: "string", default: "127.0.0.1" },
      port: { type: "string", default: "9000" },
    },
  });
  const port = Number.parseInt(values.port, 10);
  if (!Number.isInteger(port) || port < 0 || port > 65535) {
    console.error(`--port: not a port: ${values.port}`);
    process.exit(2);
  }
  const server = http.createServer(onRequest);
  // Keep-alive: Courier reuses its connections, and lets an idle one go after 60 s.
  // Holding ours longer means the server never closes one the worker is reusing.
  server.keepAliveTimeout = 75_000;
  server.listen(port, values.host, () => {
    // The one line on stdout: whoever started us reads the port from it.
    console.log(`handler listening on http://${values.host}:${server.address().port}`);
  });
}

main();
