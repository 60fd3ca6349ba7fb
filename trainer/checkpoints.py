"""Orbax checkpoints of the whole TrainState: periodic, keep-N, and exact to resume from.

The state is saved as its flat list of leaves; the tree structure comes from a freshly built
template (same config ⇒ same structure), which keeps the files independent of how Flax and
Optax happen to nest their pytrees. A fingerprint of that structure guards against resuming a
run with a different network shape.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp


def _fingerprint(state: Any) -> str:
    leaves, treedef = jax.tree.flatten(state)
    desc = str(treedef) + "|".join(f"{np.shape(x)}{np.asarray(x).dtype}" for x in leaves)
    return hashlib.sha256(desc.encode()).hexdigest()[:16]


class Checkpoints:
    def __init__(self, directory: str | Path, keep: int = 3):
        self.dir = Path(directory).absolute()
        self.manager = ocp.CheckpointManager(
            self.dir, options=ocp.CheckpointManagerOptions(max_to_keep=keep, create=True))

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def save(self, step: int, state: Any, extra: dict | None = None, force: bool = False) -> None:
        leaves = [np.asarray(x) for x in jax.tree.leaves(jax.device_get(state))]
        items = {f"{i:05d}": leaf for i, leaf in enumerate(leaves)}
        meta = {"fingerprint": _fingerprint(state), **(extra or {})}
        self.manager.save(step, args=ocp.args.Composite(
            state=ocp.args.StandardSave(items), meta=ocp.args.JsonSave(meta)), force=force)

    def restore(self, template: Any, step: int | None = None) -> tuple[Any, dict]:
        step = self.latest_step() if step is None else step
        if step is None:
            raise FileNotFoundError(f"no checkpoint in {self.dir}")
        restored = self.manager.restore(step, args=ocp.args.Composite(
            state=ocp.args.StandardRestore(), meta=ocp.args.JsonRestore()))
        meta = dict(restored["meta"])
        if meta.get("fingerprint") != _fingerprint(template):
            raise ValueError("checkpoint was written by a different network configuration")
        items = restored["state"]
        leaves = [np.asarray(items[k]) for k in sorted(items)]
        treedef = jax.tree.structure(template)
        return jax.tree.unflatten(treedef, leaves), meta

    def wait(self) -> None:
        self.manager.wait_until_finished()

    def close(self) -> None:
        self.manager.wait_until_finished()
        self.manager.close()
