"""Are the style vectors of different pictures crowded because of the encoder or its input?

`python bench/style_vector_spread.py MODEL_DIR...` prints, for the benchmark's held-out style
pictures, the range of pairwise cosines of the encoder's input (Lite0 channel statistics after
the encoder's LayerNorm) and of its output (the style vectors), the close pairs, and how well
the output's cosines follow the input's. If they follow closely, a term that pushes vectors
apart would only amplify what the statistics already say; the input is the lever.
"""

from __future__ import annotations

import sys
from pathlib import Path

import jax.numpy as jnp
import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
import quality  # noqa: E402  (bench/quality.py: the evaluation set)

from stylejax.anystyle import ENCODER_SIDE, load_model, style_statistics  # noqa: E402
from stylejax.features import load_feature_net  # noqa: E402
from stylejax.imageio import resize_long_side, to_float  # noqa: E402


def cosines(rows: list[np.ndarray]) -> np.ndarray:
    a = np.stack(rows)
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    return a @ a.T


def spread(model_dir: str, close: float = 0.85) -> dict:
    styles = quality.eval_styles()
    model, net = load_model(model_dir), load_feature_net()
    inputs, vectors = [], []
    for rgb in styles.values():
        x = jnp.asarray(to_float(resize_long_side(rgb, ENCODER_SIDE)))[None]
        feats = net.features(x, model.config.taps)
        stats = style_statistics(feats, model.config.taps)
        inputs.append(np.asarray(model.encoder.norm(stats))[0])
        vectors.append(np.asarray(model.encode_features(feats))[0])
    c_in, c_out = cosines(inputs), cosines(vectors)
    upper = np.triu_indices(len(styles), 1)
    names = list(styles)
    return {
        "input_cosines": (float(c_in[upper].min()), float(c_in[upper].max())),
        "vector_cosines": (float(c_out[upper].min()), float(c_out[upper].max())),
        "close_pairs": [(names[i], names[j], round(float(c_in[i, j]), 3),
                         round(float(c_out[i, j]), 3))
                        for i, j in zip(*upper, strict=True) if c_out[i, j] > close],
        "correlation": float(np.corrcoef(c_in[upper], c_out[upper])[0, 1]),
    }


if __name__ == "__main__":
    for folder in sys.argv[1:]:
        print(folder, spread(folder))
