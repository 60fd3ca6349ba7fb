"""CycleGAN mode: the cycle loss falls, resume is exact, export gives a pack, errors are friendly.

One tiny run through the command line (the slow part: building and compiling the four
networks) is shared by the tests of this module.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from stylejax.pack import load_pack
from trainer.checkpoints import Checkpoints
from trainer.cyclegan import CycleConfig, CycleTrainer, cycle_step, cyclegan_main, init_state

pytestmark = pytest.mark.slow

TINY = ["--steps", "48", "--batch", "2", "--size", "32", "--channels", "8", "8", "16",
        "--res-blocks", "1", "--disc-ch", "8", "--log-every", "1", "--ckpt-every", "24",
        "--sample-every", "1000", "--no-progress"]


def _make_folders(root: Path) -> tuple[Path, Path]:
    """8 smooth colour-gradient "photos" vs 8 striped orange "paintings", 48 px."""
    photos, paintings = root / "photos", root / "van_gogh"
    photos.mkdir(parents=True)
    paintings.mkdir()
    yy, xx = np.mgrid[0:48, 0:48].astype(np.float32)
    rng = np.random.default_rng(0)
    for i in range(8):
        img = np.stack([0.5 + 0.4 * np.sin(xx / 9 + 0.7 * i), 0.5 + 0.4 * np.cos(yy / 11 - 0.7 * i),
                        0.3 + 0.4 * xx / 48], -1)
        Image.fromarray((img * 255).astype(np.uint8)).save(photos / f"p{i}.png")
        stripes = 0.5 + 0.5 * np.sign(np.sin((xx + yy * (i % 3 - 1)) / 2.0))
        img = np.stack([0.8 + 0.15 * stripes, 0.55 + 0.3 * stripes,
                        0.1 + 0.1 * rng.random((48, 48))], -1)
        Image.fromarray((np.clip(img, 0, 1) * 255).astype(np.uint8)).save(paintings / f"v{i}.png")
    return photos, paintings


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("cyclegan")
    photos, paintings = _make_folders(root)
    out, pack = root / "run", root / "pack"
    code = cyclegan_main(["--photos", str(photos), "--paintings", str(paintings), "--out",
                          str(out), "--export", str(pack), *TINY])
    assert code == 0
    return {"root": root, "out": out, "pack": pack}


def test_cycle_loss_falls_and_losses_stay_finite(tiny_run):
    records = [json.loads(x) for x in (tiny_run["out"] / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == list(range(1, 49))
    for r in records:
        assert all(np.isfinite(r[k]) for k in ("g_adv", "cycle", "identity", "d_a", "d_b"))
    cycle = [r["cycle"] for r in records]
    assert np.mean(cycle[-5:]) < 0.7 * np.mean(cycle[:5]), cycle
    grid = Image.open(tiny_run["out"] / "samples" / "step_000048.png")
    assert grid.width > 6 * 128  # photo, A->B, A->B->A, painting, B->A, B->A->B


def test_resume_continues_from_the_saved_step(tiny_run):
    out = tiny_run["root"] / "resumed"
    shutil.copytree(tiny_run["out"] / "checkpoints" / "24", out / "checkpoints" / "24")
    cfg = replace(CycleConfig.load(tiny_run["out"] / "cycle_config.json"), out=str(out))
    trainer = CycleTrainer(cfg)
    assert trainer.step == 24
    trainer.run(progress=False)
    trainer.ckpt.close()
    steps = [json.loads(x)["step"] for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert steps == list(range(25, 49))
    # bit-for-bit the run that was never interrupted
    _, template = init_state(cfg)
    straight, _ = Checkpoints(tiny_run["out"] / "checkpoints").restore(template, 48)
    for x, y in zip(jax.tree.leaves(straight), jax.tree.leaves(jax.device_get(trainer.state))):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_export_gives_a_one_style_pack(tiny_run):
    pack = load_pack(tiny_run["pack"])
    assert [s.id for s in pack.styles] == ["van_gogh"]
    assert pack.training["steps"] == 48
    assert (tiny_run["pack"] / pack.styles[0].thumbnail).is_file()
    y = pack.generator(jnp.full((1, 32, 32, 3), 0.5), jnp.ones((1, 1)))
    assert y.shape == (1, 32, 32, 3) and bool(jnp.all(jnp.isfinite(y)))


@pytest.mark.parametrize("adv_loss", ["hinge", "wgan-gp"])
def test_other_adversarial_losses_trace(adv_loss):
    """The step for the other losses (traced only: compiling them all would be slow)."""
    cfg = CycleConfig(adv_loss=adv_loss, channels=(8, 8, 16), res_blocks=1, disc_ch=8)
    models, state = init_state(cfg)
    batch = {k: jax.ShapeDtypeStruct((2, 32, 32, 3), jnp.float32) for k in ("a", "b")}
    new, metrics = jax.eval_shape(lambda s, b: cycle_step(models, cfg, s, b), state, batch)
    assert jax.tree.structure(new) == jax.tree.structure(state)
    assert set(metrics) >= {"g_adv", "cycle", "identity", "d_a", "d_b"}


def test_bad_folders_exit_2_with_a_message(tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    assert cyclegan_main(["--photos", str(tmp_path / "nope"), "--paintings", str(empty),
                          "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "photos folder" in err and "does not exist" in err and "Traceback" not in err
    assert cyclegan_main(["--photos", str(empty), "--paintings", str(empty),
                          "--out", str(tmp_path / "o")]) == 2
    assert "no usable photo" in capsys.readouterr().err
    assert cyclegan_main(["--photos", str(empty), "--paintings", str(empty),
                          "--adv-loss", "wasserstein"]) == 2
    # a "--" handed on by `stylejax-train cyclegan -- ...` is skipped
    assert cyclegan_main(["--", "--photos", str(tmp_path / "nope"), "--paintings", str(empty)]) == 2
    assert "photos folder" in capsys.readouterr().err
