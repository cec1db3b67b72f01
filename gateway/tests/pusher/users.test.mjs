// User authentication: pusher:signin, events sent to a user (#server-to-user-ID) and the
// termination of a user's connections, through pusher-js and the SDK.

import { after, afterEach, before, test } from "node:test";
import assert from "node:assert/strict";
import {
  APP, assertSpeaksPusher, closeAllClients, connected, pusherClient, pusherSocket, sdk, show,
  startFanout, until, userAuthenticator, WAIT, Log,
} from "./helpers.mjs";

let server, api;

before(async () => {
  server = await startFanout();
  await assertSpeaksPusher(server);
  api = sdk(server);
});
afterEach(() => closeAllClients());
after(() => server?.stop());

/** A pusher-js client signed in as `user`; resolves once the server confirmed the signin. */
async function signedIn(user) {
  const client = pusherClient(server, { userAuthentication: { customHandler: userAuthenticator(api, user) } });
  client.notices = new Log(`user events of ${user.id}`);
  client.user.bind_global((event, data) => client.notices.push({ event, data }));
  client.signin();
  await connected(client);
  await client.rec.messages.wait((m) => m.event === "pusher:signin_success", `signin_success for ${user.id}`);
  await until(() => client.user.user_data, WAIT, "pusher-js to accept the signin");
  return client;
}

/** A raw socket signed in as `user`. */
async function rawSignedIn(user) {
  const sock = await pusherSocket(server);
  sock.emit("pusher:signin", api.authenticateUser(sock.socketId, user));
  await sock.waitEvent("pusher:signin_success");
  return sock;
}

test("signin: pusher-js signs in and gets pusher:signin_success with its user_data", async () => {
  const user = { id: "ada", user_info: { name: "Ada" } };
  const client = await signedIn(user);
  assert.deepEqual(client.user.user_data, user);
});

test("signin on the wire: signin_success data is a JSON string holding the signed user_data", async () => {
  const sock = await pusherSocket(server);
  const auth = api.authenticateUser(sock.socketId, { id: "grace", watchlist: [] });
  sock.emit("pusher:signin", auth);
  const ok = await sock.waitEvent("pusher:signin_success");
  assert.equal(typeof ok.json.data, "string", "data is a JSON-encoded string");
  assert.equal(JSON.parse(ok.json.data).user_data, auth.user_data);
});

test("signin with a bad signature is refused with pusher:error and no signin_success", async () => {
  const sock = await pusherSocket(server);
  const wrong = sdk(server, { ...APP, secret: "wrong" }).authenticateUser(sock.socketId, { id: "mallory" });
  sock.emit("pusher:signin", wrong);
  const err = await sock.waitEvent("pusher:error", () => true, "pusher:error for the bad signin");
  assert.equal(typeof err.json.data, "object");
  assert.equal(sock.messages.count((m) => m.json?.event === "pusher:signin_success"), 0);
  // And events for that user do not reach this socket.
  await api.sendToUser("mallory", "leak", { x: 1 });
  const marker = await rawSignedIn({ id: "mallory-real" });
  await api.sendToUser("mallory-real", "marker", {});
  await marker.waitEvent("marker");
  assert.equal(sock.messages.count((m) => m.json?.event === "leak"), 0);
});

test("sendToUser reaches every connection signed in as that user, and no one else", async () => {
  const tab1 = await signedIn({ id: "u7" });
  const tab2 = await signedIn({ id: "u7" });
  const other = await signedIn({ id: "u8" });
  const anonymous = pusherClient(server);
  await connected(anonymous);
  const res = await api.sendToUser("u7", "notice", { text: "for u7" });
  assert.equal(res.status, 200);
  for (const tab of [tab1, tab2]) {
    const got = await tab.notices.wait((e) => e.event === "notice", "the notice");
    assert.deepEqual(got.data, { text: "for u7" });
  }
  await api.sendToUser("u8", "marker", {});
  await other.notices.wait((e) => e.event === "marker", "u8's marker");
  assert.equal(other.notices.count((e) => e.event === "notice"), 0, "u8 got u7's event");
  assert.equal(anonymous.rec.messages.count((m) => m.event === "notice"), 0, "an anonymous client got it");
  assert.equal(tab1.notices.count((e) => e.event === "notice"), 1, "delivered once per connection");
});

test("sendToUser on the wire: the event comes on #server-to-user-ID with a string data", async () => {
  const sock = await rawSignedIn({ id: "wire-user" });
  await api.sendToUser("wire-user", "hello", { a: 1 });
  const got = await sock.waitEvent("hello");
  assert.equal(got.json.channel, "#server-to-user-wire-user");
  assert.equal(got.json.data, '{"a":1}');
});

test("terminateUserConnections closes every connection of that user and only those", async () => {
  const raw = await rawSignedIn({ id: "doomed" });
  const tab = await signedIn({ id: "doomed" });
  const bystander = await rawSignedIn({ id: "bystander" });
  const res = await api.terminateUserConnections("doomed");
  assert.equal(res.status, 200);
  const closed = await raw.waitClose();
  assert.ok(closed.code >= 4000 && closed.code < 4400, `a Pusher close code: ${show(closed)}`);
  await tab.rec.states.wait((s) => s.previous === "connected" && s.current !== "connected",
    "pusher-js to leave the connected state");
  // The bystander is untouched: still open, still reachable.
  await api.sendToUser("bystander", "still-here", {});
  await bystander.waitEvent("still-here");
  assert.equal(bystander.closed, null);
});

test("terminate_connections over the raw HTTP API answers 200 for a user with no connection", async () => {
  const res = await api.terminateUserConnections("nobody-here");
  assert.equal(res.status, 200);
});
