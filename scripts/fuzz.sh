#!/usr/bin/env bash
# Runs every cargo-fuzz target in fuzz/ (each [[bin]] of fuzz/Cargo.toml) for a fixed time, and
# fails on any crash, failed assertion, hang (-timeout), over-limit allocation (-malloc_limit_mb)
# or memory growth (-rss_limit_mb). Each target starts from its committed seeds,
# fuzz/seeds/<target>/, plus whatever corpus earlier runs left in fuzz/corpus/<target>/ (not
# committed), with fuzz/dict/<target>.dict when there is one. A crash's input is written to
# fuzz/artifacts/<target>/; FUZZING.md says how to reproduce and minimise it.
#
# Usage: bash scripts/fuzz.sh [SECONDS] [TARGET...]
#   SECONDS  time per target (default 30); with FUZZ_BUDGET=N instead, N seconds are split
#            evenly over the targets (at most 30 each), so adding a target keeps the total.
#   TARGET   run only these (default: every target).
#
# Needs only the stable toolchain: cargo-fuzz's AddressSanitizer flag (-Zsanitizer) is unstable,
# so the build sets RUSTC_BOOTSTRAP=1 for this crate alone. Installs cargo-fuzz when missing.
set -euo pipefail
cd "$(dirname "$0")/.."

CARGO_FUZZ_VERSION=0.13.2
if ! cargo fuzz --version 2>/dev/null | grep -q "cargo-fuzz $CARGO_FUZZ_VERSION"; then
  echo "== installing cargo-fuzz $CARGO_FUZZ_VERSION"
  cargo install cargo-fuzz --version "$CARGO_FUZZ_VERSION" --locked
fi

seconds=""
if [ $# -gt 0 ] && [[ "$1" =~ ^[0-9]+$ ]]; then
  seconds="$1"
  shift
fi
if [ $# -gt 0 ]; then
  targets=("$@")
else
  mapfile -t targets < <(sed -n 's/^name = "\(.*\)"$/\1/p' fuzz/Cargo.toml | grep -vx fanout-fuzz)
fi
if [ -z "$seconds" ]; then
  if [ -n "${FUZZ_BUDGET:-}" ]; then
    seconds=$(( FUZZ_BUDGET / ${#targets[@]} ))
    [ "$seconds" -le 30 ] || seconds=30
    [ "$seconds" -ge 1 ] || seconds=1
  else
    seconds=30
  fi
fi

export RUSTC_BOOTSTRAP=1
echo "== cargo fuzz build (AddressSanitizer, debug assertions): ${#targets[@]} targets"
cargo fuzz build

# -timeout: one input taking over 10 s is a hang. -malloc_limit_mb: no single allocation over
# 64 MiB (every limit a target sets is far below; an allocation sized by a peer's declared length
# would pass it). -rss_limit_mb: the process stays under 2 GiB.
flags=(-timeout=10 -malloc_limit_mb=64 -rss_limit_mb=2048 -print_final_stats=1)
failed=()
for target in "${targets[@]}"; do
  mkdir -p "fuzz/corpus/$target" "fuzz/seeds/$target"
  dict=()
  [ -f "fuzz/dict/$target.dict" ] && dict=("-dict=fuzz/dict/$target.dict")
  echo "== fuzz $target for ${seconds} s"
  log="$(mktemp)"
  if cargo fuzz run "$target" "fuzz/corpus/$target" "fuzz/seeds/$target" -- \
    -max_total_time="$seconds" "${flags[@]}" "${dict[@]}" >"$log" 2>&1; then
    grep -E '^(#[0-9]+[[:space:]]+DONE|stat::number_of_executed_units)' "$log" || tail -n 2 "$log"
  else
    tail -n 60 "$log"
    echo "fuzz target $target FAILED: the input is in fuzz/artifacts/$target/"
    failed+=("$target")
  fi
  rm -f "$log"
done

passed=$(( ${#targets[@]} - ${#failed[@]} ))
if [ ${#failed[@]} -gt 0 ]; then
  echo "fuzzing failed: ${failed[*]}"
  echo "fuzz: $passed passed, ${#failed[@]} failed"
  exit 1
fi
echo "fuzzing: ${#targets[@]} targets, ${seconds} s each, no crash"
echo "fuzz: $passed passed, 0 failed"
