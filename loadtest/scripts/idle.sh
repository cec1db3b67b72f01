#!/usr/bin/env bash
# idle.sh: open CONNS connections at RAMP per second and hold them for DURATION; the generator
# samples the server's resident memory (--server-pid) and reports bytes per connection (the
# slope, not the total). Server: the library's echo example, or a peer in echo mode.
#
#   CONNS=10000 RAMP=5000 DURATION=10s loadtest/scripts/idle.sh
#   CONNS=50000 PROCESSES=4 ADDRS=4 loadtest/scripts/idle.sh    beyond one process's 20k fds
#
# Variables ([default]): CONNS [10000], RAMP connections/s [5000], DURATION [10s], plus those of
# common.sh. A process may hold 20,000 descriptors here: past ~19k connections set PROCESSES
# and ADDRS (the server too holds one per connection). Bounded by `timeout` at
# DURATION + CONNS/RAMP + SLACK.
set -euo pipefail
# shellcheck source=loadtest/scripts/common.sh disable=SC1091
. "$(dirname "$0")/common.sh"
lt_single idle
