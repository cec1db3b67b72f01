#!/usr/bin/env bash
# The whole test suite, as README.md gives it. Installs what the tests need when it is missing;
# a missing dependency fails the run, it never skips tests.
#
#   bash scripts/test.sh
set -euo pipefail
cd "$(dirname "$0")/.."

# Python side: the independent-client interop suite (websockets, pytest; cryptography makes the
# TLS tests' CA), pinned.
if ! python3 -c 'import websockets, pytest, cryptography' 2>/dev/null; then
  echo "test.sh: installing tests/python/requirements.txt" >&2
  python3 -m pip install --quiet --disable-pip-version-check -r tests/python/requirements.txt
fi

# The gateway's cluster tests (gateway/tests/cluster.rs) start Debian's redis-server on their own
# ports. A failed install fails the run; the tests never skip.
if ! command -v redis-server >/dev/null; then
  echo "test.sh: installing redis-server" >&2
  DEBIAN_FRONTEND=noninteractive apt-get update
  DEBIAN_FRONTEND=noninteractive apt-get install -y redis-server
fi

echo "== cargo test (debug; also builds the examples): library, gateway and load generator"
cargo test --workspace

# The default members (the library and the gateway), as before the gateway had its own crate.
echo "== cargo test --release (library and gateway)"
cargo test --release

echo "== python interop tests (websockets client against the echo example)"
cargo build --example echo
FANOUT_ECHO_BIN="$PWD/target/debug/examples/echo" python3 -m pytest -q -p no:cacheprovider tests/python

# npm_install DIR: the packages DIR's lock file pins, installed when missing or older than the
# lock file (a checkout whose lock file gained a package gets it), never from a floating range.
npm_install() {
  if [ ! -f "$1/node_modules/.package-lock.json" ] || [ "$1/package-lock.json" -nt "$1/node_modules/.package-lock.json" ]; then
    (cd "$1" && npm ci --no-audit --no-fund)
  fi
}

echo "== browser tests (the demo page in headless Chromium, driven by playwright-core; over TLS too)"
# Debian's Chromium: Playwright never downloads a browser here. A failed install fails the run.
if [ ! -x /usr/bin/chromium ]; then
  echo "test.sh: installing chromium" >&2
  DEBIAN_FRONTEND=noninteractive apt-get update
  DEBIAN_FRONTEND=noninteractive apt-get install -y chromium
fi
npm_install tests/browser
cargo build --bin fanout   # the gateway crate's binary (gateway/), found from the root
FANOUT_BIN="$PWD/target/debug/fanout" node --test tests/browser/demo.test.mjs
# The demo page over https:// and wss:// (a test CA made with openssl, trusted by its key).
if ! command -v openssl >/dev/null; then
  echo "test.sh: installing openssl" >&2
  DEBIAN_FRONTEND=noninteractive apt-get update
  DEBIAN_FRONTEND=noninteractive apt-get install -y openssl
fi
FANOUT_BIN="$PWD/target/debug/fanout" node --test tests/browser/tls.test.mjs

echo "== Pusher protocol tests (pusher-js, Laravel Echo, the pusher server SDK, Chromium)"
npm_install gateway/tests/pusher
cargo build --bin fanout
FANOUT_BIN="$PWD/target/debug/fanout" node --test gateway/tests/pusher/
