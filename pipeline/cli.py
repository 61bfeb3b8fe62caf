"""`cropshard` console script: build | inspect | compare | demo-images.

`cropshard build ...` and `python -m cropshard.pipeline build ...` are the same command; every Beam
option (--runner, --direct_num_workers, Dataflow and Flink options) passes through, and every other
argument is refused (pipeline/arguments.py). Exit status: 0 ok, 1 build failed, 2 usage error,
130 interrupted (a second Ctrl-C ends the process and its workers at once).
"""

from __future__ import annotations

import argparse
import contextlib
import difflib
import logging
import re
import sys
import warnings
from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from cropshard.reader.metadata import DatasetInfo

COMMANDS = ("build", "inspect", "compare", "demo-images")
EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130
INTERRUPTED = "interrupted: nothing published; rerun with --overwrite"
# Ctrl-C in the last moments, after the job wrote cropshard.json (last): the dataset is whole.
INTERRUPTED_AFTER_PUBLISHING = "interrupted after the dataset was published: {output} is complete"
# compare rebuilds every variant it owns on each run (tools/compare/workdir.py), so a rerun needs no --overwrite.
COMPARE_INTERRUPTED = "cropshard compare: interrupted: no new results were written; rerun the same command (it rebuilds its variants)"
_FAILURES = logging.getLogger("failures")  # not under "cropshard": quiet runs send it to the log file only

USAGE = f"""usage: cropshard {{{','.join(COMMANDS)}}} ...

  build        image files -> sharded TFRecord dataset (Beam; all Beam options pass through)
  inspect      describe and verify a dataset
  compare      measure pre-cropped vs full-image datasets on your data
  demo-images  generate the built-in demo image set

cropshard build --help lists the build options; --help-beam lists Beam's."""


def demo_images_main(argv: Sequence[str]) -> int:
    from cropshard.pipeline.demo import write_demo_images
    from cropshard.tools import refuse_repeated_options  # `--per_class 2 --per_class 3` kept the last without a word

    parser = refuse_repeated_options(
        argparse.ArgumentParser(prog="cropshard demo-images", allow_abbrev=False, description="Generate the built-in demo image set."))
    parser.add_argument("output")
    parser.add_argument("--per_class", type=int, default=24)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    try:
        paths = write_demo_images(args.output, per_class=args.per_class, seed=args.seed)
    except ValueError as err:  # --per_class < 1, OUTPUT a file or holding other files than a demo set
        print(f"cropshard demo-images: error: {err}", file=sys.stderr)
        return EXIT_USAGE
    print(f"wrote {len(paths)} demo images under {args.output}")
    return EXIT_OK


def build_for_compare(argv: list[str]) -> tuple[DatasetInfo, float]:
    """One `cropshard build` in this process, for compare (tools never import the pipeline themselves)."""
    from cropshard.pipeline.build import run

    result = run(argv, command_line=["cropshard", "build", *argv])
    return result.info, result.wall_seconds


def check_for_compare(argv: list[str]) -> None:
    """One `cropshard build` command line checked, nothing written: compare checks every variant before the first build."""
    from cropshard.pipeline.build import check

    check(argv)


_RAISED = re.compile(r"^(?:[A-Za-z_][\w.]*\.)?[A-Za-z_]\w*(?:Error|Exception): \S")  # 'pkg.mod.SomeError: message'


def failure_line(err: BaseException) -> str:
    """The one line a failed job shows: the outermost exception that the runner's error text
    quotes (a traceback with chained causes ends with it: cropshard's own message, naming the
    file), else the text's first line, with the runner's '[while running ...]' suffix dropped."""
    lines = [line.strip() for line in str(err).strip().splitlines() if line.strip()] or [""]
    raised = [line for line in lines if _RAISED.match(line)]
    line = raised[-1] if raised else f"{type(err).__name__}: {lines[0]}"
    return re.sub(r" \[while running '[^']*'\]$", "", line)[:400]


def run_build(argv: Sequence[str], log_path: str | None) -> int:
    """The build, each way it can end as one line on stderr and its exit status."""
    from cropshard.pipeline.build import BuildFailed, execute, prepare, published  # Beam: imported only to build
    from cropshard.transforms.worker import freeze_start_up_objects

    freeze_start_up_objects()
    prepared = None
    try:
        try:
            prepared = prepare(argv)
        except (ValueError, FileExistsError, FileNotFoundError) as err:  # options, --output, inputs: before any work
            print(f"cropshard build: error: {err}", file=sys.stderr)
            return EXIT_USAGE
        except Exception as err:  # storage refusing the listing (a 403 bucket, no network): one line, as for a failed job
            _FAILURES.error("build could not start", exc_info=True)
            print(f"cropshard build: failed: {failure_line(err)}{f' (traceback in {log_path})' if log_path else ''}", file=sys.stderr)
            return EXIT_FAILED
        try:
            print(execute(prepared).summary())
            return EXIT_OK
        except BuildFailed as err:
            print(f"cropshard build: failed: {err}", file=sys.stderr)
            return EXIT_FAILED
        except Exception as err:  # the job failed: its traceback goes to the log, one line to the terminal
            _FAILURES.error("build failed", exc_info=True)
            print(f"cropshard build: failed: {failure_line(err)}{f' (traceback in {log_path})' if log_path else ''}", file=sys.stderr)
            return EXIT_FAILED
    except KeyboardInterrupt:
        done = prepared is not None and not prepared.dry_run and published(prepared.config.output)
        print(INTERRUPTED_AFTER_PUBLISHING.format(output=prepared.config.output) if done else INTERRUPTED, file=sys.stderr)
        return EXIT_INTERRUPTED


def build_command(argv: Sequence[str], exiting: bool = False) -> int:
    """`cropshard build`; `exiting`: this process ends when the command returns (see main)."""
    if "-h" in argv or "--help" in argv or "--help-beam" in argv:
        with warnings.catch_warnings():  # Google's import-time FutureWarnings are not help
            warnings.simplefilter("ignore")
            from cropshard.pipeline import arguments

        print(arguments.beam_help() if "--help-beam" in argv else arguments.build_help())
        return EXIT_OK
    from cropshard.pipeline.console import quiet_output

    with quiet_output("build", verbose="--verbose" in argv) as console:
        code = run_build(argv, console.log_path)
        if code == EXIT_INTERRUPTED and exiting:
            console.keep_until_exit()
        return code


def compare_command(argv: Sequence[str], exiting: bool = False) -> int:
    """`cropshard compare`; `exiting` as for build_command."""
    from cropshard.pipeline.console import quiet_output

    with quiet_output("compare", verbose="--verbose" in argv) as console:
        from cropshard.tools.compare.cli import main as compare_main

        try:
            return compare_main(argv, build=build_for_compare, check=check_for_compare)
        except KeyboardInterrupt:
            print(COMPARE_INTERRUPTED, file=sys.stderr)
            if exiting:
                console.keep_until_exit()
            return EXIT_INTERRUPTED


def inspect_command(argv: Sequence[str]) -> int:
    from cropshard.pipeline.console import quiet_output

    # TensorFlow 2.21 prints its oneDNN banner whatever TF_CPP_MIN_LOG_LEVEL says: to the log, like build's.
    with quiet_output("inspect", verbose=False):
        from cropshard.tools.inspect import main as inspect_main

        return inspect_main(argv)


def unknown_command_message(argv: Sequence[str]) -> str:
    word = argv[0]
    if word.startswith("-"):
        return f"cropshard: error: no command before {word}; did you mean: cropshard build {' '.join(argv)}? commands: {', '.join(COMMANDS)}"
    close = difflib.get_close_matches(word, COMMANDS, n=1)
    hint = f" (did you mean {close[0]}?)" if close else ""
    return f"cropshard: error: unknown command {word!r}{hint}; commands: {', '.join(COMMANDS)}"


FORCED_EXIT = "cropshard: interrupted again: exiting now (temporary files may stay in --output; rerun with --overwrite)"


def end_on_second_interrupt() -> None:
    """For this process's own run only (it exits when the command returns): the first Ctrl-C
    interrupts the command as before (KeyboardInterrupt: clean-up, one line, exit 130); a second
    ends the process at once, its worker subprocesses too. A SIGINT that reached the launcher
    alone while the local workers started could leave it waiting forever, and a second did nothing."""
    import os
    import signal

    terminal = os.dup(2)  # before a command points file descriptor 2 at its log
    interrupts = []

    def on_interrupt(signum: int, frame: object) -> None:
        interrupts.append(signum)
        if len(interrupts) == 1:
            raise KeyboardInterrupt
        os.write(terminal, (FORCED_EXIT + "\n").encode())
        for child in _descendants():
            with contextlib.suppress(OSError):  # gone already
                os.kill(child, signal.SIGTERM)
        os._exit(EXIT_INTERRUPTED)

    signal.signal(signal.SIGINT, on_interrupt)


def _descendants(pid: str = "self") -> list[int]:
    """Every process below `pid` (Linux /proc; none elsewhere): Beam's local workers run under
    a /bin/sh of their own, so the shell's children too."""
    import glob

    found = []
    for path in glob.glob(f"/proc/{pid}/task/*/children"):
        try:
            with open(path) as handle:
                children = [int(child) for child in handle.read().split()]
        except OSError:
            continue
        for child in children:
            found += [child, *_descendants(str(child))]
    return found


def main(argv: Sequence[str] | None = None) -> int:
    """The console script. Without `argv` it is this process's entry point (`cropshard`, `python -m
    cropshard.pipeline`), which exits when it returns: after Ctrl-C, build and compare then leave
    the output redirected to the log (Console.keep_until_exit); called with `argv`, everything is
    restored as it was."""
    exiting = argv is None
    if exiting:
        end_on_second_interrupt()
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE)
        return EXIT_OK
    command, rest = argv[0], argv[1:]
    commands = {"build": lambda: build_command(rest, exiting), "demo-images": lambda: demo_images_main(rest),
                "inspect": lambda: inspect_command(rest), "compare": lambda: compare_command(rest, exiting)}
    if command not in commands:
        print(unknown_command_message(argv), file=sys.stderr)
        return EXIT_USAGE
    try:
        return commands[command]()
    except KeyboardInterrupt:  # before a command's own handler is in place (imports take seconds): nothing was made
        print(f"cropshard {command}: interrupted before any work", file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
