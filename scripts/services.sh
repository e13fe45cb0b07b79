#!/usr/bin/env bash
# Start, stop and inspect the local backing services (no Docker needed):
#   - Apache Kafka 4.0 single-node KRaft broker, run straight from Maven Central jars
#     (infra/kafka/pom.xml) with `java kafka.Kafka`.
#   - Redis (redis-server from Debian).
#
# Usage: scripts/services.sh start|stop|status [kafka|redis|all]     (default: all)
#
# Environment (defaults in brackets):
#   DATA_DIR               [.data]  state, logs, pid files; a relative path is taken relative
#                                   to the repository root, whatever the current directory
#   KAFKA_PORT             [9092]
#   KAFKA_CONTROLLER_PORT  [9093]
#   REDIS_PORT             [6379]
#   KAFKA_HEAP             [-Xmx768m -Xms256m]
#   KAFKA_START_TIMEOUT    [90]     seconds to wait for the broker to serve
#   KAFKA_CONFIG_OVERLAY   []       a properties file appended to infra/kafka/server.properties
#                                   (same @...@ placeholders); its keys win, e.g. other listeners
#   KAFKA_FORMAT_ARGS      []       more arguments of the first storage format, split on spaces,
#                                   e.g. --add-scram SCRAM-SHA-512=[name=u,password=p]
#
# Layout under $DATA_DIR:
#   kafka/classpath.txt  kafka/server.properties  kafka/data/  redis/
#   logs/kafka.log  logs/kafka.out  logs/redis.log  logs/maven.log  run/*.pid
#
# `start` is idempotent. `stop` keeps all data. `status` exits 0 when everything asked
# about is running and 3 otherwise.
set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "$SCRIPT_DIR/.." && pwd)"

DATA_DIR="${DATA_DIR:-.data}"
case "$DATA_DIR" in
  /*) ;;
  *) DATA_DIR="$REPO_ROOT/$DATA_DIR" ;;
esac
KAFKA_PORT="${KAFKA_PORT:-9092}"
KAFKA_CONTROLLER_PORT="${KAFKA_CONTROLLER_PORT:-9093}"
REDIS_PORT="${REDIS_PORT:-6379}"
KAFKA_HEAP="${KAFKA_HEAP:--Xmx768m -Xms256m}"
KAFKA_START_TIMEOUT="${KAFKA_START_TIMEOUT:-90}"
KAFKA_CONFIG_OVERLAY="${KAFKA_CONFIG_OVERLAY:-}"
KAFKA_FORMAT_ARGS="${KAFKA_FORMAT_ARGS:-}"
STOP_TIMEOUT=30

KAFKA_INFRA="$REPO_ROOT/infra/kafka"
KAFKA_POM="$KAFKA_INFRA/pom.xml"
KAFKA_DIR="$DATA_DIR/kafka"
KAFKA_LOG_DIRS="$KAFKA_DIR/data"
KAFKA_CLASSPATH_FILE="$KAFKA_DIR/classpath.txt"
KAFKA_PROPS="$KAFKA_DIR/server.properties"
KAFKA_FORMATTED_MARKER="$KAFKA_DIR/.formatted"
LOG_DIR="$DATA_DIR/logs"
RUN_DIR="$DATA_DIR/run"
KAFKA_PID_FILE="$RUN_DIR/kafka.pid"
KAFKA_LOG="$LOG_DIR/kafka.log"
KAFKA_OUT="$LOG_DIR/kafka.out"
REDIS_DIR="$DATA_DIR/redis"
REDIS_PID_FILE="$RUN_DIR/redis.pid"
REDIS_LOG="$LOG_DIR/redis.log"

say() { printf '%s\n' "$*"; }
die() { printf '%s\n' "$*" >&2; exit 1; }

usage() {
  say "usage: $0 start|stop|status [kafka|redis|all]"
  exit 2
}

# ---------------------------------------------------------------- helpers

# True if something accepts TCP connections on 127.0.0.1:$1.
port_open() {
  timeout 2 bash -c "exec 3<>/dev/tcp/127.0.0.1/$1" 2>/dev/null
}

# Print the pid from pid file $1 if that process is alive and its command line
# contains $2; otherwise print nothing (and drop a stale pid file).
live_pid() {
  local pid_file="$1" pattern="$2" pid
  [[ -f "$pid_file" ]] || return 0
  pid="$(tr -dc '0-9' < "$pid_file")"
  if [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null \
      && tr '\0' ' ' < "/proc/$pid/cmdline" 2>/dev/null | grep -q -- "$pattern"; then
    printf '%s\n' "$pid"
  else
    rm -f "$pid_file"
  fi
}

# SIGTERM the process in pid file $2, wait up to STOP_TIMEOUT s, then SIGKILL.
stop_pidfile() {
  local name="$1" pid_file="$2" pattern="$3" port="$4" pid waited=0
  pid="$(live_pid "$pid_file" "$pattern")"
  if [[ -z "$pid" ]]; then
    if port_open "$port"; then
      say "$name: not started by this script (no pid file in $RUN_DIR) but port $port answers; leaving it alone"
    else
      say "$name: not running"
    fi
    return 0
  fi
  say "$name: stopping (pid $pid)"
  kill -TERM "$pid" 2>/dev/null || true
  while kill -0 "$pid" 2>/dev/null; do
    if (( waited >= STOP_TIMEOUT * 2 )); then
      say "$name: still running after ${STOP_TIMEOUT}s, sending SIGKILL"
      kill -KILL "$pid" 2>/dev/null || true
      sleep 0.5
      break
    fi
    sleep 0.5
    waited=$((waited + 1))
  done
  rm -f "$pid_file"
  say "$name: stopped"
}

# Escape a string for use as a sed replacement with '|' as delimiter.
sed_escape() { printf '%s' "$1" | sed -e 's/[\\&|]/\\&/g'; }

# ---------------------------------------------------------------- kafka

kafka_resolve_classpath() {
  local need=0 jar
  if [[ ! -s "$KAFKA_CLASSPATH_FILE" || "$KAFKA_POM" -nt "$KAFKA_CLASSPATH_FILE" ]]; then
    need=1
  else
    # Re-resolve if the local Maven repository lost any of the jars.
    while IFS= read -r -d: jar || [[ -n "$jar" ]]; do
      [[ -z "$jar" || -f "$jar" ]] || { need=1; break; }
    done < "$KAFKA_CLASSPATH_FILE"
  fi
  (( need )) || return 0

  command -v mvn >/dev/null || die "kafka: mvn not found; install Maven (Debian package 'maven')"
  say "kafka: resolving jars from Maven Central (first run only)"
  if ! mvn -q -B -f "$KAFKA_POM" dependency:build-classpath \
        -Dmdep.outputFile="$KAFKA_CLASSPATH_FILE.tmp" > "$LOG_DIR/maven.log" 2>&1; then
    tail -n 40 "$LOG_DIR/maven.log" >&2 || true
    rm -f "$KAFKA_CLASSPATH_FILE.tmp"
    die "kafka: Maven could not resolve $KAFKA_POM (full output: $LOG_DIR/maven.log)"
  fi
  mv "$KAFKA_CLASSPATH_FILE.tmp" "$KAFKA_CLASSPATH_FILE"
}

# The template, then the overlay if any: a key set twice takes its last value.
kafka_render_config() {
  local templates=("$KAFKA_INFRA/server.properties")
  if [[ -n "$KAFKA_CONFIG_OVERLAY" ]]; then
    [[ -f "$KAFKA_CONFIG_OVERLAY" ]] || die "kafka: KAFKA_CONFIG_OVERLAY: no such file $KAFKA_CONFIG_OVERLAY"
    templates+=("$KAFKA_CONFIG_OVERLAY")
  fi
  sed -e "s|@KAFKA_PORT@|$(sed_escape "$KAFKA_PORT")|g" \
      -e "s|@KAFKA_CONTROLLER_PORT@|$(sed_escape "$KAFKA_CONTROLLER_PORT")|g" \
      -e "s|@KAFKA_LOG_DIRS@|$(sed_escape "$KAFKA_LOG_DIRS")|g" \
      "${templates[@]}" > "$KAFKA_PROPS.tmp"
  mv "$KAFKA_PROPS.tmp" "$KAFKA_PROPS"
}

# Build the java command line for main class $1 (plus its arguments) into KAFKA_CMD.
kafka_java_cmd() {
  local heap
  read -r -a heap <<< "$KAFKA_HEAP"
  KAFKA_CMD=(java "${heap[@]}"
    -server -XX:+UseG1GC -XX:MaxGCPauseMillis=20 -XX:InitiatingHeapOccupancyPercent=35
    -XX:+ExplicitGCInvokesConcurrent -Djava.awt.headless=true
    -Dkafka.logs.dir="$LOG_DIR"
    -Dlog4j2.configurationFile="$KAFKA_INFRA/log4j2.properties"
    -cp "$(cat "$KAFKA_CLASSPATH_FILE")" "$@")
}

# Run a Kafka tool in the foreground with a small heap.
kafka_tool() {
  local KAFKA_HEAP="-Xmx256m"
  kafka_java_cmd "$@"
  "${KAFKA_CMD[@]}"
}

kafka_format_storage() {
  if [[ -f "$KAFKA_LOG_DIRS/meta.properties" ]]; then
    [[ -f "$KAFKA_FORMATTED_MARKER" ]] || cp "$KAFKA_LOG_DIRS/meta.properties" "$KAFKA_FORMATTED_MARKER"
    return 0
  fi
  if [[ -f "$KAFKA_FORMATTED_MARKER" ]]; then
    die "kafka: $KAFKA_LOG_DIRS was formatted before but meta.properties is gone; remove $KAFKA_DIR to start from scratch"
  fi
  say "kafka: formatting storage in $KAFKA_LOG_DIRS (first run only)"
  local out cluster_id
  out="$(kafka_tool kafka.tools.StorageTool random-uuid 2>>"$KAFKA_OUT")" \
    || die "kafka: 'StorageTool random-uuid' failed (see $KAFKA_OUT)"
  cluster_id="$(printf '%s\n' "$out" | grep -E '^[A-Za-z0-9_-]{22}$' | tail -n 1 || true)"
  [[ -n "$cluster_id" ]] || die "kafka: could not read a cluster id from StorageTool output: $out"
  local extra
  read -r -a extra <<< "$KAFKA_FORMAT_ARGS"
  if ! kafka_tool kafka.tools.StorageTool format \
        -t "$cluster_id" -c "$KAFKA_PROPS" "${extra[@]}" >>"$KAFKA_OUT" 2>&1; then
    tail -n 40 "$KAFKA_OUT" >&2 || true
    die "kafka: storage format failed"
  fi
  cp "$KAFKA_LOG_DIRS/meta.properties" "$KAFKA_FORMATTED_MARKER"
  say "kafka: storage formatted (cluster id $cluster_id)"
}

kafka_start() {
  local pid
  pid="$(live_pid "$KAFKA_PID_FILE" kafka.Kafka)"
  if [[ -n "$pid" ]]; then
    say "kafka: already running (pid $pid) on 127.0.0.1:$KAFKA_PORT"
    return 0
  fi
  if port_open "$KAFKA_PORT"; then
    say "kafka: 127.0.0.1:$KAFKA_PORT already answers (not started by this script); leaving it alone"
    return 0
  fi
  if port_open "$KAFKA_CONTROLLER_PORT"; then
    die "kafka: controller port 127.0.0.1:$KAFKA_CONTROLLER_PORT is taken by another process; set KAFKA_CONTROLLER_PORT"
  fi
  command -v java >/dev/null || die "kafka: java not found; install a JDK >= 17 (Debian package 'openjdk-17-jre-headless')"

  mkdir -p "$KAFKA_DIR" "$KAFKA_LOG_DIRS" "$LOG_DIR" "$RUN_DIR"
  kafka_resolve_classpath
  kafka_render_config
  kafka_format_storage

  # Only look at log lines written by this start.
  local log_offset=0
  [[ -f "$KAFKA_LOG" ]] && log_offset="$(stat -c %s "$KAFKA_LOG")"

  say "kafka: starting broker on 127.0.0.1:$KAFKA_PORT (controller $KAFKA_CONTROLLER_PORT, logs $KAFKA_LOG)"
  {
    printf '\n===== %s starting kafka =====\n' "$(date '+%F %T')"
  } >> "$KAFKA_OUT"
  # The inner bash writes its own pid and then execs java, so the pid file holds the JVM pid
  # whether or not setsid had to fork. setsid detaches it from this terminal's signals.
  rm -f "$KAFKA_PID_FILE"
  kafka_java_cmd kafka.Kafka "$KAFKA_PROPS"
  # shellcheck disable=SC2016  # expanded by the inner shell
  setsid nohup bash -c 'echo $$ > "$0"; exec "$@"' "$KAFKA_PID_FILE" "${KAFKA_CMD[@]}" \
    >> "$KAFKA_OUT" 2>&1 < /dev/null &
  disown || true

  local deadline=$((SECONDS + KAFKA_START_TIMEOUT)) started=0
  pid=""
  while (( SECONDS < deadline )); do
    sleep 1
    [[ -n "$pid" ]] || pid="$(tr -dc '0-9' < "$KAFKA_PID_FILE" 2>/dev/null || true)"
    if [[ -n "$pid" ]] && ! kill -0 "$pid" 2>/dev/null; then
      say "kafka: broker exited during startup; last 40 lines of $KAFKA_OUT and $KAFKA_LOG:" >&2
      tail -n 40 "$KAFKA_OUT" >&2 || true
      tail -n 40 "$KAFKA_LOG" >&2 2>/dev/null || true
      rm -f "$KAFKA_PID_FILE"
      exit 1
    fi
    if (( ! started )) && [[ -f "$KAFKA_LOG" ]]; then
      local size
      size="$(stat -c %s "$KAFKA_LOG")"
      (( size >= log_offset )) || log_offset=0
      if tail -c "+$((log_offset + 1))" "$KAFKA_LOG" \
          | grep -qE 'Kafka Server started|started \(kafka\.server\.KafkaRaftServer\)'; then
        started=1
      fi
    fi
    if (( started )) && port_open "$KAFKA_PORT"; then
      say "kafka: up on 127.0.0.1:$KAFKA_PORT (pid $pid)"
      return 0
    fi
  done
  say "kafka: not serving on 127.0.0.1:$KAFKA_PORT after ${KAFKA_START_TIMEOUT}s; last 40 lines of $KAFKA_LOG:" >&2
  tail -n 40 "$KAFKA_LOG" >&2 2>/dev/null || tail -n 40 "$KAFKA_OUT" >&2 || true
  say "kafka: the broker (pid ${pid:-?}) is left running; run '$0 stop kafka' to stop it" >&2
  exit 1
}

kafka_stop() { stop_pidfile kafka "$KAFKA_PID_FILE" kafka.Kafka "$KAFKA_PORT"; }

kafka_status() {
  local pid
  pid="$(live_pid "$KAFKA_PID_FILE" kafka.Kafka)"
  if [[ -n "$pid" ]]; then
    if port_open "$KAFKA_PORT"; then
      say "kafka: running (pid $pid) on 127.0.0.1:$KAFKA_PORT"
    else
      say "kafka: starting (pid $pid), 127.0.0.1:$KAFKA_PORT not answering yet"
    fi
    return 0
  fi
  if port_open "$KAFKA_PORT"; then
    say "kafka: 127.0.0.1:$KAFKA_PORT answers, but not started by this script"
    return 0
  fi
  say "kafka: stopped"
  return 3
}

# ---------------------------------------------------------------- redis

redis_ensure_installed() {
  command -v redis-server >/dev/null && return 0
  if [[ "$(id -u)" -ne 0 ]]; then
    die "redis: redis-server not found; install the Debian package 'redis-server' (sudo apt-get install -y redis-server)"
  fi
  say "redis: installing redis-server with apt-get"
  export DEBIAN_FRONTEND=noninteractive
  if ! apt-get install -y -qq redis-server >/dev/null 2>&1; then
    apt-get update -qq
    apt-get install -y -qq redis-server >/dev/null
  fi
  command -v redis-server >/dev/null || die "redis: apt-get did not provide redis-server"
}

redis_ping() {
  if command -v redis-cli >/dev/null; then
    [[ "$(timeout 2 redis-cli -h 127.0.0.1 -p "$REDIS_PORT" ping 2>/dev/null)" == "PONG" ]]
  else
    # shellcheck disable=SC2016  # expanded by the inner shell
    timeout 2 bash -c '
      exec 3<>"/dev/tcp/127.0.0.1/$1" || exit 1
      printf "PING\r\n" >&3
      IFS= read -r line <&3
      [[ "${line%$'"'"'\r'"'"'}" == "+PONG" ]]' _ "$REDIS_PORT" 2>/dev/null
  fi
}

redis_start() {
  local pid
  pid="$(live_pid "$REDIS_PID_FILE" redis-server)"
  if [[ -n "$pid" ]]; then
    say "redis: already running (pid $pid) on 127.0.0.1:$REDIS_PORT"
    return 0
  fi
  if port_open "$REDIS_PORT"; then
    say "redis: 127.0.0.1:$REDIS_PORT already answers (not started by this script); leaving it alone"
    return 0
  fi
  redis_ensure_installed
  mkdir -p "$REDIS_DIR" "$LOG_DIR" "$RUN_DIR"
  say "redis: starting on 127.0.0.1:$REDIS_PORT (data $REDIS_DIR)"
  redis-server \
    --bind 127.0.0.1 --port "$REDIS_PORT" \
    --daemonize yes --pidfile "$REDIS_PID_FILE" \
    --dir "$REDIS_DIR" --appendonly yes --save '' \
    --logfile "$REDIS_LOG"

  local deadline=$((SECONDS + 20))
  while (( SECONDS < deadline )); do
    if redis_ping; then
      pid="$(live_pid "$REDIS_PID_FILE" redis-server)"
      say "redis: up on 127.0.0.1:$REDIS_PORT (pid ${pid:-?})"
      return 0
    fi
    sleep 0.2
  done
  say "redis: no PONG from 127.0.0.1:$REDIS_PORT after 20s; last 40 lines of $REDIS_LOG:" >&2
  tail -n 40 "$REDIS_LOG" >&2 2>/dev/null || true
  exit 1
}

redis_stop() { stop_pidfile redis "$REDIS_PID_FILE" redis-server "$REDIS_PORT"; }

redis_status() {
  local pid
  pid="$(live_pid "$REDIS_PID_FILE" redis-server)"
  if [[ -n "$pid" ]]; then
    say "redis: running (pid $pid) on 127.0.0.1:$REDIS_PORT"
    return 0
  fi
  if port_open "$REDIS_PORT"; then
    say "redis: 127.0.0.1:$REDIS_PORT answers, but not started by this script"
    return 0
  fi
  say "redis: stopped"
  return 3
}

# ---------------------------------------------------------------- main

action="${1:-}"
target="${2:-all}"
[[ $# -le 2 ]] || usage
case "$target" in
  kafka) services=(kafka) ;;
  redis) services=(redis) ;;
  all) services=(redis kafka) ;;
  *) usage ;;
esac

case "$action" in
  start)
    for s in "${services[@]}"; do "${s}_start"; done
    ;;
  stop)
    # Stop in reverse start order.
    for (( i=${#services[@]}-1; i>=0; i-- )); do "${services[$i]}_stop"; done
    ;;
  status)
    rc=0
    for s in "${services[@]}"; do "${s}_status" || rc=3; done
    exit "$rc"
    ;;
  *) usage ;;
esac
