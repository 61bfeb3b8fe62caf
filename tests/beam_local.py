"""Beam's TestPipeline on the runner local builds use."""

from __future__ import annotations

from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.testing.test_pipeline import TestPipeline
from cropshard.pipeline.build import local_runner

TestPipeline.__test__ = False  # a Beam class, not a pytest test class


def local_test_pipeline() -> TestPipeline:
    """A TestPipeline on Beam's FnApiRunner, as `cropshard build` runs locally (pipeline.build.local_runner).
    Its default DirectRunner first tries PrismRunner: where Prism cannot be downloaded that try costs a
    pipeline translation and leaves a /tmp/beam-temp* folder behind for every pipeline."""
    options = PipelineOptions()
    return TestPipeline(runner=local_runner(options), options=options)
