#!/usr/bin/env bash
# Runs every Switchyard test on this machine, installing what the tests need first:
#   bash tests/run.sh
# Set-up is idempotent: Debian packages are installed only when missing.
set -euo pipefail
cd "$(dirname "$0")/.."

# Real peers the tests spawn: redis-server, sipp (sip-tester), baresip.
bash tests/apt-install.sh redis-server sip-tester baresip-core
# Debian starts a system redis-server on 6379; the tests spawn their own on free ports.

log=$(mktemp)
pylog=$(mktemp)
trap 'rm -f "$log" "$pylog"' EXIT

# A Python virtualenv at .venv (made once, then reused) for the Python tools the tests
# use: sipvicious (svmap, svwar) for the scan tests below, the Helm chart tests' packages
# further down.
venv=.venv
SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
if ! "$venv/bin/python" -c 'import pip' 2>/dev/null; then
  rm -rf "$venv"
  if ! python3 -m venv "$venv" >/dev/null 2>&1; then
    # Debian ships venv's pip bootstrap (ensurepip) in a separate package.
    rm -rf "$venv"
    echo "==> installing python3-venv"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends python3-venv
    python3 -m venv "$venv"
  fi
fi
"$venv/bin/python" -m pip install -q --disable-pip-version-check -r tests/scans-requirements.txt

echo "==> cargo test --workspace"
cargo build --workspace --bins --locked
cargo test --workspace --locked 2>&1 | tee "$log"
# The calls and transfer suites again, each edge on a three-master Redis Cluster of its
# own instead of standalone (tests/src/processes.rs, SWITCHYARD_TEST_REDIS): about a minute.
echo "==> calls and transfer suites on Redis Cluster"
SWITCHYARD_TEST_REDIS=cluster cargo test -p switchyard-tests --locked --test calls --test transfer 2>&1 | tee -a "$log"
bash bench/run.sh --smoke  # the load benchmark's harness, a few seconds (bench/README.md)

# Fuzz smoke (docs/fuzzing.md): the committed corpus replayed through each cargo-fuzz
# target, then each fuzzed a few seconds; any crash fails the run. Builds in
# CARGO_TARGET_DIR and installs cargo-fuzz once: about 35 s warm, 5.5 min cold.
bash fuzz/smoke.sh

# The Helm chart: rendered and linted with Helm v4's Go SDK (helm-python-sdk), every object
# validated with kubernetes-validate, in the virtualenv at .venv.
echo "==> helm chart tests (tests/helm)"
"$venv/bin/python" -m pip install -q --disable-pip-version-check -r tests/helm/requirements.txt
# promtool checks the chart's alerts and dashboard queries. It is taken out of Debian's
# prometheus package, not installed from it, so no Prometheus server is set up or started.
if [ ! -x "$venv/bin/promtool" ]; then
  echo "==> extracting promtool from Debian's prometheus package"
  deb_dir="$(mktemp -d)"
  if ! (cd "$deb_dir" && apt-get download -qq prometheus 2>/dev/null); then
    $SUDO apt-get update -qq
    (cd "$deb_dir" && apt-get download -qq prometheus)
  fi
  dpkg-deb --fsys-tarfile "$deb_dir"/prometheus_*.deb | tar -x -C "$deb_dir" ./usr/bin/promtool
  install -m 0755 "$deb_dir/usr/bin/promtool" "$venv/bin/promtool"
  rm -rf "$deb_dir"
fi
SWITCHYARD_REQUIRE_PROMTOOL=1 "$venv/bin/python" -m pytest -q -p no:cacheprovider tests/helm 2>&1 | tee "$pylog"

# One closing line for everything run above: "N passed, N failed". (grep finds nothing
# when nothing failed, hence the `|| true`.)
count() { grep -Eo "$1" "$2" | grep -Eo '[0-9]+' | awk '{s+=$1} END {print s+0}' || true; }
passed=$(count '^test result: [a-zA-Z]+\. [0-9]+ passed' "$log")
failed=$(count '[0-9]+ failed;' "$log")
py_passed=$(tail -n 1 "$pylog" > "$pylog.last"; count '[0-9]+ passed' "$pylog.last")
py_failed=$(count '[0-9]+ failed' "$pylog.last")
rm -f "$pylog.last"
echo "summary: $((passed + py_passed)) passed, $((failed + py_failed)) failed"
