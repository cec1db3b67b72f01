#!/usr/bin/env bash
# broadcast.sh: N subscribers and a publisher at RATE messages/s: deliveries/s, publish-to-delivery
# latency (corrected for coordinated omission), messages lost, duplicated or out of order.
#
# With SERVER=fanout and PROTOCOL=fanout (the default for fanout) the server is `fanout serve`
# and the generator speaks its channel protocol, publishing over WebSocket (VIA=ws) or the HTTP
# API (VIA=http, with API_KEY). With PROTOCOL=raw (the default for the peers, which know no
# channels) the server is the broadcast example or a peer in broadcast mode: every message sent
# reaches every connection. With PROTOCOL=pusher (the default for SERVER=sockudo) the server is
# `fanout serve` with a Pusher app or sockudo, the generator subscribes with Pusher protocol 7 and
# publishes through the signed HTTP API, on HTTP_CONNS keep-alive connections.
#
#   CONNS=1000 RATE=1000 DURATION=10s loadtest/scripts/broadcast.sh
#   VIA=http loadtest/scripts/broadcast.sh
#   SERVER=fastwebsockets loadtest/scripts/broadcast.sh
#   SERVER=sockudo CONNS=1000 RATE=100 loadtest/scripts/broadcast.sh
#   PROTOCOL=pusher loadtest/scripts/broadcast.sh
#
# Variables ([default]): CONNS [1000], RATE msg/s [1000], DURATION [10s], VIA ws|http [ws],
# PROTOCOL fanout|raw|pusher [fanout for SERVER=fanout, pusher for sockudo, raw otherwise],
# CHANNEL [bench], API_KEY [loadtest], HTTP_CONNS [1], plus those of common.sh (PUSHER_APP_*).
# Bounded by `timeout` at DURATION + SLACK.
set -euo pipefail
# shellcheck source=loadtest/scripts/common.sh disable=SC1091
. "$(dirname "$0")/common.sh"
lt_single broadcast
