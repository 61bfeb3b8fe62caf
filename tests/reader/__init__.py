"""Tests of cropshard.reader."""
