"""A local GCS API emulator (the `gcp-storage-emulator` package) for tests, and the environment
that points Beam's GCS filesystem at it.

The emulator runs as a subprocess on a free loopback port (port 0, reported back on stdout), not
as a thread of the test process: its HTTP server is single-threaded and would otherwise compete
for the GIL with the in-memory DirectRunner it serves.

`emulator_environment()` is what makes Beam talk to it, in this process and in every subprocess
(DirectRunner multi_processing workers inherit os.environ):

- STORAGE_EMULATOR_HOST: google-cloud-storage's Client reads it each time one is created, and
  Beam (2.62 and 2.77 alike) creates a new client (GcsIO) per filesystem call, so setting it is enough.
- Fake application-default credentials with a static, unexpiring token. Without credentials,
  Beam's auth lookup retries google.auth.default() with backoff (~25 s per process) and may
  probe the GCE metadata server (network). With these it finds them at once; the token is never
  refreshed (so Google's token endpoint is never contacted) and the emulator ignores it.
- Beam caches credentials per process (auth._Credentials); the cache is reset so a lookup made
  before the fixture (real ADC on a developer machine) is not reused against the emulator.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

HOST = "127.0.0.1"
PROJECT = "cropshard-test"


class GcsEmulator:
    """A running emulator: `endpoint` is what STORAGE_EMULATOR_HOST must hold."""

    def __init__(self, process: subprocess.Popen, port: int) -> None:
        self.process = process
        self.port = port
        self.endpoint = f"http://{HOST}:{port}"

    @classmethod
    @contextlib.contextmanager
    def running(cls, buckets: tuple[str, ...] = ("bucket",), timeout: float = 30.0) -> Iterator[GcsEmulator]:
        # -u: the port line must not sit in a pipe buffer. stderr goes to a file (never a pipe
        # nobody drains) so a failure to start, e.g. the package missing, is reported verbatim.
        with tempfile.TemporaryFile(mode="w+") as errors, subprocess.Popen(
            [sys.executable, "-u", __file__, *buckets], stdout=subprocess.PIPE, stderr=errors, text=True
        ) as process:
            try:
                line = process.stdout.readline().strip()
                if not line.isdigit():
                    process.wait(timeout=10)
                    errors.seek(0)
                    raise RuntimeError(f"gcp-storage-emulator did not start (exit {process.poll()}): {line}{errors.read()[-2000:]}")
                emulator = cls(process, int(line))
                emulator.wait_ready(timeout)
                yield emulator
            finally:
                process.terminate()
                try:
                    process.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()

    def wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        direct = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback: never via a proxy
        while True:
            try:
                with direct.open(self.endpoint + "/", timeout=2):  # the emulator's health check
                    return
            except OSError:
                if time.monotonic() > deadline or self.process.poll() is not None:
                    raise
                time.sleep(0.05)

    def client(self):  # noqa: ANN201 - google.cloud.storage.Client, imported lazily
        """A google-cloud-storage client on the emulator, independent of Beam (for setup and checks)."""
        from google.auth.credentials import AnonymousCredentials
        from google.cloud import storage

        return storage.Client(project=PROJECT, credentials=AnonymousCredentials(), client_options={"api_endpoint": self.endpoint})

    def upload_tree(self, local_root: Path, url: str) -> dict[str, str]:
        """Every file below `local_root` to `url` (gs://bucket/prefix), same relative paths;
        returns {local path: gs:// url}."""
        bucket_name, prefix = split_url(url)
        bucket = self.client().bucket(bucket_name)
        uploaded = {}
        for path in sorted(p for p in local_root.rglob("*") if p.is_file()):
            name = f"{prefix.rstrip('/')}/{path.relative_to(local_root).as_posix()}".lstrip("/")
            bucket.blob(name).upload_from_filename(str(path))
            uploaded[str(path)] = f"gs://{bucket_name}/{name}"
        return uploaded

    def list(self, url: str) -> list[str]:
        """gs:// urls of every object below `url` (a prefix)."""
        bucket_name, prefix = split_url(url)
        return sorted(f"gs://{bucket_name}/{blob.name}" for blob in self.client().list_blobs(bucket_name, prefix=prefix))


def split_url(url: str) -> tuple[str, str]:
    if not url.startswith("gs://"):
        raise ValueError(f"not a gs:// url: {url}")
    bucket, _, prefix = url[len("gs://") :].partition("/")
    return bucket, prefix


def emulator_environment(monkeypatch: pytest.MonkeyPatch, emulator: GcsEmulator, scratch: Path) -> None:
    """Point Beam's GCS filesystem (here and in worker subprocesses) at `emulator`; see the module doc."""
    credentials = scratch / "fake_adc.json"
    credentials.write_text(
        json.dumps(
            {
                "type": "authorized_user",
                "client_id": "cropshard-test",
                "client_secret": "unused",
                "refresh_token": "unused",
                "token": "emulator-ignores-this",
                "expiry": "2099-01-01T00:00:00Z",
            }
        )
    )
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", emulator.endpoint)
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(credentials))
    monkeypatch.setenv("GOOGLE_CLOUD_PROJECT", PROJECT)
    monkeypatch.setenv("NO_GCE_CHECK", "true")  # belt and braces: never probe the metadata server
    for name in ("NO_PROXY", "no_proxy"):  # a CI proxy must not swallow loopback requests
        monkeypatch.setenv(name, ",".join(filter(None, [os.environ.get(name), HOST, "localhost"])))
    from apache_beam.internal.gcp import auth

    monkeypatch.setattr(auth._Credentials, "_credentials_init", False)
    monkeypatch.setattr(auth._Credentials, "_credentials", None)


def _serve(buckets: list[str]) -> None:
    """Subprocess entry point: in-memory emulator on a free port; prints the port, serves until killed."""
    import logging

    from gcp_storage_emulator.server import create_server

    logging.disable(logging.CRITICAL)  # one log line per request otherwise
    server = create_server(HOST, 0, in_memory=True, default_bucket=buckets[0] if buckets else None)
    server.start()
    if len(buckets) > 1:
        from gcp_storage_emulator.handlers.buckets import create_bucket

        for name in buckets[1:]:
            create_bucket(name, server._storage)
    print(server._api._httpd.server_address[1], flush=True)
    try:
        while True:
            time.sleep(3600)
    finally:
        server.stop()


if __name__ == "__main__":
    # Run as a script by GcsEmulator.running(); keep sys.path free of the test tree.
    sys.path = [p for p in sys.path if os.path.abspath(p) != os.path.dirname(os.path.abspath(__file__))]
    _serve(sys.argv[1:])
