// Shared harness for the Pusher protocol tests: starts the `fanout` binary, makes real clients
// (pusher-js, the `pusher` server SDK, raw WebSockets), receives webhooks, and waits on events.
//
// Every wait goes through `until`, which re-checks its predicate whenever a recorder notes
// something new (an event, a frame, a close, a webhook) and fails with a description of what was
// seen once its timeout passes. Nothing sleeps for a fixed time.

import { spawn } from "node:child_process";
import { createHash, createHmac } from "node:crypto";
import { EventEmitter } from "node:events";
import { existsSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import http from "node:http";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import PusherJS from "pusher-js";
import PusherSDK from "pusher";
import WebSocket from "ws";

// pusher-js's bundled faye-websocket arms a 30 s close timer whenever pusher-js closes a socket,
// even one the server already closed (as after a 4xxx close), and that timer alone would keep a
// test file's process alive for 30 s after its last test. Such timers are unref'd: they still
// fire while the process lives, but no longer hold it open.
const FAYE_CLOSE_TIMEOUT = 30_000;
const realSetTimeout = globalThis.setTimeout;
globalThis.setTimeout = function setTimeout(fn, delay, ...args) {
  const timer = realSetTimeout(fn, delay, ...args);
  if (delay === FAYE_CLOSE_TIMEOUT) timer.unref?.();
  return timer;
};

export const FANOUT_BIN =
  process.env.FANOUT_BIN || fileURLToPath(new URL("../../../target/debug/fanout", import.meta.url));

/** The default app: the one given with --pusher-app-id/-key/-secret. */
export const APP = Object.freeze({ id: "4242", key: "fanout-test-key", secret: "fanout-test-secret" });

/** How long one wait may take before the test fails (a few seconds, as the suite's budget allows). */
export const WAIT = 4000;

// ---------------------------------------------------------------------------------------------
// Waiting on events

const changed = new EventEmitter();
/** Servers that died on their own: named in every timeout, since nothing will arrive from them. */
const crashes = [];
changed.setMaxListeners(0);

/** Tells every pending `until` to look again. Recorders call it; tests rarely need to. */
export function notify() {
  changed.emit("change");
}

/** JSON for diagnostics: never throws (pusher-js error objects can be circular). */
export function show(value, max = 1500) {
  const seen = new WeakSet();
  let text;
  try {
    text = JSON.stringify(value, (_, v) => {
      if (typeof v === "object" && v !== null) {
        if (seen.has(v)) return "[circular]";
        seen.add(v);
      }
      if (v instanceof Error) return `${v.name}: ${v.message}`;
      return v;
    });
  } catch (e) {
    text = String(value);
  }
  if (text === undefined) text = String(value);
  return text.length > max ? `${text.slice(0, max)}...` : text;
}

/**
 * Resolves with the first truthy value of `predicate()`, evaluated now and after every `notify()`.
 * Rejects after `timeoutMs` with `what` (a string, or a function returning one, for diagnostics).
 */
export function until(predicate, timeoutMs = WAIT, what = "a condition") {
  return new Promise((resolve, reject) => {
    let done = false;
    const finish = () => {
      done = true;
      clearTimeout(timer);
      changed.off("change", check);
    };
    const check = () => {
      if (done) return;
      let value;
      try {
        value = predicate();
      } catch (err) {
        finish();
        reject(err);
        return;
      }
      if (value) {
        finish();
        resolve(value);
      }
    };
    const timer = setTimeout(() => {
      finish();
      const text = typeof what === "function" ? what() : what;
      reject(new Error(`timed out after ${timeoutMs} ms waiting for ${text}${crashNote()}`));
    }, timeoutMs);
    changed.on("change", check);
    check();
  });
}

function crashNote() {
  return crashes.map((c) => `\nNOTE: fanout (port ${c.port}) exited unexpectedly (${c.how}); ` +
    `its stderr ends with:\n${c.stderr.slice(-1500)}`).join("");
}

/**
 * For server state seen only through requests (the HTTP API): calls async `probe()` until it
 * returns a truthy value, each call right after the previous one answered. Rejects after
 * `timeoutMs` with the last value or error.
 */
export async function poll(probe, timeoutMs = WAIT, what = "a condition") {
  const deadline = Date.now() + timeoutMs;
  let last;
  for (;;) {
    try {
      last = await probe();
      if (last) return last;
    } catch (err) {
      last = err;
    }
    if (Date.now() > deadline) {
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}; last: ${show(last)}${crashNote()}`);
    }
    await new Promise((r) => setImmediate(r));
  }
}

/** An append-only list that wakes the waiters on every push. */
export class Log {
  constructor(name) {
    this.name = name;
    this.items = [];
  }
  push(item) {
    this.items.push(item);
    notify();
  }
  find(pred) {
    return this.items.find(pred);
  }
  filter(pred) {
    return this.items.filter(pred);
  }
  count(pred) {
    return this.items.filter(pred).length;
  }
  /** Waits for an item matching `pred` and returns it. */
  wait(pred, what, timeoutMs = WAIT) {
    return until(() => this.items.find(pred), timeoutMs,
      () => `${what} in ${this.name}; it holds ${this.items.length}: ${show(this.items.slice(-8))}`);
  }
  /** Waits until `n` items match `pred` and returns them. */
  waitCount(pred, n, what, timeoutMs = WAIT) {
    return until(() => {
      const got = this.items.filter(pred);
      return got.length >= n ? got : null;
    }, timeoutMs,
    () => `${n} x ${what} in ${this.name}; it holds ${this.items.length}: ${show(this.items.slice(-8))}`);
  }
}

// ---------------------------------------------------------------------------------------------
// The server

const children = new Set();
process.on("exit", () => {
  for (const child of children) child.kill("SIGKILL");
});

function tomlString(s) {
  return JSON.stringify(String(s)); // a TOML basic string is a JSON string for these values
}

/** TOML text with one `[[pusher.apps]]` table per app; `extra` is raw TOML put before them. */
export function pusherToml(apps, extra = "") {
  const lines = [extra];
  for (const app of apps) {
    lines.push("[[pusher.apps]]");
    for (const [k, v] of Object.entries(app)) {
      if (v === undefined) continue;
      if (Array.isArray(v)) lines.push(`${k} = [${v.map(tomlString).join(", ")}]`);
      else if (typeof v === "number" || typeof v === "boolean") lines.push(`${k} = ${v}`);
      else lines.push(`${k} = ${tomlString(v)}`);
    }
    lines.push("");
  }
  return lines.join("\n");
}

/**
 * Starts `fanout serve` on 127.0.0.1:0 and resolves once it prints its listening line.
 *
 *  - `app`: the app given as --pusher-app-id/-key/-secret (default APP); null for none.
 *  - `apps`: instead, apps written as `[[pusher.apps]]` tables to a TOML file (--config).
 *  - `workers`: --workers (default 1, so that one test sees one event loop; see workers.test.mjs).
 *  - `args`: more flags; `env`: more environment variables.
 */
export function startFanout({ app = APP, apps = null, workers = 1, args = [], env = {} } = {}) {
  if (!existsSync(FANOUT_BIN)) {
    return Promise.reject(new Error(
      `fanout binary not found at ${FANOUT_BIN}: run \`cargo build --bin fanout\` or set FANOUT_BIN`));
  }
  const argv = ["serve", "--listen", "127.0.0.1:0", "--workers", String(workers)];
  let dir = null;
  if (apps) {
    dir = mkdtempSync(join(tmpdir(), "fanout-pusher-"));
    const file = join(dir, "fanout.toml");
    writeFileSync(file, pusherToml(apps));
    argv.push("--config", file);
  } else if (app) {
    argv.push("--pusher-app-id", app.id, "--pusher-app-key", app.key, "--pusher-app-secret", app.secret);
  }
  argv.push(...args);
  // A clean environment for the FANOUT_* settings: only what this call sets.
  const childEnv = Object.fromEntries(
    Object.entries(process.env).filter(([k]) => !k.startsWith("FANOUT_") && k !== "RUST_LOG"));
  const child = spawn(FANOUT_BIN, argv, {
    stdio: ["ignore", "ignore", "pipe"],
    env: { ...childEnv, RUST_LOG: "warn", ...env },
  });
  children.add(child);
  let stderr = "";
  const cleanup = () => {
    children.delete(child);
    if (dir) rmSync(dir, { recursive: true, force: true });
  };
  return new Promise((resolve, reject) => {
    const fail = (err) => {
      clearTimeout(timer);
      child.kill("SIGKILL");
      cleanup();
      reject(new Error(`fanout ${argv.join(" ")}: ${err.message}\nstderr:\n${stderr}`));
    };
    const timer = setTimeout(() => fail(new Error("no listening line within 10 s")), 10_000);
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
        let stopping = false;
        const exited = new Promise((r) => child.once("exit", (code, signal) => {
          if (!stopping) crashes.push({ port: child.port, how: `${code ?? signal}`, stderr });
          r();
        }));
        resolve({
          port: child.port,
          http: `http://127.0.0.1:${child.port}`,
          ws: `ws://127.0.0.1:${child.port}`,
          child,
          stderr: () => stderr,
          async stop() {
            stopping = true;
            if (child.exitCode === null && child.signalCode === null) child.kill("SIGKILL");
            await exited;
            cleanup();
          },
        });
      }
    });
  });
}

/**
 * Fails fast, with the reason, when the server does not speak the Pusher protocol at /app/KEY
 * (called from each file's `before`, so that a missing feature fails every test at once instead
 * of each one timing out).
 */
export async function assertSpeaksPusher(server, app = APP) {
  const url = `${server.ws}/app/${app.key}?protocol=7&client=js&version=8.6.0`;
  const sock = await rawSocket(url, { timeoutMs: 3000 }).catch((err) => {
    throw new Error(`the server does not speak the Pusher protocol: ${url}: ${err.message}`);
  });
  try {
    const first = await sock.messages.wait(() => true, "a first message", 3000).catch(() => null);
    if (first?.json?.event !== "pusher:connection_established") {
      throw new Error(`the server does not speak the Pusher protocol: ${url} opened, but its first ` +
        `message is ${first ? first.text : "none within 3 s"} (expected pusher:connection_established)`);
    }
  } finally {
    sock.terminate();
  }
}

// ---------------------------------------------------------------------------------------------
// Raw WebSockets (the protocol on the wire)

/**
 * Opens a WebSocket and records everything: `messages` (a Log of {text, json}), `closed`
 * ({code, reason} once closed), `httpStatus` (when the upgrade was refused).
 * Resolves once open; rejects (with the HTTP status when there is one) if it cannot open.
 */
export function rawSocket(url, { protocols, timeoutMs = WAIT, headers } = {}) {
  const ws = new WebSocket(url, protocols, { headers, handshakeTimeout: timeoutMs });
  const sock = {
    ws,
    url,
    messages: new Log(`messages of ${url}`),
    closed: null,
    httpStatus: null,
    send(obj) {
      ws.send(typeof obj === "string" ? obj : JSON.stringify(obj));
    },
    /** Sends a Pusher event: {event, data, channel}. */
    emit(event, data, channel) {
      const msg = { event, data };
      if (channel !== undefined) msg.channel = channel;
      ws.send(JSON.stringify(msg));
    },
    /** The next message (after those already seen by `pred`) with this event name. */
    waitEvent(event, pred = () => true, what = event, timeoutMs = WAIT) {
      return sock.messages.wait((m) => m.json?.event === event && pred(m.json), what, timeoutMs);
    },
    waitClose(timeoutMs = WAIT) {
      return until(() => sock.closed, timeoutMs,
        () => `${url} to close; messages: ${show(sock.messages.items.map((m) => m.text))}`);
    },
    close(code, reason) {
      ws.close(code, reason);
    },
    /** Drops the TCP connection without a close frame. */
    terminate() {
      ws.terminate();
    },
  };
  rawSockets.add(sock);
  ws.on("message", (buf, isBinary) => {
    const text = isBinary ? `<binary ${buf.length} bytes>` : buf.toString("utf8");
    let json;
    try {
      json = JSON.parse(text);
    } catch {
      json = undefined;
    }
    sock.messages.push({ text, json, at: Date.now() });
  });
  ws.on("close", (code, reason) => {
    sock.closed = { code, reason: reason.toString("utf8") };
    rawSockets.delete(sock);
    notify();
  });
  return new Promise((resolve, reject) => {
    ws.on("unexpected-response", (req, res) => {
      sock.httpStatus = res.statusCode;
      let body = "";
      res.setEncoding("utf8");
      res.on("data", (c) => (body += c));
      res.on("end", () => reject(new Error(`upgrade refused: HTTP ${res.statusCode} ${body.slice(0, 200)}`)));
      res.on("error", () => reject(new Error(`upgrade refused: HTTP ${res.statusCode}`)));
      req.destroy();
    });
    ws.on("error", (err) => reject(new Error(`WebSocket error: ${err.message}`)));
    ws.on("open", () => resolve(sock));
  });
}

const rawSockets = new Set();

/** The URL pusher-js would use (protocol 7), with `query` overriding its parameters. */
export function pusherUrl(server, key = APP.key, query = {}) {
  const params = new URLSearchParams({ protocol: "7", client: "js", version: "8.6.0", flash: "false", ...query });
  for (const [k, v] of Object.entries(query)) if (v === null) params.delete(k);
  return `${server.ws}/app/${key}?${params}`;
}

/** A raw socket past the handshake: resolves with {sock, socketId, established}. */
export async function pusherSocket(server, key = APP.key) {
  const sock = await rawSocket(pusherUrl(server, key));
  const established = await sock.waitEvent("pusher:connection_established");
  const data = JSON.parse(established.json.data);
  sock.socketId = data.socket_id;
  return sock;
}

/** `data` of a Pusher message on the wire, parsed when it is a string. */
export function dataOf(msg) {
  const d = (msg.json ?? msg).data;
  return typeof d === "string" ? JSON.parse(d) : d;
}

// ---------------------------------------------------------------------------------------------
// pusher-js

const pusherClients = new Set();

/**
 * A pusher-js client of `server` as the brief's options give it, with recorders:
 * `client.rec.states` (state changes), `client.rec.errors` (connection 'error' events) and
 * `client.rec.messages` (every decoded message).
 */
export function pusherClient(server, options = {}) {
  const { key = APP.key, ...rest } = options;
  const client = new PusherJS(key, {
    wsHost: "127.0.0.1",
    wsPort: server.port,
    forceTLS: false,
    enabledTransports: ["ws"],
    cluster: "mt1",
    disableStats: true,
    ...rest,
  });
  pusherClients.add(client);
  client.rec = {
    states: new Log("pusher-js state changes"),
    errors: new Log("pusher-js connection errors"),
    messages: new Log("pusher-js messages"),
  };
  client.connection.bind("state_change", (s) => client.rec.states.push(s));
  client.connection.bind("error", (e) => client.rec.errors.push(e));
  client.connection.bind("message", (m) => client.rec.messages.push(m));
  return client;
}

/** Resolves once `client` is connected; fails with its state and errors. */
export function connected(client, timeoutMs = WAIT) {
  return until(() => client.connection.state === "connected", timeoutMs,
    () => `pusher-js to connect (state ${client.connection.state}, states ` +
      `${show(client.rec.states.items.map((s) => s.current))}, errors ${show(client.rec.errors.items)})`);
}

/** Records every event a pusher-js channel emits: `channel.rec`, a Log of {event, data}. */
export function record(channel) {
  if (!channel.rec) {
    channel.rec = new Log(`events of ${channel.name}`);
    channel.bind_global((event, data) => channel.rec.push({ event, data }));
  }
  return channel;
}

/**
 * Subscribes and waits for pusher:subscription_succeeded; fails early on a subscription error.
 * The channel records its events (`channel.rec`).
 */
export async function subscribed(client, name, timeoutMs = WAIT) {
  const channel = record(client.subscribe(name));
  const outcome = await channel.rec.wait(
    (e) => e.event === "pusher:subscription_succeeded" || e.event === "pusher:subscription_error",
    `the subscription to ${name} (client state ${client.connection.state}, ` +
      `errors ${show(client.rec.errors.items)})`, timeoutMs);
  if (outcome.event !== "pusher:subscription_succeeded") {
    throw new Error(`subscribing to ${name} failed: ${show(outcome.data)}`);
  }
  return channel;
}

/** Disconnects every pusher-js client and closes every raw socket still open. */
export function closeAllClients() {
  for (const client of pusherClients) client.disconnect();
  pusherClients.clear();
  for (const sock of rawSockets) sock.terminate();
  rawSockets.clear();
}

// ---------------------------------------------------------------------------------------------
// The server SDK and signatures

/** The `pusher` server SDK pointed at `server`. */
export function sdk(server, app = APP, extra = {}) {
  return new PusherSDK({
    appId: app.id,
    key: app.key,
    secret: app.secret,
    host: "127.0.0.1",
    port: String(server.port),
    useTLS: false,
    ...extra,
  });
}

/**
 * pusher-js `channelAuthorization.customHandler` signing with the SDK: presence channels as
 * `user` ({id, info}), private ones without channel data.
 */
export function channelAuthorizer(api, user = null) {
  return ({ socketId, channelName }, callback) => {
    try {
      const presence = channelName.startsWith("presence-");
      const data = presence ? { user_id: user.id, user_info: user.info ?? {} } : undefined;
      callback(null, api.authorizeChannel(socketId, channelName, data));
    } catch (err) {
      callback(err, null);
    }
  };
}

/** pusher-js `userAuthentication.customHandler` signing `user` ({id, ...}) with the SDK. */
export function userAuthenticator(api, user) {
  return ({ socketId }, callback) => {
    try {
      callback(null, api.authenticateUser(socketId, user));
    } catch (err) {
      callback(err, null);
    }
  };
}

export function hmacHex(secret, text) {
  return createHmac("sha256", secret).update(text).digest("hex");
}

/**
 * The HTTP API's signed query string, computed here independently of the SDK: the parameters
 * (auth_key, auth_timestamp, auth_version, body_md5 and `params`) sorted by key, signed over
 * "METHOD\nPATH\nQUERY".
 */
export function signQuery({ method, path, params = {}, body, app = APP, timestamp }) {
  const all = {
    auth_key: app.key,
    auth_timestamp: String(timestamp ?? Math.floor(Date.now() / 1000)),
    auth_version: "1.0",
    ...params,
  };
  if (body !== undefined) all.body_md5 = createHash("md5").update(body).digest("hex");
  const query = Object.keys(all).sort()
    .map((k) => `${k.toLowerCase()}=${all[k]}`).join("&");
  const signature = hmacHex(app.secret, [method.toUpperCase(), path, query].join("\n"));
  return `${query}&auth_signature=${signature}`;
}

/**
 * A raw signed request to the HTTP API (bypassing the SDK's own checks). `tamper(query)` may
 * alter the signed query string. Resolves with {status, text, json}.
 */
export async function signedRequest(server, { method = "POST", path, params, body, app = APP, timestamp, tamper }) {
  const bodyText = body === undefined ? undefined : typeof body === "string" ? body : JSON.stringify(body);
  let query = signQuery({ method, path, params, body: bodyText, app, timestamp });
  if (tamper) query = tamper(query);
  const res = await fetch(`${server.http}${path}?${query}`, {
    method,
    body: bodyText,
    headers: bodyText === undefined ? {} : { "Content-Type": "application/json" },
  });
  const text = await res.text();
  let json;
  try {
    json = JSON.parse(text);
  } catch {
    json = undefined;
  }
  return { status: res.status, text, json };
}

/** Resolves with the SDK's RequestError when `promise` rejects, fails when it resolves. */
export async function rejection(promise, what) {
  let res;
  try {
    res = await promise;
  } catch (err) {
    return err;
  }
  const body = await res.text().catch(() => "");
  throw new Error(`${what}: expected the SDK to reject, but it resolved with HTTP ${res.status} ${body}`);
}

// ---------------------------------------------------------------------------------------------
// Webhooks

/**
 * An HTTP server on 127.0.0.1:0 that records every request: `requests` is a Log of
 * {method, path, headers, rawBody, json}; `events` a Log of every event of every body, each with
 * the request it came in (`event.request`). Answers 200.
 */
export function webhookReceiver() {
  const requests = new Log("webhook requests");
  const events = new Log("webhook events");
  const server = http.createServer((req, res) => {
    const chunks = [];
    req.on("data", (c) => chunks.push(c));
    req.on("end", () => {
      const rawBody = Buffer.concat(chunks).toString("utf8");
      let json;
      try {
        json = JSON.parse(rawBody);
      } catch {
        json = undefined;
      }
      const request = { method: req.method, path: req.url, headers: req.headers, rawBody, json };
      res.writeHead(200, { "Content-Type": "application/json" });
      res.end("{}");
      requests.push(request);
      for (const event of Array.isArray(json?.events) ? json.events : []) {
        events.push({ ...event, request });
      }
    });
  });
  return new Promise((resolve) => {
    server.listen(0, "127.0.0.1", () => {
      const port = server.address().port;
      resolve({
        port,
        url: `http://127.0.0.1:${port}/hook`,
        requests,
        events,
        close: () => new Promise((r) => {
          server.closeAllConnections?.();
          server.close(() => r());
        }),
      });
    });
  });
}
