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


def test_a_checkpoint_of_other_settings_is_not_resumed(tmp_path):
    """Reusing a run folder with other flags must not continue its checkpoint silently."""
    from trainer.loop import Trainer

    first = Trainer(tiny_config(tmp_path, "run"))
    first.run(until=2, progress=False)
    first.ckpt.close()
    with pytest.raises(ValueError, match=r"other settings \(style_weight: .* -> 9\.0\)"):
        Trainer(tiny_config(tmp_path, "run", style_weight=9.0))
    # a longer run, or other logging, resumes as before
    longer = Trainer(tiny_config(tmp_path, "run", steps=8, log_every=2))
    assert longer.step == 2
    longer.ckpt.close()
    # so does a run saved before a field existed (it had the field's default behaviour)
    saved = tmp_path / "run" / "train_config.json"
    record = json.loads(saved.read_text())
    del record["views"]
    saved.write_text(json.dumps(record))
    assert Trainer(tiny_config(tmp_path, "run", steps=8)).step == 2


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
    events = list((Path(cfg.out) / "tensorboard").glob("events.out.tfevents.*"))
    assert events and events[0].stat().st_size > 0  # tensorboardX is in the test extras
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


def _tiny_pack(tmp_path: Path) -> Path:
    import jax.numpy as jnp
    from flax import nnx

    from stylejax.generator import Generator, GeneratorConfig
    from stylejax.pack import StyleInfo, save_pack

    gen = Generator(GeneratorConfig(num_styles=2, channels=(8, 8, 16), res_blocks=1),
                    rngs=nnx.Rngs(3))
    for i, layer in enumerate(gen.norm_layers()):
        layer.scale[...] = layer.scale[...] + 0.3 * jnp.sin(jnp.arange(layer.scale.shape[1]) + i)
    return save_pack(tmp_path / "pack", gen, [StyleInfo("a", {"en": "A"}),
                                              StyleInfo("b", {"en": "B", "zh": "乙"})])


def test_add_style_trains_only_the_new_row(tmp_path):
    from trainer.add_style import AddStyleConfig, add_style

    photos, styles = _make_data(tmp_path)
    old = load_pack(_tiny_pack(tmp_path))
    out = add_style(tmp_path / "pack", styles[1], photos, tmp_path / "pack3",
                    style_id="new", names={"en": "New", "zh": "新"},
                    cfg=AddStyleConfig(steps=12, size=32, batch=2), progress=False)
    new = load_pack(out)
    assert [s.id for s in new.styles] == ["a", "b", "new"]
    assert new.styles[2].name("zh") == "新"
    from flax import nnx

    old_p = jax.tree.leaves(nnx.state(old.generator, nnx.Param))
    new_p = jax.tree.leaves(nnx.state(new.generator, nnx.Param))
    changed_rows = 0
    for o, n in zip(old_p, new_p):
        o, n = np.asarray(o), np.asarray(n)
        if o.shape == n.shape:
            np.testing.assert_array_equal(o, n)          # shared body frozen
        else:
            np.testing.assert_array_equal(o, n[:-1])     # existing styles untouched
            changed_rows += not np.allclose(n[-1], o.mean(axis=0))
    assert changed_rows > 0                              # the new style's rows learned
    hist = new.training["added_styles"][0]
    assert hist["id"] == "new" and np.isfinite(hist["final"]["style"])


@pytest.mark.parametrize("taps, size", [("block-outputs", 32), ("post-activation", 64)])
def test_add_style_lowers_style_loss(tmp_path, taps, size):
    from stylejax.features import BLOCK_OUTPUT_STYLE_TAPS, DEFAULT_STYLE_TAPS
    from trainer.add_style import AddStyleConfig, grow_generator, train_new_style
    from trainer.data import PhotoFolder, StyleImages

    style_taps = BLOCK_OUTPUT_STYLE_TAPS if taps == "block-outputs" else DEFAULT_STYLE_TAPS
    photos, styles = _make_data(tmp_path)
    pack = load_pack(_tiny_pack(tmp_path))
    _, history = train_new_style(grow_generator(pack.generator),
                                 StyleImages([styles[0]], side=2 * size).target(0),
                                 PhotoFolder(photos, cache_side=2 * size),
                                 AddStyleConfig(steps=40, size=size, batch=2, lr=5e-2),
                                 progress=False, style_taps=style_taps)
    assert min(h["style"] for h in history[-2:]) < 0.9 * history[0]["style"]


def test_add_style_reads_the_packs_taps():
    from stylejax.features import BLOCK_OUTPUT_STYLE_TAPS
    from trainer.add_style import pack_style_taps

    assert pack_style_taps({}) == BLOCK_OUTPUT_STYLE_TAPS          # packs from before the key
    assert pack_style_taps({"losses": {"style_taps": ["stem", "block3.expand"]}}) == (
        "stem", "block3.expand")


def test_eval_writes_report_grid_and_curves(tmp_path):
    from trainer.evaluate import evaluate
    from trainer.loop import Trainer

    cfg = tiny_config(tmp_path, "run", jitter=2)  # eval measures without the training jitter
    t = Trainer(cfg)
    t.run(progress=False)
    t.ckpt.close()
    report = evaluate(cfg.out, tmp_path / "eval", side=64)
    assert report["step"] == 4 and set(report["styles"]) == {"style0", "style1"}
    assert all(np.isfinite(v["style"]) for v in report["styles"].values())
    for name in ("losses.json", "grid.png", "loss_curves.png"):
        assert (tmp_path / "eval" / name).stat().st_size > 0


def test_jitter_and_nearest_decoder_train_deterministically(tmp_path):
    """The anti-aliasing options: a run with them is reproducible, is recorded in the run's
    config, and trains something else than a run without them."""
    import json

    from trainer.loop import Trainer

    runs = {}
    for name, kw in [("a", {"jitter": 4, "upsample": "nearest"}),
                     ("b", {"jitter": 4, "upsample": "nearest"}), ("c", {})]:
        t = Trainer(tiny_config(tmp_path, name, **kw))
        t.run(until=3, progress=False)
        runs[name] = _params(t)
    for x, y in zip(runs["a"], runs["b"], strict=True):
        np.testing.assert_array_equal(x, y)
    saved = json.loads((tmp_path / "a" / "train_config.json").read_text())
    assert saved["jitter"] == 4 and saved["upsample"] == "nearest"
    assert any(x.shape != y.shape or not np.allclose(x, y)
               for x, y in zip(runs["a"], runs["c"]))


def test_style_targets_are_the_grams_of_each_view(tmp_path):
    """The pack's views: one Gram target per (style, fixed view), each the Gram of the style
    picture seen through that view; without views one row, the picture as it is."""
    import jax.numpy as jnp

    from stylejax import losses
    from stylejax.features import load_feature_net
    from trainer.loop import Trainer
    from trainer.steps import LossConfig, style_targets
    from trainer.views import view

    t = Trainer(tiny_config(tmp_path, "v", rotate=30.0, zoom=1.25, views=3))
    assert t.targets["stem"].shape[:2] == (2, 3)
    net = load_feature_net()

    def gram(x):
        return np.asarray(losses.gram_matrix(net.features(x, ("stem",))["stem"])[0])

    picture = jnp.asarray(t.styles.target(1))
    angles, scales = t.loss_cfg.view_table
    np.testing.assert_allclose(np.asarray(t.targets["stem"][1, 2]),
                               gram(view(picture, angles[2:3], scales[2:3])), rtol=1e-4,
                               atol=1e-6)
    plain = style_targets(t.models, t.f_state, [picture], LossConfig())
    assert plain["stem"].shape[:2] == (1, 1)
    np.testing.assert_allclose(np.asarray(plain["stem"][0, 0]), gram(picture), rtol=1e-4,
                               atol=1e-6)


def test_pack_views_train_deterministically_and_change_the_step(tmp_path):
    from trainer.loop import Trainer

    kw = {"rotate": 45.0, "zoom": 1.25, "views": 4, "jitter": 2}
    runs = [Trainer(tiny_config(tmp_path, n, **o)) for n, o in
            [("a", kw), ("b", kw), ("c", {"jitter": 2})]]
    batch = runs[0].stream.batch_at(0)
    metrics = [t.train_step(t.state, batch)[1] for t in runs]
    assert float(metrics[0]["style"]) == float(metrics[1]["style"])
    assert float(metrics[0]["style"]) != float(metrics[2]["style"])
    assert np.isfinite(float(metrics[0]["g_total"]))


def test_pack_recipes_name_their_style_taps():
    """The shipped pack's recipe keeps the block-output taps it was trained with, whatever the
    trainer's default; a saved run config gives the same (hashable) loss back."""
    from stylejax.features import BLOCK_OUTPUT_STYLE_TAPS, DEFAULT_STYLE_TAPS

    root = Path(__file__).resolve().parents[1] / "trainer"
    shipped = TrainConfig.load(root / "default_pack.toml")
    views = TrainConfig.load(root / "pack_views.toml")
    assert shipped.loss().style_taps == BLOCK_OUTPUT_STYLE_TAPS
    assert shipped.loss().rotate == 0 and shipped.upsample == "shuffle"
    assert views.loss().style_taps == DEFAULT_STYLE_TAPS and views.loss().rotate == 45
    again = TrainConfig.from_dict(json.loads(views.to_json()))
    assert again.loss() == views.loss() and hash(again.loss()) == hash(views.loss())
