// Channel types with the real clients: private (signatures), presence (members), private-encrypted
// (payloads passed through unread), cache (the last event replayed), and client events.

import { after, afterEach, before, test } from "node:test";
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import {
  APP, assertSpeaksPusher, channelAuthorizer, closeAllClients, connected, dataOf, poll,
  pusherClient, pusherSocket, record, sdk, show, startFanout, subscribed, until, WAIT,
} from "./helpers.mjs";

let server, api;
const MASTER_KEY = randomBytes(32).toString("base64");

before(async () => {
  server = await startFanout();
  await assertSpeaksPusher(server);
  api = sdk(server, APP, { encryptionMasterKeyBase64: MASTER_KEY });
});
afterEach(() => closeAllClients());
after(() => server?.stop());

/** A pusher-js client whose channel authorization is signed by the SDK, as `user` on presence. */
function authed(user = null, api_ = api) {
  return pusherClient(server, { channelAuthorization: { customHandler: channelAuthorizer(api_, user) } });
}

/**
 * Waits for the server to refuse a subscription, in either of the two forms pusher-js exposes:
 * `pusher:subscription_error` on the channel, or a connection `error` (pusher:error) with a
 * 4xxx code. Returns a description of the one seen.
 */
async function refused(client, channel, what) {
  const start = client.rec.errors.items.length;
  const got = await until(() => {
    const subErr = channel.rec.find((e) => e.event === "pusher:subscription_error");
    if (subErr) return { form: "pusher:subscription_error", data: subErr.data };
    const connErr = client.rec.errors.items.slice(start).find((e) => e.type === "PusherError");
    if (connErr) return { form: "pusher:error", data: connErr.data };
    return null;
  }, WAIT, () => `${what}: a pusher:subscription_error on ${channel.name} or a pusher:error; ` +
    `channel events ${show(channel.rec.items)}, errors ${show(client.rec.errors.items)}`);
  assert.equal(channel.rec.count((e) => e.event === "pusher:subscription_succeeded"), 0,
    `${what}: the subscription succeeded`);
  return got;
}

// -- private channels -------------------------------------------------------------------------

test("private: a subscription signed by the SDK succeeds and receives triggers", async () => {
  const client = authed();
  const ch = await subscribed(client, "private-orders");
  await api.trigger("private-orders", "shipped", { id: 1 });
  assert.deepEqual((await ch.rec.wait((e) => e.event === "shipped", "shipped")).data, { id: 1 });
});

test("private: a bad signature is refused, pusher-js reports it, and the connection stays usable", async () => {
  const wrong = sdk(server, { ...APP, secret: "not-the-secret" });
  const client = authed(null, wrong);
  await connected(client);
  const ch = record(client.subscribe("private-vault"));
  const how = await refused(client, ch, "a subscription signed with the wrong secret");
  if (how.form === "pusher:error") assert.equal(how.data.code, 4009, `pusher:error ${show(how.data)}`);
  // Nothing of the channel is delivered, and the connection still works for public channels.
  const open = await subscribed(client, "public-after-refusal");
  await api.trigger("private-vault", "secret", { no: 1 });
  await api.trigger("public-after-refusal", "marker", {});
  await open.rec.wait((e) => e.event === "marker", "the marker");
  assert.equal(client.rec.messages.count((m) => m.event === "secret"), 0, "a refused channel's event arrived");
  assert.equal(client.connection.state, "connected");
});

test("private: a subscribe without auth, or signed for another socket, is refused on the wire", async () => {
  const sock = await pusherSocket(server);
  const other = await pusherSocket(server);
  sock.emit("pusher:subscribe", { channel: "private-noauth" });
  const stolen = api.authorizeChannel(other.socketId, "private-stolen").auth;
  sock.emit("pusher:subscribe", { channel: "private-stolen", auth: stolen });
  const malformed = `${APP.key}:zz`;
  sock.emit("pusher:subscribe", { channel: "private-malformed", auth: malformed });
  sock.emit("pusher:subscribe", { channel: "private-wrongkey", auth: `other-key:${api.authorizeChannel(sock.socketId, "private-wrongkey").auth.split(":")[1]}` });
  // Ordering marker: a public subscribe after the four refused ones.
  sock.emit("pusher:subscribe", { channel: "public-marker" });
  await sock.waitEvent("pusher_internal:subscription_succeeded", (j) => j.channel === "public-marker");
  const errors = sock.messages.filter((m) =>
    m.json?.event === "pusher:subscription_error" || m.json?.event === "pusher:error");
  assert.equal(errors.length, 4, `one error per refused subscribe: ${show(sock.messages.items.map((m) => m.text))}`);
  assert.equal(sock.messages.count((m) => m.json?.event === "pusher_internal:subscription_succeeded"), 1);
  assert.equal(sock.closed, null, "the connection stays open");
});

test("private: channel names with dots and the characters Laravel uses are accepted", async () => {
  const client = authed();
  const ch = await subscribed(client, "private-App.Models.User.17");
  await api.trigger("private-App.Models.User.17", "App\\Events\\Ping", { n: 17 });
  const got = await ch.rec.wait((e) => e.event === "App\\Events\\Ping", "the namespaced event");
  assert.deepEqual(got.data, { n: 17 });
});

// -- presence channels ------------------------------------------------------------------------

test("presence: subscription_succeeded carries ids, hash and count; others get member_added, not the joiner", async () => {
  const alice = authed({ id: "alice", info: { name: "Alice" } });
  const a = await subscribed(alice, "presence-room");
  assert.equal(a.members.count, 1);
  assert.deepEqual(a.members.me, { id: "alice", info: { name: "Alice" } });

  // Bob joins on the wire, to see the exact payload.
  const bob = await pusherSocket(server);
  const auth = api.authorizeChannel(bob.socketId, "presence-room", { user_id: "bob", user_info: { name: "Bob" } });
  bob.emit("pusher:subscribe", { channel: "presence-room", auth: auth.auth, channel_data: auth.channel_data });
  const ok = await bob.waitEvent("pusher_internal:subscription_succeeded");
  assert.equal(typeof ok.json.data, "string", "data is a JSON-encoded string");
  const presence = JSON.parse(ok.json.data).presence;
  assert.deepEqual([...presence.ids].sort(), ["alice", "bob"]);
  assert.deepEqual(presence.hash, { alice: { name: "Alice" }, bob: { name: "Bob" } });
  assert.equal(presence.count, 2);

  const added = await a.rec.wait((e) => e.event === "pusher:member_added", "member_added for bob");
  assert.deepEqual(added.data, { id: "bob", info: { name: "Bob" } });
  assert.equal(a.members.count, 2);
  // The message pusher-js got: pusher_internal:member_added with user_id and user_info.
  const wire = alice.rec.messages.find((m) => m.event === "pusher_internal:member_added");
  assert.deepEqual(wire.data, { user_id: "bob", user_info: { name: "Bob" } });

  // Bob never hears about himself.
  await api.trigger("presence-room", "marker", {});
  await bob.waitEvent("marker");
  assert.equal(bob.messages.count((m) => m.json?.event === "pusher_internal:member_added"), 0);
});

test("presence: member_removed reaches the others when a member leaves", async () => {
  const a = await subscribed(authed({ id: "u-stay" }), "presence-leave");
  const leaver = authed({ id: "u-go", info: { n: 2 } });
  await subscribed(leaver, "presence-leave");
  await a.rec.wait((e) => e.event === "pusher:member_added", "member_added");
  leaver.unsubscribe("presence-leave");
  const removed = await a.rec.wait((e) => e.event === "pusher:member_removed", "member_removed");
  assert.equal(removed.data.id, "u-go");
  assert.equal(a.members.count, 1);
});

test("presence: one user with two connections is one member; removed only after the last one leaves", async () => {
  const room = "presence-twice";
  const observer = authed({ id: "observer" });
  const obs = await subscribed(observer, room);
  const first = authed({ id: "dup", info: { tab: 1 } });
  const f = await subscribed(first, room);
  await obs.rec.wait((e) => e.event === "pusher:member_added", "member_added for dup");
  const second = authed({ id: "dup", info: { tab: 2 } });
  const s = await subscribed(second, room);
  assert.equal(s.members.count, 2, "observer and dup: two users, three connections");
  assert.deepEqual(Object.keys(s.members.members).sort(), ["dup", "observer"]);

  // The first connection leaves; the server must know (3 -> 2 subscriptions) before we look.
  first.disconnect();
  await poll(async () => {
    const res = await api.get({ path: `/channels/${room}`, params: { info: "subscription_count,user_count" } });
    const body = await res.json();
    return body.subscription_count === 2 ? body : null;
  }, WAIT, "the channel to count two subscriptions after one of dup's connections left");
  await api.trigger(room, "marker", {});
  await obs.rec.wait((e) => e.event === "marker", "the marker");
  assert.equal(obs.rec.count((e) => e.event === "pusher:member_added"), 1, "dup was added once");
  assert.equal(obs.rec.count((e) => e.event === "pusher:member_removed"), 0,
    "member_removed while dup still had a connection");
  assert.equal(f.rec.count((e) => e.event === "pusher:member_added"), 0,
    "dup's first connection was told that dup joined");

  second.disconnect();
  const removed = await obs.rec.wait((e) => e.event === "pusher:member_removed", "member_removed for dup");
  assert.equal(removed.data.id, "dup");
  assert.equal(obs.members.count, 1);
});

test("presence: one of a user's two connections unsubscribing removes nothing", async () => {
  const room = "presence-unsub-one";
  const obs = await subscribed(authed({ id: "watch" }), room);
  const tab1 = authed({ id: "twin" });
  const tab2 = authed({ id: "twin" });
  await subscribed(tab1, room);
  const t2 = await subscribed(tab2, room);
  await obs.rec.wait((e) => e.event === "pusher:member_added", "member_added for twin");
  tab1.unsubscribe(room);
  await subscribed(tab1, "sync-after-presence-unsubscribe"); // orders the unsubscribe first
  await api.trigger(room, "marker", {});
  await obs.rec.wait((e) => e.event === "marker", "the marker");
  assert.equal(obs.rec.count((e) => e.event === "pusher:member_removed"), 0, "member_removed while twin had tab2");
  assert.equal(obs.members.count, 2);
  tab2.unsubscribe(room);
  assert.equal((await obs.rec.wait((e) => e.event === "pusher:member_removed", "member_removed")).data.id, "twin");
  assert.equal(t2.rec.count((e) => e.event === "pusher:member_removed"), 0);
});

test("presence: a subscribe without channel_data is refused", async () => {
  const sock = await pusherSocket(server);
  const auth = api.authorizeChannel(sock.socketId, "presence-nodata").auth; // signed without data
  sock.emit("pusher:subscribe", { channel: "presence-nodata", auth });
  sock.emit("pusher:subscribe", { channel: "public-marker-2" });
  await sock.waitEvent("pusher_internal:subscription_succeeded", (j) => j.channel === "public-marker-2");
  assert.equal(sock.messages.count((m) =>
    m.json?.event === "pusher:subscription_error" || m.json?.event === "pusher:error"), 1,
  show(sock.messages.items.map((m) => m.text)));
  assert.equal(sock.messages.count((m) => m.json?.event === "pusher_internal:subscription_succeeded"), 1);
});

test("presence: channel_data that differs from what was signed is refused", async () => {
  const sock = await pusherSocket(server);
  const auth = api.authorizeChannel(sock.socketId, "presence-forged", { user_id: "honest" });
  const forged = JSON.stringify({ user_id: "admin" });
  sock.emit("pusher:subscribe", { channel: "presence-forged", auth: auth.auth, channel_data: forged });
  sock.emit("pusher:subscribe", { channel: "public-marker-3" });
  await sock.waitEvent("pusher_internal:subscription_succeeded", (j) => j.channel === "public-marker-3");
  assert.equal(sock.messages.count((m) => m.json?.event === "pusher_internal:subscription_succeeded"), 1,
    "the forged presence subscription succeeded");
});

// -- encrypted channels -----------------------------------------------------------------------

test("private-encrypted: pusher-js decrypts an SDK-encrypted event; the wire carries only nonce and ciphertext", async () => {
  const name = "private-encrypted-ledger";
  const client = authed();
  const ch = await subscribed(client, name);
  // A raw subscriber, authorized like any private channel, sees what the server forwards.
  const sock = await pusherSocket(server);
  sock.emit("pusher:subscribe", { channel: name, auth: api.authorizeChannel(sock.socketId, name).auth });
  await sock.waitEvent("pusher_internal:subscription_succeeded");

  const secret = { amount: 4200, memo: "plaintext-never-on-the-wire" };
  await api.trigger(name, "entry", secret);
  assert.deepEqual((await ch.rec.wait((e) => e.event === "entry", "the decrypted event")).data, secret);
  const wire = await sock.waitEvent("entry");
  assert.equal(typeof wire.json.data, "string");
  assert.deepEqual(Object.keys(dataOf(wire)).sort(), ["ciphertext", "nonce"]);
  assert.ok(!wire.text.includes("plaintext-never-on-the-wire"), "the server forwarded plaintext");
});

test("private-encrypted: subscribing needs a private signature", async () => {
  const sock = await pusherSocket(server);
  sock.emit("pusher:subscribe", { channel: "private-encrypted-x" });
  sock.emit("pusher:subscribe", { channel: "public-marker-4" });
  await sock.waitEvent("pusher_internal:subscription_succeeded", (j) => j.channel === "public-marker-4");
  assert.equal(sock.messages.count((m) => m.json?.event === "pusher_internal:subscription_succeeded"), 1,
    "private-encrypted-x was subscribed without auth");
});

// -- cache channels ---------------------------------------------------------------------------

test("cache: the first subscriber of an empty cache channel gets pusher:cache_miss", async () => {
  const client = pusherClient(server);
  const ch = record(client.subscribe("cache-empty"));
  await ch.rec.wait((e) => e.event === "pusher:subscription_succeeded", "subscription_succeeded");
  await ch.rec.wait((e) => e.event === "pusher:cache_miss", "pusher:cache_miss");
  const wire = client.rec.messages.find((m) => m.event === "pusher:cache_miss");
  assert.equal(wire.channel, "cache-empty");
});

test("cache: a new subscriber gets the last event replayed, only the last, after subscription_succeeded", async () => {
  const name = "cache-prices";
  await api.trigger(name, "price", { v: 1 });
  await api.trigger(name, "price", { v: 2 });
  const sock = await pusherSocket(server);
  sock.emit("pusher:subscribe", { channel: name });
  const replay = await sock.waitEvent("price");
  assert.deepEqual(dataOf(replay), { v: 2 });
  const ok = sock.messages.items.findIndex((m) => m.json?.event === "pusher_internal:subscription_succeeded");
  assert.ok(ok >= 0 && ok < sock.messages.items.indexOf(replay), "the replay comes after subscription_succeeded");
  await api.trigger(name, "live", { v: 3 });
  await sock.waitEvent("live");
  assert.equal(sock.messages.count((m) => m.json?.event === "price"), 1, "only the last event is replayed");
  assert.equal(sock.messages.count((m) => m.json?.event === "pusher:cache_miss"), 0);

  // And through pusher-js: the replayed event arrives as a normal event.
  const client = pusherClient(server);
  const ch = record(client.subscribe(name));
  assert.deepEqual((await ch.rec.wait((e) => e.event === "live", "the replayed live event")).data, { v: 3 });
});

test("cache: private-cache- channels need a signature and replay their last event", async () => {
  const name = "private-cache-doc";
  await api.trigger(name, "rev", { r: 9 });
  const ch = record(authed().subscribe(name));
  assert.deepEqual((await ch.rec.wait((e) => e.event === "rev", "the replayed event")).data, { r: 9 });
  const sock = await pusherSocket(server);
  sock.emit("pusher:subscribe", { channel: name });
  sock.emit("pusher:subscribe", { channel: "public-marker-5" });
  await sock.waitEvent("pusher_internal:subscription_succeeded", (j) => j.channel === "public-marker-5");
  assert.equal(sock.messages.count((m) => m.json?.event === "rev"), 0, "replayed to an unauthorized socket");
});

// -- client events ----------------------------------------------------------------------------

test("client events on a private channel reach the others and are never echoed to the sender", async () => {
  const name = "private-chat";
  const a = authed();
  const b = authed();
  const c = authed();
  const chA = await subscribed(a, name);
  const chB = await subscribed(b, name);
  const chC = await subscribed(c, name);
  assert.equal(chA.trigger("client-typing", { who: "a" }), true);
  assert.deepEqual((await chB.rec.wait((e) => e.event === "client-typing", "b's copy")).data, { who: "a" });
  assert.deepEqual((await chC.rec.wait((e) => e.event === "client-typing", "c's copy")).data, { who: "a" });
  // Per-channel order: a marker sent after b got the event comes after any echo to a.
  await api.trigger(name, "marker", {});
  await chA.rec.wait((e) => e.event === "marker", "the marker");
  assert.equal(chA.rec.count((e) => e.event === "client-typing"), 0, "the client event was echoed to its sender");
});

test("client events on a presence channel carry the sender's user_id", async () => {
  const name = "presence-chat";
  const a = authed({ id: "writer" });
  const b = authed({ id: "reader" });
  const chA = await subscribed(a, name);
  await subscribed(b, name);
  const seen = [];
  b.channel(name).bind("client-msg", (data, metadata) => seen.push({ data, metadata }));
  chA.trigger("client-msg", { text: "hi" });
  const wire = await b.rec.messages.wait((m) => m.event === "client-msg", "the client event");
  assert.equal(wire.user_id, "writer");
  await until(() => seen.length === 1, WAIT, "pusher-js to emit the event");
  assert.deepEqual(seen[0].data, { text: "hi" });
  assert.equal(seen[0].metadata?.user_id, "writer");
});

test("a client event's user_id is the sender's, whatever the sender claims", async () => {
  const name = "presence-spoof";
  const [s1, s2] = [await pusherSocket(server), await pusherSocket(server)];
  for (const [s, id] of [[s1, "honest"], [s2, "victim"]]) {
    const auth = api.authorizeChannel(s.socketId, name, { user_id: id });
    s.emit("pusher:subscribe", { channel: name, ...auth });
    await s.waitEvent("pusher_internal:subscription_succeeded");
  }
  s1.send({ event: "client-claim", channel: name, data: { x: 1 }, user_id: "admin" });
  const got = await s2.waitEvent("client-claim");
  assert.equal(got.json.user_id, "honest", got.text);
});

test("client events on a public channel are refused with an error and not delivered", async () => {
  const sender = await pusherSocket(server);
  const listener = await pusherSocket(server);
  for (const s of [sender, listener]) {
    s.emit("pusher:subscribe", { channel: "public-room" });
    await s.waitEvent("pusher_internal:subscription_succeeded");
  }
  sender.emit("client-hack", { x: 1 }, "public-room");
  const err = await sender.waitEvent("pusher:error", () => true, "a pusher:error for the public client event");
  assert.equal(typeof err.json.data, "object", "pusher:error data is an object");
  assert.ok(typeof err.json.data.message === "string" && err.json.data.message.length > 0);
  await api.trigger("public-room", "marker", {});
  await listener.waitEvent("marker");
  assert.equal(listener.messages.count((m) => m.json?.event === "client-hack"), 0);
});

test("client events on a channel the sender has not subscribed to are refused", async () => {
  const sender = await pusherSocket(server);
  const listener = await pusherSocket(server);
  const name = "private-elsewhere";
  listener.emit("pusher:subscribe", { channel: name, auth: api.authorizeChannel(listener.socketId, name).auth });
  await listener.waitEvent("pusher_internal:subscription_succeeded");
  sender.emit("client-intrude", { x: 1 }, name);
  await sender.waitEvent("pusher:error", () => true, "a pusher:error for the unsubscribed client event");
  await api.trigger(name, "marker", {});
  await listener.waitEvent("marker");
  assert.equal(listener.messages.count((m) => m.json?.event === "client-intrude"), 0);
});

test("a client event's data reaches the others as the sender's JSON string", async () => {
  const name = "private-raw-client";
  const [s1, s2] = [await pusherSocket(server), await pusherSocket(server)];
  for (const s of [s1, s2]) {
    s.emit("pusher:subscribe", { channel: name, auth: api.authorizeChannel(s.socketId, name).auth });
    await s.waitEvent("pusher_internal:subscription_succeeded");
  }
  s1.emit("client-obj", { k: [1, 2] }, name); // data as an object, as pusher-js sends it
  const got = await s2.waitEvent("client-obj");
  assert.equal(got.json.channel, name);
  assert.deepEqual(dataOf(got), { k: [1, 2] });
});
