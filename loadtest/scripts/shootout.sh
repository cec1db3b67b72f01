#!/usr/bin/env bash
# shootout.sh: the websocket-shootout protocol: clients ramp up STEP at a time until the p95 round
# trip (broadcast sent to broadcastResult received) passes LIMIT_MS, or CONNS clients, or
# DURATION: the most clients served. Server: the library's shootout example, or a peer in
# shootout mode.
#
#   STEP=100 LIMIT_MS=250 loadtest/scripts/shootout.sh
#
# Variables ([default]): CONNS most clients [5000], STEP [100], LIMIT_MS [250], DURATION for the
# whole ramp [30s], plus those of common.sh (the generator runs this on one thread). Bounded by
# `timeout` at DURATION + SLACK. Loopback only.
set -euo pipefail
# shellcheck source=loadtest/scripts/common.sh disable=SC1091
. "$(dirname "$0")/common.sh"
lt_single shootout
