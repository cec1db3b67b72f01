#!/usr/bin/env bash
# build.sh: builds sockudo, a Rust Pusher Channels server, from crates.io into ./target/bin/sockudo.
#
# The version is pinned and `--locked` builds it with the Cargo.lock the crate ships, so every
# build of this peer compiles the same code. `--no-default-features --features local` leaves out
# OpenTelemetry and the v2 extras (delta compression, tag filtering, recovery): one node with the
# in-memory adapter, cache and app manager, the apps read from the config file, is all a
# comparison needs. Only crates are downloaded; the build needs, from the system, a C compiler and
# make (jemalloc), pkg-config and OpenSSL's headers (openssl-sys), and protoc (a build script of
# metrics-exporter-tcp). On Debian: apt-get install build-essential pkg-config libssl-dev
# protobuf-compiler. This script checks for them and installs nothing.
#
# The build directory (./target/build) is kept, so a second run, with nothing changed, does no
# work. The first build took about 22 minutes on a shared 2-core machine.
# Environment: SOCKUDO_VERSION [5.2.0], JOBS (cargo -j) [cargo's default], SOCKUDO_FEATURES
# [local]. `SOCKUDO_FEATURES=local,redis` builds the variant with the Redis adapter (the cluster
# comparison, loadtest/scripts/cluster.sh) into ./target/redis/bin/sockudo, beside the default one.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
version=${SOCKUDO_VERSION:-5.2.0}
jobs=()
[[ -n ${JOBS:-} ]] && jobs=(-j "$JOBS")

missing=()
for tool in cc make pkg-config protoc; do
    command -v "$tool" >/dev/null || missing+=("$tool")
done
if command -v pkg-config >/dev/null && ! pkg-config --exists openssl; then
    missing+=("OpenSSL headers (libssl-dev)")
fi
if ((${#missing[@]})); then
    printf 'build.sh: sockudo needs: %s\n' "${missing[*]}" >&2
    printf 'build.sh: on Debian: apt-get install build-essential pkg-config libssl-dev protobuf-compiler\n' >&2
    exit 1
fi

features=${SOCKUDO_FEATURES:-local}
root="$here/target"
[[ $features == local ]] || root="$here/target/${features#local,}"
CARGO_TARGET_DIR="$here/target/build" cargo install sockudo --version "$version" --locked \
    --no-default-features --features "$features" --root "$root" "${jobs[@]}"
