"""Batches for the any-style model: photos × style pictures from a corpus, as a function of
(seed, step) so a resumed run is exactly the uninterrupted one.

Every step pairs each photo crop with a different style picture, augmented (a crop at a random
scale, a mirror, a small colour jitter) so the encoder learns what a style is rather than which
file it came from. The benchmark's held-out photos and style pictures (bench/eval_set.json)
never enter training: `held_out_names` lists them and both loaders drop them.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from stylejax.imageio import decode_image, to_float

from .data import PHOTO_EXTENSIONS, PhotoFolder, _crop_resize, _resize_long_side, random_crop_batch

log = logging.getLogger("stylejax.train")

EVAL_SET = Path(__file__).resolve().parent.parent / "bench" / "eval_set.json"


def held_out_names(eval_set: str | Path = EVAL_SET) -> tuple[frozenset[str], frozenset[str]]:
    """(photo file names, style file names) the quality benchmark keeps for itself."""
    data = json.loads(Path(eval_set).read_text(encoding="utf-8"))
    photos = frozenset(Path(p).name for p in data["photos"])
    styles = frozenset(Path(s["file"]).name for s in data["styles"])
    return photos, styles


def held_out_style_files(data_root: str | Path, eval_set: str | Path = EVAL_SET) -> list[Path]:
    """The held-out style pictures that exist under `data_root`, in the eval set's order."""
    data = json.loads(Path(eval_set).read_text(encoding="utf-8"))
    files = [Path(data_root) / s["file"] for s in data["styles"]]
    return [f for f in files if f.is_file()]


def held_out_digests(data_root: str | Path, eval_set: str | Path = EVAL_SET) -> frozenset[str]:
    """sha256 of every held-out style picture's file, to catch a renamed copy in a corpus."""
    return frozenset(hashlib.sha256(f.read_bytes()).hexdigest()
                     for f in held_out_style_files(data_root, eval_set))


def drop_held_out(folder: PhotoFolder, names: Iterable[str]) -> PhotoFolder:
    """The folder without the named photos (in place; returned for chaining)."""
    names = frozenset(names)
    keep = [i for i, p in enumerate(folder.paths) if p.name not in names]
    dropped = len(folder.paths) - len(keep)
    folder.paths = [folder.paths[i] for i in keep]
    folder.images = [folder.images[i] for i in keep]
    if dropped:
        log.info("left %d held-out photos out of training", dropped)
    return folder


class StyleCorpus:
    """Style pictures decoded once, long side `cache_side`, minus the held-out ones.

    `paths` may be files or folders (searched recursively, sorted, so every machine sees the
    same order). The benchmark's style pictures are left out unless `exclude_names` says
    otherwise; `exclude_digests` also catches renamed copies.
    """

    def __init__(self, paths: Sequence[str | Path], *, cache_side: int = 384,
                 exclude_names: Iterable[str] | None = None,
                 exclude_digests: Iterable[str] = ()):
        if exclude_names is None:
            exclude_names = held_out_names()[1]
        exclude_names, exclude_digests = frozenset(exclude_names), frozenset(exclude_digests)
        files: list[Path] = []
        for p in (Path(q).expanduser() for q in paths):
            if p.is_dir():
                files += sorted((f for f in p.rglob("*")
                                 if f.suffix.lower() in PHOTO_EXTENSIONS and f.is_file()),
                                key=lambda f: f.relative_to(p).as_posix())
            elif p.is_file():
                files.append(p)
            else:
                raise FileNotFoundError(f"style corpus path {p} does not exist")
        self.paths: list[Path] = []
        self.images: list[np.ndarray] = []
        self.excluded = 0
        for f in files:
            if f.name in exclude_names:
                self.excluded += 1
                continue
            data = f.read_bytes()
            if exclude_digests and hashlib.sha256(data).hexdigest() in exclude_digests:
                self.excluded += 1
                continue
            try:
                rgb = decode_image(data).rgb
            except Exception as err:  # a broken picture in a scraped corpus must not stop a run
                log.warning("skipping style picture %s: %s", f, err)
                continue
            self.paths.append(f)
            self.images.append(np.ascontiguousarray(_resize_long_side(rgb, cache_side)))
        if not self.images:
            raise ValueError(f"no usable style picture in {', '.join(map(str, paths))}")
        log.info("style corpus: %d pictures (%d held out)", len(self.images), self.excluded)

    def __len__(self) -> int:
        return len(self.images)


def colour_jitter(rng: np.random.Generator, amount: float = 0.08) -> tuple[np.ndarray, ...]:
    """A per-channel (gain, offset): the palette moves a little, the same for every crop of
    one style picture in a step."""
    return 1.0 + rng.uniform(-amount, amount, size=3), rng.uniform(-amount, amount, size=3) / 2


def augmented_style(rgb: np.ndarray, rng: np.random.Generator, side: int,
                    colour: tuple[np.ndarray, ...], scale: tuple[float, float] = (0.35, 1.0)
                    ) -> np.ndarray:
    """(side, side, 3) float32: a square crop of a random fraction of the short side, mirrored
    half the time, in the jittered `colour`."""
    h, w = rgb.shape[:2]
    crop = min(max(1, round(rng.uniform(*scale) * min(h, w))), h, w)
    y, x = int(rng.integers(h - crop + 1)), int(rng.integers(w - crop + 1))
    out = to_float(_crop_resize(rgb, y, x, crop, side))
    if rng.random() < 0.5:
        out = out[:, ::-1]
    gain, offset = colour
    return np.clip(out * gain + offset, 0.0, 1.0).astype(np.float32)


class AnyStyleStream:
    """{"content": (B+I,S,S,3), "style": (B,T,T,3), "style_patches": (B,S,S,3)} per step.

    The last I photos are the identity examples (style vector 0, target: the photo itself);
    `style_patches` are other crops of the same style pictures at the photo size, the
    discriminator's real examples.
    """

    def __init__(self, photos: PhotoFolder, corpus: StyleCorpus, *, batch: int, size: int,
                 style_side: int, identity: int, seed: int):
        self.photos, self.corpus = photos, corpus
        self.batch, self.size, self.style_side = batch, size, style_side
        self.identity, self.seed = identity, seed

    def batch_at(self, step: int) -> dict[str, np.ndarray]:
        rng = np.random.default_rng([self.seed, step])
        content = random_crop_batch(self.photos.images, rng, self.batch + self.identity,
                                    self.size)
        picks = rng.integers(0, len(self.corpus), size=self.batch)
        colours = [colour_jitter(rng) for _ in picks]
        style = np.stack([augmented_style(self.corpus.images[i], rng, self.style_side, c)
                          for i, c in zip(picks, colours, strict=True)])
        patches = np.stack([augmented_style(self.corpus.images[i], rng, self.size, c,
                                            scale=(0.25, 0.6))
                            for i, c in zip(picks, colours, strict=True)])
        return {"content": content, "style": style, "style_patches": patches,
                "style_index": picks.astype(np.int32)}
