"""Standalone distribution of the cropshard reader: `pip install ./reader[tf]`.

The package is this directory itself (`package_dir={"reader": "."}`), so the reader ships from
the same files the full cropshard distribution uses; there is no copy to drift.

TensorFlow is an *extra*, not a requirement: training images usually bring their own build
(tensorflow, tensorflow-cpu, a CUDA/ROCm or TPU build, tf-nightly), and a hard dependency on one
of them would make pip install a second, conflicting TensorFlow. Pick one:

    pip install "cropshard-reader[tf]"       # tensorflow
    pip install "cropshard-reader[tf-cpu]"   # tensorflow-cpu
    pip install cropshard-reader             # TensorFlow already in the image

No Apache Beam, no Pillow: the reader needs TensorFlow and NumPy only.
"""

import os
import re

from setuptools import setup
from setuptools.command.build_py import build_py

HERE = os.path.dirname(os.path.abspath(__file__))


class BuildPyWithoutSetup(build_py):
    """Do not ship this file as `reader.setup`: the package directory is also the project root."""

    def find_package_modules(self, package, package_dir):
        modules = super().find_package_modules(package, package_dir)
        return [(pkg, mod, path) for pkg, mod, path in modules if not (pkg == "reader" and mod == "setup")]


def version() -> str:
    with open(os.path.join(HERE, "__init__.py"), encoding="utf-8") as handle:
        return re.search(r'^__version__ = "([^"]+)"', handle.read(), re.M).group(1)


def long_description() -> str:
    path = os.path.join(HERE, "README.md")
    if not os.path.exists(path):
        return __doc__
    with open(path, encoding="utf-8") as handle:
        return handle.read()


setup(
    name="cropshard-reader",
    version=version(),
    description="Read cropshard TFRecord image datasets with tf.data (TensorFlow + NumPy only).",
    long_description=long_description(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=["reader"],
    package_dir={"reader": "."},
    install_requires=["numpy>=1.24"],
    extras_require={
        "tf": ["tensorflow>=2.16"],
        "tf-cpu": ["tensorflow-cpu>=2.16"],
    },
    cmdclass={"build_py": BuildPyWithoutSetup},
)
