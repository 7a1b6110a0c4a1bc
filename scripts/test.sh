#!/usr/bin/env bash
# The whole test suite. Installs and starts what the tests need (a Kafka-protocol broker and the
# system packages rdkafka builds against), runs every test of the workspace, and stops the broker
# again whatever happened.
#
#   bash scripts/test.sh              everything
#   CULPRIT_SKIP_KAFKA=1 bash scripts/test.sh   without the broker (Kafka tests say they skipped)
set -euo pipefail
cd "$(dirname "$0")/.."

# The labelled datasets live beside the checkout, read in place.
export RCA_DATASETS="${RCA_DATASETS:-$(cd .. && pwd)/shared/datasets}"
# A target dir outside the clone survives fresh clones (CI reuses it when present).
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/culprit-target}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"

step() { printf '\n== %s\n' "$*"; }

step "system packages"
missing=()
command -v cmake >/dev/null 2>&1 || missing+=(cmake)
dpkg -s libcurl4-openssl-dev >/dev/null 2>&1 || missing+=(libcurl4-openssl-dev)
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing ${missing[*]}"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
else
  echo "present"
fi
# Headless Chromium for the dashboard's browser test; without it that test says it skipped.
if ! { command -v chromium && command -v chromedriver; } >/dev/null 2>&1; then
  echo "installing chromium chromium-driver"
  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null; } \
    || echo "chromium could not be installed: the browser test will skip"
fi

if [ "${CULPRIT_SKIP_KAFKA:-0}" != "1" ] && [ -f scripts/kafka-test-env.sh ]; then
  step "Kafka-protocol broker (tansu) on 127.0.0.1:9092"
  bash scripts/kafka-test-env.sh install
  trap 'bash scripts/kafka-test-env.sh stop' EXIT
  bash scripts/kafka-test-env.sh start
fi

step "build"
cargo build --workspace --all-targets --locked

step "tests"
# Every test binary runs even after a failure, so one run shows them all. The status is cargo's:
# read PIPESTATUS in the same command, before anything else (an `|| true`) replaces it.
set +e
cargo test --workspace --locked --no-fail-fast -- --nocapture 2>&1 | tee "${CARGO_TARGET_DIR}/culprit-test.log" | grep -Ev '^\s*$' | grep -E '^(test |running|test result|skipped|     Running|error|failures|---- )|panicked|FAILED'
status=${PIPESTATUS[0]}
set -e
summary=$(grep -E '^test result:' "${CARGO_TARGET_DIR}/culprit-test.log" | awk '{p+=$4; f+=$6; i+=$8} END {printf "%d passed, %d failed, %d skipped", p, f, i}')
echo
echo "$summary"
exit "$status"
