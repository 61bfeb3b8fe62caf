#!/usr/bin/env bash
# The command of Beam's PROCESS environment for cropshard on Flink: each TaskManager runs it once per
# SDK worker (one per slot, flink.sh passes --sdk_worker_parallelism) with Beam's boot arguments
# (--id, --provision_endpoint, ...). It starts the Python SDK worker in CROPSHARD_WORKER_PYTHON
# (an interpreter with cropshard and apache-beam==$BEAM_VERSION installed; flink.sh sets it to its
# own $PYTHON), see pipeline/worker_boot.py.
set -euo pipefail
exec "${CROPSHARD_WORKER_PYTHON:-python3}" -m cropshard.pipeline.worker_boot "$@"
