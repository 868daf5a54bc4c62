#!/usr/bin/env bash
# Switchyard's load benchmark: one command for everything.
#   bash bench/run.sh           full run (minutes); rewrites bench/RESULTS.md
#   bash bench/run.sh --smoke   a few seconds: a handful of calls through the edge on
#                               Redis; exits non-zero unless every one completed (CI)
# Extra arguments go to bench/bench.py (--pairs, --step-seconds, --held, --held-rate,
# --only held,basic,transfer,kamailio: a subset, which leaves RESULTS.md alone).
set -euo pipefail
cd "$(dirname "$0")/.."

smoke=0
for arg in "$@"; do
  [ "$arg" = "--smoke" ] && smoke=1
done

# Real peers: redis-server, sipp (sip-tester), tcpdump (the transfer latency); Kamailio
# only for the full run's baseline.
packages=(redis-server sip-tester tcpdump)
[ "$smoke" -eq 1 ] || packages+=(kamailio)
bash tests/apt-install.sh "${packages[@]}"
# The kamailio package may start a system service on 5060; the benchmark runs its own on a
# free port and never touches that one.

# Binaries land in CARGO_TARGET_DIR when it is set (CI points it at a cache outside the
# clone), in ./target otherwise.
target_dir="${CARGO_TARGET_DIR:-target}"

if [ "$smoke" -eq 1 ]; then
  # The smoke checks that the harness and the edge still work together, not speed: the
  # debug build tests/run.sh has just made is enough and saves a release build in CI
  # (the same command as there, so the same features: nothing is rebuilt).
  cargo build -q --locked --workspace --bins
  edge="$target_dir/debug/switchyard-edge"
else
  cargo build -q --locked --release -p switchyard-edge
  edge="$target_dir/release/switchyard-edge"
fi

exec python3 bench/bench.py --edge "$edge" --command "bash bench/run.sh $*" "$@"
