"""Shared fixtures: a tiny generator whose weights are perturbed away from their initialisation.

A fresh generator has identical CIN rows for every style (scale 1, shift 0), ICNR-identical
decoder sub-pixels and zero biases, which would hide wrong style mixing or channel orders; every
test that looks at generator outputs uses a perturbed one.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from stylejax.generator import Generator, GeneratorConfig

TINY_CONFIG = GeneratorConfig(num_styles=2, channels=(8, 16, 16), res_blocks=1)


def perturb_generator(gen: Generator, seed: int = 0) -> Generator:
    """Add noise to every parameter in place: CIN tables strongly, convolutions mildly."""
    rng = np.random.default_rng(seed)  # numpy: one XLA compile per distinct shape would be slow
    for _path, param in nnx.iter_graph(gen):
        if isinstance(param, nnx.Param):
            value = np.asarray(param[...])
            scale = 0.5 if value.ndim == 2 else 0.05
            param[...] = jnp.asarray(value + scale * rng.standard_normal(value.shape, np.float32))
    return gen


@pytest.fixture(scope="session", autouse=True)
def _jax_cache_in_tmp(tmp_path_factory):
    """The engine enables XLA's persistent compilation cache; keep it out of the user's home
    during tests (a test may still point it elsewhere with monkeypatch)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("STYLEJAX_JAX_CACHE", str(tmp_path_factory.mktemp("jax-cache")))
        yield


@pytest.fixture(scope="session")
def few_photos(tmp_path_factory) -> Path:
    """Twelve of the shared photos that the quality benchmark does not hold out: enough for a
    tiny training run's crops and holdout, and cheap to decode (the whole folder is 194)."""
    from trainer.anystyle_data import held_out_names

    held, _ = held_out_names()
    folder = tmp_path_factory.mktemp("few-photos")
    photos = [p for p in sorted(Path("../shared/data/content").glob("*.jpg"))
              if p.name not in held][:12]
    for p in photos:
        shutil.copy(p, folder / p.name)
    return folder


@pytest.fixture(scope="session")
def two_style_pack(tmp_path_factory, tiny_generator) -> Path:
    """A pack folder of the tiny generator with styles "a" and "b"; treat as read-only."""
    from stylejax.pack import StyleInfo, save_pack

    root = tmp_path_factory.mktemp("two-style-pack")
    save_pack(root, tiny_generator, [StyleInfo("a", {"en": "Style A"}),
                                     StyleInfo("b", {"en": "Style B"})])
    return root


@pytest.fixture(scope="session")
def tiny_generator() -> Generator:
    """Two styles with clearly different CIN rows; treat as read-only (nnx.clone to modify)."""
    return perturb_generator(Generator(TINY_CONFIG, rngs=nnx.Rngs(0)), seed=0)


def smooth_photo(h: int, w: int, seed: int = 0, noise: float = 0.0) -> np.ndarray:
    """A deterministic H×W×3 float32 picture in [0,1] with smooth colour waves (optional noise)."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    ph = 0.37 * seed
    img = np.stack([0.5 + 0.35 * np.sin(xx / 23 + yy / 17 + ph),
                    0.5 + 0.3 * np.cos(xx / 31 - yy / 11 + ph),
                    0.3 + 0.4 * (xx / max(w, 1))], axis=-1)
    if noise:
        img = img + noise * np.random.default_rng(seed).standard_normal(img.shape)
    return np.clip(img, 0.0, 1.0).astype(np.float32)


@pytest.fixture(scope="session")
def make_photo():
    return smooth_photo


# -- `python -m stylejax.features` in the background ----------------------------------------------
# That command needs ~15 s of CPU on its own (mostly start-up). When test_features_cli is
# selected it is started as soon as collection ends, so it runs while the other tests do;
# tests/test_features.py collects its output (or starts it itself when run differently).

FEATURES_CLI = pytest.StashKey[tuple]()


def start_features_cli(folder: Path) -> subprocess.Popen:
    from PIL import Image
    from skimage import data

    image = folder / "cat.png"  # lossless: exactly the pixels classify() sees in-process
    Image.fromarray(data.chelsea()).save(image)
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    return subprocess.Popen([sys.executable, "-m", "stylejax.features", str(image)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def pytest_collection_finish(session: pytest.Session) -> None:
    if session.config.option.collectonly:
        return
    if not any(item.name == "test_features_cli" and item.path.name == "test_features.py"
               for item in session.items):
        return
    try:
        import skimage  # noqa: F401
    except ImportError:
        return
    folder = Path(tempfile.mkdtemp(prefix="stylejax-features-cli-"))
    session.config.stash[FEATURES_CLI] = (start_features_cli(folder), folder)


def pytest_sessionfinish(session: pytest.Session) -> None:
    started = session.config.stash.get(FEATURES_CLI, None)
    if started is not None:
        proc, folder = started
        if proc.poll() is None:
            proc.kill()
        proc.communicate()
        shutil.rmtree(folder, ignore_errors=True)
