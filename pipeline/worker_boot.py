"""Start a Python SDK worker for Beam's PROCESS environment, as Beam's container `boot` does.

A Flink TaskManager with `--environment_type=PROCESS` runs the environment's command as
`COMMAND --id=... --provision_endpoint=... [--logging_endpoint ... --control_endpoint ...
--artifact_endpoint ...]`. Beam's `boot` (a Go binary shipped only in the SDK container images)
asks the provision service for the pipeline options and endpoints, installs staged artifacts and
then runs `apache_beam.runners.worker.sdk_worker_main`. This module does the same minus the
installs: the worker's Python environment must already have cropshard and its dependencies (the
repo venv locally; the same venv on every TaskManager host in production). launch/sdk_worker.sh
is the command; `python -m cropshard.pipeline.worker_boot --help` lists the arguments.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from collections.abc import Mapping, Sequence


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="worker_boot", description=__doc__.splitlines()[0])
    parser.add_argument("--id", required=True, help="worker id the runner assigned")
    parser.add_argument("--provision_endpoint", required=True, help="host:port of the runner's provision service")
    parser.add_argument("--logging_endpoint", default="", help="overrides the provisioned logging endpoint")
    parser.add_argument("--control_endpoint", default="", help="overrides the provisioned control endpoint")
    parser.add_argument("--artifact_endpoint", default="", help="accepted for the boot contract; artifacts are not installed")
    parser.add_argument("--semi_persistent_directory", default="", help="worker scratch dir (default: a new temp dir)")
    return parser.parse_known_args(list(argv))[0]


def worker_environment(
    worker_id: str, options_json: str, logging_url: str, control_url: str, capabilities: Sequence[str], scratch: str
) -> dict[str, str]:
    """The variables sdk_worker_main reads (the same names Beam's boot sets)."""
    return {
        "WORKER_ID": worker_id,
        "PIPELINE_OPTIONS": options_json,
        "LOGGING_API_SERVICE_DESCRIPTOR": f'url: "{logging_url}"',
        "CONTROL_API_SERVICE_DESCRIPTOR": f'url: "{control_url}"',
        "RUNNER_CAPABILITIES": " ".join(capabilities),
        "SEMI_PERSISTENT_DIRECTORY": scratch,
    }


def provisioned_environment(args: argparse.Namespace) -> dict[str, str]:
    """Ask the runner's provision service for this worker's options and endpoints."""
    import grpc
    from apache_beam.portability.api import beam_provision_api_pb2, beam_provision_api_pb2_grpc
    from google.protobuf import json_format

    with grpc.insecure_channel(args.provision_endpoint) as channel:
        stub = beam_provision_api_pb2_grpc.ProvisionServiceStub(channel)
        request = beam_provision_api_pb2.GetProvisionInfoRequest()
        info = stub.GetProvisionInfo(request, metadata=[("worker_id", args.id)], timeout=60).info
    scratch = args.semi_persistent_directory or tempfile.mkdtemp(prefix=f"beam-worker-{args.id}-")
    return worker_environment(
        args.id,
        json_format.MessageToJson(info.pipeline_options),
        args.logging_endpoint or info.logging_endpoint.url,
        args.control_endpoint or info.control_endpoint.url,
        list(info.runner_capabilities),
        scratch,
    )


def exec_worker(environment: Mapping[str, str]) -> None:
    """Replace this process by the SDK worker (same pid, which the TaskManager watches)."""
    os.execve(sys.executable, [sys.executable, "-m", "apache_beam.runners.worker.sdk_worker_main"], {**os.environ, **environment})


def main(argv: Sequence[str]) -> None:
    exec_worker(provisioned_environment(parse_args(argv)))


if __name__ == "__main__":
    main(sys.argv[1:])
