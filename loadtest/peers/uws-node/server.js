// A peer server for fanout-load on uWebSockets.js: uWebSockets' C++ server (µSockets event loop,
// its WebSocket parser, pub/sub and shared compressor) with handlers in JavaScript.
//
//   node server.js --mode echo|broadcast|shootout [--compression] ADDR
//
// Prints `peer-uws-node (MODE): listening on ws://ADDR/` on stderr once bound (the real port when
// ADDR asks for port 0). One process, one thread.
//
// - echo: every text or binary message goes back to its sender.
// - broadcast: every message goes to every open connection, the sender included (every
//   connection subscribes to one topic; `app.publish` reaches them all).
// - shootout: `{"type":"echo","payload":X}` goes back as it came; `{"type":"broadcast",
//   "payload":X}` publishes `{"type":"broadcast","payload":X}` to everyone and then sends
//   `{"type":"broadcastResult","payload":X}` to the sender.
//
// --compression is uWS.SHARED_COMPRESSOR: permessage-deflate with no context takeover, a published
// message compressed once for all its subscribers, as fanout does.
//
// The binaries come from the npm package `uwebsockets` (see package.json and loadtest/README.md),
// a republish of uWebSockets.js whose builds load on Debian 12's glibc 2.36; the upstream builds
// are on GitHub, which this machine cannot reach, and the npm republish of v20.57 needs glibc 2.38.
'use strict';

const uWS = require('uwebsockets');

function usage() {
  console.error('usage: node server.js --mode echo|broadcast|shootout [--compression] ADDR');
  process.exit(2);
}

let mode = null;
let compression = false;
let addr = null;
const args = process.argv.slice(2);
for (let i = 0; i < args.length; i++) {
  if (args[i] === '--mode') mode = args[++i];
  else if (args[i] === '--compression') compression = true;
  else if (!addr && !args[i].startsWith('--')) addr = args[i];
  else usage();
}
if (!['echo', 'broadcast', 'shootout'].includes(mode) || !addr) usage();
const at = addr.lastIndexOf(':');
const host = addr.slice(0, at);
const port = Number(addr.slice(at + 1));
const TOPIC = 'all';
const decoder = new TextDecoder();

const app = uWS.App();
app.ws('/*', {
  compression: compression ? uWS.SHARED_COMPRESSOR : uWS.DISABLED,
  maxPayloadLength: 16 << 20,
  maxBackpressure: 64 << 20,
  idleTimeout: 120,
  open: (ws) => {
    if (mode !== 'echo') ws.subscribe(TOPIC);
  },
  message: (ws, message, isBinary) => {
    if (mode === 'echo') {
      ws.send(message, isBinary, compression);
    } else if (mode === 'broadcast') {
      // The fourth argument asks for compression; uWS compresses a publish once (shared).
      app.publish(TOPIC, message, isBinary, compression);
    } else {
      shootout(ws, message, isBinary);
    }
  },
});

function shootout(ws, message, isBinary) {
  let parsed;
  try {
    parsed = JSON.parse(decoder.decode(message));
  } catch {
    return;
  }
  if (parsed.type === 'echo') {
    ws.send(message, isBinary, compression);
  } else if (parsed.type === 'broadcast') {
    const payload = JSON.stringify(parsed.payload);
    app.publish(TOPIC, `{"type":"broadcast","payload":${payload}}`, false, compression);
    ws.send(`{"type":"broadcastResult","payload":${payload}}`, false, compression);
  }
}

app.listen(host, port, (token) => {
  if (!token) {
    console.error(`peer-uws-node: cannot listen on ${addr}`);
    process.exit(1);
  }
  console.error(`peer-uws-node (${mode}): listening on ws://${host}:${uWS.us_socket_local_port(token)}/`);
});

for (const signal of ['SIGTERM', 'SIGINT']) {
  process.on(signal, () => process.exit(0));
}
