# shellcheck shell=bash
# Shared paths and helpers for launch/*.sh. Sourced, never executed.
# Every path can be overridden from the environment.

LAUNCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_DIR=$(dirname "$LAUNCH_DIR")
# shellcheck source=launch/versions.env
source "$LAUNCH_DIR/versions.env"

# Download cache (survives reboots; safe to delete, fetch_flink.sh refills it).
CROPSHARD_CACHE=${CROPSHARD_CACHE:-$HOME/.cache/cropshard}
# Flink distribution extracted from the PyPI package: lib/*.jar and bin/bash-java-utils.jar.
FLINK_DIST_DIR=${FLINK_DIST_DIR:-$CROPSHARD_CACHE/flink-$FLINK_PATCH_VERSION}
# Beam's Flink job server as a classpath dir: lib/*.jar resolved by Maven from
# launch/flink-job-server/pom.xml, plus a .complete marker naming what was resolved.
# shellcheck disable=SC2034  # used by the scripts that source this file
JOB_SERVER_DIR=${JOB_SERVER_DIR:-$CROPSHARD_CACHE/beam-flink-job-server-$FLINK_VERSION-$BEAM_VERSION}
# shellcheck disable=SC2034
JOB_SERVER_POM=$LAUNCH_DIR/flink-job-server/pom.xml

# Run dir of the local cluster (conf/, log/, pids/, tmp/, artifacts/) and the job server's
# endpoint file that flink_cluster.sh writes there and flink.sh reads.
# shellcheck disable=SC2034
FLINK_RUN_DIR=${CROPSHARD_FLINK_HOME:-/tmp/cropshard-flink}
# shellcheck disable=SC2034
JOB_ENDPOINT_FILE=$FLINK_RUN_DIR/jobserver.endpoint

# Python: the repo venv if present, else python3 on PATH (override with PYTHON=...).
if [[ -z ${PYTHON:-} ]]; then
  if [[ -x $REPO_DIR/.venv/bin/python ]]; then
    PYTHON=$REPO_DIR/.venv/bin/python
  else
    PYTHON=python3
  fi
fi

log() { printf '[%s] %s\n' "${SCRIPT_NAME:-launch}" "$*"; }
die() { printf '[%s] ERROR: %s\n' "${SCRIPT_NAME:-launch}" "$*" >&2; exit 1; }
need() { command -v "$1" >/dev/null 2>&1 || die "'$1' not found on PATH ($2)"; }
