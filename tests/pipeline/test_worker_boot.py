"""pipeline/worker_boot.py, the PROCESS-environment boot: arguments and the worker's environment."""

from __future__ import annotations

from apache_beam.portability.api import endpoints_pb2
from cropshard.pipeline.worker_boot import parse_args, worker_environment
from google.protobuf import text_format


def test_boot_arguments_as_a_taskmanager_passes_them() -> None:
    args = parse_args(["--id=1-1", "--provision_endpoint=localhost:4321", "--logging_endpoint=localhost:1", "--unknown_flag=x"])
    assert (args.id, args.provision_endpoint, args.logging_endpoint, args.control_endpoint) == ("1-1", "localhost:4321", "localhost:1", "")


def test_worker_environment_is_what_sdk_worker_main_reads() -> None:
    env = worker_environment("1-2", '{"options": {"job_name": "j"}}', "localhost:5", "localhost:6", ["beam:protocol:a", "b"], "/tmp/w")
    assert env["WORKER_ID"] == "1-2" and env["PIPELINE_OPTIONS"] == '{"options": {"job_name": "j"}}'
    assert env["RUNNER_CAPABILITIES"] == "beam:protocol:a b" and env["SEMI_PERSISTENT_DIRECTORY"] == "/tmp/w"
    for key, url in (("LOGGING_API_SERVICE_DESCRIPTOR", "localhost:5"), ("CONTROL_API_SERVICE_DESCRIPTOR", "localhost:6")):
        descriptor = text_format.Parse(env[key], endpoints_pb2.ApiServiceDescriptor())
        assert descriptor.url == url
