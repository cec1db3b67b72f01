// The harness itself, against the binary as it is: these pass whether or not the server speaks
// the Pusher protocol, so that a failure elsewhere is about the server, not about the helpers.

import { after, test } from "node:test";
import assert from "node:assert/strict";
import http from "node:http";
import PusherSDK from "pusher";
import {
  APP, Log, hmacHex, rawSocket, signQuery, startFanout, until, webhookReceiver,
} from "./helpers.mjs";

const servers = [];
after(async () => {
  for (const s of servers) await s.stop();
});

test("harness: fanout starts on a free port, answers /healthz, and stops", async () => {
  const server = await startFanout({ app: null });
  servers.push(server);
  assert.ok(server.port > 0);
  const res = await fetch(`${server.http}/healthz`);
  assert.equal(res.status, 200);
  assert.deepEqual(await res.json(), { status: "ok" });
  await server.stop();
  assert.notEqual(server.child.signalCode ?? server.child.exitCode, null, "the process has exited");
});

test("harness: startFanout reports an early exit with the server's stderr", async () => {
  await assert.rejects(startFanout({ app: null, args: ["--no-such-flag"] }),
    (err) => /exited early/.test(err.message) && /no-such-flag/.test(err.message));
});

test("harness: signQuery signs exactly as the SDK's createSignedQueryString", () => {
  const api = new PusherSDK({ appId: APP.id, key: APP.key, secret: APP.secret });
  const body = JSON.stringify({ name: "ev", channels: ["a"], data: "{}" });
  const realNow = Date.now;
  Date.now = () => 1_700_000_000_123;
  try {
    const fromSdk = api.createSignedQueryString({
      method: "POST", path: `/apps/${APP.id}/events`, body, params: { info: "subscription_count" },
    });
    const ours = signQuery({
      method: "POST", path: `/apps/${APP.id}/events`, body, params: { info: "subscription_count" },
      timestamp: 1_700_000_000,
    });
    assert.equal(ours, fromSdk);
  } finally {
    Date.now = realNow;
  }
});

test("harness: the SDK sends signed requests to the configured host and port", async () => {
  // A stand-in server captures what the SDK sends; signQuery must reproduce its signature.
  const seen = new Log("requests");
  const stub = http.createServer((req, res) => {
    let body = "";
    req.on("data", (c) => (body += c));
    req.on("end", () => {
      seen.push({ method: req.method, url: req.url, body });
      res.writeHead(200, { "Content-Type": "application/json" });
      res.end("{}");
    });
  });
  await new Promise((r) => stub.listen(0, "127.0.0.1", r));
  try {
    const api = new PusherSDK({
      appId: APP.id, key: APP.key, secret: APP.secret,
      host: "127.0.0.1", port: String(stub.address().port), useTLS: false,
    });
    const res = await api.trigger("news", "greet", { a: 1 });
    assert.equal(res.status, 200);
    const req = await seen.wait(() => true, "the SDK's request");
    const url = new URL(req.url, "http://x");
    assert.equal(req.method, "POST");
    assert.equal(url.pathname, `/apps/${APP.id}/events`);
    assert.deepEqual(JSON.parse(req.body), { name: "greet", data: '{"a":1}', channels: ["news"] });
    const expected = signQuery({
      method: "POST", path: url.pathname, body: req.body,
      timestamp: url.searchParams.get("auth_timestamp"),
    });
    assert.equal(url.searchParams.get("auth_signature"),
      new URLSearchParams(expected).get("auth_signature"));
  } finally {
    stub.close();
  }
});

test("harness: the webhook receiver records a signed POST that the SDK's webhook() validates", async () => {
  const receiver = await webhookReceiver();
  try {
    const body = JSON.stringify({ time_ms: Date.now(), events: [{ name: "channel_occupied", channel: "x" }] });
    const res = await fetch(receiver.url, {
      method: "POST",
      body,
      headers: {
        "Content-Type": "application/json",
        "X-Pusher-Key": APP.key,
        "X-Pusher-Signature": hmacHex(APP.secret, body),
      },
    });
    assert.equal(res.status, 200);
    const ev = await receiver.events.wait((e) => e.name === "channel_occupied", "the event");
    assert.equal(ev.channel, "x");
    assert.equal(ev.request.rawBody, body);
    const api = new PusherSDK({ appId: APP.id, key: APP.key, secret: APP.secret });
    assert.equal(api.webhook({ headers: ev.request.headers, rawBody: ev.request.rawBody }).isValid(), true);
    const forged = { ...ev.request.headers, "x-pusher-signature": hmacHex("other", body) };
    assert.equal(api.webhook({ headers: forged, rawBody: ev.request.rawBody }).isValid(), false);
  } finally {
    await receiver.close();
  }
});

test("harness: until wakes on a push and times out with its description", async () => {
  const log = new Log("log");
  setImmediate(() => log.push(7));
  assert.equal(await log.wait((x) => x === 7, "seven"), 7);
  await assert.rejects(until(() => false, 50, () => "nothing"), /timed out after 50 ms waiting for nothing/);
});

test("harness: rawSocket rejects a refused upgrade with its HTTP status", async () => {
  const stub = http.createServer((req, res) => {
    res.writeHead(404, { "Content-Type": "text/plain" });
    res.end("no");
  });
  await new Promise((r) => stub.listen(0, "127.0.0.1", r));
  try {
    await assert.rejects(rawSocket(`ws://127.0.0.1:${stub.address().port}/app/x`), /HTTP 404/);
  } finally {
    stub.close();
  }
});
