"""Unpaired photo ↔ painting training, CycleGAN style (Zhu et al. 2017).

Learns one painter from a folder of their works and a folder of photos, with no pairs: two
generators, G_ab (photo → painting) and G_ba (painting → photo), and one discriminator per
domain. They are our own Generator and MultiScaleDiscriminator with one style slot each, so
G_ab exports as a one-style pack the Stylizer serves like any other. The losses, where this
differs from the paper and what the trials showed (why the identity weight defaults to 0) are
in docs/training.md, "CycleGAN: losses and departures from the paper".

`CycleTrainer` is a `TrainTask` that trainer/loop.py's `run_loop` runs: the step is pure (all
arrays in `CycleState`), batches are a function of (seed, step), so a run resumed from a
checkpoint is exactly the uninterrupted one.
"""

from __future__ import annotations

import functools
import logging
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx, struct

from stylejax import losses
from stylejax.discriminator import MultiScaleDiscriminator
from stylejax.errors import StyleJAXError
from stylejax.generator import Generator, GeneratorConfig
from stylejax.imageio import decode_image, resize_max_side
from stylejax.pack import StyleInfo, save_pack

from .checkpoints import Checkpoints
from .config import ADV_LOSSES, JsonConfig, opt
from .data import PHOTO_EXTENSIONS, PhotoFolder, PrefetchIterator, random_crop_batch
from .grid import center_square, save_grid
from .loop import data_mesh, resume, run_loop
from .steps import power_iteration

log = logging.getLogger("stylejax.cyclegan")

CONFIG_FILE = "cycle_config.json"


@dataclass
class CycleConfig(JsonConfig):
    """Unpaired photos ↔ one painter's works: two generators, two discriminators."""

    photos: str = opt("", "domain A: a folder of photos")
    paintings: str = opt("", "domain B: a folder of one painter's works")
    out: str = opt("runs/cyclegan", "run folder: config, metrics, samples, checkpoints")
    steps: int = opt(20_000, "training steps (lr constant for the first half, then to 0)")
    batch: int = opt(4, "batch size (split over the visible devices)")
    size: int = opt(128, "training crop side (multiple of 4)")
    seed: int = opt(0, "seed of the initial weights and of every batch")
    lr: float = opt(2e-4, "Adam learning rate, β = (0.5, 0.999) as in the paper")
    cycle_weight: float = opt(10.0, "cycle loss weight")
    identity_weight: float = opt(
        0.0, "identity loss weight; 0 because our generators start as the identity, so the "
        "paper's 5 pins them there; raise it to keep more of the photo's colours")
    adv_loss: str = opt("lsgan", "adversarial loss", ADV_LOSSES)
    gp_weight: float = opt(10.0, "gradient penalty weight (wgan-gp only)")
    channels: tuple[int, int, int] = opt((16, 32, 64),
                                         "generator widths at full, 1/2 and 1/4 resolution")
    res_blocks: int = opt(5, "residual blocks at 1/4 resolution")
    disc_ch: int = opt(32, "discriminator width")
    disc_scales: int = opt(2, "discriminator scales")
    cache_side: int = opt(256, "pictures are cached with this short side")
    log_every: int = opt(10, "steps between metrics records")
    sample_every: int = opt(500, "steps between sample grids")
    ckpt_every: int = opt(500, "steps between checkpoints")
    keep: int = opt(3, "checkpoints kept")

    def validate(self) -> None:
        """Fail before any picture is decoded, with a message a user can act on."""
        for name in ("photos", "paintings"):
            folder = getattr(self, name)
            if not folder:
                raise ValueError(f"no {name} folder given (--{name})")
            if not Path(folder).is_dir():
                raise FileNotFoundError(f"{name} folder {folder} does not exist or is not a "
                                        "folder")
        if self.adv_loss not in ADV_LOSSES:
            raise ValueError(f"adv_loss must be hinge, lsgan or wgan-gp, not {self.adv_loss!r}")
        if self.size % 4 or self.size < 16:
            raise ValueError(f"size must be a multiple of 4 and at least 16, not {self.size}")
        self.require_positive("steps", "batch", "log_every", "sample_every", "ckpt_every", "keep",
                              "res_blocks", "disc_ch", "disc_scales", "cache_side", "lr")
        if min(self.cycle_weight, self.identity_weight, self.gp_weight) < 0:
            raise ValueError("loss weights must not be negative")


# --------------------------------------------------------------------------- the pure step


class CycleState(struct.PyTreeNode):
    """All that changes during training; a checkpoint is exactly this."""

    step: jax.Array
    g_ab: Any              # generator params, photo → painting (what gets exported)
    g_ba: Any              # generator params, painting → photo
    d_a: Any               # discriminator params, judges photos
    d_b: Any               # discriminator params, judges paintings
    d_a_stats: Any         # spectral-norm power-iteration vectors of d_a
    d_b_stats: Any
    g_opt: Any             # one Adam state over (g_ab, g_ba): they are updated jointly
    d_opt: Any             # one Adam state over (d_a, d_b); Adam is per parameter anyway
    key: jax.Array


@dataclass(frozen=True)
class CycleModels:
    """Static structure of the networks (both generators, both discriminators share one)."""

    g_graph: Any
    d_graph: Any           # train mode: refreshes the spectral-norm vectors
    d_eval_graph: Any      # eval mode: fixed vectors, safe inside jax.grad
    g_tx: optax.GradientTransformation
    d_tx: optax.GradientTransformation


def build(cfg: CycleConfig) -> tuple[Generator, Generator, MultiScaleDiscriminator,
                                     MultiScaleDiscriminator]:
    """G_ab, G_ba, D_a, D_b with one style slot each, deterministically from cfg.seed."""
    gcfg = GeneratorConfig(num_styles=1, channels=tuple(cfg.channels), res_blocks=cfg.res_blocks)
    rngs = nnx.Rngs(cfg.seed)
    g_ab, g_ba = Generator(gcfg, rngs=rngs), Generator(gcfg, rngs=rngs)
    d_a, d_b = (MultiScaleDiscriminator(1, ch=cfg.disc_ch, num_scales=cfg.disc_scales, rngs=rngs)
                for _ in range(2))
    return g_ab, g_ba, d_a, d_b


def make_optimizer(cfg: CycleConfig) -> optax.GradientTransformation:
    """The paper's Adam: constant lr for the first half, then linearly down to zero."""
    half = cfg.steps // 2
    lr = optax.linear_schedule(cfg.lr, 0.0, max(cfg.steps - half, 1), transition_begin=half)
    return optax.adam(lr, b1=0.5, b2=0.999)


def init_state(cfg: CycleConfig) -> tuple[CycleModels, CycleState]:
    g_ab, g_ba, d_a, d_b = build(cfg)
    g_graph, g_ab_params = nnx.split(g_ab, nnx.Param)
    _, g_ba_params = nnx.split(g_ba, nnx.Param)
    d_graph, d_a_params, d_a_stats = nnx.split(d_a, nnx.Param, nnx.BatchStat)
    _, d_b_params, d_b_stats = nnx.split(d_b, nnx.Param, nnx.BatchStat)
    d_eval_graph, _, _ = nnx.split(nnx.view(d_a, use_running_average=True), nnx.Param,
                                   nnx.BatchStat)
    g_tx, d_tx = make_optimizer(cfg), make_optimizer(cfg)
    state = CycleState(
        step=jnp.zeros((), jnp.int32), g_ab=g_ab_params, g_ba=g_ba_params, d_a=d_a_params,
        d_b=d_b_params, d_a_stats=d_a_stats, d_b_stats=d_b_stats,
        g_opt=g_tx.init((g_ab_params, g_ba_params)), d_opt=d_tx.init((d_a_params, d_b_params)),
        key=jax.random.key_data(jax.random.PRNGKey(cfg.seed)))
    return CycleModels(g_graph, d_graph, d_eval_graph, g_tx, d_tx), state


def _gan_kind(cfg: CycleConfig) -> str:
    return "wgan" if cfg.adv_loss == "wgan-gp" else cfg.adv_loss


def _l1(x: jax.Array, y: jax.Array) -> jax.Array:
    return jnp.mean(jnp.abs(x - y))


def _generator_loss(g_params, models: CycleModels, cfg: CycleConfig, state: CycleState,
                    a: jax.Array, b: jax.Array):
    g_ab = nnx.merge(models.g_graph, g_params[0])
    g_ba = nnx.merge(models.g_graph, g_params[1])
    d_a = nnx.merge(models.d_eval_graph, state.d_a, state.d_a_stats)
    d_b = nnx.merge(models.d_eval_graph, state.d_b, state.d_b_stats)
    w = jnp.ones((a.shape[0], 1))          # the one style slot
    ids = jnp.zeros((a.shape[0],), jnp.int32)
    fake_b, fake_a = g_ab(a, w), g_ba(b, w)
    kind = _gan_kind(cfg)
    adv = losses.g_loss(d_b(fake_b, ids), kind) + losses.g_loss(d_a(fake_a, ids), kind)
    cycle = _l1(g_ba(fake_b, w), a) + _l1(g_ab(fake_a, w), b)
    identity = jnp.zeros(())
    if cfg.identity_weight > 0:  # two more generator passes: skip them when unused
        identity = _l1(g_ab(b, w), b) + _l1(g_ba(a, w), a)
    total = adv + cfg.cycle_weight * cycle + cfg.identity_weight * identity
    metrics = {"g_total": total, "g_adv": adv, "cycle": cycle, "identity": identity}
    return total, ((fake_a, fake_b), metrics)


def _discriminator_loss(d_params, d_stats, models: CycleModels, cfg: CycleConfig,
                        reals: tuple[jax.Array, jax.Array], fakes: tuple[jax.Array, jax.Array],
                        key: jax.Array):
    """D_a on photos vs G_ba's fakes plus D_b on paintings vs G_ab's fakes."""
    kind, total, metrics = _gan_kind(cfg), 0.0, {}
    keys = jax.random.split(key)
    for name, params, stats, real, fake, k in zip(("d_a", "d_b"), d_params, d_stats, reals,
                                                  fakes, keys):
        disc = nnx.merge(models.d_eval_graph, params, stats)
        ids = jnp.zeros((real.shape[0],), jnp.int32)
        loss = losses.d_loss(disc(real, ids), disc(fake, ids), kind)
        if cfg.adv_loss == "wgan-gp":
            loss = loss + cfg.gp_weight * losses.gradient_penalty(
                lambda x, disc=disc, ids=ids: disc(x, ids), real, fake, k)
        metrics[name] = loss
        total = total + loss
    return total, metrics


def cycle_step(models: CycleModels, cfg: CycleConfig, state: CycleState,
               batch: dict[str, jax.Array]) -> tuple[CycleState, dict[str, jax.Array]]:
    """One joint generator update, then one discriminator update (pure; jit with models, cfg
    bound). batch: {"a": photos, "b": paintings}, each (N, S, S, 3) in [0, 1]."""
    a, b = batch["a"], batch["b"]
    key = jax.random.wrap_key_data(state.key)
    key, gp_key = jax.random.split(key)
    g_params = (state.g_ab, state.g_ba)
    (_, (fakes, g_metrics)), g_grads = jax.value_and_grad(_generator_loss, has_aux=True)(
        g_params, models, cfg, state, a, b)
    g_updates, g_opt = models.g_tx.update(g_grads, state.g_opt, g_params)
    g_ab, g_ba = optax.apply_updates(g_params, g_updates)

    # Spectral-norm vectors are refreshed outside the gradient (NNX will not mutate them inside).
    d_stats = (power_iteration(models, state.d_a, state.d_a_stats, 1),
               power_iteration(models, state.d_b, state.d_b_stats, 1))
    d_params = (state.d_a, state.d_b)
    fakes = jax.lax.stop_gradient(fakes)
    (_, d_metrics), d_grads = jax.value_and_grad(_discriminator_loss, has_aux=True)(
        d_params, d_stats, models, cfg, (a, b), fakes, gp_key)
    d_updates, d_opt = models.d_tx.update(d_grads, state.d_opt, d_params)
    d_a, d_b = optax.apply_updates(d_params, d_updates)
    new = state.replace(step=state.step + 1, g_ab=g_ab, g_ba=g_ba, d_a=d_a, d_b=d_b,
                        d_a_stats=d_stats[0], d_b_stats=d_stats[1], g_opt=g_opt, d_opt=d_opt,
                        key=jax.random.key_data(key))
    return new, {**g_metrics, **d_metrics}


# --------------------------------------------------------------------------- the task


class CycleTrainer:
    """The CycleGAN mode as a `TrainTask` (trainer/loop.py runs it)."""

    def __init__(self, cfg: CycleConfig):
        cfg.validate()
        self.cfg = cfg
        self.photos = PhotoFolder(cfg.photos, cache_side=cfg.cache_side)
        self.paintings = PhotoFolder(cfg.paintings, cache_side=cfg.cache_side)
        self.out = Path(cfg.out)
        self.out.mkdir(parents=True, exist_ok=True)
        self.models, template = init_state(cfg)
        self.ckpt = Checkpoints(self.out / "checkpoints", keep=cfg.keep)
        self.state: CycleState = resume(self.ckpt, template, cfg, self.out / CONFIG_FILE)
        self.mesh, self.replicated, self.sharded = data_mesh(cfg.batch)
        self.state = jax.device_put(self.state, self.replicated)
        self._step = jax.jit(functools.partial(cycle_step, self.models, cfg),
                             out_shardings=(self.replicated, self.replicated),
                             donate_argnums=(0,))
        g_graph = self.models.g_graph
        self._translate = jax.jit(
            lambda params, x: nnx.merge(g_graph, params)(x, jnp.ones((x.shape[0], 1))))
        (self.out / CONFIG_FILE).write_text(cfg.to_json())

    @property
    def step(self) -> int:
        return int(self.state.step)

    def batch_at(self, step: int) -> dict[str, np.ndarray]:
        """Photos then paintings from one rng seeded by (seed, step): the same in any process."""
        rng = np.random.default_rng([self.cfg.seed, step])
        a = random_crop_batch(self.photos.images, rng, self.cfg.batch, self.cfg.size)
        b = random_crop_batch(self.paintings.images, rng, self.cfg.batch, self.cfg.size)
        return {"a": a, "b": b}

    def batches(self, start: int, until: int) -> PrefetchIterator:
        return PrefetchIterator(self.batch_at, start, prefetch=2, stop_step=until,
                                name="cyclegan-prefetch")

    def train_step(self, state: CycleState, batch: dict[str, np.ndarray]
                   ) -> tuple[CycleState, dict[str, jax.Array]]:
        return self._step(state, {k: jax.device_put(v, self.sharded) for k, v in batch.items()})

    def postfix(self, metrics: dict[str, float]) -> dict[str, str]:
        return {k: f"{metrics[name]:.3f}" for k, name in
                (("cycle", "cycle"), ("idt", "identity"), ("adv", "g_adv"), ("d_a", "d_a"),
                 ("d_b", "d_b"))}

    def run(self, until: int | None = None, progress: bool = True) -> dict[str, float]:
        """Train to step `until` (default cfg.steps); returns the last logged metrics."""
        return run_loop(self, until, progress)

    def translate(self, params: Any, tiles: list[np.ndarray]) -> list[np.ndarray]:
        x = jnp.asarray(np.stack(tiles), jnp.float32) / 255.0
        y = np.asarray(jnp.round(self._translate(params, x) * 255)).astype(np.uint8)
        return list(y)

    def sample_grid(self, path: Path, side: int = 128, n: int = 4) -> Path:
        """Rows of photo, A→B, A→B→A, painting, B→A, B→A→B: style and round trip at a glance."""
        n = min(n, len(self.photos), len(self.paintings))
        a = [center_square(im, side) for im in self.photos.images[:n]]
        b = [center_square(im, side) for im in self.paintings.images[:n]]
        ab, ba = jax.device_get((self.state.g_ab, self.state.g_ba))
        fake_b, fake_a = self.translate(ab, a), self.translate(ba, b)
        rec_a, rec_b = self.translate(ba, fake_b), self.translate(ab, fake_a)
        rows = [list(r) for r in zip(a, fake_b, rec_a, b, fake_a, rec_b)]
        return save_grid(path, rows, ["photo", "A->B", "A->B->A", "painting", "B->A", "B->A->B"])


def train(cfg: CycleConfig, progress: bool = True) -> CycleTrainer:
    """Build (or resume) a CycleGAN run and train it to cfg.steps."""
    trainer = CycleTrainer(cfg)
    run_loop(trainer, progress=progress)
    return trainer


# --------------------------------------------------------------------------- export


def _slug(name: str) -> str:
    return re.sub(r"[^a-z0-9_-]+", "-", name.lower()).strip("-_")[:40] or "painter"


def _first_picture(folder: Path, side: int = 256) -> np.ndarray | None:
    """A thumbnail for the pack: the first readable picture, in PhotoFolder's order."""
    if not folder.is_dir():
        return None
    paths = sorted((p for p in folder.rglob("*") if p.suffix.lower() in PHOTO_EXTENSIONS),
                   key=lambda p: p.relative_to(folder).as_posix())
    for p in paths:
        try:
            return resize_max_side(decode_image(p).rgb, side)
        except (StyleJAXError, OSError):
            continue
    return None


def export_generator(run_dir: str | Path, pack_dir: str | Path, step: int | None = None) -> Path:
    """Write G_ab (photo → painting) of a run's checkpoint as a one-style pack.

    The style id and name come from the painting folder's name (e.g. `monet/` → "monet"); the
    license is marked unknown, since the paintings' terms are not known here.
    """
    run_dir = Path(run_dir)
    if not (run_dir / CONFIG_FILE).is_file():
        raise FileNotFoundError(f"{run_dir} is not a CycleGAN run folder (no {CONFIG_FILE})")
    cfg = CycleConfig.load(run_dir / CONFIG_FILE)
    models, template = init_state(cfg)
    ckpt = Checkpoints(run_dir / "checkpoints", keep=cfg.keep)
    try:
        state, _ = ckpt.restore(template, step)
    finally:
        ckpt.close()
    generator = nnx.merge(models.g_graph, jax.device_get(state.g_ab))
    folder = Path(cfg.paintings)
    info = StyleInfo(id=_slug(folder.name), names={"en": folder.name.replace("_", " ")},
                     source=f"CycleGAN on the paintings in {folder.name}/",
                     license="unknown: check before publishing")
    thumb = _first_picture(folder)
    training = {
        "method": "CycleGAN (Zhu et al. 2017), unpaired photos → paintings; this is G_ab",
        "steps": int(state.step), "batch": cfg.batch, "size": cfg.size, "seed": cfg.seed,
        "losses": {"adv_loss": cfg.adv_loss, "cycle": cfg.cycle_weight,
                   "identity": cfg.identity_weight},
        "weights": "raw (no EMA)",
    }
    return save_pack(pack_dir, generator, [info],
                     thumbnails={info.id: thumb} if thumb is not None else None,
                     training=training)


# --------------------------------------------------------------------------- command line


def cyclegan_main(argv: Sequence[str] | None = None) -> int:
    """`stylejax-train cyclegan ...`, i.e. `stylejax-train train --mode cyclegan ...`."""
    from .cli import main

    return main(["cyclegan", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(cyclegan_main())
