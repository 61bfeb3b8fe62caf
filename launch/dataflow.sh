#!/usr/bin/env bash
# Submit `cropshard build` to Google Cloud Dataflow (Runner v2), sized for ~500k images.
#
#   PROJECT=my-project BUCKET=my-bucket launch/dataflow.sh \
#       --input 'gs://my-bucket/images/**' --output gs://my-bucket/datasets/photos-224 \
#       --crop center --size 224x224 --encoding jpeg --split train=0.9,validation=0.1
#
# Arguments go to `cropshard build` after the defaults below, so a later flag wins
# (--max_num_workers=100, --machine_type=..., any Beam or cropshard option).
#
# Env:
#   PROJECT, BUCKET          required; BUCKET (no gs://) holds Beam's temp and staging files
#   REGION                   default us-central1; keep it next to the data buckets
#   MACHINE_TYPE             default n2-standard-4 (16 GB: one SDK process per vCPU, each with TensorFlow loaded)
#   MAX_WORKERS              default 32 (autoscaling ceiling)
#   JOB_NAME                 default cropshard-<UTC time>
#   SDK_CONTAINER_IMAGE      optional: an image built from launch/Dockerfile. Without it workers start from
#                            Beam's stock image and pip-install TensorFlow, Pillow and the rest from PyPI
#                            (minutes per worker, and workers need internet access).
#   PYTHON                   default <repo>/.venv/bin/python; its minor version picks the worker image (3.11)
#   DRY_RUN=1                build the job graph locally and stop: no GCP access, nothing submitted
#   PRINT_ONLY=1             print the command, one argument per line, instead of running it
#
# Before submitting, the launcher (on this machine, with your application-default credentials:
# `gcloud auth application-default login`) refuses a non-empty --output unless --overwrite and
# checks that the inputs match something (one list request; shards are sized from the bytes the
# workers write, see launch/README.md, Flink step 5). It then waits for the job and prints the dataset summary; --no_wait_until_finish
# returns after submission instead (cropshard.json, written last, appears in --output when the job succeeds).
#
# Sizing, 500k photos: a 224x224 crop is ~150 KB as raw pixels (~75 GB in total, ~590 shards at
# the default --target_shard_mb=128), ~15 KB as --encoding jpeg (~7.5 GB, ~60 shards). Decoding is
# the cost: JPEG sources are draft-decoded when --resize shrinks them. Not measured on Dataflow.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PYTHON=${PYTHON:-$REPO/.venv/bin/python}
# Usage errors exit 2, as cropshard's own do.
[[ -n ${PROJECT:-} ]] || { echo "dataflow.sh: error: set PROJECT to your GCP project id" >&2; exit 2; }
[[ -n ${BUCKET:-} ]] || { echo "dataflow.sh: error: set BUCKET to a GCS bucket name for Beam temp/staging files (without gs://)" >&2; exit 2; }
# GCS bucket names: 3-63 of a-z 0-9 - _ . , starting and ending with a letter or digit. Beam took
# BUCKET=b as given, and even a dry run then looked for a default staging bucket over the network.
[[ $BUCKET =~ ^[a-z0-9][a-z0-9._-]{1,61}[a-z0-9]$ ]] || { echo "dataflow.sh: error: BUCKET=$BUCKET is not a GCS bucket name (3-63 characters: a-z 0-9 - _ . starting and ending with a letter or digit; no gs://)" >&2; exit 2; }
REGION=${REGION:-us-central1}
MACHINE_TYPE=${MACHINE_TYPE:-n2-standard-4}
MAX_WORKERS=${MAX_WORKERS:-32}
JOB_NAME=${JOB_NAME:-cropshard-$(date -u +%Y%m%d-%H%M%S)}
SDK_CONTAINER_IMAGE=${SDK_CONTAINER_IMAGE:-}

args=(
  build
  --runner=DataflowRunner
  --project="$PROJECT"
  --region="$REGION"
  --job_name="$JOB_NAME"
  --temp_location="gs://$BUCKET/cropshard/tmp"
  --staging_location="gs://$BUCKET/cropshard/staging"
  --machine_type="$MACHINE_TYPE"
  --max_num_workers="$MAX_WORKERS"
  --autoscaling_algorithm=THROUGHPUT_BASED
  --experiments=use_runner_v2
  # Workers pip-install this repo's sdist (pipeline, transforms, reader); nothing runs from __main__
  # (cropshard build adds --no_save_main_session for Dataflow unless told otherwise).
  --setup_file="$REPO/setup.py"
)
if [ -n "$SDK_CONTAINER_IMAGE" ]; then
  # Dependencies come preinstalled; the sdist above is still installed on top, so worker code
  # always matches the launcher's even if the image is older than the checkout.
  args+=(--sdk_container_image="$SDK_CONTAINER_IMAGE")
fi
if [ "${DRY_RUN:-0}" = 1 ]; then
  args+=(--dry_run=True --no_auth)
fi
args+=("$@")

if [ "${PRINT_ONLY:-0}" = 1 ]; then
  printf '%s\n' "${args[@]}"
  exit 0
fi
exec "$PYTHON" -m cropshard.pipeline "${args[@]}"
