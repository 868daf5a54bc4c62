#!/usr/bin/env bash
# Runs every Switchyard test on this machine, installing what the tests need first:
#   bash tests/run.sh
# Set-up is idempotent: Debian packages are installed only when missing.
set -euo pipefail
cd "$(dirname "$0")/.."

# Real peers the tests spawn: redis-server, sipp (sip-tester), baresip.
packages=(redis-server sip-tester baresip-core)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "==> installing ${missing[*]}"
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
# Debian starts a system redis-server on 6379; the tests spawn their own on free ports.

log=$(mktemp)
trap 'rm -f "$log"' EXIT

echo "==> cargo test --workspace"
cargo build --workspace --bins --locked
cargo test --workspace --locked 2>&1 | tee "$log"

# One closing line for every suite run above: "N passed, N failed".
passed=$(grep -Eo '^test result: [a-zA-Z]+\. [0-9]+ passed' "$log" | awk '{s+=$4} END {print s+0}')
failed=$(grep -Eo '[0-9]+ failed;' "$log" | awk '{s+=$1} END {print s+0}')
echo "summary: ${passed} passed, ${failed} failed"
