"""`eval`: losses on photos the trainer never saw, a sample grid, and loss curves."""

from __future__ import annotations

import dataclasses
import functools
import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from .config import TrainConfig
from .grid import center_square
from .loop import Trainer
from .steps import _generator_losses


def plot_curves(metrics_file: Path, out: Path) -> Path | None:
    """Loss curves from metrics.jsonl (matplotlib, headless)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [json.loads(x) for x in metrics_file.read_text().splitlines() if x.strip()]
    if not rows:
        return None
    steps = [r["step"] for r in rows]
    keys = [k for k in ("content", "style", "tv", "g_adv", "d_loss") if k in rows[0]]
    fig, axes = plt.subplots(1, len(keys), figsize=(3.2 * len(keys), 2.8))
    for ax, k in zip(np.atleast_1d(axes), keys):
        ax.plot(steps, [r[k] for r in rows], lw=0.8)
        ax.set_title(k)
        ax.set_xlabel("step")
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def evaluate(run_dir: str | Path, out_dir: str | Path | None = None, side: int = 256) -> dict:
    """Per-style content/style losses of the EMA generator on the held-out photos."""
    run_dir = Path(run_dir)
    cfg = TrainConfig.load(run_dir / "train_config.json")
    out = Path(out_dir) if out_dir else run_dir / "eval"
    out.mkdir(parents=True, exist_ok=True)
    trainer = Trainer(cfg)
    photos = trainer.holdout or trainer.train_photos.images[:4]
    x = jnp.asarray(np.stack([center_square(p, side) for p in photos]), jnp.float32) / 255.0
    state = trainer.state
    # measured on the photos as they are: no training-time jitter
    losses_fn = jax.jit(functools.partial(_generator_losses, models=trainer.models,
                                          cfg=dataclasses.replace(trainer.loss_cfg, jitter=0)))
    per_style = {}
    for s, name in enumerate(trainer.styles.names):
        batch = {"content": x, "style_ids": jnp.full((x.shape[0],), s, jnp.int32)}
        _, (_, m) = losses_fn(state.g_ema, d_params=state.d, d_stats=state.d_stats,
                              f_state=trainer.f_state, targets=trainer.targets, batch=batch,
                              step=state.step)
        per_style[name] = {k: float(v) for k, v in m.items() if k in ("content", "style", "tv")}
    report = {"step": trainer.step, "photos": len(photos), "side": side, "styles": per_style,
              "mean": {k: float(np.mean([v[k] for v in per_style.values()]))
                       for k in ("content", "style", "tv")}}
    (out / "losses.json").write_text(json.dumps(report, indent=2))
    trainer.sample_grid(out / "grid.png", side=side // 2)
    if (run_dir / "metrics.jsonl").exists():
        plot_curves(run_dir / "metrics.jsonl", out / "loss_curves.png")
    trainer.ckpt.close()
    return report
