#!/usr/bin/env bash
# connect.sh: upgrades/s at RATE or flat out, handshake latency percentiles, failures by reason.
# Server: the library's echo example, or a peer in echo mode.
#
#   DURATION=10s loadtest/scripts/connect.sh          flat out
#   RATE=20000 DURATION=10s loadtest/scripts/connect.sh
#
# Variables ([default]): RATE upgrades/s [empty: flat out], DURATION [10s], plus those of
# common.sh (ADDRS spreads the connections over more 127.0.0.x source/destination tuples, each
# of which has ~28k ephemeral ports). Bounded by `timeout` at DURATION + SLACK. Loopback only.
set -euo pipefail
# shellcheck source=loadtest/scripts/common.sh disable=SC1091
. "$(dirname "$0")/common.sh"
lt_single connect
