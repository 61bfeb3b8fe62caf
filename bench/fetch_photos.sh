#!/usr/bin/env bash
# Fetch and cache real photos for cropshard benchmarks (never into the repo).
#
#   bash bench/fetch_photos.sh            # cold fetch, or a no-op when cached
#   CROPSHARD_PHOTOS=/some/dir bash bench/fetch_photos.sh
#
# Sources (see shared/data/PHOTOS.md): Debian packages fetched with
# `apt-get download` + `dpkg-deb -x` (nothing is installed system-wide) and
# PyPI wheels fetched with `pip download --no-deps --only-binary=:all:`.
#
# Layout under $CROPSHARD_PHOTOS (default ~/.cache/cropshard/photos):
#   large/     real camera photos >= 8 MP, JPEG
#   imagenet/  ImageNet-sized (~500x375) photos. The real small photos
#              (opencv-doc samples, scikit-learn china/flower) are too few, so
#              this set is topped up with *synthetic downscales*: real photos
#              resized with Pillow to 500x375 (or 375x500) and saved as JPEG q90.
#              Those files are named ds_*.jpg so they can be told apart.
#   mixed/     every real wallpaper/background photo, JPEG and PNG, any size,
#              baseline and progressive
#   aerial/    opencv aero*.jpg, dgsamples satellite preview JPEGs,
#              r-cran-rgdal orthophoto GeoTIFFs
#   .downloads/ .extract/   raw packages and their unpacked trees (cache)
#
# Idempotent: each package is fetched/unpacked once (stamp files) and the
# organise step skips files that already exist, so a second run only prints
# the counts.
set -euo pipefail
shopt -s nullglob

ROOT="${CROPSHARD_PHOTOS:-$HOME/.cache/cropshard/photos}"
DL="$ROOT/.downloads"
EX="$ROOT/.extract"
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/.." && pwd)"

# Python with Pillow: the repo venv if present, else whatever python3 is around.
if [[ -n "${PYTHON:-}" ]]; then :
elif [[ -x "$REPO/.venv/bin/python" ]]; then PYTHON="$REPO/.venv/bin/python"
else PYTHON="python3"
fi
PIP=("$PYTHON" -m pip)

DEBS=(
  lomiri-wallpapers-16.04
  lomiri-wallpapers-20.04
  mate-backgrounds
  plasma-workspace-wallpapers
  digikam-data
  kstars-data
  opencv-doc
  r-cran-rgdal
)
# Pinned so the benchmark set is stable across runs.
WHEELS=(
  dgsamples==1.1.2
  scikit-learn==1.5.2
)

mkdir -p "$DL" "$EX"
start=$(date +%s)
apt_updated=0

fetch_deb() {
  local pkg=$1 dest="$EX/$1"
  [[ -f "$dest/.done" ]] && return 0
  echo "fetching Debian package $pkg" >&2
  local debs
  debs=("$DL"/"${pkg}"_*.deb)  # nullglob: empty unless a previous run left one
  if [[ ${#debs[@]} -eq 0 ]]; then
    # apt-get download writes into the current directory.
    if ! (cd "$DL" && apt-get download "$pkg" >/dev/null 2>&1); then
      if [[ $apt_updated -eq 0 ]]; then
        echo "  apt-get download failed; running apt-get update and retrying" >&2
        apt-get update >/dev/null 2>&1 || true
        apt_updated=1
      fi
      (cd "$DL" && apt-get download "$pkg" >/dev/null) || { echo "  WARNING: could not download $pkg, skipping" >&2; return 0; }
    fi
    debs=("$DL"/"${pkg}"_*.deb)
  fi
  [[ ${#debs[@]} -gt 0 ]] || { echo "  WARNING: no .deb for $pkg after download, skipping" >&2; return 0; }
  local deb=${debs[0]}
  rm -rf "$dest" && mkdir -p "$dest"
  dpkg-deb -x "$deb" "$dest"
  # Keep only image files (opencv-doc alone is ~300 MB of HTML and code).
  find "$dest" \( -type f -o -type l \) ! -iname '*.jpg' ! -iname '*.jpeg' ! -iname '*.png' \
    ! -iname '*.tif' ! -iname '*.tiff' -delete
  touch "$dest/.done"
  rm -f "$deb"  # the unpacked tree is the cache; the .deb is no longer needed
}

fetch_wheel() {
  local spec=$1 name=${1%%==*}
  local dest="$EX/pypi-$name"
  [[ -f "$dest/.done" ]] && return 0
  echo "fetching PyPI wheel $spec" >&2
  local tmp="$DL/pypi-$name"
  mkdir -p "$tmp"
  "${PIP[@]}" download --quiet --no-deps --only-binary=:all: "$spec" -d "$tmp" \
    || { echo "  WARNING: could not download $spec, skipping" >&2; return 0; }
  rm -rf "$dest" && mkdir -p "$dest"
  # A wheel is a zip; use Python's zipfile so `unzip` need not be installed.
  "$PYTHON" -m zipfile -e "$tmp"/*.whl "$dest"
  touch "$dest/.done"
  rm -rf "$tmp"
}

for p in "${DEBS[@]}"; do fetch_deb "$p"; done
for w in "${WHEELS[@]}"; do fetch_wheel "$w"; done

# Organise the unpacked trees into the benchmark folders. Files are hard-linked
# from .extract/ (copied if linking fails) so the cache is not stored twice.
"$PYTHON" - "$ROOT" <<'PY'
import glob
import hashlib
import os
import shutil
import sys

from PIL import Image, ImageOps

Image.MAX_IMAGE_PIXELS = None  # the big wallpapers trip the decompression-bomb guard
root = sys.argv[1]
ex = os.path.join(root, ".extract")


def files(pattern):
    """Regular (non-symlink) files matching a glob under .extract/, sorted."""
    out = []
    for p in sorted(glob.glob(os.path.join(ex, pattern), recursive=True)):
        if os.path.isfile(p) and not os.path.islink(p):
            out.append(p)
    return out


def flat_name(path):
    """Unique flat name: package + path below the usual share/ prefixes."""
    rel = os.path.relpath(path, ex)
    pkg, rest = rel.split(os.sep, 1)
    for prefix in ("usr/share/backgrounds/", "usr/share/wallpapers/", "usr/share/doc/opencv-doc/examples/",
                   "usr/share/", "usr/lib/R/site-library/"):
        if rest.startswith(prefix):
            rest = rest[len(prefix):]
            break
    rest = rest.replace("/contents/", "/").replace("/", "_")
    return f"{pkg.replace('pypi-', '')}__{rest}"


def place(src, folder, name=None):
    dst = os.path.join(root, folder, name or flat_name(src))
    if os.path.exists(dst):
        return
    os.makedirs(os.path.dirname(dst), exist_ok=True)
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


IMAGE_EXT = (".jpg", ".jpeg", ".png")
WALLPAPER_PKGS = ["lomiri-wallpapers-16.04", "lomiri-wallpapers-20.04", "mate-backgrounds", "plasma-workspace-wallpapers"]

# Real camera photos (checked by eye: renders, paintings and illustrations
# excluded). Used for large/ (when >= 8 MP) and as sources for imagenet/ downscales.
L16 = "lomiri-wallpapers-16.04/usr/share/backgrounds/"
PLASMA = "plasma-workspace-wallpapers/usr/share/wallpapers/"
CAMERA_PHOTOS = [
    L16 + n for n in (
        "Bridge_by_Sander_Klootwijk.jpg", "Dragonfly_by_Bolly.jpg", "Picture_0B_by_freespace.jpg",
        "Picture_1A_by_freespace.jpg", "Wine_by_Jakkub_Mede.jpg", "aitzgorri_by_Aitzol_Berasategi.jpg",
        "free_by_Peter_Nerlich.jpg", "friends_by_Aitzol_Berasategi.jpg", "life_by_Aitzol_Berasategi.jpg",
        "picosdeeuropa_by_Aitzol_Berasategi.jpg", "seeding_by_Clements_Engelhardt.jpg",
        "sunset_by_Aitzol_Berasategi.jpg")
] + [
    "lomiri-wallpapers-20.04/usr/share/backgrounds/Kleiber_by_Lukas_Baubkus.jpg",
    "mate-backgrounds/usr/share/backgrounds/mate/nature/*.jpg",
    "digikam-data/usr/share/digikam/about/images/body-background.jpg",
] + [
    PLASMA + t + "/contents/images/2560x1600.jpg" for t in (
        "FallenLeaf", "Path", "DarkestHour", "summer_1am", "EveningGlow", "Grey", "Kite", "ColorfulCups",
        "OneStandsOut", "ColdRipple", "BytheWater")
]
camera = [p for pat in CAMERA_PHOTOS for p in files(pat)]

# large/: camera photos >= 8 MP. 3264x2448 (7.99 Mpx) is a nominal 8 MP sensor, hence 7.9e6.
for p in camera:
    with Image.open(p) as im:
        if im.format == "JPEG" and im.width * im.height >= 7.9e6:
            place(p, "large")

# mixed/: every distinct real wallpaper/background JPEG and PNG (photos, renders,
# baseline and progressive, previews included), plus the digikam/kstars backgrounds.
seen = set()
mixed_src = [p for pkg in WALLPAPER_PKGS for p in files(pkg + "/**/*") if p.lower().endswith(IMAGE_EXT)]
mixed_src += files("digikam-data/usr/share/digikam/about/images/body-background.jpg")
mixed_src += files("kstars-data/usr/share/kstars/kstarslite/qml/images/splash_bg*.jpeg")
for p in mixed_src:
    with open(p, "rb") as f:
        digest = hashlib.sha1(f.read()).hexdigest()
    if digest not in seen:  # plasma ships one image under many names
        seen.add(digest)
        place(p, "mixed")

# aerial/: oblique aerials, satellite preview JPEGs, grayscale orthophoto GeoTIFFs.
for p in files("opencv-doc/usr/share/doc/opencv-doc/examples/data/aero*.jpg"):
    place(p, "aerial")
for p in files("pypi-dgsamples/dgsamples/**/*-BROWSE.JPG"):
    place(p, "aerial")
for p in files("r-cran-rgdal/usr/lib/R/site-library/rgdal/pictures/*.[tT][iI][fF]"):
    place(p, "aerial")

# imagenet/: real ImageNet-sized photos first (opencv samples checked by eye:
# logos, renders, paintings, documents and shape drawings excluded) ...
OCV = "opencv-doc/usr/share/doc/opencv-doc/examples/"
SMALL_PHOTOS = [OCV + "alphamat/input_images/plant.jpg", OCV + "hfs/data/*.jpg", OCV + "text/scenetext0[1-6].jpg",
                OCV + "text/scenetext_segmented_word0*.jpg",
                "pypi-scikit-learn/sklearn/datasets/images/*.jpg"] + [
    OCV + "data/" + n for n in (
        "apple.jpg", "baboon.jpg", "board.jpg", "building.jpg", "butterfly.jpg", "ela_original.jpg",
        "ela_modified.jpg", "fruits.jpg", "home.jpg", "left.jpg", "right.jpg", "leuvenA.jpg", "leuvenB.jpg",
        "licenseplate_motion.jpg", "messi5.jpg", "orange.jpg", "squirrel_cls.jpg", "stuff.jpg")
]
for pat in SMALL_PHOTOS:
    for p in files(pat):
        place(p, "imagenet")

# ... which are too few, so add SYNTHETIC downscales of the real camera photos:
# a centred 4:3 crop of the whole frame and, for photos >= 2 MP, of each quadrant,
# resized with Pillow (LANCZOS) to 500x375 (375x500 for portrait) and saved as JPEG q90.
def downscale(im, box, out):
    region = im.crop(box)
    w, h = region.size
    if w >= h:
        cw, ch = min(w, h * 4 // 3), min(h, w * 3 // 4)
        size = (500, 375)
    else:
        cw, ch = min(w, h * 3 // 4), min(h, w * 4 // 3)
        size = (375, 500)
    left, top = (w - cw) // 2, (h - ch) // 2
    small = region.crop((left, top, left + cw, top + ch)).resize(size, Image.Resampling.LANCZOS)
    small.save(out, "JPEG", quality=90)


for p in camera:
    stem = os.path.splitext(flat_name(p))[0]
    outs = [os.path.join(root, "imagenet", f"ds_{stem}_{tag}.jpg") for tag in ("full", "q0", "q1", "q2", "q3")]
    with Image.open(p) as im0:
        big = im0.width * im0.height >= 2e6
        todo = outs if big else outs[:1]
        if all(os.path.exists(o) for o in todo):
            continue
        im = ImageOps.exif_transpose(im0)
        im = im.convert("L" if im.mode == "L" else "RGB")
        W, H = im.size
        boxes = [(0, 0, W, H), (0, 0, W // 2, H // 2), (W // 2, 0, W, H // 2), (0, H // 2, W // 2, H), (W // 2, H // 2, W, H)]
        os.makedirs(os.path.join(root, "imagenet"), exist_ok=True)
        for box, out in zip(boxes, todo):
            if not os.path.exists(out):
                downscale(im, box, out + ".tmp")
                os.replace(out + ".tmp", out)  # atomic: an interrupted run leaves no half file

# Summary.
for folder in ("large", "imagenet", "mixed", "aerial"):
    d = os.path.join(root, folder)
    names = sorted(os.listdir(d)) if os.path.isdir(d) else []
    size = sum(os.path.getsize(os.path.join(d, n)) for n in names)
    kinds = {}
    for n in names:
        ext = os.path.splitext(n)[1].lower().lstrip(".")
        kinds[ext] = kinds.get(ext, 0) + 1
    extra = " (" + ", ".join(f"{v} {k}" for k, v in sorted(kinds.items())) + ")" if kinds else ""
    print(f"{folder:9s} {len(names):4d} files {size / 2**20:8.1f} MiB{extra}  {d}")
PY

echo "took $(( $(date +%s) - start )) s"
