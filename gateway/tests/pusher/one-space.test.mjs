// One channel space: a publish through fanout's own protocol (HTTP /api/publish or the fanout.v1
// WebSocket) reaches pusher-js subscribers, and a Pusher trigger reaches fanout.v1 clients.

import { after, afterEach, before, test } from "node:test";
import assert from "node:assert/strict";
import {
  assertSpeaksPusher, closeAllClients, pusherClient, rawSocket, sdk, startFanout, subscribed,
} from "./helpers.mjs";

let server, api;

before(async () => {
  server = await startFanout();
  await assertSpeaksPusher(server);
  api = sdk(server);
});
afterEach(() => closeAllClients());
after(() => server?.stop());

/** POST /api/publish, anonymous on loopback (no --api-key). */
async function publish(body) {
  const res = await fetch(`${server.http}/api/publish`, {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify(body),
  });
  const text = await res.text();
  assert.equal(res.status, 200, `/api/publish answered ${res.status} ${text}`);
  return JSON.parse(text);
}

/** A fanout.v1 client subscribed to `channel`. */
async function nativeClient(channel) {
  const sock = await rawSocket(`${server.ws}/`, { protocols: ["fanout.v1"] });
  assert.equal(sock.ws.protocol, "fanout.v1");
  sock.send({ op: "subscribe", channel });
  await sock.messages.wait((m) => m.json?.op === "subscribed" && m.json.channel === channel, "subscribed");
  return sock;
}

test("/api/publish with an event reaches a pusher-js subscriber as that event, data parsed", async () => {
  const client = pusherClient(server);
  const news = await subscribed(client, "news");
  const { seq } = await publish({ channel: "news", event: "greet", data: { a: 1 } });
  assert.ok(Number.isInteger(seq));
  const got = await news.rec.wait((e) => e.event === "greet", "greet");
  assert.deepEqual(got.data, { a: 1 });
  // On the wire pusher-js got a Pusher event on the channel (data a JSON string, parsed by pusher-js).
  const wire = client.rec.messages.find((m) => m.event === "greet");
  assert.equal(wire.channel, "news");
});

test("/api/publish without an event arrives as event 'message'", async () => {
  const news = await subscribed(pusherClient(server), "news-default");
  await publish({ channel: "news-default", data: { text: "hello" } });
  assert.deepEqual((await news.rec.wait((e) => e.event === "message", "message")).data, { text: "hello" });
});

test("a Pusher trigger reaches a fanout.v1 client as op message with seq, event and data", async () => {
  const sock = await nativeClient("news-native");
  await api.trigger("news-native", "ev", { b: 2 });
  const m = await sock.messages.wait((x) => x.json?.op === "message", "op message");
  assert.equal(m.json.channel, "news-native");
  assert.ok(Number.isInteger(m.json.seq) && m.json.seq >= 1, `seq: ${m.text}`);
  assert.equal(m.json.event, "ev");
  assert.deepEqual(m.json.data, { b: 2 });
});

test("seq counts publishes from both protocols on one channel", async () => {
  const sock = await nativeClient("news-seq");
  const first = await publish({ channel: "news-seq", data: { n: 1 } });
  await api.trigger("news-seq", "ev", { n: 2 });
  const third = await publish({ channel: "news-seq", event: "x", data: { n: 3 } });
  const got = await sock.messages.waitCount((x) => x.json?.op === "message", 3, "three messages");
  assert.deepEqual(got.map((m) => m.json.data.n), [1, 2, 3]);
  assert.deepEqual(got.map((m) => m.json.seq), [first.seq, first.seq + 1, first.seq + 2]);
  assert.equal(third.seq, first.seq + 2);
});

test("a fanout.v1 publish reaches pusher-js as event 'message'", async () => {
  const room = await subscribed(pusherClient(server), "chat-native");
  const sock = await nativeClient("chat-native");
  sock.send({ op: "publish", channel: "chat-native", data: { text: "from native" }, id: 1 });
  await sock.messages.wait((m) => m.json?.op === "ack" && m.json.id === 1, "the ack");
  assert.deepEqual((await room.rec.wait((e) => e.event === "message", "message")).data, { text: "from native" });
});
