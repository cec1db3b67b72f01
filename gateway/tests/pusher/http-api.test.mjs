// The HTTP API through the Pusher server SDK: trigger (one channel, many, excluding a socket, with
// info), triggerBatch, channel queries, and the errors: signatures, timestamps, limits, unknown app.

import { after, afterEach, before, test } from "node:test";
import assert from "node:assert/strict";
import {
  APP, assertSpeaksPusher, channelAuthorizer, closeAllClients, pusherClient, pusherSocket,
  rejection, sdk, show, signQuery, signedRequest, startFanout, subscribed,
} from "./helpers.mjs";

let server, api;

before(async () => {
  server = await startFanout();
  await assertSpeaksPusher(server);
  api = sdk(server);
});
afterEach(() => closeAllClients());
after(() => server?.stop());

const authed = (user) =>
  pusherClient(server, { channelAuthorization: { customHandler: channelAuthorizer(api, user) } });

/** A 4xx the SDK rejected: its RequestError carries the status and body. */
function assertRequestError(err, status, what) {
  assert.equal(err.status, status, `${what}: ${show({ message: err.message, status: err.status, body: err.body })}`);
  assert.equal(typeof err.body, "string");
}

test("trigger to one channel answers 200 with a JSON object", async () => {
  const res = await api.trigger("api-one", "ev", { a: 1 });
  assert.equal(res.status, 200);
  assert.equal(typeof (await res.json()), "object");
});

test("trigger to 100 channels reaches the subscribers of each", async () => {
  const names = Array.from({ length: 100 }, (_, i) => `fan-${i}`);
  const sock = await pusherSocket(server);
  const watched = ["fan-0", "fan-42", "fan-99"];
  for (const channel of watched) sock.emit("pusher:subscribe", { channel });
  for (const channel of watched) {
    await sock.waitEvent("pusher_internal:subscription_succeeded", (j) => j.channel === channel);
  }
  const res = await api.trigger(names, "wide", { n: 100 });
  assert.equal(res.status, 200);
  for (const channel of watched) await sock.waitEvent("wide", (j) => j.channel === channel, `wide on ${channel}`);
});

test("a raw trigger with `channel` (one name) instead of `channels` is delivered", async () => {
  const client = pusherClient(server);
  const ch = await subscribed(client, "singular");
  const res = await signedRequest(server, {
    path: `/apps/${APP.id}/events`, body: { name: "one", data: '{"s":1}', channel: "singular" },
  });
  assert.equal(res.status, 200, res.text);
  assert.deepEqual((await ch.rec.wait((e) => e.event === "one", "the event")).data, { s: 1 });
});

test("trigger with socket_id skips that connection only", async () => {
  const sender = pusherClient(server);
  const other = pusherClient(server);
  const s = await subscribed(sender, "excl");
  const o = await subscribed(other, "excl");
  await api.trigger("excl", "echo", { n: 1 }, { socket_id: sender.connection.socket_id });
  await o.rec.wait((e) => e.event === "echo", "the other's copy");
  await api.trigger("excl", "marker", {});
  await s.rec.wait((e) => e.event === "marker", "the sender's marker");
  assert.equal(s.rec.count((e) => e.event === "echo"), 0, "the excluded socket got the event");
});

test("trigger with info returns subscription_count and user_count per channel", async () => {
  await subscribed(pusherClient(server), "info-public");
  await subscribed(pusherClient(server), "info-public");
  await subscribed(authed({ id: "p1" }), "presence-info");
  await subscribed(authed({ id: "p2" }), "presence-info");
  await subscribed(authed({ id: "p2" }), "presence-info");
  const res = await api.trigger(["info-public", "presence-info"], "ev", {}, { info: "subscription_count,user_count" });
  assert.equal(res.status, 200);
  const body = await res.json();
  assert.equal(body.channels["info-public"].subscription_count, 2, show(body));
  assert.equal(body.channels["presence-info"].subscription_count, 3, show(body));
  assert.equal(body.channels["presence-info"].user_count, 2, show(body));
});

test("triggerBatch delivers each of 10 events to its channel, in order per channel", async () => {
  const sock = await pusherSocket(server);
  for (const channel of ["batch-a", "batch-b"]) {
    sock.emit("pusher:subscribe", { channel });
    await sock.waitEvent("pusher_internal:subscription_succeeded", (j) => j.channel === channel);
  }
  const batch = Array.from({ length: 10 }, (_, i) => ({
    channel: i % 2 ? "batch-b" : "batch-a", name: "step", data: { i },
  }));
  const res = await api.triggerBatch(batch);
  assert.equal(res.status, 200);
  const got = await sock.messages.waitCount((m) => m.json?.event === "step", 10, "the 10 batched events");
  for (const channel of ["batch-a", "batch-b"]) {
    const seq = got.filter((m) => m.json.channel === channel).map((m) => JSON.parse(m.json.data).i);
    assert.deepEqual(seq, channel === "batch-a" ? [0, 2, 4, 6, 8] : [1, 3, 5, 7, 9]);
  }
});

test("triggerBatch with socket_id per event excludes that socket", async () => {
  const a = pusherClient(server);
  const b = pusherClient(server);
  const chA = await subscribed(a, "batch-excl");
  const chB = await subscribed(b, "batch-excl");
  await api.triggerBatch([
    { channel: "batch-excl", name: "not-for-a", data: {}, socket_id: a.connection.socket_id },
    { channel: "batch-excl", name: "for-all", data: {} },
  ]);
  await chB.rec.waitCount((e) => e.event === "not-for-a" || e.event === "for-all", 2, "both on b");
  await chA.rec.wait((e) => e.event === "for-all", "for-all on a");
  assert.equal(chA.rec.count((e) => e.event === "not-for-a"), 0);
});

test("GET /channels lists occupied channels, filtered by prefix, with user_count for presence", async () => {
  await subscribed(pusherClient(server), "list-public");
  await subscribed(authed({ id: "l1" }), "presence-list");
  await subscribed(authed({ id: "l2" }), "presence-list");
  await subscribed(authed({ id: "l2" }), "presence-list");

  const all = await (await api.get({ path: "/channels" })).json();
  assert.ok(all.channels["list-public"], show(all));
  assert.ok(all.channels["presence-list"], show(all));
  assert.ok(!all.channels["never-subscribed"], show(all));

  const presence = await (await api.get({
    path: "/channels", params: { filter_by_prefix: "presence-", info: "user_count" },
  })).json();
  assert.equal(presence.channels["presence-list"].user_count, 2, show(presence));
  assert.ok(!presence.channels["list-public"], "filter_by_prefix left a public channel in");

  const both = await api.get({
    path: "/channels", params: { filter_by_prefix: "presence-list", info: "user_count,subscription_count" },
  });
  assert.equal(both.status, 200);
  assert.equal((await both.json()).channels["presence-list"].user_count, 2);
});

test("GET /channels/NAME: occupied, subscription_count, user_count; an empty channel is not occupied", async () => {
  await subscribed(authed({ id: "c1" }), "presence-one");
  await subscribed(authed({ id: "c1" }), "presence-one");
  const res = await api.get({ path: "/channels/presence-one", params: { info: "user_count,subscription_count" } });
  const body = await res.json();
  assert.equal(body.occupied, true, show(body));
  assert.equal(body.user_count, 1, show(body));
  assert.equal(body.subscription_count, 2, show(body));

  const empty = await (await api.get({ path: "/channels/nobody-here" })).json();
  assert.equal(empty.occupied, false, show(empty));
});

test("GET /channels/presence-x/users lists each user once", async () => {
  await subscribed(authed({ id: "x1" }), "presence-x");
  await subscribed(authed({ id: "x2" }), "presence-x");
  await subscribed(authed({ id: "x2" }), "presence-x");
  const body = await (await api.get({ path: "/channels/presence-x/users" })).json();
  assert.deepEqual(body.users.map((u) => u.id).sort(), ["x1", "x2"], show(body));
});

// -- errors -----------------------------------------------------------------------------------

test("a tampered signature gets 401, and the SDK with a wrong secret is rejected with 401", async () => {
  const path = `/apps/${APP.id}/events`;
  const body = { name: "ev", data: "{}", channels: ["sig"] };
  const good = await signedRequest(server, { path, body });
  assert.equal(good.status, 200, `the untampered request: ${good.text}`);
  const flipped = await signedRequest(server, {
    path, body, tamper: (q) => q.replace(/auth_signature=(.)/, (_, c) => `auth_signature=${c === "a" ? "b" : "a"}`),
  });
  assert.equal(flipped.status, 401, flipped.text);
  const otherParam = await signedRequest(server, { path, body, tamper: (q) => `${q}&extra=1` });
  assert.equal(otherParam.status, 401, `an unsigned parameter added: ${otherParam.text}`);
  const err = await rejection(sdk(server, { ...APP, secret: "wrong" }).trigger("sig", "ev", {}), "wrong secret");
  assertRequestError(err, 401, "wrong secret");
});

test("a body that does not match body_md5 gets 401", async () => {
  const path = `/apps/${APP.id}/events`;
  const signedBody = JSON.stringify({ name: "ev", data: "{}", channels: ["md5"] });
  const query = signQuery({ method: "POST", path, body: signedBody });
  const res = await fetch(`${server.http}${path}?${query}`, {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ name: "ev", data: "{}", channels: ["md5-other"] }),
  });
  assert.equal(res.status, 401, await res.text());
});

test("a timestamp 601 s old or 601 s ahead gets 401; 10 s old is fine", async () => {
  const path = `/apps/${APP.id}/events`;
  const body = { name: "ev", data: "{}", channels: ["ts"] };
  const now = Math.floor(Date.now() / 1000);
  const stale = await signedRequest(server, { path, body, timestamp: now - 601 });
  assert.equal(stale.status, 401, `601 s old: ${stale.text}`);
  const ahead = await signedRequest(server, { path, body, timestamp: now + 601 });
  assert.equal(ahead.status, 401, `601 s ahead: ${ahead.text}`);
  const fresh = await signedRequest(server, { path, body, timestamp: now - 10 });
  assert.equal(fresh.status, 200, `10 s old: ${fresh.text}`);
  // The SDK with a clock 601 s slow: it signs synchronously, so the clock is put back at once.
  const realNow = Date.now;
  Date.now = () => realNow() - 601_000;
  let pending;
  try {
    pending = api.trigger("ts", "ev", {});
  } finally {
    Date.now = realNow;
  }
  assertRequestError(await rejection(pending, "a slow clock"), 401, "the SDK with a clock 601 s slow");
});

test("a GET with a signature over other query parameters gets 401", async () => {
  const res = await signedRequest(server, {
    method: "GET", path: `/apps/${APP.id}/channels`, params: { filter_by_prefix: "presence-" },
    tamper: (q) => q.replace("filter_by_prefix=presence-", "filter_by_prefix=private-"),
  });
  assert.equal(res.status, 401, res.text);
});

test("more than 100 channels in one trigger gets 400", async () => {
  const channels = Array.from({ length: 101 }, (_, i) => `c${i}`);
  const res = await signedRequest(server, { path: `/apps/${APP.id}/events`, body: { name: "ev", data: "{}", channels } });
  assert.equal(res.status, 400, res.text);
  // The SDK refuses before sending.
  assert.throws(() => api.trigger(channels, "ev", {}), /100 channels/);
});

test("more than 10 events in one batch gets 400", async () => {
  const batch = Array.from({ length: 11 }, (_, i) => ({ channel: `b${i}`, name: "ev", data: {} }));
  const err = await rejection(api.triggerBatch(batch), "11 batched events");
  assertRequestError(err, 400, "11 batched events");
});

test("event data over the size limit (10240 bytes by default) gets 413; 10240 bytes are accepted", async () => {
  const err = await rejection(api.trigger("big", "ev", "x".repeat(10_241)), "10241 bytes of data");
  assertRequestError(err, 413, "10241 bytes of data");
  const ok = await api.trigger("big", "ev", "x".repeat(10_240));
  assert.equal(ok.status, 200, "10240 bytes of data");
  const batchErr = await rejection(api.triggerBatch([{ channel: "big", name: "ev", data: "y".repeat(10_241) }]),
    "a batched event of 10241 bytes");
  assertRequestError(batchErr, 413, "a batched event of 10241 bytes");
});

test("an unknown app id gets 404", async () => {
  const err = await rejection(sdk(server, { ...APP, id: "999999" }).trigger("x", "ev", {}), "unknown app id");
  assertRequestError(err, 404, "unknown app id");
});

test("a malformed trigger body gets 400", async () => {
  const path = `/apps/${APP.id}/events`;
  const noName = await signedRequest(server, { path, body: { data: "{}", channels: ["x"] } });
  assert.equal(noName.status, 400, `no name: ${noName.text}`);
  const notJson = await signedRequest(server, { path, body: "{not json" });
  assert.equal(notJson.status, 400, `not JSON: ${notJson.text}`);
});
