// Laravel Echo (broadcaster 'pusher') in Node, with pusher-js passed in its options and a custom
// authorizer signing with the SDK, as a Laravel app's frontend would use it.

import { after, afterEach, before, test } from "node:test";
import assert from "node:assert/strict";
import Echo from "laravel-echo";
import Pusher from "pusher-js";
import {
  APP, assertSpeaksPusher, closeAllClients, Log, notify, sdk, show, startFanout, until, WAIT,
} from "./helpers.mjs";

let server, api;
const echos = new Set();

before(async () => {
  server = await startFanout();
  await assertSpeaksPusher(server);
  api = sdk(server);
});
afterEach(() => {
  for (const echo of echos) echo.disconnect();
  echos.clear();
  closeAllClients();
});
after(() => server?.stop());

/** An Echo instance; `user` ({id, name}) is who its presence authorizations sign for. */
function makeEcho(user = { id: "1", name: "Taylor" }) {
  const echo = new Echo({
    broadcaster: "pusher",
    Pusher,
    key: APP.key,
    wsHost: "127.0.0.1",
    wsPort: server.port,
    forceTLS: false,
    enabledTransports: ["ws"],
    cluster: "mt1",
    disableStats: true,
    authorizer: (channel) => ({
      authorize: (socketId, callback) => {
        try {
          const presence = channel.name.startsWith("presence-")
            ? { user_id: user.id, user_info: user } : undefined;
          callback(false, api.authorizeChannel(socketId, channel.name, presence));
        } catch (err) {
          callback(true, err);
        }
      },
    }),
  });
  echos.add(echo);
  echo.errors = new Log("echo pusher-js errors");
  echo.connector.pusher.connection.bind("error", (e) => echo.errors.push(e));
  return echo;
}

/** Resolves once an Echo channel's subscription succeeded. */
function ready(echo, channel) {
  let ok = false;
  let error = null;
  channel.subscribed(() => {
    ok = true;
    notify();
  });
  channel.error((e) => {
    error = e;
    notify();
  });
  return until(() => ok || error, WAIT,
    () => `Echo's subscription to ${channel.name} (state ${echo.connector.pusher.connection.state}, ` +
      `errors ${show(echo.errors.items)})`).then(() => {
    if (error) throw new Error(`Echo's subscription to ${channel.name} failed: ${show(error)}`);
    return channel;
  });
}

/** A Log fed by an Echo listener callback (its first argument: pusher-js adds metadata after it). */
function sink(name) {
  const log = new Log(name);
  log.fn = (data) => log.push(data);
  return log;
}

test("Echo.channel('orders').listen('.OrderShipped') receives an SDK trigger named OrderShipped", async () => {
  const echo = makeEcho();
  const got = sink("OrderShipped");
  await ready(echo, echo.channel("orders").listen(".OrderShipped", got.fn));
  await api.trigger("orders", "OrderShipped", { order: { id: 5 } });
  assert.deepEqual(await got.wait(() => true, "the event"), { order: { id: 5 } });
});

test("Echo.private('orders.1').listen('OrderShipped') receives App\\Events\\OrderShipped on private-orders.1", async () => {
  const echo = makeEcho();
  const got = sink("namespaced");
  const channel = echo.private("orders.1").listen("OrderShipped", got.fn);
  assert.equal(channel.name, "private-orders.1");
  await ready(echo, channel);
  await api.trigger("private-orders.1", "App\\Events\\OrderShipped", { id: 1 });
  assert.deepEqual(await got.wait(() => true, "the namespaced event"), { id: 1 });
});

test("Echo notifications on private-App.Models.User.N (a backslashed Laravel event name)", async () => {
  const echo = makeEcho();
  const got = sink("notification");
  await ready(echo, echo.private("App.Models.User.1").notification(got.fn));
  await api.trigger("private-App.Models.User.1", "Illuminate\\Notifications\\Events\\BroadcastNotificationCreated",
    { id: "n-1", type: "App\\Notifications\\InvoicePaid" });
  const n = await got.wait(() => true, "the notification");
  assert.equal(n.type, "App\\Notifications\\InvoicePaid");
});

test("Echo.join('room'): here lists the members; joining and leaving fire for the others", async () => {
  const taylor = makeEcho({ id: "1", name: "Taylor" });
  const here = sink("here");
  const joining = sink("joining");
  const leaving = sink("leaving");
  const room = taylor.join("room").here(here.fn).joining(joining.fn).leaving(leaving.fn);
  assert.equal(room.name, "presence-room");
  await ready(taylor, room);
  assert.deepEqual(await here.wait(() => true, "here"), [{ id: "1", name: "Taylor" }]);

  const abigail = makeEcho({ id: "2", name: "Abigail" });
  const hereB = sink("here for Abigail");
  await ready(abigail, abigail.join("room").here(hereB.fn));
  const members = await hereB.wait(() => true, "here for Abigail");
  assert.deepEqual(members.map((m) => m.id).sort(), ["1", "2"]);
  assert.deepEqual(await joining.wait(() => true, "joining"), { id: "2", name: "Abigail" });

  abigail.leave("room");
  assert.deepEqual(await leaving.wait(() => true, "leaving"), { id: "2", name: "Abigail" });
});

test("Echo whisper and listenForWhisper on a private channel", async () => {
  const a = makeEcho();
  const b = makeEcho();
  const heard = sink("whisper");
  const chA = await ready(a, a.private("chat.7"));
  await ready(b, b.private("chat.7").listenForWhisper("typing", heard.fn));
  chA.whisper("typing", { name: "Taylor" });
  assert.deepEqual(await heard.wait(() => true, "the whisper"), { name: "Taylor" });
});

test("Echo.socketId() excludes the sender, as Laravel's broadcast()->toOthers() does", async () => {
  const sender = makeEcho();
  const other = makeEcho();
  const mine = sink("sender");
  const theirs = sink("other");
  await ready(sender, sender.channel("feed").listen(".Posted", mine.fn).listen(".Marker", mine.fn));
  await ready(other, other.channel("feed").listen(".Posted", theirs.fn));
  assert.match(sender.socketId(), /^\d+\.\d+$/);
  await api.trigger("feed", "Posted", { p: 1 }, { socket_id: sender.socketId() });
  await theirs.wait(() => true, "the other's copy");
  await api.trigger("feed", "Marker", { marker: true });
  await mine.wait((d) => d.marker, "the sender's marker");
  assert.equal(mine.count((d) => d.p === 1), 0, "the sender got its own event");
});
