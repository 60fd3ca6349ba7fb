"""Custom style by optimisation (Gatys et al. 2016) with our EfficientNet-Lite0 features.

For a style nobody trained a network for: start from the photo and let Adam move its pixels until
their Gram statistics match the style picture's while the deep features still match the photo's.
Runs coarse-to-fine (most steps at a reduced size, a few at the full size) because each step costs
a forward and backward pass of the feature net, and the coarse result already fixes the layout.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import jax
import jax.numpy as jnp
import numpy as np
import optax
from PIL import Image

from . import losses
from .colour import colour_stats, match_colours
from .engine import enable_compilation_cache
from .features import (
    BLOCK_OUTPUT_STYLE_TAPS,
    DEFAULT_CONTENT_TAPS,
    DEFAULT_STYLE_TAPS,
    load_feature_net,
    swag,
)
from .generator import preserve_colors
from .imageio import resize_to


@dataclass(frozen=True)
class CustomStyleConfig:
    """Knobs of the optimisation; defaults chosen with bench/quality.py and by eye."""

    size: int = 512                      # long side of the result
    steps: int = 1000                    # step cap over all scales (the time budget ends first)
    scales: tuple[float, ...] = (0.5, 1.0)
    scale_steps: tuple[float, ...] = (0.5, 0.5)  # share of the step cap per scale
    scale_time: tuple[float, ...] = (0.5, 0.5)   # share of the time budget per scale
    measure_every: int = 10              # steps between loss reports (a forward pass each)
    time_budget_s: float = 30.0          # wall clock, start-up and compiling included…
    min_steps: int = 10                  # …but never fewer steps than this (a cold start)
    # L-BFGS, as Gatys et al. used: Adam's per-pixel normalised steps move every pixel by about
    # the learning rate whatever its gradient, which paints colour speckle (docs/quality.md).
    optimizer: str = "lbfgs"             # or "adam" (optax, with jitter and a pyramid)
    lbfgs_memory: int = 10
    learning_rate: float = 0.03          # Adam only
    style_weight: float = 100.0
    content_weight: float = 1.0
    tv_weight: float = 3.0
    style_taps: tuple[str, ...] = DEFAULT_STYLE_TAPS
    content_taps: tuple[str, ...] = DEFAULT_CONTENT_TAPS
    # Grams are also matched on the picture shrunk by these factors (with the style picture
    # shrunk alike): the taps then also ask for the style's structure at 2x, 4x their scale.
    style_scales: tuple[float, ...] = (1.0,)
    use_swag: bool = False               # SWAG at T=1 over-saturated our results; see docs
    swag_temperature: float = 1.0
    jitter: int = 4                      # Adam only: random shift (px) per step
    fine_lr_mult: float = 0.3            # Adam only: the finest pyramid level moves slower
    normalise_layers: bool = True        # each style layer's loss divided by its target's scale
    style_size: int | None = None        # long side the style picture is viewed at (None: = size)
    stroke: float = 1.0                  # × that size: 2 = strokes twice as big (stylejax.stroke)
    pyramid_levels: int = 1              # >1: optimise a pyramid of sums, not raw pixels
    match_colors_first: bool = True      # start from the photo recoloured to the style's palette


def legacy_config(size: int = 512) -> CustomStyleConfig:
    """The first design (Adam on a 4-level pyramid, Gram matrices of Lite0 block outputs, 120
    steps): the benchmark's "before" column."""
    return CustomStyleConfig(size=size, steps=120, scale_steps=(0.6, 0.4), optimizer="adam",
                             style_weight=1.0, style_taps=BLOCK_OUTPUT_STYLE_TAPS,
                             pyramid_levels=4)


@dataclass
class CustomStyleResult:
    image: np.ndarray                    # H×W×3 uint8
    seconds: float
    steps: int
    stopped_early: bool
    history: list[dict] = field(default_factory=list)

    @property
    def final_losses(self) -> dict:
        return self.history[-1] if self.history else {}


ProgressFn = Callable[[float, dict], None]


def _resize(rgb: np.ndarray, long_side: int, multiple: int = 8) -> np.ndarray:
    h, w = rgb.shape[:2]
    scale = long_side / max(h, w)
    nh = max(multiple, round(h * scale / multiple) * multiple)
    nw = max(multiple, round(w * scale / multiple) * multiple)
    return np.asarray(Image.fromarray(rgb).resize((nw, nh), Image.LANCZOS))


def _to_batch(rgb: np.ndarray) -> jax.Array:
    return jnp.asarray(rgb, jnp.float32)[None] / 255.0


class _Objective:
    """Style and content targets for one scale, plus the jitted Adam step that chases them."""

    def __init__(self, cfg: CustomStyleConfig, photo: jax.Array, style: jax.Array):
        self.cfg = cfg
        self.net = load_feature_net()
        taps = tuple(dict.fromkeys(cfg.style_taps + cfg.content_taps))
        self.taps = taps

        self.style_grams = []  # per scale, then per tap
        for s in cfg.style_scales:
            style_feats = self.net.features(losses.shrink(style, s), cfg.style_taps)
            self.style_grams += [losses.gram_matrix(self._smooth(style_feats[t]))
                                 for t in cfg.style_taps]
        # Layers differ in scale by orders of magnitude; dividing by each target Gram's mean
        # square gives every layer an equal say and makes the weights independent of the net.
        self.style_layer_weights = [
            float(1.0 / (jnp.mean(g**2) + 1e-12)) if cfg.normalise_layers else 1.0
            for g in self.style_grams
        ]
        photo_feats = self._features(photo)
        self.content_targets = [photo_feats[t] for t in cfg.content_taps]
        energy = jnp.mean(jnp.stack([jnp.mean(f**2) for f in self.content_targets]))
        self.content_scale = float(1.0 / (energy + 1e-12)) if cfg.normalise_layers else 1.0
        self.opt = (optax.lbfgs(memory_size=cfg.lbfgs_memory) if cfg.optimizer == "lbfgs"
                    else optax.adam(cfg.learning_rate))

    def _features(self, x: jax.Array) -> dict[str, jax.Array]:
        return self.net.features(x, self.taps)

    def _smooth(self, f: jax.Array) -> jax.Array:
        return swag(f, self.cfg.swag_temperature) if self.cfg.use_swag else f

    def loss_terms(self, x: jax.Array) -> dict[str, jax.Array]:
        feats = self._features(x)
        style_feats = []
        for s in self.cfg.style_scales:
            f = feats if s == 1 else self.net.features(losses.shrink(x, s), self.cfg.style_taps)
            style_feats += [self._smooth(f[t]) for t in self.cfg.style_taps]
        style = losses.style_loss(style_feats, self.style_grams, self.style_layer_weights)
        style = style / len(style_feats)
        content = self.content_scale * losses.content_loss(
            [feats[t] for t in self.cfg.content_taps], self.content_targets)
        tv = losses.total_variation(x)
        return {"style": style, "content": content, "tv": tv}

    def total(self, x: jax.Array) -> tuple[jax.Array, dict]:
        t = self.loss_terms(x)
        c = self.cfg
        total = (c.style_weight * t["style"] + c.content_weight * t["content"]
                 + c.tv_weight * t["tv"])
        return total, t

    def make_step(self, shape: tuple[int, ...]):
        def render(levels):
            return jnp.clip(compose_pyramid(levels, shape), 0.0, 1.0)

        jitter = self.cfg.jitter

        def objective(levels, key):
            x = render(levels)
            if jitter:
                # A strided net sees a shifted picture on a different sampling grid; averaging
                # over shifts stops the optimiser from painting grid-aligned noise.
                # Reflect-pad and crop (not roll: wrapping would add a seam to the Gram).
                dy, dx = jax.random.randint(key, (2,), 0, jitter + 1)
                padded = jnp.pad(x, ((0, 0), (jitter, jitter), (jitter, jitter), (0, 0)),
                                 mode="reflect")
                x = jax.lax.dynamic_slice(padded, (0, dy, dx, 0), x.shape)
            return self.total(x)

        if self.cfg.optimizer == "lbfgs":
            # L-BFGS needs one deterministic function (its line search re-evaluates it), so the
            # picture is not jittered; curvature steps converge in far fewer evaluations.
            def value(levels):
                return self.total(render(levels))[0]

            value_and_grad = optax.value_and_grad_from_state(value)

            @jax.jit
            def lbfgs_step(levels, opt_state, key):
                del key
                # The line search's last evaluation is reused: one forward+backward per step
                # when the first trial step is accepted (the usual case).
                total, grad = value_and_grad(levels, state=opt_state)
                updates, opt_state = self.opt.update(grad, opt_state, levels, value=total,
                                                     grad=grad, value_fn=value)
                return optax.apply_updates(levels, updates), opt_state, {"total": total}

            return lbfgs_step, jax.jit(render)

        @jax.jit
        def step(levels, opt_state, key):
            (total, terms), grad = jax.value_and_grad(objective, has_aux=True)(levels, key)
            updates, opt_state = self.opt.update(grad, opt_state, levels)
            updates = [updates[0] * self.cfg.fine_lr_mult, *updates[1:]]
            return optax.apply_updates(levels, updates), opt_state, dict(terms, total=total)

        return step, jax.jit(render)


def make_pyramid(x: jax.Array, n_levels: int) -> list[jax.Array]:
    """Finest level holds x; coarser levels (half size each) start at zero.

    Adam moves every parameter by about the learning rate per step, so a parameter of a coarse
    level moves a whole region at once: colours and large shapes change quickly while the finest
    level adds brush detail. Raw-pixel optimisation through a strided net instead fills the
    picture with high-frequency noise.
    """
    n, h, w, c = x.shape
    levels = [x]
    for k in range(1, n_levels):
        levels.append(jnp.zeros((n, max(1, h >> k), max(1, w >> k), c), x.dtype))
    return levels


def compose_pyramid(levels: list[jax.Array], shape: tuple[int, ...]) -> jax.Array:
    out = levels[0]
    for lv in levels[1:]:
        out = out + jax.image.resize(lv, shape, "linear")
    return out


def trim_frame(rgb: np.ndarray, max_share: float = 0.1, tolerance: float = 12.0) -> np.ndarray:
    """Cut a scan's plain frame (black border, mount, canvas edge) off a style picture.

    A Gram loss reproduces everything in the style picture, a frame included: it comes back as
    straight dark lines and rectangles across the result. A row or column belongs to the frame
    while it is nearly uniform (spread below `tolerance` grey levels), scanning in from each side
    up to `max_share` of the picture.
    """
    grey = rgb.astype(np.float32).mean(axis=2)
    h, w = grey.shape

    def depth(lines: np.ndarray, limit: int) -> int:
        n = 0
        while n < limit and float(lines[n].std()) < tolerance:
            n += 1
        return n

    top = depth(grey, int(h * max_share))
    bottom = depth(grey[::-1], int(h * max_share))
    left = depth(grey.T, int(w * max_share))
    right = depth(grey.T[::-1], int(w * max_share))
    return rgb[top : h - bottom, left : w - right]


def match_colors(photo: np.ndarray, style: np.ndarray) -> np.ndarray:
    """Give the photo the style's colour mean and covariance (`stylejax.colour`, the map the
    any-style model's results get too).

    A cheap head start: Gram losses then only have to add texture, not drag every pixel's
    colour across the gamut.
    """
    return match_colours(np.asarray(photo, np.uint8), colour_stats(style))


def measure_losses(photo_rgb: np.ndarray, style_rgb: np.ndarray, result_rgb: np.ndarray,
                   cfg: CustomStyleConfig | None = None) -> dict[str, float]:
    """Style / content / TV losses of a finished picture at its own size (for reports and tests)."""
    cfg = cfg or CustomStyleConfig()
    h, w = result_rgb.shape[:2]
    photo = _to_batch(np.asarray(Image.fromarray(photo_rgb).resize((w, h), Image.LANCZOS)))
    style = _to_batch(_resize(trim_frame(style_rgb),
                              round((cfg.style_size or max(h, w)) * cfg.stroke)))
    obj = _Objective(cfg, photo, style)
    terms = jax.jit(obj.loss_terms)(_to_batch(result_rgb))
    return {k: float(v) for k, v in terms.items()}


def _fraction(start: float, cfg: CustomStyleConfig, done: int, total: int) -> float:
    """Progress: whichever of time and steps is nearer its limit (the run ends at the first)."""
    return min(1.0, max((time.monotonic() - start) / cfg.time_budget_s, done / total))


def stylize_with_image(
    photo_rgb: np.ndarray,
    style_rgb: np.ndarray,
    cfg: CustomStyleConfig | None = None,
    *,
    keep_colors: bool = False,
    progress: ProgressFn | None = None,
    should_stop: Callable[[], bool] | None = None,
    init: np.ndarray | None = None,
) -> CustomStyleResult:
    """Optimise the photo towards the style picture within a step and time budget.

    `progress(fraction, losses)` is called after each step; `should_stop()` (e.g. a user's
    cancel) ends the run early with the best picture so far. `init` (H×W×3 uint8, e.g. the
    any-style model's result: "refine") is where the pixels start, resized to the working
    size, instead of the recoloured photo; the content target is still the photo.
    """
    cfg = cfg or CustomStyleConfig()
    start = time.monotonic()
    deadline = start + cfg.time_budget_s
    enable_compilation_cache()  # a worker's second custom job skips most compiling
    photo_full = _resize(photo_rgb, cfg.size)
    style_rgb = trim_frame(style_rgb)
    x = None
    history: list[dict] = []
    done = 0
    stopped = False
    key = jax.random.PRNGKey(0)
    caps = [max(1, round(cfg.steps * share)) for share in cfg.scale_steps]
    total_steps = sum(caps)
    for k, (scale, cap) in enumerate(zip(cfg.scales, caps)):
        long_side = max(16, round(cfg.size * scale))
        photo = _to_batch(_resize(photo_rgb, long_side))
        style = _to_batch(_resize(style_rgb,
                                  round((cfg.style_size or cfg.size) * cfg.stroke * scale)))
        obj = _Objective(cfg, photo, style)
        step, render = obj.make_step(photo.shape)
        # Start from `init`, the photo (recoloured), or the previous scale's result upsampled.
        if x is None and init is not None:
            x = _to_batch(resize_to(init, photo.shape[1:3]))
        elif x is None:
            start_rgb = (match_colors(np.asarray(photo[0] * 255).astype(np.uint8),
                                      np.asarray(style[0] * 255).astype(np.uint8))
                         if cfg.match_colors_first else None)
            x = photo if start_rgb is None else _to_batch(start_rgb)
        else:
            x = jax.image.resize(x, photo.shape, "bicubic").clip(0, 1)
        levels = make_pyramid(x, cfg.pyramid_levels)
        opt_state = obj.opt.init(levels)
        # This scale may spend its share of the time left; the last one spends all of it.
        share = cfg.scale_time[k] / sum(cfg.scale_time[k:])
        scale_end = time.monotonic() + share * max(0.0, deadline - time.monotonic())
        terms: dict = {}
        measure = jax.jit(obj.loss_terms)
        for i in range(cap):
            key, sub = jax.random.split(key)
            levels, opt_state, out = step(levels, opt_state, sub)
            done += 1
            if "style" in out:  # Adam's step returns its terms; L-BFGS's only the total
                terms = {t: float(v) for t, v in out.items() if t != "total"}
            elif i % cfg.measure_every == 0:
                terms = {t: float(v) for t, v in measure(render(levels)).items()}
            record = dict(terms, total=float(out["total"]), step=done, scale=scale,
                          seconds=time.monotonic() - start)
            history.append(record)
            if progress is not None:
                progress(_fraction(start, cfg, done, total_steps), record)
            if should_stop is not None and should_stop():
                stopped = True
                break
            now = time.monotonic()
            if done >= cfg.min_steps and now > deadline:
                stopped = done < total_steps
                break
            if done >= cfg.min_steps and now > scale_end and k < len(caps) - 1:
                break  # on to the next scale
        x = render(levels)
        # The scale's last record carries the losses of the picture it hands on.
        history[-1].update({t: float(v) for t, v in measure(x).items()})
        if stopped:
            break
    out = jax.image.resize(x, (1, *photo_full.shape[:2], 3), "bicubic").clip(0, 1)
    if keep_colors:
        out = preserve_colors(_to_batch(photo_full), out)
    image = np.asarray(jnp.round(out[0] * 255.0)).astype(np.uint8)
    return CustomStyleResult(image=image, seconds=time.monotonic() - start, steps=done,
                             stopped_early=stopped, history=history)

