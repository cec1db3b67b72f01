#!/usr/bin/env bash
# slow.sh: SLOW of CONNS subscribers never read while a publisher sends RATE messages/s: the
# healthy subscribers' latency and the server's memory over time (--server-pid). fanout closes a
# slow consumer once its queue passes its cap; the peers queue without bound.
#
#   CONNS=1000 SLOW=10 RATE=1000 DURATION=10s loadtest/scripts/slow.sh
#
# Server: the broadcast example or a peer in broadcast mode (PROTOCOL=raw, the default here),
# `fanout serve` with PROTOCOL=fanout, or a Pusher server (`fanout serve` with a Pusher app, or
# SERVER=sockudo) with PROTOCOL=pusher (the default for sockudo).
# Variables ([default]): CONNS [1000], SLOW [10], RATE msg/s [1000], DURATION [10s],
# PROTOCOL [raw], VIA [ws], HTTP_CONNS [1], plus those of common.sh. Bounded by `timeout` at
# DURATION + SLACK.
set -euo pipefail
# shellcheck source=loadtest/scripts/common.sh disable=SC1091
. "$(dirname "$0")/common.sh"
lt_single slow
