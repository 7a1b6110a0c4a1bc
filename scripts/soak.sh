#!/usr/bin/env bash
# The soak benchmark (issue 16), not part of scripts/test.sh: 30 minutes of simulated traffic
# through one `culprit embedder` process per source and a `culprit correlator` on the embedded
# store, with a kill -9 every few minutes, one broker restart and a burst of bad messages; it
# prints events produced/consumed/stored/dead-lettered, alerts expected/published and RSS per
# role, and exits non-zero when a target is missed. integration-tests/examples/soak.rs says what
# it does and lists its flags.
#
#   bash scripts/soak.sh                                    # the full 30-minute run
#   bash scripts/soak.sh --duration-secs 300 --kill-every-secs 150 --incidents 2 --normal-minutes 25
#
# It starts its own broker (tansu, via scripts/kafka-test-env.sh) on CULPRIT_KAFKA_PORT (9492)
# with its state in CULPRIT_KAFKA_STATE (/tmp/kafka-soak), restarts it mid-run and stops it at
# the end. The output also goes to $SOAK_DIR/soak.txt (default: a fresh folder under /tmp).
set -euo pipefail
cd "$(dirname "$0")/.."

export CULPRIT_KAFKA_PORT="${CULPRIT_KAFKA_PORT:-9492}"
export CULPRIT_KAFKA_STATE="${CULPRIT_KAFKA_STATE:-/tmp/kafka-soak}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/culprit-target}"
export SOAK_DIR="${SOAK_DIR:-$(mktemp -d "${TMPDIR:-/tmp}/culprit-soak.XXXXXX")}"
# The allocator settings the Helm chart gives every pod (helm/culprit/templates/_pod.tpl).
export MALLOC_ARENA_MAX="${MALLOC_ARENA_MAX:-2}"
export MIMALLOC_ARENA_EAGER_COMMIT="${MIMALLOC_ARENA_EAGER_COMMIT:-0}"

cargo build --release --locked -p culprit
cargo build --release --locked -p culprit-integration-tests --example soak

bash scripts/kafka-test-env.sh install
bash scripts/kafka-test-env.sh start
trap 'bash scripts/kafka-test-env.sh stop' EXIT

"$CARGO_TARGET_DIR/release/examples/soak" --binary "$CARGO_TARGET_DIR/release/culprit" \
  --dir "$SOAK_DIR" "$@" 2>&1 | tee "$SOAK_DIR/soak.txt"
exit "${PIPESTATUS[0]}"
