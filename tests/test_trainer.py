"""Trainer: exact resume, multi-device equivalence, signals, export, CLI errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest
from PIL import Image

from stylejax.pack import load_pack
from trainer.config import TrainConfig

pytestmark = pytest.mark.slow


def _make_data(root: Path) -> tuple[Path, list[str]]:
    rng = np.random.default_rng(0)
    photos = root / "photos"
    photos.mkdir(parents=True)
    yy, xx = np.mgrid[0:80, 0:96]
    for i in range(8):
        img = np.stack([(xx * (i + 1)) % 256, (yy * 3 + i * 20) % 256,
                        (xx + yy) % 256], -1).astype(np.uint8)
        Image.fromarray(img).save(photos / f"p{i}.jpg")
    (photos / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    styles = []
    for i in range(2):
        img = (rng.random((64, 64, 3)) * 255).astype(np.uint8)
        img[..., i] = 230
        path = root / f"style{i}.png"
        Image.fromarray(img).save(path)
        styles.append(str(path))
    return photos, styles


def tiny_config(root: Path, out: str, **kw) -> TrainConfig:
    photos, styles = _make_data(root) if not (root / "photos").exists() else (
        root / "photos", sorted(str(p) for p in root.glob("style*.png")))
    base = dict(content=str(photos), styles=styles, out=str(root / out), steps=4, batch=4,
                size=32, holdout=2, cache_side=64, style_side=64, channels=(8, 8, 16),
                res_blocks=1, disc_ch=8, log_every=1, sample_every=100, ckpt_every=100,
                warmup=1)
    base.update(kw)
    return TrainConfig(**base)


def _params(trainer) -> list[np.ndarray]:
    return [np.asarray(x) for x in jax.tree.leaves(jax.device_get(trainer.state))]


def test_resume_equals_uninterrupted_run(tmp_path):
    from trainer.loop import Trainer

    straight = Trainer(tiny_config(tmp_path, "straight"))
    straight.run(until=4, progress=False)

    first = Trainer(tiny_config(tmp_path, "resumed"))
    first.run(until=2, progress=False)
    first.ckpt.close()
    second = Trainer(tiny_config(tmp_path, "resumed"))  # a new process would do the same
    assert second.step == 2
    second.run(until=4, progress=False)

    a, b = _params(straight), _params(second)
    assert len(a) == len(b)
    for x, y in zip(a, b):
        np.testing.assert_allclose(x, y, rtol=0, atol=1e-6)
    # and training did something: parameters moved away from a fresh start
    fresh = Trainer(tiny_config(tmp_path, "fresh"))
    assert any(not np.allclose(x, y) for x, y in zip(_params(fresh), a))


def test_metrics_grid_and_export(tmp_path):
    from trainer.export import export_pack
    from trainer.loop import Trainer

    cfg = tiny_config(tmp_path, "run", sample_every=2)
    trainer = Trainer(cfg)
    trainer.run(progress=False)
    trainer.ckpt.close()
    lines = [json.loads(x) for x in (Path(cfg.out) / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in lines] == [1, 2, 3, 4]
    assert all(np.isfinite(r["style"]) and np.isfinite(r["d_loss"]) for r in lines)
    grid = Image.open(Path(cfg.out) / "samples" / "step_000004.png")
    assert grid.width > 3 * 128  # photo column + one per style
    pack = load_pack(export_pack(cfg.out, tmp_path / "pack"))
    assert [s.id for s in pack.styles] == ["style0", "style1"]
    assert pack.training["steps"] == 4
    assert (tmp_path / "pack" / pack.styles[0].thumbnail).is_file()


_MULTI = """
import json, sys
from pathlib import Path
sys.path.insert(0, {tests!r})
import jax
from test_trainer import tiny_config
from trainer.loop import Trainer
cfg = tiny_config(Path({root!r}), {out!r}, steps=2)
t = Trainer(cfg)
m = t.run(progress=False)
print(json.dumps({{"devices": jax.device_count(), **m}}))
"""


def _run_devices(root: Path, n: int) -> dict:
    env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={n}",
               JAX_PLATFORMS="cpu")
    code = _MULTI.format(tests=str(Path(__file__).parent), root=str(root), out=f"dev{n}")
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_four_devices_match_one(tmp_path):
    _make_data(tmp_path)
    one, four = _run_devices(tmp_path, 1), _run_devices(tmp_path, 4)
    assert one["devices"] == 1 and four["devices"] == 4
    for key in ("content", "style", "tv", "g_adv", "d_loss"):
        assert abs(one[key] - four[key]) <= 1e-4 * max(1.0, abs(one[key])), key


def test_sigterm_writes_checkpoint(tmp_path):
    _make_data(tmp_path)
    cfg = tiny_config(tmp_path, "sig", steps=10_000, ckpt_every=10_000)
    cfg_path = tmp_path / "cfg.json"
    cfg_path.write_text(cfg.to_json())
    proc = subprocess.Popen([sys.executable, "-m", "trainer.cli", "train", "--config",
                             str(cfg_path), "--no-progress"], stderr=subprocess.PIPE, text=True)
    metrics = Path(cfg.out) / "metrics.jsonl"
    import time

    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and not (metrics.exists() and metrics.stat().st_size):
        time.sleep(0.5)
    proc.terminate()
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err[-2000:]
    steps = sorted(int(p.name) for p in (Path(cfg.out) / "checkpoints").iterdir()
                   if p.name.isdigit())
    assert steps and 0 < steps[-1] < 10_000


def test_cli_reports_bad_config(tmp_path, capsys):
    from trainer.cli import main

    assert main(["train", "--content", str(tmp_path / "nope"), "--styles", "x.png",
                 "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "error" in err and "Traceback" not in err
