"""cropshard's user-facing tools: `cropshard inspect` (describe, verify, contact sheet) and
`cropshard compare` (pre-cropped vs full-image datasets, measured on the user's own data).

They sit on top of the reader (`reader.load`, its metadata, schema and integrity checks) and never
import the pipeline, so they load no Beam: `compare` is handed its builds by the `cropshard`
dispatcher (see compare/__init__.py). Nothing here defines dataset format, only how it is shown.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence


def refuse_options_without(parser: argparse.ArgumentParser, args: argparse.Namespace, dests: Sequence[str], owner: str, remedy: str) -> None:
    """Exit 2 (parser.error) for the first of `dests` set to other than its default while `owner`
    is off: an option nothing reads is refused, never ignored."""
    flags = {action.dest: action.option_strings[0] for action in parser._actions if action.option_strings}
    for dest in dests:
        if getattr(args, dest) != parser.get_default(dest):
            parser.error(f"{flags[dest]} is an option of {owner}: add {remedy}, or drop it")


def human_bytes(num: float) -> str:
    """1536 -> '1.50 KiB' (binary units, as the build summary uses)."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(num) < 1024 or unit == "GiB":
            return f"{num:.0f} {unit}" if unit == "B" else f"{num:.2f} {unit}"
        num /= 1024
    raise AssertionError("unreachable")
