#!/usr/bin/env bash
# Local Flink session cluster: 1 JobManager + N TaskManagers, each a separate background JVM,
# built from the jars that launch/fetch_flink.sh caches (the PyPI package has no bin/*.sh), plus
# Beam's Flink job server (FlinkJobServerDriver, from the classpath dir fetch_flink.sh resolves),
# which Python pipelines submit to with --runner=PortableRunner --job_endpoint=localhost:8099.
#
#   launch/flink_cluster.sh start [--taskmanagers N] [--no-job-server]   # default N=2, 1 slot each
#   launch/flink_cluster.sh status                     # processes, REST /overview JSON, job endpoint
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
#   BEAM_JOB_PORT          job server gRPC port (--job_endpoint)  (8099)
#   BEAM_ARTIFACT_PORT     job server artifact staging port       (8098)
#   BEAM_EXPANSION_PORT    Java expansion service port, -1 = off  (-1)
#   BEAM_JOB_SERVER_HEAP   job server -Xmx                        (1024m)
#   JOB_SERVER_CLASSPATH   job server classpath                   ($JOB_SERVER_DIR/lib/*)
# The Flink JVMs bind to localhost only. Beam's job server binds its job and artifact ports on all
# interfaces (its --job-host only sets the advertised name): firewall them on shared hosts.
set -euo pipefail
SCRIPT_NAME=flink_cluster
# shellcheck source=launch/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

RUN_DIR=$FLINK_RUN_DIR
CONF_DIR=$RUN_DIR/conf
# Flink 2.x reads conf/config.yaml (standard YAML). Flink 1.19 reads conf/flink-conf.yaml with its
# legacy flat-key parser if that file exists, else config.yaml; older 1.x only flink-conf.yaml.
# The flat "key: value" lines written below are valid for both, so 1.x gets flink-conf.yaml.
if [[ ${FLINK_PATCH_VERSION%%.*} -ge 2 ]]; then
  CONF_FILE=config.yaml OTHER_CONF_FILE=flink-conf.yaml
else
  CONF_FILE=flink-conf.yaml OTHER_CONF_FILE=config.yaml
fi
LOG_DIR=$RUN_DIR/log
PID_DIR=$RUN_DIR/pids
RPC_PORT=${FLINK_RPC_PORT:-6123}
TASKMANAGERS=${FLINK_TASKMANAGERS:-2}
TM_SLOTS=${FLINK_TM_SLOTS:-1}
# 2 x 3 GiB TMs + 1.5 GiB JM = 7.5 GiB of JVMs; the rest stays free for the Python SDK workers
# (PROCESS: one per slot next to each TM, ~630 MiB RSS each). Measured with bench/bench_flink.py
# (PROCESS workers, shards written without grouping): a TaskManager JVM peaked at 1.3-1.5 GiB RSS
# at both 10,000 and 100,000 images, so 3 GiB is not what memory needs per image (that was the
# grouped write: Direct buffer OOM at ~4,400 images); the rest is headroom for Flink's managed
# memory (sort-based exchanges) and the network buffers the blocking exchanges reserve.
TM_MEMORY=${FLINK_TM_MEMORY:-3072m}
JM_MEMORY=${FLINK_JM_MEMORY:-1536m}
START_TIMEOUT=${FLINK_START_TIMEOUT:-120}
STOP_TIMEOUT=${FLINK_STOP_TIMEOUT:-30}
JOB_PORT=${BEAM_JOB_PORT:-8099}
ARTIFACT_PORT=${BEAM_ARTIFACT_PORT:-8098}
EXPANSION_PORT=${BEAM_EXPANSION_PORT:--1}
JOB_SERVER_HEAP=${BEAM_JOB_SERVER_HEAP:-1024m}
JOB_SERVER_CP=${JOB_SERVER_CLASSPATH:-$JOB_SERVER_DIR/lib/*}
WITH_JOB_SERVER=1

# REST port: the running cluster's (from the config it was started with), else FLINK_REST_PORT.
conf_port() { sed -n 's/^rest.port: *//p' "$CONF_DIR/$CONF_FILE" 2>/dev/null || true; }
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
  echo "usage: $0 start [--taskmanagers N] [--no-job-server] | stop | status" >&2
  exit 2
}

# --- process bookkeeping --------------------------------------------------------------------
# A pid counts as ours only if it is alive and its command line names our conf dir (Flink's
# --configDir, the job server's --flink-conf-dir), so a stale pid file whose pid was reused by
# another process is never signalled.
is_ours() {
  local pid=$1 cmd
  [[ -n $pid && -r /proc/$pid/cmdline ]] || return 1
  # 2>/dev/null first: the process may exit between the test above and this read.
  cmd=$(tr '\0' ' ' 2>/dev/null <"/proc/$pid/cmdline") || return 1
  [[ $cmd == *"--configDir $CONF_DIR "* || $cmd == *"--flink-conf-dir $CONF_DIR "* ]]
}
alive() { # pid -> true while the process exists and is not a zombie
  local stat
  stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
  stat=${stat##*) }
  [[ ${stat%% *} != Z ]]
}
# await_exec NAME PID: a process started with `cmd &` is a copy of this shell until its exec;
# until then its command line is ours (bash's), so is_ours is false and any "did it exit?" check
# would report a live JVM as dead (a CI start failed with exactly that). Wait for the exec.
await_exec() {
  local name=$1 pid=$2 t0=$SECONDS
  until is_ours "$pid"; do
    alive "$pid" || die "$name (pid $pid) exited during startup"
    if ((SECONDS - t0 >= 30)); then
      kill -KILL "$pid" 2>/dev/null || true
      die "$name (pid $pid) did not start java within 30s"
    fi
    sleep 0.05
  done
}
pid_of() { # name -> pid if running, else empty
  local f=$PID_DIR/$1.pid pid
  [[ -f $f ]] || return 0
  pid=$(<"$f")
  if is_ours "$pid"; then echo "$pid"; fi
}
running_names() { # names with a live process: job server, TaskManagers, then JobManager
  local f name
  for f in "$PID_DIR"/jobserver.pid "$PID_DIR"/taskmanager-*.pid "$PID_DIR"/jobmanager.pid; do
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
  rm -f "$CONF_DIR/$OTHER_CONF_FILE"
  cat >"$CONF_DIR/$CONF_FILE" <<YAML
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
# Beam's batch jobs on Flink have many blocking exchanges (cropshard with 3 splits: 88 vertices),
# and every blocking result partition reserves taskmanager.network.sort-shuffle.min-buffers network
# buffers (default 512 x 32 KiB) while its producer runs: with the default, a 3-split build failed
# with "Insufficient number of network buffers: required 512, but only 334 available" (8028 in
# all). 256 (8 MB) halves that reservation; Flink 1.19 needs >= 2, and with at least 2 buffers per
# subpartition (any parallelism up to 128 here) its SortMergeResultPartition writes through its
# hash-based buffer anyway, so nothing is lost at this scale.
taskmanager.network.sort-shuffle.min-buffers: 256
# Beam's runner jars are also on each TaskManager's classpath (beam_taskmanager_classpath), and
# classes are loaded from there before the jars every job stages: Beam keeps a job's Python SDK
# workers between fused stages only when its context factory comes from Flink's parent classloader
# (FlinkExecutableStageContextFactory: "Clean up context immediately if its class is not loaded on
# Flink parent classloader"); without this each TaskManager started 8 SDK workers (one per stage,
# ~10 s each) for one 300-image build. Parent-first for everything, not only org.apache.beam.:
# Beam's dependencies (joda-time, ...) must come from the same loader as Beam, else
# "cannot assign instance of org.joda.time.Duration to field ... of type org.joda.time.Duration".
classloader.resolve-order: parent-first
# RPCs to a TaskManager (task deployment) time out after 10 s by default; on this 2-core machine
# under load (load average ~20 from other jobs) the CI build FAILED once with "AskTimeoutException:
# Ask timed out on [...taskmanager_0...] after [10000 ms]". 60 s rides out such stalls; a
# TaskManager that is really gone is still detected by the heartbeat (50 s).
pekko.ask.timeout: 60 s
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

# If start fails after it launched something, show the logs and stop what THIS start launched
# (a cluster that was already running stays up, e.g. when only the job server fails).
START_DONE=0
STARTED=()
on_start_exit() {
  if ((!START_DONE)); then
    tail_logs
    echo "[$SCRIPT_NAME] start failed: stopping what this start launched (logs above, in $LOG_DIR)" >&2
    if ((${#STARTED[@]})); then stop_names "${STARTED[@]}" >&2 || true; fi
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
    -cp "$FLINK_DIST_DIR/lib/*${EXTRA_CLASSPATH:+:$EXTRA_CLASSPATH}" "$main" --configDir "$CONF_DIR" "${dyn[@]}" "$@" \
    >>"$LOG_DIR/$name.out" 2>&1 </dev/null &
  pid=$!
  echo "$pid" >"$PID_DIR/$name.pid"
  STARTED+=("$name")
  await_exec "$name" "$pid"
  log "started $name (pid $pid, log $LOG_DIR/$name.log)"
}

port_open() { (exec 3<>"/dev/tcp/localhost/$1") 2>/dev/null; }

# "Beam 2.62.0 job server (beam-runners-flink-1.19)", from the runner jar on its classpath.
job_server_version() {
  local jar name
  jar=$(compgen -G "${JOB_SERVER_CP%\*}beam-runners-flink-*.jar" | head -n1 || true)
  if [[ -z $jar ]]; then echo "job server ($JOB_SERVER_CP)"; return 0; fi
  name=$(basename "$jar" .jar)
  echo "Beam ${name##*-} job server (${name%-*})"
}

# Beam's Flink job server: a plain Java process that accepts Python pipelines (job port),
# stages their artifacts (artifact port), translates them and submits them to the JobManager's
# REST endpoint. --flink-conf-dir hands it this cluster's conf, so parallelism.default applies.
start_job_server() {
  local rest_port=$1 pid t0=$SECONDS
  if [[ -n $(pid_of jobserver) ]]; then
    log "job server already running (pid $(pid_of jobserver)) on $(cat "$JOB_ENDPOINT_FILE" 2>/dev/null)"
    return 0
  fi
  [[ $JOB_SERVER_CP != "$JOB_SERVER_DIR/lib/*" || -f $JOB_SERVER_DIR/.complete ]] \
    || die "no Beam job server in $JOB_SERVER_DIR: run launch/fetch_flink.sh (or start with --no-job-server)"
  local p
  for p in "$JOB_PORT" "$ARTIFACT_PORT"; do
    if port_open "$p"; then die "port $p is already in use: stop what holds it or set BEAM_JOB_PORT / BEAM_ARTIFACT_PORT"; fi
  done
  trap on_start_exit EXIT
  : >"$LOG_DIR/jobserver.log"
  setsid java "-Xmx$JOB_SERVER_HEAP" \
    -Dorg.slf4j.simpleLogger.showDateTime=true \
    -Dorg.slf4j.simpleLogger.dateTimeFormat="yyyy-MM-dd HH:mm:ss,SSS" \
    -Djava.io.tmpdir="$RUN_DIR/tmp" \
    -cp "$JOB_SERVER_CP" "$JOB_SERVER_MAIN_CLASS" \
    --flink-master="localhost:$rest_port" --flink-conf-dir "$CONF_DIR" \
    --job-host=localhost --job-port="$JOB_PORT" --artifact-port="$ARTIFACT_PORT" \
    --expansion-port="$EXPANSION_PORT" --artifacts-dir="$RUN_DIR/artifacts" \
    >>"$LOG_DIR/jobserver.log" 2>&1 </dev/null &
  pid=$!
  echo "$pid" >"$PID_DIR/jobserver.pid"
  STARTED+=(jobserver)
  await_exec jobserver "$pid"
  log "started jobserver (pid $pid, log $LOG_DIR/jobserver.log)"
  until port_open "$JOB_PORT" && grep -q 'JobService started on' "$LOG_DIR/jobserver.log"; do
    [[ -n $(pid_of jobserver) ]] || die "the job server exited during startup"
    ((SECONDS - t0 < START_TIMEOUT)) || die "timed out after ${START_TIMEOUT}s waiting for the job server on port $JOB_PORT"
    sleep 0.3
  done
  echo "localhost:$JOB_PORT" >"$JOB_ENDPOINT_FILE"
  log "job server up in $((SECONDS - t0))s"
}

# Beam's runner classes on every TaskManager's own classpath, loaded parent-first (see write_conf):
# the job server's jars minus what Flink's lib/ already has (Flink itself, logging bindings, Kryo).
# Empty when there is no job server (a Flink-only cluster).
beam_taskmanager_classpath() {
  local dir=$RUN_DIR/beam-lib jar name
  [[ -f $JOB_SERVER_DIR/.complete ]] || return 0
  rm -rf "$dir" && mkdir -p "$dir"
  for jar in "$JOB_SERVER_DIR"/lib/*.jar; do
    name=$(basename "$jar")
    case $name in flink-* | slf4j-* | log4j-* | kryo-* | minlog-* | chill-* | objenesis-*) continue ;; esac
    ln -s "$jar" "$dir/$name"
  done
  echo "$dir/*"
}

# --- commands -------------------------------------------------------------------------------
cmd_start() {
  [[ $TASKMANAGERS =~ ^[1-9][0-9]*$ ]] || { echo "[flink_cluster] ERROR: --taskmanagers must be a positive integer, got '$TASKMANAGERS'" >&2; usage; }
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
    # TaskManagers or a job server left from a cluster whose JobManager is gone would register
    # with / submit to the new one untracked: stop them first.
    if [[ -n $(running_names) ]]; then
      log "no JobManager, but processes of an earlier cluster are running: stopping them"
      cmd_stop
    fi
    rm -f "$PID_DIR"/*.pid "$JOB_ENDPOINT_FILE"
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
  local i tm_params="" beam_cp
  beam_cp=$(beam_taskmanager_classpath)
  for ((i = 1; i <= TASKMANAGERS; i++)); do
    if [[ -n $(pid_of "taskmanager-$i") ]]; then continue; fi
    [[ -n $tm_params ]] || tm_params=$(resource_params GET_TM_RESOURCE_PARAMS)
    EXTRA_CLASSPATH=$beam_cp launch "taskmanager-$i" org.apache.flink.runtime.taskexecutor.TaskManagerRunner \
      "$(sed -n 1p <<<"$tm_params")" "$(sed -n 2p <<<"$tm_params")" \
      -D "taskmanager.resource-id=cropshard-tm-$i"
  done

  # Wait for REST to report all TaskManagers; fail fast if a JVM dies.
  local ov tms=0 slots=0 name
  while :; do
    ov=$(overview || true)
    tms=$(json_field taskmanagers <<<"$ov")
    slots=$(json_field slots-total <<<"$ov")
    # A TaskManager is counted before its slots are: wait for both (flink.sh sizes
    # --parallelism from slots-total).
    if [[ -n $tms && $tms -ge $TASKMANAGERS && -n $slots && $slots -ge $((TASKMANAGERS * TM_SLOTS)) ]]; then break; fi
    for name in jobmanager $(seq -f 'taskmanager-%g' 1 "$TASKMANAGERS"); do
      if [[ -z $(pid_of "$name") ]]; then die "$name exited during startup"; fi
    done
    if ((SECONDS - t0 >= START_TIMEOUT)); then
      die "timed out after ${START_TIMEOUT}s waiting for $TASKMANAGERS TaskManagers on http://localhost:$port (REST saw ${tms:-none})"
    fi
    sleep 0.5
  done
  log "Flink $(json_field flink-version <<<"$ov") up in $((SECONDS - t0))s: $tms TaskManagers, $slots slots, http://localhost:$port (run dir $RUN_DIR)"
  local summary
  summary="Flink $(json_field flink-version <<<"$ov") (pinned $FLINK_PATCH_VERSION)"
  if ((WITH_JOB_SERVER)); then
    start_job_server "$port"
    summary+=", $(job_server_version) at --job_endpoint=localhost:$JOB_PORT (submit with apache-beam==$BEAM_VERSION)"
  fi
  START_DONE=1
  log "ready in $((SECONDS - t0))s: $summary"
}

# stop_names NAME...: SIGTERM, wait up to STOP_TIMEOUT, then SIGKILL; removes their pid files.
# Job server first (it holds clients of the cluster), then TaskManagers (so they do not log
# reconnect noise), then the JobManager.
stop_names() {
  local names="$*" name pid deadline group
  for group in jobserver taskmanager jobmanager; do
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
  for name in $names; do
    rm -f "$PID_DIR/$name.pid"
    if [[ $name == jobserver ]]; then rm -f "$JOB_ENDPOINT_FILE"; fi
  done
}

cmd_stop() {
  local names
  names=$(running_names)
  if [[ -n $names ]]; then
    # shellcheck disable=SC2086  # names are single words
    stop_names $names
  fi
  rm -f "$PID_DIR"/*.pid "$JOB_ENDPOINT_FILE" 2>/dev/null || true
  if [[ -n $names ]]; then log "stopped"; else log "not running (run dir $RUN_DIR)"; fi
}

cmd_status() {
  local name pid ov any=0
  for name in $(running_names); do
    pid=$(pid_of "$name")
    log "$name running (pid $pid)"
    any=1
  done
  if [[ -n $(pid_of jobserver) ]]; then
    log "job endpoint: --job_endpoint=$(cat "$JOB_ENDPOINT_FILE" 2>/dev/null) ($(job_server_version))"
  fi
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
    --no-job-server) WITH_JOB_SERVER=0; shift ;;
    *) usage ;;
  esac
done
case $command in
  start) cmd_start ;;
  stop) cmd_stop ;;
  status) cmd_status ;;
  *) usage ;;
esac
