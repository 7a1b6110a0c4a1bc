#!/usr/bin/env bash
# Fuzzes every decoder: OTLP traces, logs and metrics (JSON and protobuf), change events, replay
# files (culprit-otlp) and the Nezha CSV readers (culprit-nezha), with the structured fuzzer in
# culprit_otlp::fuzzing (seeded inputs grown from valid encodings, see its module doc).
#
# Not part of the normal test run, which runs the same tests with a few thousand inputs each.
# Prints per decoder the inputs run, the crashes found (panics, broken properties, memory or time
# beyond the budget) and the wall time, then how decoding time and memory scale up to 1 MiB.
#
#   CULPRIT_FUZZ_ITERS     inputs per decoder (default 1000000)
#   CULPRIT_FUZZ_SEED      seed (default: the tests' fixed seed); another seed, other inputs
#   CULPRIT_FUZZ_MAX_SIZE  largest input of the scaling checks, bytes (default 1048576)
#   CULPRIT_FUZZ_CRASH_DIR where inputs that found something are written
#                          (default $CARGO_TARGET_DIR/fuzz-findings)
#   CULPRIT_FUZZ_FILTER    only tests whose name contains this (e.g. metrics, nezha_logs)
#   CULPRIT_FUZZ_THREADS   decoders fuzzed at once (default 2)
#   CULPRIT_FUZZ_PROFILE   cargo profile (default test: the normal test build, no second
#                          build of the dependencies; release decodes about 3x faster)
set -uo pipefail
cd "$(dirname "$0")/.."

export CULPRIT_FUZZ_ITERS="${CULPRIT_FUZZ_ITERS:-1000000}"
export CULPRIT_FUZZ_MAX_SIZE="${CULPRIT_FUZZ_MAX_SIZE:-1048576}"
export CULPRIT_FUZZ_CRASH_DIR="${CULPRIT_FUZZ_CRASH_DIR:-${CARGO_TARGET_DIR:-target}/fuzz-findings}"
profile="${CULPRIT_FUZZ_PROFILE:-test}"
# The file readers are fuzzed through files: keep them in memory where there is a tmpfs.
if [ -z "${TMPDIR:-}" ] && [ -d /dev/shm ] && [ -w /dev/shm ]; then
  export TMPDIR=/dev/shm
fi
threads="${CULPRIT_FUZZ_THREADS:-2}"
filter="${CULPRIT_FUZZ_FILTER:-fuzz_}"

log="$(mktemp)"
trap 'rm -f "$log"' EXIT
started=$(date +%s)
status=0
for crate in culprit-otlp culprit-nezha; do
  echo "== $crate: $CULPRIT_FUZZ_ITERS inputs per decoder ($profile profile)"
  cargo test --profile "$profile" -p "$crate" --test fuzz -- "$filter" \
    --nocapture --test-threads="$threads" 2>&1 | tee -a "$log" \
    | grep --line-buffered -E '^(FUZZ|SCALING|test |thread|  #|    input|error)|grew|held [0-9]|took [0-9]'
  [ "${PIPESTATUS[0]}" -eq 0 ] || status=1
done

echo
echo "== summary (wall $(( $(date +%s) - started ))s)"
printf '%-22s %12s %8s %10s\n' decoder inputs crashes wall
awk '/^FUZZ / && !seen[$2]++ {
  for (i = 1; i <= NF; i++) { if ($i == "inputs") n = $(i+1); if ($i == "crashes") c = $(i+1); if ($i == "wall") w = $(i+1) }
  printf "%-22s %12s %8s %10s\n", $2, n, c, w
}' "$log"
failed=$(grep -cE '^test .* FAILED$' "$log" || true)
if [ "$status" -ne 0 ] || [ "$failed" -ne 0 ]; then
  mkdir -p "$CULPRIT_FUZZ_CRASH_DIR" && cp "$log" "$CULPRIT_FUZZ_CRASH_DIR/fuzz.log"
  echo "FAILED: $failed test(s); findings and the full log under $CULPRIT_FUZZ_CRASH_DIR"
  exit 1
fi
echo "no crashes"
