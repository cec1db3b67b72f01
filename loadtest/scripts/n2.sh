#!/usr/bin/env bash
# n2.sh: uWebSockets' broadcast_test: N clients each send one message per iteration and wait for
# all N^2 deliveries: iterations/s and deliveries/s. Server: the library's broadcast example, or
# a peer in broadcast mode.
#
#   CONNS=100 PAYLOAD=64 DURATION=10s loadtest/scripts/n2.sh
#
#   CONNS=1000 THREADS=2 PROCESSES=2 LOAD_CPUS=1-2 loadtest/scripts/n2.sh
#   CONNS=1000 THREADS=2 RATE=20 loadtest/scripts/n2.sh        paced: 20 iterations a second
#
# Variables ([default]): CONNS [100] (the issue's target uses 1000), PAYLOAD bytes [64],
# DURATION [10s], RATE iterations/s at most [unset: each as soon as the last is done], plus
# those of common.sh (SERVER, WORKERS, THREADS, PROCESSES, LOAD_CPUS, ...):
# the clients spread over the generator's threads and processes, each iteration a phase the
# generator's monitor opens once every thread has all of the previous one. Read the summary's
# "bound by": "generator" means the figure is the generator's limit; add THREADS or PROCESSES
# and cores in LOAD_CPUS. Bounded by `timeout` at DURATION + SLACK. Loopback only.
set -euo pipefail
# shellcheck source=loadtest/scripts/common.sh disable=SC1091
. "$(dirname "$0")/common.sh"
lt_single n2
