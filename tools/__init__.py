"""cropshard's user-facing tools: `cropshard inspect` (describe, verify, contact sheet) and
`cropshard compare` (pre-cropped vs full-image datasets, measured on the user's own data).

They sit on top of the reader (`reader.load`, its metadata, schema and integrity checks) and never
import the pipeline, so they load no Beam: `compare` is handed its builds by the `cropshard`
dispatcher (see compare/__init__.py). Nothing here defines dataset format, only how it is shown.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Any


def refuse_options_without(parser: argparse.ArgumentParser, args: argparse.Namespace, dests: Sequence[str], owner: str, remedy: str) -> None:
    """Exit 2 (parser.error) for the first of `dests` set to other than its default while `owner`
    is off: an option nothing reads is refused, never ignored."""
    flags = {action.dest: action.option_strings[0] for action in parser._actions if action.option_strings}
    for dest in dests:
        if getattr(args, dest) != parser.get_default(dest):
            parser.error(f"{flags[dest]} is an option of {owner}: add {remedy}, or drop it")


class _StoreOnce(argparse._StoreAction):
    """argparse's `store` that refuses a second, different value for the same option."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any, option_string: str | None = None) -> None:
        given = namespace.__dict__.setdefault("_given_once", {})
        if self.dest in given and given[self.dest] != values:
            parser.error(f"{option_string} is given more than once with different values; give it once")
        given[self.dest] = values
        super().__call__(parser, namespace, values, option_string)


def refuse_repeated_options(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Make every single-value option added to `parser` after this call refuse a repeat with a
    different value (exit 2), as `cropshard build` does: argparse keeps the last without a word
    (`--samples 4 --samples 2` showed 2). Build's own check (pipeline/arguments.py) cannot be
    imported here: tools never load the pipeline or Beam. Values are compared parsed, so
    `--size 64 --size 64x64` is one value."""
    parser.register("action", None, _StoreOnce)
    parser.register("action", "store", _StoreOnce)
    return parser


def human_bytes(num: float) -> str:
    """1536 -> '1.50 KiB' (binary units, as the build summary uses)."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(num) < 1024 or unit == "GiB":
            return f"{num:.0f} {unit}" if unit == "B" else f"{num:.2f} {unit}"
        num /= 1024
    raise AssertionError("unreachable")
