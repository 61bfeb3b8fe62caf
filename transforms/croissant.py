"""croissant.json: the dataset described in MLCommons Croissant 1.0 (JSON-LD), for dataset
catalogues and loaders that speak it.

What it lists: the shard files (a FileSet of TFRecord files), their record index files and
labels.txt; record sets for the label names (read from labels.txt), the
splits (inline data with their sizes) and the examples (one field per stored feature, read from
the shards). `mlcroissant` validates all of it and loads the label and split record sets; it has
no TFRecord reader (1.1.1 reads CSV, JSON, JSON lines, Parquet, text, image and audio files), so
the examples themselves are read with TFDS, DALI, the `tfrecord` package or cropshard's reader.
Pure functions of `DatasetInfo`.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from cropshard.reader import metadata, schema, shard_index

CONFORMS_TO = "http://mlcommons.org/croissant/1.0"
TFRECORD_FORMAT = "application/x-tfrecord"

_CONTEXT = {
    "@language": "en",
    "@vocab": "https://schema.org/",
    "citeAs": "cr:citeAs",
    "column": "cr:column",
    "conformsTo": "dct:conformsTo",
    "cr": "http://mlcommons.org/croissant/",
    "rai": "http://mlcommons.org/croissant/RAI/",
    "data": {"@id": "cr:data", "@type": "@json"},
    "dataType": {"@id": "cr:dataType", "@type": "@vocab"},
    "dct": "http://purl.org/dc/terms/",
    "examples": {"@id": "cr:examples", "@type": "@json"},
    "extract": "cr:extract",
    "field": "cr:field",
    "fileProperty": "cr:fileProperty",
    "fileObject": "cr:fileObject",
    "fileSet": "cr:fileSet",
    "format": "cr:format",
    "includes": "cr:includes",
    "isLiveDataset": "cr:isLiveDataset",
    "jsonPath": "cr:jsonPath",
    "key": "cr:key",
    "md5": "cr:md5",
    "parentField": "cr:parentField",
    "path": "cr:path",
    "recordSet": "cr:recordSet",
    "references": "cr:references",
    "regex": "cr:regex",
    "repeated": "cr:repeated",
    "replace": "cr:replace",
    "sc": "https://schema.org/",
    "separator": "cr:separator",
    "source": "cr:source",
    "subField": "cr:subField",
    "transform": "cr:transform",
}

# Croissant data types of the stored features (schema.FEATURE_TYPES), the image as an ImageObject.
_DATA_TYPES = {"bytes": "sc:Text", "int64": "sc:Integer"}
_FIELD_DESCRIPTIONS = {
    schema.IMAGE_ENCODED: "the image: JPEG or PNG bytes, or raw uint8 pixels, row-major HWC (see image/format)",
    schema.IMAGE_FORMAT: "jpeg, png or raw",
    schema.LABEL: "label id: the line of labels.txt (0-based); -1 for unlabeled images",
    schema.LABEL_TEXT: "label name",
    schema.CROP_BOX: "[y, x, height, width] of this image in its EXIF-oriented source",
    schema.SOURCE_SHA256: "SHA-256 of the source file's bytes",
}


def _field_id(key: str) -> str:
    return "examples/" + key.replace("/", "_")


def example_fields(info: metadata.DatasetInfo) -> list[dict[str, Any]]:
    """One Croissant field per stored tf.train.Example feature, plus the split from the file name."""
    fields = [
        {
            "@type": "cr:Field",
            "@id": "examples/split",
            "name": "split",
            "description": "the split, from the shard's file name",
            "dataType": "sc:Text",
            "source": {
                "fileSet": {"@id": "shards"},
                "extract": {"fileProperty": "filename"},
                "transform": {"regex": r"^(.*)-\d{5}-of-\d{5}\.tfrecord$"},
            },
        }
    ]
    for key, (dtype, shape) in schema.FEATURE_TYPES.items():
        field: dict[str, Any] = {
            "@type": "cr:Field",
            "@id": _field_id(key),
            "name": key,
            "description": _FIELD_DESCRIPTIONS.get(key, key),
            "dataType": "sc:ImageObject" if key == schema.IMAGE_ENCODED and info.encoding != schema.FORMAT_RAW else _DATA_TYPES[dtype],
            "source": {"fileSet": {"@id": "shards"}, "extract": {"column": key}},
        }
        if shape:
            field["repeated"] = True
        if key == schema.LABEL and info.labels:
            field["references"] = {"field": {"@id": "labels/name"}}
        fields.append(field)
    return fields


def distribution(info: metadata.DatasetInfo) -> list[dict[str, Any]]:
    """The files: shards and their indexes as file sets, labels.txt as a file object."""
    suffix = ".tfrecord.gz" if info.compression == metadata.COMPRESSION_GZIP else ".tfrecord"
    return [
        {
            "@type": "cr:FileSet",
            "@id": "shards",
            "name": "shards",
            "description": f"TFRecord shards of tf.train.Example records ({info.compression} compression)",
            "encodingFormat": TFRECORD_FORMAT,
            "includes": f"*-?????-of-?????{suffix}",
        },
        {
            "@type": "cr:FileSet",
            "@id": "shard-indexes",
            "name": "shard-indexes",
            "description": "one per shard: '<offset> <size>' of each record, the index format of DALI and the tfrecord package",
            "encodingFormat": "text/plain",
            "includes": f"*-?????-of-?????{suffix}{shard_index.INDEX_SUFFIX}",
        },
        {
            "@type": "cr:FileObject",
            "@id": "labels.txt",
            "name": "labels.txt",
            "description": "label names, one a line; line i is label id i",
            "contentUrl": metadata.LABELS_FILENAME,
            "encodingFormat": "text/plain",
            "sha256": hashlib.sha256(metadata.labels_text(info.labels).encode("utf-8")).hexdigest(),
        },
    ]


def record_sets(info: metadata.DatasetInfo) -> list[dict[str, Any]]:
    splits = {
        "@type": "cr:RecordSet",
        "@id": "splits",
        "name": "splits",
        "description": "the splits and how many examples each holds",
        "key": {"@id": "splits/name"},
        "field": [
            {"@type": "cr:Field", "@id": "splits/name", "name": "name", "dataType": "sc:Text"},
            {"@type": "cr:Field", "@id": "splits/num_examples", "name": "num_examples", "dataType": "sc:Integer"},
        ],
        "data": [
            {"splits/name": name, "splits/num_examples": split.num_examples} for name, split in sorted(info.splits.items())
        ],
    }
    labels = {
        "@type": "cr:RecordSet",
        "@id": "labels",
        "name": "labels",
        "description": "label names in label id order",
        "field": [
            {
                "@type": "cr:Field",
                "@id": "labels/name",
                "name": "name",
                "dataType": "sc:Text",
                "source": {"fileObject": {"@id": "labels.txt"}, "extract": {"fileProperty": "lines"}},
            }
        ],
    }
    examples = {
        "@type": "cr:RecordSet",
        "@id": "examples",
        "name": "examples",
        "description": "one tf.train.Example per record of the shards",
        "field": example_fields(info),
    }
    return [splits, labels, examples] if info.labels else [splits, examples]


def croissant_json(info: metadata.DatasetInfo) -> str:
    """croissant.json for the dataset `info` describes."""
    body = {
        "@context": _CONTEXT,
        "@type": "sc:Dataset",
        "name": "cropshard_dataset",
        "description": (
            f"Images as TFRecord shards of tf.train.Example records, written by cropshard {info.cropshard_version}"
            f" (encoding {info.encoding}, crop {info.crop.get('strategy')}); cropshard's own metadata is in {metadata.INFO_FILENAME}."
        ),
        "conformsTo": CONFORMS_TO,
        "datePublished": info.created[:10] if info.created else None,
        "version": "1.0.0",
        "distribution": distribution(info),
        "recordSet": record_sets(info),
    }
    body = {key: value for key, value in body.items() if value is not None}
    return json.dumps(body, indent=2, ensure_ascii=False) + "\n"
