#!/usr/bin/env bash
# Start, stop and inspect the local backing services (no Docker needed):
#   - Apache Kafka 4.0 in KRaft mode, run straight from Maven Central jars
#     (infra/kafka/pom.xml) with `java kafka.Kafka`: one node by default, or a cluster of three
#     or more nodes on local ports (each node a broker and a voter of the controller quorum).
#   - Redis (redis-server from Debian).
#
# Usage: scripts/services.sh start|stop|status [kafka|kafka-N|redis|all]     (default: all)
#   kafka     every node of the Kafka cluster (one node unless KAFKA_PORT lists several)
#   kafka-N   node N alone (1 to the number of nodes): restart one broker of a cluster
#
# Environment (defaults in brackets):
#   DATA_DIR               [.data]  state, logs, pid files; a relative path is taken relative
#                                   to the repository root, whatever the current directory
#   KAFKA_PORT             [9092]   client port; a comma-separated list starts one node a port
#   KAFKA_CONTROLLER_PORT  [9093]   controller port, one a node (as many as KAFKA_PORT lists)
#   REDIS_PORT             [6379]
#   KAFKA_HEAP             [-Xmx768m -Xms256m]  of each node
#   KAFKA_START_TIMEOUT    [90]     seconds to wait for the broker to serve
#   KAFKA_CONFIG_OVERLAY   []       a properties file appended to infra/kafka/server.properties
#                                   (same @...@ placeholders); its keys win, e.g. other listeners
#   KAFKA_FORMAT_ARGS      []       more arguments of the first storage format, split on spaces,
#                                   e.g. --add-scram SCRAM-SHA-512=[name=u,password=p]
#
# A cluster: three nodes (at least three; two would lose the quorum with either one) with
# infra/kafka/cluster.properties on top of the template: replication factor 3 and min ISR 2 for
# every topic, the consumer offsets and the transaction log. For example
#   KAFKA_PORT=19092,19093,19094 KAFKA_CONTROLLER_PORT=19192,19193,19194 \
#     DATA_DIR=/tmp/recsys-cluster KAFKA_HEAP=-Xmx512m scripts/services.sh start kafka
# and, with the same environment, `stop kafka-2` / `start kafka-2` for one node, or
# `kill -9 $(cat /tmp/recsys-cluster/run/kafka-2.pid)` to crash it.
#
# Layout under $DATA_DIR (one node):
#   kafka/classpath.txt  kafka/cluster.id  kafka/server.properties  kafka/data/  redis/
#   logs/kafka.log  logs/kafka.out  logs/redis.log  logs/maven.log  run/*.pid
# A cluster's node N has kafka/node-N/ (server.properties, data/), logs/kafka-N/ (kafka.log,
# kafka.out) and run/kafka-N.pid; every node shares kafka/classpath.txt and kafka/cluster.id.
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
KAFKA_CLASSPATH_FILE="$KAFKA_DIR/classpath.txt"
KAFKA_CLUSTER_ID_FILE="$KAFKA_DIR/cluster.id"
LOG_DIR="$DATA_DIR/logs"
RUN_DIR="$DATA_DIR/run"
IFS=, read -r -a KAFKA_PORTS <<< "$KAFKA_PORT"
IFS=, read -r -a KAFKA_CONTROLLER_PORTS <<< "$KAFKA_CONTROLLER_PORT"
KAFKA_NODES=${#KAFKA_PORTS[@]}
REDIS_DIR="$DATA_DIR/redis"
REDIS_PID_FILE="$RUN_DIR/redis.pid"
REDIS_LOG="$LOG_DIR/redis.log"

say() { printf '%s\n' "$*"; }
die() { printf '%s\n' "$*" >&2; exit 1; }

usage() {
  say "usage: $0 start|stop|status [kafka|kafka-N|redis|all]"
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

# The nodes asked for, checked: as many controller ports as client ports, no port twice, and
# one node or at least three.
kafka_check_nodes() {
  (( ${#KAFKA_CONTROLLER_PORTS[@]} == KAFKA_NODES )) \
    || die "kafka: KAFKA_PORT lists $KAFKA_NODES port(s) but KAFKA_CONTROLLER_PORT ${#KAFKA_CONTROLLER_PORTS[@]}"
  (( KAFKA_NODES == 1 || KAFKA_NODES >= 3 )) \
    || die "kafka: a cluster needs at least 3 nodes (with 2, losing either one loses the quorum)"
  local ports
  ports="$(printf '%s\n' "${KAFKA_PORTS[@]}" "${KAFKA_CONTROLLER_PORTS[@]}" | sort | uniq -d)"
  [[ -z "$ports" ]] || die "kafka: port(s) listed twice in KAFKA_PORT and KAFKA_CONTROLLER_PORT: $ports"
}

# Select node $1 (1-based): its ports, folders, files and name (`kafka`, or `kafka-N` in a
# cluster) in the NODE_* variables.
kafka_node() {
  NODE_ID="$1"
  NODE_PORT="${KAFKA_PORTS[$((NODE_ID - 1))]}"
  NODE_CONTROLLER_PORT="${KAFKA_CONTROLLER_PORTS[$((NODE_ID - 1))]}"
  if (( KAFKA_NODES == 1 )); then
    NODE_NAME=kafka NODE_DIR="$KAFKA_DIR" NODE_LOG_DIR="$LOG_DIR"
  else
    NODE_NAME="kafka-$NODE_ID" NODE_DIR="$KAFKA_DIR/node-$NODE_ID" NODE_LOG_DIR="$LOG_DIR/kafka-$NODE_ID"
  fi
  NODE_LOG_DIRS="$NODE_DIR/data"
  NODE_PROPS="$NODE_DIR/server.properties"
  NODE_FORMATTED_MARKER="$NODE_DIR/.formatted"
  NODE_PID_FILE="$RUN_DIR/$NODE_NAME.pid"
  NODE_LOG="$NODE_LOG_DIR/kafka.log"
  NODE_OUT="$NODE_LOG_DIR/kafka.out"
}

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

# Every node a voter of the controller quorum: 1@127.0.0.1:PORT,2@...
kafka_quorum_voters() {
  local id voters=()
  for (( id = 1; id <= KAFKA_NODES; id++ )); do
    voters+=("$id@127.0.0.1:${KAFKA_CONTROLLER_PORTS[$((id - 1))]}")
  done
  (IFS=,; printf '%s' "${voters[*]}")
}

# The template, the cluster's settings for a cluster, then the overlay if any: a key set twice
# takes its last value.
kafka_render_config() {
  local templates=("$KAFKA_INFRA/server.properties")
  (( KAFKA_NODES == 1 )) || templates+=("$KAFKA_INFRA/cluster.properties")
  if [[ -n "$KAFKA_CONFIG_OVERLAY" ]]; then
    [[ -f "$KAFKA_CONFIG_OVERLAY" ]] || die "kafka: KAFKA_CONFIG_OVERLAY: no such file $KAFKA_CONFIG_OVERLAY"
    templates+=("$KAFKA_CONFIG_OVERLAY")
  fi
  sed -e "s|@KAFKA_PORT@|$(sed_escape "$NODE_PORT")|g" \
      -e "s|@KAFKA_CONTROLLER_PORT@|$(sed_escape "$NODE_CONTROLLER_PORT")|g" \
      -e "s|@KAFKA_LOG_DIRS@|$(sed_escape "$NODE_LOG_DIRS")|g" \
      -e "s|@KAFKA_NODE_ID@|$NODE_ID|g" \
      -e "s|@KAFKA_QUORUM_VOTERS@|$(sed_escape "$(kafka_quorum_voters)")|g" \
      "${templates[@]}" > "$NODE_PROPS.tmp"
  mv "$NODE_PROPS.tmp" "$NODE_PROPS"
}

# Build the java command line for main class $1 (plus its arguments) into KAFKA_CMD; the node's
# log4j file goes to $NODE_LOG_DIR.
kafka_java_cmd() {
  local heap
  read -r -a heap <<< "$KAFKA_HEAP"
  KAFKA_CMD=(java "${heap[@]}"
    -server -XX:+UseG1GC -XX:MaxGCPauseMillis=20 -XX:InitiatingHeapOccupancyPercent=35
    -XX:+ExplicitGCInvokesConcurrent -Djava.awt.headless=true
    -Dkafka.logs.dir="$NODE_LOG_DIR"
    -Dlog4j2.configurationFile="$KAFKA_INFRA/log4j2.properties"
    -cp "$(cat "$KAFKA_CLASSPATH_FILE")" "$@")
}

# Run a Kafka tool in the foreground with a small heap.
kafka_tool() {
  local KAFKA_HEAP="-Xmx256m"
  kafka_java_cmd "$@"
  "${KAFKA_CMD[@]}"
}

# The cluster's id, made on the first format and shared by every node formatted later.
kafka_cluster_id() {
  if [[ ! -s "$KAFKA_CLUSTER_ID_FILE" ]]; then
    local out cluster_id
    out="$(kafka_tool kafka.tools.StorageTool random-uuid 2>>"$NODE_OUT")" \
      || die "kafka: 'StorageTool random-uuid' failed (see $NODE_OUT)"
    cluster_id="$(printf '%s\n' "$out" | grep -E '^[A-Za-z0-9_-]{22}$' | tail -n 1 || true)"
    [[ -n "$cluster_id" ]] || die "kafka: could not read a cluster id from StorageTool output: $out"
    printf '%s\n' "$cluster_id" > "$KAFKA_CLUSTER_ID_FILE"
  fi
  cat "$KAFKA_CLUSTER_ID_FILE"
}

kafka_format_storage() {
  if [[ -f "$NODE_LOG_DIRS/meta.properties" ]]; then
    [[ -f "$NODE_FORMATTED_MARKER" ]] || cp "$NODE_LOG_DIRS/meta.properties" "$NODE_FORMATTED_MARKER"
    return 0
  fi
  if [[ -f "$NODE_FORMATTED_MARKER" ]]; then
    die "kafka: $NODE_LOG_DIRS was formatted before but meta.properties is gone; remove $NODE_DIR to start from scratch"
  fi
  say "$NODE_NAME: formatting storage in $NODE_LOG_DIRS (first run only)"
  local cluster_id extra
  cluster_id="$(kafka_cluster_id)"
  read -r -a extra <<< "$KAFKA_FORMAT_ARGS"
  if ! kafka_tool kafka.tools.StorageTool format \
        -t "$cluster_id" -c "$NODE_PROPS" "${extra[@]}" >>"$NODE_OUT" 2>&1; then
    tail -n 40 "$NODE_OUT" >&2 || true
    die "$NODE_NAME: storage format failed"
  fi
  cp "$NODE_LOG_DIRS/meta.properties" "$NODE_FORMATTED_MARKER"
  say "$NODE_NAME: storage formatted (cluster id $cluster_id)"
}

# Start the selected node in the background unless it runs already. NODE_LAUNCHED says whether
# it did, and NODE_LOG_OFFSET is its kafka.log's size before the start, for kafka_wait.
kafka_launch() {
  local pid
  NODE_LAUNCHED=0
  pid="$(live_pid "$NODE_PID_FILE" kafka.Kafka)"
  if [[ -n "$pid" ]]; then
    say "$NODE_NAME: already running (pid $pid) on 127.0.0.1:$NODE_PORT"
    return 0
  fi
  if port_open "$NODE_PORT"; then
    say "$NODE_NAME: 127.0.0.1:$NODE_PORT already answers (not started by this script); leaving it alone"
    return 0
  fi
  if port_open "$NODE_CONTROLLER_PORT"; then
    die "$NODE_NAME: controller port 127.0.0.1:$NODE_CONTROLLER_PORT is taken by another process; set KAFKA_CONTROLLER_PORT"
  fi

  mkdir -p "$NODE_DIR" "$NODE_LOG_DIRS" "$NODE_LOG_DIR"
  kafka_render_config
  kafka_format_storage

  # Only look at log lines written by this start.
  NODE_LOG_OFFSET=0
  [[ -f "$NODE_LOG" ]] && NODE_LOG_OFFSET="$(stat -c %s "$NODE_LOG")"

  say "$NODE_NAME: starting broker on 127.0.0.1:$NODE_PORT (controller $NODE_CONTROLLER_PORT, logs $NODE_LOG)"
  {
    printf '\n===== %s starting kafka =====\n' "$(date '+%F %T')"
  } >> "$NODE_OUT"
  # The inner bash writes its own pid and then execs java, so the pid file holds the JVM pid
  # whether or not setsid had to fork. setsid detaches it from this terminal's signals.
  rm -f "$NODE_PID_FILE"
  kafka_java_cmd kafka.Kafka "$NODE_PROPS"
  # shellcheck disable=SC2016  # expanded by the inner shell
  setsid nohup bash -c 'echo $$ > "$0"; exec "$@"' "$NODE_PID_FILE" "${KAFKA_CMD[@]}" \
    >> "$NODE_OUT" 2>&1 < /dev/null &
  disown || true
  NODE_LAUNCHED=1
}

# Wait until the selected node, launched with log offset $1, has started and serves.
kafka_wait() {
  local log_offset="$1" deadline=$((SECONDS + KAFKA_START_TIMEOUT)) started=0 pid="" size
  while (( SECONDS < deadline )); do
    sleep 1
    [[ -n "$pid" ]] || pid="$(tr -dc '0-9' < "$NODE_PID_FILE" 2>/dev/null || true)"
    if [[ -n "$pid" ]] && ! kill -0 "$pid" 2>/dev/null; then
      say "$NODE_NAME: broker exited during startup; last 40 lines of $NODE_OUT and $NODE_LOG:" >&2
      tail -n 40 "$NODE_OUT" >&2 || true
      tail -n 40 "$NODE_LOG" >&2 2>/dev/null || true
      rm -f "$NODE_PID_FILE"
      exit 1
    fi
    if (( ! started )) && [[ -f "$NODE_LOG" ]]; then
      size="$(stat -c %s "$NODE_LOG")"
      (( size >= log_offset )) || log_offset=0
      if tail -c "+$((log_offset + 1))" "$NODE_LOG" \
          | grep -qE 'Kafka Server started|started \(kafka\.server\.KafkaRaftServer\)'; then
        started=1
      fi
    fi
    if (( started )) && port_open "$NODE_PORT"; then
      say "$NODE_NAME: up on 127.0.0.1:$NODE_PORT (pid $pid)"
      return 0
    fi
  done
  say "$NODE_NAME: not serving on 127.0.0.1:$NODE_PORT after ${KAFKA_START_TIMEOUT}s; last 40 lines of $NODE_LOG:" >&2
  tail -n 40 "$NODE_LOG" >&2 2>/dev/null || tail -n 40 "$NODE_OUT" >&2 || true
  say "$NODE_NAME: the broker (pid ${pid:-?}) is left running; run '$0 stop $NODE_NAME' to stop it" >&2
  exit 1
}

# Start the nodes $@: all launched first, then each waited for, as a node of a cluster only
# serves once a majority of the controller quorum runs.
kafka_start() {
  command -v java >/dev/null || die "kafka: java not found; install a JDK >= 17 (Debian package 'openjdk-17-jre-headless')"
  mkdir -p "$KAFKA_DIR" "$LOG_DIR" "$RUN_DIR"
  kafka_resolve_classpath
  local id launched=() offsets=()
  for id in "$@"; do
    kafka_node "$id"
    kafka_launch
    if (( NODE_LAUNCHED )); then
      launched+=("$id")
      offsets+=("$NODE_LOG_OFFSET")
    fi
  done
  for (( id = 0; id < ${#launched[@]}; id++ )); do
    kafka_node "${launched[$id]}"
    kafka_wait "${offsets[$id]}"
  done
}

# Stop the nodes $@ all at once (one by one, the last of a cluster would wait for a controller
# quorum that is gone).
kafka_stop() {
  local id
  for id in "$@"; do
    kafka_node "$id"
    stop_pidfile "$NODE_NAME" "$NODE_PID_FILE" kafka.Kafka "$NODE_PORT" &
  done
  wait
}

kafka_status() {
  local id pid rc=0
  for id in "$@"; do
    kafka_node "$id"
    pid="$(live_pid "$NODE_PID_FILE" kafka.Kafka)"
    if [[ -n "$pid" ]]; then
      if port_open "$NODE_PORT"; then
        say "$NODE_NAME: running (pid $pid) on 127.0.0.1:$NODE_PORT"
      else
        say "$NODE_NAME: starting (pid $pid), 127.0.0.1:$NODE_PORT not answering yet"
      fi
    elif port_open "$NODE_PORT"; then
      say "$NODE_NAME: 127.0.0.1:$NODE_PORT answers, but not started by this script"
    else
      say "$NODE_NAME: stopped"
      rc=3
    fi
  done
  return "$rc"
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
kafka_check_nodes
KAFKA_SELECTED=()
for (( i = 1; i <= KAFKA_NODES; i++ )); do KAFKA_SELECTED+=("$i"); done
case "$target" in
  kafka) services=(kafka) ;;
  kafka-[1-9]*)
    node="${target#kafka-}"
    [[ "$node" =~ ^[0-9]+$ ]] && (( node <= KAFKA_NODES )) \
      || die "kafka: no node $target (KAFKA_PORT lists $KAFKA_NODES)"
    services=(kafka)
    KAFKA_SELECTED=("$node")
    ;;
  redis) services=(redis) ;;
  all) services=(redis kafka) ;;
  *) usage ;;
esac

# Each service's start, stop and status; Kafka's for the selected nodes.
run() {
  local action="$1" service="$2"
  if [[ "$service" == kafka ]]; then
    "kafka_$action" "${KAFKA_SELECTED[@]}"
  else
    "${service}_$action"
  fi
}

case "$action" in
  start)
    for s in "${services[@]}"; do run start "$s"; done
    ;;
  stop)
    # Stop in reverse start order.
    for (( i=${#services[@]}-1; i>=0; i-- )); do run stop "${services[$i]}"; done
    ;;
  status)
    rc=0
    for s in "${services[@]}"; do run status "$s" || rc=3; done
    exit "$rc"
    ;;
  *) usage ;;
esac
