"""Which variant folders `cropshard compare` may build into: only its own.

compare builds every variant with `cropshard build --overwrite`, which replaces whatever dataset a
non-empty folder holds. So before the first build each variant folder must be missing, empty or
compare's own: named in the workdir's LEDGER (compare adds a folder just before its first build
there, so an interrupted compare still owns it), or, for a workdir of a compare that kept no
ledger, listed in the workdir's compare.json as a variant compare built. Any other non-empty
folder is the user's (a dataset of theirs, their own TFRecords): refused, unless `compare
--overwrite`. The ledger sits in the workdir, not in the variant folders: a build refuses an
output that holds files a build does not write.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from typing import Any

from cropshard.reader import fileio
from cropshard.reader.metadata import join
from cropshard.tools import storage_failure
from cropshard.tools.compare.plan import Variant

LEDGER = "compare-variants.json"
RESULTS = "compare.json"


def _read_json(path: str) -> Any:
    """The JSON document at `path`, or None when it is missing or not JSON (which proves nothing);
    a storage failure is raised (compare exits with EXIT_STORAGE)."""
    fs = fileio.get()
    try:
        if not fs.exists(path):
            return None
        with fs.open(path, "r") as handle:
            return json.load(handle)
    except Exception as err:  # noqa: BLE001 - an unreadable file claims no folder
        if storage_failure(err):
            raise  # storage that failed proves nothing either, and claim_folder would rewrite the ledger without its folders
        return None


def _folder(variant: Variant) -> str:
    return os.path.basename(os.path.normpath(variant.path))


def owned(variant: Variant, workdir: str) -> bool:
    """Whether compare wrote `variant`'s folder: named in the ledger, or built in the workdir's compare.json."""
    ledger = _read_json(join(workdir, LEDGER))
    if isinstance(ledger, dict) and _folder(variant) in ledger.get("folders", []):
        return True
    results = _read_json(join(workdir, RESULTS))
    rows = results.get("variants", []) if isinstance(results, dict) else []
    return any(isinstance(row, dict) and row.get("name") == variant.name and row.get("reused") is False
               and os.path.basename(os.path.normpath(str(row.get("path", "")))) == _folder(variant) for row in rows)


def foreign_contents(variant: Variant, workdir: str) -> str | None:
    """What in `variant.path` compare did not write (for the refusal), or None: the folder is
    missing, empty or compare's own."""
    fs = fileio.get()
    if "://" not in variant.path and os.path.isfile(variant.path):
        return "it is a file"
    if not fs.exists(variant.path):
        return None
    names = sorted(fs.listdir(variant.path))
    if not names or owned(variant, workdir):
        return None
    shown = ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")
    return f"it holds {shown}"


def check_variant_folders(variants: Sequence[Variant], workdir: str) -> None:
    """FileExistsError naming the first variant folder that compare would build into but did not write."""
    for variant in variants:
        foreign = foreign_contents(variant, workdir)
        if foreign:
            raise FileExistsError(
                f"variant folder {variant.path} was not written by compare ({foreign}), and building {variant.name} there would"
                f" replace it: choose another --workdir, measure an existing dataset as is with --dataset {variant.path},"
                " or pass --overwrite to replace it")


def claim_folder(variant: Variant, workdir: str) -> None:
    """Record `variant`'s folder in the workdir's ledger as compare's own, before its build writes there."""
    path = join(workdir, LEDGER)
    ledger = _read_json(path)
    folders = ledger.get("folders", []) if isinstance(ledger, dict) else []
    if _folder(variant) in folders:
        return
    if "://" not in workdir:
        os.makedirs(workdir, exist_ok=True)
    with fileio.get().open(path, "w") as handle:
        json.dump({"written_by": "cropshard compare", "folders": sorted({*folders, _folder(variant)})}, handle, indent=2)
        handle.write("\n")
