// pusher-js's and Laravel Echo's browser bundles in a real headless Chromium (Debian's
// /usr/bin/chromium, driven by playwright-core), loaded from a page this test serves.

import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { existsSync, readFileSync } from "node:fs";
import http from "node:http";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";
import { APP, assertSpeaksPusher, sdk, startFanout } from "./helpers.mjs";

const CHROMIUM = process.env.CHROMIUM_BIN || "/usr/bin/chromium";
const asset = (p) => fileURLToPath(new URL(`./node_modules/${p}`, import.meta.url));
const ASSETS = {
  "/pusher.min.js": asset("pusher-js/dist/web/pusher.min.js"),
  "/echo.iife.js": asset("laravel-echo/dist/echo.iife.js"),
};

const PAGE = `<!doctype html>
<meta charset="utf-8">
<title>pusher test page</title>
<script src="/pusher.min.js"></script>
<script src="/echo.iife.js"></script>
<script>
  const q = new URLSearchParams(location.search);
  const options = {
    wsHost: "127.0.0.1", wsPort: Number(q.get("port")), forceTLS: false,
    enabledTransports: ["ws"], cluster: "mt1", disableStats: true,
  };
  window.received = [];
  window.ready = { pusher: false, echo: false };
  window.errors = [];

  const pusher = new Pusher(q.get("key"), options);
  pusher.connection.bind("error", (e) => window.errors.push(JSON.stringify(e.data || e.type || e)));
  const news = pusher.subscribe("browser-news");
  news.bind("pusher:subscription_succeeded", () => { window.ready.pusher = true; });
  news.bind("headline", (data) => window.received.push({ via: "pusher-js", data }));

  // Echo's IIFE exposes its module; Echo finds window.Pusher by itself.
  const echo = new Echo.default({ broadcaster: "pusher", key: q.get("key"), ...options });
  echo.channel("browser-orders")
    .subscribed(() => { window.ready.echo = true; })
    .listen(".OrderShipped", (data) => window.received.push({ via: "echo", data }));
  window.socketId = () => pusher.connection.socket_id;
</script>`;

let server, site, browser;

before(async () => {
  assert.ok(existsSync(CHROMIUM), `Chromium not found at ${CHROMIUM}: apt-get install -y chromium (or set CHROMIUM_BIN)`);
  for (const file of Object.values(ASSETS)) assert.ok(existsSync(file), `${file} missing: npm ci in gateway/tests/pusher`);
  server = await startFanout();
  await assertSpeaksPusher(server);
  site = http.createServer((req, res) => {
    const path = new URL(req.url, "http://x").pathname;
    if (ASSETS[path]) {
      res.writeHead(200, { "Content-Type": "text/javascript" });
      res.end(readFileSync(ASSETS[path]));
    } else if (path === "/") {
      res.writeHead(200, { "Content-Type": "text/html; charset=utf-8" });
      res.end(PAGE);
    } else {
      res.writeHead(404);
      res.end();
    }
  });
  await new Promise((r) => site.listen(0, "127.0.0.1", r));
  browser = await chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: [
      "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
      "--disable-background-networking", "--disable-component-update", "--disable-sync",
    ],
  });
});

after(async () => {
  await browser?.close();
  site?.close();
  await server?.stop();
});

test("in Chromium, pusher-js and Echo subscribe and receive SDK triggers", async () => {
  const page = await browser.newPage();
  const pageErrors = [];
  page.on("pageerror", (err) => pageErrors.push(String(err)));
  try {
    await page.goto(`http://127.0.0.1:${site.address().port}/?port=${server.port}&key=${APP.key}`);
    await page.waitForFunction(() => window.ready.pusher && window.ready.echo, null, { timeout: 8000 })
      .catch(async (err) => {
        const state = await page.evaluate(() => ({ ready: window.ready, errors: window.errors }));
        throw new Error(`the page never subscribed: ${JSON.stringify(state)}; page errors ${pageErrors}; ${err.message}`);
      });
    assert.match(await page.evaluate(() => window.socketId()), /^\d+\.\d+$/);
    const api = sdk(server);
    await api.trigger("browser-news", "headline", { title: "fanout speaks Pusher" });
    await api.trigger("browser-orders", "OrderShipped", { id: 99 });
    await page.waitForFunction(() => window.received.length >= 2, null, { timeout: 5000 });
    const received = await page.evaluate(() => window.received);
    assert.deepEqual(
      received.sort((a, b) => a.via.localeCompare(b.via)),
      [{ via: "echo", data: { id: 99 } }, { via: "pusher-js", data: { title: "fanout speaks Pusher" } }],
    );
    assert.deepEqual(pageErrors, []);
  } finally {
    await page.close();
  }
});
