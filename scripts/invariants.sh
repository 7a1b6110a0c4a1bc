#!/usr/bin/env bash
# The architecture's invariants that the dependency graph can prove (docs/ARCHITECTURE.md,
# "Invariants"): which one crate may import each outside system, that the data path's crates
# pull in no runtime or network stack, and that the binary stays thin.
set -euo pipefail
cd "$(dirname "$0")/.."

failed=0
fail() { echo "invariant broken: $*"; failed=1; }

# The workspace crates that depend directly (normal dependencies) on `dep`.
direct_users() {
  cargo tree --workspace --locked -e normal -i "$1" --depth 1 --prefix none 2>/dev/null \
    | awk 'NR > 1 && $3 ~ /^\(\/.*\)$/ {print $1}' | sort -u
}

only_user() {
  local dep=$1 owner=$2 users
  users=$(direct_users "$dep" | tr '\n' ' ')
  if [ "$users" != "$owner " ]; then
    fail "only $owner may depend on $dep, but: ${users:-nobody}"
  else
    echo "ok: only $owner depends on $dep"
  fi
}

only_user rdkafka culprit-kafka
only_user qdrant-client culprit-store
only_user candle-core culprit-embed
only_user async-openai culprit-agent
only_user opentelemetry-proto culprit-otlp

# Detectors and the correlator do no I/O: no async runtime, HTTP or Kafka client below them.
for crate in culprit-core culprit-detect culprit-correlate culprit-drain; do
  if cargo tree --locked -p "$crate" -e normal --prefix none 2>/dev/null | grep -Eq '^(tokio|reqwest|hyper|rdkafka|tonic) '; then
    fail "$crate pulls in a runtime or network client"
  else
    echo "ok: $crate pulls in no runtime or network client"
  fi
done

# The binary holds argument parsing and wiring only.
lines=$(cat services/culprit/src/*.rs services/culprit/src/commands/*.rs | wc -l)
if [ "$lines" -ge 600 ]; then
  fail "services/culprit has $lines lines (the limit is 600: move behaviour into a library crate)"
else
  echo "ok: services/culprit has $lines lines"
fi

exit "$failed"
