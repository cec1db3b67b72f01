// The demo page (gateway/src/demo.html) in a real headless Chromium against a real fanout server.
//
//   cd tests/browser && npm ci && FANOUT_BIN=$PWD/../../target/debug/fanout node --test demo.test.mjs
//
// Page A reaches the server through a TCP proxy run by this test, so the test can cut A's network
// (both the open connection and any reconnect attempt) while the server keeps running, and can
// later point A at a restarted server. Page B connects directly. The tests run in order and
// build on each other's state (the same channel, the same pages). The last one runs its own
// server with a Pusher app, and serves pusher-js from node_modules in place of its CDN.

import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { spawn, execFileSync } from "node:child_process";
import { existsSync, readFileSync } from "node:fs";
import net from "node:net";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";

const FANOUT_BIN =
  process.env.FANOUT_BIN || fileURLToPath(new URL("../../target/debug/fanout", import.meta.url));
const CHROMIUM = process.env.CHROMIUM_BIN || "/usr/bin/chromium";
const API_KEY = "testkey";
const CHANNEL = "room1";
const WAIT = { timeout: 15_000 }; // generous: covers a reconnect backoff of a few seconds
// The page loads pusher-js from its CDN at the version package.json pins; the test serves that
// file from node_modules.
const PUSHER_JS_VERSION = JSON.parse(
  readFileSync(new URL("./package.json", import.meta.url), "utf8")).devDependencies["pusher-js"];
const PUSHER_JS_URL = `https://js.pusher.com/${PUSHER_JS_VERSION}/pusher.min.js`;
const PUSHER_JS_FILE =
  fileURLToPath(new URL("./node_modules/pusher-js/dist/web/pusher.min.js", import.meta.url));

/**
 * Starts `fanout serve` on a free port; resolves once it prints its listening line. Without an
 * API key (apiKey null), `POST /api/publish` is open, as on any loopback server without one.
 */
function startServer(extraArgs = [], apiKey = API_KEY) {
  const child = spawn(
    FANOUT_BIN,
    ["serve", "--listen", "127.0.0.1:0", ...(apiKey ? ["--api-key", apiKey] : []), ...extraArgs],
    { stdio: ["ignore", "ignore", "pipe"] },
  );
  let stderr = "";
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => fail(new Error("no listening line within 10 s")), 10_000);
    const fail = (err) => {
      clearTimeout(timer);
      child.kill("SIGKILL");
      reject(new Error(`${FANOUT_BIN}: ${err.message}\nstderr:\n${stderr}`));
    };
    child.on("error", fail);
    child.on("exit", (code, signal) => fail(new Error(`exited early (${code ?? signal})`)));
    child.stderr.setEncoding("utf8");
    child.stderr.on("data", (chunk) => {
      stderr += chunk;
      const m = stderr.match(/listening on http:\/\/127\.0\.0\.1:(\d+)\//);
      if (m && !child.port) {
        clearTimeout(timer);
        child.removeAllListeners("exit");
        child.port = Number(m[1]);
        child.stderrText = () => stderr;
        resolve(child);
      }
    });
  });
}

async function stopServer(child) {
  if (!child || child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise((resolve) => child.once("exit", resolve));
  child.kill("SIGTERM");
  const timer = setTimeout(() => child.kill("SIGKILL"), 5_000);
  await exited;
  clearTimeout(timer);
}

/**
 * A TCP proxy to the server that can go down: down() cuts every open connection abruptly (no
 * WebSocket close frame, as when a network drops) and refuses new ones until up().
 */
function startProxy(targetPort) {
  const proxy = { targetPort, isUp: true, sockets: new Set() };
  proxy.server = net.createServer((client) => {
    if (!proxy.isUp) return client.destroy();
    const upstream = net.connect(proxy.targetPort, "127.0.0.1");
    for (const s of [client, upstream]) {
      proxy.sockets.add(s);
      s.on("close", () => proxy.sockets.delete(s));
      s.on("error", () => {});
    }
    client.pipe(upstream).pipe(client);
    client.on("close", () => upstream.destroy());
    upstream.on("close", () => client.destroy());
  });
  proxy.down = () => {
    proxy.isUp = false;
    for (const s of proxy.sockets) s.destroy();
  };
  proxy.up = () => {
    proxy.isUp = true;
  };
  return new Promise((resolve) =>
    proxy.server.listen(0, "127.0.0.1", () => {
      proxy.port = proxy.server.address().port;
      resolve(proxy);
    }),
  );
}

async function publishHttp(port, channel, data) {
  const res = await fetch(`http://127.0.0.1:${port}/api/publish`, {
    method: "POST",
    headers: { Authorization: `Bearer ${API_KEY}`, "Content-Type": "application/json" },
    body: JSON.stringify({ channel, data }),
  });
  const body = await res.json();
  assert.equal(res.status, 200, `publish answered ${res.status} ${JSON.stringify(body)}`);
  assert.ok(Number.isInteger(body.seq), `publish answered ${JSON.stringify(body)}`);
  return body.seq;
}

// Page helpers. Message lines are the #log children with data-seq; notes have none.
const message = (page, text) => page.locator("#log > [data-seq]", { hasText: text });
const note = (page, text) => page.locator("#log > .note", { hasText: text });
const seqs = (page) =>
  page.$$eval("#log > [data-seq]", (els) => els.map((e) => Number(e.dataset.seq)));
const texts = (page) =>
  page.$$eval("#log > [data-seq]", (els) => els.map((e) => e.textContent));
const waitStatus = (page, re) =>
  page.waitForFunction((src) => new RegExp(src).test(document.querySelector("#status").textContent),
    re.source, WAIT);

async function openDemo(browser, origin, channel) {
  const page = await browser.newPage();
  page.errors = [];
  page.on("pageerror", (err) => page.errors.push(err));
  await page.goto(`${origin}/?channel=${channel}`);
  await note(page, `joined ${channel}`).waitFor(WAIT);
  assert.equal(await page.inputValue("#channel"), channel, "channel taken from ?channel=");
  await waitStatus(page, /^connected$/);
  return page;
}

async function sendViaUi(page, text) {
  await page.fill("#text", text);
  await page.click("#send");
  // The input is cleared only once the frame was handed to an open socket.
  await page.waitForFunction(() => document.querySelector("#text").value === "", null, WAIT);
}

let server, proxy, browser, pageA, pageB;

before(async () => {
  assert.ok(existsSync(FANOUT_BIN),
    `fanout binary not found at ${FANOUT_BIN}: run \`cargo build --bin fanout\` or set FANOUT_BIN`);
  assert.ok(existsSync(CHROMIUM),
    `Chromium not found at ${CHROMIUM}: apt-get install -y chromium (or set CHROMIUM_BIN)`);
  server = await startServer();
  proxy = await startProxy(server.port);
  browser = await chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: [
      "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
      "--disable-background-networking", "--disable-component-update", "--disable-sync",
    ],
  });
  pageA = await openDemo(browser, `http://127.0.0.1:${proxy.port}`, CHANNEL);
  pageB = await openDemo(browser, `http://127.0.0.1:${server.port}`, CHANNEL);
});

after(async () => {
  for (const page of [pageA, pageB]) {
    if (page) assert.deepEqual(page.errors.map(String), [], "uncaught errors in the demo page");
  }
  await browser?.close();
  proxy?.server.close();
  await stopServer(server);
});

test("a: two pages on one channel see each other's messages", async () => {
  await sendViaUi(pageA, "hello from A");
  await message(pageB, "hello from A").waitFor(WAIT);
  await message(pageA, "hello from A").waitFor(WAIT); // the sender's own copy comes back too
  await sendViaUi(pageB, "reply from B");
  await message(pageA, "reply from B").waitFor(WAIT);
  await message(pageB, "reply from B").waitFor(WAIT);
});

test("b: an HTTP API publish reaches both pages with its seq", async () => {
  const seq = await publishHttp(server.port, CHANNEL, { text: "from the backend" });
  for (const page of [pageA, pageB]) {
    const line = message(page, "from the backend");
    await line.waitFor(WAIT);
    assert.equal(await line.getAttribute("data-seq"), String(seq));
  }
});

test("c: after a network drop, A reconnects and gets what it missed, once, in order", async () => {
  const missed = ["missed 1", "missed 2", "missed 3"];
  proxy.down();
  await waitStatus(pageA, /^reconnecting in \d+\.\ds$/);
  const published = [];
  for (const text of missed) published.push(await publishHttp(server.port, CHANNEL, { text }));
  // B is still connected: the messages exist and were delivered live to it.
  for (const text of missed) await message(pageB, text).waitFor(WAIT);
  // A's network is down, so they can only reach A through the resume below.
  assert.equal(await message(pageA, "missed").count(), 0);

  proxy.up();
  await note(pageA, `resumed ${CHANNEL}`).waitFor(WAIT);
  await waitStatus(pageA, /^connected$/);
  for (const text of missed) await message(pageA, text).waitFor(WAIT);
  const got = (await texts(pageA)).filter((t) => t.includes("missed"));
  assert.deepEqual(got, published.map((seq, i) => `#${seq} ${missed[i]}`));
  assert.equal(await note(pageA, "may have been missed").count(), 0, "history covered the gap");

  // Live messages still flow after the resume (in both directions).
  await sendViaUi(pageB, "live after reconnect");
  await message(pageA, "live after reconnect").waitFor(WAIT);
  await sendViaUi(pageA, "A is back");
  await message(pageB, "A is back").waitFor(WAIT);
});

test("d: each log holds seqs 1..N, increasing, no duplicates", async () => {
  const a = await seqs(pageA);
  const b = await seqs(pageB);
  // 2 (scenario a) + 1 (b) + 3 + 2 (c): both joined the fresh channel before its first message.
  const all = Array.from({ length: 8 }, (_, i) => i + 1);
  assert.deepEqual(a, all);
  assert.deepEqual(b, all);
});

test("e: resuming across a server restart reports the gap and follows the new seqs", async () => {
  await pageB.close(); // it would keep retrying the old server's port
  pageB = null;
  proxy.down();
  await waitStatus(pageA, /^reconnecting/);
  await stopServer(server);
  server = await startServer();
  proxy.targetPort = server.port;
  proxy.up();
  // The old epoch is unknown to the new server: recovered:false, and a note in the log.
  await note(pageA, "some messages may have been missed").waitFor(WAIT);
  await waitStatus(pageA, /^connected$/);
  // The restarted server numbers room1 from 1 again; the page must not drop these as old.
  const seq = await publishHttp(server.port, CHANNEL, { text: "after restart" });
  assert.equal(seq, 1);
  const line = message(pageA, "after restart");
  await line.waitFor(WAIT);
  assert.equal(await line.getAttribute("data-seq"), "1");
});

test("f: with a JWT secret, the token field lets the page in", async () => {
  const secret = "browser-test-secret";
  const jwtServer = await startServer(["--jwt-secret", secret]);
  const page = await browser.newPage();
  try {
    page.on("pageerror", (err) => assert.fail(`uncaught error in the demo page: ${err}`));
    await page.goto(`http://127.0.0.1:${jwtServer.port}/?channel=room9`);
    // No token: the upgrade is refused (401) and the page keeps retrying.
    await waitStatus(page, /^reconnecting in/);
    const token = execFileSync(FANOUT_BIN, ["token", "--secret", secret, "--sub", "alice",
      "--subscribe", "room*", "--publish", "room*"], { encoding: "utf8" }).trim();
    await page.fill("#token", token);
    await page.click("#join");
    await note(page, "joined room9").waitFor(WAIT);
    await sendViaUi(page, "with a token");
    await message(page, "with a token").waitFor(WAIT);
    // The token's patterns still apply; the server's refusal is shown, not swallowed.
    await page.fill("#channel", "secret");
    await page.click("#join");
    await note(page, "error forbidden").waitFor(WAIT);
    assert.equal(new URL(page.url()).searchParams.get("channel"), "secret");
  } finally {
    await page.close();
    await stopServer(jwtServer);
  }
});

test("g: a channel the server forgot and numbers from 1 again still shows new messages", async () => {
  // Keeping no history, the server forgets a channel when its last subscriber leaves, and then
  // numbers it from 1 again in the same epoch: the page must not drop those seqs as old.
  const noHistory = await startServer(["--history-size", "0"]);
  const page = await browser.newPage();
  try {
    page.on("pageerror", (err) => assert.fail(`uncaught error in the demo page: ${err}`));
    await page.goto(`http://127.0.0.1:${noHistory.port}/?channel=room2`);
    await note(page, "joined room2").waitFor(WAIT);
    for (const text of ["old 1", "old 2"]) await publishHttp(noHistory.port, "room2", { text });
    await message(page, "old 2").waitFor(WAIT);
    // Leave room2 through the UI; the server handles the unsubscribe before the subscribe whose
    // reply shows "joined elsewhere", so room2 is forgotten by then.
    await page.fill("#channel", "elsewhere");
    await page.click("#join");
    await note(page, "joined elsewhere").waitFor(WAIT);
    await publishHttp(noHistory.port, "room2", { text: "new 1" }); // seq 1 again, today
    await page.fill("#channel", "room2");
    await page.click("#join");
    await note(page, "some messages may have been missed").waitFor(WAIT);
    const seq = await publishHttp(noHistory.port, "room2", { text: "new 2" });
    const line = message(page, "new 2");
    await line.waitFor(WAIT);
    assert.equal(await line.getAttribute("data-seq"), String(seq));
  } finally {
    await page.close();
    await stopServer(noHistory);
  }
});

test("h: a pusher-js page and a fanout.v1 page see each other's messages", async () => {
  assert.ok(existsSync(PUSHER_JS_FILE), `${PUSHER_JS_FILE} missing: run npm ci in tests/browser`);
  const server = await startServer(
    ["--pusher-app-id", "demo", "--pusher-app-key", "demo-key",
      "--pusher-app-secret", "demo-secret"],
    null, // the Pusher page publishes anonymously through POST /api/publish
  );
  const origin = `http://127.0.0.1:${server.port}`;
  const channel = "mixed";
  const [native, pusher] = [await browser.newPage(), await browser.newPage()];
  const errors = [];
  const requests = { native: [], pusher: [] };
  for (const [name, page] of Object.entries({ native, pusher })) {
    page.on("pageerror", (err) => errors.push(`${name}: ${err}`));
    page.on("request", (req) => requests[name].push(req.url()));
  }
  // No internet here: the CDN's pusher-js comes from node_modules, anything else off-site fails.
  await pusher.route(PUSHER_JS_URL, (route) =>
    route.fulfill({ path: PUSHER_JS_FILE, contentType: "text/javascript" }));
  const pusherLine = (text) => pusher.locator("#log > [data-event]", { hasText: text });
  try {
    await native.goto(`${origin}/?channel=${channel}`);
    await note(native, `joined ${channel}`).waitFor(WAIT);
    await waitStatus(native, /^connected$/);

    // Open in fanout.v1 mode, then choose Pusher: the page reloads in Pusher mode with the key
    // from ?key= and loads pusher-js only then.
    await pusher.goto(`${origin}/?channel=${channel}&key=demo-key`);
    await note(pusher, `joined ${channel}`).waitFor(WAIT);
    assert.deepEqual(requests.pusher.filter((u) => u.includes("pusher.com")), []);
    await pusher.selectOption("#protocol", "pusher");
    await pusher.waitForURL(/protocol=pusher/);
    assert.equal(await pusher.inputValue("#key"), "demo-key", "key taken from ?key=");
    assert.equal(await pusher.inputValue("#channel"), channel);
    await note(pusher, `joined ${channel}`).waitFor(WAIT);
    await waitStatus(pusher, /^connected$/);
    assert.equal(requests.pusher.filter((u) => u === PUSHER_JS_URL).length, 1,
      "pusher-js loaded once");

    // fanout.v1 -> Pusher: the publish names no event, so pusher-js sees "message".
    await sendViaUi(native, "from fanout.v1");
    const got = pusherLine("from fanout.v1");
    await got.waitFor(WAIT);
    assert.equal(await got.getAttribute("data-event"), "message");
    assert.equal(await got.textContent(), "message from fanout.v1");

    // Pusher -> fanout.v1, with an event name of our own; the sender's copy comes back too.
    await pusher.fill("#event", "chat");
    await sendViaUi(pusher, "from pusher-js");
    const echoed = pusherLine("from pusher-js");
    await echoed.waitFor(WAIT);
    assert.equal(await echoed.getAttribute("data-event"), "chat");
    const line = message(native, "from pusher-js");
    await line.waitFor(WAIT);
    assert.equal(await line.textContent(), "#2 chat from pusher-js");

    // No auth endpoint: the page says so instead of subscribing.
    await pusher.fill("#channel", "private-mixed");
    await pusher.click("#join");
    await note(pusher, "need an auth endpoint").waitFor(WAIT);

    // fanout.v1 mode stays dependency-free: every request it made went to this server.
    assert.ok(requests.native.includes(`${origin}/?channel=${channel}`), String(requests.native));
    assert.deepEqual(requests.native.filter((u) => !u.startsWith(`${origin}/`)), []);
    assert.deepEqual(errors, []);
  } finally {
    await native.close();
    await pusher.close();
    await stopServer(server);
  }
});
