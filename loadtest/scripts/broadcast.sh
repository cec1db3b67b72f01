#!/usr/bin/env bash
# broadcast.sh: N subscribers and a publisher at RATE messages/s: deliveries/s, publish-to-delivery
# latency (corrected for coordinated omission), messages lost, duplicated or out of order.
#
# With SERVER=fanout and PROTOCOL=fanout (the default for fanout) the server is `fanout serve`
# and the generator speaks its channel protocol, publishing over WebSocket (VIA=ws) or the HTTP
# API (VIA=http, with API_KEY). With PROTOCOL=raw (the default for the peers, which know no
# channels) the server is the broadcast example or a peer in broadcast mode: every message sent
# reaches every connection.
#
#   CONNS=1000 RATE=1000 DURATION=10s loadtest/scripts/broadcast.sh
#   VIA=http loadtest/scripts/broadcast.sh
#   SERVER=fastwebsockets loadtest/scripts/broadcast.sh
#
# Variables ([default]): CONNS [1000], RATE msg/s [1000], DURATION [10s], VIA ws|http [ws],
# PROTOCOL fanout|raw [fanout for SERVER=fanout, raw otherwise], CHANNEL [bench],
# API_KEY [loadtest], plus those of common.sh. Bounded by `timeout` at DURATION + SLACK.
set -euo pipefail
# shellcheck source=loadtest/scripts/common.sh disable=SC1091
. "$(dirname "$0")/common.sh"
lt_single broadcast
