// The demo page over https:// and wss:// in headless Chromium, against the fanout binary with a
// certificate from a test CA this test makes (openssl). Chromium is told to trust that
// certificate by its public key, `--ignore-certificate-errors-spki-list=<base64 SHA-256 of the
// SPKI>`: a headless browser has no CA store the test may write to, and the flag trusts this
// one key only (a page with any other certificate error still fails). The server runs with
// --compression, and one test checks that Chromium negotiated permessage-deflate over wss:// and
// inflated a compressed publish (compressed frames inside TLS records).
//
//   cd tests/browser && npm ci && FANOUT_BIN=$PWD/../../target/debug/fanout node --test tls.test.mjs

import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { spawn, execFileSync } from "node:child_process";
import { createHash, X509Certificate } from "node:crypto";
import { existsSync, mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import https from "node:https";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";

const FANOUT_BIN =
  process.env.FANOUT_BIN || fileURLToPath(new URL("../../target/debug/fanout", import.meta.url));
const CHROMIUM = process.env.CHROMIUM_BIN || "/usr/bin/chromium";
const API_KEY = "testkey";
const WAIT = { timeout: 15_000 };

/** A test CA and a certificate for localhost it signed; returns the file paths. */
function makePki() {
  const dir = mkdtempSync(join(tmpdir(), "fanout-browser-tls-"));
  const path = (name) => join(dir, name);
  const openssl = (...args) => execFileSync("openssl", args, { stdio: ["ignore", "ignore", "pipe"] });
  const ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];
  openssl("req", "-x509", ...ec, "-keyout", path("ca.key"), "-out", path("ca.pem"), "-days", "30",
    "-subj", "/CN=fanout browser test CA");
  openssl("req", ...ec, "-keyout", path("key.pem"), "-out", path("leaf.csr"), "-subj", "/CN=localhost");
  writeFileSync(path("leaf.ext"), "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\n");
  openssl("x509", "-req", "-in", path("leaf.csr"), "-CA", path("ca.pem"), "-CAkey", path("ca.key"),
    "-CAcreateserial", "-out", path("leaf.pem"), "-days", "30", "-extfile", path("leaf.ext"));
  writeFileSync(path("cert.pem"), readFileSync(path("leaf.pem"), "utf8") + readFileSync(path("ca.pem"), "utf8"));
  return { ca: path("ca.pem"), cert: path("cert.pem"), key: path("key.pem"), leaf: path("leaf.pem") };
}

/** The base64 SHA-256 of a certificate's SubjectPublicKeyInfo, as Chromium's flag wants it. */
function spkiHash(pemFile) {
  const spki = new X509Certificate(readFileSync(pemFile)).publicKey.export({ type: "spki", format: "der" });
  return createHash("sha256").update(spki).digest("base64");
}

function startServer(pki) {
  const child = spawn(FANOUT_BIN, ["serve", "--listen", "127.0.0.1:0", "--api-key", API_KEY,
    "--tls-cert", pki.cert, "--tls-key", pki.key, "--compression"], { stdio: ["ignore", "ignore", "pipe"] });
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
      const m = stderr.match(/listening on https:\/\/127\.0\.0\.1:(\d+)\//);
      if (m && !child.port) {
        clearTimeout(timer);
        child.removeAllListeners("exit");
        child.port = Number(m[1]);
        resolve(child);
      }
    });
  });
}

/** POST /api/publish over https, trusting the test CA. */
function publish(port, ca, channel, data) {
  const body = JSON.stringify({ channel, data });
  return new Promise((resolve, reject) => {
    const req = https.request({
      host: "127.0.0.1", port, servername: "localhost", path: "/api/publish", method: "POST", ca,
      headers: { Authorization: `Bearer ${API_KEY}`, "Content-Type": "application/json",
        "Content-Length": Buffer.byteLength(body) },
    }, (res) => {
      let text = "";
      res.setEncoding("utf8");
      res.on("data", (c) => (text += c));
      res.on("end", () => (res.statusCode === 200 ? resolve(JSON.parse(text)) : reject(new Error(text))));
    });
    req.on("error", reject);
    req.end(body);
  });
}

let pki, server, browser;

before(async () => {
  assert.ok(existsSync(FANOUT_BIN), `fanout binary not found at ${FANOUT_BIN}`);
  assert.ok(existsSync(CHROMIUM), `Chromium not found at ${CHROMIUM}`);
  pki = makePki();
  server = await startServer(pki);
  browser = await chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: [
      "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
      "--disable-background-networking", "--disable-component-update", "--disable-sync",
      `--ignore-certificate-errors-spki-list=${spkiHash(pki.leaf)}`,
    ],
  });
});

after(async () => {
  await browser?.close();
  if (server && server.exitCode === null) {
    const exited = new Promise((resolve) => server.once("exit", resolve));
    server.kill("SIGTERM");
    await exited;
  }
});

test("the demo page over https talks wss:// and receives an https publish", async () => {
  const page = await browser.newPage();
  const errors = [];
  page.on("pageerror", (err) => errors.push(String(err)));
  const sockets = [];
  page.on("websocket", (ws) => sockets.push(ws.url()));
  await page.goto(`https://localhost:${server.port}/?channel=secure`);
  await page.locator("#log > .note", { hasText: "joined secure" }).waitFor(WAIT);
  assert.ok(sockets.some((url) => url.startsWith(`wss://localhost:${server.port}/`)), sockets.join(", "));
  await page.fill("#text", "typed over wss");
  await page.click("#send");
  await page.locator("#log > [data-seq]", { hasText: "typed over wss" }).waitFor(WAIT);
  const { seq } = await publish(server.port, readFileSync(pki.ca), "secure", { text: "published over https" });
  const line = page.locator("#log > [data-seq]", { hasText: "published over https" });
  await line.waitFor(WAIT);
  assert.equal(await line.getAttribute("data-seq"), String(seq));
  assert.deepEqual(errors, []);
});

test("Chromium negotiates permessage-deflate over wss:// and inflates a compressed publish", async () => {
  const page = await browser.newPage();
  await page.goto(`https://localhost:${server.port}/`);
  const text = "compressed inside TLS records ".repeat(40); // over the 256-byte threshold
  const result = await page.evaluate(async ({ port, key, text }) => {
    const ws = new WebSocket(`wss://localhost:${port}/`, "fanout.v1");
    await new Promise((resolve, reject) => { ws.onopen = resolve; ws.onerror = () => reject(new Error("no open")); });
    const next = (op) => new Promise((resolve) => {
      ws.onmessage = (e) => { const m = JSON.parse(e.data); if (m.op === op) resolve(m); };
    });
    const subscribed = next("subscribed");
    ws.send(JSON.stringify({ op: "subscribe", channel: "deflated" }));
    await subscribed;
    const message = next("message");
    const published = await fetch("/api/publish", {
      method: "POST",
      headers: { Authorization: `Bearer ${key}`, "Content-Type": "application/json" },
      body: JSON.stringify({ channel: "deflated", data: { text } }),
    });
    const got = await message;
    return { extensions: ws.extensions, status: published.status, data: got.data };
  }, { port: server.port, key: API_KEY, text });
  assert.match(result.extensions, /^permessage-deflate/, "the extension Chromium negotiated");
  assert.equal(result.status, 200);
  assert.deepEqual(result.data, { text });
});

test("a certificate Chromium was not told to trust is refused", async () => {
  const other = makePki();
  const second = await startServer(other);
  try {
    const page = await browser.newPage();
    await assert.rejects(page.goto(`https://localhost:${second.port}/`), /ERR_CERT_AUTHORITY_INVALID/);
  } finally {
    const exited = new Promise((resolve) => second.once("exit", resolve));
    second.kill("SIGTERM");
    await exited;
  }
});
