#!/usr/bin/env bash
# The Python environment that submits cropshard builds to the local Flink cluster: apache-beam
# $BEAM_VERSION, the Beam of the assembled job server (versions.env), which is older than the
# SDK the rest of the project runs (setup.py), because no newer Flink runner is served here.
# cropshard itself is installed from this checkout, editable and without its dependencies
# (setup.py asks for the newer Beam); the dependencies come pinned from flink-sdk-constraints.txt.
# Cached: a second run only compares the stamp. The last line printed is the interpreter's path.
#
#   launch/flink_sdk_venv.sh          ->  PYTHON=$(launch/flink_sdk_venv.sh | tail -n1) launch/flink.sh ...
#
# Env: FLINK_SDK_VENV (default <repo>/.venv-flink), BASE_PYTHON (interpreter that creates it; python3).
set -euo pipefail
SCRIPT_NAME=flink_sdk_venv
# shellcheck source=launch/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

VENV=${FLINK_SDK_VENV:-$REPO_DIR/.venv-flink}
BASE=${BASE_PYTHON:-python3}
CONSTRAINTS=$LAUNCH_DIR/flink-sdk-constraints.txt
# What the Flink path runs (see transforms/ and reader/: Beam, TensorFlow, Pillow, NumPy, CRC32C, rasterio, simplejpeg).
REQUIREMENTS=("apache-beam[gcp]==$BEAM_VERSION" tensorflow-cpu pillow numpy google-cloud-storage google-crc32c rasterio simplejpeg)

want="beam=$BEAM_VERSION python=$("$BASE" -c 'import sys; print("%d.%d" % sys.version_info[:2])') constraints=$(sha256sum "$CONSTRAINTS" | cut -c1-16) repo=$REPO_DIR"
stamp=$VENV/.cropshard-flink-sdk
if [[ -f $stamp && $(cat "$stamp") == "$want" && -x $VENV/bin/python ]]; then
  log "apache-beam $BEAM_VERSION venv already in $VENV"
else
  start=$SECONDS
  log "creating $VENV: ${REQUIREMENTS[*]} + cropshard (editable, --no-deps), pinned by $(basename "$CONSTRAINTS")"
  rm -rf "$VENV"
  "$BASE" -m venv "$VENV"
  "$VENV/bin/python" -m pip install --quiet -c "$CONSTRAINTS" "${REQUIREMENTS[@]}"
  "$VENV/bin/python" -m pip install --quiet --no-deps --no-build-isolation -e "$REPO_DIR"
  version=$("$VENV/bin/python" -c 'import apache_beam; print(apache_beam.__version__)')
  [[ $version == "$BEAM_VERSION" ]] || die "$VENV has apache-beam $version, not $BEAM_VERSION"
  printf '%s\n' "$want" >"$stamp"
  log "created in $((SECONDS - start))s"
fi
echo "$VENV/bin/python"
