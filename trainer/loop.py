"""The training loop: data in, jitted steps over a device mesh, logs, grids, checkpoints.

Data-parallel over every visible device (a 1-D `jax.sharding.Mesh`): the batch is split along
its first axis, parameters are replicated, XLA inserts the gradient all-reduce. On several hosts
call `jax.distributed.initialize()` first (docs/training.md); each host computes the same
deterministic batch and contributes its slice.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import json
import logging
import signal
import time
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from stylejax.discriminator import MultiScaleDiscriminator
from stylejax.features import load_feature_net
from stylejax.generator import Generator, GeneratorConfig

from .checkpoints import Checkpoints
from .config import TrainConfig
from .data import ContentStream, PhotoFolder, StyleImages
from .grid import center_square, save_grid
from .steps import TrainState, init_state, style_targets, train_step

log = logging.getLogger("stylejax.train")


class StopFlag:
    """Set by SIGINT/SIGTERM: the loop finishes its step, writes a checkpoint, and exits."""

    def __init__(self):
        self.set = False
        self._old: dict[int, Any] = {}

    def __enter__(self):
        for sig in (signal.SIGINT, signal.SIGTERM):
            # Outside the main thread signals cannot be caught: train on without the handler.
            with contextlib.suppress(ValueError):
                self._old[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, _frame):
        log.warning("received %s: checkpointing and stopping", signal.Signals(signum).name)
        self.set = True

    def __exit__(self, *exc):
        for sig, old in self._old.items():
            signal.signal(sig, old)


def build(cfg: TrainConfig, num_styles: int) -> tuple[Generator, MultiScaleDiscriminator]:
    gcfg = GeneratorConfig(num_styles=num_styles, channels=tuple(cfg.channels),
                           res_blocks=cfg.res_blocks, upsample=cfg.upsample)
    rngs = nnx.Rngs(cfg.seed)
    return (Generator(gcfg, rngs=rngs),
            MultiScaleDiscriminator(num_styles, ch=cfg.disc_ch, num_scales=cfg.disc_scales,
                                    rngs=rngs))


def split_holdout(folder: PhotoFolder, n: int) -> tuple[PhotoFolder, list[np.ndarray]]:
    """Every k-th photo (deterministic) is kept out of training for samples and eval."""
    if n <= 0 or len(folder.images) <= n:
        return folder, []
    k = len(folder.images) // n
    held = set(range(k // 2, len(folder.images), k)[:n])
    train = copy.copy(folder)
    train.images = [im for i, im in enumerate(folder.images) if i not in held]
    train.paths = [p for i, p in enumerate(folder.paths) if i not in held]
    return train, [folder.images[i] for i in sorted(held)]


def write_metrics(file, step: int, metrics: dict, rate: float,
                  board: Any = None) -> dict[str, float]:
    """Append one JSONL record (step, steps/s, wall time, losses); returns the losses.

    `board` is an optional TensorBoard writer (see `tensorboard_writer`).
    """
    last = {k: float(v) for k, v in jax.device_get(metrics).items()}
    file.write(json.dumps({"step": step, "steps_per_s": rate, "time": time.time(), **last}) + "\n")
    file.flush()
    if board is not None:
        for k, v in {**last, "steps_per_s": rate}.items():
            board.add_scalar(k, v, step)
    return last


def tensorboard_writer(log_dir: Path) -> Any:
    """A TensorBoard SummaryWriter when tensorboardX is installed, else None (JSONL only)."""
    try:
        from tensorboardX import SummaryWriter
    except ImportError:
        return None
    return SummaryWriter(str(log_dir))


def resume(ckpt: Checkpoints, template: Any) -> Any:
    """The latest checkpoint's state if there is one, else the fresh template."""
    if ckpt.latest_step() is None:
        return template
    state, _ = ckpt.restore(template)
    log.info("resumed from step %d", int(state.step))
    return state


def data_mesh(batch: int) -> tuple[Mesh, NamedSharding, NamedSharding]:
    """A 1-D mesh over every visible device: (mesh, replicated, batch-sharded) shardings."""
    devices = np.array(jax.devices())
    if batch % len(devices):
        raise ValueError(f"batch {batch} does not split over {len(devices)} devices")
    mesh = Mesh(devices, ("data",))
    return mesh, NamedSharding(mesh, P()), NamedSharding(mesh, P("data"))


class Trainer:
    """Holds everything a run needs; `run()` trains until cfg.steps or a stop signal."""

    def __init__(self, cfg: TrainConfig):
        cfg.validate()
        self.cfg = cfg
        self.out = Path(cfg.out)
        self.out.mkdir(parents=True, exist_ok=True)
        folder = PhotoFolder(cfg.content, cache_side=cfg.cache_side)
        self.train_photos, self.holdout = split_holdout(folder, cfg.holdout)
        self.styles = StyleImages(cfg.styles, side=cfg.style_side)
        n = len(self.styles)
        g, d = build(cfg, n)
        self.gen_config = g.config
        self.models, template, self.f_state = init_state(g, d, load_feature_net(), cfg.optim(),
                                                         cfg.seed)
        self.loss_cfg, self.optim_cfg = cfg.loss(), cfg.optim()
        self.targets = style_targets(self.models, self.f_state,
                                     [jnp.asarray(self.styles.target(i)) for i in range(n)],
                                     self.loss_cfg)
        self.ckpt = Checkpoints(self.out / "checkpoints", keep=cfg.keep)
        self.state: TrainState = resume(self.ckpt, template)
        self.mesh, self.replicated, self.sharded = data_mesh(cfg.batch)
        self.state = jax.device_put(self.state, self.replicated)
        self.f_state = jax.device_put(self.f_state, self.replicated)
        self.targets = jax.device_put(self.targets, self.replicated)
        self._step = jax.jit(functools.partial(train_step, self.models, self.loss_cfg,
                                               self.optim_cfg),
                             out_shardings=(self.replicated, self.replicated),
                             donate_argnums=(0,))
        self.stream = ContentStream(self.train_photos, batch=cfg.batch, size=cfg.size,
                                    seed=cfg.seed, num_styles=n, styles=self.styles)
        (self.out / "train_config.json").write_text(cfg.to_json())

    @property
    def step(self) -> int:
        return int(self.state.step)

    def put_batch(self, batch: dict[str, np.ndarray]) -> dict[str, jax.Array]:
        return {k: jax.device_put(v, self.sharded) for k, v in batch.items()}

    def run(self, until: int | None = None, progress: bool = True) -> dict[str, float]:
        """Train to step `until` (default cfg.steps); returns the last logged metrics."""
        from tqdm import tqdm

        cfg, until = self.cfg, until or self.cfg.steps
        start = self.step
        last: dict[str, float] = {}
        if start >= until:
            return last
        metrics_file = open(self.out / "metrics.jsonl", "a", encoding="utf-8")  # noqa: SIM115
        board = tensorboard_writer(self.out / "tensorboard")
        bar = tqdm(total=until, initial=start, disable=not progress, unit="step",
                   dynamic_ncols=True)
        t0, steps_done = time.monotonic(), 0
        with StopFlag() as stop, metrics_file, bar, self.stream.iterate(start, until) as batches:
            for step, batch in batches:
                self.state, m = self._step(self.state, self.f_state, self.targets,
                                           self.put_batch(batch))
                steps_done += 1
                bar.update(1)
                n = step + 1
                if n % cfg.log_every == 0 or n == until:
                    last = write_metrics(metrics_file, n, m, steps_done / (time.monotonic() - t0),
                                         board)
                    bar.set_postfix(content=f"{last['content']:.3f}", style=f"{last['style']:.3f}",
                                    adv=f"{last['g_adv']:.3f}", d=f"{last.get('d_loss', 0):.3f}")
                if n % cfg.sample_every == 0 or n == until:
                    self.sample_grid(self.out / "samples" / f"step_{n:06d}.png")
                if n % cfg.ckpt_every == 0 or n == until or stop.set:
                    self.ckpt.save(n, self.state, {"step": n}, force=True)
                if stop.set:
                    break
        self.ckpt.wait()
        if board is not None:
            board.close()
        return last

    def generator(self, ema: bool = True) -> Generator:
        """The trained generator (EMA weights by default: smoother, what gets exported)."""
        params = jax.device_get(self.state.g_ema if ema else self.state.g)
        return nnx.merge(self.models.g_graph, params)

    def sample_grid(self, path: Path, side: int = 128, ema: bool = True) -> Path | None:
        photos = self.holdout or self.train_photos.images[:4]
        if not photos:
            return None
        gen = self.generator(ema)
        tiles = [center_square(p, side) for p in photos]
        x = jnp.asarray(np.stack(tiles), jnp.float32) / 255.0
        rows = [[t] for t in tiles]
        run = jax.jit(lambda x, w: gen(x, w))
        for s in range(len(self.styles)):
            w = jax.nn.one_hot(jnp.full((len(tiles),), s), len(self.styles))
            y = np.asarray(jnp.round(run(x, w) * 255)).astype(np.uint8)
            for r in range(len(tiles)):
                rows[r].append(y[r])
        return save_grid(path, rows, ["photo"] + self.styles.names)


def train(cfg: TrainConfig, progress: bool = True) -> Trainer:
    trainer = Trainer(cfg)
    trainer.run(progress=progress)
    return trainer
