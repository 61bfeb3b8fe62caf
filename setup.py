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
    classifiers=[f"Programming Language :: Python :: 3.{minor}" for minor in (10, 11, 12, 13)],
    packages=sorted(PACKAGES),
    package_dir=PACKAGES,
    install_requires=[
        # Lower bounds are the versions the test suite runs (constraints.txt pins them exactly);
        # upper bounds stop below the next major. 2.77 is the first Beam tested on Python 3.13.
        # The Flink job server is pinned separately (launch/versions.env): the Flink test runs
        # in its own venv with the Beam version of that job server.
        "apache-beam[gcp]>=2.77.0,<3",
        # The writer needs TensorFlow's libjpeg-turbo partial decode and tf.train.Example; the
        # CPU build is what Beam workers want. A training image installs the reader alone instead.
        "tensorflow-cpu>=2.21.0,<3",
        "pillow>=10",
        "numpy>=1.24",
        "google-cloud-storage>=2",
        # Fast CRC32C for the reader's and `inspect --verify`'s record checks (Beam's own TFRecord
        # sink uses crcmod's C extension, a Beam dependency, rather than its pure-Python fallback).
        "google-crc32c>=1.5",
        # GeoTIFF / COG inputs: windowed reads, bands, sample types, georeferencing (GDAL inside the wheel).
        "rasterio>=1.4",
        # libjpeg-turbo with its warnings raised: the one way to tell a JPEG whose scan data stops
        # early (decoded grey by Pillow and TensorFlow without a word); see transforms/jpeg_scan_end.py.
        "simplejpeg>=1.8",
    ],
    extras_require={
        "tools": ["matplotlib>=3.7", "psutil>=5.9"],
        "dev": [
            "pytest>=8",
            "pytest-timeout>=2",
            "ruff>=0.5",
            "gcp-storage-emulator>=2024.1",
            "matplotlib>=3.7",
            "psutil>=5.9",
            # Other readers of a cropshard dataset, opened by the tests exactly as a user would.
            "tensorflow-datasets>=4.9.10",
            "tfrecord>=1.14.6",
            "mlcroissant>=1.1.1",
        ],
    },
    entry_points={"console_scripts": ["cropshard=cropshard.pipeline.cli:main"]},
)
