"""The training loop every mode runs through, and the pack mode (`Trainer`) that it runs.

`run_loop(task)` owns what all modes share: the progress bar, SIGINT/SIGTERM (checkpoint and
stop), metrics JSONL (+ TensorBoard when tensorboardX is installed), sample grids, periodic and
final checkpoints. A mode is a `TrainTask`: it holds the state, yields batches and runs its
jitted pure step. Batches are a function of (seed, step) and a task resumes from its latest
checkpoint when built (`resume`), so a resumed run equals the uninterrupted one.

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
from collections.abc import Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any, Protocol

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
from .data import ContentStream, PhotoFolder, PrefetchIterator, StyleImages
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


class LoopConfig(Protocol):
    """The loop's settings; every mode's config dataclass has these fields."""

    steps: int          # train to this step unless `until` says otherwise
    log_every: int      # steps between metrics records (and bar updates)
    sample_every: int   # steps between sample grids
    ckpt_every: int     # steps between checkpoints


class TrainTask(Protocol):
    """One training mode, as `run_loop` sees it.

    Build it resuming from `ckpt` (see `resume`), so `state.step` is where training goes on.
    """

    cfg: LoopConfig
    out: Path           # run folder: metrics.jsonl, tensorboard/, samples/ go here
    ckpt: Checkpoints   # where `state` is saved
    state: Any          # the whole checkpointed pytree; has an integer `step` leaf

    def batches(self, start: int, until: int
                ) -> AbstractContextManager[Iterator[tuple[int, Any]]]:
        """(step, host batch) for start..until-1, a pure function of (seed, step)."""
        ...

    def train_step(self, state: Any, batch: Any) -> tuple[Any, dict[str, Any]]:
        """One jitted pure step (the task places `batch` on its devices)."""
        ...

    def sample_grid(self, path: Path) -> Path | None:
        """A picture of what the current state does; None if there is nothing to show."""
        ...

    def postfix(self, metrics: dict[str, float]) -> dict[str, str]:
        """The few logged losses worth showing on the progress bar."""
        ...


def _due(n: int, every: int, until: int) -> bool:
    return n % every == 0 or n == until


def run_loop(task: TrainTask, until: int | None = None,
             progress: bool = True) -> dict[str, float]:
    """Train `task` to step `until` (default cfg.steps) or a stop signal; returns the last
    logged metrics (empty if it was there already)."""
    from tqdm import tqdm

    cfg, until = task.cfg, until or task.cfg.steps
    start = int(task.state.step)
    last: dict[str, float] = {}
    if start >= until:
        return last
    metrics_file = open(task.out / "metrics.jsonl", "a", encoding="utf-8")  # noqa: SIM115
    board = tensorboard_writer(task.out / "tensorboard")
    bar = tqdm(total=until, initial=start, disable=not progress, unit="step",
               dynamic_ncols=True)
    t0, steps_done = time.monotonic(), 0
    try:
        with StopFlag() as stop, metrics_file, bar, task.batches(start, until) as batches:
            for step, batch in batches:
                task.state, m = task.train_step(task.state, batch)
                steps_done += 1
                bar.update(1)
                n = step + 1
                if _due(n, cfg.log_every, until):
                    last = write_metrics(metrics_file, n, m,
                                         steps_done / (time.monotonic() - t0), board)
                    bar.set_postfix(task.postfix(last))
                if _due(n, cfg.sample_every, until):
                    task.sample_grid(task.out / "samples" / f"step_{n:06d}.png")
                if _due(n, cfg.ckpt_every, until) or stop.set:
                    task.ckpt.save(n, task.state, {"step": n}, force=True)
                if stop.set:
                    break
    finally:
        task.ckpt.wait()
        if board is not None:
            board.close()
    return last


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


def resume(ckpt: Checkpoints, template: Any, cfg: Any = None, saved: Path | None = None) -> Any:
    """The latest checkpoint's state if there is one, else the fresh template. With `cfg`
    and the run's saved config file `saved`, a checkpoint of other settings is refused
    (`JsonConfig.check_resume`)."""
    if ckpt.latest_step() is None:
        return template
    if cfg is not None and saved is not None:
        cfg.check_resume(saved)
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
    """The pack mode as a `TrainTask`: one generator and discriminator for several styles."""

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
        self.state: TrainState = resume(self.ckpt, template, cfg, self.out / "train_config.json")
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

    def batches(self, start: int, until: int) -> PrefetchIterator:
        return self.stream.iterate(start, until)

    def train_step(self, state: TrainState, batch: dict[str, np.ndarray]
                   ) -> tuple[TrainState, dict[str, jax.Array]]:
        return self._step(state, self.f_state, self.targets, self.put_batch(batch))

    def postfix(self, metrics: dict[str, float]) -> dict[str, str]:
        return {"content": f"{metrics['content']:.3f}", "style": f"{metrics['style']:.3f}",
                "adv": f"{metrics['g_adv']:.3f}", "d": f"{metrics.get('d_loss', 0):.3f}"}

    def run(self, until: int | None = None, progress: bool = True) -> dict[str, float]:
        """Train to step `until` (default cfg.steps); returns the last logged metrics."""
        return run_loop(self, until, progress)

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
    """Build (or resume) a pack run and train it to cfg.steps."""
    trainer = Trainer(cfg)
    run_loop(trainer, progress=progress)
    return trainer
