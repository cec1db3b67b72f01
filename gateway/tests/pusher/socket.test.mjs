// The connection and public channels (protocol 7): handshake, ping, subscribe, unsubscribe, and
// events triggered through the HTTP API, seen both on the wire (raw WebSocket) and through pusher-js.

import { after, afterEach, before, test } from "node:test";
import assert from "node:assert/strict";
import {
  assertSpeaksPusher, closeAllClients, connected, dataOf, pusherClient, pusherSocket,
  sdk, startFanout, subscribed,
} from "./helpers.mjs";

const SOCKET_ID = /^\d+\.\d+$/;
let server, api;

before(async () => {
  server = await startFanout();
  await assertSpeaksPusher(server);
  api = sdk(server);
});
afterEach(() => closeAllClients());
after(() => server?.stop());

test("connection_established: data is a JSON string with socket_id \\d+.\\d+ and activity_timeout", async () => {
  const sock = await pusherSocket(server);
  const msg = sock.messages.items[0];
  assert.equal(msg.json.event, "pusher:connection_established", "the first message");
  assert.equal(typeof msg.json.data, "string", "data is a JSON-encoded string");
  const data = JSON.parse(msg.json.data);
  assert.match(data.socket_id, SOCKET_ID);
  assert.ok(Number.isInteger(data.activity_timeout) && data.activity_timeout > 0,
    `activity_timeout is a positive integer of seconds: ${msg.json.data}`);
});

test("each connection gets its own socket_id", async () => {
  const ids = new Set();
  for (let i = 0; i < 5; i++) ids.add((await pusherSocket(server)).socketId);
  assert.equal(ids.size, 5, `socket ids: ${[...ids]}`);
});

test("pusher:ping is answered with pusher:pong", async () => {
  const sock = await pusherSocket(server);
  sock.emit("pusher:ping", {});
  const pong = await sock.waitEvent("pusher:pong");
  if (pong.json.data !== undefined) assert.equal(typeof pong.json.data, "string", "data is a JSON string");
  assert.equal(sock.closed, null);
});

test("raw subscribe to a public channel: pusher_internal:subscription_succeeded with the channel", async () => {
  const sock = await pusherSocket(server);
  sock.emit("pusher:subscribe", { channel: "raw-public" });
  const ok = await sock.waitEvent("pusher_internal:subscription_succeeded");
  assert.equal(ok.json.channel, "raw-public");
  assert.equal(typeof ok.json.data, "string", "data is a JSON-encoded string");
});

test("pusher-js connects and reports a socket_id", async () => {
  const client = pusherClient(server);
  await connected(client);
  assert.match(client.connection.socket_id, SOCKET_ID);
  assert.deepEqual(client.rec.errors.items, []);
});

test("an SDK trigger reaches the subscribers of that channel, with its data parsed by pusher-js", async () => {
  const a = pusherClient(server);
  const b = pusherClient(server);
  const newsA = await subscribed(a, "news");
  const sportsB = await subscribed(b, "sports");
  const res = await api.trigger("news", "greet", { a: 1, text: "héllo" });
  assert.equal(res.status, 200);
  const got = await newsA.rec.wait((e) => e.event === "greet", "greet on news");
  assert.deepEqual(got.data, { a: 1, text: "héllo" });
  // b is on another channel: a marker on its channel, sent after, arrives with nothing before it.
  await api.trigger("sports", "marker", {});
  await sportsB.rec.wait((e) => e.event === "marker", "the marker");
  assert.equal(b.rec.messages.count((m) => m.event === "greet"), 0, "b is not subscribed to news");
});

test("the data string of a trigger is forwarded byte for byte", async () => {
  const sock = await pusherSocket(server);
  sock.emit("pusher:subscribe", { channel: "bytes" });
  await sock.waitEvent("pusher_internal:subscription_succeeded");
  const data = '{"z": 1,   "a": [1, 2.50, "\\u00e9"], "n": null}';
  await api.trigger("bytes", "raw", data); // the SDK sends a string as it is
  const msg = await sock.waitEvent("raw");
  assert.equal(msg.json.channel, "bytes");
  assert.equal(msg.json.data, data);
});

test("a non-JSON data string arrives as it was sent", async () => {
  const client = pusherClient(server);
  const ch = await subscribed(client, "plain");
  await api.trigger("plain", "text", "just words");
  const got = await ch.rec.wait((e) => e.event === "text", "the text event");
  assert.equal(got.data, "just words");
});

test("after unsubscribe, events of that channel no longer arrive", async () => {
  const client = pusherClient(server);
  const witness = pusherClient(server);
  await subscribed(client, "leaving");
  const w = await subscribed(witness, "leaving");
  const stays = await subscribed(client, "staying");
  client.unsubscribe("leaving");
  // Subscribing again on the same connection orders the server's work after the unsubscribe.
  await subscribed(client, "sync-after-unsubscribe");
  await api.trigger("leaving", "gone", { n: 1 });
  await w.rec.wait((e) => e.event === "gone", "the witness's copy");
  await api.trigger("staying", "marker", {});
  await stays.rec.wait((e) => e.event === "marker", "the marker on a channel still subscribed");
  assert.equal(client.rec.messages.count((m) => m.event === "gone"), 0,
    "an unsubscribed channel's event was delivered");
});

test("a channel can be subscribed again after unsubscribing", async () => {
  const client = pusherClient(server);
  await subscribed(client, "again");
  client.unsubscribe("again");
  const ch = await subscribed(client, "again");
  await api.trigger("again", "back", { ok: true });
  assert.deepEqual((await ch.rec.wait((e) => e.event === "back", "back")).data, { ok: true });
});

test("one connection on many channels gets each event once, on its channel", async () => {
  const sock = await pusherSocket(server);
  const names = ["m-1", "m-2", "m-3"];
  for (const channel of names) sock.emit("pusher:subscribe", { channel });
  for (const channel of names) {
    await sock.waitEvent("pusher_internal:subscription_succeeded", (j) => j.channel === channel);
  }
  await api.trigger(names, "multi", { x: 1 });
  for (const channel of names) {
    const m = await sock.waitEvent("multi", (j) => j.channel === channel, `multi on ${channel}`);
    assert.deepEqual(dataOf(m), { x: 1 });
  }
  await api.trigger("m-1", "marker", {});
  await sock.waitEvent("marker");
  assert.equal(sock.messages.count((m) => m.json?.event === "multi"), 3);
});
