#!/usr/bin/env bash
# Run `cropshard build ...` on a Flink cluster with Beam's FlinkRunner. All arguments are passed
# through to `cropshard build`, after the runner options below (so they can override them):
#
#   launch/flink_cluster.sh start
#   launch/flink.sh --input ./images --output /tmp/ds/train
#
# Env:
#   FLINK_MASTER       Flink REST endpoint                      (localhost:${FLINK_REST_PORT:-8081})
#   ENVIRONMENT_TYPE   where the Python SDK workers run         (LOOPBACK)
#   ENVIRONMENT_CONFIG --environment_config value, if any       (unset)
#   FLINK_PARALLELISM  --parallelism                            (slots-total of the cluster)
#
# LOOPBACK (the default) runs the Python SDK workers inside this submitting process: right for a
# local cluster and tests, since every TaskManager is on this machine. In production run a Beam
# worker pool next to each TaskManager (same Python env, cropshard installed) and submit with
# EXTERNAL:
#   python -m apache_beam.runners.worker.worker_pool_main --service_port=50000 &   # on each TM host
#   ENVIRONMENT_TYPE=EXTERNAL ENVIRONMENT_CONFIG=localhost:50000 FLINK_MASTER=jm-host:8081 \
#     launch/flink.sh --input gs://... --output gs://... --artifacts_dir=gs://.../staging
# Each TaskManager dials the address in ENVIRONMENT_CONFIG, so "localhost:50000" means "the pool
# on my own host". worker_pool_main starts plain Python SDK workers that install nothing: the
# pool's environment must already have this exact apache-beam and cropshard installed
# (--setup_file is not applied there). Inputs, outputs and Beam's temp files must be on storage
# that every worker sees.
#
# Beam starts its Flink job server (a local Java process) from the jar that
# launch/fetch_flink.sh places in ~/.apache_beam/cache/jars/; with the jar there Beam does not
# go to the network. The job server then submits the job to FLINK_MASTER over REST.
set -euo pipefail
SCRIPT_NAME=flink.sh
# shellcheck source=launch/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

FLINK_MASTER=${FLINK_MASTER:-localhost:${FLINK_REST_PORT:-8081}}
ENVIRONMENT_TYPE=${ENVIRONMENT_TYPE:-LOOPBACK}

[[ -s $BEAM_JOB_SERVER_JAR ]] || die "Beam's Flink job server is not at $BEAM_JOB_SERVER_JAR: run launch/fetch_flink.sh (see its message if it cannot fetch $JOB_SERVER_COORDS)"
need java "the Beam Flink job server is a Java process"

# Fail early, with a readable message, if the cluster is not there.
overview=$(curl -fsS --max-time 5 "${FLINK_MASTER%/}/overview" 2>/dev/null || true)
if [[ -z $overview && $FLINK_MASTER != http* ]]; then
  overview=$(curl -fsS --max-time 5 "http://${FLINK_MASTER%/}/overview" 2>/dev/null || true)
fi
[[ -n $overview ]] || die "no Flink REST API at $FLINK_MASTER (start one with launch/flink_cluster.sh start)"

# Beam's FlinkRunner defaults to parallelism 1 on a remote cluster; use every slot unless told.
parallelism=${FLINK_PARALLELISM:-$(sed -n 's/.*"slots-total":\([0-9]*\).*/\1/p' <<<"$overview")}

# `cropshard build` (console script of the venv), else `python -m pipeline build`. The repo goes on
# PYTHONPATH so the checkout's packages are imported even where the editable install's finder
# does not map them (it only knows packages that existed when `pip install -e .` ran).
export PYTHONPATH=$REPO_DIR${PYTHONPATH:+:$PYTHONPATH}
if [[ -x $REPO_DIR/.venv/bin/cropshard ]]; then
  cmd=("$REPO_DIR/.venv/bin/cropshard" build)
elif command -v cropshard >/dev/null 2>&1; then
  cmd=(cropshard build)
else
  cmd=("$PYTHON" -m pipeline build)
fi

runner_args=(
  --runner=FlinkRunner
  "--flink_master=$FLINK_MASTER"
  "--flink_version=$FLINK_VERSION"
  "--flink_job_server_jar=$BEAM_JOB_SERVER_JAR"
  "--environment_type=$ENVIRONMENT_TYPE"
)
if [[ -n ${ENVIRONMENT_CONFIG:-} ]]; then runner_args+=("--environment_config=$ENVIRONMENT_CONFIG"); fi
if [[ -n $parallelism ]]; then runner_args+=("--parallelism=$parallelism"); fi

echo "[$SCRIPT_NAME] ${cmd[*]} ${runner_args[*]} $*" >&2
exec "${cmd[@]}" "${runner_args[@]}" "$@"
