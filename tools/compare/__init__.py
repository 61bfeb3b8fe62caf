"""`cropshard compare`: does storing cropped images hurt me? Measured on your own images.

Builds or reuses these variants of the same input:

    precrop-<enc>       pre-cropped (center crop of --size) for each of --encodings     read plainly
    full-<enc>          whole images (--crop none) for each of --full-encodings         random crops on the fly
    resized<S>-<enc>    whole images downscaled to shorter side S (--resize)             random crops on the fly

and measures for each: bytes on disk (per image and total), build time, reader images/s and
the reader's peak RSS; what it keeps for training, from its own records: the distinct training
windows per source image and their share of the full images' windows (augmentation), the share
of each source image's area and the resolution it keeps (context); and with --train, the held-out
accuracy (mean and spread over seeds), training images/s and accuracy per minute of the same small
classifier trained from scratch on each. Results: two tables on stdout, compare.json, a PNG chart,
and a recommendation whose every number comes from the measurements.

    plan       which variants, the `cropshard build` arguments of each, the training crop (pure)
    measure    the reader runs, each in a fresh child process; one VariantRow per variant
    coverage   training windows and context from stored-image geometry (pure)
    scan       the records' geometry, labels and source keys; source image sizes
    costs      coverage of every variant, and the --train plan with its checks
    train      the --train child process: the proxy model, its training and held-out scoring
    recommend  the recommendation sentences from the rows (pure)
    chart      the PNG
    workdir    which variant folders compare may build into: only those it built itself
    cli        arguments, the run, the printed tables

Layering: this package imports the reader (and Beam-free helpers of transforms), never the
pipeline. Builds run in this process through a `Build` callable that the `cropshard` dispatcher
(pipeline/cli.py) passes to `main`, so build times, the builds' recorded command lines and their
errors are exactly those of `cropshard build`, without an interpreter start-up per variant.
`python -m cropshard.tools.compare` alone measures existing --dataset folders only; it is also
the reader child (`--measure-reader SPEC`) and the training child (`--train-plan PLAN`).
"""
