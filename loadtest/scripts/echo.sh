#!/usr/bin/env bash
# echo.sh: N connections, K messages in flight each, echoed back: messages/s, MB/s and round-trip
# latency percentiles. Server: the library's echo example, or a peer in echo mode.
#
#   CONNS=100 PAYLOAD=64 IN_FLIGHT=1 DURATION=10s loadtest/scripts/echo.sh
#   SERVER=tokio-tungstenite loadtest/scripts/echo.sh
#
# Variables ([default]): CONNS [100], PAYLOAD bytes [64], IN_FLIGHT [1], DURATION [10s], plus
# those of common.sh (SERVER, WORKERS, THREADS, PROCESSES, ADDRS, SERVER_CPUS, LOAD_CPUS, OUT,
# SKIP_BUILD, SLACK, EXTRA). Bounded by `timeout` at DURATION + SLACK. Loopback only.
set -euo pipefail
# shellcheck source=loadtest/scripts/common.sh disable=SC1091
. "$(dirname "$0")/common.sh"
lt_single echo
