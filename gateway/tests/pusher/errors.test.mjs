// Errors and limits on the socket: pusher:error with its code and the matching close code (which
// steers pusher-js), connection quotas, presence member limits, and client-event rate and size
// limits, with apps configured by flags and by a [[pusher.apps]] TOML file.

import { after, afterEach, before, test } from "node:test";
import assert from "node:assert/strict";
import {
  APP, assertSpeaksPusher, channelAuthorizer, closeAllClients, connected, poll, pusherClient,
  pusherSocket, pusherUrl, rawSocket, record, sdk, show, startFanout, subscribed, until, WAIT,
} from "./helpers.mjs";

const QUOTA = { id: "5001", key: "quota-key", secret: "quota-secret", max_connections: 3 };
const LIMITED = { id: "5002", key: "limited-key", secret: "limited-secret", max_presence_members: 2, max_event_size: 2000 };
const NO_CLIENT = { id: "5003", key: "noclient-key", secret: "noclient-secret", client_events: false };

let server; // the app from flags, with every default
let tomlServer; // QUOTA, LIMITED and NO_CLIENT from a TOML file
let api;

before(async () => {
  server = await startFanout();
  await assertSpeaksPusher(server);
  api = sdk(server);
  tomlServer = await startFanout({ apps: [QUOTA, LIMITED, NO_CLIENT] });
  await assertSpeaksPusher(tomlServer, LIMITED);
});
afterEach(() => closeAllClients());
after(async () => {
  await server?.stop();
  await tomlServer?.stop();
});

/** Opens `url` and expects a pusher:error with `codes` (one of), then a close with the same code. */
async function refusedSocket(url, codes, what) {
  const sock = await rawSocket(url);
  const established = () => sock.messages.find((m) => m.json?.event === "pusher:connection_established");
  await until(() => sock.closed || established(), WAIT, `${what}: a close`);
  assert.ok(!established(), `${what}: the connection was accepted: ${established()?.text}`);
  const closed = sock.closed;
  const err = sock.messages.find((m) => m.json?.event === "pusher:error");
  assert.ok(err, `${what}: a pusher:error before the close; got ${show(sock.messages.items.map((m) => m.text))}, close ${show(closed)}`);
  assert.equal(typeof err.json.data, "object", `${what}: pusher:error data is an object: ${err.text}`);
  assert.ok(codes.includes(err.json.data.code), `${what}: pusher:error code ${err.json.data.code}, expected ${codes}`);
  assert.equal(typeof err.json.data.message, "string");
  assert.equal(closed.code, err.json.data.code, `${what}: the close code matches the error code`);
  return closed.code;
}

test("an unknown app key: pusher:error 4001 and close 4001; pusher-js stops and does not retry", async () => {
  await refusedSocket(pusherUrl(server, "no-such-key"), [4001], "unknown key");
  const client = pusherClient(server, { key: "no-such-key" });
  await client.rec.errors.wait((e) => e.data?.code === 4001 || e.error?.data?.code === 4001,
    "pusher-js to report error 4001");
  await until(() => client.connection.state === "disconnected" || client.connection.state === "failed", WAIT,
    () => `pusher-js to give up (state ${client.connection.state})`);
  assert.equal(client.rec.states.count((s) => s.current === "connected"), 0);
});

test("a path under /app without a key, or with more after it: 4005", async () => {
  const query = "?protocol=7&client=js&version=8.6.0";
  await refusedSocket(`${server.ws}/app/${query}`, [4005], "/app/ without a key");
  await refusedSocket(`${server.ws}/app/${APP.key}/extra${query}`, [4005], "/app/KEY/extra");
});

test("protocol=6: pusher:error 4007 and close 4007", async () => {
  await refusedSocket(pusherUrl(server, APP.key, { protocol: "6" }), [4007], "protocol=6");
});

test("no protocol parameter: pusher:error and close 4006 or 4007", async () => {
  await refusedSocket(pusherUrl(server, APP.key, { protocol: null }), [4006, 4007], "no protocol");
});

test("a protocol that is not a number: 4006 or 4007; protocol 8: 4007", async () => {
  await refusedSocket(pusherUrl(server, APP.key, { protocol: "seven" }), [4006, 4007], "protocol=seven");
  await refusedSocket(pusherUrl(server, APP.key, { protocol: "8" }), [4007], "protocol=8");
});

test("the app's connection quota: the connection over max_connections gets 4004", async () => {
  const held = [];
  for (let i = 0; i < QUOTA.max_connections; i++) held.push(await pusherSocket(tomlServer, QUOTA.key));
  await refusedSocket(pusherUrl(tomlServer, QUOTA.key), [4004], "over the quota");
  // pusher-js treats 4004 as final.
  const client = pusherClient(tomlServer, { key: QUOTA.key });
  await client.rec.errors.wait((e) => e.data?.code === 4004 || e.error?.data?.code === 4004, "pusher-js error 4004");
  client.disconnect();
  // Another app on the same server is not counted against this one.
  await pusherSocket(tomlServer, LIMITED.key);
  // Closing one frees a place.
  held[0].close(1000);
  await held[0].waitClose();
  await poll(async () => {
    const sock = await rawSocket(pusherUrl(tomlServer, QUOTA.key));
    const first = await sock.messages.wait(() => true, "a first message");
    if (first.json?.event === "pusher:connection_established") return true;
    sock.terminate();
    return false;
  }, WAIT, "a place to free up after a close");
});

test("presence: a new user over max_presence_members is refused; a present user's second connection is not", async () => {
  const lapi = sdk(tomlServer, LIMITED);
  const join = (id) => pusherClient(tomlServer, {
    key: LIMITED.key, channelAuthorization: { customHandler: channelAuthorizer(lapi, { id }) },
  });
  const first = await subscribed(join("m1"), "presence-full");
  await subscribed(join("m2"), "presence-full");
  const third = join("m3");
  await connected(third);
  const ch = record(third.subscribe("presence-full"));
  await until(() => ch.rec.find((e) => e.event === "pusher:subscription_error") ||
    third.rec.errors.find((e) => e.type === "PusherError"), WAIT,
  () => `a refusal for the third user; channel ${show(ch.rec.items)}, errors ${show(third.rec.errors.items)}`);
  assert.equal(ch.rec.count((e) => e.event === "pusher:subscription_succeeded"), 0, "the third user got in");
  const again = await subscribed(join("m1"), "presence-full");
  assert.equal(again.members.count, 2);
  await lapi.trigger("presence-full", "marker", {});
  await first.rec.wait((e) => e.event === "marker", "the marker");
  assert.deepEqual(first.rec.filter((e) => e.event === "pusher:member_added").map((e) => e.data.id), ["m2"]);
});

/** Two raw sockets of `app` on `server_` subscribed to the private channel `name`. */
async function privatePair(server_, app, name) {
  const sapi = sdk(server_, app);
  const pair = [];
  for (let i = 0; i < 2; i++) {
    const sock = await pusherSocket(server_, app.key);
    sock.emit("pusher:subscribe", { channel: name, auth: sapi.authorizeChannel(sock.socketId, name).auth });
    await sock.waitEvent("pusher_internal:subscription_succeeded");
    pair.push(sock);
  }
  return { sender: pair[0], listener: pair[1], api: sapi };
}

test("client events over 10 per second from one connection: pusher:error 4301, the rest dropped", async () => {
  const { sender, listener } = await privatePair(server, APP, "private-rate");
  for (let i = 0; i < 30; i++) sender.emit("client-burst", { i }, "private-rate");
  const err = await sender.waitEvent("pusher:error", (j) => j.data?.code === 4301, "pusher:error 4301");
  assert.equal(typeof err.json.data.message, "string");
  await api.trigger("private-rate", "marker", {});
  await listener.waitEvent("marker");
  const got = listener.messages.count((m) => m.json?.event === "client-burst");
  assert.ok(got >= 10 && got <= 20, `the listener got ${got} of 30 (10/s allowed)`);
});

test("a client event over the default 10 KB is refused and not delivered; 9 KB passes", async () => {
  const { sender, listener } = await privatePair(server, APP, "private-size");
  sender.emit("client-big", { blob: "x".repeat(11_000) }, "private-size");
  await sender.waitEvent("pusher:error", () => true, "pusher:error for the 11 KB client event");
  sender.emit("client-ok", { blob: "y".repeat(9_000) }, "private-size");
  await listener.waitEvent("client-ok");
  assert.equal(listener.messages.count((m) => m.json?.event === "client-big"), 0);
});

test("max_event_size from the TOML applies to client events and to the HTTP API", async () => {
  const { sender, listener, api: lapi } = await privatePair(tomlServer, LIMITED, "private-small");
  sender.emit("client-big", { blob: "x".repeat(2_500) }, "private-small");
  await sender.waitEvent("pusher:error", () => true, "pusher:error for the 2.5 KB client event");
  sender.emit("client-ok", { blob: "y".repeat(1_500) }, "private-small");
  await listener.waitEvent("client-ok");
  assert.equal(listener.messages.count((m) => m.json?.event === "client-big"), 0);
  await assert.rejects(lapi.trigger("private-small", "ev", "z".repeat(2_500)), (err) => err.status === 413);
  assert.equal((await lapi.trigger("private-small", "ev", "z".repeat(1_500))).status, 200);
});

test("client_events = false: client events are refused even on private channels", async () => {
  const { sender, listener, api: napi } = await privatePair(tomlServer, NO_CLIENT, "private-quiet");
  sender.emit("client-nope", { x: 1 }, "private-quiet");
  await sender.waitEvent("pusher:error", () => true, "pusher:error for a disabled client event");
  await napi.trigger("private-quiet", "marker", {});
  await listener.waitEvent("marker");
  assert.equal(listener.messages.count((m) => m.json?.event === "client-nope"), 0);
});

test("apps from one TOML are separate: another app's key signs nothing here", async () => {
  const sock = await pusherSocket(tomlServer, LIMITED.key);
  const wrongApp = sdk(tomlServer, NO_CLIENT); // a valid app, but not this socket's
  sock.emit("pusher:subscribe", { channel: "private-cross", auth: wrongApp.authorizeChannel(sock.socketId, "private-cross").auth });
  sock.emit("pusher:subscribe", { channel: "marker-cross" });
  await sock.waitEvent("pusher_internal:subscription_succeeded", (j) => j.channel === "marker-cross");
  assert.equal(sock.messages.count((m) => m.json?.event === "pusher_internal:subscription_succeeded"), 1,
    "a signature of another app was accepted");
  // Events of one app do not reach the other app's subscribers of the same channel name.
  const other = await pusherSocket(tomlServer, NO_CLIENT.key);
  other.emit("pusher:subscribe", { channel: "same-name" });
  sock.emit("pusher:subscribe", { channel: "same-name" });
  await other.waitEvent("pusher_internal:subscription_succeeded");
  await sock.waitEvent("pusher_internal:subscription_succeeded", (j) => j.channel === "same-name");
  await sdk(tomlServer, LIMITED).trigger("same-name", "mine", {});
  await sock.waitEvent("mine");
  await wrongApp.trigger("same-name", "marker", {});
  await other.waitEvent("marker");
  assert.equal(other.messages.count((m) => m.json?.event === "mine"), 0, "an event crossed apps");
  // Users too: the same user id signed in on both apps is two users.
  const lapi = sdk(tomlServer, LIMITED);
  sock.emit("pusher:signin", lapi.authenticateUser(sock.socketId, { id: "same-user" }));
  other.emit("pusher:signin", wrongApp.authenticateUser(other.socketId, { id: "same-user" }));
  await sock.waitEvent("pusher:signin_success");
  await other.waitEvent("pusher:signin_success");
  await lapi.sendToUser("same-user", "for-limited", {});
  await sock.waitEvent("for-limited");
  await lapi.terminateUserConnections("same-user");
  await sock.waitClose();
  await wrongApp.sendToUser("same-user", "still-open", {});
  await other.waitEvent("still-open");
  assert.equal(other.messages.count((m) => m.json?.event === "for-limited"), 0, "a user event crossed apps");
  assert.equal(other.closed, null, "terminate_connections crossed apps");
});

test("without a configured app, /app/KEY and /apps/ID/... answer 404", async () => {
  const bare = await startFanout({ app: null });
  try {
    await assert.rejects(rawSocket(pusherUrl(bare, APP.key)), /HTTP 404/);
    const res = await fetch(`${bare.http}/apps/${APP.id}/events`, { method: "POST", body: "{}" });
    assert.equal(res.status, 404);
    const list = await fetch(`${bare.http}/apps/${APP.id}/channels`);
    assert.equal(list.status, 404);
  } finally {
    await bare.stop();
  }
});

test("the app can be given by FANOUT_PUSHER_* environment variables", async () => {
  const envServer = await startFanout({
    app: null,
    env: { FANOUT_PUSHER_APP_ID: "7007", FANOUT_PUSHER_APP_KEY: "env-key", FANOUT_PUSHER_APP_SECRET: "env-secret" },
  });
  try {
    const sock = await pusherSocket(envServer, "env-key");
    assert.match(sock.socketId, /^\d+\.\d+$/);
    const eapi = sdk(envServer, { id: "7007", key: "env-key", secret: "env-secret" });
    sock.emit("pusher:subscribe", { channel: "env" });
    await sock.waitEvent("pusher_internal:subscription_succeeded");
    await eapi.trigger("env", "hello", {});
    await sock.waitEvent("hello");
  } finally {
    await envServer.stop();
  }
});
