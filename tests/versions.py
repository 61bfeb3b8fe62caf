"""One line naming the stack a test tier runs on, for the CI log: `python tests/versions.py TIER`.

Read from the installed distributions' metadata, so nothing heavy is imported.
"""

from __future__ import annotations

import importlib.metadata
import platform
import sys

DISTRIBUTIONS = ("apache-beam", "tensorflow-cpu", "protobuf", "numpy", "cropshard")


def versions_line(tier: str) -> str:
    found = []
    for name in DISTRIBUTIONS:
        try:
            found.append(f"{name} {importlib.metadata.version(name)}")
        except importlib.metadata.PackageNotFoundError:
            found.append(f"{name} (not installed)")
    return f"[versions] {tier}: Python {platform.python_version()} ({sys.executable}), " + ", ".join(found)


if __name__ == "__main__":
    print(versions_line(sys.argv[1] if len(sys.argv) > 1 else "tests"))
