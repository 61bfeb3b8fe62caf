"""The cropshard version: the one place it is written (both distributions and the metadata read it)."""

__version__ = "0.3.0"
