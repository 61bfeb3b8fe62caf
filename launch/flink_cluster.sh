#!/usr/bin/env bash
# Local Flink session cluster: 1 JobManager + N TaskManagers, each a separate background JVM,
# built from the jars that launch/fetch_flink.sh caches (the PyPI wheel has no bin/*.sh).
#
#   launch/flink_cluster.sh start [--taskmanagers N]   # default N=2, 1 slot each
#   launch/flink_cluster.sh status                     # prints REST /overview JSON
#   launch/flink_cluster.sh stop                       # SIGTERM, wait, then SIGKILL
#
# Env (defaults sized for a 2-core 24 GiB machine that also runs Python SDK workers):
#   CROPSHARD_FLINK_HOME   run dir: conf/, log/, pids/, tmp/     (/tmp/cropshard-flink)
#   FLINK_REST_PORT        REST/web UI port                       (8081)
#   FLINK_RPC_PORT         JobManager RPC port                    (6123)
#   FLINK_TASKMANAGERS     number of TaskManagers                 (2)
#   FLINK_TM_SLOTS         slots per TaskManager                  (1)
#   FLINK_TM_MEMORY        TaskManager process size               (3072m)
#   FLINK_JM_MEMORY        JobManager process size                (1536m)
#   FLINK_START_TIMEOUT    seconds to wait for all TMs            (120)
#   FLINK_STOP_TIMEOUT     seconds between SIGTERM and SIGKILL    (30)
# All processes bind to localhost only.
set -euo pipefail
SCRIPT_NAME=flink_cluster
# shellcheck source=launch/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

RUN_DIR=${CROPSHARD_FLINK_HOME:-/tmp/cropshard-flink}
CONF_DIR=$RUN_DIR/conf
LOG_DIR=$RUN_DIR/log
PID_DIR=$RUN_DIR/pids
RPC_PORT=${FLINK_RPC_PORT:-6123}
TASKMANAGERS=${FLINK_TASKMANAGERS:-2}
TM_SLOTS=${FLINK_TM_SLOTS:-1}
# 2 x 3 GiB TMs + 1.5 GiB JM = 7.5 GiB of JVMs; the rest stays free for Python SDK workers
# (LOOPBACK runs them in the submitting process, EXTERNAL/PROCESS next to each TM).
TM_MEMORY=${FLINK_TM_MEMORY:-3072m}
JM_MEMORY=${FLINK_JM_MEMORY:-1536m}
START_TIMEOUT=${FLINK_START_TIMEOUT:-120}
STOP_TIMEOUT=${FLINK_STOP_TIMEOUT:-30}

# REST port: the running cluster's (from the config it was started with), else FLINK_REST_PORT.
conf_port() { sed -n 's/^rest.port: *//p' "$CONF_DIR/config.yaml" 2>/dev/null || true; }
rest_port() {
  local p=""
  if [[ -n $(pid_of jobmanager) ]]; then p=$(conf_port); fi
  echo "${p:-${FLINK_REST_PORT:-8081}}"
}

# Module flags Flink needs on Java 17 (what the stock env.java.opts.all contains).
JAVA_MODULE_OPTS=(
  --add-exports=java.base/sun.net.util=ALL-UNNAMED
  --add-exports=java.rmi/sun.rmi.registry=ALL-UNNAMED
  --add-exports=jdk.compiler/com.sun.tools.javac.api=ALL-UNNAMED
  --add-exports=jdk.compiler/com.sun.tools.javac.file=ALL-UNNAMED
  --add-exports=jdk.compiler/com.sun.tools.javac.parser=ALL-UNNAMED
  --add-exports=jdk.compiler/com.sun.tools.javac.tree=ALL-UNNAMED
  --add-exports=jdk.compiler/com.sun.tools.javac.util=ALL-UNNAMED
  --add-exports=java.security.jgss/sun.security.krb5=ALL-UNNAMED
  --add-opens=java.base/java.lang=ALL-UNNAMED
  --add-opens=java.base/java.net=ALL-UNNAMED
  --add-opens=java.base/java.io=ALL-UNNAMED
  --add-opens=java.base/java.nio=ALL-UNNAMED
  --add-opens=java.base/sun.nio.ch=ALL-UNNAMED
  --add-opens=java.base/java.lang.reflect=ALL-UNNAMED
  --add-opens=java.base/java.text=ALL-UNNAMED
  --add-opens=java.base/java.time=ALL-UNNAMED
  --add-opens=java.base/java.util=ALL-UNNAMED
  --add-opens=java.base/java.util.concurrent=ALL-UNNAMED
  --add-opens=java.base/java.util.concurrent.atomic=ALL-UNNAMED
  --add-opens=java.base/java.util.concurrent.locks=ALL-UNNAMED
)

usage() {
  echo "usage: $0 start [--taskmanagers N] | stop | status" >&2
  exit 2
}

# --- process bookkeeping --------------------------------------------------------------------
# A pid counts as ours only if it is alive and its command line names our conf dir, so a
# stale pid file whose pid was reused by another process is never signalled.
is_ours() {
  local pid=$1
  [[ -n $pid && -r /proc/$pid/cmdline ]] && tr '\0' ' ' <"/proc/$pid/cmdline" | grep -qF -- "--configDir $CONF_DIR"
}
pid_of() { # name -> pid if running, else empty
  local f=$PID_DIR/$1.pid pid
  [[ -f $f ]] || return 0
  pid=$(<"$f")
  if is_ours "$pid"; then echo "$pid"; fi
}
running_names() { # names with a live process, TaskManagers first
  local f name
  for f in "$PID_DIR"/taskmanager-*.pid "$PID_DIR"/jobmanager.pid; do
    [[ -e $f ]] || continue
    name=$(basename "$f" .pid)
    if [[ -n $(pid_of "$name") ]]; then echo "$name"; fi
  done
}

overview() { curl -fsS --max-time 3 "http://localhost:$(rest_port)/overview" 2>/dev/null; }
json_field() { # crude extraction of a scalar from Flink's flat overview JSON
  sed -n "s/.*\"$1\":\"\{0,1\}\([^\",}]*\).*/\1/p"
}

tail_logs() {
  local f
  for f in "$LOG_DIR"/*.log "$LOG_DIR"/*.out; do
    [[ -s $f ]] || continue
    echo "----- tail -n 25 $f" >&2
    tail -n 25 "$f" >&2
  done
}

# --- config ---------------------------------------------------------------------------------
write_conf() {
  local port=$1 parallelism=$((TASKMANAGERS * TM_SLOTS))
  mkdir -p "$CONF_DIR" "$LOG_DIR" "$PID_DIR" "$RUN_DIR/tmp" "$RUN_DIR/web" "$RUN_DIR/blob" "$RUN_DIR/plugins"
  cat >"$CONF_DIR/config.yaml" <<YAML
# Generated by launch/flink_cluster.sh on every start; edit the script, not this file.
jobmanager.rpc.address: localhost
jobmanager.rpc.port: $RPC_PORT
jobmanager.bind-host: localhost
jobmanager.memory.process.size: $JM_MEMORY
jobmanager.execution.failover-strategy: region
taskmanager.host: localhost
taskmanager.bind-host: localhost
taskmanager.numberOfTaskSlots: $TM_SLOTS
taskmanager.memory.process.size: $TM_MEMORY
parallelism.default: $parallelism
rest.address: localhost
rest.bind-address: localhost
rest.port: $port
io.tmp.dirs: $RUN_DIR/tmp
web.tmpdir: $RUN_DIR/web
blob.storage.directory: $RUN_DIR/blob
# Beam's Flink runner can still touch a job's user-code classloader after the job ends (gRPC and
# shutdown threads); Flink's leak check then throws "Trying to access closed classloader".
classloader.check-leaked-classloader: false
YAML
  cat >"$CONF_DIR/log4j.properties" <<'PROPS'
# Generated by launch/flink_cluster.sh. One rolling file per process, named by -Dlog.file.
monitorInterval = 30
rootLogger.level = INFO
rootLogger.appenderRef.file.ref = MainAppender
logger.pekko.name = org.apache.pekko
logger.pekko.level = INFO
logger.kafka.name = org.apache.kafka
logger.kafka.level = INFO
logger.hadoop.name = org.apache.hadoop
logger.hadoop.level = WARN
logger.zookeeper.name = org.apache.zookeeper
logger.zookeeper.level = INFO
logger.netty.name = org.jboss.netty.channel.DefaultChannelPipeline
logger.netty.level = OFF
appender.main.name = MainAppender
appender.main.type = RollingFile
appender.main.append = true
appender.main.fileName = ${sys:log.file}
appender.main.filePattern = ${sys:log.file}.%i
appender.main.layout.type = PatternLayout
appender.main.layout.pattern = %d{yyyy-MM-dd HH:mm:ss,SSS} %-5p %-60c %x - %m%n
appender.main.policies.type = Policies
appender.main.policies.size.type = SizeBasedTriggeringPolicy
appender.main.policies.size.size = 100MB
appender.main.policies.startup.type = OnStartupTriggeringPolicy
appender.main.strategy.type = DefaultRolloverStrategy
appender.main.strategy.max = 5
PROPS
}

# Memory flags and dynamic properties that Flink's shell scripts normally compute.
# Prints two lines: JVM flags, then "-D key=value" dynamic properties.
resource_params() { # GET_JM_RESOURCE_PARAMS | GET_TM_RESOURCE_PARAMS
  local out
  out=$(java -cp "$FLINK_DIST_DIR/bin/bash-java-utils.jar:$FLINK_DIST_DIR/lib/*" \
    org.apache.flink.runtime.util.bash.BashJavaUtils "$1" --configDir "$CONF_DIR" 2>&1) \
    || die "BashJavaUtils $1 failed:"$'\n'"$out"
  out=$(grep '^BASH_JAVA_UTILS_EXEC_RESULT:' <<<"$out" | sed 's/^BASH_JAVA_UTILS_EXEC_RESULT://')
  [[ $(wc -l <<<"$out") -eq 2 ]] || die "unexpected BashJavaUtils $1 output: $out"
  echo "$out"
}

# If start fails after it launched something, show the logs and leave nothing running.
START_DONE=0
on_start_exit() {
  if ((!START_DONE)); then
    tail_logs
    echo "[$SCRIPT_NAME] start failed: stopping what was started (logs above, in $LOG_DIR)" >&2
    cmd_stop >&2 || true
  fi
}

# launch NAME MAINCLASS "JVM FLAGS" "DYNAMIC PROPS" [extra args...]
launch() {
  local name=$1 main=$2 jvm_flags=$3 dyn_props=$4 pid
  shift 4
  trap on_start_exit EXIT
  local -a jvm dyn
  read -ra jvm <<<"$jvm_flags"
  read -ra dyn <<<"$dyn_props"
  : >"$LOG_DIR/$name.out"
  # setsid: own session, so a Ctrl-C in the caller's terminal does not reach the JVMs.
  setsid java "${jvm[@]}" "${JAVA_MODULE_OPTS[@]}" \
    -Dlog.file="$LOG_DIR/$name.log" \
    -Dlog4j.configurationFile="file:$CONF_DIR/log4j.properties" \
    -cp "$FLINK_DIST_DIR/lib/*" "$main" --configDir "$CONF_DIR" "${dyn[@]}" "$@" \
    >>"$LOG_DIR/$name.out" 2>&1 </dev/null &
  pid=$!
  echo "$pid" >"$PID_DIR/$name.pid"
  log "started $name (pid $pid, log $LOG_DIR/$name.log)"
}

# --- commands -------------------------------------------------------------------------------
cmd_start() {
  [[ $TASKMANAGERS =~ ^[1-9][0-9]*$ ]] || die "--taskmanagers must be a positive integer"
  [[ -f $FLINK_DIST_DIR/.complete ]] || die "no Flink distribution in $FLINK_DIST_DIR: run launch/fetch_flink.sh first"
  need java "install a Java 17 JDK/JRE"
  need curl "apt-get install curl"
  need setsid "util-linux"
  local port t0=$SECONDS jm_pid
  # JVMs run from the run dir with an (empty) plugins dir there, not from the caller's cwd.
  mkdir -p "$RUN_DIR/plugins"
  cd "$RUN_DIR"
  export FLINK_PLUGINS_DIR=$RUN_DIR/plugins
  port=$(rest_port)
  jm_pid=$(pid_of jobmanager)

  if [[ -z $jm_pid ]]; then
    # Someone else (another cluster, another run dir) on our port would make us report a lie.
    if curl -s --max-time 2 -o /dev/null "http://localhost:$port/"; then
      die "port $port is already in use by a process not started from $RUN_DIR; stop it or set FLINK_REST_PORT"
    fi
    rm -f "$PID_DIR"/*.pid
    write_conf "$port"
    local jm_params
    jm_params=$(resource_params GET_JM_RESOURCE_PARAMS)
    launch jobmanager org.apache.flink.runtime.entrypoint.StandaloneSessionClusterEntrypoint \
      "$(sed -n 1p <<<"$jm_params")" "$(sed -n 2p <<<"$jm_params")"
  else
    if [[ -n ${FLINK_REST_PORT:-} && $FLINK_REST_PORT != "$port" ]]; then
      die "the cluster in $RUN_DIR already runs on port $port, not FLINK_REST_PORT=$FLINK_REST_PORT: stop it first or use another CROPSHARD_FLINK_HOME"
    fi
    log "JobManager already running (pid $jm_pid); keeping its config"
  fi

  # TaskManagers register with the JobManager by themselves (they retry until it is up),
  # so they start right away instead of after the JobManager is ready.
  local i tm_params=""
  for ((i = 1; i <= TASKMANAGERS; i++)); do
    if [[ -n $(pid_of "taskmanager-$i") ]]; then continue; fi
    [[ -n $tm_params ]] || tm_params=$(resource_params GET_TM_RESOURCE_PARAMS)
    launch "taskmanager-$i" org.apache.flink.runtime.taskexecutor.TaskManagerRunner \
      "$(sed -n 1p <<<"$tm_params")" "$(sed -n 2p <<<"$tm_params")" \
      -D "taskmanager.resource-id=cropshard-tm-$i"
  done

  # Wait for REST to report all TaskManagers; fail fast if a JVM dies.
  local ov tms=0 name
  while :; do
    ov=$(overview || true)
    tms=$(json_field taskmanagers <<<"$ov")
    if [[ -n $tms && $tms -ge $TASKMANAGERS ]]; then break; fi
    for name in jobmanager $(seq -f 'taskmanager-%g' 1 "$TASKMANAGERS"); do
      if [[ -z $(pid_of "$name") ]]; then die "$name exited during startup"; fi
    done
    if ((SECONDS - t0 >= START_TIMEOUT)); then
      die "timed out after ${START_TIMEOUT}s waiting for $TASKMANAGERS TaskManagers on http://localhost:$port (REST saw ${tms:-none})"
    fi
    sleep 0.5
  done
  START_DONE=1
  log "Flink $(json_field flink-version <<<"$ov") up in $((SECONDS - t0))s: $tms TaskManagers, $(json_field slots-total <<<"$ov") slots, http://localhost:$port (run dir $RUN_DIR)"
}

cmd_stop() {
  local names name pid deadline
  names=$(running_names)
  if [[ -z $names ]]; then
    rm -f "$PID_DIR"/*.pid 2>/dev/null || true
    log "not running (run dir $RUN_DIR)"
    return 0
  fi
  # TaskManagers first (so they do not log reconnect noise), then the JobManager.
  for group in taskmanager jobmanager; do
    local -a pids=()
    for name in $names; do
      [[ $name == "$group"* ]] || continue
      pid=$(pid_of "$name")
      [[ -n $pid ]] || continue
      kill -TERM "$pid" 2>/dev/null || true
      pids+=("$pid")
      log "SIGTERM $name (pid $pid)"
    done
    deadline=$((SECONDS + STOP_TIMEOUT))
    for pid in "${pids[@]}"; do
      while is_ours "$pid" && ((SECONDS < deadline)); do sleep 0.2; done
      if is_ours "$pid"; then
        log "pid $pid still alive after ${STOP_TIMEOUT}s: SIGKILL"
        kill -KILL "$pid" 2>/dev/null || true
      fi
    done
  done
  rm -f "$PID_DIR"/*.pid
  log "stopped"
}

cmd_status() {
  local name pid ov any=0
  for name in $(running_names); do
    pid=$(pid_of "$name")
    log "$name running (pid $pid)"
    any=1
  done
  if ov=$(overview); then
    echo "$ov"
  else
    ((any)) && log "processes are up but REST http://localhost:$(rest_port)/overview does not answer"
    ((any)) || log "not running (run dir $RUN_DIR)"
    return 3
  fi
}

# --- main -----------------------------------------------------------------------------------
[[ $# -ge 1 ]] || usage
command=$1
shift
while [[ $# -gt 0 ]]; do
  case $1 in
    --taskmanagers) [[ $# -ge 2 ]] || usage; TASKMANAGERS=$2; shift 2 ;;
    --taskmanagers=*) TASKMANAGERS=${1#*=}; shift ;;
    *) usage ;;
  esac
done
case $command in
  start) cmd_start ;;
  stop) cmd_stop ;;
  status) cmd_status ;;
  *) usage ;;
esac
