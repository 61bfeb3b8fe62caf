"""The writer's data path, in order; DoFns and PTransforms around pure functions.

- discovery: `globs` (--input patterns: labels and folder splits from paths), `manifest`
  (--manifest rows), both over `listing` (streamed file listing, each file once); `dedup`
- decode: `decode` (Pillow, or the `jpeg_window` partial JPEG decode), `orientation` (EXIF)
- crop geometry and splits: `crop`
- encode: `encode`, and `examples` (read -> decode + crop -> encode -> tf.train.Example per split)
- write: `write` (shards, cropshard.json)

Shared: `types` (Box, ImageSource), `rejects` (reason codes, rejected.jsonl lines), `worker`
(`setup_worker()`: the process-wide settings, set by the DoFns' setup()), `progress`.
"""
