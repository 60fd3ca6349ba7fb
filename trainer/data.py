"""Training data: content photos, style pictures, and a deterministic, prefetched batch stream.

The trainer needs three things from its data:

* Content crops, many and cheap: `PhotoFolder` decodes every photo once and keeps a downsized
  uint8 copy in memory, so a training step only crops and resizes (no JPEG decoding per step).
* Style targets: `StyleImages` keeps, per style, a picture for the Gram-matrix targets and the
  full-resolution original from which the discriminator's real patches are cut.
* Exact resume: `ContentStream.batch_at(step)` is a pure function of (seed, step), so a run
  restarted from a checkpoint at step N sees exactly the batches it would have seen. The
  background thread of `ContentStream.iterate` only computes those same batches ahead of time.
"""

from __future__ import annotations

import logging
import queue
import threading
import weakref
from collections.abc import Callable, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np
from PIL import Image

from stylejax.errors import StyleJAXError
from stylejax.imageio import decode_image, resize_max_side, to_float, to_uint8

__all__ = [
    "ContentStream",
    "PhotoFolder",
    "PrefetchIterator",
    "StyleImages",
    "random_crop_batch",
]

logger = logging.getLogger(__name__)

PHOTO_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp")


# --------------------------------------------------------------------------- helpers


def _as_uint8_rgb(img: np.ndarray) -> np.ndarray:
    """Crops go through PIL, which wants uint8 RGB; floats in [0, 1] are converted."""
    arr = np.asarray(img)
    if arr.ndim != 3 or arr.shape[2] != 3:
        raise ValueError(f"expected an H×W×3 image, got shape {arr.shape}")
    return arr if arr.dtype == np.uint8 else to_uint8(arr)


def _resize(rgb: np.ndarray, w: int, h: int, resample: Image.Resampling) -> np.ndarray:
    if rgb.shape[1] == w and rgb.shape[0] == h:
        return rgb
    im = Image.fromarray(np.ascontiguousarray(rgb))
    return np.asarray(im.resize((w, h), resample))


def _resize_short_side(rgb: np.ndarray, side: int) -> np.ndarray:
    """Shrink (never enlarge) so the short side is `side`: enlarging would only add blur."""
    h, w = rgb.shape[:2]
    if min(h, w) <= side:
        return rgb
    s = side / min(h, w)
    nw, nh = (side, max(side, round(h * s))) if w <= h else (max(side, round(w * s)), side)
    return _resize(rgb, nw, nh, Image.Resampling.LANCZOS)


def _resize_long_side(rgb: np.ndarray, side: int) -> np.ndarray:
    """Resize (either way) so the long side is exactly `side`: every style's Gram target then
    sees its strokes at the same scale, whatever the size of the file it came from."""
    h, w = rgb.shape[:2]
    s = side / max(h, w)
    nw, nh = max(1, round(w * s)), max(1, round(h * s))
    return _resize(rgb, nw, nh, Image.Resampling.LANCZOS)


def _crop_resize(rgb: np.ndarray, y: int, x: int, side: int, size: int) -> np.ndarray:
    crop = rgb[y : y + side, x : x + side]
    return _resize(crop, size, size, Image.Resampling.BILINEAR)


# --------------------------------------------------------------------------- content photos


class PhotoFolder:
    """Every usable photo under `root`, decoded once and cached in memory as uint8 RGB.

    Decoding a 1280 px JPEG costs far more than a crop, so it is done once here; the cached
    copy's short side is `cache_side` (a bit above the crop size, so random-resized crops rarely
    upsample). Broken files are logged and skipped: one bad photo in a scraped folder must not
    stop a training run.
    """

    def __init__(
        self,
        root: str | Path,
        *,
        cache_side: int = 384,
        extensions: Sequence[str] = PHOTO_EXTENSIONS,
    ) -> None:
        if cache_side < 1:
            raise ValueError(f"cache_side must be at least 1, got {cache_side}")
        self.root = Path(root)
        if not self.root.exists():
            raise FileNotFoundError(f"content folder {self.root} does not exist")
        if not self.root.is_dir():
            raise NotADirectoryError(f"content folder {self.root} is not a directory")
        self.cache_side = cache_side
        exts = {e.lower() if e.startswith(".") else "." + e.lower() for e in extensions}
        candidates = sorted(
            (p for p in self.root.rglob("*") if p.suffix.lower() in exts and p.is_file()),
            key=lambda p: p.relative_to(self.root).as_posix(),  # same order on every machine
        )
        self.paths: list[Path] = []
        self.images: list[np.ndarray] = []
        self.skipped: list[tuple[Path, str]] = []
        for path in candidates:
            try:
                rgb = decode_image(path).rgb
            except (StyleJAXError, OSError) as err:
                reason = str(err) or type(err).__name__
                logger.warning("skipping content photo %s: %s", path, reason)
                self.skipped.append((path, reason))
                continue
            self.paths.append(path)
            self.images.append(np.ascontiguousarray(_resize_short_side(rgb, cache_side)))
        if not self.images:
            found = (
                f"{len(candidates)} candidate file(s), all unreadable"
                if candidates
                else f"no file ending in {', '.join(sorted(exts))}"
            )
            raise ValueError(f"no usable photo in {self.root}: {found}")
        logger.info(
            "content photos: %d loaded from %s, %d skipped",
            len(self.images),
            self.root,
            len(self.skipped),
        )

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> np.ndarray:
        return self.images[i]

    @property
    def nbytes(self) -> int:
        """Memory held by the cache, to log alongside the dataset size."""
        return sum(im.nbytes for im in self.images)


def random_crop_batch(
    images: Sequence[np.ndarray],
    rng: np.random.Generator,
    batch: int,
    size: int,
    *,
    scale: tuple[float, float] = (0.6, 1.0),
    flip: bool = True,
) -> np.ndarray:
    """Random-resized square crops, (batch, size, size, 3) float32 in [0, 1].

    Images are drawn with replacement; each crop's side is a uniform fraction in `scale` of the
    image's short side, at a uniform position, resized bilinearly to `size`, then mirrored with
    probability 1/2. The flip coin is drawn even with flip=False, so toggling `flip` changes
    nothing else about the batch.
    """
    if not images:
        raise ValueError("no images to crop from")
    if batch < 1 or size < 1:
        raise ValueError(f"batch and size must be at least 1, got {batch} and {size}")
    lo, hi = float(scale[0]), float(scale[1])
    if not 0.0 < lo <= hi <= 1.0:
        raise ValueError(f"scale must satisfy 0 < low <= high <= 1, got {scale}")
    out = np.empty((batch, size, size, 3), np.float32)
    for b in range(batch):
        rgb = _as_uint8_rgb(images[int(rng.integers(len(images)))])
        h, w = rgb.shape[:2]
        side = min(max(1, round(rng.uniform(lo, hi) * min(h, w))), h, w)
        y = int(rng.integers(h - side + 1))
        x = int(rng.integers(w - side + 1))
        mirror = bool(rng.random() < 0.5)
        crop = _crop_resize(rgb, y, x, side, size)
        if flip and mirror:
            crop = crop[:, ::-1]
        out[b] = to_float(crop)
    return out


# --------------------------------------------------------------------------- style pictures


class StyleImages:
    """The style pictures, in the order that defines the style ids.

    Unlike content photos, a broken style file is an error: training without one of the
    requested styles would silently produce a pack with the wrong style behind an id.
    """

    def __init__(self, paths: Sequence[str | Path], *, side: int = 256) -> None:
        if not paths:
            raise ValueError("at least one style picture is required")
        if side < 1:
            raise ValueError(f"side must be at least 1, got {side}")
        self.side = side
        self.paths: list[Path] = [Path(p) for p in paths]
        self.originals: list[np.ndarray] = []
        self.targets: list[np.ndarray] = []
        for path in self.paths:
            try:
                rgb = decode_image(path).rgb
            except (StyleJAXError, OSError) as err:
                reason = str(err) or type(err).__name__
                raise ValueError(f"cannot load style picture {path}: {reason}") from err
            self.originals.append(rgb)
            self.targets.append(np.ascontiguousarray(_resize_long_side(rgb, side)))

    def __len__(self) -> int:
        return len(self.paths)

    @property
    def names(self) -> list[str]:
        """File stems, e.g. 'S01_vangogh_starry_night': readable labels for logs and packs."""
        return [p.stem for p in self.paths]

    def _check(self, i: int) -> int:
        i = int(i)
        if not 0 <= i < len(self):
            raise IndexError(f"style id {i} out of range 0..{len(self) - 1}")
        return i

    def target(self, i: int) -> np.ndarray:
        """(1, H, W, 3) float32 in [0, 1], long side `side`: input for the style Gram targets."""
        return to_float(self.targets[self._check(i)])[None]

    def thumbnail(self, i: int, side: int = 256) -> np.ndarray:
        """uint8 picture whose long side is at most `side`, for previews and pack metadata."""
        return resize_max_side(self.originals[self._check(i)], side)

    def patches(
        self,
        rng: np.random.Generator,
        style_ids: np.ndarray,
        size: int,
        scales: Sequence[float] = (0.5, 0.75, 1.0),
    ) -> np.ndarray:
        """(len(style_ids), size, size, 3) float32 in [0, 1]: real patches of each id's style.

        Each patch's side is a scale picked uniformly from `scales` times the picture's short
        side (at least size // 2, at most the short side), at a random position, resized to
        `size`: the discriminator sees the style's texture at several zoom levels.
        """
        ids = np.asarray(style_ids).reshape(-1)
        if size < 1:
            raise ValueError(f"size must be at least 1, got {size}")
        if not scales or not all(0.0 < float(s) <= 1.0 for s in scales):
            raise ValueError(f"scales must be non-empty and in (0, 1], got {scales}")
        out = np.empty((len(ids), size, size, 3), np.float32)
        for b, sid in enumerate(ids):
            rgb = self.originals[self._check(sid)]
            h, w = rgb.shape[:2]
            s = float(scales[int(rng.integers(len(scales)))])
            side = min(max(round(s * min(h, w)), size // 2, 1), h, w)
            y = int(rng.integers(h - side + 1))
            x = int(rng.integers(w - side + 1))
            out[b] = to_float(_crop_resize(rgb, y, x, side, size))
        return out


# --------------------------------------------------------------------------- batch stream

_END = object()  # producer -> consumer: stop_step reached


class _Failure:
    """An exception raised by batch_at in the producer thread, re-raised in the consumer."""

    def __init__(self, error: BaseException) -> None:
        self.error = error


def _produce(
    make: Callable[[int], dict[str, np.ndarray]],
    q: queue.Queue[Any],
    stop: threading.Event,
    start: int,
    stop_step: int | None,
) -> None:
    """Prefetch thread body. It holds no reference to the iterator, so an iterator dropped
    without close() is still collected, and its __del__ stops this thread."""
    step = start
    while not stop.is_set():
        if stop_step is not None and step >= stop_step:
            item: Any = _END
        else:
            try:
                item = (step, make(step))
            except Exception as err:  # handed to the consumer and re-raised there
                item = _Failure(err)
        while not stop.is_set():  # a bounded put, so close() is noticed even when full
            try:
                q.put(item, timeout=0.05)
                break
            except queue.Full:
                continue
        if item is _END or isinstance(item, _Failure):
            return
        step += 1


class PrefetchIterator:
    """Iterator of (step, batch) with a daemon thread computing up to `prefetch` batches ahead.

    Call close() (or use it as a context manager) when done: it stops and joins the thread.
    With prefetch=0 batches are computed in the caller's thread and no thread is started.
    """

    def __init__(
        self,
        make: Callable[[int], dict[str, np.ndarray]],
        start_step: int,
        *,
        prefetch: int,
        stop_step: int | None = None,
        name: str = "stylejax-prefetch",
    ) -> None:
        self._make = make
        self._next_step = start_step
        self._stop_step = stop_step
        self._closed = False
        self._stop = threading.Event()
        self._queue: queue.Queue[Any] | None = None
        self.thread: threading.Thread | None = None
        if prefetch > 0:
            self._queue = queue.Queue(maxsize=prefetch)
            self.thread = threading.Thread(
                target=_produce,
                args=(make, self._queue, self._stop, start_step, stop_step),
                name=name,
                daemon=True,  # never keeps the interpreter alive, even if close() is forgotten
            )
            self.thread.start()

    def __iter__(self) -> PrefetchIterator:
        return self

    def __next__(self) -> tuple[int, dict[str, np.ndarray]]:
        if self._closed:
            raise StopIteration
        if self._queue is None:
            if self._stop_step is not None and self._next_step >= self._stop_step:
                self.close()
                raise StopIteration
            step = self._next_step
            self._next_step += 1
            return step, self._make(step)
        while True:
            try:
                item = self._queue.get(timeout=0.5)
                break
            except queue.Empty:
                dead = self.thread is None or not self.thread.is_alive()
                if dead and self._queue.empty():  # empty: it may have put its last item just now
                    self.close()
                    raise RuntimeError("the prefetch thread ended unexpectedly") from None
        if item is _END:
            self.close()
            raise StopIteration
        if isinstance(item, _Failure):
            self.close()
            raise item.error
        self._next_step = item[0] + 1
        return item

    @property
    def next_step(self) -> int:
        """The step the next batch will be for (what a checkpoint should record)."""
        return self._next_step

    def close(self, timeout: float = 30.0) -> None:
        """Stop the prefetch thread and wait for it; safe to call more than once."""
        if self._closed:
            return
        self._closed = True
        self._stop.set()
        if self._queue is not None:
            while True:  # drop prefetched batches so their memory goes now
                try:
                    self._queue.get_nowait()
                except queue.Empty:
                    break
        thread = self.thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)
            if thread.is_alive():
                logger.warning(
                    "prefetch thread %s did not stop within %.0f s", thread.name, timeout
                )

    def __enter__(self) -> PrefetchIterator:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __del__(self) -> None:
        # No join here: __del__ may run on any thread, at any time. Not contextlib.suppress:
        # at interpreter shutdown module globals may already be None.
        try:  # noqa: SIM105
            self._stop.set()
        except Exception:
            pass


class ContentStream:
    """Training batches as a pure function of (seed, step), for exact resume.

    `batch_at(step)` seeds `np.random.default_rng([seed, step])` and draws, in this order,
    the content crops, the style ids and (with `styles`) the discriminator's real style
    patches, so the same step gives the same batch in any process, in any order.
    The result also depends on the photo set: adding or removing photos changes the batches.
    """

    def __init__(
        self,
        folder: PhotoFolder,
        *,
        batch: int,
        size: int,
        seed: int,
        num_styles: int,
        prefetch: int = 2,
        styles: StyleImages | None = None,
        scale: tuple[float, float] = (0.6, 1.0),
        flip: bool = True,
    ) -> None:
        if batch < 1 or size < 1:
            raise ValueError(f"batch and size must be at least 1, got {batch} and {size}")
        if seed < 0:
            raise ValueError(f"seed must be non-negative, got {seed}")
        if num_styles < 1:
            raise ValueError(f"num_styles must be at least 1, got {num_styles}")
        if prefetch < 0:
            raise ValueError(f"prefetch must be non-negative, got {prefetch}")
        if styles is not None and len(styles) != num_styles:
            raise ValueError(f"num_styles is {num_styles} but {len(styles)} style pictures given")
        self.folder = folder
        self.batch = batch
        self.size = size
        self.seed = seed
        self.num_styles = num_styles
        self.prefetch = prefetch
        self.styles = styles
        self.scale = scale
        self.flip = flip
        self._iterators: weakref.WeakSet[PrefetchIterator] = weakref.WeakSet()

    def batch_at(self, step: int) -> dict[str, np.ndarray]:
        """{"content": (B,S,S,3) float32, "style_ids": (B,) int32[, "style_patches": (B,S,S,3)]}."""
        if step < 0:
            raise ValueError(f"step must be non-negative, got {step}")
        rng = np.random.default_rng([self.seed, step])
        content = random_crop_batch(
            self.folder.images, rng, self.batch, self.size, scale=self.scale, flip=self.flip
        )
        style_ids = rng.integers(0, self.num_styles, size=self.batch, dtype=np.int32)
        out = {"content": content, "style_ids": style_ids}
        if self.styles is not None:
            out["style_patches"] = self.styles.patches(rng, style_ids, self.size)
        return out

    def iterate(self, start_step: int = 0, stop_step: int | None = None) -> PrefetchIterator:
        """(step, batch) for start_step, start_step + 1, ... (up to stop_step, exclusive).

        Close the returned iterator (or use `with`) to stop its prefetch thread.
        """
        if start_step < 0:
            raise ValueError(f"start_step must be non-negative, got {start_step}")
        it = PrefetchIterator(
            self.batch_at,
            start_step,
            prefetch=self.prefetch,
            stop_step=stop_step,
            name=f"ContentStream-prefetch-{start_step}",
        )
        self._iterators.add(it)
        return it

    def close(self) -> None:
        """Close every iterator this stream handed out that is still open."""
        for it in list(self._iterators):
            it.close()
