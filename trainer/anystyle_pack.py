"""A style pack made from the any-style model: each pack style is the encoding of its picture.

`stylejax-train anystyle-pack --model DIR --styles a.jpg b.jpg --out PACK` encodes every style
picture once and writes an ordinary pack (`stylejax.pack`) whose table rows are those styles
(`stylejax.anystyle.styles_generator`), with names, credits and thumbnails from the same
metadata file the trained packs use. Strength, blends, the engine and the ONNX path then work
as for any pack; the vectors are kept in pack.json's training record too.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import jax.numpy as jnp
import numpy as np

from stylejax.anystyle import ENCODER_SIDE, load_model, model_palette, styles_generator
from stylejax.features import load_feature_net
from stylejax.imageio import decode_image, resize_long_side, resize_max_side, to_float
from stylejax.pack import save_pack

from .export import style_infos


def encode_pictures(model_dir: str | Path, pictures: Sequence[str | Path]) -> np.ndarray:
    """(K, style_dim) style vectors of the pictures, each seen at the encoder's side."""
    model, feature_net = load_model(model_dir), load_feature_net()
    out = []
    for p in pictures:
        rgb = resize_long_side(decode_image(Path(p)).rgb, ENCODER_SIDE)
        out.append(np.asarray(model.encode(feature_net, jnp.asarray(to_float(rgb))[None]))[0])
    return np.stack(out)


def pack_from_model(model_dir: str | Path, pictures: Sequence[str | Path], pack_dir: str | Path,
                    style_meta: str | None = None) -> Path:
    vectors = encode_pictures(model_dir, pictures)
    generator = styles_generator(load_model(model_dir), vectors)
    infos = style_infos([str(p) for p in pictures], style_meta)
    thumbs = {info.id: resize_max_side(decode_image(Path(p)).rgb, 256)
              for info, p in zip(infos, pictures, strict=True)}
    training = {"made_from": "any-style model", "model": str(model_dir),
                "vectors": {i.id: [round(float(v), 6) for v in vec]
                            for i, vec in zip(infos, vectors, strict=True)}}
    # the pack serves each picture as the model does, its palette included
    return save_pack(pack_dir, generator, infos, thumbnails=thumbs, training=training,
                     palette=model_palette(model_dir))
