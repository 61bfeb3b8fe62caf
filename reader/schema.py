"""The one definition of cropshard's tf.train.Example schema, shared by writer and reader.

Feature keys follow the TF-Slim / TPU reference convention so that other tools read the
files without cropshard. `encode_example` and `decode_example` are symmetric: for every
`ImageRecord` r, `decode_example(encode_example(r)) == r`.

`raw` images are row-major HWC (height, width, channels), uint8 unless `image/dtype` says
otherwise (uint16, int16, float32, little-endian). Raster chips also carry their
georeferencing: `image/geo/crs` and `image/geo/transform`. These optional keys are written only
when they apply, so photo datasets keep exactly the keys above.
"""

from __future__ import annotations

import dataclasses
import struct
from typing import Any

IMAGE_ENCODED = "image/encoded"
IMAGE_FORMAT = "image/format"
IMAGE_HEIGHT = "image/height"
IMAGE_WIDTH = "image/width"
IMAGE_CHANNELS = "image/channels"
LABEL = "image/class/label"
LABEL_TEXT = "image/class/text"
FILENAME = "image/filename"
CROP_BOX = "image/crop/box"
SOURCE_SHA256 = "image/key/sha256"
IMAGE_DTYPE = "image/dtype"  # optional: written when the samples are not uint8
GEO_CRS = "image/geo/crs"  # optional: 'EPSG:n', else WKT; '' for a raster without a CRS
# optional: the chip's affine transform, GDAL order, as 6 little-endian float64 (48 bytes):
# an Example's float_list is float32, whose step at a UTM northing (~4.4e6 m) is 0.5 m.
GEO_TRANSFORM = "image/geo/transform"
SEGMENTATION = "image/segmentation/encoded"  # optional: the chip's class-id mask, 8-bit PNG (255 = no class)

FORMAT_RAW = "raw"
FORMAT_JPEG = "jpeg"
FORMAT_PNG = "png"
IMAGE_FORMATS = (FORMAT_RAW, FORMAT_JPEG, FORMAT_PNG)

UNLABELED = -1
DTYPES = ("uint8", "uint16", "int16", "float32")
_ITEMSIZE = {"uint8": 1, "uint16": 2, "int16": 2, "float32": 4}


@dataclasses.dataclass(frozen=True)
class ImageRecord:
    """One example as stored: the encoded image plus everything needed to interpret it."""

    encoded: bytes
    format: str
    height: int
    width: int
    channels: int
    label: int
    label_text: str
    filename: str
    crop_box: tuple[int, int, int, int]  # [y, x, height, width] in the EXIF-oriented source
    sha256: str  # hex digest of the source file's bytes
    dtype: str = "uint8"  # sample type of the stored pixels
    geo_crs: str | None = None  # raster chips only (None: not a raster chip)
    geo_transform: tuple[float, ...] | None = None  # raster chips only: (c, a, b, f, d, e)
    segmentation: bytes | None = None  # --label_mode mask only: PNG of class ids, same size as the image

    def __post_init__(self) -> None:
        if self.format not in IMAGE_FORMATS:
            raise ValueError(f"image format must be one of {IMAGE_FORMATS}, got {self.format!r}")
        if self.dtype not in DTYPES:
            raise ValueError(f"image dtype must be one of {DTYPES}, got {self.dtype!r}")
        expected = self.height * self.width * self.channels * _ITEMSIZE[self.dtype]
        if self.format == FORMAT_RAW and len(self.encoded) != expected:
            raise ValueError(
                f"raw image has {len(self.encoded)} bytes, expected "
                f"{self.height}x{self.width}x{self.channels} {self.dtype}={expected}"
            )
        if (self.geo_crs is None) != (self.geo_transform is None) or (self.geo_transform is not None and len(self.geo_transform) != 6):
            raise ValueError(f"geo_crs and geo_transform (6 floats) go together, got {self.geo_crs!r}, {self.geo_transform!r}")
        if len(self.crop_box) != 4:
            raise ValueError(f"crop_box must be [y, x, height, width], got {self.crop_box!r}")


def _example_pb2() -> Any:
    # tf.train.Example's classes from protobuf alone: TensorFlow's own module imports all of
    # TensorFlow, which a writer worker (and tools that only read cropshard.json) never need.
    from cropshard.reader.example_proto import example_pb2

    return example_pb2()


def encode_example(record: ImageRecord) -> bytes:
    """Serialize `record` as a tf.train.Example."""
    pb = _example_pb2()
    example = pb.Example()
    feature = example.features.feature
    feature[IMAGE_ENCODED].bytes_list.value.append(record.encoded)
    feature[IMAGE_FORMAT].bytes_list.value.append(record.format.encode())
    feature[IMAGE_HEIGHT].int64_list.value.append(record.height)
    feature[IMAGE_WIDTH].int64_list.value.append(record.width)
    feature[IMAGE_CHANNELS].int64_list.value.append(record.channels)
    feature[LABEL].int64_list.value.append(record.label)
    feature[LABEL_TEXT].bytes_list.value.append(record.label_text.encode("utf-8"))
    feature[FILENAME].bytes_list.value.append(record.filename.encode("utf-8"))
    feature[CROP_BOX].int64_list.value.extend(record.crop_box)
    feature[SOURCE_SHA256].bytes_list.value.append(record.sha256.encode("ascii"))
    if record.dtype != "uint8":
        feature[IMAGE_DTYPE].bytes_list.value.append(record.dtype.encode())
    if record.geo_transform is not None:
        feature[GEO_CRS].bytes_list.value.append(record.geo_crs.encode("utf-8"))
        feature[GEO_TRANSFORM].bytes_list.value.append(struct.pack("<6d", *record.geo_transform))
    if record.segmentation is not None:
        feature[SEGMENTATION].bytes_list.value.append(record.segmentation)
    return example.SerializeToString(deterministic=True)


def decode_example(serialized: bytes) -> ImageRecord:
    """Parse a serialized tf.train.Example written by `encode_example` (no tf.data needed)."""
    example = _example_pb2().Example.FromString(serialized)
    feature = example.features.feature

    def one_bytes(key: str) -> bytes:
        return feature[key].bytes_list.value[0]

    def one_int(key: str) -> int:
        return int(feature[key].int64_list.value[0])

    missing = [key for key in FEATURE_KEYS if key not in feature]
    if missing:
        raise ValueError(f"not a cropshard example: missing features {missing}")
    return ImageRecord(
        encoded=one_bytes(IMAGE_ENCODED),
        format=one_bytes(IMAGE_FORMAT).decode(),
        height=one_int(IMAGE_HEIGHT),
        width=one_int(IMAGE_WIDTH),
        channels=one_int(IMAGE_CHANNELS),
        label=one_int(LABEL),
        label_text=one_bytes(LABEL_TEXT).decode("utf-8"),
        filename=one_bytes(FILENAME).decode("utf-8"),
        crop_box=tuple(int(v) for v in feature[CROP_BOX].int64_list.value),
        sha256=one_bytes(SOURCE_SHA256).decode("ascii"),
        dtype=one_bytes(IMAGE_DTYPE).decode() if IMAGE_DTYPE in feature else "uint8",
        geo_crs=one_bytes(GEO_CRS).decode("utf-8") if GEO_CRS in feature else None,
        geo_transform=struct.unpack("<6d", one_bytes(GEO_TRANSFORM)) if GEO_TRANSFORM in feature else None,
        segmentation=one_bytes(SEGMENTATION) if SEGMENTATION in feature else None,
    )


FEATURE_KEYS = (
    IMAGE_ENCODED,
    IMAGE_FORMAT,
    IMAGE_HEIGHT,
    IMAGE_WIDTH,
    IMAGE_CHANNELS,
    LABEL,
    LABEL_TEXT,
    FILENAME,
    CROP_BOX,
    SOURCE_SHA256,
)

# Feature kinds, in a TensorFlow-free form that cropshard.json records and the reader
# turns into tf.io feature specs: (dtype, shape) with shape None for a scalar.
FEATURE_TYPES: dict[str, tuple[str, tuple[int, ...] | None]] = {
    IMAGE_ENCODED: ("bytes", None),
    IMAGE_FORMAT: ("bytes", None),
    IMAGE_HEIGHT: ("int64", None),
    IMAGE_WIDTH: ("int64", None),
    IMAGE_CHANNELS: ("int64", None),
    LABEL: ("int64", None),
    LABEL_TEXT: ("bytes", None),
    FILENAME: ("bytes", None),
    CROP_BOX: ("int64", (4,)),
    SOURCE_SHA256: ("bytes", None),
}


# Optional features (raster chips), with the value a record without them parses to.
OPTIONAL_FEATURE_TYPES: dict[str, tuple[str, tuple[int, ...] | None, Any]] = {
    IMAGE_DTYPE: ("bytes", None, "uint8"),
    GEO_CRS: ("bytes", None, ""),
    GEO_TRANSFORM: ("bytes", None, ""),
    SEGMENTATION: ("bytes", None, ""),
}


def feature_spec() -> dict[str, Any]:
    """`tf.io.parse_example` spec for every cropshard feature (optional ones with their defaults)."""
    import tensorflow as tf

    dtypes = {"bytes": tf.string, "int64": tf.int64}
    spec = {key: tf.io.FixedLenFeature(shape or (), dtypes[dtype]) for key, (dtype, shape) in FEATURE_TYPES.items()}
    for key, (dtype, shape, default) in OPTIONAL_FEATURE_TYPES.items():
        spec[key] = tf.io.FixedLenFeature(shape or (), dtypes[dtype], default_value=default)
    return spec


def schema_description(raster: bool = False) -> dict[str, Any]:
    """The schema as recorded in cropshard.json (with the raster keys for raster datasets)."""
    features = {key: {"dtype": dtype, "shape": list(shape or [])} for key, (dtype, shape) in FEATURE_TYPES.items()}
    if not raster:
        return {"features": features, "raw_layout": "uint8 row-major HWC", "crop_box": "[y, x, height, width] in the EXIF-oriented source image"}
    features.update({key: {"dtype": dtype, "shape": list(shape or []), "optional": True} for key, (dtype, shape, _) in OPTIONAL_FEATURE_TYPES.items()})
    return {
        "features": features,
        "raw_layout": "row-major HWC, little-endian samples of image/dtype (default uint8)",
        "crop_box": "[y, x, height, width] in source pixels",
        "geo_transform": "6 little-endian float64: the chip's affine transform in GDAL order (x0, pixel width, row rotation, y0, column rotation, pixel height)",
    }
