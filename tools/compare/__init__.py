"""`cropshard compare`: does storing cropped images hurt me? Measured on your own images.

Builds or reuses these variants of the same input:

    precrop-<enc>       pre-cropped (center crop of --size) for each of --encodings     read plainly
    full-<enc>          whole images (--crop none) for each of --full-encodings         random crops on the fly
    resized<S>-<enc>    whole images downscaled to shorter side S (--resize)             random crops on the fly

and measures for each: bytes on disk (per image and total), build time, reader images/s and
the reader's peak RSS. Results: a table on stdout, compare.json, a PNG chart, and a
recommendation whose every number comes from the measurements.

    plan       which variants, and the `cropshard build` arguments of each (pure)
    measure    the reader runs, each in a fresh child process; one VariantRow per variant
    recommend  the recommendation sentences from the rows (pure)
    chart      the PNG
    cli        arguments, the run, the printed table

Layering: this package imports the reader (and Beam-free helpers of transforms), never the
pipeline. Builds run in this process through a `Build` callable that the `cropshard` dispatcher
(pipeline/cli.py) passes to `main`, so build times, the builds' recorded command lines and their
errors are exactly those of `cropshard build`, without an interpreter start-up per variant.
`python -m cropshard.tools.compare` alone measures existing --dataset folders only; it is also
the reader child (`--measure-reader SPEC`).
"""
