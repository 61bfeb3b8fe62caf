"""Tests of cropshard.transforms."""
