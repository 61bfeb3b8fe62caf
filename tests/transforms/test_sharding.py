"""transforms/sharding.py: the shard plans (pure) and the part / assemble steps on files."""

from __future__ import annotations

import io
from pathlib import Path

import apache_beam as beam
import numpy as np
import pytest
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems
from apache_beam.io.tfrecordio import _TFRecordUtil
from apache_beam.testing.util import assert_that, equal_to
from cropshard.reader import integrity
from cropshard.reader.crc32c import crc32c
from cropshard.transforms.sharding import (
    FRAME_OVERHEAD,
    LOCATOR,
    AssembleShard,
    PartInfo,
    Segment,
    ShardSpec,
    WriteParts,
    WriteShardsWithoutGrouping,
    WriteStableShards,
    _PartFiles,
    copy_frames,
    cut_points,
    ordered_spans,
    plan_by_count,
    plan_by_size,
    plan_run_shards,
    route_part,
    shard_path,
    sort_key,
    stable_layout,
)

from tests.beam_local import local_test_pipeline


def part(name: str, records: int, size: int) -> PartInfo:
    return PartInfo(f"/tmp/parts/{name}", records, size)


def framed(records: list[bytes]) -> bytes:
    out = io.BytesIO()
    for record in records:
        _TFRecordUtil.write_record(out, record)
    return out.getvalue()


def read_all(path: Path) -> list[bytes]:
    with open(path, "rb") as handle:
        records = []
        while (record := _TFRecordUtil.read_record(handle)) is not None:
            records.append(record)
    return records


def test_size_plan_renames_big_parts_and_packs_the_rest() -> None:
    big, also_big = part("a", 10, 130), part("b", 8, 60)
    small = [part("c", 2, 30), part("d", 3, 40), part("e", 1, 20), part("f", 5, 45)]
    specs = plan_by_size([*small, big, also_big], target_bytes=100)
    groups = [sorted(s.part.path[-1] for s in spec.segments) for spec in specs]
    # >= half the target: alone (renamed); the rest first-fit-decreasing into <= 100 bytes.
    assert groups == [["a"], ["b"], ["d", "f"], ["c", "e"]]
    assert [(spec.index, spec.total) for spec in specs] == [(0, 4), (1, 4), (2, 4), (3, 4)]
    assert all(seg.whole for spec in specs for seg in spec.segments)


def test_size_plan_without_parts_is_one_empty_shard() -> None:
    assert plan_by_size([], 100) == [ShardSpec(0, 1, ())]


def test_count_plan_splits_record_ranges_evenly() -> None:
    parts = [part("b", 4, 1), part("a", 3, 1)]  # laid out in path order: a (3), then b (4)
    specs = plan_by_count(parts, 3)
    ranges = [[(s.part.path[-1], s.first, s.count) for s in spec.segments] for spec in specs]
    assert ranges == [[("a", 0, 2)], [("a", 2, 1), ("b", 0, 1)], [("b", 1, 3)]]
    assert [sum(s.count for s in spec.segments) for spec in specs] == [2, 2, 3]
    assert [spec.segments[0].whole for spec in specs] == [False, False, False]
    assert plan_by_count([part("a", 5, 1)], 1)[0].segments == (Segment(part("a", 5, 1), 0, 5),)


def test_count_plan_with_fewer_records_than_shards_leaves_empty_shards() -> None:
    specs = plan_by_count([part("a", 1, 1)], 3)
    assert [len(spec.segments) for spec in specs] == [0, 0, 1] and {spec.total for spec in specs} == {3}


def test_copy_frames_takes_a_record_range() -> None:
    records = [bytes([i]) * (i + 1) for i in range(6)]
    out = io.BytesIO()
    copy_frames(io.BytesIO(framed(records)), out, skip=2, count=3)
    assert out.getvalue() == framed(records[2:5])
    with pytest.raises(ValueError, match="part ended after 6 records, 7 expected"):
        copy_frames(io.BytesIO(framed(records)), io.BytesIO(), skip=4, count=3)


def test_shard_path_is_beams_default_template() -> None:
    assert shard_path("/o/train", ".tfrecord", 3, 12) == "/o/train-00003-of-00012.tfrecord"


def test_write_parts_roll_over_at_the_part_size(tmp_path: Path) -> None:
    fn = WriteParts(str(tmp_path / "parts"), CompressionTypes.UNCOMPRESSED, part_bytes=3 * (10 + FRAME_OVERHEAD))
    fn.setup()
    fn.start_bundle()
    records = [bytes([i]) * 10 for i in range(7)]
    emitted = [info for record in records for info in fn.process(record)]
    emitted += [wv.value for wv in fn.finish_bundle()]
    assert [(p.num_records, p.num_bytes) for p in emitted] == [(3, 78), (3, 78), (1, 26)]
    assert [r for p in emitted for r in read_all(Path(p.path))] == records
    fn.start_bundle()
    assert list(fn.finish_bundle()) == []  # an empty bundle writes no part


@pytest.mark.parametrize("compression", [CompressionTypes.UNCOMPRESSED, CompressionTypes.GZIP])
def test_assemble_renames_a_whole_part_and_copies_ranges(tmp_path: Path, compression: str) -> None:
    fn = WriteParts(str(tmp_path / "parts"), compression, part_bytes=10**9)
    fn.setup()
    parts = []
    for chunk in ([b"a", b"bb", b"ccc"], [b"dddd"]):
        fn.start_bundle()
        for record in chunk:
            list(fn.process(record))
        parts += [wv.value for wv in fn.finish_bundle()]
    first, second = sorted(parts, key=lambda p: p.num_records, reverse=True)
    assemble = AssembleShard(str(tmp_path / "train"), ".tfrecord", compression)
    copied = ShardSpec(0, 2, (Segment(first, 1, 2), Segment(second, 0, 1)))
    renamed = ShardSpec(1, 2, (Segment(first, 0, 3),))
    [copied_path] = assemble.process(copied)
    [renamed_path] = assemble.process(renamed)
    assert [renamed_path] == list(assemble.process(renamed))  # a retry after the rename is a no-op
    assert not Path(first.path).exists() and Path(second.path).exists()
    from apache_beam.io.filesystems import FileSystems

    def records(path: str) -> int:
        with FileSystems.open(path, compression_type=compression) as handle:
            count, error, _ = integrity.scan_records(handle)
        assert error is None
        return count

    assert (records(copied_path), records(renamed_path)) == (3, 3)
    assert Path(copied_path).name == "train-00000-of-00002.tfrecord"


@pytest.mark.parametrize("num_shards,target", [(4, 10**9), (0, 300)])
def test_write_without_grouping_end_to_end(tmp_path: Path, num_shards: int, target: int) -> None:
    records = [bytes([i % 256]) * 40 for i in range(50)]
    temp = tmp_path / "out" / "beam-temp-train-x"
    with local_test_pipeline() as p:
        files = p | beam.Create(records) | WriteShardsWithoutGrouping(
            str(tmp_path / "out" / "train"), ".tfrecord", str(temp), CompressionTypes.UNCOMPRESSED, num_shards, target
        )
        if num_shards:
            assert_that(files, equal_to([str(tmp_path / "out" / f"train-{i:05d}-of-00004.tfrecord") for i in range(4)]))
    names = sorted(path.name for path in (tmp_path / "out").iterdir())
    assert not temp.exists() and all(name.startswith("train-") for name in names)
    total = len(names)
    assert names == [f"train-{i:05d}-of-{total:05d}.tfrecord" for i in range(total)]
    got = [r for name in names for r in read_all(tmp_path / "out" / name)]
    assert sorted(got) == sorted(records)
    if num_shards:
        assert total == num_shards
        assert {len(read_all(tmp_path / "out" / name)) for name in names} <= {12, 13}
    else:
        # 56 bytes a record (2800 in all), shards <= 300 bytes apart from a part that rolled over.
        assert total >= 9 and all((tmp_path / "out" / name).stat().st_size <= 300 + 56 for name in names)


def test_transform_refuses_a_non_positive_part_size() -> None:
    with pytest.raises(ValueError, match="target_bytes must be positive"):
        WriteShardsWithoutGrouping("/o/t", ".tfrecord", "/o/tmp", CompressionTypes.UNCOMPRESSED, 2, 0)


# --- stable contents ----------------------------------------------------------------------------


def keys_of(*pairs: tuple[int, int]) -> bytes:
    return np.array([sort_key(crc, length) for crc, length in pairs], dtype="<u8").tobytes()


def shard_of(cuts: np.ndarray, key: int) -> int:
    return int(np.searchsorted(cuts, np.uint64(key), side="right"))


def test_cut_points_give_equal_counts_whatever_the_order_of_the_parts() -> None:
    rng = np.random.default_rng(0)
    pairs = [(int(c), 100) for c in rng.integers(0, 2**32, size=1000)]
    cuts = cut_points([keys_of(*pairs[:300]), keys_of(*pairs[300:])], num_shards=4, target_bytes=1)
    assert np.array_equal(cuts, cut_points([keys_of(*pairs[::-1])], num_shards=4, target_bytes=1))
    counts = np.bincount([shard_of(cuts, sort_key(*pair)) for pair in pairs], minlength=4)
    assert counts.tolist() == [250, 250, 250, 250]


def test_cut_points_by_size_keep_every_shard_under_the_target_plus_one_record() -> None:
    rng = np.random.default_rng(1)
    pairs = [(int(c), int(n)) for c, n in zip(rng.integers(0, 2**32, size=500), rng.integers(10, 400, size=500), strict=True)]
    target = 10_000
    cuts = cut_points([keys_of(*pairs)], num_shards=0, target_bytes=target)
    total = sum(n + FRAME_OVERHEAD for _, n in pairs)
    assert len(cuts) + 1 == -(-total // target)
    sizes = np.zeros(len(cuts) + 1, dtype=int)
    for crc, length in pairs:
        sizes[shard_of(cuts, sort_key(crc, length))] += length + FRAME_OVERHEAD
    assert sizes.sum() == total and sizes.max() <= target + 416 and sizes.min() >= total / len(sizes) - 416


def test_cut_points_never_split_equal_keys_and_pad_empty_shards() -> None:
    same = [(7, 50)] * 5
    cuts = cut_points([keys_of(*same, (9, 50))], num_shards=3, target_bytes=1)
    assert len({shard_of(cuts, sort_key(7, 50)) for _ in same}) == 1
    # Fewer records than shards, or none: the last shards are empty, never missing.
    assert len(cut_points([keys_of((1, 1))], num_shards=3, target_bytes=1)) == 2
    assert len(cut_points([], num_shards=3, target_bytes=1)) == 2
    assert len(cut_points([], num_shards=0, target_bytes=100)) == 0  # one empty shard


def test_route_part_sends_every_record_to_exactly_one_shard() -> None:
    located = np.array([(sort_key(c, 10), i * 26) for i, c in enumerate([5, 1, 9, 3, 7])], dtype=LOCATOR)
    cuts = np.array([sort_key(4, 10), sort_key(8, 10)], dtype="<u8")
    routed = dict(route_part(PartInfo("/p", 5, 130, located.tobytes()), cuts))
    assert {shard: sorted(np.frombuffer(packed, dtype=LOCATOR)["key"] >> np.uint64(32)) for shard, (_, packed) in routed.items()} == {
        0: [1, 3], 1: [5, 7], 2: [9]
    }


def test_equal_keys_are_ordered_by_their_bytes(tmp_path: Path) -> None:
    records = [b"zz", b"aa", b"mm"]
    part_path = tmp_path / "part"
    part_path.write_bytes(framed(records))
    offsets = [0, 18, 36]  # 2-byte records, 16 bytes of framing each
    # The same key for all three (as for a CRC collision): the order must come from the bytes.
    located = np.array([(sort_key(1, 2), offset) for offset in offsets], dtype=LOCATOR)
    parts = _PartFiles()
    spans = list(ordered_spans([(str(part_path), located[::-1].tobytes())], parts))
    assert spans == [(str(part_path), offset, 18) for offset in (18, 36, 0)]
    target = tmp_path / "shard"
    with open(target, "wb", buffering=0) as handle:
        for span in spans:
            parts.copy(*span, handle.fileno())
    parts.close()
    assert read_all(target) == [b"aa", b"mm", b"zz"]


def test_a_part_shorter_than_its_locators_is_an_error(tmp_path: Path) -> None:
    part_path = tmp_path / "part"
    part_path.write_bytes(framed([b"abc"])[:-2])
    parts = _PartFiles()
    with pytest.raises(ValueError, match="ends inside the record at byte offset 0"):
        parts.read(str(part_path), 0, 19)
    with open(tmp_path / "shard", "wb", buffering=0) as handle, pytest.raises(ValueError, match="ends inside the record"):
        parts.copy(str(part_path), 0, 19, handle.fileno())
    parts.close()


def build_stable(tmp_path: Path, name: str, records: list[bytes], num_shards: int, target: int, compression: str) -> dict[str, bytes]:
    out = tmp_path / name
    with local_test_pipeline() as p:
        _ = p | beam.Create(records, reshuffle=True) | WriteStableShards(
            str(out / "train"), ".tfrecord", str(out / "beam-temp-train-x"), compression, num_shards, target
        )
    return {path.name: path.read_bytes() for path in sorted(out.iterdir())}


@pytest.mark.parametrize("num_shards,target,compression", [(3, 10**9, CompressionTypes.UNCOMPRESSED), (0, 2000, CompressionTypes.GZIP)])
def test_stable_shards_are_identical_whatever_the_input_order(tmp_path: Path, num_shards: int, target: int, compression: str) -> None:
    rng = np.random.default_rng(2)
    records = [rng.bytes(int(n)) for n in rng.integers(20, 120, size=200)] + [b"duplicate"] * 3
    first = build_stable(tmp_path, "a", records, num_shards, target, compression)
    second = build_stable(tmp_path, "b", records[::-1], num_shards, target, compression)
    assert first == second and not any(name.startswith("beam-temp") for name in first)
    total = len(first)
    assert list(first) == [f"train-{i:05d}-of-{total:05d}.tfrecord" for i in range(total)]
    if num_shards:
        assert total == 3
    got = []
    for name in first:
        with FileSystems.open(str(tmp_path / "a" / name), compression_type=compression) as handle:
            shard = []
            while (record := _TFRecordUtil.read_record(handle)) is not None:
                shard.append(record)
        keys = [sort_key(crc32c(r), len(r)) for r in shard]
        assert keys == sorted(keys)  # key order inside each shard, shards in key order
        got.extend(shard)
    assert sorted(got) == sorted(records)
    assert [sort_key(crc32c(r), len(r)) for r in got] == sorted(sort_key(crc32c(r), len(r)) for r in records)


def test_parts_read_by_offset_must_be_uncompressed() -> None:
    with pytest.raises(ValueError, match="must be uncompressed"):
        WriteParts("/tmp/x", CompressionTypes.GZIP, 100, locate=True)


# --- stable contents of raster runs -------------------------------------------------------------


def run_part(path: str, run: str, positions: list[int], length: int) -> PartInfo:
    """A run part holding records of `length` bytes at `positions`, framed back to back."""
    size = length + FRAME_OVERHEAD
    located = np.array([(sort_key(pos, length), i * size) for i, pos in enumerate(positions)], dtype=LOCATOR)
    return PartInfo(path, len(positions), size * len(positions), located.tobytes(), run)


def test_run_shards_are_each_run_in_position_order_cut_at_the_target() -> None:
    size = 10 + FRAME_OVERHEAD
    parts = [
        run_part("/b1", "b", [0, 2, 4], 10),  # run b split over two bundles: copied
        run_part("/b2", "b", [1, 3], 10),
        run_part("/a1", "a", [0, 1, 2], 10),  # run a in order, rolled at 3 records: renamed
        run_part("/a2", "a", [3], 10),
    ]
    shards = plan_run_shards(parts, part_bytes=3 * size)
    assert [(s.run, s.piece, s.part) for s in shards] == [("a", 0, "/a1"), ("a", 1, "/a2"), ("b", 0, None), ("b", 1, None)]
    assert shards[2].spans == (("/b1", 0, size), ("/b2", 0, size), ("/b1", size, size))
    assert shards[3].spans == (("/b2", size, size), ("/b1", 2 * size, size))
    # A part in position order but holding more than one piece is not renamed.
    assert [s.part for s in plan_run_shards([run_part("/c", "c", [0, 1, 2, 3], 10)], part_bytes=2 * size)] == [None, None]
    assert plan_run_shards([], part_bytes=size) == []


def test_short_run_pieces_are_packed_into_target_size_shards_in_run_order() -> None:
    # Raster tasks of small chips: each run far below the target had been a shard of its own.
    size = 10 + FRAME_OVERHEAD
    small = [run_part(f"/{run}", run, [0, 1, 2], 10) for run in ("c", "a", "b", "d")]  # 3 records each
    shards = plan_run_shards(small, part_bytes=20 * size)
    assert len(shards) == 1 and shards[0].part is None and (shards[0].run, shards[0].piece) == ("a", 0)
    assert shards[0].spans == tuple((f"/{run}", i * size, size) for run in "abcd" for i in range(3))
    packed = plan_run_shards(small, part_bytes=13 * size)  # 12 records: under the target, one shard
    assert [len(shard.spans) for shard in packed] == [12]
    packed = plan_run_shards([*small, run_part("/e", "e", [0, 1, 2], 10)], part_bytes=13 * size)
    assert [len(shard.spans) for shard in packed] == [13, 2] and packed[1].spans[0] == ("/e", size, size)
    # One short run alone is still its part, renamed; a long run keeps its renamed pieces and
    # packs only its short end, here with the next run.
    assert [s.part for s in plan_run_shards(small[:1], part_bytes=20 * size)] == ["/c"]
    long = [run_part("/l1", "l", list(range(20)), 10), run_part("/l2", "l", [20], 10)]
    mixed = plan_run_shards([*long, run_part("/m", "m", [0, 1], 10)], part_bytes=20 * size)
    assert [(s.run, s.piece, s.part) for s in mixed] == [("l", 0, "/l1"), ("l", 1, None)]
    assert mixed[1].spans == (("/l2", 0, size), ("/m", 0, size), ("/m", size, size))


def test_stable_layout_puts_run_shards_first_and_photo_shards_only_when_needed() -> None:
    size = 10 + FRAME_OVERHEAD
    runs = [run_part("/r", "r", [0, 1, 2], 10)]
    photos = [PartInfo("/p", 2, 2 * size, keys_of((5, 10), (9, 10)), "")]
    both = stable_layout(runs + photos, num_shards=0, target_bytes=2 * size)
    assert [(s.run, s.part) for s in both.runs] == [("r", None), ("r", None)]  # 3 records cut at 2: not the part as it is
    assert (both.photo_shards, len(both.cuts), both.total) == (1, 0, 3)
    only_runs = stable_layout(runs, num_shards=0, target_bytes=10 * size)
    assert (only_runs.photo_shards, only_runs.total, only_runs.runs[0].part) == (0, 1, "/r")
    assert (stable_layout([], 0, 100).photo_shards, stable_layout(photos, 2, 1).total) == (1, 2)  # an empty split still has a file
    with pytest.raises(ValueError, match="cannot make exactly 2 shards"):
        stable_layout(runs, num_shards=2, target_bytes=100)


def run_records(rng: np.random.Generator) -> list[tuple[str, int, bytes]]:
    return [(run, position, rng.bytes(int(rng.integers(20, 200)))) for run in ("r1", "r2", "r3") for position in range(0, 40, 2)]


def build_runs(tmp_path: Path, name: str, elements: list, compression: str = CompressionTypes.UNCOMPRESSED) -> dict[str, bytes]:
    out = tmp_path / name
    with local_test_pipeline() as p:
        _ = p | beam.Create(elements, reshuffle=False) | WriteStableShards(
            str(out / "train"), ".tfrecord", str(out / "beam-temp-train-x"), compression, 0, 2000
        )
    return {path.name: path.read_bytes() for path in sorted(out.iterdir())}


def read_shards(directory: Path, compression: str = CompressionTypes.UNCOMPRESSED) -> list[list[bytes]]:
    """The records of every shard in `directory`, shards in name order (the names checked)."""
    names = sorted(path.name for path in directory.iterdir() if "-of-" in path.name and not path.name.endswith(".idx"))
    assert names == [f"train-{i:05d}-of-{len(names):05d}.tfrecord" for i in range(len(names))]
    shards = []
    for name in names:
        with FileSystems.open(str(directory / name), compression_type=compression) as handle:
            shard = []
            while (record := _TFRecordUtil.read_record(handle)) is not None:
                shard.append(record)
        shards.append(shard)
    return shards


def expected_run_shards(records: list[tuple[str, int, bytes]], part_bytes: int) -> list[list[bytes]]:
    """Each run's records in position order, cut after the record that brings a shard to part_bytes;
    a run's last piece under a quarter of part_bytes is packed, in run order, with the next runs'
    short last pieces into shards cut the same way."""
    shards: list[list[bytes]] = []
    packed, packed_size = [], 0
    for run in sorted({run for run, _, _ in records}):
        piece, size = [], 0
        for _, _, record in sorted(r for r in records if r[0] == run):
            piece.append(record)
            size += len(record) + FRAME_OVERHEAD
            if size >= part_bytes:
                shards.append(piece)
                piece, size = [], 0
        if piece and size >= part_bytes // 4:
            shards.append(piece)
            continue
        for record in piece:
            packed.append(record)
            packed_size += len(record) + FRAME_OVERHEAD
            if packed_size >= part_bytes:
                shards.append(packed)
                packed, packed_size = [], 0
    if packed:
        shards.append(packed)
    return shards


def runs_in(shard: list[bytes], records: list[tuple[str, int, bytes]]) -> set[str]:
    run_of = {record: run for run, _, record in records}
    return {run_of[record] for record in shard}


def test_run_shards_are_renamed_parts_and_the_same_when_runs_arrive_interleaved(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from cropshard.transforms import sharding

    records = run_records(np.random.default_rng(7))  # two runs end short: packed together
    photos = [b"photo-%d" % i for i in range(7)]
    copies: list[int] = []
    real_copy = sharding.copy_spans
    monkeypatch.setattr(sharding, "copy_spans", lambda spans, *args: copies.append(1) or real_copy(spans, *args))
    in_order = build_runs(tmp_path, "a", records + photos)
    expected = expected_run_shards(records, 2000)
    packed = sum(len(runs_in(shard, records)) > 1 for shard in expected)
    assert packed >= 1  # short run ends of several runs share a shard (copied)
    assert len(copies) == 1 + packed  # and the photos' shard (key order); every other run shard was a renamed part
    interleaved = records[20:40] + [r for pair in zip(records[:20], records[40:], strict=True) for r in pair]
    assert build_runs(tmp_path, "b", photos[::-1] + interleaved) == in_order
    assert len(copies) > 2  # runs r1 and r3 arrived interleaved: their shards were copied, to the same bytes
    shards = read_shards(tmp_path / "a")
    assert shards[:-1] == expected and len(shards[:-1]) > 3
    assert sorted(shards[-1]) == sorted(photos)


def test_run_shards_without_photos_and_gzip(tmp_path: Path) -> None:
    records = run_records(np.random.default_rng(6))
    for name, arrival in (("g", records[::-1]), ("h", records)):  # spans copied; whole parts copied compressed
        build_runs(tmp_path, name, arrival, CompressionTypes.GZIP)
        assert read_shards(tmp_path / name, CompressionTypes.GZIP) == expected_run_shards(records, 2000)
        assert not any(path.name.startswith("beam-temp") for path in (tmp_path / name).iterdir())
