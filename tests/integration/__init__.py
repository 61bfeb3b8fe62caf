"""Tests that need more than one process or a service: Flink, Dataflow dry runs, the GCS emulator, fresh venvs."""
