"""Unpaired photo ↔ painting training, CycleGAN style (Zhu et al. 2017).

Learns one painter from a folder of their works and a folder of photos, with no pairs: two
generators, G_ab (photo → painting) and G_ba (painting → photo), and one discriminator per
domain. They are our own Generator and MultiScaleDiscriminator with one style slot each, so
G_ab exports as a one-style pack the Stylizer serves like any other. The losses, where this
differs from the paper and what the trials showed (why the identity weight defaults to 0) are
in docs/training.md, "CycleGAN: losses and departures from the paper".

As in trainer/loop.py, the step is pure (all arrays in `CycleState`), batches are a function
of (seed, step), so a run resumed from a checkpoint is exactly the uninterrupted one.
"""

from __future__ import annotations

import argparse
import functools
import logging
import re
import sys
import time
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
from .config import JsonConfig
from .data import PHOTO_EXTENSIONS, PhotoFolder, PrefetchIterator, random_crop_batch
from .grid import center_square, save_grid
from .loop import StopFlag, data_mesh, resume, write_metrics
from .steps import power_iteration

log = logging.getLogger("stylejax.cyclegan")

CONFIG_FILE = "cycle_config.json"
ADV_LOSSES = ("hinge", "lsgan", "wgan-gp")


@dataclass
class CycleConfig(JsonConfig):
    photos: str = ""                     # domain A: a folder of photos
    paintings: str = ""                  # domain B: a folder of one painter's works
    out: str = "runs/cyclegan"
    steps: int = 20_000
    batch: int = 4
    size: int = 128                      # training crop side (multiple of 4)
    seed: int = 0
    lr: float = 2e-4                     # Adam, β = (0.5, 0.999) as in the paper
    cycle_weight: float = 10.0
    identity_weight: float = 0.0         # our generators start as the identity already: the
    # paper's 0.5 × cycle weight then pins them there (measured: no translation learned)
    adv_loss: str = "lsgan"              # hinge | lsgan | wgan-gp
    gp_weight: float = 10.0              # gradient penalty (wgan-gp only)
    channels: tuple[int, int, int] = (16, 32, 64)
    res_blocks: int = 5
    disc_ch: int = 32
    disc_scales: int = 2
    cache_side: int = 256                # pictures are cached with this short side
    log_every: int = 10
    sample_every: int = 500
    ckpt_every: int = 500
    keep: int = 3

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
        for name in ("steps", "batch", "log_every", "sample_every", "ckpt_every", "keep",
                     "res_blocks", "disc_ch", "disc_scales", "cache_side"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive")
        if self.lr <= 0:
            raise ValueError("lr must be positive")
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


# --------------------------------------------------------------------------- the loop


class CycleTrainer:
    """Holds everything a run needs; `run()` trains until cfg.steps or a stop signal."""

    def __init__(self, cfg: CycleConfig):
        cfg.validate()
        self.cfg = cfg
        self.photos = PhotoFolder(cfg.photos, cache_side=cfg.cache_side)
        self.paintings = PhotoFolder(cfg.paintings, cache_side=cfg.cache_side)
        self.out = Path(cfg.out)
        self.out.mkdir(parents=True, exist_ok=True)
        self.models, template = init_state(cfg)
        self.ckpt = Checkpoints(self.out / "checkpoints", keep=cfg.keep)
        self.state: CycleState = resume(self.ckpt, template)
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

    def run(self, until: int | None = None, progress: bool = True) -> dict[str, float]:
        """Train to step `until` (default cfg.steps); returns the last logged metrics."""
        from tqdm import tqdm

        cfg, until = self.cfg, until or self.cfg.steps
        start, last = self.step, {}
        if start >= until:
            return last
        metrics_file = open(self.out / "metrics.jsonl", "a", encoding="utf-8")  # noqa: SIM115
        bar = tqdm(total=until, initial=start, disable=not progress, unit="step",
                   dynamic_ncols=True)
        batches = PrefetchIterator(self.batch_at, start, prefetch=2, stop_step=until,
                                   name="cyclegan-prefetch")
        t0, steps_done = time.monotonic(), 0
        with StopFlag() as stop, metrics_file, bar, batches:
            for step, batch in batches:
                batch = {k: jax.device_put(v, self.sharded) for k, v in batch.items()}
                self.state, m = self._step(self.state, batch)
                steps_done += 1
                bar.update(1)
                n = step + 1
                if n % cfg.log_every == 0 or n == until:
                    last = write_metrics(metrics_file, n, m, steps_done / (time.monotonic() - t0))
                    bar.set_postfix(cycle=f"{last['cycle']:.3f}", idt=f"{last['identity']:.3f}",
                                    adv=f"{last['g_adv']:.3f}", d_a=f"{last['d_a']:.3f}",
                                    d_b=f"{last['d_b']:.3f}")
                if n % cfg.sample_every == 0 or n == until:
                    self.sample_grid(self.out / "samples" / f"step_{n:06d}.png")
                if n % cfg.ckpt_every == 0 or n == until or stop.set:
                    self.ckpt.save(n, self.state, {"step": n}, force=True)
                if stop.set:
                    break
        self.ckpt.wait()
        return last

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
    trainer = CycleTrainer(cfg)
    trainer.run(progress=progress)
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


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="stylejax-train cyclegan",
                                description="unpaired photo → painting training (CycleGAN)")
    d = CycleConfig()
    p.add_argument("--photos", required=True, help="folder of photos (domain A)")
    p.add_argument("--paintings", required=True, help="folder of one painter's works (domain B)")
    p.add_argument("--out", default=d.out, help=f"run folder (default {d.out})")
    p.add_argument("--steps", type=int, default=d.steps)
    p.add_argument("--batch", type=int, default=d.batch)
    p.add_argument("--size", type=int, default=d.size, help="training crop side")
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--lr", type=float, default=d.lr)
    p.add_argument("--adv-loss", choices=ADV_LOSSES, default=d.adv_loss)
    p.add_argument("--cycle-weight", type=float, default=d.cycle_weight)
    p.add_argument("--identity-weight", type=float, default=d.identity_weight,
                   help="default 0: our generators start as the identity, so the paper's "
                   "5 pins them there; raise it to keep more of the photo's colours")
    p.add_argument("--channels", type=int, nargs=3, default=d.channels, metavar="C",
                   help="generator widths at full, 1/2 and 1/4 resolution")
    p.add_argument("--res-blocks", type=int, default=d.res_blocks)
    p.add_argument("--disc-ch", type=int, default=d.disc_ch)
    for name in ("log_every", "sample_every", "ckpt_every", "keep"):
        p.add_argument("--" + name.replace("_", "-"), type=int, default=getattr(d, name))
    p.add_argument("--export", metavar="PACK", help="export G_ab as a style pack when done")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("-v", "--verbose", action="store_true")
    return p


def cyclegan_main(argv: Sequence[str] | None = None) -> int:
    """Train (resuming if the run folder has checkpoints) and optionally export; exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["--"]:  # `stylejax-train cyclegan -- --photos ...` hands on the separator
        argv = argv[1:]
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exit_:  # argparse already printed usage and the error
        return int(exit_.code or 0)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    cfg = CycleConfig(photos=args.photos, paintings=args.paintings, out=args.out,
                      steps=args.steps, batch=args.batch, size=args.size, seed=args.seed,
                      lr=args.lr, adv_loss=args.adv_loss, cycle_weight=args.cycle_weight,
                      identity_weight=args.identity_weight, channels=tuple(args.channels),
                      res_blocks=args.res_blocks, disc_ch=args.disc_ch,
                      log_every=args.log_every, sample_every=args.sample_every,
                      ckpt_every=args.ckpt_every, keep=args.keep)
    try:
        trainer = train(cfg, progress=not args.no_progress)
        print(f"trained to step {trainer.step}; checkpoints in {trainer.out / 'checkpoints'}")
        if args.export:
            trainer.ckpt.close()
            print(f"exported {export_generator(cfg.out, args.export)}")
    except (ValueError, FileNotFoundError, NotADirectoryError) as err:
        print(f"stylejax-train cyclegan: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(cyclegan_main())
