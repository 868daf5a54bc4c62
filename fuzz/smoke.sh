#!/usr/bin/env bash
# Fuzz smoke (CI, from tests/run.sh): builds the cargo-fuzz targets, replays the whole
# committed corpus (fuzz/corpus/<target>/) through each, then fuzzes each for a few
# seconds. Any crash, panic, hang (over 10 s on one input) or OOM fails it, with the
# input left in fuzz/artifacts/<target>/. docs/fuzzing.md says more.
#   bash fuzz/smoke.sh              # FUZZ_SMOKE_SECONDS=N to fuzz each target longer
# New inputs found meanwhile go to a scratch directory: the committed corpus is read only.
set -euo pipefail
cd "$(dirname "$0")/.."

seconds="${FUZZ_SMOKE_SECONDS:-10}"
# cargo-fuzz passes nightly-only options (-Z...); the machine's only toolchain is stable,
# which accepts them with RUSTC_BOOTSTRAP.
export RUSTC_BOOTSTRAP=1
export PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"

if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "==> installing cargo-fuzz"
  cargo install --locked --quiet cargo-fuzz@0.13.2
fi

# Optimised, with debug assertions and overflow checks, but without AddressSanitizer
# (`-s none`): the targets run safe Rust, and the sanitizer build of the edge's whole
# dependency tree costs CI minutes more on a cold machine (docs/fuzzing.md). Local long
# runs may use either build.
build=(-s none)
echo "==> fuzz smoke: building the targets"
cargo fuzz build "${build[@]}"

scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT
for target in sip_message refer_headers rcml; do
  # Longest input: a SIP message up to the torture set's 3.5 KB and beyond, a pair of
  # header values, a document.
  case "$target" in
    sip_message) dict=fuzz/dict/sip.dict max_len=8192 ;;
    refer_headers) dict=fuzz/dict/sip.dict max_len=512 ;;
    rcml) dict=fuzz/dict/rcml.dict max_len=4096 ;;
  esac
  files=$(find "fuzz/corpus/$target" -type f | wc -l)
  echo "==> fuzz smoke: $target: replaying $files corpus files, then fuzzing ${seconds}s"
  mkdir -p "$scratch/$target"
  log="$scratch/$target.log"
  # The first directory receives new inputs; the committed corpus is only read. libFuzzer
  # runs every corpus input once before it starts mutating ("INITED").
  if ! cargo fuzz run "${build[@]}" "$target" "$scratch/$target" "fuzz/corpus/$target" -- \
    -dict="$dict" -max_len="$max_len" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 \
    -print_final_stats=1 >"$log" 2>&1; then
    tail -n 80 "$log" >&2
    echo "fuzz smoke: $target FAILED (the input is in fuzz/artifacts/$target/)" >&2
    exit 1
  fi
  grep -E '^(INFO: seed corpus|#[0-9]+[[:space:]]+(INITED|DONE)|stat::number_of_executed_units)' "$log" || true
done
echo "fuzz smoke: 3 targets passed"
