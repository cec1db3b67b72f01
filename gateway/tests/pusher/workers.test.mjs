// With --workers 2: presence, triggers, client events and user events across event loops. The
// test cannot choose a connection's worker, so it opens connections until /metrics shows both
// workers holding some, and fails if they never spread.

import { after, afterEach, before, test } from "node:test";
import assert from "node:assert/strict";
import {
  assertSpeaksPusher, channelAuthorizer, closeAllClients, connected, poll, pusherClient, sdk,
  show, startFanout, subscribed, userAuthenticator, WAIT,
} from "./helpers.mjs";

let server, api;

before(async () => {
  server = await startFanout({ workers: 2 });
  await assertSpeaksPusher(server);
  api = sdk(server);
});
afterEach(() => closeAllClients());
after(() => server?.stop());

/** TCP connections per worker, from /metrics (this request's own connection included). */
async function perWorker() {
  const text = await (await fetch(`${server.http}/metrics`, { headers: { Connection: "close" } })).text();
  const counts = {};
  for (const m of text.matchAll(/^fanout_connections\{worker="(\d+)"\} (\d+)$/gm)) counts[m[1]] = Number(m[2]);
  return counts;
}

/** True when each of the two workers holds at least two connections: one WebSocket at least. */
async function spread() {
  const counts = Object.values(await perWorker());
  return counts.length === 2 && counts.every((n) => n >= 2);
}

const presence = (id) => pusherClient(server, {
  channelAuthorization: { customHandler: channelAuthorizer(api, { id, info: { name: `user ${id}` } }) },
});

test("presence across workers: every member sees every other join, and the counts agree", async () => {
  const room = "presence-spread";
  const members = [];
  for (let i = 0; i < 16 && (members.length < 6 || !(await spread())); i++) {
    const client = presence(`w${i}`);
    await connected(client);
    members.push(client);
  }
  assert.ok(await spread(), `connections never spread over both workers: ${show(await perWorker())}`);
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
  const clients = [];
  for (let i = 0; i < 16 && (clients.length < 6 || !(await spread())); i++) {
    const c = pusherClient(server, { channelAuthorization: { customHandler: channelAuthorizer(api) } });
    await connected(c);
    clients.push(c);
  }
  assert.ok(await spread(), `connections never spread: ${show(await perWorker())}`);
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
