#!/usr/bin/env bash
# Run `cropshard build ...` on the local Flink cluster through Beam's job server (both started by
# launch/flink_cluster.sh start). All arguments are passed through to `cropshard build`, after the
# runner options below (so they can override them):
#
#   launch/flink_cluster.sh start
#   launch/flink.sh --input './images/**' --output /tmp/ds --size 224x224
#
# Env:
#   PYTHON             interpreter with apache-beam==$BEAM_VERSION and cropshard's deps
#                      (launch/flink_sdk_venv.sh makes one; default: the repo .venv, else python3)
#   BEAM_JOB_ENDPOINT  job server gRPC endpoint (written by flink_cluster.sh: localhost:8099)
#   FLINK_MASTER       Flink REST endpoint, for the slot count     (localhost:${FLINK_REST_PORT:-8081})
#   ENVIRONMENT_TYPE   where the Python SDK workers run             (PROCESS)
#   ENVIRONMENT_CONFIG --environment_config value  (PROCESS: launch/sdk_worker.sh with $PYTHON)
#   FLINK_PARALLELISM  --parallelism                                (slots-total of the cluster)
#   SDK_WORKERS_PER_TM --sdk_worker_parallelism                     (slots per TaskManager)
#   ENVIRONMENT_CACHE_MILLIS  --environment_cache_millis, how long an idle SDK worker is kept (30000)
#
# The job server is Java and version-locked to the Python SDK: both must be Beam $BEAM_VERSION
# (versions.env); this script refuses another SDK version instead of failing mid-job.
#
# PROCESS (the default): every TaskManager starts its own Python SDK worker processes, one per slot,
# with launch/sdk_worker.sh (Beam's boot contract, pipeline/worker_boot.py) in $PYTHON's env. The
# TaskManagers must see this checkout and venv at the same paths: true on one machine; on a real
# cluster install both at the same path on every TaskManager host (see launch/README.md).
#
# LOOPBACK (ENVIRONMENT_TYPE=LOOPBACK): the SDK workers are threads of this submitting process (one
# GIL for all slots, ~4x slower than the DirectRunner), and at the end Beam logs "Failed to read
# inputs in the data plane ... Multiplexer hanging up" tracebacks when Flink closes the channels.
#
# EXTERNAL: a Beam worker pool next to each TaskManager (same Python env, cropshard importable):
#   PATH=/path/to/venv/bin:$PATH python -m apache_beam.runners.worker.worker_pool_main --service_port=50000 &   # on each TM host
#   ENVIRONMENT_TYPE=EXTERNAL ENVIRONMENT_CONFIG=localhost:50000 launch/flink.sh --input ... --output ...
# - the pool starts each worker as a bare `python` from PATH (not its own interpreter), hence PATH;
# - ONE pool per TaskManager: the pool keys workers by worker id, and every TaskManager numbers its
#   workers from 1-1, so two TaskManagers sharing a pool stop each other's workers (the job fails
#   with "CANCELLED: client cancelled"); so not on this 2-TM single-host cluster.
# - inputs, outputs and Beam's temp files must be on storage that every worker sees.
set -euo pipefail
SCRIPT_NAME=flink.sh
# shellcheck source=launch/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

FLINK_MASTER=${FLINK_MASTER:-localhost:${FLINK_REST_PORT:-8081}}
ENVIRONMENT_TYPE=${ENVIRONMENT_TYPE:-PROCESS}

# Every argument understood or refused before the cluster is looked for, as `cropshard build`
# does (a typo was reported only once a cluster was up). An interpreter without cropshard is
# left to the checks below, which name it.
"$PYTHON" - "$@" <<'PY' || exit $?
import sys
try:
    from cropshard.pipeline.arguments import UsageError, check_build_arguments
except ImportError:
    sys.exit(0)
try:
    check_build_arguments(sys.argv[1:])
except UsageError as err:
    print(f"cropshard build: error: {err}", file=sys.stderr)
    sys.exit(2)
PY

# The job server flink_cluster.sh started (or one given explicitly).
JOB_ENDPOINT=${BEAM_JOB_ENDPOINT:-$(cat "$JOB_ENDPOINT_FILE" 2>/dev/null || true)}
[[ -n $JOB_ENDPOINT ]] || die "no Beam job server recorded in $JOB_ENDPOINT_FILE: run launch/flink_cluster.sh start (or set BEAM_JOB_ENDPOINT)"
job_host=${JOB_ENDPOINT%:*} job_port=${JOB_ENDPOINT##*:}
(exec 3<>"/dev/tcp/$job_host/$job_port") 2>/dev/null \
  || die "nothing listens on the job endpoint $JOB_ENDPOINT: launch/flink_cluster.sh status / start"

# Fail early, with a readable message, if the cluster is not there.
overview=$(curl -fsS --max-time 5 "${FLINK_MASTER%/}/overview" 2>/dev/null || true)
if [[ -z $overview && $FLINK_MASTER != http* ]]; then
  overview=$(curl -fsS --max-time 5 "http://${FLINK_MASTER%/}/overview" 2>/dev/null || true)
fi
[[ -n $overview ]] || die "no Flink REST API at $FLINK_MASTER (start one with launch/flink_cluster.sh start)"

# The Python SDK must be the job server's Beam version.
sdk_version=$("$PYTHON" -c 'import apache_beam; print(apache_beam.__version__)' 2>/dev/null) \
  || die "$PYTHON cannot import apache_beam (create the repo venv with 'make venv', or set PYTHON=/path/to/venv/bin/python)"
[[ $sdk_version == "$BEAM_VERSION" ]] \
  || die "$PYTHON has apache-beam $sdk_version but the Flink job server is Beam $BEAM_VERSION: use PYTHON=\$(launch/flink_sdk_venv.sh | tail -n1), a venv with apache-beam==$BEAM_VERSION ('make flink-venv' makes it)"

# Every slot unless told otherwise (the job server also defaults to the cluster's parallelism.default).
parallelism=${FLINK_PARALLELISM:-$(sed -n 's/.*"slots-total":\([0-9]*\).*/\1/p' <<<"$overview")}

# $PYTHON must have cropshard installed (the repo venv has it as an editable install).
cmd=("$PYTHON" -m cropshard.pipeline build)

runner_args=(
  --runner=PortableRunner
  "--job_endpoint=$JOB_ENDPOINT"
  "--environment_type=$ENVIRONMENT_TYPE"
)
if [[ -z ${ENVIRONMENT_CONFIG:-} && $ENVIRONMENT_TYPE == PROCESS ]]; then
  # Absolute (the TaskManagers run it from their own cwd), symlinks kept: a venv's python is one.
  python_path=$(command -v "$PYTHON")
  python_abs=$(cd "$(dirname "$python_path")" && pwd)/$(basename "$python_path")
  ENVIRONMENT_CONFIG=$(printf '{"command": "%s", "env": {"CROPSHARD_WORKER_PYTHON": "%s"}}' "$LAUNCH_DIR/sdk_worker.sh" "$python_abs")
fi
if [[ -n ${ENVIRONMENT_CONFIG:-} ]]; then runner_args+=("--environment_config=$ENVIRONMENT_CONFIG"); fi
if [[ -n $parallelism ]]; then runner_args+=("--parallelism=$parallelism"); fi
# One SDK worker process per slot: Beam's default is one per TaskManager and job.
tms=$(sed -n 's/.*"taskmanagers":\([0-9]*\).*/\1/p' <<<"$overview")
workers=${SDK_WORKERS_PER_TM:-}
slots=$(sed -n 's/.*"slots-total":\([0-9]*\).*/\1/p' <<<"$overview")
if [[ -z $workers && -n $slots && -n $tms && $tms -gt 0 ]]; then workers=$(((slots + tms - 1) / tms)); fi
if [[ -n $workers && $ENVIRONMENT_TYPE != LOOPBACK ]]; then runner_args+=("--sdk_worker_parallelism=$workers"); fi
# Keep each SDK worker for the whole job instead of one per fused stage (~10 s to start each here;
# a 300-image build started 8 per TaskManager and took 207 s, 109 s with 1). Beam honours this only
# when its classes come from the TaskManagers' own classpath (flink_cluster.sh arranges that);
# 30 s is how long an idle worker outlives the job.
runner_args+=("--environment_cache_millis=${ENVIRONMENT_CACHE_MILLIS:-30000}")

# Beam's per-view option parsers (since 2.62) allow argparse prefix abbreviations, so cropshard's
# `--output DIR` also sets PortableOptions.output_executable_path=DIR; the job server then writes a
# pipeline jar to DIR instead of running the job ("java.io.FileNotFoundException: DIR (Is a
# directory)"). An explicit empty value AFTER the user's --output resets it (newer Beam releases
# parse with allow_abbrev=False, where this is a no-op).
trailing_args=(--output_executable_path=)

echo "[$SCRIPT_NAME] ${cmd[*]} ${runner_args[*]} $* ${trailing_args[*]}" >&2
exec "${cmd[@]}" "${runner_args[@]}" "$@" "${trailing_args[@]}"
