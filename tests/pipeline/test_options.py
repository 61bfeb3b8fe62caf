"""build_config: how the command line's cropshard options become a BuildConfig, and every refusal."""

from __future__ import annotations

import json
import os

import pytest
from apache_beam.options.pipeline_options import PipelineOptions
from cropshard.pipeline.options import build_config, normalize_input, parse_inputs, parse_splits


def config(*args: str):
    return build_config(PipelineOptions(list(args)))


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--input=/in/**"], "--output is required"),
        (["--output=/out"], "exactly one of --input or --manifest"),
        (["--output=/out", "--input=/in/**", "--manifest=/m.csv"], "exactly one of --input or --manifest"),
        (["--output=/out", "--input=/in/**", "--crop=manifest"], "--crop manifest needs --manifest"),
        # Blank values (`--manifest "$M"` with M unset) read as "not given": the messages named the wrong slip.
        (["--output=/out", "--manifest="], "--manifest '' is blank"),
        # Beam's file operations glob these: 'out [v2]' deleted files of a dataset in 'out 2', 'm[1].csv' took m1.csv's labels.
        (["--output=/data/out [v2]", "--input=/in/**", "--size=32"], r"--output '/data/out \[v2\]' holds \[ \], which Beam's file operations read"),
        (["--output=/data/res*", "--input=/in/**", "--size=32"], r"--output '/data/res\*' holds \*"),
        (["--output=/out", "--manifest=/m[1].csv", "--size=32"], r"--manifest '/m\[1\].csv' holds \[ \]"),
        (["--output=/out", "--input=/in/**", "--size="], "--size '' is blank"),
        (["--output=/out", "--input=/in/**", "--size=32", "--stride= "], "--stride ' ' is blank"),
        (["--output=/out", "--input=/in/**", "--crop=none", "--size=32"], "--crop none keeps whole images"),
        (["--output=/out", "--input=/in/**", "--size=32", "--jpeg_quality=0"], "--jpeg_quality must be 1..100, got 0"),
        (["--output=/out", "--input=/in/**", "--size=32", "--jpeg_quality=101"], "--jpeg_quality must be 1..100, got 101"),
        (["--output=/out", "--input=/in/**", "--size=32", "--split=train=0.5,rejected=0.5"], r"split names \['rejected'\] are reserved"),
        (["--output=/out", "--input=/in/**", "--size=32", "--split=train,images_written"], r"split names \['images_written'\] are reserved"),
        (["--output=/out", "--input=/in/**", "--size=32", "--num_shards=-1"], "--num_shards must be >= 0"),
        (["--output=/out", "--input=/in/**", "--size=32", "--target_shard_mb=0"], "--target_shard_mb and --max_pixels positive"),
        (["--output=/out", "--input=/in/**", "--size=32", "--max_pixels=0"], "--target_shard_mb and --max_pixels positive"),
        (["--output=/out", "--input=/in/**", "--size=32", "--encoding=original"], "--encoding original stores source files and needs --crop none"),
        (["--output=/out", "--input=/in/**", "--crop=center"], "--crop center needs --size HxW"),
        # Bounds: inf failed the job with OverflowError, NaN and 1e-9 gave messages naming no option, 10^8 shards ran for hours.
        (["--output=/out", "--input=/in/**", "--size=32", "--target_shard_mb=nan"], "--target_shard_mb and --max_pixels positive"),
        (["--output=/out", "--input=/in/**", "--size=32", "--target_shard_mb=inf"], r"--target_shard_mb inf is outside 0.001..1048576"),
        (["--output=/out", "--input=/in/**", "--size=32", "--target_shard_mb=1e-9"], r"--target_shard_mb 1e-09 is outside"),
        (["--output=/out", "--input=/in/**", "--size=32", "--num_shards=100000000"], "--num_shards 100000000 is over 100000 shards per split"),
        # --split_by spreads chips over several splits: with the default train=1.0 it did nothing, recorded as done.
        (["--output=/out", "--input=/in/**", "--size=32", "--split_by=block:100"], r"--split_by has no effect with one split \(--split train=1\)"),
        (["--output=/out", "--input=/in/**", "--size=32", "--split_by=block:100", "--split=train=1.0"], "--split_by has no effect with one split"),
        (["--output=/out", "--input=/in/**", "--size=32", "--split_crs=EPSG:32632", "--split=train=0.5,test=0.5"],
         r"--split_crs has no effect without --split_by block:N"),
        (["--output=/out", "--input=/in/**", "--size=32", "--split_by=block:100", "--split=train=0.5,test=0.5", "--split_crs=UTM32"],
         r"--split_crs 'UTM32' is not a CRS PROJ knows"),
        (["--output=/out", "--input=/in/**", "--size=32", "--split_by=block:1e400", "--split=train=0.5,test=0.5"], "with a finite N > 0"),
        # A blank text option (an unset shell variable) read as not given: the build ran on the default without a word.
        *[([f"--{flag}=", "--output=/out", "--input=/in/**", "--size=32"], rf"--{flag} '' is blank \(an unset shell variable\?\)")
          for flag in ("bands", "split_by", "split_crs", "label_raster", "label_names", "box", "split")],
        # Sizes no image can take: every input was rejected too_many_pixels, after --overwrite removed the old dataset.
        (["--output=/out", "--input=/in/**", "--size=20000x20000"], r"--size 20000x20000 is 400000000 pixels, over --max_pixels 89478485"),
        (["--output=/out", "--input=/in/**", "--size=64", "--max_pixels=1000"], r"--size 64x64 is 4096 pixels, over --max_pixels 1000"),
        (["--output= ", "--input=/in/**", "--size=32"], r"--output ' ' is blank \(an unset shell variable\?\): give the dataset's directory$"),
    ],
)
def test_build_config_refuses_bad_combinations(args: list[str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        config(*args)


def test_the_first_problem_is_the_one_reported() -> None:
    # No --output and a bad --jpeg_quality: --output is checked first.
    with pytest.raises(ValueError, match="--output is required"):
        config("--input=/in/**", "--jpeg_quality=0")
    # A bad crop and a bad quality: the crop is checked first.
    with pytest.raises(ValueError, match="--crop none keeps whole images"):
        config("--output=/out", "--input=/in/**", "--crop=none", "--size=32", "--jpeg_quality=0")


def test_build_config_normalizes_paths(tmp_path, monkeypatch) -> None:
    (tmp_path / "photos").mkdir()
    monkeypatch.chdir(tmp_path)
    built = config("--output=out/", "--input=photos,gs://b/x/", "--input=a/*.jpg", "--size=32")
    assert built.inputs == (f"{tmp_path}/photos/**", "gs://b/x/**", f"{tmp_path}/a/*.jpg")
    assert built.output == f"{tmp_path}/out"
    assert built.manifest is None
    assert config("--output=gs://bucket/ds/", "--manifest=m.csv", "--size=32").output == "gs://bucket/ds"
    assert config("--output=gs://bucket/ds/", "--manifest=m.csv", "--size=32").manifest == f"{tmp_path}/m.csv"


def test_build_config_carries_every_option() -> None:
    built = config(
        "--output=/out", "--input=/in/**", "--crop=random", "--size=96x64", "--crops_per_image=3", "--small=pad",
        "--resize=200", "--channels=1", "--encoding=jpeg", "--jpeg_quality=80", "--split=train=0.75,test=0.25",
        "--label_from=none", "--target_shard_mb=64", "--compression=gzip", "--max_pixels=100000",
        "--seed=7", "--dedup", "--overwrite", "--progress=log",
    )
    crop = built.example.crop
    assert (crop.strategy, crop.size, crop.crops_per_image, crop.small, crop.resize, crop.seed) == ("random", (96, 64), 3, "pad", 200, 7)
    example = built.example
    assert (example.channels, example.encoding, example.jpeg_quality, example.max_pixels) == (1, "jpeg", 80, 100000)
    assert example.split_fractions == (("train", 0.75), ("test", 0.25))
    assert built.split_names == ("train", "test") and not built.splits_from_input
    assert (built.labels, built.num_shards, built.target_shard_mb, built.compression) == ("none", 0, 64.0, "gzip")
    assert (built.dedup, built.overwrite, built.progress) == (True, True, "log")
    assert config("--output=/out", "--input=/in/**", "--size=32", "--num_shards=5").num_shards == 5


def test_defaults() -> None:
    built = config("--output=/out", "--input=/in/**", "--size=32")
    assert (built.example.crop.strategy, built.example.encoding, built.example.channels) == ("center", "raw", 3)
    assert built.split_names == ("train",) and built.example.split_fractions == (("train", 1.0),)
    assert (built.labels, built.num_shards, built.target_shard_mb, built.compression) == ("folder", 0, 128.0, "none")
    assert (built.dedup, built.overwrite, built.progress) == (False, False, "auto")


def test_parse_splits() -> None:
    assert parse_splits("train=0.8,validation=0.2") == ((("train", 0.8), ("validation", 0.2)), ("train", "validation"))
    assert parse_splits("train,validation,test") == (None, ("train", "validation", "test"))
    assert config("--output=/out", "--input=/in/**", "--size=32", "--split=train,test").splits_from_input


def test_parse_inputs_and_normalize_input(tmp_path) -> None:
    assert parse_inputs(None) == ()
    assert parse_inputs([" /a/*.jpg , ", "/b/**"]) == ("/a/*.jpg", "/b/**")
    assert normalize_input(str(tmp_path)) == f"{tmp_path}/**"  # an existing local directory
    assert normalize_input(f"{tmp_path}/missing") == f"{tmp_path}/missing"  # a file path stays as given
    assert normalize_input("gs://bucket/images") == "gs://bucket/images"  # gs:// has no directories
    assert normalize_input("gs://bucket/images/") == "gs://bucket/images/**"
    assert normalize_input("/x/[ab]*.png") == "/x/[ab]*.png"
    assert os.path.isabs(parse_inputs(["rel/*.jpg"])[0])
    for blank in ("", "  "):  # `--input "$EXTRA"` with EXTRA unset: the other inputs alone were built
        with pytest.raises(ValueError, match=f"--input {blank!r} is blank"):
            parse_inputs(["/a/*.jpg", blank])


BASE = ("--output=/out", "--input=/in/**", "--size=32")


@pytest.mark.parametrize(
    ("inert", "needs", "with_what_it_needs"),
    [
        (["--stride=4x4"], "--stride 4x4 has no effect without --crop grid", ["--crop=grid"]),
        (["--crops_per_image=3"], "--crops_per_image 3 has no effect without --crop random", ["--crop=random"]),
        (["--seed=7"], r"--seed 7 has no effect without --crop random \(it seeds the crop positions\)", ["--crop=random"]),
        (["--box=0,0,8,8"], "--box 0,0,8,8 has no effect without --crop box", ["--crop=box"]),
        (["--jpeg_quality=50"], r"--jpeg_quality 50 has no effect without --encoding jpeg \(or original", ["--encoding=jpeg"]),
        (["--num_shards=4", "--target_shard_mb=16"], r"--target_shard_mb 16.0 has no effect without shards by size", ["--num_shards=0"]),
        (["--dtype=uint16", "--to_uint8=minmax"], r"--to_uint8 minmax has no effect without --dtype uint8", ["--dtype=uint8"]),
        (["--label_mode=mask"], r"--label_mode mask has no effect without class maps \(--label_raster", ["--label_raster={dir}/l.tif"]),
        (["--min_label_fraction=0.5"], "--min_label_fraction 0.5 has no effect without class maps with --label_mode majority",
         ["--label_raster={dir}/l.tif"]),
    ],
)
def test_an_option_that_nothing_reads_is_refused(inert: list[str], needs: str, with_what_it_needs: list[str]) -> None:
    # Each would have built a dataset other than the one asked for, without a word.
    with pytest.raises(ValueError, match=f"^{needs}.*: drop it, or add what it needs$"):
        config(*BASE, *inert)
    config(*BASE, *inert, *with_what_it_needs)  # the same option where it takes effect


def test_options_at_their_defaults_are_never_inert() -> None:
    # Given explicitly, a default value builds what leaving it out builds.
    config(*BASE, "--crops_per_image=1", "--seed=0", "--jpeg_quality=90", "--to_uint8=bits", "--label_mode=majority",
           "--min_label_fraction=0", "--label_from=folder", "--num_shards=3", "--target_shard_mb=128")


def test_a_manifest_labels_its_rows_so_label_from_none_is_refused(tmp_path) -> None:
    manifest = tmp_path / "m.csv"
    manifest.write_text("path,label\na.jpg,cat\n")
    with pytest.raises(ValueError, match=r"--label_from none has no effect without --input \(a manifest's label column labels its rows\)"):
        config("--output=/out", f"--manifest={manifest}", "--size=32", "--label_from=none")
    assert config("--output=/out", f"--manifest={manifest}", "--size=32").manifest == str(manifest)


def test_an_output_the_inputs_would_list_is_refused(tmp_path) -> None:
    # Listing runs while the workers write below --output: `--input photos --output photos/ds`
    # listed the build's own temporary parts as images.
    photos = tmp_path / "photos"
    photos.mkdir()
    for inputs, output in (([f"--input={photos}"], f"{photos}/ds"), (["--input=/in/**"], "/in/ds"),
                           (["--input=/other/*.jpg", "--input=/in/ds/*"], "/in/ds"), (["--input=gs://b/in/**"], "gs://b/in/ds")):
        with pytest.raises(ValueError, match=f"^--output {output} is inside --input .*: the build would list the files it writes as inputs"):
            config(f"--output={output}", *inputs, "--size=32")
    # Patterns that match none of the files a build writes, and outputs beside the inputs.
    for inputs, output in ((["--input=/in/**/*.jpg"], "/in/ds"), (["--input=/in/*/*.png"], "/in/ds"), ([f"--input={photos}"], f"{photos}-ds"),
                           (["--input=gs://b/in/**"], "gs://b/ds")):
        assert config(f"--output={output}", *inputs, "--size=32").output == output


def test_small_is_refused_where_no_crop_can_be_small() -> None:
    # crop.plan_boxes: --crop none cuts the whole image; boxes only pad (upscale never reaches them).
    for args in (["--crop=none", "--small=pad"], ["--crop=none", "--small=upscale"], ["--crop=box", "--box=0,0,8,8", "--small=upscale"],
                 ["--crop=box", "--box=0,0,8,8", "--size=16", "--small=upscale"]):
        with pytest.raises(ValueError, match=r"^--small \w+ has no effect without --crop center, random or grid .*: drop it"):
            config("--output=/out", "--input=/in/**", *args)
    assert config("--output=/out", "--input=/in/**", "--crop=box", "--box=0,0,8,8", "--small=pad").example.crop.small == "pad"
    for crop in ("center", "random", "grid"):
        assert config("--output=/out", "--input=/in/**", f"--crop={crop}", "--size=8", "--small=upscale").example.crop.small == "upscale"


def test_resize_is_refused_with_boxes_in_source_pixels(tmp_path) -> None:
    # Boxes were cut from the resized image: 4.7x the annotated area, or rejected as outside it.
    manifest = tmp_path / "m.csv"
    manifest.write_text('path,label,box\na.jpg,cat,"0,0,8,8"\n')
    for args in (["--input=/in/**", "--crop=box", "--box=0,0,8,8"], [f"--manifest={manifest}", "--crop=manifest", "--size=8"]):
        with pytest.raises(ValueError, match=r"^--resize cannot be combined with --crop (box|manifest): the boxes are in source pixels .*--size resizes each crop"):
            config("--output=/out", *args, "--resize=256")
    assert config("--output=/out", "--input=/in/**", "--crop=center", "--size=8", "--resize=256").example.crop.resize == 256


def test_size_errors_name_the_option() -> None:
    with pytest.raises(ValueError, match=r"^--stride: size must be positive, got '0'$"):
        config("--output=/out", "--input=/in/**", "--crop=grid", "--size=8", "--stride=0")
    with pytest.raises(ValueError, match=r"^--size: size must look like HxW or N, got 'big'$"):
        config("--output=/out", "--input=/in/**", "--size=big")


@pytest.mark.parametrize("kind", ["csv", "jsonl"])
def test_a_manifest_column_the_build_would_not_read_is_refused(tmp_path, kind: str) -> None:
    rows = [("a.jpg", "cat", "train", "0,0,8,8"), ("b.jpg", "dog", "test", "0,0,8,8"), ("c.jpg", "dog", "test", "0,0,8,8")]
    manifest = tmp_path / f"m.{kind}"
    if kind == "csv":
        manifest.write_text("path,label,split,box\n" + "".join(f'{p},{label},{split},"{box}"\n' for p, label, split, box in rows))
    else:
        manifest.write_text("".join(json.dumps({"path": p, "label": label, "split": split, "box": box}) + "\n" for p, label, split, box in rows))
    base = ("--output=/out", f"--manifest={manifest}")
    # Without --split names the held-out rows went into train; with fractions, hash splits replaced them.
    for split in ([], ["--split=train=0.5,test=0.5"]):
        with pytest.raises(ValueError, match=r"has a split column \(train,test\), which --split .* ignores: pass --split train,test to use it, or drop"):
            config(*base, "--crop=manifest", *split)
    # Without --crop manifest the boxes were dropped for centre crops.
    with pytest.raises(ValueError, match=r"has a box column, which --crop center ignores: --crop manifest uses it"):
        config(*base, "--size=32", "--split=train,test")
    built = config(*base, "--crop=manifest", "--split=train,test")
    assert built.splits_from_input and built.example.crop.strategy == "manifest"


@pytest.mark.parametrize("kind", ["csv", "jsonl"])
def test_a_manifest_column_the_options_need_but_no_row_fills_is_refused(tmp_path, kind: str) -> None:
    """--split names and --crop manifest read each row's split and box: a manifest without the
    column (or with it empty) had every row rejected in the job; now a usage error before it."""
    manifest = tmp_path / f"m.{kind}"
    if kind == "csv":
        manifest.write_text("path,label,split,box\na.jpg,cat,,\nb.jpg,dog,,\n")
    else:
        manifest.write_text("".join(json.dumps({"path": p, "label": "cat"}) + "\n" for p in ("a.jpg", "b.jpg")))
    base = ("--output=/out", f"--manifest={manifest}")
    with pytest.raises(ValueError, match=r"^--split train,test takes each row's split from the manifest, but .*m\.\w+ has no split column \(or none filled\): add one, or give fractions"):
        config(*base, "--size=32", "--split=train,test")
    with pytest.raises(ValueError, match=r"^--crop manifest cuts each row's box, but the manifest .* has no box column \(or none filled\): add one"):
        config(*base, "--crop=manifest")
    assert config(*base, "--size=32").manifest == str(manifest)  # hash splits and centre crops need neither


def test_manifest_columns_without_values_are_not_refused(tmp_path) -> None:
    manifest = tmp_path / "m.csv"
    manifest.write_text("path,label,split,box\na.jpg,cat,,\n")  # declared, never filled: nothing to ignore
    assert config("--output=/out", f"--manifest={manifest}", "--size=32").manifest == str(manifest)


@pytest.mark.parametrize(("pattern", "message"), [
    ("{dir}/{basename}.tif", r"--label_raster '\{dir\}/\{basename\}.tif': unknown placeholder \{basename\} \(use \{dir\} \{stem\} \{name\} \{ext\}\)"),
    ("{stem.tif", r"--label_raster '\{stem.tif': expected '\}' before end of string"),
    ("{}.tif", r"unknown placeholder \{\}"),
    ("{dir[0]}.tif", r"unknown placeholder \{dir\[0\]\}"),
])
def test_a_label_raster_pattern_it_cannot_fill_is_refused_naming_the_option(pattern: str, message: str) -> None:
    # Each was a KeyError / ValueError traceback naming no option.
    with pytest.raises(ValueError, match=message):
        config(*BASE, f"--label_raster={pattern}", "--label_names=/nowhere.csv")
    assert config(*BASE, "--crop=grid", "--label_raster={dir}/../labels/{stem}{ext}").example.raster.labels.pattern == "{dir}/../labels/{stem}{ext}"


def test_a_label_names_file_that_is_not_text_is_refused_naming_it(tmp_path) -> None:
    binary = tmp_path / "classes.csv"
    binary.write_bytes(b"1,forest\n\xff\xfe\x00water\n")
    with pytest.raises(ValueError, match=rf"^--label_names {binary}: not a UTF-8 text file \(byte 0xff at offset 9\)"):
        config(*BASE, "--label_raster={dir}/{stem}.tif", f"--label_names={binary}")
    with pytest.raises(ValueError, match=rf"^--label_names {tmp_path}/missing.csv cannot be read"):
        config(*BASE, "--label_raster={dir}/{stem}.tif", f"--label_names={tmp_path}/missing.csv")


def test_an_output_inside_the_inputs_through_a_symbolic_link_is_refused(tmp_path) -> None:
    # The build listed its own temp parts as inputs: `13/12` images, one rejected label_not_listed.
    photos = tmp_path / "photos"
    photos.mkdir()
    (tmp_path / "link").symlink_to(photos)
    for inputs, output in (([f"--input={tmp_path}/link/**"], f"{photos}/ds"), ([f"--input={photos}/**"], f"{tmp_path}/link/ds"),
                           ([f"--input={tmp_path}/link"], f"{photos}/ds")):
        with pytest.raises(ValueError, match=f"^--output {output} is inside --input .* \\(through symbolic links: .*\\): the build would list"):
            config(f"--output={output}", *inputs, "--size=32")
    assert config(f"--output={tmp_path}/ds", f"--input={tmp_path}/link/**", "--size=32").output == f"{tmp_path}/ds"


def test_an_input_naming_an_existing_bracketed_folder_is_refused(tmp_path) -> None:
    # `--input 'Photos [2024]/**'` built from `Photos 2` ([2024] is one of 2, 0, 4) and said reconciled;
    # the folder itself was "matched nothing".
    (tmp_path / "Photos [2024]" / "cat").mkdir(parents=True)
    (tmp_path / "Photos 2").mkdir()
    for given in ("Photos [2024]", "Photos [2024]/**", "Photos [2024]/cat/*.jpg"):
        with pytest.raises(ValueError, match=r"Photos \[2024\] exists, but \[ \] in a pattern match any one character"):
            parse_inputs([str(tmp_path / given)])
    assert parse_inputs([str(tmp_path / "Photos [0-9]/**")]) == (str(tmp_path / "Photos [0-9]/**"),)  # a class of characters, as globs mean


def test_a_manifest_naming_one_image_twice_is_refused_without_dedup(tmp_path) -> None:
    manifest = tmp_path / "m.csv"
    manifest.write_text("path,label,split\na.jpg,cat,train\na.jpg,cat,test\n")
    with pytest.raises(ValueError, match=r"lists 1 image again, e.g. 'a.jpg' in data rows 1 and 2 \(splits 'train' and 'test'\)"):
        config(f"--manifest={manifest}", f"--output={tmp_path / 'out'}", "--size=32", "--split=train,test")
    assert config(f"--manifest={manifest}", f"--output={tmp_path / 'out'}", "--size=32", "--split=train,test", "--dedup").dedup
