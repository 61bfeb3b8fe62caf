"""Tests of cropshard.pipeline."""
