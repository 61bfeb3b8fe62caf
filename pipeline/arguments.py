"""Every `cropshard build` argument is understood or refused: the strict check before any work, and
the --help / --help-beam texts.

Beam discards what none of its option classes knows ("Discarding unparseable args", a warning
among many), which turned `--encodng jpeg` into a raw dataset. The check parses the arguments
with every option class Beam itself registers (each PipelineOptions subclass, cropshard's
included) in one parser without prefix abbreviations; anything left over is a usage error. The
arguments themselves are not changed: Beam still parses them as before.
"""

from __future__ import annotations

import argparse
import difflib
import os
import shlex
from collections.abc import Iterator, Sequence

from apache_beam.options.pipeline_options import PipelineOptions, _BeamArgumentParser
from cropshard.pipeline.options import CropshardOptions, cropshard_options_parser


class UsageError(ValueError):
    """A command line that cannot mean what was typed: exit 2, one line, before any work."""


def option_classes() -> Iterator[type[PipelineOptions]]:
    """Every PipelineOptions subclass that declares options, cropshard's first, then Beam's in
    the order Beam defines them (subclasses of subclasses included)."""
    yield CropshardOptions
    seen = {CropshardOptions}
    pending = list(PipelineOptions.__subclasses__())
    while pending:
        cls = pending.pop(0)
        pending.extend(cls.__subclasses__())
        if cls in seen or "_add_argparse_args" not in cls.__dict__:
            continue
        seen.add(cls)
        yield cls


class _StrictParser(_BeamArgumentParser):
    def error(self, message: str) -> None:  # a bad value (`--encoding jpg`): one line, not argparse's usage block
        raise UsageError(message)


def known_options_parser() -> argparse.ArgumentParser:
    """One parser with every registered option and no abbreviations (`--out` is not `--output`)."""
    parser = _StrictParser(prog="cropshard build", allow_abbrev=False, add_help=False)
    for cls in option_classes():
        cls._add_argparse_args(parser)
    return parser


def long_options(parser: argparse.ArgumentParser) -> list[str]:
    return sorted({flag for action in parser._actions for flag in action.option_strings if flag.startswith("--")})


def did_you_mean(flag: str, known: Sequence[str]) -> str:
    """' (did you mean --encoding?)' for the closest known option, or ''."""
    close = difflib.get_close_matches(flag, known, n=1, cutoff=0.6)
    return f" (did you mean {close[0]}?)" if close else ""


def glob_pattern_guess(paths: Sequence[str]) -> str:
    """The pattern a shell most likely expanded into `paths`: their common folder with `**` for
    folders, `*.ext` for files sharing an extension, `*` otherwise."""
    parent = os.path.commonpath([p.rstrip("/") for p in paths]) or "."
    if all(os.path.isdir(p) for p in paths):
        return f"{parent}/**"
    extensions = {os.path.splitext(p)[1] for p in paths}
    return f"{parent}/*{extensions.pop()}" if len(extensions) == 1 else f"{parent}/*"


def expanded_glob(argv: Sequence[str], strays: Sequence[str]) -> tuple[int, int, str] | None:
    """(start, end, pattern) when argv[start:end] is `--input` followed by several existing paths,
    the stray ones among them: a pattern the shell expanded because it was not quoted."""
    for start, arg in enumerate(argv):
        if arg != "--input" or start + 2 >= len(argv):
            continue
        end = start + 2
        while end < len(argv) and not argv[end].startswith("-") and os.path.exists(argv[end]):
            end += 1
        expanded = argv[start + 1 : end]
        if len(expanded) > 1 and os.path.exists(expanded[0]) and set(expanded[1:]) <= set(strays):
            return start, end, glob_pattern_guess(expanded)
    return None


def unquoted_glob_message(argv: Sequence[str], start: int, end: int, pattern: str) -> str:
    quoted = [*argv[:start], "--input", pattern, *argv[end:]]
    return (f"{end - start - 1} paths follow --input: the shell expanded an unquoted pattern; quote it, e.g. "
            f"cropshard build {shlex.join(quoted)}")


def single_value_flags() -> frozenset[str]:
    """cropshard's options that hold one value (not --input, which appends, nor the switches)."""
    actions = cropshard_options_parser()._actions
    return frozenset(flag for action in actions if type(action) is argparse._StoreAction for flag in action.option_strings)


def conflicting_repeats(argv: Sequence[str], flags: frozenset[str]) -> tuple[str, list[str]] | None:
    """(flag, its values) for the first of `flags` given twice with different values: argparse
    keeps the last without a word (`--size 64x64 ... --size 256` built 256² crops). Beam's own
    options may repeat: the launch scripts put their defaults first and the user's after."""
    values: dict[str, list[str]] = {}
    for index, arg in enumerate(argv):
        flag, has_value, value = arg.partition("=")
        if flag in flags and (has_value or index + 1 < len(argv)):
            values.setdefault(flag, []).append(value if has_value else argv[index + 1])
    return next(((flag, given) for flag, given in values.items() if len(set(given)) > 1), None)


def check_build_arguments(argv: Sequence[str]) -> None:
    """UsageError for the first argument no registered option understands: an unknown or
    abbreviated option (with the closest known one), or a stray positional (an unquoted glob the
    shell expanded gets the quoted command); and for a cropshard option given different values."""
    parser = known_options_parser()
    _, unknown = parser.parse_known_args(list(argv))
    if not unknown:
        repeated = conflicting_repeats(argv, single_value_flags())
        if repeated:
            flag, given = repeated
            raise UsageError(f"{flag} is given {len(given)} times with different values ({', '.join(given)}); give it once")
        return
    options = [arg for arg in unknown if arg.startswith("-")]
    if options:
        flag = options[0].split("=", 1)[0]
        raise UsageError(f"unknown option {flag}{did_you_mean(flag, long_options(parser))}; cropshard build --help lists the options")
    glob = expanded_glob(argv, unknown)
    if glob:
        raise UsageError(unquoted_glob_message(argv, *glob))
    raise UsageError(f"unexpected argument {unknown[0]!r}: every value belongs to an --option (a path with spaces needs quotes)")


class _GroupedHelpFormatter(argparse.RawDescriptionHelpFormatter):
    def __init__(self, prog: str) -> None:
        super().__init__(prog, max_help_position=32, width=110)


CROPSHARD_USAGE = "cropshard build (--input GLOB | --manifest FILE) --output DIR [options] [Beam options]"
RUNNER_EPILOG = """Beam's runner options (passed through unchanged; cropshard build --help-beam lists them all):
  --runner NAME                 DirectRunner (default: local, multi-process, one worker per core,
                                on Beam's FnApiRunner), PortableRunner (Flink, through
                                launch/flink.sh), DataflowRunner
  --direct_num_workers N        local worker processes (default: one per core)
  --project --region --temp_location --setup_file ...   Dataflow (launch/README.md)
  --job_endpoint --environment_type --parallelism ...   Flink and other portable runners

exit status: 0 built, 1 build failed (nothing published), 2 usage error, 130 interrupted.
Library warnings and Beam's own log go to a log file in <temp dir>/cropshard-logs/ (--verbose: to the terminal)."""


def build_help() -> str:
    """`cropshard build --help`: cropshard's own options by group, each with its default."""
    parser = _BeamArgumentParser(prog="cropshard build", usage=CROPSHARD_USAGE, add_help=False, allow_abbrev=False,
                                 formatter_class=_GroupedHelpFormatter, epilog=RUNNER_EPILOG,
                                 description="Image files -> sharded TFRecord dataset (Apache Beam).")
    CropshardOptions._add_argparse_args(parser)
    return parser.format_help()


def beam_help() -> str:
    """`cropshard build --help-beam`: every option of Beam's own option classes, one group per class."""
    parser = _BeamArgumentParser(prog="cropshard build", usage=CROPSHARD_USAGE, add_help=False, allow_abbrev=False,
                                 description="Beam's options, passed through unchanged to the runner.")
    for cls in option_classes():
        if cls is not CropshardOptions:
            cls._add_argparse_args(parser.add_argument_group(f"{cls.__name__} (Beam)"))
    return parser.format_help()
