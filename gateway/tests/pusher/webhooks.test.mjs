// Webhooks: the app's webhook_url receives signed, batched POSTs of channel_occupied,
// channel_vacated, member_added, member_removed, client_event and cache_miss. Batches may take
// about a second, so every wait here allows a few seconds.

import { after, afterEach, before, test } from "node:test";
import assert from "node:assert/strict";
import {
  assertSpeaksPusher, channelAuthorizer, closeAllClients, hmacHex, pusherClient, pusherSocket,
  sdk, show, startFanout, subscribed, webhookReceiver,
} from "./helpers.mjs";

const HOOK_WAIT = 5000;
const ALL = ["channel_occupied", "channel_vacated", "member_added", "member_removed", "client_event", "cache_miss"];

let receiver, onlyVacated, server, APP, VACATED_APP, api;

before(async () => {
  receiver = await webhookReceiver();
  onlyVacated = await webhookReceiver();
  APP = { id: "6001", key: "hook-key", secret: "hook-secret", webhook_url: receiver.url, webhook_events: ALL };
  VACATED_APP = {
    id: "6002", key: "vacated-key", secret: "vacated-secret",
    webhook_url: onlyVacated.url, webhook_events: ["channel_vacated"],
  };
  server = await startFanout({ apps: [APP, VACATED_APP] });
  await assertSpeaksPusher(server, APP);
  api = sdk(server, APP);
});
afterEach(() => closeAllClients());
after(async () => {
  await server?.stop();
  await receiver?.close();
  await onlyVacated?.close();
});

const hook = (pred, what, r = receiver) => r.events.wait(pred, what, HOOK_WAIT);

const client = (user) => pusherClient(server, {
  key: APP.key, channelAuthorization: { customHandler: channelAuthorizer(api, user) },
});

test("channel_occupied on the first subscribe, in a signed JSON POST with time_ms", async () => {
  await subscribed(client(), "hooked");
  const ev = await hook((e) => e.name === "channel_occupied" && e.channel === "hooked", "channel_occupied for hooked");
  const req = ev.request;
  assert.equal(req.method, "POST");
  assert.equal(req.path, "/hook");
  assert.match(req.headers["content-type"], /^application\/json/);
  assert.equal(req.headers["x-pusher-key"], APP.key);
  assert.equal(req.headers["x-pusher-signature"], hmacHex(APP.secret, req.rawBody), "X-Pusher-Signature");
  assert.ok(Number.isInteger(req.json.time_ms), `time_ms: ${show(req.json)}`);
  assert.ok(Math.abs(req.json.time_ms - Date.now()) < 60_000, `time_ms is now in ms: ${req.json.time_ms}`);
  assert.ok(Array.isArray(req.json.events));
  // The SDK's own check agrees (it wants the content type exactly application/json).
  const headers = { ...req.headers, "content-type": "application/json" };
  assert.equal(api.webhook({ headers, rawBody: req.rawBody }).isValid(), true);
});

test("channel_vacated when the last connection drops without unsubscribing", async () => {
  const a = await pusherSocket(server, APP.key);
  const b = await pusherSocket(server, APP.key);
  for (const s of [a, b]) {
    s.emit("pusher:subscribe", { channel: "dropped" });
    await s.waitEvent("pusher_internal:subscription_succeeded");
  }
  await hook((e) => e.name === "channel_occupied" && e.channel === "dropped", "channel_occupied for dropped");
  a.terminate();
  b.terminate();
  const vacated = await hook((e) => e.name === "channel_vacated" && e.channel === "dropped", "channel_vacated");
  assert.equal(receiver.events.count((e) => e.name === "channel_vacated" && e.channel === "dropped"), 1);
  assert.equal(receiver.events.count((e) => e.name === "channel_occupied" && e.channel === "dropped"), 1,
    `occupied once for two subscribers: ${show(receiver.events.items.map((e) => [e.name, e.channel]))}`);
  assert.ok(vacated.request.json.time_ms >= 0);
});

test("channel_vacated on the last unsubscribe", async () => {
  const c = client();
  await subscribed(c, "unsub-hook");
  await hook((e) => e.name === "channel_occupied" && e.channel === "unsub-hook", "channel_occupied");
  c.unsubscribe("unsub-hook");
  await hook((e) => e.name === "channel_vacated" && e.channel === "unsub-hook", "channel_vacated");
});

test("member_added and member_removed carry the channel and user_id, once per user", async () => {
  const first = client({ id: "hook-user" });
  const second = client({ id: "hook-user" });
  await subscribed(first, "presence-hooks");
  await subscribed(second, "presence-hooks");
  const added = await hook((e) => e.name === "member_added" && e.channel === "presence-hooks", "member_added");
  assert.equal(added.user_id, "hook-user");
  first.disconnect();
  second.disconnect();
  const removed = await hook((e) => e.name === "member_removed" && e.channel === "presence-hooks", "member_removed");
  assert.equal(removed.user_id, "hook-user");
  await hook((e) => e.name === "channel_vacated" && e.channel === "presence-hooks", "channel_vacated");
  assert.equal(receiver.events.count((e) => e.name === "member_added" && e.channel === "presence-hooks"), 1,
    "member_added once for a user with two connections");
});

test("client_event: channel, event, data, socket_id, and user_id on presence channels", async () => {
  const name = "presence-talk";
  const a = client({ id: "talker" });
  const b = client({ id: "hearer" });
  const ch = await subscribed(a, name);
  await subscribed(b, name);
  ch.trigger("client-said", { words: "hello" });
  const ev = await hook((e) => e.name === "client_event" && e.channel === name, "client_event");
  assert.equal(ev.event, "client-said");
  assert.deepEqual(typeof ev.data === "string" ? JSON.parse(ev.data) : ev.data, { words: "hello" });
  assert.equal(ev.socket_id, a.connection.socket_id);
  assert.equal(ev.user_id, "talker");
});

test("cache_miss when a cache channel is subscribed with nothing cached", async () => {
  const sock = await pusherSocket(server, APP.key);
  sock.emit("pusher:subscribe", { channel: "cache-hooked" });
  await sock.waitEvent("pusher:cache_miss");
  await hook((e) => e.name === "cache_miss" && e.channel === "cache-hooked", "cache_miss");
});

test("webhook_events limits what is sent: an app listing only channel_vacated gets nothing else", async () => {
  const vapi = sdk(server, VACATED_APP);
  const c = pusherClient(server, {
    key: VACATED_APP.key, channelAuthorization: { customHandler: channelAuthorizer(vapi, { id: "v" }) },
  });
  await subscribed(c, "presence-filtered");
  c.disconnect();
  await hook((e) => e.name === "channel_vacated" && e.channel === "presence-filtered", "channel_vacated", onlyVacated);
  // Everything else happened before the vacate, so it would be in this batch or an earlier one.
  assert.deepEqual(onlyVacated.events.items.map((e) => e.name), ["channel_vacated"]);
  for (const r of onlyVacated.requests.items) {
    assert.equal(r.headers["x-pusher-key"], VACATED_APP.key);
    assert.equal(r.headers["x-pusher-signature"], hmacHex(VACATED_APP.secret, r.rawBody));
  }
  // And none of its events reached the other app's receiver.
  assert.equal(receiver.events.count((e) => e.channel === "presence-filtered"), 0);
});
