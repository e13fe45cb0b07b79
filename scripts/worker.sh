#!/usr/bin/env bash
# Start or stop one local worker in the background: scripts/worker.sh start|stop|status,
# or stop every local worker: scripts/worker.sh stop-all
# Knobs: DATA_DIR (default .data), RECSYS_WEB_PORT (default 6066), HEALTH_TIMEOUT (seconds, 180).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DATA_DIR="${DATA_DIR:-$ROOT/.data}"
case "$DATA_DIR" in /*) ;; *) DATA_DIR="$ROOT/$DATA_DIR" ;; esac
PORT="${RECSYS_WEB_PORT:-6066}"
NAME="worker-$PORT"
PID_FILE="$DATA_DIR/run/$NAME.pid"
LOG_FILE="$DATA_DIR/logs/$NAME.log"
HEALTH_URL="http://127.0.0.1:$PORT/health"

running() { [ -f "$PID_FILE" ] && kill -0 "$(cat "$PID_FILE")" 2>/dev/null; }

healthy() { curl -fsS -o /dev/null "$HEALTH_URL" 2>/dev/null; }

start() {
  mkdir -p "$DATA_DIR/run" "$DATA_DIR/logs"
  if running; then
    echo "$NAME: already running (pid $(cat "$PID_FILE"))"
  else
    echo "$NAME: starting, log in $LOG_FILE"
    (
      cd "$ROOT"
      export RECSYS_WEB_PORT="$PORT" RECSYS_DATA_DIR="${RECSYS_DATA_DIR:-$DATA_DIR/$NAME}"
      setsid nohup "$ROOT/.venv/bin/python" -m app worker -l info >>"$LOG_FILE" 2>&1 &
      echo $! >"$PID_FILE"
    )
  fi
  local deadline=$((SECONDS + ${HEALTH_TIMEOUT:-180}))
  until healthy; do
    if ! running; then
      echo "$NAME: exited during start-up; last lines of $LOG_FILE:" >&2
      tail -n 40 "$LOG_FILE" >&2
      exit 1
    fi
    if ((SECONDS > deadline)); then
      echo "$NAME: no healthy answer from $HEALTH_URL in time; last lines of $LOG_FILE:" >&2
      tail -n 40 "$LOG_FILE" >&2
      exit 1
    fi
    sleep 0.5
  done
  echo "$NAME: ready on http://127.0.0.1:$PORT"
}

stop() {
  if running; then
    local pid
    pid="$(cat "$PID_FILE")"
    kill -TERM "$pid"
    for _ in $(seq 60); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
    kill -0 "$pid" 2>/dev/null && kill -KILL "$pid"
    echo "$NAME: stopped"
  fi
  rm -f "$PID_FILE"
}

stop_all() {
  local pid_file
  for pid_file in "$DATA_DIR"/run/worker-*.pid; do
    [ -e "$pid_file" ] || continue
    pid_file="${pid_file##*/worker-}"
    RECSYS_WEB_PORT="${pid_file%.pid}" "$0" stop
  done
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  stop-all) stop_all ;;
  status) if running; then echo "$NAME: running"; else echo "$NAME: stopped"; fi ;;
  *) echo "usage: $0 start|stop|status|stop-all" >&2; exit 2 ;;
esac
