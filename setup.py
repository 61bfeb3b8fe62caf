"""cropshard: image collections -> sharded TFRecord datasets (Apache Beam writer + tf.data reader).

Packages `pipeline`, `transforms` and `reader` ship together so that Dataflow and Flink
workers install everything with `--setup_file ./setup.py`. The reader is also installable
on its own (`pip install ./reader`) for training images without Beam or Pillow.
"""

import os

from setuptools import find_packages, setup
from setuptools.command.build_py import build_py

BEAM_VERSION = "2.62.0"  # Must equal BEAM_VERSION in launch/versions.env: the Flink job server is built for it.


def long_description() -> str:
    if not os.path.exists("README.md"):
        return ""
    with open("README.md", encoding="utf-8") as handle:
        return handle.read()


class BuildPy(build_py):
    """Leave out reader/setup.py (the standalone reader distribution's script): as `reader.setup`
    it would be installed on every worker, and importing it runs setup()."""

    def find_package_modules(self, package: str, package_dir: str) -> list[tuple[str, str, str]]:
        modules = super().find_package_modules(package, package_dir)
        return [(pkg, mod, path) for pkg, mod, path in modules if (pkg, mod) != ("reader", "setup")]


setup(
    name="cropshard",
    version="0.1.0",
    description="Turn image collections into sharded TFRecord datasets; read them with tf.data.",
    long_description=long_description(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=find_packages(include=["pipeline", "pipeline.*", "transforms", "transforms.*", "reader", "reader.*", "tools", "tools.*"]),
    install_requires=[
        f"apache-beam[gcp]=={BEAM_VERSION}",
        # The writer needs TensorFlow's libjpeg-turbo partial decode and tf.train.Example; the
        # CPU build is what Beam workers want. A training image installs `reader` alone instead.
        "tensorflow-cpu>=2.16,<2.21",  # 2.21 needs protobuf 6, which apache-beam 2.62 does not allow
        "pillow>=10",
        "numpy>=1.24",
        "google-cloud-storage>=2",
        # Fast CRC32C for the reader's and `inspect --verify`'s record checks (Beam's own TFRecord
        # sink uses crcmod's C extension, a Beam dependency, rather than its pure-Python fallback).
        "google-crc32c>=1.5",
    ],
    extras_require={
        "tools": ["matplotlib>=3.7", "psutil>=5.9"],
        "dev": ["pytest>=8", "pytest-timeout>=2", "ruff>=0.5", "gcp-storage-emulator>=2024.1", "matplotlib>=3.7", "psutil>=5.9"],
    },
    entry_points={"console_scripts": ["cropshard=pipeline.cli:main"]},
    cmdclass={"build_py": BuildPy},
)
