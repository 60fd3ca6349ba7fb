"""The distill mode: a cheaper student generator that imitates a trained pack, every style.

Why: a clip is hundreds of frames, and on a 2-core CPU the pack's generator, (16, 32, 64) × 5
residual blocks, is what limits video to ~5 frames/s at 480p (docs/video.md). A narrower,
shallower network trained to reproduce the pack's own outputs keeps its look at about half the
cost per pixel. The target is the teacher's picture, so no feature net, style pictures or
discriminator are needed, and a run converges in a few thousand cheap steps.

The loss: L1 on the pixels plus L1 on their horizontal and vertical differences (strokes are
edges; a pixel loss alone lets them blur). Half of every batch sees a random blend of two
styles, so the student's style tables also interpolate like the teacher's.

The student is exported as an ordinary pack (same style ids, names, thumbnails and credits)
into the teacher pack's `video/` folder, where `Stylizer.for_video` finds it.
"""

from __future__ import annotations

import functools
import json
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx, struct
from PIL import Image

from stylejax.generator import Generator, GeneratorConfig
from stylejax.pack import StylePack, load_pack, save_pack

from .checkpoints import Checkpoints
from .config import UPSAMPLES, JsonConfig, opt
from .data import ContentStream, PhotoFolder, PrefetchIterator
from .grid import center_square, save_grid
from .loop import data_mesh, resume, run_loop, split_holdout
from .steps import OptimConfig, generator_update, make_optimizers

CONFIG_FILE = "distill_config.json"


@dataclass
class DistillConfig(JsonConfig):
    """A student pack trained to reproduce a teacher pack's outputs (the video generator)."""

    teacher: str = opt("stylejax/assets/packs/default", "the pack to imitate")
    content: str = opt("", "folder of photos")
    out: str = opt("runs/distill", "run folder: config, metrics, samples, checkpoints")
    steps: int = opt(3000, "training steps")
    batch: int = opt(8, "batch size (split over the visible devices)")
    size: int = opt(160, "training crop side (multiple of 4)")
    seed: int = opt(0, "seed of the initial weights and of every batch")
    holdout: int = opt(4, "photos kept out of training, for samples and the PSNR check")
    cache_side: int = opt(320, "photos are cached with this short side")
    channels: tuple[int, int, int] = opt((16, 24, 48),
                                         "student widths at full, 1/2 and 1/4 resolution")
    res_blocks: int = opt(3, "student residual blocks at 1/4 resolution")
    upsample: str = opt("shuffle", "decoder: shuffle (depth-to-space) | nearest, bilinear, "
                        "bilinear-edge (resize-conv)",
                        UPSAMPLES)
    edge_weight: float = opt(1.0, "weight of the L1 on pixel differences (edges, strokes)")
    blend_fraction: float = opt(0.5, "share of each batch that sees a blend of two styles")
    norm_lr_mult: float = opt(3.0, "learning-rate multiplier of the per-style norm tables")
    lr: float = opt(2e-3, "learning rate (Adam, warm-up then cosine decay)")
    warmup: int = opt(100, "learning-rate warm-up steps")
    ema_decay: float = opt(0.99, "EMA decay of the student weights (what is exported)")
    log_every: int = opt(10, "steps between metrics records")
    sample_every: int = opt(250, "steps between sample grids")
    ckpt_every: int = opt(250, "steps between checkpoints")
    keep: int = opt(3, "checkpoints kept")

    def optim(self) -> OptimConfig:
        return OptimConfig(lr_g=self.lr, warmup=self.warmup, steps=self.steps,
                           ema_decay=self.ema_decay, norm_lr_mult=self.norm_lr_mult,
                           b1=0.9, b2=0.99)

    def validate(self) -> None:
        if not self.content:
            raise ValueError("no content folder given (--content)")
        if self.size % 4:
            raise ValueError("size must be a multiple of 4")
        if not 0.0 <= self.blend_fraction <= 1.0:
            raise ValueError("blend_fraction must be between 0 and 1")
        self.require_positive("steps", "batch", "size", "log_every", "sample_every", "ckpt_every",
                              "keep")


class DistillState(struct.PyTreeNode):
    """All that changes while distilling; a checkpoint is exactly this."""

    step: jax.Array
    g: Any          # student params
    g_ema: Any      # their moving average: what gets exported
    g_opt: Any


@dataclass(frozen=True)
class DistillModels:
    """Static graphs: the student's (trained) and the teacher's (frozen)."""

    g_graph: Any
    t_graph: Any
    g_tx: optax.GradientTransformation


def _edges(x: jax.Array) -> tuple[jax.Array, jax.Array]:
    return x[:, 1:] - x[:, :-1], x[:, :, 1:] - x[:, :, :-1]


def psnr_db(mse: jax.Array) -> jax.Array:
    """PSNR of pictures in [0, 1] from their mean squared error (the step's log and the
    exported figure use the same one)."""
    return -10.0 * jnp.log10(mse + 1e-10)


def distill_loss(student: jax.Array, teacher: jax.Array, edge_weight: float
                 ) -> tuple[jax.Array, dict[str, jax.Array]]:
    """L1 on pixels + `edge_weight` × L1 on their differences; both pictures in [0, 1]."""
    pixel = jnp.mean(jnp.abs(student - teacher))
    (sy, sx), (ty, tx) = _edges(student), _edges(teacher)
    edge = 0.5 * (jnp.mean(jnp.abs(sy - ty)) + jnp.mean(jnp.abs(sx - tx)))
    return pixel + edge_weight * edge, {"pixel": pixel, "edge": edge}


def distill_step(models: DistillModels, optim: OptimConfig, edge_weight: float,
                 state: DistillState, t_params: Any, batch: dict[str, jax.Array]
                 ) -> tuple[DistillState, dict[str, jax.Array]]:
    """One pure step: the teacher's picture of the batch, the student's, one Adam update."""
    x, w = batch["content"], batch["style_w"]
    target = jax.lax.stop_gradient(nnx.merge(models.t_graph, t_params)(x, w))

    def loss_fn(g_params):
        y = nnx.merge(models.g_graph, g_params)(x, w)
        loss, parts = distill_loss(y, target, edge_weight)
        return loss, {**parts, "psnr": psnr_db(jnp.mean(jnp.square(y - target)))}

    (loss, parts), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.g)
    g, ema, g_opt = generator_update(models, optim, state, grads)
    new = state.replace(step=state.step + 1, g=g, g_ema=ema, g_opt=g_opt)
    return new, {"loss": loss, **parts}


def style_weights(rng: np.random.Generator, ids: np.ndarray, num_styles: int,
                  blend_fraction: float) -> np.ndarray:
    """One-hot rows, where a `blend_fraction` share mixes in a second style at a random mix."""
    w = np.eye(num_styles, dtype=np.float32)[ids]
    if num_styles < 2:
        return w
    for i in np.flatnonzero(rng.random(len(ids)) < blend_fraction):
        other = (ids[i] + rng.integers(1, num_styles)) % num_styles
        mix = np.float32(rng.uniform(0.2, 0.8))
        w[i] *= 1 - mix
        w[i, other] += mix
    return w


def build_student(cfg: DistillConfig, num_styles: int) -> Generator:
    gcfg = GeneratorConfig(num_styles=num_styles, channels=tuple(cfg.channels),
                           res_blocks=cfg.res_blocks, upsample=cfg.upsample)
    return Generator(gcfg, rngs=nnx.Rngs(cfg.seed))


def init_distill(student: Generator, teacher: Generator, optim: OptimConfig
                 ) -> tuple[DistillModels, DistillState, Any]:
    g_graph, g_params = nnx.split(student, nnx.Param)
    t_graph, t_params = nnx.split(teacher, nnx.Param)
    g_tx, _ = make_optimizers(optim)
    state = DistillState(step=jnp.zeros((), jnp.int32), g=g_params,
                         g_ema=jax.tree.map(jnp.copy, g_params), g_opt=g_tx.init(g_params))
    return DistillModels(g_graph, t_graph, g_tx), state, t_params


class DistillTrainer:
    """The distill mode as a `trainer.loop.TrainTask`."""

    def __init__(self, cfg: DistillConfig):
        cfg.validate()
        self.cfg = cfg
        self.out = Path(cfg.out)
        self.out.mkdir(parents=True, exist_ok=True)
        self.teacher: StylePack = load_pack(cfg.teacher)
        n = len(self.teacher.styles)
        folder = PhotoFolder(cfg.content, cache_side=cfg.cache_side)
        self.train_photos, self.holdout = split_holdout(folder, cfg.holdout)
        self.optim_cfg = cfg.optim()
        self.models, template, t_params = init_distill(build_student(cfg, n),
                                                       self.teacher.generator, self.optim_cfg)
        self.ckpt = Checkpoints(self.out / "checkpoints", keep=cfg.keep)
        self.state: DistillState = resume(self.ckpt, template, cfg, self.out / CONFIG_FILE)
        _, self.replicated, self.sharded = data_mesh(cfg.batch)
        self.state = jax.device_put(self.state, self.replicated)
        self.t_params = jax.device_put(t_params, self.replicated)
        self._step = jax.jit(functools.partial(distill_step, self.models, self.optim_cfg,
                                               cfg.edge_weight),
                             out_shardings=(self.replicated, self.replicated),
                             donate_argnums=(0,))
        self.stream = ContentStream(self.train_photos, batch=cfg.batch, size=cfg.size,
                                    seed=cfg.seed, num_styles=n)
        (self.out / CONFIG_FILE).write_text(cfg.to_json())

    def batches(self, start: int, until: int) -> AbstractContextManager:
        return _WithWeights(self.stream.iterate(start, until), self.cfg, len(self.teacher.styles))

    def train_step(self, state: DistillState, batch: dict[str, np.ndarray]
                   ) -> tuple[DistillState, dict[str, jax.Array]]:
        placed = {k: jax.device_put(batch[k], self.sharded) for k in ("content", "style_w")}
        return self._step(state, self.t_params, placed)

    def postfix(self, metrics: dict[str, float]) -> dict[str, str]:
        return {"loss": f"{metrics['loss']:.4f}", "psnr": f"{metrics['psnr']:.1f}"}

    def student(self) -> Generator:
        return nnx.merge(self.models.g_graph, jax.device_get(self.state.g_ema))

    def sample_grid(self, path: Path, side: int = 160) -> Path | None:
        """Per held-out photo: the photo, then teacher | student for the first styles."""
        photos = self.holdout or self.train_photos.images[:4]
        if not photos:
            return None
        tiles = [center_square(p, side) for p in photos]
        x = jnp.asarray(np.stack(tiles), jnp.float32) / 255.0
        student, teacher = self.student(), self.teacher.generator
        rows, names = [[t] for t in tiles], ["photo"]
        for s, info in enumerate(self.teacher.styles[:3]):
            w = jax.nn.one_hot(jnp.full((len(tiles),), s), len(self.teacher.styles))
            for who, net in (("teacher", teacher), ("student", student)):
                y = np.asarray(jnp.round(net(x, w) * 255)).astype(np.uint8)
                for r in range(len(tiles)):
                    rows[r].append(y[r])
                names.append(f"{info.id} {who}")
        return save_grid(path, rows, names)


class _WithWeights:
    """The content stream's batches plus each sample's style weights (blends included), drawn
    from their own (seed, step) generator so resuming stays exact."""

    def __init__(self, it: PrefetchIterator, cfg: DistillConfig, num_styles: int):
        self.it, self.cfg, self.n = it, cfg, num_styles

    def __enter__(self):
        self.it.__enter__()
        return self

    def __exit__(self, *exc):
        return self.it.__exit__(*exc)

    def __iter__(self):
        for step, batch in self.it:
            rng = np.random.default_rng([self.cfg.seed, step, 1])
            batch["style_w"] = style_weights(rng, batch["style_ids"], self.n,
                                             self.cfg.blend_fraction)
            yield step, batch


def psnr_against_teacher(student: Generator, teacher: Generator, photos: list[np.ndarray],
                         side: int = 256) -> float:
    """Mean PSNR (dB) of the student's picture against the teacher's, every style."""
    n = teacher.config.num_styles
    x = jnp.asarray(np.stack([center_square(p, side) for p in photos]), jnp.float32) / 255.0
    scores = []
    for s in range(n):
        w = jax.nn.one_hot(jnp.full((len(photos),), s), n)
        mse = jnp.mean(jnp.square(student(x, w) - teacher(x, w)), axis=(1, 2, 3))
        scores += list(np.asarray(psnr_db(mse)))
    return float(np.mean(scores))


def export_student(run_dir: str | Path, out_dir: str | Path | None = None,
                   step: int | None = None) -> Path:
    """A run's EMA student → a pack folder (default: the teacher's `video/` folder), with the
    teacher's styles, thumbnails and credits and the student's PSNR against the teacher."""
    run_dir = Path(run_dir)
    cfg = DistillConfig.load(run_dir / CONFIG_FILE)
    teacher = load_pack(cfg.teacher)
    models, template, _ = init_distill(build_student(cfg, len(teacher.styles)),
                                       teacher.generator, cfg.optim())
    ckpt = Checkpoints(run_dir / "checkpoints", keep=cfg.keep)
    state, _ = ckpt.restore(template, step)
    ckpt.close()
    student = nnx.merge(models.g_graph, jax.device_get(state.g_ema))
    _, holdout = split_holdout(PhotoFolder(cfg.content, cache_side=cfg.cache_side), cfg.holdout)
    thumbs = {}
    for info in teacher.styles:
        if info.thumbnail and teacher.root is not None:
            thumbs[info.id] = np.asarray(Image.open(teacher.root / info.thumbnail).convert("RGB"))
    training = {"steps": int(state.step), "mode": "distill", "batch": cfg.batch,
                "size": cfg.size, "seed": cfg.seed, "teacher": str(cfg.teacher),
                "teacher_generator": teacher.config.to_dict(),
                "losses": {"pixel_l1": 1.0, "edge_l1": cfg.edge_weight},
                "psnr_vs_teacher_db": (round(psnr_against_teacher(student, teacher.generator,
                                                                  holdout), 2)
                                       if holdout else None),
                "weights": "EMA"}
    out = Path(out_dir) if out_dir else Path(cfg.teacher) / "video"
    save_pack(out, student, teacher.styles, thumbnails=thumbs, training=training,
              license_notes=teacher.license_notes, palette=teacher.palette)
    (run_dir / "exported.json").write_text(json.dumps({"pack": str(out), **training}, indent=1))
    return out


def train_student(cfg: DistillConfig, progress: bool = True) -> DistillTrainer:
    """Build (or resume) a distill run and train it to cfg.steps."""
    task = DistillTrainer(cfg)
    run_loop(task, progress=progress)
    return task
