// With --workers 2: presence, triggers, client events and user events across event loops. The
// test cannot choose a connection's worker, so it opens connections until /metrics shows both
// workers holding some, and fails if they never spread.

import { after, afterEach, before, test } from "node:test";
import assert from "node:assert/strict";
import http from "node:http";
import {
  assertSpeaksPusher, channelAuthorizer, closeAllClients, connected, poll, pusherClient,
  pusherSocket, pusherUrl, rawSocket, record, sdk, show, startFanout, subscribed, until,
  userAuthenticator, WAIT, webhookReceiver,
} from "./helpers.mjs";

// An app with limits, and one whose webhooks go to `receiver`, both on a two-worker server.
const LIMITS = { id: "8001", key: "limits-key", secret: "limits-secret", max_connections: 4, max_presence_members: 3 };
const HOOKS = {
  id: "8002", key: "hooks-key", secret: "hooks-secret",
  webhook_events: ["channel_occupied", "channel_vacated", "member_added", "member_removed"],
};

let server, api, tomlServer, receiver;
// The SDK on tomlServer without keep-alive: an idle kept-alive connection would count among the
// server's connections for seconds and make the spread of WebSockets look uncertain.
const noKeepAlive = { agent: new http.Agent({ keepAlive: false }) };

before(async () => {
  server = await startFanout({ workers: 2 });
  await assertSpeaksPusher(server);
  api = sdk(server);
  receiver = await webhookReceiver();
  HOOKS.webhook_url = receiver.url;
  tomlServer = await startFanout({ workers: 2, apps: [LIMITS, HOOKS] });
  await assertSpeaksPusher(tomlServer, HOOKS);
});
afterEach(() => closeAllClients());
after(async () => {
  await server?.stop();
  await tomlServer?.stop();
  await receiver?.close();
});

/** TCP connections per worker and open WebSockets (`ws`, all workers), from /metrics. */
async function perWorker(srv = server) {
  const text = await (await fetch(`${srv.http}/metrics`)).text();
  const counts = {};
  for (const m of text.matchAll(/^fanout_connections\{worker="(\d+)"\} (\d+)$/gm)) counts[m[1]] = Number(m[2]);
  counts.ws = Number(text.match(/^fanout_websockets (\d+)$/m)?.[1]);
  return counts;
}

/**
 * Whether the server's WebSockets are on both workers. Some connections are not WebSockets (this
 * request's, and HTTP connections still closing), on workers unknown: a worker holding more
 * connections than there are such connections in all holds a WebSocket. With `settleMs`, waits up
 * to that long for the closing ones to go first, so that this request's own is the only one left.
 */
async function spread(srv = server, settleMs = 0) {
  let counts;
  const others = (c) => Object.entries(c).reduce((a, [k, v]) => (k === "ws" ? a : a + v), 0) - c.ws;
  await poll(async () => {
    counts = await perWorker(srv);
    return others(counts) <= 1;
  }, settleMs, "").catch(() => {});
  const { ws, ...perW } = counts;
  const n = others(counts);
  return Object.values(perW).length === 2 && Object.values(perW).every((c) => c > n);
}

/**
 * Calls `open(i)` (which resolves once its connection is open) at least `min` times, and more,
 * up to 16, until the connections are on both workers; fails if they never spread.
 */
async function openSpread(open, min) {
  const opened = [];
  for (let i = 0; i < 16; i++) {
    opened.push(await open(i));
    if (opened.length >= min && (await spread(server, i === 15 ? 6000 : 0))) return opened;
  }
  throw new Error(`16 connections never spread over both workers: ${show(await perWorker())}`);
}

const presence = (id) => pusherClient(server, {
  channelAuthorization: { customHandler: channelAuthorizer(api, { id, info: { name: `user ${id}` } }) },
});

test("presence across workers: every member sees every other join, and the counts agree", async () => {
  const room = "presence-spread";
  const members = await openSpread(async (i) => {
    const client = presence(`w${i}`);
    await connected(client);
    return client;
  }, 6);
  const channels = [];
  for (const client of members) channels.push(await subscribed(client, room));
  const ids = members.map((_, i) => `w${i}`);
  for (const [i, ch] of channels.entries()) {
    const later = ids.slice(i + 1);
    await ch.rec.waitCount((e) => e.event === "pusher:member_added", later.length,
      `member_added for ${later} on w${i}`);
    const added = ch.rec.filter((e) => e.event === "pusher:member_added").map((e) => e.data.id);
    assert.deepEqual(added.sort(), [...later].sort(), `member_added seen by w${i}`);
    assert.equal(ch.members.count, ids.length, `w${i}'s count`);
  }
  const users = await (await api.get({ path: `/channels/${room}/users` })).json();
  assert.deepEqual(users.users.map((u) => u.id).sort(), [...ids].sort());
  const info = await (await api.get({ path: `/channels/${room}`, params: { info: "user_count,subscription_count" } })).json();
  assert.equal(info.user_count, ids.length, `user_count over both workers: ${show(info)}`);
  assert.equal(info.subscription_count, ids.length, `subscription_count over both workers: ${show(info)}`);
});

test("presence across workers: a user's two connections are one member, removed after the last", async () => {
  const room = "presence-spread-dup";
  const observer = presence("watcher");
  const obs = await subscribed(observer, room);
  // Several connections of one user, spread over the workers with high likelihood.
  const tabs = [];
  for (let i = 0; i < 4; i++) {
    const tab = presence("multi");
    tabs.push(tab);
    const ch = await subscribed(tab, room);
    assert.equal(ch.members.count, 2, `tab ${i}: watcher and multi`);
  }
  await obs.rec.wait((e) => e.event === "pusher:member_added", "member_added for multi");
  for (const tab of tabs.slice(0, 3)) tab.disconnect();
  await poll(async () => {
    const res = await api.get({ path: `/channels/${room}`, params: { info: "subscription_count" } });
    return (await res.json()).subscription_count === 2;
  }, WAIT, "three of multi's four connections to be gone");
  await api.trigger(room, "marker", {});
  await obs.rec.wait((e) => e.event === "marker", "the marker");
  assert.equal(obs.rec.count((e) => e.event === "pusher:member_added"), 1);
  assert.equal(obs.rec.count((e) => e.event === "pusher:member_removed"), 0,
    "member_removed while the user still had a connection on some worker");
  tabs[3].disconnect();
  const removed = await obs.rec.wait((e) => e.event === "pusher:member_removed", "member_removed");
  assert.equal(removed.data.id, "multi");
});

test("triggers and client events reach subscribers on both workers, never the sender", async () => {
  const name = "private-spread";
  const clients = await openSpread(async () => {
    const c = pusherClient(server, { channelAuthorization: { customHandler: channelAuthorizer(api) } });
    await connected(c);
    return c;
  }, 6);
  const channels = [];
  for (const c of clients) channels.push(await subscribed(c, name));
  await api.trigger(name, "server-event", { n: 1 });
  for (const ch of channels) await ch.rec.wait((e) => e.event === "server-event", "the trigger");
  channels[0].trigger("client-spread", { from: 0 });
  for (const ch of channels.slice(1)) await ch.rec.wait((e) => e.event === "client-spread", "the client event");
  await api.trigger(name, "marker", {});
  await channels[0].rec.wait((e) => e.event === "marker", "the sender's marker");
  assert.equal(channels[0].rec.count((e) => e.event === "client-spread"), 0, "echoed to the sender");
});

test("sendToUser and terminateUserConnections reach a user's connections on every worker", async () => {
  const tabs = [];
  for (let i = 0; i < 4; i++) {
    const tab = pusherClient(server, { userAuthentication: { customHandler: userAuthenticator(api, { id: "everywhere" }) } });
    tab.signin();
    await connected(tab);
    await tab.rec.messages.wait((m) => m.event === "pusher:signin_success", "signin_success");
    tabs.push(tab);
  }
  await api.sendToUser("everywhere", "ping-user", { k: 1 });
  for (const [i, tab] of tabs.entries()) {
    await tab.rec.messages.wait((m) => m.event === "ping-user", `the user event on tab ${i}`);
  }
  await api.terminateUserConnections("everywhere");
  for (const [i, tab] of tabs.entries()) {
    await tab.rec.states.wait((s) => s.previous === "connected" && s.current !== "connected",
      `tab ${i} to be disconnected`);
  }
});

/**
 * Opens `n` raw sockets of `app` on tomlServer until they spread over both workers (closing and
 * retrying when they land on one), and returns them.
 */
async function spreadSockets(app, n) {
  for (let attempt = 0; attempt < 12; attempt++) {
    const socks = [];
    for (let i = 0; i < n; i++) socks.push(await pusherSocket(tomlServer, app.key));
    if (await spread(tomlServer, 6000)) return socks;
    for (const s of socks) s.close(1000);
    for (const s of socks) await s.waitClose();
  }
  throw new Error(`${n} connections never spread over both workers: ${show(await perWorker(tomlServer))}`);
}

test("max_connections counts the app's connections on both workers", async () => {
  const held = await spreadSockets(LIMITS, LIMITS.max_connections);
  const over = await rawSocket(pusherUrl(tomlServer, LIMITS.key));
  const closed = await over.waitClose();
  const err = over.messages.find((m) => m.json?.event === "pusher:error");
  assert.equal(err?.json.data.code, 4004, `the 5th connection: ${show(over.messages.items.map((m) => m.text))}`);
  assert.equal(closed.code, 4004);
  assert.equal(held.filter((s) => s.closed).length, 0);
});

test("max_presence_members counts the members on both workers", async () => {
  const lapi = sdk(tomlServer, LIMITS, noKeepAlive);
  const socks = await spreadSockets(LIMITS, LIMITS.max_connections);
  const room = "presence-limited-spread";
  for (const [i, sock] of socks.slice(0, 3).entries()) {
    const auth = lapi.authorizeChannel(sock.socketId, room, { user_id: `m${i}` });
    sock.emit("pusher:subscribe", { channel: room, ...auth });
    await sock.waitEvent("pusher_internal:subscription_succeeded");
  }
  const fourth = socks[3];
  const auth = lapi.authorizeChannel(fourth.socketId, room, { user_id: "m3" });
  fourth.emit("pusher:subscribe", { channel: room, ...auth });
  await fourth.messages.wait((m) => ["pusher:subscription_error", "pusher:error", "pusher_internal:subscription_succeeded"]
    .includes(m.json?.event), "an answer to the 4th member's subscribe");
  assert.equal(fourth.messages.count((m) => m.json?.event === "pusher_internal:subscription_succeeded"), 0,
    "a 4th member got in with max_presence_members = 3");
});

test("webhooks with subscribers on both workers: channel_occupied once, channel_vacated once, after the last", async () => {
  const socks = await spreadSockets(HOOKS, 6);
  const hapi = sdk(tomlServer, HOOKS, noKeepAlive);
  for (const sock of socks) {
    sock.emit("pusher:subscribe", { channel: "spread-hook" });
    await sock.waitEvent("pusher_internal:subscription_succeeded");
  }
  await receiver.events.wait((e) => e.name === "channel_occupied" && e.channel === "spread-hook", "channel_occupied", 5000);
  for (const sock of socks.slice(0, 5)) sock.terminate();
  await poll(async () => {
    const res = await hapi.get({ path: "/channels/spread-hook", params: { info: "subscription_count" } });
    return (await res.json()).subscription_count === 1;
  }, WAIT, "five of the six subscribers to be gone");
  // A later webhook event as a marker: anything sent before it is in its batch or an earlier one.
  const marker = socks[5];
  marker.emit("pusher:subscribe", { channel: "spread-marker" });
  await receiver.events.wait((e) => e.name === "channel_occupied" && e.channel === "spread-marker", "the marker", 5000);
  assert.equal(receiver.events.count((e) => e.name === "channel_vacated" && e.channel === "spread-hook"), 0,
    "channel_vacated while a subscriber remained on some worker");
  marker.terminate();
  await receiver.events.wait((e) => e.name === "channel_vacated" && e.channel === "spread-hook", "channel_vacated", 5000);
  await receiver.events.wait((e) => e.name === "channel_vacated" && e.channel === "spread-marker", "the marker's vacate", 5000);
  assert.equal(receiver.events.count((e) => e.name === "channel_occupied" && e.channel === "spread-hook"), 1,
    `occupied once: ${show(receiver.events.items.map((e) => [e.name, e.channel]))}`);
  assert.equal(receiver.events.count((e) => e.name === "channel_vacated" && e.channel === "spread-hook"), 1);
});

test("webhooks: member_added once for a user connected on both workers, member_removed after the last", async () => {
  const socks = await spreadSockets(HOOKS, 4);
  const hapi = sdk(tomlServer, HOOKS, noKeepAlive);
  const room = "presence-spread-hook";
  for (const sock of socks) {
    const auth = hapi.authorizeChannel(sock.socketId, room, { user_id: "everywhere" });
    sock.emit("pusher:subscribe", { channel: room, ...auth });
    await sock.waitEvent("pusher_internal:subscription_succeeded");
  }
  await receiver.events.wait((e) => e.name === "member_added" && e.channel === room, "member_added", 5000);
  for (const sock of socks) sock.terminate();
  await receiver.events.wait((e) => e.name === "member_removed" && e.channel === room, "member_removed", 5000);
  await receiver.events.wait((e) => e.name === "channel_vacated" && e.channel === room, "channel_vacated", 5000);
  assert.equal(receiver.events.count((e) => e.name === "member_added" && e.channel === room), 1);
  assert.equal(receiver.events.count((e) => e.name === "member_removed" && e.channel === room), 1);
});

test("a cache channel replays its last event to a subscriber on either worker", async () => {
  await api.trigger("cache-spread", "last", { v: 7 });
  const clients = await openSpread(async () => {
    const c = pusherClient(server);
    await connected(c);
    return c;
  }, 4);
  for (const c of clients) {
    const ch = record(c.subscribe("cache-spread"));
    assert.deepEqual((await ch.rec.wait((e) => e.event === "last", "the replayed event")).data, { v: 7 });
    assert.equal(ch.rec.count((e) => e.event === "pusher:cache_miss"), 0);
  }
});
