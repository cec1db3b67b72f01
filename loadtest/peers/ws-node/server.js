// A peer server for fanout-load on Node.js and the `ws` package, the WebSocket server most
// Node.js applications use, with its permessage-deflate support.
//
//   node server.js --mode echo|broadcast [--compression] ADDR
//
// Prints `peer-ws-node (MODE): listening on ws://ADDR/` on stderr once bound (the real port when
// ADDR asks for port 0). One process, one JavaScript thread; `ws` compresses on libuv's thread
// pool (4 threads by default), so measure the whole process's CPU.
//
// - echo: every text or binary message goes back to its sender.
// - broadcast: every message goes to every open connection, the sender included.
//
// --compression accepts permessage-deflate offers with no context takeover on either side and
// level 1, as fanout's `--compression` does; `ws` compresses each message once per connection
// (there is no shared compressor), which is what the comparison shows. Messages up to 16 MiB.
'use strict';

const { WebSocketServer } = require('ws');

function usage() {
  console.error('usage: node server.js --mode echo|broadcast [--compression] ADDR');
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
if (!['echo', 'broadcast'].includes(mode) || !addr) usage();
const at = addr.lastIndexOf(':');
const host = addr.slice(0, at);
const port = Number(addr.slice(at + 1));

const perMessageDeflate = compression
  ? {
      zlibDeflateOptions: { level: 1 },
      serverNoContextTakeover: true,
      clientNoContextTakeover: true,
      threshold: 0,
      concurrencyLimit: 10,
    }
  : false;

const wss = new WebSocketServer({ host, port, perMessageDeflate, maxPayload: 16 << 20, clientTracking: true });

wss.on('connection', (ws) => {
  ws.on('error', () => {});
  ws.on('message', (data, isBinary) => {
    if (mode === 'echo') {
      ws.send(data, { binary: isBinary });
      return;
    }
    for (const client of wss.clients) {
      if (client.readyState === 1) client.send(data, { binary: isBinary });
    }
  });
});

wss.on('listening', () => {
  const a = wss.address();
  console.error(`peer-ws-node (${mode}): listening on ws://${a.address}:${a.port}/`);
});

for (const signal of ['SIGTERM', 'SIGINT']) {
  process.on(signal, () => process.exit(0));
}
