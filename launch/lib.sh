# shellcheck shell=bash
# Shared paths and helpers for launch/*.sh. Sourced, never executed.
# Every path can be overridden from the environment.

LAUNCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_DIR=$(dirname "$LAUNCH_DIR")
# shellcheck source=launch/versions.env
source "$LAUNCH_DIR/versions.env"

# Download cache (survives reboots; safe to delete, fetch_flink.sh refills it).
CROPSHARD_CACHE=${CROPSHARD_CACHE:-$HOME/.cache/cropshard}
# Flink distribution extracted from the PyPI wheel: lib/*.jar and bin/bash-java-utils.jar.
FLINK_DIST_DIR=${FLINK_DIST_DIR:-$CROPSHARD_CACHE/flink-$FLINK_PATCH_VERSION}
# Our copy of the Beam Flink job-server jar, and where Beam itself looks for it.
# shellcheck disable=SC2034  # used by the scripts that source this file
JOB_SERVER_JAR_CACHED=$CROPSHARD_CACHE/jars/$JOB_SERVER_JAR_NAME
BEAM_JAR_CACHE_DIR=${BEAM_JAR_CACHE_DIR:-$HOME/.apache_beam/cache/jars}
# shellcheck disable=SC2034
BEAM_JOB_SERVER_JAR=$BEAM_JAR_CACHE_DIR/$JOB_SERVER_JAR_NAME

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
