"""`cropshard` console script: build | inspect | compare | demo-images.

`cropshard build ...` and `python -m cropshard.pipeline build ...` are the same command; every Beam
option (--runner, --direct_num_workers, Dataflow and Flink options) passes through.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import warnings
from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from cropshard.reader.metadata import DatasetInfo

# google-cloud client libraries warn about future Python/grpcio support on import; that is
# noise in a command-line summary (the pinned versions are tested together).
warnings.filterwarnings("ignore", category=FutureWarning, module=r"google\.")

COMMANDS = ("build", "inspect", "compare", "demo-images")


def build_help() -> str:
    """--help for build: cropshard's options first, then every Beam option group."""
    # Imported here, not at the top: `cropshard inspect` and `compare` must not pay for importing Beam.
    from apache_beam.options.pipeline_options import PipelineOptions, _BeamArgumentParser
    from cropshard.pipeline.options import CropshardOptions

    parser = _BeamArgumentParser(prog="cropshard build", allow_abbrev=False, description="Image files -> sharded TFRecord dataset (Apache Beam).")
    CropshardOptions._add_argparse_args(parser.add_argument_group("cropshard options"))
    seen = {CropshardOptions}
    pending = list(PipelineOptions.__subclasses__())
    while pending:
        cls = pending.pop(0)
        pending.extend(cls.__subclasses__())
        if cls in seen or "_add_argparse_args" not in cls.__dict__:
            continue
        seen.add(cls)
        group = parser.add_argument_group(f"{cls.__name__} (Beam)")
        try:
            cls._add_argparse_args(group)
        except argparse.ArgumentError:
            continue  # an option another group already declared
    return parser.format_help()


def demo_images_main(argv: Sequence[str]) -> int:
    from cropshard.pipeline.demo import write_demo_images

    parser = argparse.ArgumentParser(prog="cropshard demo-images", description="Generate the built-in demo image set.")
    parser.add_argument("output")
    parser.add_argument("--per_class", type=int, default=24)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    paths = write_demo_images(args.output, per_class=args.per_class, seed=args.seed)
    print(f"wrote {len(paths)} demo images under {args.output}")
    return 0


def build_for_compare(argv: list[str]) -> tuple[DatasetInfo, float]:
    """One `cropshard build` in this process, for compare (tools never import the pipeline themselves)."""
    from cropshard.pipeline.build import run

    result = run(argv, command_line=["cropshard", "build", *argv])
    return result.info, result.wall_seconds


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    # TensorFlow's C++ start-up banners drown the summary; workers inherit this too.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    for noisy in ("apache_beam", "absl", "tensorflow", "google"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    if not argv or argv[0] in ("-h", "--help"):
        print(f"usage: cropshard {{{','.join(COMMANDS)}}} ...\n\n"
              "  build        image files -> sharded TFRecord dataset (Beam; all Beam options pass through)\n"
              "  inspect      describe and verify a dataset\n"
              "  compare      measure pre-cropped vs full-image datasets on your data\n"
              "  demo-images  generate the built-in demo image set\n\n"
              "cropshard build --help lists every option.")
        return 0
    command, rest = (argv[0], argv[1:]) if argv[0] in COMMANDS else ("build", argv)
    if command == "build":
        if "-h" in rest or "--help" in rest:
            print(build_help())
            return 0
        from cropshard.pipeline.build import main as build_main

        try:
            return build_main(rest)
        except (ValueError, FileExistsError, FileNotFoundError) as err:
            print(f"cropshard build: error: {err}", file=sys.stderr)
            return 2
    if command == "demo-images":
        return demo_images_main(rest)
    if command == "inspect":
        from cropshard.tools.inspect import main as inspect_main

        return inspect_main(rest)
    from cropshard.tools.compare.cli import main as compare_main

    return compare_main(rest, build=build_for_compare)


if __name__ == "__main__":
    sys.exit(main())
