"""cropshard: image collections -> sharded TFRecord datasets (Apache Beam writer + tf.data reader).

Every installed module lives under the one top-level name `cropshard`; the repository keeps the
product's folders at its top level and maps each onto a subpackage:

    pipeline/   -> cropshard.pipeline     options, CLI, graph assembly
    transforms/ -> cropshard.transforms   DoFns / PTransforms over pure functions
    reader/     -> cropshard.reader       training side (TensorFlow + NumPy only)
    tools/      -> cropshard.tools        inspect, compare

`cropshard` itself is a namespace package (no __init__.py), so the standalone reader
distribution (`pip install ./reader`, see reader/pyproject.toml) installs `cropshard.reader`
alone and nothing else. Dataflow and Flink workers install everything from this file with
`--setup_file ./setup.py`. The version is written once, in reader/version.py.
"""

import os
import re

from setuptools import setup

HERE = os.path.dirname(os.path.abspath(__file__))
FOLDERS = ("pipeline", "transforms", "reader", "tools")
BEAM_VERSION = "2.62.0"  # Must equal BEAM_VERSION in launch/versions.env: the Flink job server is built for it.


def read(path: str) -> str:
    full = os.path.join(HERE, path)
    if not os.path.exists(full):
        return ""
    with open(full, encoding="utf-8") as handle:
        return handle.read()


def version() -> str:
    return re.search(r'^__version__ = "([^"]+)"', read("reader/version.py"), re.M).group(1)


def subpackages() -> dict[str, str]:
    """{'cropshard.pipeline': 'pipeline', 'cropshard.tools.compare': 'tools/compare', ...}"""
    found = {}
    for folder in FOLDERS:
        for root, dirs, files in os.walk(os.path.join(HERE, folder)):
            # Build output of the standalone reader (`pip install ./reader` builds in reader/build/) is no package.
            dirs[:] = sorted(d for d in dirs if d.isidentifier() and d not in ("build", "dist", "__pycache__"))
            if "__init__.py" in files:
                relative = os.path.relpath(root, HERE)
                found["cropshard." + relative.replace(os.sep, ".")] = relative
    return found


PACKAGES = subpackages()

setup(
    name="cropshard",
    version=version(),
    description="Turn image collections into sharded TFRecord datasets; read them with tf.data.",
    long_description=read("README.md"),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=sorted(PACKAGES),
    package_dir=PACKAGES,
    install_requires=[
        f"apache-beam[gcp]=={BEAM_VERSION}",
        # The writer needs TensorFlow's libjpeg-turbo partial decode and tf.train.Example; the
        # CPU build is what Beam workers want. A training image installs the reader alone instead.
        "tensorflow-cpu>=2.16,<2.21",  # 2.21 needs protobuf 6, which apache-beam 2.62 does not allow
        "pillow>=10",
        "numpy>=1.24",
        "google-cloud-storage>=2",
        # Fast CRC32C for the reader's and `inspect --verify`'s record checks (Beam's own TFRecord
        # sink uses crcmod's C extension, a Beam dependency, rather than its pure-Python fallback).
        "google-crc32c>=1.5",
        # GeoTIFF / COG inputs: windowed reads, bands, sample types, georeferencing (GDAL inside the wheel).
        "rasterio>=1.4",
    ],
    extras_require={
        "tools": ["matplotlib>=3.7", "psutil>=5.9"],
        "dev": ["pytest>=8", "pytest-timeout>=2", "ruff>=0.5", "gcp-storage-emulator>=2024.1", "matplotlib>=3.7", "psutil>=5.9"],
    },
    entry_points={"console_scripts": ["cropshard=cropshard.pipeline.cli:main"]},
)
