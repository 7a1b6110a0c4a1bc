#!/usr/bin/env bash
# Proves that the README's first command, `cargo run --release -p culprit -- demo`, builds and
# runs on a machine without cmake: from a cold target dir, with cmake out of reach, and checks
# that nothing tried to run it.
#
#   bash scripts/fresh-build-check.sh
#
# How cmake is kept away:
#   - PATH is a directory of links to every command of the current PATH except cmake, ctest and
#     cpack, so a build script that runs `cmake` fails;
#   - CMAKE (what the cmake crate runs) is a tripwire script that records its call and fails;
#   - run as root, the build also runs in a private mount namespace (unshare) where /usr/bin/cmake
#     and the headers of libssl-dev and libcurl-dev are hidden, so the vendored OpenSSL is what
#     librdkafka is built against. Nothing outside this process sees the difference.
# Afterwards the tripwire must be untouched, librdkafka's configure must have enabled TLS, SASL
# SCRAM and OAUTHBEARER, zstd and zlib, and the demo must have run its scenarios.
#
# Environment: CARGO_TARGET_DIR (default ~/.cache/culprit-target-fresh, emptied first unless
# CULPRIT_FRESH_KEEP=1).
set -euo pipefail
cd "$(dirname "$0")/.."

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/culprit-target-fresh}"
export CARGO_TERM_COLOR=never
WORK=$(mktemp -d "${TMPDIR:-/tmp}/culprit-fresh.XXXXXX")
trap 'rm -rf "$WORK"' EXIT

# A PATH without cmake.
mkdir -p "$WORK/bin"
IFS=: read -r -a dirs <<<"$PATH"
for d in "${dirs[@]}"; do
  [[ -d $d ]] || continue
  for f in "$d"/*; do
    name=$(basename "$f")
    case "$name" in cmake | cmake3 | ctest | cpack) continue ;; esac
    [[ -x $f && ! -e $WORK/bin/$name ]] && ln -s "$f" "$WORK/bin/$name"
  done
done
cat >"$WORK/cmake-tripwire" <<TRIP
#!/bin/sh
echo "cmake \$*" >>"$WORK/cmake-calls"
exit 127
TRIP
chmod +x "$WORK/cmake-tripwire"

if [[ ${CULPRIT_FRESH_KEEP:-0} != 1 ]]; then rm -rf "$CARGO_TARGET_DIR"; fi

build() {
  env PATH="$WORK/bin" CMAKE="$WORK/cmake-tripwire" \
    bash -c 'command -v cmake && { echo "cmake is still on PATH" >&2; exit 1; }
             cargo run --release --locked -p culprit -- demo --out "$1"' _ "$WORK/demo"
}
export -f build
export WORK

hide=()
if [[ $(id -u) -eq 0 ]] && command -v unshare >/dev/null && unshare -m true 2>/dev/null; then
  for p in /usr/bin/cmake /usr/include/openssl /usr/include/x86_64-linux-gnu/openssl \
    /usr/include/x86_64-linux-gnu/curl /usr/include/curl; do
    [[ -e $p ]] && hide+=("$p")
  done
fi

echo "== cargo run --release -p culprit -- demo (cold: $CARGO_TARGET_DIR; hidden: cmake${hide:+ ${hide[*]}})"
start=$(date +%s)
if ((${#hide[@]})); then
  mkdir -p "$WORK/empty"
  # Each path is covered by an empty directory or /dev/null inside a private mount namespace.
  unshare -m --propagation private bash -c '
    for p in "$@"; do
      if [[ -d $p ]]; then mount --bind "$WORK/empty" "$p"; else mount --bind /dev/null "$p"; fi
    done
    [[ ! -s /usr/bin/cmake ]] || { echo "could not hide /usr/bin/cmake" >&2; exit 1; }
    build' _ "${hide[@]}" 2>&1 | tee "$WORK/build.log"
else
  build 2>&1 | tee "$WORK/build.log"
fi
status=${PIPESTATUS[0]}
elapsed=$(( $(date +%s) - start ))
[[ $status -eq 0 ]] || { echo "FAILED: the first command failed (exit $status) after ${elapsed} s"; exit 1; }

if [[ -s $WORK/cmake-calls ]]; then
  echo "FAILED: the build ran cmake:"; cat "$WORK/cmake-calls"; exit 1
fi
grep -q "scenarios named the injected root cause first" "$WORK/build.log" \
  || { echo "FAILED: the demo did not report its scenarios"; exit 1; }
# What librdkafka's configure decided, from the config.h it wrote for this build.
config_h=$(ls -t "$CARGO_TARGET_DIR"/release/build/rdkafka-sys-*/out/config.h | head -n 1)
for with in WITH_SSL WITH_SASL_SCRAM WITH_SASL_OAUTHBEARER WITH_ZSTD WITH_ZLIB; do
  grep -q "^#define $with 1" "$config_h" || { echo "FAILED: librdkafka was built without $with ($config_h)"; exit 1; }
done
echo
echo "fresh-build-check: passed in ${elapsed} s (build and demo, cold) without cmake;"
grep -E "scenarios named the injected root cause first" "$WORK/build.log"
