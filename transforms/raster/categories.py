"""Class names from a class map's own category table, when no `--label_names` file is given.

GDAL keeps a GeoTIFF band's category names (GetCategoryNames) and its raster attribute table in
the PAM sidecar `<file>.aux.xml`, not in the TIFF (GDAL 3.10's GTiff driver writes both there):

    <PAMDataset><PAMRasterBand band="1">
      <CategoryNames><Category></Category><Category>water</Category>...</CategoryNames>   (value = position)
      <GDALRasterAttributeTable>  FieldDefn (Name, Type, Usage) ... Row (F per field) ...

cropshard reads that one declared sidecar itself, as data: GDAL's PAM stays off (open_raster), so
GDAL never sees the file and nothing in it but band 1's category names and attribute table is
used (no georeferencing, no overviews, no other references). The XML is parsed only without a
DTD: no entity can be declared, so none can expand or point at another file or URL.

A band with both category names and an attribute table must name the same classes in both.
"""

from __future__ import annotations

import xml.etree.ElementTree as ElementTree
from collections.abc import Callable

from cropshard.transforms.raster.labels import LabelRasterSpec, checked_classes
from cropshard.transforms.rejects import Rejected

SIDECAR_SUFFIX = ".aux.xml"
MAX_SIDECAR_BYTES = 16 << 20  # statistics and histograms share the file; a class table is a few KiB
LABEL_BAND = "1"  # class maps are read from band 1 (labels.LabelGrid)
# GDAL's GDALRATFieldType and GDALRATFieldUsage codes (gdal.h), as written in <Type> and <Usage>.
RAT_INTEGER, RAT_STRING = "0", "2"
USAGE_NAME, USAGE_MINMAX = "2", "5"
NAME_COLUMNS = ("class_name", "classname", "class", "name", "label")  # name columns written with a generic usage
VALUE_COLUMNS = ("value",)  # an integer value column written with a generic usage

Classes = tuple[tuple[int, str], ...]


class CategoryTableError(ValueError):
    """The sidecar exists but holds no usable class table (malformed, a DTD, or contradictory)."""


def sidecar_path(path: str) -> str:
    return path + SIDECAR_SUFFIX


def parse_pam_categories(text: bytes, source: str) -> Classes | None:
    """((value, name), ...) of band 1 of a PAM .aux.xml, sorted by value; None when that band
    has neither category names nor an attribute table."""
    band = next((el for el in _parse(text, source).findall("PAMRasterBand") if el.get("band") == LABEL_BAND), None)
    if band is None:
        return None
    categories = _category_names(band.find("CategoryNames"))
    table = band.find("GDALRasterAttributeTable")
    attributes = _attribute_table(table, source) if table is not None else []
    if categories and attributes and dict(categories) != dict(attributes):
        contrast = difference(tuple(categories), tuple(attributes)).replace("the dataset", "the category names")
        raise CategoryTableError(f"{source}: the band's category names and its attribute table name different classes (in the table: {contrast})")
    classes = categories or attributes
    if not classes:
        return None
    try:
        return checked_classes(classes, source)
    except ValueError as err:  # repeated values, or more classes than ids
        raise CategoryTableError(str(err)) from err


def _parse(text: bytes, source: str) -> ElementTree.Element:
    if b"<!doctype" in text.lower() or b"<!entity" in text.lower():
        raise CategoryTableError(f"{source}: has a DTD (<!DOCTYPE/<!ENTITY), which GDAL never writes; refused")
    try:
        root = ElementTree.fromstring(text)
    except ElementTree.ParseError as err:
        raise CategoryTableError(f"{source}: not well-formed XML ({err})") from err
    if root.tag != "PAMDataset":
        raise CategoryTableError(f"{source}: the root element is <{root.tag}>, not GDAL's <PAMDataset>")
    return root


def _category_names(element: ElementTree.Element | None) -> list[tuple[int, str]]:
    """GetCategoryNames: entry i names value i; empty entries name nothing."""
    if element is None:
        return []
    names = [(value, (category.text or "").strip()) for value, category in enumerate(element.findall("Category"))]
    return [(value, name) for value, name in names if name]


def _attribute_table(table: ElementTree.Element, source: str) -> list[tuple[int, str]]:
    """(value, name) per row with a name: the value from the MinMax column (or an integer column
    named Value), else from the table's linear binning (Row0Min + row * BinSize)."""
    fields = sorted(table.findall("FieldDefn"), key=lambda field: int(field.get("index", "0")))
    columns = [tuple((field.findtext(tag) or "").strip() for tag in ("Name", "Type", "Usage")) for field in fields]
    name_col = _column(columns, lambda name, kind, usage: usage == USAGE_NAME)
    if name_col is None:
        name_col = _column(columns, lambda name, kind, usage: kind == RAT_STRING and name.lower() in NAME_COLUMNS)
    strings = [index for index, (_, kind, _) in enumerate(columns) if kind == RAT_STRING]
    if name_col is None and len(strings) == 1:
        name_col = strings[0]  # the table's one text column names its rows: NLCD's "Land Cover Class"
    if name_col is None:
        raise CategoryTableError(f"{source}: the attribute table has no name column (usage Name, a string column named one of"
                                 f" {list(NAME_COLUMNS)}, or a single string column)")
    value_col = _column(columns, lambda name, kind, usage: usage == USAGE_MINMAX)
    if value_col is None:
        value_col = _column(columns, lambda name, kind, usage: kind == RAT_INTEGER and name.lower() in VALUE_COLUMNS)
    row0, bin_size = table.get("Row0Min"), table.get("BinSize")
    if value_col is None and (row0 is None or bin_size is None):
        raise CategoryTableError(f"{source}: the attribute table has no value column (usage MinMax, or an integer column named Value) and no linear binning")
    rows = sorted(table.findall("Row"), key=lambda row: int(row.get("index", "0")))
    classes = []
    for position, row in enumerate(rows):
        cells = [(cell.text or "").strip() for cell in row.findall("F")]
        if len(cells) != len(columns):
            raise CategoryTableError(f"{source}: attribute table row {position} has {len(cells)} fields for {len(columns)} columns")
        if not cells[name_col]:
            continue  # an unnamed row names no class, like an empty category name
        if value_col is not None:
            value = _number(cells[value_col], position, source)
        else:
            value = _number(row0, position, source) + position * _number(bin_size, position, source)
        if not value.is_integer():
            raise CategoryTableError(f"{source}: attribute table row {position} has the class value {value:g}, not an integer")
        classes.append((int(value), cells[name_col]))
    return classes


def _column(columns: list[tuple[str, ...]], wanted: Callable[[str, str, str], bool]) -> int | None:
    return next((index for index, column in enumerate(columns) if wanted(*column)), None)


def _number(text: str, position: int, source: str) -> float:
    try:
        return float(text)
    except ValueError as err:
        raise CategoryTableError(f"{source}: attribute table row {position}: {text!r} is not a class value") from err


def read_category_table(label_path: str) -> Classes | None:
    """The class map's category table from its `.aux.xml` (local or gs://); None without the
    sidecar or without a table for band 1; CategoryTableError for an unusable one."""
    from apache_beam.io.filesystem import CompressionTypes
    from apache_beam.io.filesystems import FileSystems

    sidecar = sidecar_path(label_path)
    if not FileSystems.exists(sidecar):
        return None
    try:
        with FileSystems.open(sidecar, compression_type=CompressionTypes.UNCOMPRESSED) as handle:
            text = handle.read(MAX_SIDECAR_BYTES + 1)
    except Exception as err:  # noqa: BLE001 - local and remote filesystems raise their own types
        raise CategoryTableError(f"{sidecar}: cannot be read ({type(err).__name__}: {err})") from err
    if len(text) > MAX_SIDECAR_BYTES:
        raise CategoryTableError(f"{sidecar}: larger than {MAX_SIDECAR_BYTES >> 20} MiB; not read")
    return parse_pam_categories(text, sidecar)


def difference(expected: Classes, found: Classes, limit: int = 4) -> str:
    """'' when equal, else the first `limit` differences, e.g. "value 2 is 'trees' here, 'forest' in the dataset"."""
    want, have = dict(expected), dict(found)
    notes = []
    for value in sorted(set(want) | set(have)):
        if value not in have:
            notes.append(f"value {value} ({want[value]!r}) missing here")
        elif value not in want:
            notes.append(f"value {value} ({have[value]!r}) not in the dataset's classes")
        elif want[value] != have[value]:
            notes.append(f"value {value} is {have[value]!r} here, {want[value]!r} in the dataset")
    more = f"; and {len(notes) - limit} more" if len(notes) > limit else ""
    return "; ".join(notes[:limit]) + more


def check_class_map_table(label_path: str, spec: LabelRasterSpec) -> None:
    """Without --label_names, every class map must carry the dataset's table: `Rejected`
    (`label_names_mismatch`) when its own is missing, unusable or different."""
    if not spec.names_from_tables:
        return
    try:
        table = read_category_table(label_path)
    except CategoryTableError as err:
        raise Rejected("label_names_mismatch", f"the class map's category table is unusable: {err}") from err
    if table is None:
        raise Rejected("label_names_mismatch", f"the class map {label_path} has no category table ({SIDECAR_SUFFIX}); the dataset's class names are the {spec.names_from}")
    found = difference(spec.classes, table)
    if found:
        raise Rejected("label_names_mismatch", f"the category table of {label_path} differs from the dataset's (the {spec.names_from}): {found}")
