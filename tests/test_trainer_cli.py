"""`stylejax-train train`: flags generated from the config dataclasses, and the one loop."""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import struct

from trainer.checkpoints import Checkpoints
from trainer.cli import MODES, parse_args, train_config
from trainer.config import add_config_flags, config_from_args, opt
from trainer.loop import resume, run_loop


def _changed(f, value: Any) -> Any:
    """A value of the field's type that differs from its default."""
    if "choices" in f.metadata:
        return next(c for c in f.metadata["choices"] if c != value)
    if isinstance(value, bool):
        return not value
    if isinstance(value, int):
        return value + 1
    if isinstance(value, float):
        return value * 2 + 1
    if isinstance(value, tuple):  # an empty default: the one such field holds ints
        return tuple(v + "x" if isinstance(v, str) else v + 1 for v in value) or (1,)
    if isinstance(value, list):
        return ["a.png", "b.png"]
    return "changed"  # str, or `str | None` left at None


def _argv(cfg: Any) -> list[str]:
    argv = []
    for f in fields(cfg):
        value, flag = getattr(cfg, f.name), "--" + f.name.replace("_", "-")
        if isinstance(value, bool):
            argv.append(flag if value else "--no-" + flag[2:])
        elif isinstance(value, (list, tuple)):
            argv += [flag, *map(str, value)]
        else:
            argv += [flag, str(value)]
    return argv


@pytest.mark.parametrize("mode", list(MODES))
def test_every_config_field_has_a_flag(mode):
    cls = MODES[mode].config
    default = cls()
    want = cls(**{f.name: _changed(f, getattr(default, f.name)) for f in fields(cls)})
    assert all(getattr(want, f.name) != getattr(default, f.name) for f in fields(cls))
    assert train_config(parse_args(["train", "--mode", mode, *_argv(want)])) == want
    assert all(f.metadata.get("help") for f in fields(cls)), "every field explains itself"


@pytest.mark.parametrize("suffix", [".toml", ".json"])
def test_flags_override_the_config_file(tmp_path, suffix):
    path = tmp_path / f"cfg{suffix}"
    if suffix == ".json":
        path.write_text(json.dumps({"steps": 7, "batch": 8, "styles": ["s.png"]}))
    else:
        path.write_text('steps = 7\nbatch = 8\nstyles = ["s.png"]\n')
    cfg = train_config(parse_args(["train", "--config", str(path), "--steps", "9"]))
    assert (cfg.steps, cfg.batch, cfg.styles) == (9, 8, ["s.png"])


def test_cyclegan_alias_builds_the_same_config(tmp_path):
    flags = ["--photos", "p", "--paintings", "v", "--channels", "8", "8", "16",
             "--identity-weight", "0.5", "--adv-loss", "hinge"]
    cfg = train_config(parse_args(["train", "--mode", "cyclegan", *flags]))
    assert train_config(parse_args(["cyclegan", *flags])) == cfg
    assert train_config(parse_args(["cyclegan", "--", *flags])) == cfg
    assert cfg.channels == (8, 8, 16) and cfg.identity_weight == 0.5


def test_bad_choice_and_unknown_mode_exit_2(capsys):
    from trainer.cli import main

    assert main(["train", "--adv-loss", "wasserstein"]) == 2
    assert main(["train", "--mode", "nope"]) == 2
    assert "invalid choice" in capsys.readouterr().err


def test_verbose_reaches_stderr_after_orbax_added_a_root_handler(tmp_path, capsys):
    """orbax's import gives the root logger a handler; -v must still turn INFO on."""
    import logging

    import orbax.checkpoint  # noqa: F401  (the import that adds the handler)

    from trainer.cli import main

    root = logging.getLogger()
    saved = root.level, list(root.handlers), logging.getLogger("absl").level
    try:
        assert main(["-v", "export", "--run", str(tmp_path / "none"),
                     "--pack", str(tmp_path / "pack")]) == 2
        logging.getLogger("stylejax.train").info("resumed from step 7")
        logging.getLogger("absl").info("CheckpointManager created")  # orbax's chatter: not shown
        err = capsys.readouterr().err
        assert "INFO stylejax.train: resumed from step 7" in err
        assert "CheckpointManager" not in err
    finally:
        root.setLevel(saved[0])
        root.handlers[:] = saved[1]
        logging.getLogger("absl").setLevel(saved[2])


@dataclass
class _Flags:
    name: str | None = opt(None, "a name")
    flip: bool = opt(True, "flip it")
    sizes: tuple[int, ...] = opt((1, 2), "sizes")


def test_flag_types_from_annotations():
    p = argparse.ArgumentParser()
    add_config_flags(p, _Flags)
    cfg = config_from_args(_Flags, p.parse_args(["--no-flip", "--sizes", "3", "4", "5"]))
    assert cfg == _Flags(name=None, flip=False, sizes=(3, 4, 5))
    assert config_from_args(_Flags, p.parse_args(["--name", "x"]), base=cfg).name == "x"


# --------------------------------------------------------------------------- the one loop


class _State(struct.PyTreeNode):
    step: jax.Array
    w: jax.Array


@dataclass
class _LoopCfg:
    steps: int = 5
    log_every: int = 1
    sample_every: int = 2
    ckpt_every: int = 2


class _Task:
    """The smallest TrainTask: w accumulates a batch that is a function of the step."""

    def __init__(self, out: Path):
        self.cfg, self.out = _LoopCfg(), out
        out.mkdir(parents=True, exist_ok=True)
        self.ckpt = Checkpoints(out / "checkpoints", keep=5)
        self.state = resume(self.ckpt, _State(jnp.zeros((), jnp.int32), jnp.zeros(3)))
        self.samples: list[int] = []

    def batches(self, start: int, until: int):
        from trainer.data import PrefetchIterator

        return PrefetchIterator(lambda s: {"x": np.full(3, s, np.float32)}, start, prefetch=0,
                                stop_step=until)

    def train_step(self, state: _State, batch):
        w = state.w * 0.5 + jnp.asarray(batch["x"])
        return state.replace(step=state.step + 1, w=w), {"w": jnp.sum(w)}

    def sample_grid(self, path: Path) -> None:
        self.samples.append(int(path.stem.split("_")[1]))

    def postfix(self, metrics: dict[str, float]) -> dict[str, str]:
        return {"w": f"{metrics['w']:.2f}"}


def test_run_loop_logs_samples_checkpoints_and_resumes(tmp_path):
    straight = _Task(tmp_path / "straight")
    last = run_loop(straight, progress=False)
    assert last["w"] == pytest.approx(float(jnp.sum(straight.state.w)))
    assert straight.samples == [2, 4, 5]
    assert sorted(int(p.name) for p in (tmp_path / "straight" / "checkpoints").iterdir()
                  if p.name.isdigit()) == [2, 4, 5]

    first = _Task(tmp_path / "resumed")
    run_loop(first, until=3, progress=False)
    first.ckpt.close()
    second = _Task(tmp_path / "resumed")
    assert int(second.state.step) == 3
    run_loop(second, progress=False)
    np.testing.assert_array_equal(second.state.w, straight.state.w)
    records = [json.loads(x) for x in (tmp_path / "resumed" / "metrics.jsonl").read_text()
               .splitlines()]
    assert [r["step"] for r in records] == [1, 2, 3, 4, 5]
    assert run_loop(second, progress=False) == {}  # already at cfg.steps
