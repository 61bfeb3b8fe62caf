"""Tests of cropshard.tools."""
