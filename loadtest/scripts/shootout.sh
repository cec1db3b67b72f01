#!/usr/bin/env bash
# shootout.sh: the websocket-shootout protocol: clients ramp up STEP at a time until the p95 round
# trip (broadcast sent to broadcastResult received) passes LIMIT_MS, or CONNS clients, or
# DURATION: the most clients served. Server: the library's shootout example, or a peer in
# shootout mode.
#
#   STEP=100 LIMIT_MS=250 loadtest/scripts/shootout.sh
#
#   CONNS=40000 STEP=1000 PROCESSES=4 ADDRS=8 LOAD_CPUS=1-3 loadtest/scripts/shootout.sh
#
# Variables ([default]): CONNS most clients [5000], STEP [100], LIMIT_MS [250], DURATION for the
# whole ramp [30s], plus those of common.sh (THREADS, PROCESSES, ADDRS, LOAD_CPUS, ...): each
# step's clients spread over the generator's threads and processes, its round trips are sampled
# by up to 4 of them (--concurrent), and the generator's monitor decides the next step from the
# merged samples. Bounded by `timeout` at DURATION + SLACK. Loopback only.
set -euo pipefail
# shellcheck source=loadtest/scripts/common.sh disable=SC1091
. "$(dirname "$0")/common.sh"
lt_single shootout
