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
#   ENVIRONMENT_TYPE   where the Python SDK workers run             (LOOPBACK)
#   ENVIRONMENT_CONFIG --environment_config value, if any           (unset)
#   FLINK_PARALLELISM  --parallelism                                (slots-total of the cluster)
#
# The job server is Java and version-locked to the Python SDK: both must be Beam $BEAM_VERSION
# (versions.env); this script refuses another SDK version instead of failing mid-job.
#
# LOOPBACK (the default) runs the Python SDK workers as threads of this submitting process: right
# for a local cluster and tests, since every TaskManager is on this machine. At the end of a LOOPBACK
# run Beam logs "Failed to read inputs in the data plane ... Multiplexer hanging up" tracebacks
# when Flink closes the workers' channels: harmless, the exit status and the dataset are what count.
#
# EXTERNAL: a Beam worker pool next to each TaskManager (same Python env, cropshard importable):
#   PATH=/path/to/venv/bin:$PATH PYTHONPATH=/path/to/cropshard \
#     python -m apache_beam.runners.worker.worker_pool_main --service_port=50000 &   # on each TM host
#   ENVIRONMENT_TYPE=EXTERNAL ENVIRONMENT_CONFIG=localhost:50000 launch/flink.sh --input ... --output ...
# - the pool starts each worker as a bare `python` from PATH (not its own interpreter), hence PATH;
# - ONE pool per TaskManager: the pool keys workers by worker id, and every TaskManager numbers its
#   workers from 1-1, so two TaskManagers sharing a pool stop each other's workers (the job fails
#   with "CANCELLED: client cancelled"). On this 2-TM local cluster use LOOPBACK.
# - inputs, outputs and Beam's temp files must be on storage that every worker sees.
set -euo pipefail
SCRIPT_NAME=flink.sh
# shellcheck source=launch/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

FLINK_MASTER=${FLINK_MASTER:-localhost:${FLINK_REST_PORT:-8081}}
ENVIRONMENT_TYPE=${ENVIRONMENT_TYPE:-LOOPBACK}

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
if [[ -n ${ENVIRONMENT_CONFIG:-} ]]; then runner_args+=("--environment_config=$ENVIRONMENT_CONFIG"); fi
if [[ -n $parallelism ]]; then runner_args+=("--parallelism=$parallelism"); fi

# Beam 2.62's per-view option parsers allow argparse prefix abbreviations, so cropshard's
# `--output DIR` also sets PortableOptions.output_executable_path=DIR; the job server then writes a
# pipeline jar to DIR instead of running the job ("java.io.FileNotFoundException: DIR (Is a
# directory)"). An explicit empty value AFTER the user's --output resets it (newer Beam releases
# parse with allow_abbrev=False, where this is a no-op).
trailing_args=(--output_executable_path=)

echo "[$SCRIPT_NAME] ${cmd[*]} ${runner_args[*]} $* ${trailing_args[*]}" >&2
exec "${cmd[@]}" "${runner_args[@]}" "$@" "${trailing_args[@]}"
